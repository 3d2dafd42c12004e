"""MaskedConv2d: nn.Conv2d's signature with a PixelCNN mask, colour groups and a fused epilogue."""

import math

import torch
from torch import nn

from gdm_engine import ops
from gdm_engine.reference.masked_conv2d import full_mask


class MaskedConv2d(nn.Module):
    """Masked 2-D convolution (PixelCNN): stride 1, "same" padding, odd kernel size. Input
    (N, C_in, H, W), output (N, C_out, H, W), or (N, C_out/2, H, W) with ``activation="gated"``;
    ``forward(x, residual=None)`` adds a residual after the activation. ``kernel_size`` is an int
    or an (kh, kw) pair of odd sizes (a Gated PixelCNN's horizontal stack is 1 x k). ``mask`` is
    "A", "B" or a bool (kh, kw) tensor (kept as a buffer). Initialised like ``nn.Conv2d``."""

    def __init__(self, in_channels, out_channels, kernel_size, mask="B", color_groups=1,
                 dilation=1, bias=True, activation=None, device=None, dtype=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        if isinstance(kernel_size, int):
            kernel_size = (kernel_size, kernel_size)
        self.kernel_size = tuple(kernel_size)
        self.color_groups, self.dilation = color_groups, dilation
        self.activation = activation
        self.mask_kind = mask if isinstance(mask, str) else "custom"
        if isinstance(mask, torch.Tensor):
            self.register_buffer("mask", mask.clone())
        else:
            self.mask = mask
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size,
                                               **factory))
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv2d's initialisation: Kaiming-uniform weight, uniform bias in ±1/sqrt(fan_in).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, residual=None):
        return ops.masked_conv2d(x, self.weight, self.bias, residual, mask=self.mask,
                                 color_groups=self.color_groups, dilation=self.dilation,
                                 activation=self.activation)

    def masked_weight(self):
        """weight * M, with M the full mask (taps and colour groups) that the layer applies."""
        full = full_mask(self.weight.shape, self.mask, self.color_groups,
                         self.activation == "gated")
        return self.weight * full.to(self.weight.device, self.weight.dtype)

    def extra_repr(self):
        kh, kw = self.kernel_size
        size = kh if kh == kw else self.kernel_size
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={size}, "
                f"mask={self.mask_kind!r}")
        if self.color_groups != 1:
            text += f", color_groups={self.color_groups}"
        if self.dilation != 1:
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        if self.activation is not None:
            text += f", activation={self.activation!r}"
        return text
