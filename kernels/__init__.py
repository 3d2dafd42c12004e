"""Triton kernels of gdm-engine, installed as `gdm_engine.kernels`.

Kernels and thin launchers only: tensors in, tensors out. No input checking happens here; the
public ops in `gdm_engine.ops` validate before they launch. This package imports torch and triton
and nothing of the engine.
"""

from ._buffers import INTERPRETED, poisoned_outputs

__all__ = ["INTERPRETED", "poisoned_outputs"]
