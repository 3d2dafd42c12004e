"""The σ-form steps (euler_step, heun_step, dpmpp_2m_step), classifier-free guidance in every
denoising step, q_sample and diffusion_loss, beyond the catalog's kernel-vs-reference checks:
the equations against independent derivations, and every bad input."""

import math

import pytest
import torch

import gdm_engine
from gdm_engine import catalog, ops, reference, testing

TOL = catalog.DEFAULT_TOLERANCE[torch.float32]


def _randn(generator, device, *shape):
    return torch.randn(*shape, generator=generator).to(device)


def _kernel(fn, *args, **kwargs):
    with gdm_engine.use_backend("triton"):
        return fn(*args, **kwargs)


def _x(*shape):
    return torch.zeros(*shape)


# --------------------------------------------------------------------------------------------------
# the equations
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_euler_in_sigma_form_is_deterministic_ddim(prediction, device, generator):
    # Karras et al. (2022, sec. 4): DDIM is Euler's method on x / sqrt(ᾱ) in the σ form
    x_t, m = (_randn(generator, device, 4, 6) for _ in range(2))
    a = torch.tensor([0.3, 0.5, 0.7, 0.9], device=device)
    a_prev = torch.tensor([0.4, 0.55, 0.95, 1.0], device=device)
    ddim = ops.ddim_step(x_t, m, a, a_prev, prediction=prediction)
    sigma, sigma_next = (((1 - v) / v).sqrt() for v in (a, a_prev))
    euler = _kernel(ops.euler_step, x_t / a[:, None].sqrt(), m, sigma, sigma_next,
                    prediction=prediction)
    assert testing.relative_error(euler * a_prev[:, None].sqrt(), ddim) < 10 * TOL


def test_heun_matches_two_euler_slopes(device, generator):
    # Algorithm 2, lines 7-10, written out with two Euler steps of the reference
    x, m, m_next = (_randn(generator, device, 3, 5).double() for _ in range(3))
    sigma, sigma_next = 2.0, 0.7
    euler = reference.euler_step(x, m, sigma, sigma_next, prediction="x0")
    d = (x - m) / sigma
    d_next = (euler - m_next) / sigma_next
    want = x + (sigma_next - sigma) * (d + d_next) / 2
    got = _kernel(ops.heun_step, x.float(), m.float(), m_next.float(), sigma, sigma_next,
                  prediction="x0")
    assert testing.relative_error(got, want) < TOL


def test_heun_is_exact_on_a_linear_ode(device, generator):
    # data at one point x0 = c: D = c for every σ, so x(σ) = c + σ ε exactly, and both methods
    # land on the line; a wrong slope of the correction would leave it
    c, eps = _randn(generator, device, 2, 3), _randn(generator, device, 2, 3)
    x = c + 5.0 * eps
    got = _kernel(ops.heun_step, x, c, c, 5.0, 1.5, prediction="x0")
    assert testing.relative_error(got, c + 1.5 * eps) < TOL


def test_dpmpp_first_order_is_euler_and_second_order_extrapolates(device, generator):
    x, m, previous = (_randn(generator, device, 3, 4) for _ in range(3))
    out, denoised = _kernel(ops.dpmpp_2m_step, x, m, 1.0, 0.5)
    assert testing.relative_error(out, _kernel(ops.euler_step, x, m, 1.0, 0.5)) < TOL
    assert testing.relative_error(denoised, x - m) < TOL  # D = x − σ ε̂ at σ = 1
    # r = h_prev / h = log(2) / log(2) = 1: D̄ = 1.5 D − 0.5 D_prev (Lu et al., Algorithm 2)
    out2, _ = _kernel(ops.dpmpp_2m_step, x, m, 1.0, 0.5, previous_denoised=previous,
                      sigma_prev=2.0)
    want = 0.5 * x + 0.5 * (1.5 * (x - m) - 0.5 * previous)
    assert testing.relative_error(out2, want) < TOL
    # to σ_next = 0 the step is first order: x' = D
    last, _ = _kernel(ops.dpmpp_2m_step, x, m, 1.0, 0.0, previous_denoised=previous,
                      sigma_prev=2.0)
    assert testing.relative_error(last, x - m) < TOL


def test_churn_adds_the_missing_variance(device):
    # σ_next (1 + γ) reached from σ_next: variance grows by σ_next² ((1 + γ)² − 1)
    n = 2**16
    x = torch.zeros(n, 4, device=device)
    out = _kernel(ops.euler_step, x, x, 1.0, 0.5, prediction="x0", churn=0.2,
                  generator=torch.Generator().manual_seed(0))
    want = 0.5 * math.sqrt(1.2**2 - 1)
    assert abs(out.std().item() / want - 1) < 0.01
    assert torch.equal(_kernel(ops.euler_step, x, x, 1.0, 0.5, prediction="x0"), x)


