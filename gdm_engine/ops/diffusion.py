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
# per-example coefficients of the kernel: out = cx·x + cm·m + σ·z, or with clamping
# x0 = clamp(cx·x + cm·m, −s, s) · inv and out = a0·x0 + ax·x + σ·z. Computed in float64 from
# the schedule (N entries: cheap anywhere), stored as an (N, 8) float32 table.
# --------------------------------------------------------------------------------------------------


def _x0_coefficients(a, prediction):
    """(cx, cm) with x0 = cx·x_t + cm·model_output."""
    if prediction == "eps":
        return 1 / a.sqrt(), -(1 - a).sqrt() / a.sqrt()
    if prediction == "x0":
        return torch.zeros_like(a), torch.ones_like(a)
    return a.sqrt(), -(1 - a).sqrt()


def _table(x, m, cx, cm, a0, ax, sigma, clip, threshold):
    """The (N, 8) float32 table [cx, cm, a0, ax, σ, s, inv, 0] and whether the kernel clamps."""
    clamp = clip is not None or threshold is not None
    s = torch.full_like(cx, clip if clip is not None else 1.0)
    inv = torch.ones_like(cx)
    if threshold is not None:
        x0 = cx.float()[:, None] * _rows(x).float() + cm.float()[:, None] * _rows(m).float()
        if clip is not None:
            x0 = x0.clamp(-clip, clip)
        s = ref.threshold_scale(x0, threshold).double()
        inv = 1 / s
    if not clamp:  # fold x0 into the step: one linear combination, no cancellation in fp32
        cx, cm = a0 * cx + ax, a0 * cm
    table = torch.stack([cx, cm, a0, ax, sigma, s, inv, torch.zeros_like(cx)], dim=1)
    return table.float().contiguous(), clamp


