"""masked_conv2d: the masked convolution of PixelCNN, as a registered torch op.

The public function passes the registered op (a `torch.library.custom_op` with a fake
implementation and a registered backward op, each choosing the Triton kernel or the PyTorch
reference when it runs, gdm_engine.backend) the full (C_out, C_in, kh, kw) bool mask of `mask` and
`color_groups` (`full_mask` of gdm_engine.reference.masked_conv2d), the kernels' tap table of
its active taps, and whether the mask also switches off channel pairs at an active tap (colour
groups), which is when the kernels load it. All are built on the host once (`mask_and_taps`),
the tensors kept on the device: cached by the function, held by nn.MaskedConv2d. A call then
reads nothing back and launches nothing but the op's kernels.
"""

from collections.abc import Sequence
from typing import Optional, Union

import torch

from gdm_engine import backend
from gdm_engine._validation import (
    check_bias,
    check_choice,
    check_gated_channels,
    check_int,
    check_like,
    check_tensor,
)
from gdm_engine.reference.masked_conv2d import conv_with_mask, full_mask

from ._autocast import autocast_inputs

ACTIVATIONS = (None, "tanh", "relu", "gated")
MASKS = ("A", "B")


def _kernels():
    from gdm_engine.kernels import masked_conv2d as kernels

    return kernels


