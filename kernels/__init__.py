"""Triton kernels of gdm-engine, installed as `gdm_engine.kernels`.

Kernels and thin launchers only: tensors in, tensors out. No input checking happens here; the
public ops in `gdm_engine.ops` validate before they launch. This package imports torch and triton
and nothing of the engine.
"""

from ._runtime import INTERPRETED, poisoned_outputs, recording_launches

__all__ = ["INTERPRETED", "poisoned_outputs", "recording_launches"]
