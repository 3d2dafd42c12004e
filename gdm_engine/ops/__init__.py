"""The public functional ops: validate inputs, choose kernel or reference, support autograd."""

from .causal_conv1d import causal_conv1d
from .causal_conv1d import library_op as causal_conv1d_library_op
from .gaussian_reparam_kl import gaussian_reparam_kl
from .gaussian_reparam_kl import library_op as gaussian_reparam_kl_library_op
from .masked_conv2d import library_op as masked_conv2d_library_op
from .masked_conv2d import masked_conv2d

__all__ = ["causal_conv1d", "causal_conv1d_library_op", "gaussian_reparam_kl",
           "gaussian_reparam_kl_library_op", "masked_conv2d", "masked_conv2d_library_op"]
