"""masked_conv2d: the masked convolution of PixelCNN, as a registered torch op.

The public function builds the full (C_out, C_in, kh, kw) mask from `mask` and `color_groups`
(`full_mask` of gdm_engine.reference.masked_conv2d) and passes it to the registered op, a
`torch.library.custom_op` with a fake implementation and a registered backward op, each choosing
the Triton kernel or the PyTorch reference when it runs (gdm_engine.backend).
"""

from typing import Optional

import torch

from gdm_engine import backend
from gdm_engine.reference.masked_conv2d import conv_with_mask, full_mask

from ._checks import (check_bias, check_choice, check_gated_channels, check_int, check_like,
                      check_tensor)

ACTIVATIONS = (None, "tanh", "relu", "gated")
MASKS = ("A", "B")


def _kernels():
    from gdm_engine.kernels import masked_conv2d as kernels

    return kernels


@torch.library.custom_op("gdm_engine::masked_conv2d", mutates_args=())
def library_op(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
               residual: Optional[torch.Tensor], mask: torch.Tensor, *, dilation: int = 1,
               activation: Optional[str] = None) -> torch.Tensor:
    """The registered op, unchecked, for a full bool mask: call `masked_conv2d`."""
    if backend.resolve(x) == "triton":
        return _kernels().masked_conv2d_forward(x, weight, bias, residual, mask, dilation,
                                                activation or "none")
    return conv_with_mask(x, weight, bias, residual, mask, dilation, activation)


@library_op.register_fake
def _(x, weight, bias, residual, mask, *, dilation=1, activation=None):
    channels = weight.shape[0] // 2 if activation == "gated" else weight.shape[0]
    return x.new_empty((x.shape[0], channels, *x.shape[2:]))


@torch.library.custom_op("gdm_engine::masked_conv2d_backward", mutates_args=())
def _backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
              bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], mask: torch.Tensor,
              dilation: int, activation: Optional[str], implementation: str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias, dresidual) by the implementation that ran the forward pass; dbias
    and dresidual are empty when there is no bias or residual."""
    if implementation == "triton":
        grads = _kernels().masked_conv2d_backward(grad, x, weight, bias, residual, mask,
                                                  dilation, activation or "none")
    else:
        grads = _reference_backward(grad, x, weight, bias, residual, mask, dilation, activation)
    dx, dw, db, dr = grads
    # fresh tensors: an op's outputs may not alias its inputs (the residual's gradient is grad)
    # or each other (so each absent gradient gets its own empty tensor)
    return (dx, dw, db if db is not None else weight.new_empty(0),
            dr.clone() if dr is not None else weight.new_empty(0))


def _reference_backward(grad, x, weight, bias, residual, mask, dilation, activation):
    # torch.func.vjp rather than torch.autograd: the body of a custom op runs below autograd.
    # It differentiates tensors only, so an absent bias or residual stays out of its arguments.
    optional = {name: value for name, value in (("bias", bias), ("residual", residual))
                if value is not None}

    def forward(x, weight, *values):
        given = dict(zip(optional, values))
        return conv_with_mask(x, weight, given.get("bias"), given.get("residual"), mask,
                              dilation, activation)

    _, vjp = torch.func.vjp(forward, x, weight, *optional.values())
    dx, dw, *grads = vjp(grad)
    given = dict(zip(optional, grads))
    return dx, dw, given.get("bias"), given.get("residual")


@_backward.register_fake
def _(grad, x, weight, bias, residual, mask, dilation, activation, implementation):
    return (torch.empty_like(x), torch.empty_like(weight),
            torch.empty_like(bias) if bias is not None else weight.new_empty(0),
            torch.empty_like(residual) if residual is not None else weight.new_empty(0))


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    x, weight, bias, residual, mask = inputs
    ctx.save_for_backward(x, weight, bias, residual, mask)
    kw = keyword_only_inputs
    ctx.config = (kw["dilation"], kw["activation"], backend.resolve(x))


def _autograd_backward(ctx, grad):
    x, weight, bias, residual, mask = ctx.saved_tensors
    dx, dw, db, dr = _backward(grad, x, weight, bias, residual, mask, *ctx.config)
    return (dx, dw, db if bias is not None else None, dr if residual is not None else None,
            None)


library_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def check_inputs(x, weight, bias, residual, mask, color_groups, dilation, activation):
    """Raise ValueError/TypeError, naming the argument, for anything the op cannot compute."""
    check_tensor("x", x, ndim=4)
    check_tensor("weight", weight, ndim=4)
    check_like("weight", weight, "x", x)
    check_int("color_groups", color_groups, 1)
    check_int("dilation", dilation, 1)
    check_choice("activation", activation, ACTIVATIONS)
    c_out, c_in, kh, kw = weight.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"weight must have odd kernel sizes (a centre tap), got {kh}x{kw}")
    if x.shape[1] != c_in:
        raise ValueError(f"weight must have shape (C_out, {x.shape[1]}, kh, kw) for x with "
                         f"{x.shape[1]} channels, got {tuple(weight.shape)}")
    if isinstance(mask, str):
        check_choice("mask", mask, MASKS)
    elif not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be 'A', 'B' or a bool tensor of shape ({kh}, {kw}), got {got}")
    elif tuple(mask.shape) != (kh, kw):
        raise ValueError(f"mask must have the kernel's shape ({kh}, {kw}), got {tuple(mask.shape)}")
    check_gated_channels(activation, c_out)
    per_half = c_out // 2 if activation == "gated" else c_out
    if c_in % color_groups or per_half % color_groups:
        raise ValueError(f"color_groups={color_groups} must divide the input channels ({c_in}) "
                         f"and the output channels ({per_half}"
                         f"{' per gated half' if activation == 'gated' else ''})")
    check_bias(bias, c_out, x)
    if residual is not None:
        check_tensor("residual", residual, ndim=4)
        check_like("residual", residual, "x", x)
        want = (x.shape[0], per_half, *x.shape[2:])
        if tuple(residual.shape) != want:
            raise ValueError(f"residual must have the output's shape {want}, got "
                             f"{tuple(residual.shape)}")


def masked_conv2d(x, weight, bias=None, residual=None, *, mask="B", color_groups=1, dilation=1,
                  activation=None):
    """Masked 2-D convolution (PixelCNN), stride 1, "same" padding, odd kernel sizes.

    x: (N, C_in, H, W); weight: (C_out, C_in, kh, kw); bias: (C_out,) or None. Exactly
    ``F.conv2d(x, weight * M, bias, padding=d*(k//2), dilation=d)`` with the full mask M, then
    the activation (None, "tanh", "relu" or "gated": tanh of the first half of the channels times
    sigmoid of the second) and, when given, plus `residual` (shaped like the output). `mask` is
    "A" (taps strictly before the centre in raster order), "B" (those and the centre) or a bool
    (kh, kw) tensor of active taps. `color_groups` splits channels into ordered groups (RGB): at
    the centre tap, output group j sees input groups < j for "A" and <= j for "B" (and for a
    tensor mask); at the other active taps, all groups. Only active taps are computed.
    """
    check_inputs(x, weight, bias, residual, mask, color_groups, dilation, activation)
    full = full_mask(weight.shape, mask, color_groups, activation == "gated")
    return library_op(x, weight, bias, residual, full.to(x.device), dilation=dilation,
                      activation=activation)
