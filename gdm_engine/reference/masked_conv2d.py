"""Reference masked 2-D convolution: the layer of PixelCNN (van den Oord et al., 2016a, sec. 3.4;
2016b, sec. 2 for the gated unit)."""

import torch
import torch.nn.functional as F

from .causal_conv1d import activate, bias_only


def raster_mask(kernel_h, kernel_w):
    """(kh, kw) bool: the taps strictly before the centre in raster order (rows above, and left of
    the centre in its row), and the centre itself: masks "A" and "B" differ only in which channels
    the centre tap connects (`full_mask`)."""
    mask = torch.zeros(kernel_h, kernel_w, dtype=torch.bool)
    mask[: kernel_h // 2] = True
    mask[kernel_h // 2, : kernel_w // 2 + 1] = True
    return mask


def full_mask(weight_shape, mask="B", color_groups=1, gated=False):
    """The (C_out, C_in, kh, kw) bool mask M of weight: conv2d(x, weight * M) is the layer.

    `mask` is "A", "B" or a bool (kh, kw) tensor of active taps. Channels form `color_groups`
    ordered groups (R, G, B); at the centre tap, output group j sees input groups < j for mask
    "A" and <= j for mask "B" (a tensor mask's centre, where active, follows "B"), and at the
    other active taps every group. With the gated unit each half of the output channels (the
    tanh and the sigmoid half) is split into the groups, so both halves of an output agree."""
    c_out, c_in, kh, kw = weight_shape
    spatial = raster_mask(kh, kw) if isinstance(mask, str) else mask.to("cpu", torch.bool)
    out_channels = torch.arange(c_out)
    if gated:
        out_channels = out_channels % (c_out // 2)
        c_out //= 2
    out_group = out_channels // (c_out // color_groups)
    in_group = torch.arange(c_in) // (c_in // color_groups)
    sees = in_group[None, :] < out_group[:, None]
    if not (isinstance(mask, str) and mask == "A"):
        sees = sees | (in_group[None, :] == out_group[:, None])
    full = spatial.expand(len(out_channels), c_in, kh, kw).clone()
    full[:, :, kh // 2, kw // 2] &= sees
    return full


def masked_conv2d(
    x, weight, bias=None, residual=None, mask="B", color_groups=1, dilation=1, activation=None
):
    """act(conv2d(x, where(M, weight, 0), bias)) (+ residual), stride 1, "same" padding
    d·(k//2)."""
    gated = activation == "gated"
    m = full_mask(weight.shape, mask, color_groups, gated).to(weight.device)
    return conv_with_mask(x, weight, bias, residual, m, dilation, activation)


def conv_with_mask(x, weight, bias, residual, full, dilation, activation):
    """The layer for a given full mask (what the registered op computes). The masked weight is
    where(M, weight, 0), not weight · M: a weight the mask switches off takes no part, so NaN or
    inf there stays out of the result (0 · NaN would be NaN)."""
    kh, kw = weight.shape[2:]
    if x.numel() == 0 or weight.numel() == 0:
        pre = bias_only(x, weight, bias)
    else:
        pre = F.conv2d(
            x,
            torch.where(full, weight, 0),
            bias,
            padding=(dilation * (kh // 2), dilation * (kw // 2)),
            dilation=dilation,
        )
    out = activate(pre, activation)
    return out + residual if residual is not None else out
