"""Reference ActNorm (Kingma & Dhariwal, "Glow", NeurIPS 2018, sec. 3.1 and table 1).

A per-channel affine map with a data-independent log-det: for x of shape (N, C, *spatial) with
loc and log_scale of shape (C,),

    forward:  y = (x + loc) · exp(log_scale),      logdet = HW · Σ_c log_scale[c]
    reverse:  y = x · exp(−log_scale) − loc,       logdet = −HW · Σ_c log_scale[c]

where HW is the number of spatial positions (1 for (N, C) inputs); logdet has shape (N,), the
same value for every example. (Glow's table 1 writes y = s ⊙ x + b; here s = exp(log_scale) and
b = loc · s, the parameterisation of its code, whose data-dependent init makes y zero-mean.)
"""

import math

import torch


def actnorm(x, loc, log_scale, *, reverse=False):
    """(y, logdet) for x (N, C, ...), loc and log_scale (C,)."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    loc, log_scale = loc.reshape(shape), log_scale.reshape(shape)
    if reverse:
        y = x * torch.exp(-log_scale) - loc
    else:
        y = (x + loc) * torch.exp(log_scale)
    spatial = math.prod(x.shape[2:])
    # log-dets are sums of many terms: at least fp32 whatever the input's precision
    wide = torch.promote_types(x.dtype, torch.float32)
    logdet = (spatial * log_scale.to(wide).sum()).expand(x.shape[0])
    return y, -logdet if reverse else logdet
