"""MaskedConv2d: nn.Conv2d's signature with a PixelCNN mask, colour groups and a fused epilogue."""

import math
from typing import Any, Optional, Union

import torch
from torch import nn

from gdm_engine import ops
from gdm_engine.ops.masked_conv2d import check_layer, mask_and_taps


class MaskedConv2d(nn.Module):
    """Masked 2-D convolution (PixelCNN, van den Oord et al., 2016): stride 1, "same" padding,
    odd kernel size. Input (N, C_in, H, W), output (N, C_out, H, W), or (N, C_out/2, H, W) with
    ``activation="gated"``; ``forward(x, residual=None)`` adds a residual after the activation.
    ``kernel_size`` is an int or an (kh, kw) pair of odd sizes (a Gated PixelCNN's horizontal
    stack is 1 x k). ``mask`` is "A", "B" or a bool (kh, kw) tensor (kept as a buffer).
    Initialised like ``nn.Conv2d``.

    The full mask and the kernels' tap table are built once, when the layer is built or loads a
    state dict, and held as buffers (not saved: they follow from the settings and `mask`), so a
    forward or backward pass launches only the op's kernels and reads nothing back.

    Args:
        in_channels: C_in.
        out_channels: C_out (even with ``activation="gated"``).
        kernel_size: k or (kh, kw), odd.
        mask: "A" (taps strictly before the centre in raster order), "B" (default: those and the
            centre) or a bool (kh, kw) tensor of active taps.
        color_groups: ordered channel groups (RGB) for the centre tap, dividing C_in and C_out
            (per gated half); default 1.
        dilation: the spacing of the taps; default 1.
        bias: learn a bias of C_out entries; default True.
        activation: None, "tanh", "relu" or "gated" (tanh of the first half of the channels times
            sigmoid of the second), fused into the op; default None.
        device: where the parameters are made; default torch's default device.
        dtype: the parameters' dtype; default torch's default dtype.

    Raises:
        TypeError: `color_groups` or `dilation` is not an int, or `mask` neither a string nor a
            bool tensor.
        ValueError: an even kernel size, `mask` a string other than "A" and "B" or a tensor not
            of the kernel's shape, `activation` none of the above, `color_groups` not dividing
            the channels, an odd `out_channels` with "gated", or `color_groups` or `dilation`
            below 1.
    """

    mask: Union[str, torch.Tensor]
    full_mask: torch.Tensor
    taps: torch.Tensor

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, tuple[int, int]],
        mask: Union[str, torch.Tensor] = "B",
        color_groups: int = 1,
        dilation: int = 1,
        bias: bool = True,
        activation: Optional[str] = None,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
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
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels, *self.kernel_size, **factory)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()
        self._prepare()
        self.register_load_state_dict_post_hook(_prepare_after_load)

    def _prepare(self) -> None:
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

    def reset_parameters(self) -> None:
        """nn.Conv2d's initialisation: Kaiming-uniform weight, uniform bias in
        ±1/sqrt(fan_in)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The masked convolution, the activation, then the residual, by the fused op
        `gdm_engine.ops.masked_conv2d`.

        Args:
            x: (N, C_in, H, W).
            residual: added after the activation, shaped like the output; default None (none).

        Returns:
            (N, C_out, H, W), or (N, C_out/2, H, W) with ``activation="gated"``.
        """
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

    def masked_weight(self) -> torch.Tensor:
        """The weight where M, the full mask (taps and colour groups) the layer applies, is on;
        zero elsewhere.

        Returns:
            A (C_out, C_in, kh, kw) tensor like the weight.
        """
        return torch.where(self.full_mask, self.weight, 0)

    def extra_repr(self) -> str:
        """The settings that differ from the defaults, for the module's repr."""
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


def _prepare_after_load(module: MaskedConv2d, incompatible_keys: Any) -> None:
    """A loaded mask may differ from the one the buffers were built from (a named function, so
    that the layer pickles)."""
    module._prepare()
