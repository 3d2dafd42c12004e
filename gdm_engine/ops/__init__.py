"""The public functional ops: validate inputs, choose kernel or reference, support autograd.
Their torch.library registrations are in `gdm_engine.ops.library`."""

import warnings

from . import library
from ._autocast import register_rules
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

register_rules()  # autocast rules, once every op above is defined

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


def __getattr__(name):
    """`gdm_engine.ops.<op>_library_op`, the registrations' old home, for one release."""
    if name in library.__all__:
        warnings.warn(
            f"gdm_engine.ops.{name} moved to gdm_engine.ops.library.{name}; the old "
            f"name goes in the next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(library, name)
    raise AttributeError(f"module 'gdm_engine.ops' has no attribute {name!r}")
