"""nn.Module layers over gdm_engine.ops, drop-in beside their torch.nn counterparts."""

from .causal_conv1d import CausalConv1d
from .masked_conv2d import MaskedConv2d

__all__ = ["CausalConv1d", "MaskedConv2d"]
