"""Noise schedules, and the sampler loops built on the diffusion step ops."""

from .samplers import (
    CLIPPING_SAMPLERS,
    SAMPLERS,
    annealed_langevin_sample,
    ddim_sample,
    ddpm_sample,
    dpmpp_2m_sample,
    euler_sample,
    heun_sample,
    sample,
)
from .schedules import (
    SPACINGS,
    alpha_bars_from_sigmas,
    cosine_alpha_bars,
    karras_sigmas,
    linear_alpha_bars,
    sigmas_from_alpha_bars,
    spaced_timesteps,
    timestep_spacing,
)

__all__ = [
    "CLIPPING_SAMPLERS",
    "SAMPLERS",
    "SPACINGS",
    "alpha_bars_from_sigmas",
    "annealed_langevin_sample",
    "cosine_alpha_bars",
    "ddim_sample",
    "ddpm_sample",
    "dpmpp_2m_sample",
    "euler_sample",
    "heun_sample",
    "karras_sigmas",
    "linear_alpha_bars",
    "sample",
    "sigmas_from_alpha_bars",
    "spaced_timesteps",
    "timestep_spacing",
]
