"""nn.Module layers over gdm_engine.ops, drop-in beside their torch.nn counterparts."""

from .causal_conv1d import CausalConv1d

__all__ = ["CausalConv1d"]
