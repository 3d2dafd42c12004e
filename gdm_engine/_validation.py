"""Input checks shared by every layer of the engine (ops, nn, sampling, models, integrations):
each error names the argument, what was expected and what came."""

import numpy
import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensor(name, value, ndim=None):
    """A floating-point tensor, optionally of a given rank."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(value.shape)}")


def check_like(name, value, ref_name, ref):
    """`value` has the dtype and device of `ref`."""
    if value.device != ref.device:
        raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}")
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {ref_name} has {ref.dtype}")


def check_int(name, value, minimum):
    """A Python int (not a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def check_bias(bias, channels, x):
    """None, or a 1-D tensor of `channels` entries like x."""
    if bias is None:
        return
    check_tensor("bias", bias, ndim=1)
    check_like("bias", bias, "x", x)
    if bias.shape[0] != channels:
        raise ValueError(
            f"bias must have shape ({channels},) to match weight, got {tuple(bias.shape)}"
        )


def check_gated_channels(activation, channels):
    """The gated unit halves the output channels: an even number of them."""
    if activation == "gated" and channels % 2:
        raise ValueError(
            f"activation='gated' halves the output channels, so weight needs an even "
            f"number of them, got {channels}"
        )


def check_fraction(name, value):
    """A number in [0, 1), such as a dropout rate."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")


def check_choice(name, value, choices):
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {value!r}")


def check_shape_of(name, value, ref_name, ref):
    """`value` is a tensor with the dtype, device and shape of `ref`."""
    check_tensor(name, value)
    check_like(name, value, ref_name, ref)
    if value.shape != ref.shape:
        raise ValueError(
            f"{name} must have the shape of {ref_name}, {tuple(ref.shape)}, got "
            f"{tuple(value.shape)}"
        )


def check_noise_source(noise, generator):
    """An op that adds noise takes `noise` or a torch.Generator that draws it, not both."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__}"
        )
    if generator is not None and noise is not None:
        raise ValueError("pass noise or generator, not both: the generator only draws the noise")


def host_values(t):
    """A tensor's values as a numpy array where reading them costs nothing (a CPU
    tensor, read straight from host memory, no op dispatched), else None: values of device
    tensors are checked once per loop or module, never per call on the hot path."""
    if t.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    t = t.detach()
    if t.dtype == torch.bfloat16:  # numpy has no bfloat16: widen its bits to float32's
        bits = t.view(torch.int16).numpy().astype(numpy.int32) << 16
        return bits.view(numpy.float32)
    return t.numpy()  # a view of the tensor's memory: no copy of a large data split
