"""diffusion: the fused denoising and Langevin steps of the samplers (DDPM, DDIM, Langevin).

Forward-only ops (samplers do not train through them): each is a `torch.library.custom_op` with
a fake implementation and no autograd. The public functions validate their inputs, turn the
schedule values into per-example coefficients (a few (N,) vectors, on the device, never read back
to the host) and run one elementwise Triton kernel, or the PyTorch reference
(gdm_engine.backend).
"""

import math
from typing import Optional

import torch

from gdm_engine import backend
from gdm_engine.reference import diffusion as ref

from ._checks import check_choice, check_noise_source, check_shape_of, check_tensor, noise_seed

PREDICTIONS = ("eps", "x0", "v")
VARIANCES = ("fixed_small", "fixed_large")


def _kernels():
    from gdm_engine.kernels import diffusion as kernels

    return kernels


def _rows(t):
    """(N, D) view (or copy, where no view exists) of an (N, ...) tensor; None stays None."""
    return t.reshape(t.shape[0], t.shape[1:].numel()) if t is not None else None


# --------------------------------------------------------------------------------------------------
# per-example coefficients of the kernel (kernels/diffusion.py): out = cx·x + cm·M + c2·M2 + σ·z,
# or with clamping x0 = clamp(cx·x + cm·M, −s, s) · inv and out = a0·x0 + ax·x + σ·z; M is the
# (guided) model output. Computed in float64 from the schedule (N entries: cheap anywhere),
# stored as an (N, 16) float32 table.
# --------------------------------------------------------------------------------------------------

_DEFAULTS = {"s": 1.0, "inv": 1.0, "g": 1.0}


def _stacked(x, names, columns, defaults=None):
    """The (N, 16) float32 table of the kernels: `columns` (floats or (N,) tensors) in the order
    of `names`; absent ones take their `defaults` value, or 0."""
    defaults = defaults or {}
    cols = [_schedule(columns.get(name, defaults.get(name, 0.0)), x) for name in names]
    cols += [torch.zeros_like(cols[0])] * (_kernels().TABLE_COLUMNS - len(cols))
    return torch.stack(cols, dim=1).float().contiguous()


def _table(x, **columns):
    """The step kernel's table; absent columns take their neutral value."""
    return _stacked(x, _kernels().STEP_COLUMNS, columns, _DEFAULTS)


def _x0_coefficients(a, prediction):
    """(cx, cm) with x0 = cx·x_t + cm·model_output (VP form)."""
    if prediction == "eps":
        return 1 / a.sqrt(), -(1 - a).sqrt() / a.sqrt()
    if prediction == "x0":
        return torch.zeros_like(a), torch.ones_like(a)
    return a.sqrt(), -(1 - a).sqrt()


def _denoised_coefficients(sigma, prediction):
    """(dx, dm) with D(x; σ) = dx·x + dm·model_output (σ form, reference.denoised)."""
    if prediction == "eps":
        return torch.ones_like(sigma), -sigma
    if prediction == "x0":
        return torch.zeros_like(sigma), torch.ones_like(sigma)
    return 1 / (1 + sigma**2), -sigma / (1 + sigma**2).sqrt()


def _denoising_table(x, m, uncond, guidance_scale, cx, cm, a0, ax, sigma, clip, threshold):
    """The table of a DDPM or DDIM step, x0 = cx·x + cm·M, out = a0·x0 + ax·x + σ·z, and
    whether the kernel clamps. The threshold's quantile is computed here, in torch."""
    clamp = clip is not None or threshold is not None
    s = torch.full_like(cx, clip if clip is not None else 1.0)
    inv = torch.ones_like(cx)
    if threshold is not None:
        guided = ref.guided(_rows(m).float(), _rows(uncond).float() if uncond is not None else None,
                            guidance_scale)
        x0 = cx.float()[:, None] * _rows(x).float() + cm.float()[:, None] * guided
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        s = ref.threshold_scale(x0, threshold).double()
        inv = 1 / s
    if not clamp:  # fold x0 into the step: one linear combination, no cancellation in fp32
        cx, cm = a0 * cx + ax, a0 * cm
    return _table(x, cx=cx, cm=cm, a0=a0, ax=ax, sigma=sigma, s=s, inv=inv,
                  g=guidance_scale), clamp


def _denoising_run(x_t, m, noise, uncond, guidance_scale, cx, cm, a0, ax, sigma, clip, threshold,
                   seed, deterministic):
    """A DDPM or DDIM step by the kernel, from its coefficients (see _denoising_table)."""
    table, clamp = _denoising_table(x_t, m, uncond, guidance_scale, cx, cm, a0, ax, sigma, clip,
                                    threshold)
    return _run(x_t, m, table, seed, noise=noise, draw=_draws(noise, deterministic), clamp=clamp,
                uncond=uncond)


def _churn_sigma(sigma_next, churn, s_noise):
    """The noise level that lifts σ_next to σ̂ = σ_next (1 + churn) (Karras et al., Alg. 2)."""
    return s_noise * sigma_next * math.sqrt((1 + churn) ** 2 - 1)


def _euler_coefficients(sigma, sigma_next, prediction):
    """(cx, cm) of x' = (σ_next/σ) x + (1 − σ_next/σ) D with D = dx·x + dm·M."""
    dx, dm = _denoised_coefficients(sigma, prediction)
    ratio = sigma_next / sigma
    return ratio + (1 - ratio) * dx, (1 - ratio) * dm


