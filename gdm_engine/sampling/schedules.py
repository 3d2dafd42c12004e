"""Noise schedules of diffusion models, as tensors on the device the sampler runs on.

A variance-preserving schedule is given by ᾱ_t (alpha_bar), t = 1 .. T, the share of signal left
at step t: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε (Ho et al., 2020, eq. 4). The σ form of Karras
et al. (2022) writes the same process as x = x_0 + σ ε on x_t / sqrt(ᾱ_t), with
σ = sqrt((1 − ᾱ) / ᾱ) (their table 1). Schedules are computed in float64 and returned in
float32 (or `dtype`), so that 1 − ᾱ near the start keeps its digits.
"""

import math
from typing import Optional, Union

import torch

from gdm_engine._validation import check_int


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def _out(values, device, dtype):
    return values.to(device=device, dtype=dtype)


def linear_alpha_bars(
    steps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    device: Optional[Union[torch.device, str]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """ᾱ_t = prod_{s <= t} (1 − β_s) with β linear from beta_start to beta_end over `steps`
    (Ho et al., 2020, sec. 4: 1e-4 to 0.02 over T = 1,000).

    Args:
        steps: T >= 1, the number of steps.
        beta_start: β_1, in (0, 1).
        beta_end: β_T, in (0, 1).
        device: where the result goes; None: the CPU.
        dtype: the result's dtype (computed in float64).

    Returns:
        ᾱ, shape (steps,), decreasing.

    Raises:
        TypeError: steps not an int.
        ValueError: steps < 1, or beta_start or beta_end not a number in (0, 1).
    """
    check_int("steps", steps, 1)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        _check_positive(name, value)
        if value >= 1:
            raise ValueError(f"{name} must be < 1, got {value!r}")
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return _out(torch.cumprod(1 - betas, 0), device, dtype)


def cosine_alpha_bars(
    steps: int = 1000,
    offset: float = 0.008,
    max_beta: float = 0.999,
    device: Optional[Union[torch.device, str]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021, eq. 17): ᾱ_t = f(t) / f(0) with
    f(t) = cos²((t / T + offset) / (1 + offset) · π / 2), each β_t = 1 − ᾱ_t / ᾱ_{t−1} capped
    at max_beta so that the last steps stay finite.

    Args:
        steps: T >= 1, the number of steps.
        offset: s > 0, the small offset that keeps β_1 from vanishing.
        max_beta: the cap of each β_t, in (0, 1).
        device: where the result goes; None: the CPU.
        dtype: the result's dtype (computed in float64).

    Returns:
        ᾱ, shape (steps,), decreasing.

    Raises:
        TypeError: steps not an int.
        ValueError: steps < 1, offset not a number > 0, or max_beta outside (0, 1).
    """
    check_int("steps", steps, 1)
    _check_positive("offset", offset)
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta!r}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2).square()
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return _out(torch.cumprod(1 - betas, 0), device, dtype)


def karras_sigmas(
    steps: int,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    device: Optional[Union[torch.device, str]] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The σ steps of Karras et al. (2022, eq. 5): σ_i = (σ_max^(1/ρ) + i / (steps − 1)
    (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for i = 0 .. steps − 1, then σ_steps = 0.

    Args:
        steps: >= 1, the number of nonzero levels.
        sigma_min: the last nonzero level, > 0.
        sigma_max: the first level, > sigma_min.
        rho: ρ > 0, how the steps crowd towards sigma_min.
        device: where the result goes; None: the CPU.
        dtype: the result's dtype (computed in float64).

    Returns:
        σ, shape (steps + 1,), decreasing, ending in 0.

    Raises:
        TypeError: steps not an int.
        ValueError: steps < 1, sigma_min, sigma_max or rho not a number > 0, or
            sigma_min >= sigma_max.
    """
    check_int("steps", steps, 1)
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        _check_positive(name, value)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min!r} and {sigma_max!r}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1)
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (high + ramp.double() * (low - high)) ** rho
    return _out(torch.cat([sigmas, sigmas.new_zeros(1)]), device, dtype)


def sigmas_from_alpha_bars(alpha_bars: torch.Tensor) -> torch.Tensor:
    """σ = sqrt((1 − ᾱ) / ᾱ): a variance-preserving schedule in Karras et al.'s σ form (2022,
    table 1).

    Args:
        alpha_bars: ᾱ, any shape, each in (0, 1].

    Returns:
        σ, shaped like alpha_bars, in its dtype (computed in float64).

    Raises:
        ValueError: a value of alpha_bars outside (0, 1].
    """
    a = alpha_bars.double()
    if not ((a > 0) & (a <= 1)).all():
        raise ValueError("alpha_bars must lie in (0, 1]")
    return ((1 - a) / a).sqrt().to(alpha_bars.dtype)


def alpha_bars_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """ᾱ = 1 / (1 + σ²): the inverse of sigmas_from_alpha_bars.

    Args:
        sigmas: σ, any shape, each >= 0.

    Returns:
        ᾱ, shaped like sigmas, in its dtype (computed in float64).

    Raises:
        ValueError: a negative (or NaN) value of sigmas.
    """
    s = sigmas.double()
    if not (s >= 0).all():
        raise ValueError("sigmas must be >= 0")
    return (1 / (1 + s.square())).to(sigmas.dtype)


def spaced_timesteps(
    total: int, steps: int, device: Optional[Union[torch.device, str]] = None
) -> torch.Tensor:
    """`steps` of the `total` training steps, evenly spaced and decreasing from total − 1 to 0
    (0-based indices into a schedule), for samplers that skip steps (DDIM, Song et al., 2021,
    sec. 4.2).

    Args:
        total: >= 1, the schedule's length.
        steps: in [1, total], how many to keep.
        device: where the result goes; None: the CPU.

    Returns:
        The indices, shape (steps,), int64.

    Raises:
        TypeError: total or steps not an int.
        ValueError: total or steps < 1, or steps > total.
    """
    check_int("total", total, 1)
    check_int("steps", steps, 1)
    if steps > total:
        raise ValueError(f"steps must be <= total ({total}), got {steps}")
    spaced = torch.linspace(total - 1, 0, steps, dtype=torch.float64).round().long()
    return spaced.to(device)


SPACINGS = ("uniform", "logsnr", "karras")


def timestep_spacing(alpha_bars: torch.Tensor, steps: int, spacing: str = "logsnr") -> list[int]:
    """Decreasing 0-based indices into the schedule `alpha_bars` for a sampler of `steps` steps,
    as a host list: "uniform" in t (spaced_timesteps); "logsnr", uniform in log σ (= uniform in
    log-SNR / 2, the spacing Lu et al. 2022 use for DPM-Solver); "karras", the model's levels
    nearest to Karras et al.'s σ (eq. 5, ρ = 7) between its own σ_min and σ_max. The last two
    keep each level once, so they may give a step or two fewer where `steps` approaches the
    schedule's length. Reads alpha_bars on the host (once, before any loop).

    Args:
        alpha_bars: the schedule ᾱ, shape (T,), each in (0, 1].
        steps: >= 1, the sampler's steps (at most T where spacing is not "uniform").
        spacing: "uniform", "logsnr" or "karras".

    Returns:
        The indices, a list of at most `steps` ints, decreasing.

    Raises:
        TypeError: steps not an int.
        ValueError: steps < 1 or above T, an unknown spacing, or alpha_bars outside (0, 1].
    """
    check_int("steps", steps, 1)
    if spacing not in SPACINGS:
        raise ValueError(f"spacing must be one of {SPACINGS}, got {spacing!r}")
    total = len(alpha_bars)
    if spacing == "uniform" or steps == 1:
        return spaced_timesteps(total, steps).tolist()
    if steps > total:
        raise ValueError(f"steps must be <= the schedule's length ({total}), got {steps}")
    log_sigmas = sigmas_from_alpha_bars(alpha_bars.detach().double().cpu()).log()
    high, low = log_sigmas[-1].item(), log_sigmas[0].item()
    if spacing == "logsnr":
        targets = torch.linspace(high, low, steps, dtype=torch.float64)
    else:
        targets = karras_sigmas(steps, math.exp(low), math.exp(high), dtype=torch.float64)[:-1]
        targets = targets.log()
    nearest = (log_sigmas[None, :] - targets[:, None]).abs().argmin(dim=1)
    return nearest.unique_consecutive().tolist()
