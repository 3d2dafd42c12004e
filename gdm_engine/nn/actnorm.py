"""Glow's activation normalisation as an invertible layer, over the fused op `actnorm`."""

import torch
import torch.distributed as dist
from torch import nn

from gdm_engine import ops
from gdm_engine.ops._checks import check_int

from .invertible import InvertibleLayer


class ActNorm(InvertibleLayer):
    """y = (x + loc) * exp(log_scale) per channel (Kingma & Dhariwal, 2018, sec. 3.1), on
    (N, C, ...) inputs. Data-dependent initialisation: the first forward pass in training mode
    sets loc and log_scale so that its batch comes out with zero mean and unit variance per
    channel (statistics averaged over every process under torch.distributed, so that all ranks
    start alike); before that the layer is the identity. logdet = (positions) * sum log_scale."""

    def __init__(self, channels, eps=1e-6):
        super().__init__()
        check_int("channels", channels, 1)
        self.eps = eps
        self.loc = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def extra_repr(self):
        return f"channels={len(self.loc)}"

    @torch.no_grad()
    def initialize(self, x):
        """Set loc and log_scale from the batch x."""
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

    def forward(self, x):
        if self.training and not self.initialized and len(x) > 1:
            self.initialize(x)
        return ops.actnorm(x, self.loc.to(x.dtype), self.log_scale.to(x.dtype))

    def inverse(self, y):
        return ops.actnorm(y, self.loc.to(y.dtype), self.log_scale.to(y.dtype), reverse=True)
