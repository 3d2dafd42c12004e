"""Noise schedules, and the sampler loops built on the diffusion step ops."""

from .samplers import annealed_langevin_sample, ddim_sample, ddpm_sample
from .schedules import (alpha_bars_from_sigmas, cosine_alpha_bars, karras_sigmas,
                        linear_alpha_bars, sigmas_from_alpha_bars, spaced_timesteps)

__all__ = ["alpha_bars_from_sigmas", "annealed_langevin_sample", "cosine_alpha_bars",
           "ddim_sample", "ddpm_sample", "karras_sigmas", "linear_alpha_bars",
           "sigmas_from_alpha_bars", "spaced_timesteps"]
