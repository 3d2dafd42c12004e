"""Plain PyTorch references: the specification of every kernel, one module per family."""

from .actnorm import actnorm
from .affine_coupling import affine_coupling
from .causal_conv1d import causal_conv1d
from .diffusion import (
    ddim_step,
    ddpm_step,
    diffusion_loss,
    dpmpp_2m_step,
    euler_step,
    heun_step,
    langevin_step,
    q_sample,
)
from .gaussian_reparam_kl import gaussian_reparam_kl
from .masked_conv2d import masked_conv2d
from .rq_spline import rq_spline

__all__ = [
    "actnorm",
    "affine_coupling",
    "causal_conv1d",
    "ddim_step",
    "ddpm_step",
    "diffusion_loss",
    "dpmpp_2m_step",
    "euler_step",
    "gaussian_reparam_kl",
    "heun_step",
    "langevin_step",
    "masked_conv2d",
    "q_sample",
    "rq_spline",
]
