"""What every launcher shares: output allocation, the device's size, the launch itself and the
autotuner.

Tests switch on `poisoned_outputs()` so that every buffer a kernel must write starts as NaN: an
element the kernel forgets to write then fails the comparison instead of passing by luck.

`recording_launches()` lets `gdm-engine compile` see every launch a launcher makes without a GPU:
inside it, `launch` notes the kernel, its grid and its arguments instead of running it, and the
launchers size their grids as for a GPU with `multiprocessors` SMs.
"""

import contextlib
import dataclasses
import functools

import torch
import triton
from triton import knobs

# Kernels built for Triton's CPU interpreter (TRITON_INTERPRET=1 when triton was imported).
INTERPRETED = bool(knobs.runtime.interpret)

_poison = False
_recorded = None  # a list while recording_launches() is active
_recorded_multiprocessors = 0


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


@dataclasses.dataclass
class Launch:
    """One kernel launch: `kernel[grid](*args, **kwargs)`; kernel is a JITFunction or Autotuner."""

    kernel: object
    grid: object  # a tuple, or a callable of the launch's named arguments and tile sizes
    args: tuple
    kwargs: dict


def launch(kernel, grid, *args, **kwargs):
    """Run `kernel[grid](*args, **kwargs)` on the device of its first tensor argument, or only
    note it while launches are recorded."""
    if _recorded is not None:
        _recorded.append(Launch(kernel, grid, args, kwargs))
        return
    # Triton launches on the current CUDA device, whatever the tensors' device: switch to theirs
    # where it differs (cuda:1 tensors while cuda:0 is current), and only then.
    device = next(a.device for a in args if isinstance(a, torch.Tensor))
    if device.type == "cuda" and device.index != torch.cuda.current_device():
        with torch.cuda.device(device.index):
            kernel[grid](*args, **kwargs)
        return
    kernel[grid](*args, **kwargs)


def recording():
    """Whether launches are being recorded (and not run)."""
    return _recorded is not None


@contextlib.contextmanager
def recording_launches(multiprocessors=132):
    """Yield the list of Launch that the launchers called inside the block would have made on a
    GPU with `multiprocessors` SMs (132: an H100 SXM). Nothing runs; outputs stay unwritten."""
    global _recorded, _recorded_multiprocessors
    previous = _recorded, _recorded_multiprocessors
    _recorded, _recorded_multiprocessors = [], multiprocessors
    try:
        yield _recorded
    finally:
        _recorded, _recorded_multiprocessors = previous


@functools.cache
def _multiprocessors(device_index):
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def num_programs_target(device=None):
    """Programs that keep every multiprocessor busy: four per SM on a GPU, one elsewhere."""
    if _recorded is not None:
        return 4 * _recorded_multiprocessors
    if device is not None and device.type == "cuda":
        return 4 * _multiprocessors(device.index or 0)
    return 1


def autotune(configs, key, interpreter, fits=None):
    """triton.autotune over the GPU `configs`; under the interpreter the one small `interpreter`
    config, which keeps the tests quick. `fits(config, args)` (args: the launch's arguments by
    name) drops the configurations a launch cannot use without spilling registers or overflowing
    shared memory; `gdm-engine compile` asks the tuner the same question, so it builds exactly
    the configurations that can run.

    Tuned choices are kept on disk (`cache_results`, in Triton's cache directory, $TRITON_CACHE_DIR
    or ~/.triton/cache), keyed by Triton's version, the GPU architecture, the kernel's source, its
    configurations and the tuning key: a new process reuses them instead of spending 30-60 s
    re-tuning a PixelCNN's or a WaveNet's convolutions on its first step."""
    prune = None
    if fits is not None and not INTERPRETED:

        def prune(candidates, named_args, **kwargs):
            args = {**named_args, **kwargs}
            return [c for c in candidates if fits(c, args)] or candidates[:1]

        prune = {"early_config_prune": prune}
    return triton.autotune(
        configs=[interpreter] if INTERPRETED else configs,
        key=key,
        prune_configs_by=prune,
        cache_results=True,
    )


def cdiv(a, b):
    """ceil(a / b) for ints on the host: triton.cdiv is a constexpr function whose Python call
    costs ~8 µs, paid on every launch."""
    return -(-a // b)


def next_power_of_2(n):
    """The least power of two >= n (1 for n <= 1), on the host (see cdiv)."""
    return 1 << max(n - 1, 0).bit_length()
