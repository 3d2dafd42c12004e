"""The public functional ops: validate inputs, choose kernel or reference, support autograd."""

from .actnorm import actnorm
from .actnorm import library_op as actnorm_library_op
from .affine_coupling import affine_coupling
from .affine_coupling import library_op as affine_coupling_library_op
from .causal_conv1d import causal_conv1d
from .causal_conv1d import library_op as causal_conv1d_library_op
from .diffusion import ddim_library_op, ddim_step, ddpm_library_op, ddpm_step
from .diffusion import diffusion_loss, diffusion_loss_library_op, dpmpp_2m_library_op
from .diffusion import dpmpp_2m_step, euler_library_op, euler_step, heun_library_op, heun_step
from .diffusion import langevin_library_op, langevin_step, q_sample, q_sample_library_op
from .gaussian_reparam_kl import gaussian_reparam_kl
from .gaussian_reparam_kl import library_op as gaussian_reparam_kl_library_op
from .masked_conv2d import library_op as masked_conv2d_library_op
from .masked_conv2d import masked_conv2d
from .rq_spline import library_op as rq_spline_library_op
from .rq_spline import rq_spline
from ._autocast import register_rules

register_rules()  # autocast rules, once every op above is defined

__all__ = ["actnorm", "actnorm_library_op", "affine_coupling", "affine_coupling_library_op",
           "causal_conv1d", "causal_conv1d_library_op", "ddim_library_op", "ddim_step",
           "ddpm_library_op", "ddpm_step", "diffusion_loss", "diffusion_loss_library_op",
           "dpmpp_2m_library_op", "dpmpp_2m_step", "euler_library_op", "euler_step",
           "gaussian_reparam_kl", "gaussian_reparam_kl_library_op", "heun_library_op",
           "heun_step", "langevin_library_op", "langevin_step", "masked_conv2d",
           "masked_conv2d_library_op", "q_sample", "q_sample_library_op", "rq_spline",
           "rq_spline_library_op"]
