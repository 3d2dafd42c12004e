"""The catalog entries of diffusion: the sampler steps (forward-only, explicit noise so kernel
and reference agree; the in-kernel noise is tested statistically in tests/test_diffusion.py),
q_sample and the loss. The catalog's callables take every tensor positionally (the harness
converts positional tensors for the float64 reference) and pass them to the public ops by
name."""

import torch

from gdm_engine import ops, reference

from .peers import _diffusers_step
from .spec import Case, OpSpec, _bytes_of, _randint


def _ddpm_op(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, uncond=None, **kwargs):
    return ops.ddpm_step(
        x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=noise, uncond=uncond, **kwargs
    )


def _ddim_op(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, uncond=None, **kwargs):
    return ops.ddim_step(
        x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=noise, uncond=uncond, **kwargs
    )


def _euler_op(x, model_output, sigma, sigma_next, noise=None, uncond=None, **kwargs):
    return ops.euler_step(x, model_output, sigma, sigma_next, noise=noise, uncond=uncond, **kwargs)


def _heun_op(
    x,
    model_output,
    model_output_next,
    sigma,
    sigma_next,
    noise=None,
    uncond=None,
    uncond_next=None,
    **kwargs,
):
    return ops.heun_step(
        x,
        model_output,
        model_output_next,
        sigma,
        sigma_next,
        noise=noise,
        uncond=uncond,
        uncond_next=uncond_next,
        **kwargs,
    )


def _dpmpp_op(x, model_output, sigma, sigma_next, previous_denoised=None, uncond=None, **kwargs):
    return ops.dpmpp_2m_step(
        x,
        model_output,
        sigma,
        sigma_next,
        previous_denoised=previous_denoised,
        uncond=uncond,
        **kwargs,
    )


def _langevin_op(x, score, step_size, noise=None, **kwargs):
    return ops.langevin_step(x, score, step_size, noise=noise, **kwargs)


def _diffusion_tensors(shape, dtype, device, generator, noise=True, count=3):
    """x, model output (or score), `count` − 3 more outputs, and explicit noise z (None: drawn
    in the kernel), last."""
    drawn = [
        torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(count)
    ]
    return (*drawn[:-1], drawn[-1] if noise else None)


def _alpha_bars(n, per_example, dtype, device, generator, last=False):
    """(ᾱ_t, ᾱ_prev): floats, or (N,) tensors in x's dtype; ᾱ_prev = 1 where `last`."""
    a = 0.05 + 0.85 * torch.rand(n, generator=generator)
    gap = 0.1 * torch.rand(n, generator=generator)
    a_prev = torch.ones(n) if last else torch.minimum(a + gap, torch.ones(n))
    if per_example:
        if last and n > 1:  # a batch that mixes the last step with others
            a_prev[::2] = torch.minimum(a[::2] + gap[::2], torch.ones(1))
        return a.to(device=device, dtype=dtype), a_prev.to(device=device, dtype=dtype)
    return float(a[0]), float(a_prev[0])


def _label(shape, schedule, kwargs, z):
    return (
        f"{tuple(shape)} {schedule}"
        + "".join(f" {k}={v}" for k, v in kwargs.items())
        + (" drawn noise" if z is None else "")
    )


def _denoising_inputs(size, dtype, device, generator, settings):
    """One Case per (shape, per-example schedule?, last step?, kwargs) in `settings`; a
    guidance_scale in kwargs adds an unconditional output."""
    cases = []
    for shape, per_example, last, kwargs in settings:
        x, m, u, z = _diffusion_tensors(
            shape, dtype, device, generator, noise=kwargs.pop("noise", True), count=4
        )
        a, a_prev = _alpha_bars(shape[0], per_example, dtype, device, generator, last)
        schedule = (
            ("per-example" if per_example else "float")
            + " schedule"
            + (" last step" if last else "")
        )
        uncond = u if "guidance_scale" in kwargs else None
        cases.append(Case(_label(shape, schedule, kwargs, z), (x, m, a, a_prev, z, uncond), kwargs))
    return cases


