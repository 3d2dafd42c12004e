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
    # computed in at least fp32 (as the kernel does) and rounded once to x's dtype: in fp16,
    # x · exp(−log_scale) rounded before − loc loses the digits of a y near 0; a log-det sums
    # many terms and stays in at least fp32
    wide = torch.promote_types(x.dtype, torch.float32)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    loc, log_scale = loc.to(wide).reshape(shape), log_scale.to(wide).reshape(shape)
    if reverse:
        y = x.to(wide) * torch.exp(-log_scale) - loc
    else:
        y = (x.to(wide) + loc) * torch.exp(log_scale)
    logdet = (math.prod(x.shape[2:]) * log_scale.sum()).expand(x.shape[0])
    return y.to(x.dtype), -logdet if reverse else logdet
