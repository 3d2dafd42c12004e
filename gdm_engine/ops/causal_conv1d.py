"""causal_conv1d: the causal dilated convolution of WaveNet, as a registered torch op.

The op is a `torch.library.custom_op`, opaque to torch.compile and export, with a fake
implementation for shape propagation and a registered backward that is itself an op. Each of the
two chooses the Triton kernel or the PyTorch reference when it runs (gdm_engine.backend).
"""

from typing import Optional

import torch

from gdm_engine import backend, reference
from gdm_engine._validation import (
    check_bias,
    check_choice,
    check_gated_channels,
    check_int,
    check_like,
    check_tensor,
)

from ._autocast import autocast_inputs

ACTIVATIONS = (None, "tanh", "relu", "gated")


def _kernels():
    from gdm_engine.kernels import causal_conv1d as kernels

    return kernels


@torch.library.custom_op("gdm_engine::causal_conv1d", mutates_args=())
def library_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    dilation: int = 1,
    groups: int = 1,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """The registered op, unchecked: call `causal_conv1d`, which validates its inputs first."""
    activation = activation or "none"
    if backend.resolve(x) == "triton":
        return _kernels().causal_conv1d_forward(x, weight, bias, dilation, groups, activation)
    return reference.causal_conv1d(x, weight, bias, dilation, groups, activation)


@library_op.register_fake
def _(x, weight, bias=None, *, dilation=1, groups=1, activation=None):
    channels = weight.shape[0] // 2 if activation == "gated" else weight.shape[0]
    return x.new_empty((x.shape[0], channels, x.shape[2]))


@torch.library.custom_op("gdm_engine::causal_conv1d_backward", mutates_args=())
def _backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    groups: int,
    activation: str,
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias), by the implementation that ran the forward pass; dbias is empty
    when there is no bias."""
    if implementation == "triton":
        dx, dw, db = _kernels().causal_conv1d_backward(
            grad, x, weight, bias, dilation, groups, activation
        )
    else:
        dx, dw, db = _reference_backward(grad, x, weight, bias, dilation, groups, activation)
    return dx, dw, db if db is not None else weight.new_empty(0)


def _reference_backward(grad, x, weight, bias, dilation, groups, activation):
    # torch.func.vjp rather than torch.autograd: the body of a custom op runs below autograd.
    params = (weight,) if bias is None else (weight, bias)

    def forward(x, weight, bias=None):
        return reference.causal_conv1d(x, weight, bias, dilation, groups, activation)

    _, vjp = torch.func.vjp(forward, x, *params)
    dx, dw, *db = vjp(grad)
    return dx, dw, db[0] if db else None


@_backward.register_fake
def _(grad, x, weight, bias, dilation, groups, activation, implementation):
    db = torch.empty_like(bias) if bias is not None else weight.new_empty(0)
    return torch.empty_like(x), torch.empty_like(weight), db


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    x, weight, bias = inputs
    ctx.save_for_backward(x, weight, bias)
    kw = keyword_only_inputs
    ctx.config = (kw["dilation"], kw["groups"], kw["activation"] or "none", backend.resolve(x))


def _autograd_backward(ctx, grad):
    x, weight, bias = ctx.saved_tensors
    dx, dw, db = _backward(grad, x, weight, bias, *ctx.config)
    return dx, dw, db if bias is not None else None


library_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    dilation: int,
    groups: int,
    activation: Optional[str],
) -> None:
    """Raise ValueError/TypeError, naming the argument, for anything the op cannot compute."""
    check_tensor("x", x, ndim=3)
    check_tensor("weight", weight, ndim=3)
    check_like("weight", weight, "x", x)
    check_int("dilation", dilation, 1)
    check_int("groups", groups, 1)
    check_choice("activation", activation, ACTIVATIONS)
    c_in, (c_out, c_in_g, kernel_size) = x.shape[1], weight.shape
    if kernel_size < 1:
        raise ValueError(
            f"weight must have kernel size K >= 1 (last dimension), got shape {tuple(weight.shape)}"
        )
    if c_in % groups or c_out % groups:
        raise ValueError(
            f"groups={groups} must divide the input channels ({c_in}) and the output "
            f"channels ({c_out})"
        )
    if c_in_g != c_in // groups:
        raise ValueError(
            f"weight must have shape (C_out, C_in/groups, K) = (.., {c_in // groups}, "
            f"..) for x with {c_in} channels and groups={groups}, got "
            f"{tuple(weight.shape)}"
        )
    check_gated_channels(activation, c_out)
    check_bias(bias, c_out, x)


def causal_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    *,
    dilation: int = 1,
    groups: int = 1,
    activation: Optional[str] = None,
) -> torch.Tensor:
    """Causal dilated 1-D convolution (WaveNet, van den Oord et al. 2016), with an optional
    fused activation.

    Output position t sees only inputs at t, t-d, ..., t-(K-1)d, exactly
    ``F.conv1d(F.pad(x, ((K-1)*d, 0)), weight, bias, dilation=d, groups=groups)``, without making
    the padded copy. "gated" returns tanh(first half of the channels) * sigmoid(second half).

    Args:
        x: (N, C_in, L) input.
        weight: (C_out, C_in/groups, K), x's dtype and device.
        bias: (C_out,), or None for no bias.
        dilation: d >= 1, the spacing of the taps.
        groups: >= 1, dividing C_in and C_out.
        activation: None, "tanh", "relu" or "gated" (C_out even).

    Returns:
        (N, C_out, L), or (N, C_out/2, L) for "gated".

    Raises:
        TypeError: x, weight or bias not a floating tensor, of another dtype than x, or
            dilation or groups not an int.
        ValueError: a tensor of the wrong rank, shape or device, dilation or groups < 1,
            groups not dividing the channels, or an unknown activation.
    """
    x, weight, bias = autocast_inputs("causal_conv1d", x, weight, bias)
    check_inputs(x, weight, bias, dilation, groups, activation)
    return library_op(x, weight, bias, dilation=dilation, groups=groups, activation=activation)