def _denoising_shapes(size, generator):
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    if size == "tiny":
        return [(1, 1), (r(2, 5), r(1, 3), r(2, 7), r(2, 7)), (3, 17), (r(2, 6), 2)]
    return [(r(2, 16), 4, r(8, 40), r(8, 40)), (r(30, 200), 2), (7, 3, 31, 29), (5, 1)]


def _ddpm_inputs(size, dtype, device, generator):
    if size == "bench":  # the latent batch: (64, 4, 64, 64), given and drawn noise
        shape = (64, 4, 64, 64)
        return _denoising_inputs(
            size,
            dtype,
            device,
            generator,
            [
                (shape, True, False, {}),
                (shape, False, False, {"noise": False}),
                (shape, False, False, {"guidance_scale": 3.0, "noise": False}),
                (shape, True, False, {"threshold": 0.995}),
            ],
        )
    s = _denoising_shapes(size, generator)
    return _denoising_inputs(
        size,
        dtype,
        device,
        generator,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "variance": "fixed_large"}),
            (s[2], True, False, {"prediction": "x0", "clip": 1.0}),
            (s[1], False, False, {"threshold": 0.9}),
            (s[3], True, True, {"prediction": "eps", "clip": 1.5, "threshold": 0.8}),
            (s[2], False, True, {"variance": "fixed_large"}),
            (s[1], True, False, {"guidance_scale": 2.5, "prediction": "v"}),
            (s[2], False, False, {"guidance_scale": 4.0, "threshold": 0.95}),
        ],
    )


def _ddim_inputs(size, dtype, device, generator):
    if size == "bench":
        shape = (64, 4, 64, 64)
        return _denoising_inputs(
            size,
            dtype,
            device,
            generator,
            [
                (shape, True, False, {}),
                (shape, False, False, {}),
                (shape, False, False, {"eta": 1.0, "noise": False}),
                (shape, False, False, {"guidance_scale": 3.0}),
            ],
        )
    s = _denoising_shapes(size, generator)
    return _denoising_inputs(
        size,
        dtype,
        device,
        generator,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "eta": 0.5}),
            (s[2], True, False, {"prediction": "x0", "clip": 1.0, "eta": 1.0}),
            (s[1], False, False, {"threshold": 0.9, "eta": 0.3}),
            (s[3], True, True, {"eta": 1.0}),
            (s[0], True, False, {"guidance_scale": 2.0, "clip": 1.0}),
        ],
    )


# the σ-form steps: Euler, Heun (Karras et al., 2022) and DPM-Solver++(2M)


def _sigmas(n, per_example, dtype, device, generator, last=False):
    """(σ, σ_next, σ_prev) with σ_prev > σ >= σ_next >= 0; σ_next = 0 where `last`."""
    sigma = 0.05 + 10 * torch.rand(n, generator=generator)
    sigma_next = torch.zeros(n) if last else sigma * torch.rand(n, generator=generator)
    sigma_prev = sigma * (1.1 + torch.rand(n, generator=generator))
    if last and per_example and n > 1:  # a batch that mixes the last step with others
        sigma_next[::2] = sigma[::2] / 2
    values = (sigma, sigma_next, sigma_prev)
    if per_example:
        return tuple(v.to(device=device, dtype=dtype) for v in values)
    return tuple(float(v[0]) for v in values)


