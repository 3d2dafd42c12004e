"""The ops' torch.library registrations (`torch.ops.gdm_engine.*`), unchecked: what the catalog,
`torch.library.opcheck` and the compile/export tests call. Users call the public ops in
`gdm_engine.ops`, which validate their inputs first."""

from .actnorm import library_op as actnorm_library_op
from .affine_coupling import library_op as affine_coupling_library_op
from .causal_conv1d import library_op as causal_conv1d_library_op
from .diffusion import (
    ddim_library_op,
    ddpm_library_op,
    diffusion_loss_library_op,
    dpmpp_2m_library_op,
    euler_library_op,
    heun_library_op,
    langevin_library_op,
    q_sample_library_op,
)
from .gaussian_reparam_kl import library_op as gaussian_reparam_kl_library_op
from .masked_conv2d import library_op as masked_conv2d_library_op
from .rq_spline import library_op as rq_spline_library_op

__all__ = [
    "actnorm_library_op",
    "affine_coupling_library_op",
    "causal_conv1d_library_op",
    "ddim_library_op",
    "ddpm_library_op",
    "diffusion_loss_library_op",
    "dpmpp_2m_library_op",
    "euler_library_op",
    "gaussian_reparam_kl_library_op",
    "heun_library_op",
    "langevin_library_op",
    "masked_conv2d_library_op",
    "q_sample_library_op",
    "rq_spline_library_op",
]
