"""Noise schedules of diffusion models, as tensors on the device the sampler runs on.

A variance-preserving schedule is given by ᾱ_t (alpha_bar), t = 1 .. T, the share of signal left
at step t: x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε (Ho et al., 2020, eq. 4). The σ form of Karras
et al. (2022) writes the same process as x = x_0 + σ ε on x_t / sqrt(ᾱ_t), with
σ = sqrt((1 − ᾱ) / ᾱ) (their table 1). Schedules are computed in float64 and returned in
float32 (or `dtype`), so that 1 − ᾱ near the start keeps its digits.
"""

import math

import torch

from gdm_engine._validation import check_int


def _check_positive(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a number > 0, got {value!r}")


def _out(values, device, dtype):
    return values.to(device=device, dtype=dtype)


def linear_alpha_bars(steps=1000, beta_start=1e-4, beta_end=0.02, device=None, dtype=torch.float32):
    """ᾱ_t = prod_{s <= t} (1 − β_s) with β linear from beta_start to beta_end over `steps`
    (Ho et al., 2020, sec. 4: 1e-4 to 0.02 over T = 1,000). Shape (steps,)."""
    check_int("steps", steps, 1)
    for name, value in (("beta_start", beta_start), ("beta_end", beta_end)):
        _check_positive(name, value)
        if value >= 1:
            raise ValueError(f"{name} must be < 1, got {value!r}")
    betas = torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    return _out(torch.cumprod(1 - betas, 0), device, dtype)


def cosine_alpha_bars(steps=1000, offset=0.008, max_beta=0.999, device=None, dtype=torch.float32):
    """The cosine schedule of Nichol & Dhariwal (2021, eq. 17): ᾱ_t = f(t) / f(0) with
    f(t) = cos²((t / T + offset) / (1 + offset) · π / 2), each β_t = 1 − ᾱ_t / ᾱ_{t−1} capped
    at max_beta so that the last steps stay finite. Shape (steps,)."""
    check_int("steps", steps, 1)
    _check_positive("offset", offset)
    if not 0 < max_beta < 1:
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta!r}")
    t = torch.arange(steps + 1, dtype=torch.float64) / steps
    f = torch.cos((t + offset) / (1 + offset) * math.pi / 2).square()
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return _out(torch.cumprod(1 - betas, 0), device, dtype)


def karras_sigmas(
    steps, sigma_min=0.002, sigma_max=80.0, rho=7.0, device=None, dtype=torch.float32
):
    """The σ steps of Karras et al. (2022, eq. 5): σ_i = (σ_max^(1/ρ) + i / (steps − 1)
    (σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ for i = 0 .. steps − 1, then σ_steps = 0. Shape
    (steps + 1,), decreasing."""
    check_int("steps", steps, 1)
    for name, value in (("sigma_min", sigma_min), ("sigma_max", sigma_max), ("rho", rho)):
        _check_positive(name, value)
    if sigma_min >= sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min!r} and {sigma_max!r}")
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64) if steps > 1 else torch.zeros(1)
    high, low = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (high + ramp.double() * (low - high)) ** rho
    return _out(torch.cat([sigmas, sigmas.new_zeros(1)]), device, dtype)


def sigmas_from_alpha_bars(alpha_bars):
    """σ = sqrt((1 − ᾱ) / ᾱ): a variance-preserving schedule in Karras et al.'s σ form."""
    a = alpha_bars.double()
    if not ((a > 0) & (a <= 1)).all():
        raise ValueError("alpha_bars must lie in (0, 1]")
    return ((1 - a) / a).sqrt().to(alpha_bars.dtype)


def alpha_bars_from_sigmas(sigmas):
    """ᾱ = 1 / (1 + σ²): the inverse of sigmas_from_alpha_bars."""
    s = sigmas.double()
    if not (s >= 0).all():
        raise ValueError("sigmas must be >= 0")
    return (1 / (1 + s.square())).to(sigmas.dtype)


def spaced_timesteps(total, steps, device=None):
    """`steps` of the `total` training steps, evenly spaced and decreasing from total − 1 to 0
    (0-based indices into a schedule), for samplers that skip steps (DDIM, Song et al., 2021,
    sec. 4.2). Shape (steps,), int64."""
    check_int("total", total, 1)
    check_int("steps", steps, 1)
    if steps > total:
        raise ValueError(f"steps must be <= total ({total}), got {steps}")
    spaced = torch.linspace(total - 1, 0, steps, dtype=torch.float64).round().long()
    return spaced.to(device)


SPACINGS = ("uniform", "logsnr", "karras")


def timestep_spacing(alpha_bars, steps, spacing="logsnr"):
    """Decreasing 0-based indices into the schedule `alpha_bars` for a sampler of `steps` steps,
    as a host list: "uniform" in t (spaced_timesteps); "logsnr", uniform in log σ (= uniform in
    log-SNR / 2, the spacing Lu et al. 2022 use for DPM-Solver); "karras", the model's levels
    nearest to Karras et al.'s σ (eq. 5, ρ = 7) between its own σ_min and σ_max. The last two
    keep each level once, so they may give a step or two fewer where `steps` approaches the
    schedule's length. Reads alpha_bars on the host (once, before any loop)."""
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
