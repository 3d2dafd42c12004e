"""Reference affine coupling transform and its log-det-Jacobian (RealNVP and Glow).

An affine coupling layer (Dinh et al., "Density estimation using Real NVP", ICLR 2017, eq. 7-9;
Kingma & Dhariwal, "Glow", NeurIPS 2018, table 1) maps x to

    y = b ⊙ x + (1 − b) ⊙ (x · s + shift),      log|det ∂y/∂x| = Σ (1 − b) ⊙ log s,

where b is a binary mask (entries with b = 1 pass through), and shift and log s are computed by
a network from the passed-through half. Here shift and the raw scale are given; log s is

    "exp":       log s = scale_raw                        (RealNVP: s = exp(scale_raw))
    "sigmoid":   log s = logsigmoid(scale_raw + 2)        (Glow's code: s = sigmoid(h + 2))
    "softclamp": log s = clamp · tanh(scale_raw / clamp)  (a soft clamp: |log s| < clamp)

The reverse direction takes the flow's output and returns its input, y = (x − shift) · exp(−log s)
(a product with exp(−log s), never a division by s), and its log-det is the negated sum.
"""

import math

import torch
import torch.nn.functional as F

SCALE_MAPS = ("exp", "sigmoid", "softclamp")


def log_scale(scale_raw, scale_map="exp", clamp=3.0):
    """log s from the raw scale, per `scale_map` (see the module docstring)."""
    if scale_map == "exp":
        return scale_raw
    if scale_map == "sigmoid":
        # logsigmoid(z) = min(z, 0) − log1p(exp(−|z|)): finite for every finite z
        return F.logsigmoid(scale_raw + 2.0)
    if scale_map == "softclamp":
        return clamp * torch.tanh(scale_raw / clamp)
    raise ValueError(f"scale_map must be one of {SCALE_MAPS}; got {scale_map!r}")


def affine_coupling(x, shift, scale_raw, *, scale_map="exp", mask=None, reverse=False, clamp=3.0):
    """(y, logdet): the coupling transform of x (N, ...) and log|det ∂y/∂x| per example (N,).

    mask (broadcastable to x; bool, or 0/1 numbers): where it is 1 the entry passes through
    (y = x) and adds nothing to logdet. reverse=True inverts the forward map: x is then the flow's
    output, y its input, and logdet the log-det of the inverse (the negated forward sum)."""
    # computed in at least fp32 (as the kernel does), returned in x's dtype: a bf16 log s
    # would carry its rounding into every term of the log-det
    wide = torch.promote_types(x.dtype, torch.float32)
    log_s = log_scale(scale_raw.to(wide), scale_map, clamp)
    keep = None
    if mask is not None:
        keep = (mask != 0).to(x.device)
        log_s = torch.where(keep, torch.zeros_like(log_s), log_s)
    if reverse:
        y = (x - shift) * torch.exp(-log_s)
    else:
        y = x * torch.exp(log_s) + shift
    if keep is not None:
        y = torch.where(keep, x, y)
    y = y.to(x.dtype)
    logdet = log_s.expand(x.shape).reshape(x.shape[0], math.prod(x.shape[1:])).sum(1)
    return y, -logdet if reverse else logdet
