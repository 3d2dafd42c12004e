"""Masked 2-D convolution (PixelCNN), computing only the active taps.

    y = act( conv2d(x, where(M, weight, 0), bias, padding=d·(k//2), dilation=d) ) + residual

for a full (C_out, C_in, kh, kw) bool mask M. A 7x7 mask "A" keeps 24 of 49 taps: the caller
lists the taps M leaves active as a tap table (rows (dh·d, dw·d, row·kw + column), see _conv.py),
built once per mask, and the convolution engine of _conv.py runs on the images flattened to
sequences, reading the full weight at those taps' positions only, so no work goes to inactive
taps. Where M also switches off channel pairs at an active tap (colour groups at the centre), the
kernels load M beside the weight, so no weight it switches off is read. The weight gradient comes
back in the full layout, exactly zero off the mask.
"""

from ._conv import Taps, convolution_backward, convolve


def _flat(t):
    """(N, C, H, W) -> (N, C, H·W): images as sequences of their pixels (the same for a
    (C_out, C_in, kh, kw) weight or mask: (C_out, C_in, kh·kw))."""
    return t.reshape(*t.shape[:2], t.shape[2] * t.shape[3]) if t is not None else None


def _taps(table, width):
    return Taps(table.shape[0], table=table, width=width)


def masked_conv2d_forward(x, weight, bias, residual, mask, table, channel_mask, activation):
    """act(conv2d(x, where(mask, weight, 0)) + bias) + residual, over the taps of `table`;
    `activation` a name of _conv.ACTIVATIONS. The kernels load the mask only where it switches
    off channel pairs at an active tap (`channel_mask`, colour groups); else the taps say all."""
    N, _, H, W = x.shape
    y = convolve(
        _flat(x),
        _flat(weight.contiguous()),
        bias,
        1,
        _taps(table, W),
        activation,
        _flat(residual),
        mask=_flat(mask) if channel_mask else None,
    )
    return y.view(N, y.shape[1], H, W)


def masked_conv2d_backward(grad_y, x, weight, bias, mask, table, channel_mask, activation):
    """(dx, dweight, dbias or None) of masked_conv2d_forward's output (a residual's gradient is
    grad_y itself); dweight is exactly zero where the mask is off."""
    dx, dw, db = convolution_backward(
        _flat(grad_y),
        _flat(x),
        _flat(weight.contiguous()),
        bias,
        1,
        _taps(table, x.shape[3]),
        activation,
        mask=_flat(mask) if channel_mask else None,
        keep=_flat(mask),
    )
    return dx.view(x.shape), dw.view(weight.shape), db
