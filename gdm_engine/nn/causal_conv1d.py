"""CausalConv1d: nn.Conv1d's signature, causal padding, an optional fused activation."""

import math

import torch
from torch import nn

from gdm_engine import ops


class CausalConv1d(nn.Module):
    """Causal dilated 1-D convolution (WaveNet). Input (N, C_in, L), output (N, C_out, L), or
    (N, C_out/2, L) with ``activation="gated"``. Initialised like ``nn.Conv1d``."""

    def __init__(
        self,
        in_channels,
        out_channels,
        kernel_size,
        dilation=1,
        groups=1,
        bias=True,
        activation=None,
        device=None,
        dtype=None,
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
        factory = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(
            torch.empty(out_channels, in_channels // groups, kernel_size, **factory)
        )
        self.bias = nn.Parameter(torch.empty(out_channels, **factory)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        # nn.Conv1d's initialisation: Kaiming-uniform weight, uniform bias in ±1/sqrt(fan_in).
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel()) if self.weight[0].numel() else 0
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        return ops.causal_conv1d(
            x,
            self.weight,
            self.bias,
            dilation=self.dilation,
            groups=self.groups,
            activation=self.activation,
        )

    def extra_repr(self):
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
