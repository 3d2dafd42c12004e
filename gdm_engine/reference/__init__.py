"""Plain PyTorch references: the specification of every kernel, one module per family."""

from .causal_conv1d import causal_conv1d
from .gaussian_reparam_kl import gaussian_reparam_kl
from .masked_conv2d import masked_conv2d

__all__ = ["causal_conv1d", "gaussian_reparam_kl", "masked_conv2d"]
