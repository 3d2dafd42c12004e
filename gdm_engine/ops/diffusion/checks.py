"""The input checks of the diffusion ops: run by the public functions before any launch, each
error naming the argument. Schedule values in tensors are read only where reading is free
(host_values: CPU tensors)."""

import math

import torch

from gdm_engine._validation import (
    check_choice,
    check_noise_source,
    check_shape_of,
    check_tensor,
    host_values,
)
from gdm_engine.reference.diffusion import PREDICTIONS


def _check_pair(x_name, x, m_name, m, noise, generator, **others):
    """x a batch; m (required), the noise and the `others` given (name=tensor or None) shaped
    like it."""
    check_tensor(x_name, x)
    if x.ndim < 1:
        raise ValueError(f"{x_name} must have shape (N, ...): a batch of examples, got a scalar")
    check_shape_of(m_name, m, x_name, x)
    for name, value in [("noise", noise), *others.items()]:
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
        raise ValueError(
            "guidance_scale needs uncond, the model's unconditional output "
            "(classifier-free guidance combines the two)"
        )


def _check_schedule(name, value, x, low, high, low_open=True, high_open=False):
    """A float in the interval, or an (N,) float tensor (float32 or x's dtype) on x's device.
    Floats are checked exactly (in Python's float64); a tensor's values where reading them is
    free (host_values: CPU tensors), never on a GPU's hot path."""

    def describe():
        return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def outside(v):
        below = v <= low if low_open else v < low
        above = v >= high if high_open else v > high
        return below | above | (v != v)  # NaN is outside every interval

    if isinstance(value, torch.Tensor):
        if value.dtype not in (torch.float32, x.dtype):
            raise TypeError(f"{name} must be float32 or {x.dtype} (x's dtype), got {value.dtype}")
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"{name} must be a float or a per-example tensor of shape "
                f"({x.shape[0]},), got shape {tuple(value.shape)}"
            )
        if value.device != x.device:
            raise ValueError(f"{name} is on {value.device} but x is on {x.device}")
        values = host_values(value)
        if values is not None and outside(values).any():
            raise ValueError(
                f"{name} must lie in {describe()}, got {float(values[outside(values)][0])!r}"
            )
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or an (N,) tensor, got {type(value).__name__}")
    if outside(float(value)):
        raise ValueError(f"{name} must lie in {describe()}, got {value!r}")


def _check_order(low_name, low, high_name, high, why, strict=False):
    """low <= high (low < high where `strict`), checked where both values can be read."""
    values = [host_values(v) if isinstance(v, torch.Tensor) else v for v in (low, high)]
    if any(v is None for v in values):
        return
    bad = values[0] >= values[1] if strict else values[0] > values[1]
    if bad is True or (bad is not False and bad.any()):
        raise ValueError(
            f"{high_name} must be {'>' if strict else '>='} {low_name} ({why}), got "
            f"{high_name}={high!r} and {low_name}={low!r}"
        )


def _is_float(value, number):
    return not isinstance(value, torch.Tensor) and float(value) == number


def _optional_float(value):
    return float(value) if value is not None else None


def _check_clip_threshold(clip, threshold):
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)):
            raise TypeError(f"clip must be a positive float or None, got {type(clip).__name__}")
        if not clip > 0 or math.isinf(clip):
            raise ValueError(f"clip must be a positive finite float, got {clip!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(
                f"threshold must be a float in (0, 1) or None, got {type(threshold).__name__}"
            )
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be a quantile in (0, 1), got {threshold!r}")


def _check_denoising(
    x_t,
    model_output,
    alpha_bar_t,
    alpha_bar_prev,
    prediction,
    clip,
    threshold,
    noise,
    generator,
    uncond,
    guidance_scale,
):
    _check_pair("x_t", x_t, "model_output", model_output, noise, generator, uncond=uncond)
    # ᾱ_t = 1 would be a step from clean data: the posterior divides by 1 − ᾱ_t.
    _check_schedule("alpha_bar_t", alpha_bar_t, x_t, 0, 1, high_open=True)
    _check_schedule("alpha_bar_prev", alpha_bar_prev, x_t, 0, 1)
    _check_order(
        "alpha_bar_t", alpha_bar_t, "alpha_bar_prev", alpha_bar_prev, "ᾱ decreases along the chain"
    )
    check_choice("prediction", prediction, PREDICTIONS)
    _check_clip_threshold(clip, threshold)
    _check_guidance(uncond, guidance_scale)


def _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale, next_positive=False):
    """A step of the σ form from σ > 0 down to 0 <= σ_next <= σ (> 0 where `next_positive`)."""
    _check_schedule("sigma", sigma, x, 0, math.inf, high_open=True)
    _check_schedule(
        "sigma_next", sigma_next, x, 0, math.inf, low_open=next_positive, high_open=True
    )
    _check_order("sigma_next", sigma_next, "sigma", sigma, "the noise level decreases")
    check_choice("prediction", prediction, PREDICTIONS)
    _check_guidance(uncond, guidance_scale)


def _check_churn(churn, s_noise):
    _check_float("churn", churn, 0.0)
    _check_float("s_noise", s_noise, 0.0)