def _heun_coefficients(sigma, sigma_next, prediction):
    """(cx, cm, c2) of x' = x + h/2 (d + d'), h = σ_next − σ, d = (x − D)/σ, the Euler point
    x_e = x + h d = ex·x + em·M and d' = (x_e − D(x_e; σ_next))/σ_next with D(x_e) from M2."""
    h = sigma_next - sigma
    dx, dm = _denoised_coefficients(sigma, prediction)
    dx_next, dm_next = _denoised_coefficients(sigma_next, prediction)
    ex, em = 1 + h * (1 - dx) / sigma, -h * dm / sigma
    slope = (1 - dx_next) / sigma_next  # d' per unit of x_e
    return (1 + h / 2 * ((1 - dx) / sigma + slope * ex), h / 2 * (-dm / sigma + slope * em),
            -h / 2 * dm_next / sigma_next)


def _dpmpp_coefficients(sigma, sigma_next, sigma_prev, prediction):
    """(cx, cm, c2) of x' = (σ_next/σ) x + (1 − σ_next/σ) ((1 + k) D − k D_prev) with
    k = 1/2r = h / (2 h_prev) (0 on a first-order step, sigma_prev None, or where σ_next = 0)."""
    dx, dm = _denoised_coefficients(sigma, prediction)
    ratio = sigma_next / sigma
    k = torch.zeros_like(sigma)
    if sigma_prev is not None:
        k = torch.where(sigma_next > 0, torch.log(sigma / sigma_next)
                        / (2 * torch.log(sigma_prev / sigma)), 0.0)
    combined = (1 - ratio) * (1 + k)
    return ratio + combined * dx, combined * dm, -(1 - ratio) * k


def _schedule(value, x):
    """An (N,) float64 tensor of a float or per-example schedule value."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64).expand(x.shape[0])
    return torch.full((x.shape[0],), float(value), dtype=torch.float64, device=x.device)


def _run(x, m, table, seed=0, *, noise=None, draw=False, clamp=False, uncond=None, second=None,
         uncond_second=None, store_denoised=False):
    """The step kernel on (N, D) views; outputs shaped like x."""
    out = _kernels().diffusion_step(_rows(x), _rows(m), table, seed, noise=_rows(noise),
                                    draw=draw, clamp=clamp, uncond=_rows(uncond),
                                    second=_rows(second), uncond_second=_rows(uncond_second),
                                    store_denoised=store_denoised)
    if store_denoised:
        return tuple(t.view(x.shape) for t in out)
    return out.view(x.shape)


def _shaped_like_input(x, *args, **kwargs):
    """The fake implementation of a step that returns one tensor shaped like its first input."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _draws(noise, sigma_is_zero):
    """Whether the kernel draws z itself: no noise given and σ not known to be 0."""
    return noise is None and not sigma_is_zero


# --------------------------------------------------------------------------------------------------
# registered ops (unchecked: call the public functions, which validate first)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("gdm_engine::ddpm_step", mutates_args=())
def ddpm_library_op(x_t: torch.Tensor, model_output: torch.Tensor, alpha_bar_t: torch.Tensor,
                    alpha_bar_prev: torch.Tensor, noise: Optional[torch.Tensor] = None,
                    uncond: Optional[torch.Tensor] = None, *, prediction: str = "eps",
                    variance: str = "fixed_small", clip: Optional[float] = None,
                    threshold: Optional[float] = None, guidance_scale: float = 1.0,
                    seed: int = 0, deterministic: bool = False) -> torch.Tensor:
    """The registered ddpm_step; schedule values are (N,) tensors. `deterministic`: σ is known
    to be 0 (the last step), so no noise is drawn."""
    if backend.resolve(x_t) != "triton":
        return ref.ddpm_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise, uncond,
                             prediction=prediction, variance=variance, clip=clip,
                             threshold=threshold, guidance_scale=guidance_scale,
                             seed=seed).contiguous()
    a, a_prev = _schedule(alpha_bar_t, x_t), _schedule(alpha_bar_prev, x_t)
    cx, cm = _x0_coefficients(a, prediction)
    alpha = a / a_prev
    beta = 1 - alpha
    a0 = a_prev.sqrt() * beta / (1 - a)
    ax = alpha.sqrt() * (1 - a_prev) / (1 - a)
    var = (1 - a_prev) / (1 - a) * beta if variance == "fixed_small" else beta
    sigma = torch.where(a_prev == 1, 0.0, var.clamp(min=0).sqrt())
    return _denoising_run(x_t, model_output, noise, uncond, guidance_scale, cx, cm, a0, ax,
                          sigma, clip, threshold, seed, deterministic)