@pytest.mark.parametrize("step", ["ddpm", "ddim", "euler", "heun", "dpmpp"])
def test_guidance_is_the_step_on_the_guided_output(step, device, generator):
    # u + w (c − u) combined in the kernel equals the step on that combination (Ho & Salimans)
    x, c, u, c2, u2, z = (_randn(generator, device, 3, 2, 5) for _ in range(6))
    w = 3.5
    guided, guided2 = u + w * (c - u), u2 + w * (c2 - u2)
    calls = {
        "ddpm": lambda m, **k: ops.ddpm_step(x, m, 0.4, 0.5, noise=z, threshold=0.9, **k),
        "ddim": lambda m, **k: ops.ddim_step(x, m, 0.4, 0.5, eta=0.5, noise=z, **k),
        "euler": lambda m, **k: ops.euler_step(x, m, 2.0, 1.0, churn=0.1, noise=z, **k),
        "heun": lambda m, **k: ops.heun_step(
            x, m, guided2 if "uncond" not in k else c2, 2.0, 1.0,
            **({"uncond_next": u2} if "uncond" in k else {}), **k),
        "dpmpp": lambda m, **k: ops.dpmpp_2m_step(x, m, 2.0, 1.0, previous_denoised=z,
                                                  sigma_prev=3.0, **k)[0],
    }
    want = _kernel(calls[step], guided)
    got = _kernel(calls[step], c, uncond=u, guidance_scale=w)
    assert testing.relative_error(got, want) < 10 * TOL


def test_q_sample_and_its_gradients(device, generator):
    x0, eps = (_randn(generator, device, 4, 3).requires_grad_() for _ in range(2))
    a = torch.tensor([0.1, 0.5, 0.9, 1.0], device=device)
    out = _kernel(ops.q_sample, x0, a, eps)
    want = a[:, None].sqrt() * x0 + (1 - a[:, None]).sqrt() * eps
    assert testing.relative_error(out, want) < TOL
    g0, ge = torch.autograd.grad(out.sum(), (x0, eps))
    assert torch.allclose(g0, a[:, None].sqrt().expand(4, 3))
    assert torch.allclose(ge, (1 - a[:, None]).sqrt().expand(4, 3))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_min_snr_weights_make_the_three_losses_one_x0_loss(prediction, device, generator):
    # Hang et al. (2023, sec. 3.4): each weighted loss is min(SNR, γ) · ||x0 − x̂0||²
    x0, eps, err = (_randn(generator, device, 5, 8).double() for _ in range(3))
    a = torch.tensor([0.02, 0.2, 0.5, 0.8, 0.99], device=device, dtype=torch.float64)
    snr, gamma = a / (1 - a), 5.0
    x_t = reference.q_sample(x0, a, eps)
    x0_hat = x0 + err  # the model's x0, as each parameterisation would output it
    eps_hat = (x_t - a[:, None].sqrt() * x0_hat) / (1 - a[:, None]).sqrt()
    output = {"eps": eps_hat, "x0": x0_hat,
              "v": a[:, None].sqrt() * eps_hat - (1 - a[:, None]).sqrt() * x0_hat}[prediction]
    got = _kernel(ops.diffusion_loss, output.float(), x0.float(), eps.float(), a.float(),
                  prediction=prediction, min_snr_gamma=gamma)
    want = snr.clamp(max=gamma) * err.square().mean(dim=1)
    assert got.shape == (5,) and got.dtype == torch.float32
    assert testing.relative_error(got, want) < 1e-4


def test_loss_without_weights_is_the_mean_squared_error(device, generator):
    m, x0, eps = (_randn(generator, device, 3, 2, 4) for _ in range(3))
    got = _kernel(ops.diffusion_loss, m, x0, eps, 0.5)
    assert testing.relative_error(got, (m - eps).square().mean(dim=(1, 2))) < TOL
    empty = _kernel(ops.diffusion_loss, m[:0], x0[:0], eps[:0], 0.5)
    assert empty.shape == (0,)


# --------------------------------------------------------------------------------------------------
# bad input: one test per case, each naming the argument
# --------------------------------------------------------------------------------------------------