def _sigma_form_inputs(size, dtype, device, generator, outputs, settings):
    """Cases of (x, `outputs` model outputs, σ, σ_next, z, `outputs` unconditional ones) per
    (shape, per-example?, last?, kwargs); guidance_scale in kwargs adds the unconditional ones,
    churn the noise."""
    cases = []
    for shape, per_example, last, kwargs in settings:
        tensors = _diffusion_tensors(
            shape, dtype, device, generator, noise=kwargs.pop("noise", True), count=2 + 2 * outputs
        )
        x, models, uncond, z = (
            tensors[0],
            tensors[1 : 1 + outputs],
            tensors[1 + outputs : -1],
            tensors[-1],
        )
        sigma, sigma_next, _ = _sigmas(shape[0], per_example, dtype, device, generator, last)
        z = z if kwargs.get("churn") else None
        uncond = uncond if "guidance_scale" in kwargs else (None,) * outputs
        schedule = (
            ("per-example" if per_example else "float") + " sigmas" + (" last step" if last else "")
        )
        cases.append(
            Case(
                _label(shape, schedule, kwargs, z),
                (x, *models, sigma, sigma_next, z, *uncond),
                kwargs,
            )
        )
    return cases


def _euler_inputs(size, dtype, device, generator):
    if size == "bench":
        shape = (64, 4, 64, 64)
        return _sigma_form_inputs(
            size,
            dtype,
            device,
            generator,
            1,
            [
                (shape, True, False, {}),
                (shape, True, False, {"guidance_scale": 3.0}),
                (shape, True, False, {"churn": 0.2, "noise": False}),
            ],
        )
    s = _denoising_shapes(size, generator)
    return _sigma_form_inputs(
        size,
        dtype,
        device,
        generator,
        1,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "churn": 0.3}),
            (s[2], True, True, {"prediction": "x0", "guidance_scale": 2.0}),
            (s[3], False, False, {"churn": 0.1, "s_noise": 1.007, "guidance_scale": 0.5}),
            (s[1], True, True, {}),
        ],
    )


def _heun_inputs(size, dtype, device, generator):
    if size == "bench":
        shape = (64, 4, 64, 64)
        return _sigma_form_inputs(
            size,
            dtype,
            device,
            generator,
            2,
            [(shape, True, False, {}), (shape, True, False, {"guidance_scale": 3.0})],
        )
    s = _denoising_shapes(size, generator)
    return _sigma_form_inputs(
        size,
        dtype,
        device,
        generator,
        2,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "churn": 0.3}),
            (s[2], True, False, {"prediction": "x0", "guidance_scale": 2.0}),
            (s[3], False, False, {"churn": 0.1, "guidance_scale": 1.5}),
        ],
    )


def _dpmpp_inputs(size, dtype, device, generator):
    def case(shape, per_example, last, second_order, **kwargs):
        x, m, previous, u = _diffusion_tensors(shape, dtype, device, generator, count=4)
        sigma, sigma_next, sigma_prev = _sigmas(
            shape[0], per_example, dtype, device, generator, last
        )
        if second_order:
            kwargs["sigma_prev"] = sigma_prev
        uncond = u if "guidance_scale" in kwargs else None
        schedule = (
            ("per-example" if per_example else "float")
            + " sigmas"
            + (" last step" if last else "")
            + (" second order" if second_order else "")
        )
        label = _label(
            shape, schedule, {k: v for k, v in kwargs.items() if k != "sigma_prev"}, True
        )
        return Case(
            label, (x, m, sigma, sigma_next, previous if second_order else None, uncond), kwargs
        )

    if size == "bench":
        shape = (64, 4, 64, 64)
        return [case(shape, True, False, True), case(shape, True, False, True, guidance_scale=3.0)]
    s = _denoising_shapes(size, generator)
    return [
        case(s[0], False, False, False),
        case(s[1], True, False, True, prediction="v"),
        case(s[2], True, True, True, prediction="x0", guidance_scale=2.0),
        case(s[3], False, False, True, guidance_scale=1.5),
        case(s[1], True, True, False),
    ]


def _sigma_form_flops(case):
    return 10 * case.args[0].numel()


# training: q_sample and the loss


def _q_sample_op(x0, alpha_bar, noise):
    return ops.q_sample(x0, alpha_bar, noise)


def _loss_op(model_output, x0, noise, alpha_bar, **kwargs):
    return ops.diffusion_loss(model_output, x0, noise, alpha_bar, **kwargs)


