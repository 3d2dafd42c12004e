"""gdm-engine: Triton kernels for deep generative models behind a thin PyTorch engine.

import gdm_engine
y = gdm_engine.ops.causal_conv1d(x, w, dilation=2, activation="gated")
with gdm_engine.use_backend("reference"):
    y_ref = gdm_engine.ops.causal_conv1d(x, w, dilation=2, activation="gated")
"""

from . import nn, ops
from .backend import BACKENDS, get_backend, set_backend, use_backend

__version__ = "0.1.0"

__all__ = ["BACKENDS", "get_backend", "nn", "ops", "set_backend", "use_backend", "__version__"]
