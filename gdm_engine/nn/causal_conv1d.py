"""CausalConv1d: nn.Conv1d's signature, causal padding, an optional fused activation."""

import math
from typing import Any, Optional, Union

import torch
from torch import nn

from gdm_engine import ops


class CausalConv1d(nn.Module):
    """Causal dilated 1-D convolution (WaveNet, van den Oord et al., 2016). Input (N, C_in, L),
    output (N, C_out, L), or (N, C_out/2, L) with ``activation="gated"``. Initialised like
    ``nn.Conv1d``.

    Args:
        in_channels: C_in.
        out_channels: C_out (even with ``activation="gated"``).
        kernel_size: K, the taps; output position t sees t, t-d, ..., t-(K-1)d.
        dilation: d, the spacing of the taps; default 1.
        groups: blocked connections between input and output channels, as nn.Conv1d; default 1.
        bias: learn a bias of C_out entries; default True.
        activation: None, "tanh", "relu" or "gated" (tanh of the first half of the channels times
            sigmoid of the second), fused into the op; default None.
        device: where the parameters are made; default torch's default device.
        dtype: the parameters' dtype; default torch's default dtype.

    Raises:
        ValueError: `groups` does not divide `in_channels` or `out_channels`.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        activation: Optional[str] = None,
        device: Optional[Union[torch.device, str]] = None,
        dtype: Optional[torch.dtype] = None,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"groups={groups} must divide in_channels ({in_channels}) and "
                f"out_channels ({out_channels})"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation, self.groups = kernel_size, dilation, groups
        self.activation = activation
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, **factory)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Conv1d's initialisation: Kaiming-uniform weight, uniform bias in
        ±1/sqrt(fan_in)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel()) if self.weight[0].numel() else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The causal convolution, then the activation, by the fused op
        `gdm_engine.ops.causal_conv1d`.

        Args:
            x: (N, C_in, L).

        Returns:
            (N, C_out, L), or (N, C_out/2, L) with ``activation="gated"``.
        """
        return ops.causal_conv1d(
            x,
            self.weight,
            self.bias,
            dilation=self.dilation,
            groups=self.groups,
            activation=self.activation,
        )

    def extra_repr(self) -> str:
        """The settings that differ from the defaults, for the module's repr."""
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.dilation != 1:
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.activation is not None:
            text += f", activation={self.activation!r}"
        return text