def _training_inputs(size, dtype, device, generator, loss):
    """(model_output,) x0, noise and ᾱ (float or per-example) per setting."""
    if size == "bench":
        shapes = [(64, 4, 64, 64)] * 2
    else:
        shapes = _denoising_shapes(size, generator)
    settings = (
        [
            {},
            {"prediction": "v", "min_snr_gamma": 5.0},
            {"prediction": "x0"},
            {"min_snr_gamma": 1.0},
        ]
        if loss
        else [{}, {}, {}, {}]
    )
    cases = []
    for i, (shape, kwargs) in enumerate(zip(shapes, settings)):
        tensors = _diffusion_tensors(shape, dtype, device, generator, count=3 if loss else 2)
        a, _ = _alpha_bars(shape[0], i % 2 == 1, dtype, device, generator)
        schedule = "per-example" if i % 2 == 1 else "float"
        args = (tensors[0], *tensors[1:], a) if loss else (tensors[0], a, tensors[1])
        cases.append(Case(_label(shape, schedule + " alpha_bar", kwargs, True), args, kwargs))
    return cases


def _training_flops(case):
    return 4 * case.args[0].numel()


def _elementwise_bytes(outputs=1):
    """bytes_moved of an elementwise step: every full-size tensor read once (the (N,) schedule
    values are negligible), `outputs` x-sized tensors written."""

    def moved(case):
        full = [a for a in case.args if isinstance(a, torch.Tensor) and a.ndim > 1]
        return _bytes_of(*full) + outputs * _bytes_of(case.args[0])

    return moved


def _denoising_flops(case):
    return 8 * case.args[0].numel()


def _langevin_inputs(size, dtype, device, generator):
    def case(shape, per_example, noise=True):
        x, score, z = _diffusion_tensors(shape, dtype, device, generator, noise)
        h = 0.2 * torch.rand(shape[0], generator=generator)
        step = h.to(device=device, dtype=dtype) if per_example else float(h[0])
        label = f"{tuple(shape)} {'per-example' if per_example else 'float'} step size"
        return Case(label + ("" if noise else " drawn noise"), (x, score, step, z), {})

    if size == "bench":
        return [case((64, 4, 64, 64), False), case((64, 4, 64, 64), True, noise=False)]
    s = _denoising_shapes(size, generator)
    return [case(s[0], False), case(s[1], True), case(s[2], True), case(s[3], False)]


def _langevin_flops(case):
    return 4 * case.args[0].numel()


def _library_inputs(prepare):
    return lambda case: prepare(*case.args, **case.kwargs)


def _loop_calls(kind, **options):
    """The loops' calls of a step kernel (ops.diffusion.loop_step): an eager step and a step
    replayed from a CUDA graph, which reads its schedule row and seed on the device."""

    def calls(dtype, device):
        x = torch.zeros(4, 3, 8, 8, dtype=dtype, device=device)
        second = {"second": x} if kind in ("heun", "dpmpp_2m") else {}
        table = torch.zeros(5, 6, dtype=torch.float64, device=device)
        step = torch.zeros(1, dtype=torch.long, device=device)
        for noisy in (False, True):
            seed = 0 if noisy else None
            ops.diffusion.loop_step(kind, x, x, (0.5, 0.6, 0.7), seed=seed, **second, **options)
            ops.diffusion.loop_step(
                kind, x, x, (0.5, 0.6, 0.7), seed=seed, table=table, state=step, **second, **options
            )

    return calls


# Dynamic thresholding needs each example's quantile of |x0| before the step: the kernel writes
# x0, torch takes |x0|, two kthvalue passes and the interpolation between them (7 ops), then the
# step kernel runs. Every other case is its one kernel.
_THRESHOLD_BUDGET = {"forward": lambda case: 7 if "threshold" in case.kwargs else 0, "backward": 0}
_THRESHOLD_REASON = (
    "dynamic thresholding: the per-example quantile of |x0| in torch (abs, two "
    "kthvalue, interpolation: 7 ops) between the x0 kernel and the step kernel"
)