def active_taps(full: torch.Tensor, dilation: int) -> torch.Tensor:
    """The kernels' tap table of a full mask: an int32 (T, 3) tensor with a row
    (dh·dilation, dw·dilation, row·kw + column) for each tap (row, column) of the kernel window
    where any channel pair is active, (dh, dw) its offset from the centre, in raster order. A
    mask with none (a 1x1 "A" without colour groups) gets its centre tap, which the mask then
    switches off channel by channel."""
    kh, kw = full.shape[2:]
    active = full.any(1).any(0)
    active[kh // 2, kw // 2] |= ~active.any()
    rows, cols = active.nonzero(as_tuple=True)
    offsets = [(rows - kh // 2) * dilation, (cols - kw // 2) * dilation, rows * kw + cols]
    return torch.stack(offsets, 1).to(torch.int32)


def mask_and_taps(
    weight_shape: Sequence[int],
    mask: Union[str, torch.Tensor],
    color_groups: int,
    gated: bool,
    dilation: int,
    device: Union[torch.device, str],
) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(full mask, tap table, channel_mask) of the layer, built on the host, the two tensors
    then moved to `device`: the op's `mask`, `taps` and `channel_mask` arguments. channel_mask
    says whether the mask switches off some channel pair at an active tap (colour groups, or a
    mask without active taps): only then do the kernels load it."""
    full = full_mask(weight_shape, mask, color_groups, gated)
    taps = active_taps(full, dilation)
    # traced (torch.compile, export), where a tensor's value cannot steer Python, the kernels
    # load the mask: always right
    channel_mask = torch.compiler.is_compiling() or not bool(
        full.flatten(2)[:, :, taps[:, 2].long()].all()
    )
    return full.to(device), taps.to(device), channel_mask


# (weight shape, mask name or contents, colour groups, gated, dilation, device) -> mask_and_taps;
# the image width is a kernel argument, so one table serves every width
_PREPARED: dict[tuple, tuple[torch.Tensor, torch.Tensor, bool]] = {}


def _prepared(weight_shape, mask, color_groups, gated, dilation, device):
    """mask_and_taps, built once per distinct layer. A tensor mask is keyed by its contents,
    read on the host: from a CPU tensor that costs no device work; from a GPU tensor it is a
    read-back at every call (MaskedConv2d, which holds the result, avoids it)."""
    if torch.compiler.is_compiling():  # traced: the graph builds them, and nothing traced is kept
        return mask_and_taps(weight_shape, mask, color_groups, gated, dilation, device)
    contents = mask if isinstance(mask, str) else tuple(map(tuple, mask.tolist()))
    key = (tuple(weight_shape), contents, color_groups, gated, dilation, device)
    if key not in _PREPARED:
        _PREPARED[key] = mask_and_taps(weight_shape, mask, color_groups, gated, dilation, device)
    return _PREPARED[key]


@torch.library.custom_op("gdm_engine::masked_conv2d", mutates_args=())
def library_op(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    mask: torch.Tensor,
    taps: torch.Tensor,
    *,
    dilation: int = 1,
    activation: Optional[str] = None,
    channel_mask: bool = True,
) -> torch.Tensor:
    """The registered op, unchecked, for a full bool mask, its tap table and channel_mask
    (`mask_and_taps`): call `masked_conv2d`."""
    if backend.resolve(x) == "triton":
        return _kernels().masked_conv2d_forward(
            x, weight, bias, residual, mask, taps, channel_mask, activation or "none"
        )
    return conv_with_mask(x, weight, bias, residual, mask, dilation, activation)


@library_op.register_fake
def _(x, weight, bias, residual, mask, taps, *, dilation=1, activation=None, channel_mask=True):
    channels = weight.shape[0] // 2 if activation == "gated" else weight.shape[0]
    return x.new_empty((x.shape[0], channels, *x.shape[2:]))


@torch.library.custom_op("gdm_engine::masked_conv2d_backward", mutates_args=())
def _backward(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    mask: torch.Tensor,
    taps: torch.Tensor,
    dilation: int,
    activation: Optional[str],
    channel_mask: bool,
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) by the implementation that ran the forward pass; dbias is empty when
    there is no bias. (The residual's gradient is grad itself.)"""
    if implementation == "triton":
        dx, dw, db = _kernels().masked_conv2d_backward(
            grad, x, weight, bias, mask, taps, channel_mask, activation or "none"
        )
    else:
        dx, dw, db = _reference_backward(grad, x, weight, bias, mask, dilation, activation)
    return dx, dw, db if db is not None else weight.new_empty(0)


def _reference_backward(grad, x, weight, bias, mask, dilation, activation):
    # torch.func.vjp rather than torch.autograd: the body of a custom op runs below autograd.
    params = (weight,) if bias is None else (weight, bias)

    def forward(x, weight, bias=None):
        return conv_with_mask(x, weight, bias, None, mask, dilation, activation)

    _, vjp = torch.func.vjp(forward, x, *params)
    dx, dw, *db = vjp(grad)
    return dx, dw, db[0] if db else None


@_backward.register_fake
def _(grad, x, weight, bias, mask, taps, dilation, activation, channel_mask, implementation):
    db = torch.empty_like(bias) if bias is not None else weight.new_empty(0)
    return torch.empty_like(x), torch.empty_like(weight), db


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    x, weight, bias, residual, mask, taps = inputs
    ctx.save_for_backward(x, weight, bias, mask, taps)
    kw = keyword_only_inputs
    ctx.config = (kw["dilation"], kw["activation"], kw["channel_mask"], backend.resolve(x))
    ctx.has_residual = residual is not None


def _autograd_backward(ctx, grad):
    x, weight, bias, mask, taps = ctx.saved_tensors
    dx, dw, db = _backward(grad, x, weight, bias, mask, taps, *ctx.config)
    # the residual is added after the activation: its gradient is grad, passed on as it is
    return (
        dx,
        dw,
        db if bias is not None else None,
        grad if ctx.has_residual else None,
        None,
        None,
    )


library_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def check_layer(
    weight_shape: Sequence[int],
    mask: Union[str, torch.Tensor],
    color_groups: int,
    dilation: int,
    activation: Optional[str],
) -> None:
    """Raise ValueError/TypeError, naming the argument, for layer settings the op cannot compute
    with a weight of `weight_shape` (what MaskedConv2d checks once, when it is built)."""
    check_int("color_groups", color_groups, 1)
    check_int("dilation", dilation, 1)
    check_choice("activation", activation, ACTIVATIONS)
    c_out, c_in, kh, kw = weight_shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"weight must have odd kernel sizes (a centre tap), got {kh}x{kw}")
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
        raise ValueError(
            f"color_groups={color_groups} must divide the input channels ({c_in}) "
            f"and the output channels ({per_half}"
            f"{' per gated half' if activation == 'gated' else ''})"
        )


def check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],
    residual: Optional[torch.Tensor],
    mask: Union[str, torch.Tensor],
    color_groups: int,
    dilation: int,
    activation: Optional[str],
) -> None:
    """Raise ValueError/TypeError, naming the argument, for anything the op cannot compute."""
    check_tensor("x", x, ndim=4)
    check_tensor("weight", weight, ndim=4)
    check_like("weight", weight, "x", x)
    c_out, c_in = weight.shape[:2]
    if x.shape[1] != c_in:
        raise ValueError(
            f"weight must have shape (C_out, {x.shape[1]}, kh, kw) for x with "
            f"{x.shape[1]} channels, got {tuple(weight.shape)}"
        )
    check_layer(weight.shape, mask, color_groups, dilation, activation)
    check_bias(bias, c_out, x)
    if residual is not None:
        check_tensor("residual", residual, ndim=4)
        check_like("residual", residual, "x", x)
        want = (x.shape[0], c_out // 2 if activation == "gated" else c_out, *x.shape[2:])
        if tuple(residual.shape) != want:
            raise ValueError(
                f"residual must have the output's shape {want}, got {tuple(residual.shape)}"
            )


def check_prepared(prepared: object, weight: torch.Tensor, x: torch.Tensor) -> None:
    """Raise TypeError/ValueError unless `prepared` is a (full mask, tap table, channel_mask) of
    `mask_and_taps` for this weight, on x's device."""
    if not (
        isinstance(prepared, tuple)
        and len(prepared) == 3
        and all(isinstance(t, torch.Tensor) for t in prepared[:2])
        and isinstance(prepared[2], bool)
    ):
        raise TypeError(
            f"prepared must be the (mask, taps, channel_mask) of mask_and_taps, got "
            f"{type(prepared).__name__}"
        )
    full, taps, _ = prepared
    if full.dtype != torch.bool or full.shape != weight.shape:
        raise ValueError(
            f"prepared mask must be bool and shaped like weight "
            f"{tuple(weight.shape)}, got {full.dtype} {tuple(full.shape)}"
        )
    if taps.dtype != torch.int32 or taps.ndim != 2 or taps.shape[1] != 3:
        raise ValueError(
            f"prepared taps must be an int32 (T, 3) table, got {taps.dtype} {tuple(taps.shape)}"
        )
    for name, t in (("mask", full), ("taps", taps)):
        if t.device != x.device:
            raise ValueError(f"prepared {name} is on {t.device} but x is on {x.device}")


def masked_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    residual: Optional[torch.Tensor] = None,
    *,
    mask: Union[str, torch.Tensor] = "B",
    color_groups: int = 1,
    dilation: int = 1,
    activation: Optional[str] = None,
    prepared: Optional[tuple[torch.Tensor, torch.Tensor, bool]] = None,
) -> torch.Tensor:
    """Masked 2-D convolution (PixelCNN, van den Oord et al. 2016), stride 1, "same" padding,
    odd kernel sizes.

    Exactly ``F.conv2d(x, where(M, weight, 0), bias, padding=d*(k//2), dilation=d)`` with the
    full mask M (a weight that M switches off is never read: NaN or inf there stays out of the
    result), then the activation (None, "tanh", "relu" or "gated": tanh of the first half of the
    channels times sigmoid of the second) and, when given, plus `residual` (shaped like the
    output).
    `mask` is "A" (taps strictly before the centre in raster order), "B" (those and the centre)
    or a bool (kh, kw) tensor of active taps. `color_groups` splits channels into ordered groups
    (RGB): at the centre tap, output group j sees input groups < j for "A" and <= j for "B" (and
    for a tensor mask); at the other active taps, all groups. Only active taps are computed.

    M and the kernels' tap table are built on the host once per distinct (mask, color_groups,
    gating, dilation, weight shape, device) and cached. A tensor `mask` is keyed by its contents,
    so give it as a CPU tensor: one on a GPU would be read back at every call. `prepared`,
    ``mask_and_taps(weight.shape, mask, color_groups, activation == "gated", dilation,
    x.device)``, skips the look-up (nn.MaskedConv2d holds it).

    Args:
        x: (N, C_in, H, W) input.
        weight: (C_out, C_in, kh, kw), odd kh and kw, x's dtype and device.
        bias: (C_out,), or None for no bias.
        residual: a tensor shaped like the output, added after the activation; None: none.
        mask: "A", "B" or a bool (kh, kw) tensor of active taps.
        color_groups: >= 1 ordered channel groups, dividing C_in and C_out (per gated half).
        dilation: >= 1, the spacing of the taps.
        activation: None, "tanh", "relu" or "gated" (C_out even).
        prepared: the (full mask, tap table, channel_mask) of `mask_and_taps` for these
            settings, on x's device; None: built (and cached) here.

    Returns:
        (N, C_out, H, W), or (N, C_out/2, H, W) for "gated".

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype than x, an int
            setting not an int, mask neither "A", "B" nor a bool tensor, or prepared not such
            a triple.
        ValueError: a tensor of the wrong rank, shape or device, even kernel sizes, a setting
            out of range, color_groups not dividing the channels, an unknown mask name or
            activation, or a prepared mask or table that does not fit weight.
    """
    x, weight, bias, residual = autocast_inputs("masked_conv2d", x, weight, bias, residual)
    check_inputs(x, weight, bias, residual, mask, color_groups, dilation, activation)
    if prepared is None:
        prepared = _prepared(
            weight.shape, mask, color_groups, activation == "gated", dilation, x.device
        )
    else:
        check_prepared(prepared, weight, x)
    full, taps, channel_mask = prepared
    return library_op(
        x,
        weight,
        bias,
        residual,
        full,
        taps,
        dilation=dilation,
        activation=activation,
        channel_mask=channel_mask,
    )