ddpm_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::ddim_step", mutates_args=())
def ddim_library_op(x_t: torch.Tensor, model_output: torch.Tensor, alpha_bar_t: torch.Tensor,
                    alpha_bar_prev: torch.Tensor, noise: Optional[torch.Tensor] = None,
                    uncond: Optional[torch.Tensor] = None, *, eta: float = 0.0,
                    prediction: str = "eps", clip: Optional[float] = None,
                    threshold: Optional[float] = None, guidance_scale: float = 1.0,
                    seed: int = 0, deterministic: bool = False) -> torch.Tensor:
    """The registered ddim_step; schedule values are (N,) tensors."""
    if backend.resolve(x_t) != "triton":
        return ref.ddim_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise, uncond,
                             eta=eta, prediction=prediction, clip=clip, threshold=threshold,
                             guidance_scale=guidance_scale, seed=seed).contiguous()
    a, a_prev = _schedule(alpha_bar_t, x_t), _schedule(alpha_bar_prev, x_t)
    cx, cm = _x0_coefficients(a, prediction)
    sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).clamp(min=0).sqrt()
    direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
    # x_{t−1} = sqrt(ᾱ_prev) x0 + d ε̂ + σ z with ε̂ = (x_t − sqrt(ᾱ_t) x0) / sqrt(1 − ᾱ_t)
    a0 = a_prev.sqrt() - direction * a.sqrt() / (1 - a).sqrt()
    ax = direction / (1 - a).sqrt()
    return _denoising_run(x_t, model_output, noise, uncond, guidance_scale, cx, cm, a0, ax,
                          sigma, clip, threshold, seed, deterministic)


ddim_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::euler_step", mutates_args=())
def euler_library_op(x: torch.Tensor, model_output: torch.Tensor, sigma: torch.Tensor,
                     sigma_next: torch.Tensor, noise: Optional[torch.Tensor] = None,
                     uncond: Optional[torch.Tensor] = None, *, prediction: str = "eps",
                     churn: float = 0.0, s_noise: float = 1.0, guidance_scale: float = 1.0,
                     seed: int = 0) -> torch.Tensor:
    """The registered euler_step; sigmas are (N,) tensors."""
    if backend.resolve(x) != "triton":
        return ref.euler_step(x, model_output, sigma, sigma_next, noise, uncond,
                              prediction=prediction, churn=churn, s_noise=s_noise,
                              guidance_scale=guidance_scale, seed=seed).contiguous()
    s, s_next = _schedule(sigma, x), _schedule(sigma_next, x)
    cx, cm = _euler_coefficients(s, s_next, prediction)
    table = _table(x, cx=cx, cm=cm, sigma=_churn_sigma(s_next, churn, s_noise),
                   g=guidance_scale)
    return _run(x, model_output, table, seed, noise=noise, draw=_draws(noise, churn == 0),
                uncond=uncond)


euler_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::heun_step", mutates_args=())
def heun_library_op(x: torch.Tensor, model_output: torch.Tensor, model_output_next: torch.Tensor,
                    sigma: torch.Tensor, sigma_next: torch.Tensor,
                    noise: Optional[torch.Tensor] = None, uncond: Optional[torch.Tensor] = None,
                    uncond_next: Optional[torch.Tensor] = None, *, prediction: str = "eps",
                    churn: float = 0.0, s_noise: float = 1.0, guidance_scale: float = 1.0,
                    seed: int = 0) -> torch.Tensor:
    """The registered heun_step; sigmas are (N,) tensors."""
    if backend.resolve(x) != "triton":
        return ref.heun_step(x, model_output, model_output_next, sigma, sigma_next, noise, uncond,
                             uncond_next, prediction=prediction, churn=churn, s_noise=s_noise,
                             guidance_scale=guidance_scale, seed=seed).contiguous()
    s, s_next = _schedule(sigma, x), _schedule(sigma_next, x)
    cx, cm, c2 = _heun_coefficients(s, s_next, prediction)
    table = _table(x, cx=cx, cm=cm, c2=c2, sigma=_churn_sigma(s_next, churn, s_noise),
                   g=guidance_scale)
    return _run(x, model_output, table, seed, noise=noise, draw=_draws(noise, churn == 0),
                uncond=uncond, second=model_output_next, uncond_second=uncond_next)


