"""MaskedConv2d: nn.Conv2d's signature with a PixelCNN mask, colour groups and a fused epilogue."""

import math

import torch
from torch import nn

from gdm_engine import ops
from gdm_engine.ops.masked_conv2d import check_layer, mask_and_taps


class MaskedConv2d(nn.Module):
    """Masked 2-D convolution (PixelCNN): stride 1, "same" padding, odd kernel size. Input
    (N, C_in, H, W), output (N, C_out, H, W), or (N, C_out/2, H, W) with ``activation="gated"``;
    ``forward(x, residual=None)`` adds a residual after the activation. ``kernel_size`` is an int
    or an (kh, kw) pair of odd sizes (a Gated PixelCNN's horizontal stack is 1 x k). ``mask`` is
    "A", "B" or a bool (kh, kw) tensor (kept as a buffer). Initialised like ``nn.Conv2d``.

    The full mask and the kernels' tap table are built once, when the layer is built or loads a
    state dict, and held as buffers (not saved: they follow from the settings and `mask`), so a
    forward or backward pass launches only the op's kernels and reads nothing back."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        mask="B",
        color_groups=1,
        dilation=1,
        bias=True,
        activation=None,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        if isinstance(kernel_size, int):
            kernel_size = (kernel_size, kernel_size)
        self.kernel_size = tuple(kernel_size)
        self.color_groups, self.dilation = color_groups, dilation
        self.activation = activation
        check_layer(
            (out_channels, in_channels, *self.kernel_size), mask, color_groups, dilation, activation
        )
        self.mask_kind = mask if isinstance(mask, str) else "custom"
        if isinstance(mask, torch.Tensor):
            self.register_buffer("mask", mask.clone())
        else:
            self.mask = mask
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, *self.kernel_size, **factory)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()
        self._prepare()
        self.register_load_state_dict_post_hook(_prepare_after_load)

    def _prepare(self):
        """(Re)build the buffers `full_mask` and `taps`, and `channel_mask`, from the settings
        and `mask`."""
        full, taps, self.channel_mask = mask_and_taps(
            self.weight.shape,
            self.mask,
            self.color_groups,
            self.activation == "gated",
            self.dilation,
            self.weight.device,
        )
        self.register_buffer("full_mask", full, persistent=False)
        self.register_buffer("taps", taps, persistent=False)

    def reset_parameters(self):
        # nn.Conv2d's initialisation: Kaiming-uniform weight, uniform bias in ±1/sqrt(fan_in).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x, residual=None):
        return ops.masked_conv2d(
            x,
            self.weight,
            self.bias,
            residual,
            mask=self.mask,
            color_groups=self.color_groups,
            dilation=self.dilation,
            activation=self.activation,
            prepared=(self.full_mask, self.taps, self.channel_mask),
        )

    def masked_weight(self):
        """The weight where M, the full mask (taps and colour groups) the layer applies, is on;
        zero elsewhere."""
        return torch.where(self.full_mask, self.weight, 0)

    def extra_repr(self):
        kh, kw = self.kernel_size
        size = kh if kh == kw else self.kernel_size
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={size}, mask={self.mask_kind!r}"
        )
        if self.color_groups != 1:
            text += f", color_groups={self.color_groups}"
        if self.dilation != 1:
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        if self.activation is not None:
            text += f", activation={self.activation!r}"
        return text


def _prepare_after_load(module, incompatible_keys):
    """A loaded mask may differ from the one the buffers were built from (a named function, so
    that the layer pickles)."""
    module._prepare()
