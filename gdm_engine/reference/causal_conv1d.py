"""Reference causal dilated 1-D convolution (WaveNet, van den Oord et al., 2016, sec. 2.1)."""

import torch
import torch.nn.functional as F


def activate(pre, activation):
    """Apply None ("none"), "tanh", "relu" or "gated" to pre-activations of shape (N, C, L).

    "gated" is WaveNet's gated activation unit (eq. 2), tanh(a) * sigmoid(b), where a and b are
    the first and second halves of the channels: C channels in, C/2 out.
    """
    if activation == "tanh":
        return torch.tanh(pre)
    if activation == "relu":
        return torch.relu(pre)
    if activation == "gated":
        a, b = pre.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)
    return pre


def bias_only(x, weight, bias):
    """The pre-activation (N, C_out, *positions) of a convolution with nothing to sum, no input
    channels, positions or output channels, which F.conv1d and F.conv2d refuse: the bias alone."""
    pre = x.new_zeros((x.shape[0], weight.shape[0], *x.shape[2:]))
    return pre + bias.view(-1, *[1] * (x.ndim - 2)) if bias is not None else pre


def causal_conv1d(x, weight, bias=None, dilation=1, groups=1, activation=None):
    """y[n, o, t] sees x only at t, t-d, ..., t-(K-1)d: left zero-padding by (K-1)·d."""
    if x.numel() == 0 or weight.numel() == 0:
        return activate(bias_only(x, weight, bias), activation)
    kernel_size = weight.shape[-1]
    padded = F.pad(x, ((kernel_size - 1) * dilation, 0))
    pre = F.conv1d(padded, weight, bias, dilation=dilation, groups=groups)
    return activate(pre, activation)
