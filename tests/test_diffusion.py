"""diffusion (ddpm_step, ddim_step, langevin_step) beyond the catalog's generic checks: the
equations against independent derivations, the noise the kernel draws itself (2^20 draws:
moments, Kolmogorov–Smirnov, reproducibility, independence, tiling), the last step, empty
batches, float64, and every bad input."""

import math

import pytest
import scipy.stats
import torch

import gdm_engine
from gdm_engine import catalog, ops, reference, testing
from gdm_engine.reference.diffusion import predicted_x0
from gdm_engine.kernels import diffusion as kernels

TOL = catalog.DEFAULT_TOLERANCE[torch.float32]
N_DRAWS = 2**20


def _randn(generator, device, *shape):
    return torch.randn(*shape, generator=generator).to(device)


def _kernel(fn, *args, **kwargs):
    with gdm_engine.use_backend("triton"):
        return fn(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# the equations
# --------------------------------------------------------------------------------------------------


def test_ddpm_posterior_is_the_product_of_gaussians(device, generator):
    # q(x_{t−1}|x_t, x0) ∝ N(x_{t−1}; sqrt(ᾱ_prev) x0, 1 − ᾱ_prev) · N(x_t; sqrt(α_t) x_{t−1}, β_t)
    # has precision 1/(1 − ᾱ_prev) + α_t/β_t; its mean and variance are eq. 7's μ and β̃.
    x_t, x0, z = (_randn(generator, device, 5, 3, 4).double() for _ in range(3))
    a, a_prev = 0.3, 0.45
    alpha = a / a_prev
    beta = 1 - alpha
    precision = 1 / (1 - a_prev) + alpha / beta
    mean = (math.sqrt(a_prev) * x0 / (1 - a_prev) + math.sqrt(alpha) * x_t / beta) / precision
    want = mean + math.sqrt(1 / precision) * z
    got = reference.ddpm_step(x_t, x0, a, a_prev, z, prediction="x0")
    assert testing.relative_error(got, want) < 1e-12
    kernel = _kernel(ops.ddpm_step, x_t.float(), x0.float(), a, a_prev, prediction="x0",
                     noise=z.float())
    assert testing.relative_error(kernel, want) < TOL
    large = reference.ddpm_step(x_t, x0, a, a_prev, z, prediction="x0", variance="fixed_large")
    assert testing.relative_error(large - mean, math.sqrt(beta) * z) < 1e-12


@pytest.mark.parametrize("fn", [ops.ddpm_step, ops.ddim_step], ids=lambda f: f.__name__)
def test_the_three_predictions_agree(fn, device, generator):
    # eps, x0 and v describing the same x0 give the same step (Salimans & Ho, 2022: v = α ε − σ x0)
    x0, eps, z = (_randn(generator, device, 4, 7) for _ in range(3))
    a = torch.rand(4, generator=generator).to(device) * 0.8 + 0.1
    a_prev = a + 0.05
    x_t = a[:, None].sqrt() * x0 + (1 - a[:, None]).sqrt() * eps
    v = a[:, None].sqrt() * eps - (1 - a[:, None]).sqrt() * x0
    extra = {"eta": 0.6} if fn is ops.ddim_step else {}
    outs = [_kernel(fn, x_t, m, a, a_prev, prediction=p, noise=z, **extra)
            for p, m in (("eps", eps), ("x0", x0), ("v", v))]
    assert testing.relative_error(outs[1], outs[0]) < 1e-5
    assert testing.relative_error(outs[2], outs[0]) < 1e-5


def test_ddim_with_eta_one_has_ddpm_variance_and_eta_zero_is_deterministic(device, generator):
    x_t, eps = _randn(generator, device, 3, 50), _randn(generator, device, 3, 50)
    z = torch.ones_like(x_t)
    a, a_prev = 0.2, 0.35
    zero_noise = torch.zeros_like(x_t)
    ddpm_sigma = (reference.ddpm_step(x_t, eps, a, a_prev, z)
                  - reference.ddpm_step(x_t, eps, a, a_prev, zero_noise))
    ddim_sigma = (reference.ddim_step(x_t, eps, a, a_prev, z, eta=1.0)
                  - reference.ddim_step(x_t, eps, a, a_prev, zero_noise, eta=1.0))
    assert torch.allclose(ddpm_sigma, ddim_sigma, rtol=1e-6)
    # eta = 0: the same output whatever the generator, and eps is carried forward (eq. 12)
    one = _kernel(ops.ddim_step, x_t, eps, a, a_prev, generator=torch.Generator().manual_seed(1))
    two = _kernel(ops.ddim_step, x_t, eps, a, a_prev, generator=torch.Generator().manual_seed(2))
    assert torch.equal(one, two)
    x0 = (x_t - math.sqrt(1 - a) * eps) / math.sqrt(a)
    want = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
    assert testing.relative_error(one, want) < TOL


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_last_step_returns_x0_without_noise(prediction, device, generator):
    x_t, m = _randn(generator, device, 6, 9), _randn(generator, device, 6, 9)
    a = 0.9
    x0 = predicted_x0(x_t.double(), m.double(), a, prediction)
    for fn in (ops.ddpm_step, ops.ddim_step):
        out = _kernel(fn, x_t, m, a, 1.0, prediction=prediction, generator=generator)
        assert testing.relative_error(out, x0) < TOL
    # per-example: only the rows at ᾱ_prev = 1 are noiseless
    a_prev = torch.tensor([1.0, 0.95, 1.0, 0.95, 1.0, 0.95], device=device)
    a_t = torch.full((6,), a, device=device)
    out = _kernel(ops.ddpm_step, x_t, m, a_t, a_prev, prediction=prediction, generator=generator)
    assert testing.relative_error(out[::2], x0[::2]) < TOL
    assert testing.relative_error(out[1::2], x0[1::2]) > 1e-3


def test_dynamic_threshold_bounds_x0_and_keeps_small_values(device, generator):
    x0 = 4 * _randn(generator, device, 3, 200)
    x0[1] = x0[1].clamp(-0.5, 0.5)  # quantile below 1: s = 1, x0 unchanged
    got = predicted_x0(x0.double(), x0.double(), 0.5, "x0", threshold=0.9)
    assert got.abs().max() <= 1
    assert torch.equal(got[1], x0[1].double())
    s = torch.quantile(x0[0].double().abs(), 0.9)
    assert torch.allclose(got[0], x0[0].double().clamp(-s, s) / s)
    # the kernel's step with x0 prediction on the last step returns the thresholded x0
    out = _kernel(ops.ddpm_step, torch.zeros_like(x0), x0, 0.5, 1.0, prediction="x0",
                  threshold=0.9)
    assert testing.relative_error(out, got) < TOL


def test_langevin_step_definition(device, generator):
    x, score, z = (_randn(generator, device, 4, 3, 5) for _ in range(3))
    h = torch.tensor([0.0, 0.1, 0.5, 2.0], device=device)
    out = _kernel(ops.langevin_step, x, score, h, noise=z)
    want = x + h[:, None, None] / 2 * score + h[:, None, None].sqrt() * z
    assert testing.relative_error(out, want) < TOL
    assert torch.equal(out[0], x[0])  # step size 0: x unchanged
    assert torch.equal(_kernel(ops.langevin_step, x, score, 0.0, generator=generator), x)


def test_expanded_schedule_and_strided_inputs(device, generator):
    # the samplers pass 0-d schedule values expanded to (N,): stride 0
    x_t, m, z = (_randn(generator, device, 5, 2, 6) for _ in range(3))
    a = torch.tensor(0.4, device=device).reshape(1).expand(5)
    a_prev = torch.tensor(0.5, device=device).reshape(1).expand(5)
    out = _kernel(ops.ddpm_step, x_t.transpose(1, 2), m.transpose(1, 2), a, a_prev,
                  noise=z.transpose(1, 2))
    want = reference.ddpm_step(*(t.double().transpose(1, 2) for t in (x_t, m)), 0.4, 0.5,
                               z.double().transpose(1, 2))
    assert testing.relative_error(out, want) < TOL


@pytest.mark.parametrize("fn", [ops.ddpm_step, ops.ddim_step, ops.langevin_step],
                         ids=lambda f: f.__name__)
def test_empty_batch_and_float64(fn, device, generator):
    schedule = (0.5,) if fn is ops.langevin_step else (0.3, 0.4)
    empty = torch.zeros(0, 3, device=device)
    assert _kernel(fn, empty, empty, *schedule, generator=generator).shape == (0, 3)
    x, m, z = (_randn(generator, device, 3, 4).double() for _ in range(3))
    got = _kernel(fn, x, m, *schedule, noise=z)  # float64 always runs the reference
    assert torch.equal(got, getattr(reference, fn.__name__)(x, m, *schedule, z))


# --------------------------------------------------------------------------------------------------
# the noise the kernel draws
# --------------------------------------------------------------------------------------------------


def _ddpm_noise(shape, seed, device):
    """z recovered from a ddpm_step on a zero input and a zero model output: x_{t−1} = σ z."""
    a, a_prev = 0.5, 0.75
    sigma = math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
    zeros = torch.zeros(shape, device=device)
    out = _kernel(ops.ddpm_step, zeros, zeros, a, a_prev,
                  generator=torch.Generator().manual_seed(seed))
    return out.double() / sigma


@pytest.fixture(scope="module")
def drawn():
    """2^20 draws of the kernel's noise, and 2^16 more for each of two seeds."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return (_ddpm_noise((16, 4, 128, 128), 7, device), _ddpm_noise((16, 4096), 7, device),
            _ddpm_noise((16, 4096), 8, device))


def test_drawn_noise_is_standard_normal(drawn):
    z = drawn[0].flatten()
    n = z.numel()
    assert n == N_DRAWS
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.var().item() - 1) < 5 * math.sqrt(2 / n)
    assert scipy.stats.kstest(z.cpu().numpy(), "norm").statistic < 1.63 / math.sqrt(n)
    # no stream repeats (rows or tiles drawing the same numbers): about 1% of fp32 draws collide
    assert z.float().unique().numel() > 0.95 * n


def test_drawn_noise_has_uncorrelated_neighbours_and_seeds(drawn):
    z, same, other = drawn[0], drawn[1], drawn[2]
    flat = z.flatten()

    def corr(a, b):
        a, b = a.flatten(), b.flatten()
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item(), a.numel()

    for lag in (1, 2, 3, 4, 128):  # neighbouring elements, within and across Philox words
        c, n = corr(flat[:-lag], flat[lag:])
        assert abs(c) < 5 / math.sqrt(n), lag
    c, n = corr(z[:-1], z[1:])  # neighbouring examples
    assert abs(c) < 5 / math.sqrt(n)
    c, n = corr(same, other)  # different seeds
    assert abs(c) < 5 / math.sqrt(n)


def test_same_seed_same_bits_whatever_the_tiling(drawn, device, monkeypatch):
    again = _ddpm_noise((16, 4096), 7, device)
    assert torch.equal(again, drawn[1])
    # the numbers depend on the element's index only, not on how programs cut the rows
    monkeypatch.setattr(kernels, "_tile", lambda d: (2, 64))
    assert torch.equal(_ddpm_noise((16, 4096), 7, device), drawn[1])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_drawn_noise_in_half_precision(dtype, device):
    zeros = torch.zeros(8, 512, device=device, dtype=dtype)
    out = _kernel(ops.langevin_step, zeros, zeros, 1.0, generator=torch.Generator().manual_seed(3))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert abs(out.float().std().item() - 1) < 0.05


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def _x(*shape):
    return torch.zeros(*shape)


BAD_DENOISING = [
    ("alpha_bar_t", ValueError, dict(alpha_bar_t=0.0)),
    ("alpha_bar_t", ValueError, dict(alpha_bar_t=1.0)),
    ("alpha_bar_t", ValueError, dict(alpha_bar_t=1.5, alpha_bar_prev=1.0)),
    ("alpha_bar_t", ValueError, dict(alpha_bar_t=float("nan"))),
    ("alpha_bar_t", ValueError, dict(alpha_bar_t=torch.tensor([0.5, 0.0, 0.5]))),
    ("alpha_bar_t", TypeError, dict(alpha_bar_t="0.5")),
    ("alpha_bar_t", TypeError, dict(alpha_bar_t=torch.full((3,), 0.5, dtype=torch.float64))),
    ("alpha_bar_prev", ValueError, dict(alpha_bar_prev=1.2)),
    ("alpha_bar_prev", ValueError, dict(alpha_bar_t=0.5, alpha_bar_prev=0.4)),
    ("alpha_bar_prev", ValueError, dict(alpha_bar_prev=torch.tensor([0.6, 0.1, 0.6]))),
    ("alpha_bar_prev", ValueError, dict(alpha_bar_prev=torch.full((4,), 0.6))),
    ("alpha_bar_prev", ValueError, dict(alpha_bar_prev=torch.full((3, 1), 0.6))),
    ("model_output", ValueError, dict(model_output=_x(3, 5))),
    ("model_output", TypeError, dict(model_output=_x(3, 4).half())),
    ("model_output", TypeError, dict(model_output=[0.0])),
    ("x_t", TypeError, dict(x_t=torch.zeros(3, 4, dtype=torch.int64))),
    ("x_t", ValueError, dict(x_t=torch.tensor(0.0), model_output=torch.tensor(0.0))),
    ("prediction", ValueError, dict(prediction="epsilon")),
    ("clip", ValueError, dict(clip=0.0)),
    ("clip", ValueError, dict(clip=-1.0)),
    ("clip", TypeError, dict(clip="1")),
    ("threshold", ValueError, dict(threshold=0.0)),
    ("threshold", ValueError, dict(threshold=1.0)),
    ("noise", ValueError, dict(noise=_x(3, 5))),
    ("noise", ValueError, dict(noise=_x(3, 4), generator=torch.Generator())),
    ("generator", TypeError, dict(generator=0)),
]


@pytest.mark.parametrize("fn", [ops.ddpm_step, ops.ddim_step], ids=lambda f: f.__name__)
@pytest.mark.parametrize("name, error, bad", BAD_DENOISING,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(BAD_DENOISING)])
def test_bad_denoising_input_names_the_argument(fn, name, error, bad):
    kwargs = dict(x_t=_x(3, 4), model_output=_x(3, 4), alpha_bar_t=0.5, alpha_bar_prev=0.6)
    kwargs.update(bad)
    args = [kwargs.pop(k) for k in ("x_t", "model_output", "alpha_bar_t", "alpha_bar_prev")]
    with pytest.raises(error, match=name):
        fn(*args, **kwargs)


def test_bad_variance_and_eta_name_the_argument():
    x = _x(3, 4)
    with pytest.raises(ValueError, match="variance"):
        ops.ddpm_step(x, x, 0.5, 0.6, variance="learned")
    with pytest.raises(ValueError, match="eta"):
        ops.ddim_step(x, x, 0.5, 0.6, eta=-0.1)
    with pytest.raises(TypeError, match="eta"):
        ops.ddim_step(x, x, 0.5, 0.6, eta=None)


@pytest.mark.parametrize("name, error, bad", [
    ("step_size", ValueError, dict(step_size=-0.1)),
    ("step_size", ValueError, dict(step_size=float("inf"))),
    ("step_size", ValueError, dict(step_size=torch.tensor([0.1, -0.1, 0.1]))),
    ("step_size", ValueError, dict(step_size=torch.full((2,), 0.1))),
    ("step_size", TypeError, dict(step_size=None)),
    ("score", ValueError, dict(score=_x(3, 5))),
    ("noise", ValueError, dict(noise=_x(3, 4), generator=torch.Generator())),
    ("noise", TypeError, dict(noise=_x(3, 4).bfloat16())),
])
def test_bad_langevin_input_names_the_argument(name, error, bad):
    kwargs = dict(x=_x(3, 4), score=_x(3, 4), step_size=0.1)
    kwargs.update(bad)
    args = [kwargs.pop(k) for k in ("x", "score", "step_size")]
    with pytest.raises(error, match=name):
        ops.langevin_step(*args, **kwargs)


def test_ops_are_forward_only():
    assert not any(catalog.CATALOG[name].differentiable
                   for name in ("ddpm_step", "ddim_step", "langevin_step"))
    x = torch.zeros(2, 3, requires_grad=True)
    out = ops.langevin_step(x, x, 0.1, noise=torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="autograd"):
        out.sum().backward()


@pytest.mark.parametrize("d", [1, 2, 7, 100])
@pytest.mark.parametrize("q", [0.01, 0.5, 0.9, 0.995])
def test_threshold_quantile_matches_torch_quantile(d, q, generator):
    from gdm_engine.reference.diffusion import threshold_scale

    x0 = 3 * torch.randn(4, d, generator=generator).double()
    want = torch.quantile(x0.abs(), q, dim=1).clamp(min=1)
    assert torch.allclose(threshold_scale(x0, q), want, rtol=1e-12, atol=0)
