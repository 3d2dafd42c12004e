"""Glow's activation normalisation as an invertible layer, over the fused op `actnorm`."""

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from gdm_engine import ops
from gdm_engine._validation import check_int
from gdm_engine.ops.outputs import FlowOutput

from .invertible import InvertibleLayer


class ActNorm(InvertibleLayer):
    """y = (x + loc) * exp(log_scale) per channel (Kingma & Dhariwal, 2018, sec. 3.1), on
    (N, C, ...) inputs. Data-dependent initialisation: the first forward pass in training mode
    sets loc and log_scale so that its batch comes out with zero mean and unit variance per
    channel (statistics averaged over every process under torch.distributed, so that all ranks
    start alike); before that the layer is the identity. logdet = (positions) * sum log_scale.

    Whether the layer is initialised is a Python bool, `is_initialized`, so that forward decides
    without reading the device (a bool tensor in an `if` would stall a GPU at every call). The
    `initialized` buffer records it in the state dict, so checkpoints save and resume it:
    `initialize` sets both, and loading a state dict sets the bool from the loaded buffer.

    Args:
        channels: C, the number of channels (dimension 1 of the input).
        eps: added to the batch's standard deviation at initialisation; default 1e-6.

    Raises:
        TypeError: `channels` is not an int.
        ValueError: `channels` is below 1.
    """

    initialized: torch.Tensor

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        check_int("channels", channels, 1)
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))
        self.is_initialized = False
        self.register_load_state_dict_pre_hook(ActNorm._restore_is_initialized)

    def extra_repr(self) -> str:
        """The channel count, for the module's repr."""
        return f"channels={len(self.loc)}"

    def _restore_is_initialized(
        self, state_dict: Mapping[str, Any], prefix: str, *args: Any
    ) -> None:
        # read once per load, from the state dict (a checkpoint loads to the CPU), never in a step
        key = prefix + "initialized"
        if key in state_dict:
            self.is_initialized = bool(state_dict[key])

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Set loc and log_scale from the batch x, so that it comes out with zero mean and unit
        variance per channel (over every process under torch.distributed), and mark the layer
        initialised.

        Args:
            x: the batch, (N, C, ...).
        """
        dims = [0, *range(2, x.ndim)]
        flat = x.detach().float()
        moments = torch.stack([flat.mean(dims), flat.square().mean(dims)])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(moments)
            moments /= dist.get_world_size()
        mean, mean_sq = moments
        std = (mean_sq - mean.square()).clamp_min(0).sqrt()
        self.loc.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialized.fill_(True)
        self.is_initialized = True

    def forward(self, x: torch.Tensor) -> FlowOutput:
        """y = (x + loc) * exp(log_scale), after the data-dependent initialisation on the first
        training batch of more than one example.

        Args:
            x: (N, C, ...).

        Returns:
            FlowOutput: y shaped like x, and logdet (N,).
        """
        if self.training and not self.is_initialized and len(x) > 1:
            self.initialize(x)
        return ops.actnorm(x, self.loc.to(x.dtype), self.log_scale.to(x.dtype))

    def inverse(self, y: torch.Tensor) -> FlowOutput:
        """x = y * exp(-log_scale) - loc.

        Args:
            y: (N, C, ...).

        Returns:
            FlowOutput: x shaped like y, and the inverse's logdet (N,), minus forward's.
        """
        return ops.actnorm(y, self.loc.to(y.dtype), self.log_scale.to(y.dtype), reverse=True)