BAD_SIGMA_FORM = [
    ("sigma", ValueError, dict(sigma=0.0)),
    ("sigma", ValueError, dict(sigma=-1.0)),
    ("sigma", ValueError, dict(sigma=float("inf"))),
    ("sigma", ValueError, dict(sigma=torch.tensor([1.0, -1.0, 1.0]))),
    ("sigma", TypeError, dict(sigma="1")),
    ("sigma_next", ValueError, dict(sigma_next=-0.5)),
    ("sigma", ValueError, dict(sigma=1.0, sigma_next=2.0)),
    ("sigma", ValueError, dict(sigma_next=torch.tensor([0.5, 3.0, 0.5]))),
    ("sigma_next", ValueError, dict(sigma_next=torch.full((4,), 0.5))),
    ("model_output", ValueError, dict(model_output=_x(3, 5))),
    ("x", TypeError, dict(x=torch.zeros(3, 4, dtype=torch.int64))),
    ("prediction", ValueError, dict(prediction="score")),
    ("uncond", ValueError, dict(uncond=_x(3, 5), guidance_scale=2.0)),
    ("guidance_scale", ValueError, dict(guidance_scale=2.0)),
    ("guidance_scale", TypeError, dict(uncond=_x(3, 4), guidance_scale=None)),
    ("guidance_scale", ValueError, dict(uncond=_x(3, 4), guidance_scale=float("nan"))),
]


def _sigma_form_call(step, kwargs):
    x, m = kwargs.pop("x"), kwargs.pop("model_output")
    sigma, sigma_next = kwargs.pop("sigma"), kwargs.pop("sigma_next")
    if step == "heun":
        return lambda: ops.heun_step(x, m, m, sigma, sigma_next, **kwargs)
    return lambda: getattr(ops, f"{step}_step")(x, m, sigma, sigma_next, **kwargs)


@pytest.mark.parametrize("step", ["euler", "heun", "dpmpp_2m"])
@pytest.mark.parametrize("name, error, bad", BAD_SIGMA_FORM,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(BAD_SIGMA_FORM)])
def test_bad_sigma_form_input_names_the_argument(step, name, error, bad):
    kwargs = dict(x=_x(3, 4), model_output=_x(3, 4), sigma=1.0, sigma_next=0.5)
    kwargs.update(bad)
    if step == "heun" and "uncond" in bad:
        kwargs["uncond_next"] = kwargs["uncond"]
    with pytest.raises(error, match=name):
        _sigma_form_call(step, kwargs)()


@pytest.mark.parametrize("name, error, call", [
    ("churn", ValueError, lambda x: ops.euler_step(x, x, 1.0, 0.5, churn=-0.1)),
    ("s_noise", ValueError, lambda x: ops.euler_step(x, x, 1.0, 0.5, churn=0.1, s_noise=-1.0)),
    ("churn", TypeError, lambda x: ops.heun_step(x, x, x, 1.0, 0.5, churn="0.1")),
    ("sigma_next", ValueError, lambda x: ops.heun_step(x, x, x, 1.0, 0.0)),
    ("uncond_next", ValueError, lambda x: ops.heun_step(x, x, x, 1.0, 0.5, uncond=x,
                                                        guidance_scale=2.0)),
    ("model_output_next", ValueError, lambda x: ops.heun_step(x, x, x[:, :2], 1.0, 0.5)),
    ("sigma_prev", ValueError, lambda x: ops.dpmpp_2m_step(x, x, 1.0, 0.5, previous_denoised=x)),
    ("sigma_prev", ValueError, lambda x: ops.dpmpp_2m_step(x, x, 1.0, 0.5, sigma_prev=2.0)),
    ("sigma_prev", ValueError, lambda x: ops.dpmpp_2m_step(x, x, 1.0, 0.5, previous_denoised=x,
                                                           sigma_prev=1.0)),
    ("previous_denoised", ValueError, lambda x: ops.dpmpp_2m_step(
        x, x, 1.0, 0.5, previous_denoised=x[:2], sigma_prev=2.0)),
    ("noise", ValueError, lambda x: ops.euler_step(x, x, 1.0, 0.5, churn=0.1, noise=x,
                                                   generator=torch.Generator())),
])
def test_bad_step_options_name_the_argument(name, error, call):
    with pytest.raises(error, match=name):
        call(_x(3, 4))


@pytest.mark.parametrize("step", ["ddpm", "ddim"])
@pytest.mark.parametrize("name, error, bad", [
    ("guidance_scale", ValueError, dict(guidance_scale=3.0)),
    ("uncond", ValueError, dict(uncond=_x(2, 4), guidance_scale=3.0)),
    ("uncond", TypeError, dict(uncond=_x(3, 4).double(), guidance_scale=3.0)),
])
def test_bad_guidance_of_the_vp_steps_names_the_argument(step, name, error, bad):
    x = _x(3, 4)
    with pytest.raises(error, match=name):
        getattr(ops, f"{step}_step")(x, x, 0.5, 0.6, **bad)


