"""Causal dilated 1-D convolution: the layer of WaveNet (van den Oord et al., 2016, sec. 2.1).

    y[n, o, t] = act( b[o] + sum_{i, k} w[o, i, k] * x[n, g(o)·C_in_g + i, t - (K-1-k)·d] )

with x taken as zero before t = 0, so position t sees only t, t-d, ..., t-(K-1)d. No padded copy of
x is made: taps that fall before the sequence start are masked loads. The kernels (a tensor-core
form for dense groups, a direct form with unrolled taps for depthwise and small groups) are the
convolution engine in _conv.py, with causal taps; the backward pass launches only kernels (its
weight gradient's partial sums are added by one of them, in a fixed order).
"""

from ._conv import Taps, convolution_backward, convolve


def causal_conv1d_forward(x, weight, bias, dilation, groups, activation):
    """y = act(causal_conv1d(x, weight, bias)); `activation` is a name of _conv.ACTIVATIONS."""
    return convolve(x, weight, bias, groups, Taps(weight.shape[2], dilation), activation)


def causal_conv1d_backward(grad_y, x, weight, bias, dilation, groups, activation):
    """Gradients (dx, dweight, dbias or None) of causal_conv1d_forward's output."""
    return convolution_backward(
        grad_y, x, weight, bias, groups, Taps(weight.shape[2], dilation), activation
    )
