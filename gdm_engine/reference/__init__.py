"""Plain PyTorch references: the specification of every kernel, one module per family."""

from .causal_conv1d import causal_conv1d

__all__ = ["causal_conv1d"]