@pytest.mark.parametrize("name, error, call", [
    ("alpha_bar", ValueError, lambda x: ops.q_sample(x, 0.0, x)),
    ("alpha_bar", ValueError, lambda x: ops.q_sample(x, 1.5, x)),
    ("alpha_bar", ValueError, lambda x: ops.q_sample(x, torch.tensor([0.5, -0.1, 0.5]), x)),
    ("noise", ValueError, lambda x: ops.q_sample(x, 0.5, x[:, :2])),
    ("alpha_bar", ValueError, lambda x: ops.diffusion_loss(x, x, x, 1.0)),
    ("alpha_bar", ValueError, lambda x: ops.diffusion_loss(x, x, x, torch.full((2,), 0.5))),
    ("x0", ValueError, lambda x: ops.diffusion_loss(x, x[:2], x, 0.5)),
    ("noise", ValueError, lambda x: ops.diffusion_loss(x, x, x[:, :1], 0.5)),
    ("prediction", ValueError, lambda x: ops.diffusion_loss(x, x, x, 0.5, prediction="score")),
    ("min_snr_gamma", ValueError, lambda x: ops.diffusion_loss(x, x, x, 0.5, min_snr_gamma=0.0)),
    ("min_snr_gamma", ValueError, lambda x: ops.diffusion_loss(x, x, x, 0.5,
                                                               min_snr_gamma=-5.0)),
    ("min_snr_gamma", TypeError, lambda x: ops.diffusion_loss(x, x, x, 0.5, min_snr_gamma="5")),
])
def test_bad_training_input_names_the_argument(name, error, call):
    with pytest.raises(error, match=name):
        call(_x(3, 4))


_HOST_STEPS = {  # step: (schedule values, options beyond the prediction), for the host path
    "euler": ((2.5, 1.1), dict(churn=0.4, s_noise=1.1, denoised=True)),
    "heun": ((2.5, 1.1), dict(churn=0.4, s_noise=1.1)),
    "dpmpp_2m": ((2.5, 1.1, 4.0), {}),
    "dpmpp_2m first order": ((2.5, 1.1, 1.0), {}),
    "dpmpp_2m to 0": ((2.5, 0.0, 4.0), {}),
    # the VP steps (unscaled) with clip, diffusers' default
    "ddpm": ((0.5, 0.7), dict(clip=1.0)),
    "ddpm fixed_large, last": ((0.5, 1.0), dict(clip=1.0, variance="fixed_large")),
    "ddim eta": ((0.5, 0.7), dict(clip=1.0, eta=0.5)),
    "ddim clipped eps": ((0.3, 0.6), dict(clip=0.5, clipped_eps=True)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("step", list(_HOST_STEPS))
def test_host_step_is_the_reference_step(step, prediction, dtype, generator):
    # off the Triton backend, loop_step's steps with float schedule values form their
    # coefficients on the host (the drop-ins' CPU path); per-example tensors take the
    # reference's own code: both, with scales, guidance, noise, churn, clip, the second
    # evaluation or previous D, and D, must agree
    from gdm_engine.ops.diffusion import loop_step

    kind = step.split()[0]
    x, m, u, z, second, u_second = (torch.randn(2, 3, 4, generator=generator).to(dtype)
                                    for _ in range(6))
    values, extra = _HOST_STEPS[step]
    options = dict(prediction=prediction, uncond=u, guidance_scale=3.0, **extra)
    if kind == "heun":
        options.update(second=second, uncond_second=u_second, noise=z)
    elif kind == "dpmpp_2m":
        options.update({} if step == "dpmpp_2m first order" else {"second": second})
    else:
        options.update(noise=z)
    scales = (1.0, 1.0) if kind in ("ddpm", "ddim") else (0.7, 1.3)
    with gdm_engine.use_backend("reference"):
        host = loop_step(kind, x, m, values, scales=scales, **options)
        per_example = loop_step(kind, x, m, tuple(torch.full((2,), v) for v in values),
                                scales=scales, **options)
    tolerance = catalog.CATALOG[f"{kind}_step"].tolerance[dtype]
    host, per_example = (t if isinstance(t, tuple) else (t,) for t in (host, per_example))
    assert len(host) == len(per_example) == (2 if kind in ("euler", "dpmpp_2m") else 1)
    for got, want in zip(host, per_example):
        assert got.dtype == dtype and got.shape == x.shape
        assert testing.relative_error(got, want.double()) <= tolerance