DDPM_STEP = OpSpec(
    name="ddpm_step",
    family="diffusion",
    op=_ddpm_op,
    library_op=ops.library.ddpm_library_op,
    reference=reference.ddpm_step,
    make_inputs=_ddpm_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_denoising_flops,
    library_inputs=_library_inputs(ops.diffusion.ddpm_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("ddpm"),
    device_op_budget=_THRESHOLD_BUDGET,
    budget_reason=_THRESHOLD_REASON,
    peers={"diffusers": _diffusers_step("DDPMScheduler")},
)

DDIM_STEP = OpSpec(
    name="ddim_step",
    family="diffusion",
    op=_ddim_op,
    library_op=ops.library.ddim_library_op,
    reference=reference.ddim_step,
    make_inputs=_ddim_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_denoising_flops,
    library_inputs=_library_inputs(ops.diffusion.ddim_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("ddim"),
    device_op_budget=_THRESHOLD_BUDGET,
    budget_reason=_THRESHOLD_REASON,
    peers={"diffusers": _diffusers_step("DDIMScheduler", steps=50)},
)

EULER_STEP = OpSpec(
    name="euler_step",
    family="diffusion",
    op=_euler_op,
    library_op=ops.library.euler_library_op,
    reference=reference.euler_step,
    make_inputs=_euler_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_sigma_form_flops,
    library_inputs=_library_inputs(ops.diffusion.euler_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("euler"),
)

HEUN_STEP = OpSpec(
    name="heun_step",
    family="diffusion",
    op=_heun_op,
    library_op=ops.library.heun_library_op,
    reference=reference.heun_step,
    make_inputs=_heun_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_sigma_form_flops,
    library_inputs=_library_inputs(ops.diffusion.heun_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("heun"),
)

DPMPP_2M_STEP = OpSpec(
    name="dpmpp_2m_step",
    family="diffusion",
    op=_dpmpp_op,
    library_op=ops.library.dpmpp_2m_library_op,
    reference=reference.dpmpp_2m_step,
    make_inputs=_dpmpp_inputs,
    bytes_moved=_elementwise_bytes(outputs=2),
    flops=_sigma_form_flops,
    library_inputs=_library_inputs(ops.diffusion.dpmpp_2m_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("dpmpp_2m"),
    outputs=("x_next", "denoised"),
)

Q_SAMPLE = OpSpec(
    name="q_sample",
    family="diffusion",
    op=_q_sample_op,
    library_op=ops.library.q_sample_library_op,
    reference=reference.q_sample,
    make_inputs=lambda size, dtype, device, generator: _training_inputs(
        size, dtype, device, generator, loss=False
    ),
    bytes_moved=_elementwise_bytes(),
    flops=_training_flops,
    library_inputs=_library_inputs(ops.diffusion.q_sample_library_inputs),
    constant_inputs=("alpha_bar",),
)

DIFFUSION_LOSS = OpSpec(
    name="diffusion_loss",
    family="diffusion",
    op=_loss_op,
    library_op=ops.library.diffusion_loss_library_op,
    reference=reference.diffusion_loss,
    make_inputs=lambda size, dtype, device, generator: _training_inputs(
        size, dtype, device, generator, loss=True
    ),
    bytes_moved=_elementwise_bytes(outputs=0),
    flops=_training_flops,
    library_inputs=_library_inputs(ops.diffusion.diffusion_loss_library_inputs),
    constant_inputs=("alpha_bar",),
)

LANGEVIN_STEP = OpSpec(
    name="langevin_step",
    family="diffusion",
    op=_langevin_op,
    library_op=ops.library.langevin_library_op,
    reference=reference.langevin_step,
    make_inputs=_langevin_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_langevin_flops,
    library_inputs=_library_inputs(ops.diffusion.langevin_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("langevin"),
)
