"""Output allocation and runtime facts shared by every launcher.

Tests switch on `poisoned_outputs()` so that every buffer a kernel must write starts as NaN: an
element the kernel forgets to write then fails the comparison instead of passing by luck.
"""

import contextlib
import functools

import torch
from triton import knobs

# Kernels built for Triton's CPU interpreter (TRITON_INTERPRET=1 when triton was imported).
INTERPRETED = bool(knobs.runtime.interpret)

_poison = False


@contextlib.contextmanager
def poisoned_outputs(enabled=True):
    """Fill every buffer allocated by a launcher with NaN while the context is active."""
    global _poison
    previous, _poison = _poison, enabled
    try:
        yield
    finally:
        _poison = previous


def empty(shape, dtype, device):
    """torch.empty, or a NaN-filled buffer under `poisoned_outputs()`."""
    if _poison:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.empty(shape, dtype=dtype, device=device)


@functools.lru_cache(maxsize=None)
def _multiprocessors(device_index):
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_programs_target(device=None):
    """Programs that keep every multiprocessor busy: four per SM on a GPU, one elsewhere."""
    if device is not None and device.type == "cuda":
        return 4 * _multiprocessors(device.index or 0)
    return 1