def _schedule(value, x):
    """An (N,) float64 tensor of a float or per-example schedule value."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64).expand(x.shape[0])
    return torch.full((x.shape[0],), float(value), dtype=torch.float64, device=x.device)


def _run(x, m, noise, table, clamp, seed, draw):
    out = _kernels().diffusion_step(_rows(x), _rows(m), _rows(noise), table, seed, clamp=clamp,
                                    draw=draw)
    return out.view(x.shape)


def _draws(noise, sigma_is_zero):
    """Whether the kernel draws z itself: no noise given and σ not known to be 0."""
    return noise is None and not sigma_is_zero


# --------------------------------------------------------------------------------------------------
# registered ops (unchecked: call the public functions, which validate first)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("gdm_engine::ddpm_step", mutates_args=())
def ddpm_library_op(x_t: torch.Tensor, model_output: torch.Tensor, alpha_bar_t: torch.Tensor,
                    alpha_bar_prev: torch.Tensor, noise: Optional[torch.Tensor] = None, *,
                    prediction: str = "eps", variance: str = "fixed_small",
                    clip: Optional[float] = None, threshold: Optional[float] = None,
                    seed: int = 0, deterministic: bool = False) -> torch.Tensor:
    """The registered ddpm_step; schedule values are (N,) tensors. `deterministic`: σ is known
    to be 0 (the last step), so no noise is drawn."""
    if backend.resolve(x_t) != "triton":
        return ref.ddpm_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise,
                             prediction=prediction, variance=variance, clip=clip,
                             threshold=threshold, seed=seed).contiguous()
    a, a_prev = _schedule(alpha_bar_t, x_t), _schedule(alpha_bar_prev, x_t)
    cx, cm = _x0_coefficients(a, prediction)
    alpha = a / a_prev
    beta = 1 - alpha
    a0 = a_prev.sqrt() * beta / (1 - a)
    ax = alpha.sqrt() * (1 - a_prev) / (1 - a)
    var = (1 - a_prev) / (1 - a) * beta if variance == "fixed_small" else beta
    sigma = torch.where(a_prev == 1, 0.0, var.clamp(min=0).sqrt())
    table, clamp = _table(x_t, model_output, cx, cm, a0, ax, sigma, clip, threshold)
    return _run(x_t, model_output, noise, table, clamp, seed, _draws(noise, deterministic))


@ddpm_library_op.register_fake
def _(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, *, prediction="eps",
      variance="fixed_small", clip=None, threshold=None, seed=0, deterministic=False):
    return torch.empty_like(x_t, memory_format=torch.contiguous_format)


@torch.library.custom_op("gdm_engine::ddim_step", mutates_args=())
def ddim_library_op(x_t: torch.Tensor, model_output: torch.Tensor, alpha_bar_t: torch.Tensor,
                    alpha_bar_prev: torch.Tensor, noise: Optional[torch.Tensor] = None, *,
                    eta: float = 0.0, prediction: str = "eps", clip: Optional[float] = None,
                    threshold: Optional[float] = None, seed: int = 0,
                    deterministic: bool = False) -> torch.Tensor:
    """The registered ddim_step; schedule values are (N,) tensors."""
    if backend.resolve(x_t) != "triton":
        return ref.ddim_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise, eta=eta,
                             prediction=prediction, clip=clip, threshold=threshold,
                             seed=seed).contiguous()
    a, a_prev = _schedule(alpha_bar_t, x_t), _schedule(alpha_bar_prev, x_t)
    cx, cm = _x0_coefficients(a, prediction)
    sigma = eta * ((1 - a_prev) / (1 - a)).sqrt() * (1 - a / a_prev).clamp(min=0).sqrt()
    direction = (1 - a_prev - sigma**2).clamp(min=0).sqrt()
    # x_{t−1} = sqrt(ᾱ_prev) x0 + d ε̂ + σ z with ε̂ = (x_t − sqrt(ᾱ_t) x0) / sqrt(1 − ᾱ_t)
    a0 = a_prev.sqrt() - direction * a.sqrt() / (1 - a).sqrt()
    ax = direction / (1 - a).sqrt()
    table, clamp = _table(x_t, model_output, cx, cm, a0, ax, sigma, clip, threshold)
    return _run(x_t, model_output, noise, table, clamp, seed, _draws(noise, deterministic))


@ddim_library_op.register_fake
def _(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, *, eta=0.0, prediction="eps",
      clip=None, threshold=None, seed=0, deterministic=False):
    return torch.empty_like(x_t, memory_format=torch.contiguous_format)


@torch.library.custom_op("gdm_engine::langevin_step", mutates_args=())
def langevin_library_op(x: torch.Tensor, score: torch.Tensor, step_size: torch.Tensor,
                        noise: Optional[torch.Tensor] = None, *, seed: int = 0,
                        deterministic: bool = False) -> torch.Tensor:
    """The registered langevin_step; step_size is an (N,) tensor."""
    if backend.resolve(x) != "triton":
        return ref.langevin_step(x, score, step_size, noise, seed=seed).contiguous()
    h = _schedule(step_size, x)
    # the step is a0·x0 + ax·x + σ·z with x0 := score: a0 = h/2, ax = 1, σ = sqrt(h)
    table, clamp = _table(x, score, torch.zeros_like(h), torch.ones_like(h), h / 2,
                          torch.ones_like(h), h.sqrt(), None, None)
    return _run(x, score, noise, table, clamp, seed, _draws(noise, deterministic))


@langevin_library_op.register_fake
def _(x, score, step_size, noise=None, *, seed=0, deterministic=False):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _check_pair(x_name, x, m_name, m, noise, generator):
    check_tensor(x_name, x)
    if x.ndim < 1:
        raise ValueError(f"{x_name} must have shape (N, ...): a batch of examples, got a scalar")
    named = [(m_name, m)] + ([("noise", noise)] if noise is not None else [])
    for name, value in named:
        check_shape_of(name, value, x_name, x)
    check_noise_source(noise, generator)


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


def _check_order(alpha_bar_t, alpha_bar_prev):
    """ᾱ decreases with t: ᾱ_prev ≥ ᾱ_t (checked where both values can be read)."""
    values = []
    for v in (alpha_bar_t, alpha_bar_prev):
        if isinstance(v, torch.Tensor):
            if not _can_read_values(v):
                return
            v = v.double()
        values.append(v)
    a, a_prev = values
    bad = torch.as_tensor(a_prev < a)
    if bool(bad.any()):
        raise ValueError("alpha_bar_prev must be >= alpha_bar_t (ᾱ decreases along the chain), "
                         f"got alpha_bar_prev={alpha_bar_prev!r} and alpha_bar_t={alpha_bar_t!r}")


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
                     threshold, noise, generator):
    _check_pair("x_t", x_t, "model_output", model_output, noise, generator)
    # ᾱ_t = 1 would be a step from clean data: the posterior divides by 1 − ᾱ_t.
    _check_schedule("alpha_bar_t", alpha_bar_t, x_t, 0, 1, high_open=True)
    _check_schedule("alpha_bar_prev", alpha_bar_prev, x_t, 0, 1)
    _check_order(alpha_bar_t, alpha_bar_prev)
    check_choice("prediction", prediction, PREDICTIONS)
    _check_clip_threshold(clip, threshold)


# --------------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------------


def _as_tensor(value, x):
    """The (N,) tensor the registered op takes (float64 for float64 x, else float32)."""
    if isinstance(value, torch.Tensor):
        return value
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.full((x.shape[0],), float(value), dtype=dtype, device=x.device)


def _is_one(value):
    return not isinstance(value, torch.Tensor) and float(value) == 1.0


def ddpm_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, *,
                        prediction="eps", variance="fixed_small", clip=None, threshold=None,
                        generator=None):
    """(args, kwargs) of `ddpm_library_op` for a checked call of `ddpm_step`."""
    kwargs = dict(prediction=prediction, variance=variance, clip=clip, threshold=threshold,
                  seed=noise_seed(noise, generator), deterministic=_is_one(alpha_bar_prev))
    return (x_t, model_output, _as_tensor(alpha_bar_t, x_t), _as_tensor(alpha_bar_prev, x_t),
            noise), kwargs


def ddpm_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, *, prediction="eps",
              variance="fixed_small", clip=None, threshold=None, noise=None, generator=None):
    """One DDPM ancestral step x_t -> x_{t−1} (Ho et al., 2020), fused in one pass.

    x_t, model_output: (N, ...), the model's prediction of "eps" (the noise), "x0" or "v"
    (Salimans & Ho, 2022). alpha_bar_t in (0, 1) and alpha_bar_prev in [alpha_bar_t, 1]: floats,
    or per-example (N,) tensors (float32 or x_t's dtype). x0 is optionally clipped to
    [−clip, clip] and/or dynamically thresholded at the per-example quantile `threshold`
    (Saharia et al., 2022). variance: "fixed_small" (β̃_t) or "fixed_large" (β_t). Returns
    x_{t−1} = μ + σ z; no noise where alpha_bar_prev = 1 (the last step). z is `noise` when given
    (then kernel and reference agree), otherwise drawn by the running implementation from a seed
    taken from `generator`: reproducible per backend, not across them. Forward only (no autograd).
    """
    _check_denoising(x_t, model_output, alpha_bar_t, alpha_bar_prev, prediction, clip, threshold,
                     noise, generator)
    check_choice("variance", variance, VARIANCES)
    args, kwargs = ddpm_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise,
                                       prediction=prediction, variance=variance, clip=clip,
                                       threshold=threshold, generator=generator)
    return ddpm_library_op(*args, **kwargs)


def ddim_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, *, eta=0.0,
                        prediction="eps", clip=None, threshold=None, generator=None):
    """(args, kwargs) of `ddim_library_op` for a checked call of `ddim_step`."""
    deterministic = eta == 0 or _is_one(alpha_bar_prev)
    kwargs = dict(eta=float(eta), prediction=prediction, clip=clip, threshold=threshold,
                  seed=noise_seed(noise, generator) if not deterministic else 0,
                  deterministic=deterministic)
    return (x_t, model_output, _as_tensor(alpha_bar_t, x_t), _as_tensor(alpha_bar_prev, x_t),
            noise), kwargs


def ddim_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, *, eta=0.0, prediction="eps",
              clip=None, threshold=None, noise=None, generator=None):
    """One DDIM step x_t -> x_{t−1} (Song et al., 2021, eq. 12), fused in one pass.

    Arguments as `ddpm_step`; eta ≥ 0 scales the noise: 0 is deterministic DDIM, 1 matches
    DDPM's posterior variance. x_{t−1} = sqrt(ᾱ_prev) x0 + sqrt(1 − ᾱ_prev − σ²) ε̂ + σ z with
    σ = eta sqrt((1 − ᾱ_prev)/(1 − ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_prev). Forward only (no autograd).
    """
    _check_denoising(x_t, model_output, alpha_bar_t, alpha_bar_prev, prediction, clip, threshold,
                     noise, generator)
    if isinstance(eta, bool) or not isinstance(eta, (int, float)):
        raise TypeError(f"eta must be a float, got {type(eta).__name__}")
    if not eta >= 0 or math.isinf(eta):
        raise ValueError(f"eta must be a finite float >= 0, got {eta!r}")
    args, kwargs = ddim_library_inputs(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise,
                                       eta=eta, prediction=prediction, clip=clip,
                                       threshold=threshold, generator=generator)
    return ddim_library_op(*args, **kwargs)


def langevin_library_inputs(x, score, step_size, noise=None, *, generator=None):
    """(args, kwargs) of `langevin_library_op` for a checked call of `langevin_step`."""
    deterministic = not isinstance(step_size, torch.Tensor) and float(step_size) == 0
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
