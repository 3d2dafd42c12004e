"""Masked 2-D convolution (PixelCNN), computing only the active taps.

    y = act( conv2d(x, weight * M, bias, padding=d·(k//2), dilation=d) ) + residual

for a full (C_out, C_in, kh, kw) mask M. A 7x7 mask "A" keeps 24 of 49 taps: the launcher lists
the taps M leaves active as a table of (dh, dw) pixel offsets, packs the weight of those taps
alone as (C_out, C_in, T), and runs the convolution engine of _conv.py on the images flattened to
sequences, so no work and no weight memory go to inactive taps. The weight gradient comes back in
the same packed form and is scattered into the full layout, masked: exactly zero off the mask.
"""

import torch

from ._conv import Taps, convolution_backward, convolve


def _active_taps(mask, dilation, width):
    """(rows, cols, Taps) of the taps where any channel pair is active, in raster order. A mask
    with none (a 1x1 "A" without colour groups) gets one tap of zero weight."""
    kh, kw = mask.shape[2:]
    active = mask.any(1).any(0)
    if not active.any():
        active = torch.zeros_like(active)
        active[kh // 2, kw // 2] = True
    rows, cols = active.nonzero(as_tuple=True)
    table = torch.stack([(rows - kh // 2) * dilation, (cols - kw // 2) * dilation], 1)
    return rows, cols, Taps(len(rows), table=table.to(torch.int32).contiguous(), width=width)


def _packed(weight, mask, rows, cols):
    """The weight of the active taps, with M applied: (C_out, C_in, T)."""
    return (weight * mask.to(weight.dtype))[:, :, rows, cols]


def _flat(t):
    """(N, C, H, W) -> (N, C, H·W): images as sequences of their pixels."""
    return t.reshape(*t.shape[:2], t.shape[2] * t.shape[3]) if t is not None else None


def masked_conv2d_forward(x, weight, bias, residual, mask, dilation, activation):
    """act(conv2d(x, weight * mask) + bias) + residual; `activation` a name of _conv.ACTIVATIONS."""
    N, _, H, W = x.shape
    rows, cols, taps = _active_taps(mask, dilation, W)
    y = convolve(_flat(x), _packed(weight, mask, rows, cols), bias, 1, taps, activation,
                 _flat(residual))
    return y.view(N, y.shape[1], H, W)


def masked_conv2d_backward(grad_y, x, weight, bias, residual, mask, dilation, activation):
    """(dx, dweight, dbias or None, dresidual or None) of masked_conv2d_forward's output."""
    rows, cols, taps = _active_taps(mask, dilation, x.shape[3])
    dx, packed_grad, db = convolution_backward(_flat(grad_y), _flat(x),
                                               _packed(weight, mask, rows, cols), bias, 1, taps,
                                               activation)
    dweight = torch.zeros_like(weight)
    dweight[:, :, rows, cols] = packed_grad
    dweight *= mask.to(weight.dtype)  # exactly zero at inactive taps and masked channel pairs
    return dx.view(x.shape), dweight, db, grad_y if residual is not None else None
