"""Which implementation runs an op: "auto", "triton" or "reference".

* auto (default): Triton kernels for CUDA tensors, PyTorch references for CPU tensors.
* triton: kernels always; CPU tensors need Triton's interpreter (TRITON_INTERPRET=1 set before
  gdm_engine.kernels is first imported).
* reference: the PyTorch references always.

The choice is process-wide: `set_backend(name)`, the context manager `use_backend(name)`, or the
environment variable GDM_BACKEND read at import. Kernels cover float32, float16 and bfloat16;
float64 inputs always run the reference (it is the precision the checks are made in).
"""

import contextlib
import importlib.util
import os

import torch

BACKENDS = ("auto", "triton", "reference")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _checked(name, source):
    if name not in BACKENDS:
        raise ValueError(f"{source} must be one of {', '.join(BACKENDS)}; got {name!r}")
    return name


_backend = _checked(os.environ.get("GDM_BACKEND", "auto"), "GDM_BACKEND")


def get_backend():
    """The backend in force: "auto", "triton" or "reference"."""
    return _backend


def set_backend(name):
    """Choose the backend for every op from now on."""
    global _backend
    _backend = _checked(name, "backend")


@contextlib.contextmanager
def use_backend(name):
    """Run the block with another backend, then restore the previous one."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        set_backend(previous)


def installed_version(module):
    """`module`'s __version__, or "not installed"."""
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def triton_installed():
    return importlib.util.find_spec("triton") is not None


def interpreter_enabled():
    """Whether the kernels were (or will be) built for Triton's CPU interpreter."""
    if not triton_installed():
        return False
    from gdm_engine import kernels

    return kernels.INTERPRETED


def _recording_launches():
    """Whether `gdm-engine compile` is recording launches, which then never run."""
    from gdm_engine.kernels import _runtime

    return _runtime.recording()


def resolve(tensor):
    """ "triton" or "reference": what runs an op whose main input is `tensor`."""
    name = get_backend()
    if name == "reference" or tensor.dtype not in KERNEL_DTYPES:
        return "reference"
    on_gpu = tensor.device.type == "cuda"
    if name == "auto":
        return "triton" if on_gpu and triton_installed() else "reference"
    if not triton_installed():
        raise RuntimeError(
            "backend 'triton' needs the triton package: pip install triton "
            "(Linux), or use set_backend('reference')"
        )
    if not on_gpu and not interpreter_enabled() and not _recording_launches():
        raise RuntimeError(
            f"backend 'triton' got {tensor.device.type} tensors, which need Triton's interpreter: "
            "set TRITON_INTERPRET=1 in the environment before gdm_engine.kernels is first "
            "imported (or pass CUDA tensors, or use set_backend('auto'))"
        )
    return "triton"