heun_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::dpmpp_2m_step", mutates_args=())
def dpmpp_2m_library_op(x: torch.Tensor, model_output: torch.Tensor, sigma: torch.Tensor,
                        sigma_next: torch.Tensor, previous_denoised: Optional[torch.Tensor] = None,
                        uncond: Optional[torch.Tensor] = None,
                        sigma_prev: Optional[torch.Tensor] = None, *, prediction: str = "eps",
                        guidance_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered dpmpp_2m_step; sigmas are (N,) tensors. Returns (x', denoised)."""
    if backend.resolve(x) != "triton":
        out, d = ref.dpmpp_2m_step(x, model_output, sigma, sigma_next, previous_denoised, uncond,
                                   sigma_prev=sigma_prev, prediction=prediction,
                                   guidance_scale=guidance_scale)
        return out.contiguous(), d.contiguous()
    s, s_next = _schedule(sigma, x), _schedule(sigma_next, x)
    s_prev = _schedule(sigma_prev, x) if previous_denoised is not None else None
    cx, cm, c2 = _dpmpp_coefficients(s, s_next, s_prev, prediction)
    dx, dm = _denoised_coefficients(s, prediction)
    table = _table(x, cx=cx, cm=cm, c2=c2, g=guidance_scale, dx=dx, dm=dm)
    return _run(x, model_output, table, uncond=uncond, second=previous_denoised,
                store_denoised=True)


@dpmpp_2m_library_op.register_fake
def _(x, model_output, sigma, sigma_next, previous_denoised=None, uncond=None, sigma_prev=None,
      **kwargs):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(x, memory_format=torch.contiguous_format))


@torch.library.custom_op("gdm_engine::langevin_step", mutates_args=())
def langevin_library_op(x: torch.Tensor, score: torch.Tensor, step_size: torch.Tensor,
                        noise: Optional[torch.Tensor] = None, *, seed: int = 0,
                        deterministic: bool = False) -> torch.Tensor:
    """The registered langevin_step; step_size is an (N,) tensor."""
    if backend.resolve(x) != "triton":
        return ref.langevin_step(x, score, step_size, noise, seed=seed).contiguous()
    h = _schedule(step_size, x)
    table = _table(x, cx=1.0, cm=h / 2, sigma=h.sqrt())
    return _run(x, score, table, seed, noise=noise, draw=_draws(noise, deterministic))


langevin_library_op.register_fake(_shaped_like_input)


# --------------------------------------------------------------------------------------------------
# training: q_sample and the loss (differentiable)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("gdm_engine::q_sample", mutates_args=())
def q_sample_library_op(x0: torch.Tensor, alpha_bar: torch.Tensor,
                        noise: torch.Tensor) -> torch.Tensor:
    """The registered q_sample; alpha_bar is an (N,) tensor."""
    if backend.resolve(x0) != "triton":
        return ref.q_sample(x0, alpha_bar, noise).contiguous()
    a = _schedule(alpha_bar, x0)
    return _run(x0, noise, _table(x0, cx=a.sqrt(), cm=(1 - a).sqrt()))


q_sample_library_op.register_fake(_shaped_like_input)


def _q_sample_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _q_sample_backward(ctx, grad):
    # x_t is linear in x0 and ε: the gradients are the coefficients times grad (no kernel needed:
    # one scaling each; models never need them, x0 and ε being data).
    (alpha_bar,) = ctx.saved_tensors
    a = alpha_bar.to(grad.dtype).reshape((-1,) + (1,) * (grad.ndim - 1))
    return a.sqrt() * grad, None, (1 - a).sqrt() * grad


q_sample_library_op.register_autograd(_q_sample_backward, setup_context=_q_sample_setup)


def _loss_table(x0, alpha_bar, prediction, grad=None):
    """The loss kernels' table: target = tx·x0 + tz·ε, and dL/dm's factor."""
    a = _schedule(alpha_bar, x0)
    tx, tz = {"eps": (0.0, 1.0), "x0": (1.0, 0.0), "v": (-(1 - a).sqrt(), a.sqrt())}[prediction]
    return _stacked(x0, _kernels().LOSS_COLUMNS, {"tx": tx, "tz": tz,
                                                  "grad": grad if grad is not None else 0.0})


def _loss_scale(x0, alpha_bar, prediction, min_snr_gamma):
    """(N,) float64 weight / D: the loss is the weighted mean of the squared error."""
    weight = ref.min_snr_weight(_schedule(alpha_bar, x0), prediction, min_snr_gamma)
    return weight / max(x0[0].numel(), 1) if x0.shape[0] else weight


@torch.library.custom_op("gdm_engine::diffusion_loss", mutates_args=())
def diffusion_loss_library_op(model_output: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor,
                              alpha_bar: torch.Tensor, *, prediction: str = "eps",
                              min_snr_gamma: Optional[float] = None) -> torch.Tensor:
    """The registered diffusion_loss; alpha_bar is an (N,) tensor. Returns (N,) losses."""
    if backend.resolve(model_output) != "triton":
        return ref.diffusion_loss(model_output, x0, noise, alpha_bar, prediction=prediction,
                                  min_snr_gamma=min_snr_gamma)
    table = _loss_table(x0, alpha_bar, prediction)
    partial = _kernels().loss_partial_sums(_rows(model_output), _rows(x0), _rows(noise), table)
    scale = _loss_scale(x0, alpha_bar, prediction, min_snr_gamma)
    return (partial.double().sum(dim=1) * scale).to(_loss_dtype(model_output))


def _loss_dtype(model_output):
    return torch.promote_types(model_output.dtype, torch.float32)


@diffusion_loss_library_op.register_fake
def _(model_output, x0, noise, alpha_bar, **kwargs):
    return model_output.new_empty(model_output.shape[:1], dtype=_loss_dtype(model_output))


@torch.library.custom_op("gdm_engine::diffusion_loss_backward", mutates_args=())
def _loss_backward(grad: torch.Tensor, model_output: torch.Tensor, x0: torch.Tensor,
                   noise: torch.Tensor, alpha_bar: torch.Tensor, prediction: str,
                   min_snr_gamma: Optional[float], implementation: str) -> torch.Tensor:
    """dL/dmodel_output = 2 · grad_n · weight_n / D · (model_output − target)."""
    factor = 2 * grad.double() * _loss_scale(x0, alpha_bar, prediction, min_snr_gamma)
    if implementation == "triton":
        table = _loss_table(x0, alpha_bar, prediction, grad=factor)
        out = _kernels().loss_backward(_rows(model_output), _rows(x0), _rows(noise), table)
        return out.view(model_output.shape)
    target = ref.loss_target(x0, noise, alpha_bar, prediction)
    factor = factor.to(model_output.dtype).reshape((-1,) + (1,) * (model_output.ndim - 1))
    return (factor * (model_output - target)).contiguous()


@_loss_backward.register_fake
def _(grad, model_output, x0, noise, alpha_bar, prediction, min_snr_gamma, implementation):
    return torch.empty_like(model_output, memory_format=torch.contiguous_format)


def _loss_setup(ctx, inputs, keyword_only_inputs, output):
    ctx.save_for_backward(*inputs)
    ctx.config = (keyword_only_inputs["prediction"], keyword_only_inputs["min_snr_gamma"],
                  backend.resolve(inputs[0]))


def _loss_autograd(ctx, grad):
    model_output, x0, noise, alpha_bar = ctx.saved_tensors
    d_output = _loss_backward(grad, model_output, x0, noise, alpha_bar, *ctx.config)
    # the target is tx·x0 + tz·ε: its inputs get −tx and −tz times dL/dmodel_output
    table = _loss_table(x0, alpha_bar, ctx.config[0])
    grads = []
    for column, wanted in ((0, ctx.needs_input_grad[1]), (1, ctx.needs_input_grad[2])):
        factor = -table[:, column].to(d_output.dtype).reshape((-1,) + (1,) * (x0.ndim - 1))
        grads.append(factor * d_output if wanted else None)
    return d_output, *grads, None


diffusion_loss_library_op.register_autograd(_loss_autograd, setup_context=_loss_setup)


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _check_pair(x_name, x, m_name, m, noise, generator, **others):
    """x a batch; m, the noise and the `others` given (name=tensor or None) shaped like it."""
    check_tensor(x_name, x)
    if x.ndim < 1:
        raise ValueError(f"{x_name} must have shape (N, ...): a batch of examples, got a scalar")
    named = [(m_name, m), ("noise", noise), *others.items()]
    for name, value in named:
        if value is not None:
            check_shape_of(name, value, x_name, x)
    check_noise_source(noise, generator)


def _check_float(name, value, low=-math.inf, what="a float"):
    """A finite Python float (or int) >= low."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    if not value >= low or math.isinf(value):
        raise ValueError(f"{name} must be a finite float >= {low}, got {value!r}")


def _check_guidance(uncond, guidance_scale):
    _check_float("guidance_scale", guidance_scale)
    if uncond is None and guidance_scale != 1:
        raise ValueError("guidance_scale needs uncond, the model's unconditional output "
                         "(classifier-free guidance combines the two)")


def _can_read_values(t):
    """Tensor values are checked where that costs no device sync and breaks no graph: on the
    CPU outside torch.compile. (On a GPU a check would read back to the host every step.)"""
    return t.device.type == "cpu" and not torch.compiler.is_compiling()


def _check_schedule(name, value, x, low, high, low_open=True, high_open=False):
    """A float in the interval, or an (N,) float tensor (float32 or x's dtype) on x's device."""
    def describe():
        return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def outside(v):
        below = v <= low if low_open else v < low
        above = v >= high if high_open else v > high
        return below | above

    if isinstance(value, torch.Tensor):
        if value.dtype not in (torch.float32, x.dtype):
            raise TypeError(f"{name} must be float32 or {x.dtype} (x's dtype), got {value.dtype}")
        if value.shape != (x.shape[0],):
            raise ValueError(f"{name} must be a float or a per-example tensor of shape "
                             f"({x.shape[0]},), got shape {tuple(value.shape)}")
        if value.device != x.device:
            raise ValueError(f"{name} is on {value.device} but x is on {x.device}")
        if _can_read_values(value):
            bad = outside(value) | value.isnan()
            if bool(bad.any()):
                raise ValueError(f"{name} must lie in {describe()}, got "
                                 f"{value[bad][0].item()!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or an (N,) tensor, got {type(value).__name__}")
    if math.isnan(value) or outside(torch.tensor(float(value))).item():
        raise ValueError(f"{name} must lie in {describe()}, got {value!r}")


def _check_order(low_name, low, high_name, high, why, strict=False):
    """low <= high (low < high where `strict`), checked where both values can be read."""
    values = []
    for v in (low, high):
        if isinstance(v, torch.Tensor):
            if not _can_read_values(v):
                return
            v = v.double()
        values.append(v)
    bad = torch.as_tensor(values[0] >= values[1] if strict else values[0] > values[1])
    if bool(bad.any()):
        raise ValueError(f"{high_name} must be {'>' if strict else '>='} {low_name} ({why}), got "
                         f"{high_name}={high!r} and {low_name}={low!r}")


def _check_clip_threshold(clip, threshold):
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)):
            raise TypeError(f"clip must be a positive float or None, got {type(clip).__name__}")
        if not clip > 0 or math.isinf(clip):
            raise ValueError(f"clip must be a positive finite float, got {clip!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(f"threshold must be a float in (0, 1) or None, got "
                            f"{type(threshold).__name__}")
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be a quantile in (0, 1), got {threshold!r}")


def _check_denoising(x_t, model_output, alpha_bar_t, alpha_bar_prev, prediction, clip,
                     threshold, noise, generator, uncond, guidance_scale):
    _check_pair("x_t", x_t, "model_output", model_output, noise, generator, uncond=uncond)
    # ᾱ_t = 1 would be a step from clean data: the posterior divides by 1 − ᾱ_t.
    _check_schedule("alpha_bar_t", alpha_bar_t, x_t, 0, 1, high_open=True)
    _check_schedule("alpha_bar_prev", alpha_bar_prev, x_t, 0, 1)
    _check_order("alpha_bar_t", alpha_bar_t, "alpha_bar_prev", alpha_bar_prev,
                 "ᾱ decreases along the chain")
    check_choice("prediction", prediction, PREDICTIONS)
    _check_clip_threshold(clip, threshold)
    _check_guidance(uncond, guidance_scale)


def _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale, next_positive=False):
    """A step of the σ form from σ > 0 down to 0 <= σ_next <= σ (> 0 where `next_positive`)."""
    _check_schedule("sigma", sigma, x, 0, math.inf, high_open=True)
    _check_schedule("sigma_next", sigma_next, x, 0, math.inf, low_open=next_positive,
                    high_open=True)
    _check_order("sigma_next", sigma_next, "sigma", sigma, "the noise level decreases")
    check_choice("prediction", prediction, PREDICTIONS)
    _check_guidance(uncond, guidance_scale)


def _check_churn(churn, s_noise):
    _check_float("churn", churn, 0.0)
    _check_float("s_noise", s_noise, 0.0)


# --------------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------------


def _as_tensor(value, x):
    """The (N,) tensor the registered op takes (float64 for float64 x, else float32)."""
    if isinstance(value, torch.Tensor):
        return value
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.full((x.shape[0],), float(value), dtype=dtype, device=x.device)


def _is_float(value, number):
    return not isinstance(value, torch.Tensor) and float(value) == number


def ddpm_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, uncond=None,
                        *, prediction="eps", variance="fixed_small", clip=None, threshold=None,
                        guidance_scale=1.0, generator=None):
    """(args, kwargs) of `ddpm_library_op` for a checked call of `ddpm_step`."""
    kwargs = dict(prediction=prediction, variance=variance, clip=clip, threshold=threshold,
                  guidance_scale=float(guidance_scale), seed=noise_seed(noise, generator),
                  deterministic=_is_float(alpha_bar_prev, 1))
    return (x_t, model_output, _as_tensor(alpha_bar_t, x_t), _as_tensor(alpha_bar_prev, x_t),
            noise, uncond), kwargs


def ddpm_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, *, prediction="eps",
              variance="fixed_small", clip=None, threshold=None, uncond=None,
              guidance_scale=1.0, noise=None, generator=None):
    """One DDPM ancestral step x_t -> x_{t−1} (Ho et al., 2020), fused in one pass.

    x_t, model_output: (N, ...), the model's prediction of "eps" (the noise), "x0" or "v"
    (Salimans & Ho, 2022). alpha_bar_t in (0, 1) and alpha_bar_prev in [alpha_bar_t, 1]: floats,
    or per-example (N,) tensors (float32 or x_t's dtype). x0 is optionally clipped to
    [−clip, clip] and/or dynamically thresholded at the per-example quantile `threshold`
    (Saharia et al., 2022). variance: "fixed_small" (β̃_t) or "fixed_large" (β_t). With
    `uncond`, the model's unconditional output, the step uses the classifier-free guided output
    uncond + guidance_scale · (model_output − uncond) (Ho & Salimans, 2022), combined in the
    same pass. Returns x_{t−1} = μ + σ z; no noise where alpha_bar_prev = 1 (the last step).
    z is `noise` when given (then kernel and reference agree), otherwise drawn by the running
    implementation from a seed taken from `generator`: reproducible per backend, not across
    them. Forward only (no autograd).
    """
    _check_denoising(x_t, model_output, alpha_bar_t, alpha_bar_prev, prediction, clip, threshold,
                     noise, generator, uncond, guidance_scale)
    check_choice("variance", variance, VARIANCES)
    args, kwargs = ddpm_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise,
                                       uncond, prediction=prediction, variance=variance,
                                       clip=clip, threshold=threshold,
                                       guidance_scale=guidance_scale, generator=generator)
    return ddpm_library_op(*args, **kwargs)


def ddim_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, uncond=None,
                        *, eta=0.0, prediction="eps", clip=None, threshold=None,
                        guidance_scale=1.0, generator=None):
    """(args, kwargs) of `ddim_library_op` for a checked call of `ddim_step`."""
    deterministic = eta == 0 or _is_float(alpha_bar_prev, 1)
    kwargs = dict(eta=float(eta), prediction=prediction, clip=clip, threshold=threshold,
                  guidance_scale=float(guidance_scale),
                  seed=noise_seed(noise, generator) if not deterministic else 0,
                  deterministic=deterministic)
    return (x_t, model_output, _as_tensor(alpha_bar_t, x_t), _as_tensor(alpha_bar_prev, x_t),
            noise, uncond), kwargs


def ddim_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, *, eta=0.0, prediction="eps",
              clip=None, threshold=None, uncond=None, guidance_scale=1.0, noise=None,
              generator=None):
    """One DDIM step x_t -> x_{t−1} (Song et al., 2021, eq. 12), fused in one pass.

    Arguments as `ddpm_step`; eta ≥ 0 scales the noise: 0 is deterministic DDIM, 1 matches
    DDPM's posterior variance. x_{t−1} = sqrt(ᾱ_prev) x0 + sqrt(1 − ᾱ_prev − σ²) ε̂ + σ z with
    σ = eta sqrt((1 − ᾱ_prev)/(1 − ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_prev). Forward only (no autograd).
    """
    _check_denoising(x_t, model_output, alpha_bar_t, alpha_bar_prev, prediction, clip, threshold,
                     noise, generator, uncond, guidance_scale)
    _check_float("eta", eta, 0.0)
    args, kwargs = ddim_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise,
                                       uncond, eta=eta, prediction=prediction, clip=clip,
                                       threshold=threshold, guidance_scale=guidance_scale,
                                       generator=generator)
    return ddim_library_op(*args, **kwargs)


def euler_library_inputs(x, model_output, sigma, sigma_next, noise=None, uncond=None, *,
                         prediction="eps", churn=0.0, s_noise=1.0, guidance_scale=1.0,
                         generator=None):
    """(args, kwargs) of `euler_library_op` for a checked call of `euler_step`."""
    kwargs = dict(prediction=prediction, churn=float(churn), s_noise=float(s_noise),
                  guidance_scale=float(guidance_scale),
                  seed=noise_seed(noise, generator) if churn else 0)
    return (x, model_output, _as_tensor(sigma, x), _as_tensor(sigma_next, x), noise,
            uncond), kwargs


def euler_step(x, model_output, sigma, sigma_next, *, prediction="eps", churn=0.0, s_noise=1.0,
               uncond=None, guidance_scale=1.0, noise=None, generator=None):
    """One Euler step of the probability-flow ODE in the σ form x = x0 + σ ε (Karras et al.,
    2022, Algorithms 1-2), fused in one pass: x' = x + (σ_next − σ) (x − D) / σ, where
    D = x − σ ε̂ ("eps"), the model's x0 ("x0"), or x/(1+σ²) − σ/sqrt(1+σ²) v̂ ("v", v of the
    VP-scaled input x/sqrt(1+σ²)). sigma > 0 and 0 <= sigma_next <= sigma: floats or (N,)
    tensors. churn γ >= 0 (Karras et al. cap it at sqrt(2) − 1) lifts the result to the next
    step's level σ̂ = σ_next (1 + γ) with s_noise · sqrt(σ̂² − σ_next²) z (Algorithm 2, lines
    5-6, of the next step, fused here): evaluate the model next at σ̂. Guidance and z as in
    `ddpm_step`. Forward only (no autograd).
    """
    _check_pair("x", x, "model_output", model_output, noise, generator, uncond=uncond)
    _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale)
    _check_churn(churn, s_noise)
    args, kwargs = euler_library_inputs(x, model_output, sigma, sigma_next, noise, uncond,
                                        prediction=prediction, churn=churn, s_noise=s_noise,
                                        guidance_scale=guidance_scale, generator=generator)
    return euler_library_op(*args, **kwargs)


def heun_library_inputs(x, model_output, model_output_next, sigma, sigma_next, noise=None,
                        uncond=None, uncond_next=None, *, prediction="eps", churn=0.0,
                        s_noise=1.0, guidance_scale=1.0, generator=None):
    """(args, kwargs) of `heun_library_op` for a checked call of `heun_step`."""
    kwargs = dict(prediction=prediction, churn=float(churn), s_noise=float(s_noise),
                  guidance_scale=float(guidance_scale),
                  seed=noise_seed(noise, generator) if churn else 0)
    return (x, model_output, model_output_next, _as_tensor(sigma, x), _as_tensor(sigma_next, x),
            noise, uncond, uncond_next), kwargs


def heun_step(x, model_output, model_output_next, sigma, sigma_next, *, prediction="eps",
              churn=0.0, s_noise=1.0, uncond=None, uncond_next=None, guidance_scale=1.0,
              noise=None, generator=None):
    """Heun's second-order step (Karras et al., 2022, Algorithm 2, lines 7-11), fused in one pass:
    `model_output` is the model at (x, σ), `model_output_next` the model at the Euler point
    x_e = euler_step(x, model_output, σ, σ_next) and σ_next, which the kernel recomputes rather
    than reads; x' = x + (σ_next − σ) (d + d') / 2. sigma_next > 0 (a last step to 0 is Euler's).
    uncond / uncond_next guide the two outputs with one guidance_scale. Churn, prediction and z
    as in `euler_step`. Forward only (no autograd).
    """
    _check_pair("x", x, "model_output", model_output, noise, generator, uncond=uncond,
                model_output_next=model_output_next, uncond_next=uncond_next)
    _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale, next_positive=True)
    if (uncond is None) != (uncond_next is None):
        raise ValueError("uncond and uncond_next go together: guidance needs the unconditional "
                         "output at both points")
    _check_churn(churn, s_noise)
    args, kwargs = heun_library_inputs(x, model_output, model_output_next, sigma, sigma_next,
                                       noise, uncond, uncond_next, prediction=prediction,
                                       churn=churn, s_noise=s_noise,
                                       guidance_scale=guidance_scale, generator=generator)
    return heun_library_op(*args, **kwargs)


def dpmpp_2m_library_inputs(x, model_output, sigma, sigma_next, previous_denoised=None,
                            uncond=None, *, sigma_prev=None, prediction="eps",
                            guidance_scale=1.0):
    """(args, kwargs) of `dpmpp_2m_library_op` for a checked call of `dpmpp_2m_step`."""
    prev = _as_tensor(sigma_prev, x) if sigma_prev is not None else None
    return (x, model_output, _as_tensor(sigma, x), _as_tensor(sigma_next, x), previous_denoised,
            uncond, prev), dict(prediction=prediction, guidance_scale=float(guidance_scale))


def dpmpp_2m_step(x, model_output, sigma, sigma_next, *, previous_denoised=None, sigma_prev=None,
                  prediction="eps", uncond=None, guidance_scale=1.0):
    """One DPM-Solver++(2M) step (Lu et al., 2022, Algorithm 2) in the σ form, fused in one pass:
    x' = (σ_next/σ) x + (1 − σ_next/σ) D̄ with D̄ = (1 + 1/2r) D − D_prev/2r, r = h_prev/h,
    h = log(σ/σ_next), h_prev = log(sigma_prev/σ); first order (D̄ = D) without
    previous_denoised and where σ_next = 0. Returns (x', D), D = D(x; σ) of this step: pass it
    as the next step's previous_denoised, with this σ as its sigma_prev. Prediction and guidance
    as in `euler_step`. Deterministic; forward only (no autograd).
    """
    _check_pair("x", x, "model_output", model_output, None, None, uncond=uncond,
                previous_denoised=previous_denoised)
    _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale)
    if (previous_denoised is None) != (sigma_prev is None):
        raise ValueError("previous_denoised and sigma_prev go together: the second-order step "
                         "needs the previous estimate and its noise level")
    if sigma_prev is not None:
        _check_schedule("sigma_prev", sigma_prev, x, 0, math.inf, high_open=True)
        _check_order("sigma", sigma, "sigma_prev", sigma_prev, "the noise level decreases",
                     strict=True)
    args, kwargs = dpmpp_2m_library_inputs(x, model_output, sigma, sigma_next, previous_denoised,
                                           uncond, sigma_prev=sigma_prev, prediction=prediction,
                                           guidance_scale=guidance_scale)
    return dpmpp_2m_library_op(*args, **kwargs)


def langevin_library_inputs(x, score, step_size, noise=None, *, generator=None):
    """(args, kwargs) of `langevin_library_op` for a checked call of `langevin_step`."""
    deterministic = _is_float(step_size, 0)
    kwargs = dict(seed=noise_seed(noise, generator) if not deterministic else 0,
                  deterministic=deterministic)
    return (x, score, _as_tensor(step_size, x), noise), kwargs


def langevin_step(x, score, step_size, *, noise=None, generator=None):
    """One step of unadjusted Langevin dynamics, fused in one pass:
    x + step_size / 2 · score + sqrt(step_size) · z (Song & Ermon, 2019, eq. 4).

    x, score: (N, ...); step_size ≥ 0: a float or a per-example (N,) tensor (float32 or x's
    dtype). z as in `ddpm_step`. Forward only (no autograd).
    """
    _check_pair("x", x, "score", score, noise, generator)
    _check_schedule("step_size", step_size, x, 0, math.inf, low_open=False, high_open=True)
    args, kwargs = langevin_library_inputs(x, score, step_size, noise, generator=generator)
    return langevin_library_op(*args, **kwargs)


def q_sample_library_inputs(x0, alpha_bar, noise):
    """(args, kwargs) of `q_sample_library_op` for a checked call of `q_sample`."""
    return (x0, _as_tensor(alpha_bar, x0), noise), {}


def q_sample(x0, alpha_bar, noise):
    """x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε, a draw of q(x_t | x0) (Ho et al., 2020, eq. 4), in one
    pass. alpha_bar in (0, 1]: a float or an (N,) tensor. Differentiable in x0 and noise."""
    _check_pair("x0", x0, "noise", noise, None, None)
    _check_schedule("alpha_bar", alpha_bar, x0, 0, 1)
    args, kwargs = q_sample_library_inputs(x0, alpha_bar, noise)
    return q_sample_library_op(*args, **kwargs)


def diffusion_loss_library_inputs(model_output, x0, noise, alpha_bar, *, prediction="eps",
                                  min_snr_gamma=None):
    """(args, kwargs) of `diffusion_loss_library_op` for a checked call of `diffusion_loss`."""
    gamma = float(min_snr_gamma) if min_snr_gamma is not None else None
    return (model_output, x0, noise, _as_tensor(alpha_bar, x0)), dict(prediction=prediction,
                                                                      min_snr_gamma=gamma)


def diffusion_loss(model_output, x0, noise, alpha_bar, *, prediction="eps", min_snr_gamma=None):
    """The simple loss of Ho et al. (2020, eq. 14) per example, fused: the mean over an example's
    elements of (model_output − target)², target = noise ("eps"), x0 ("x0") or
    sqrt(ᾱ) noise − sqrt(1 − ᾱ) x0 ("v", Salimans & Ho, 2022), weighted by min-SNR-γ (Hang et
    al., 2023: min(SNR, γ)/SNR for eps, min(SNR, γ) for x0, min(SNR, γ)/(SNR + 1) for v, with
    SNR = ᾱ/(1 − ᾱ)) when min_snr_gamma is given. x_t = q_sample(x0, alpha_bar, noise) is what
    the model saw. Returns (N,) losses in at least fp32. Differentiable: the backward is one
    more fused pass for model_output (x0 and noise, usually data, get a scaling of it)."""
    _check_pair("model_output", model_output, "x0", x0, noise, None)
    _check_schedule("alpha_bar", alpha_bar, x0, 0, 1, high_open=True)
    check_choice("prediction", prediction, PREDICTIONS)
    if min_snr_gamma is not None:
        _check_float("min_snr_gamma", min_snr_gamma, 0.0, "a positive float or None")
        if min_snr_gamma == 0:
            raise ValueError("min_snr_gamma must be > 0 (Hang et al. use 5)")
    args, kwargs = diffusion_loss_library_inputs(model_output, x0, noise, alpha_bar,
                                                 prediction=prediction,
                                                 min_snr_gamma=min_snr_gamma)
    return diffusion_loss_library_op(*args, **kwargs)
