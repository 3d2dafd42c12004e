"""Affine coupling of a normalizing flow, fused with its log-det-Jacobian.

For each example n (a row of the flattened (N, D) input) and each element d, with log s from the
raw scale (RealNVP, Dinh et al. 2017, eq. 7-9; Glow, Kingma & Dhariwal 2018, table 1):

    forward:  y = x · s + shift                  logdet[n] =  Σ_d log s
    reverse:  y = (x − shift) · exp(−log s)      logdet[n] = −Σ_d log s

    SCALE_MAP 0 "exp":        log s = r                       dlog s/dr = 1
    SCALE_MAP 1 "sigmoid":    log s = logsigmoid(r + 2)       dlog s/dr = sigmoid(−(r + 2))
    SCALE_MAP 2 "softclamp":  log s = c · tanh(r / c)         dlog s/dr = 1 − tanh²(r / c)

Where the optional binary mask is set, y = x and log s counts as 0. One pass reads x, shift, r
(and the mask, of batch stride 0 when one mask serves every example) and writes y and the
per-example logdet, a row reduction done in registers and cut into partial sums along D when
there are too few rows to fill the GPU (added up by `_reduce.sum_splits`, in a fixed order).
logsigmoid and tanh are written from exp(−|z|) only, so no intermediate overflows: finite inputs
give finite log s and slopes, never NaN.

The backward pass recomputes s from r (y is not stored) and gives, from dy and dlogdet:

    forward:  dx = dy · s,   dshift = dy,   dr = (dy · x · s + dlogdet) · dlog s/dr
    reverse:  dx = dy · e,   dshift = −dx,  dr = −(dy · y + dlogdet) · dlog s/dr,
              with e = exp(−log s) and y = (x − shift) · e;
    masked:   dx = dy,       dshift = 0,    dr = 0.
"""

import torch
import triton
import triton.language as tl

from ._reduce import partial_sums, sum_splits
from ._runtime import INTERPRETED, cdiv, empty, launch, next_power_of_2, num_programs_target

SCALE_MAPS = {"exp": 0, "sigmoid": 1, "softclamp": 2}


def _tile(d):
    """(BLOCK_N, BLOCK_D): small tiles under the interpreter; on a GPU 1024 elements a program
    (rows of up to 512, fewer and more rows when D is short), which give each of 128 threads
    16-byte vectors."""
    if INTERPRETED:
        return 4, 16
    block_d = min(512, max(16, next_power_of_2(d)))
    return 1024 // block_d, block_d


@triton.jit
def _log1p_small(e):
    """log(1 + e) for e in [0, 1], accurate also where 1 + e rounds to 1 (Goldberg's trick)."""
    u = 1.0 + e
    d = u - 1.0  # e as rounded into u; 0 where u rounds to 1 (then log(1 + e) = e to fp32)
    return tl.where(d == 0.0, e, tl.log(u) * (e / tl.where(d == 0.0, 1.0, d)))


@triton.jit
def _log_scale(r, clamp, SCALE_MAP: tl.constexpr):
    """(log s, dlog s/dr) of the raw scale r, in fp32."""
    if SCALE_MAP == 1:
        z = r + 2.0
        e = tl.exp(-tl.abs(z))  # in (0, 1]: nothing overflows
        log_s = tl.minimum(z, 0.0) - _log1p_small(e)
        slope = tl.where(z >= 0.0, e, 1.0) / (1.0 + e)  # sigmoid(-z)
    elif SCALE_MAP == 2:
        t = r / clamp
        e = tl.exp(-2.0 * tl.abs(t))
        th = (1.0 - e) / (1.0 + e)
        th = tl.where(t < 0.0, -th, th)
        log_s = clamp * th
        slope = 4.0 * e / ((1.0 + e) * (1.0 + e))  # 1 - tanh²
    else:
        log_s = r
        slope = tl.full(r.shape, 1.0, tl.float32)
    return log_s, slope


@triton.jit
def _forward_kernel(
    x,
    shift,
    raw,
    keep_mask,
    y,
    logdet_parts,
    clamp,
    N,
    D,
    SPLITS,
    x0,
    x1,
    t0,
    t1,
    r0,
    r1,
    k0,
    y0,
    SCALE_MAP: tl.constexpr,
    REVERSE: tl.constexpr,
    MASKED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program: BLOCK_N rows over the split-th stretch of D; its logdet partial sums go to
    # logdet_parts[split, rows] (the logdet itself when SPLITS is 1). y is contiguous (N, D).
    pid = tl.program_id(0).to(tl.int64)
    split = pid % SPLITS
    rows = (pid // SPLITS) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    per_split = tl.cdiv(tl.cdiv(D, BLOCK_D), SPLITS) * BLOCK_D
    first = split * per_split
    acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for start in range(first, tl.minimum(first + per_split, D), BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)[None, :]
        mask = (rows < N) & (cols < D)
        xv = tl.load(x + rows * x0 + cols * x1, mask=mask, other=0.0).to(tl.float32)
        tv = tl.load(shift + rows * t0 + cols * t1, mask=mask, other=0.0).to(tl.float32)
        rv = tl.load(raw + rows * r0 + cols * r1, mask=mask, other=0.0).to(tl.float32)
        log_s, _ = _log_scale(rv, clamp, SCALE_MAP)
        if MASKED:
            keep = tl.load(keep_mask + rows * k0 + cols, mask=mask, other=0) != 0
            log_s = tl.where(keep, 0.0, log_s)
        if REVERSE:
            yv = (xv - tv) * tl.exp(-log_s)
        else:
            yv = xv * tl.exp(log_s) + tv
        if MASKED:
            yv = tl.where(keep, xv, yv)
        tl.store(y + rows * y0 + cols, yv.to(y.dtype.element_ty), mask=mask)
        acc += tl.where(mask, log_s, 0.0)
    total = tl.sum(acc, axis=1)
    if REVERSE:
        total = -total
    out_rows = tl.reshape(rows, (BLOCK_N,))
    tl.store(
        logdet_parts + split * N + out_rows,
        total.to(logdet_parts.dtype.element_ty),
        mask=out_rows < N,
    )


@triton.jit
def _backward_kernel(
    grad_y,
    grad_logdet,
    x,
    shift,
    raw,
    keep_mask,
    d_x,
    d_shift,
    d_raw,
    clamp,
    N,
    D,
    g0,
    g1,
    l0,
    x0,
    x1,
    t0,
    t1,
    r0,
    r1,
    k0,
    SCALE_MAP: tl.constexpr,
    REVERSE: tl.constexpr,
    MASKED: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per (rows x cols) tile, on a 1-D grid. The gradients are contiguous (N, D).
    pid = tl.program_id(0).to(tl.int64)
    col_blocks = tl.cdiv(D, BLOCK_D)
    rows = (pid // col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    cols = (pid % col_blocks) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    mask = (rows < N) & (cols < D)
    dy = tl.load(grad_y + rows * g0 + cols * g1, mask=mask, other=0.0).to(tl.float32)
    dl = tl.load(grad_logdet + rows * l0, mask=rows < N, other=0.0).to(tl.float32)
    xv = tl.load(x + rows * x0 + cols * x1, mask=mask, other=0.0).to(tl.float32)
    rv = tl.load(raw + rows * r0 + cols * r1, mask=mask, other=0.0).to(tl.float32)
    log_s, slope = _log_scale(rv, clamp, SCALE_MAP)
    if REVERSE:
        tv = tl.load(shift + rows * t0 + cols * t1, mask=mask, other=0.0).to(tl.float32)
        e = tl.exp(-log_s)
        dx = dy * e
        dt = -dx
        dr = -(dy * ((xv - tv) * e) + dl) * slope
    else:
        s = tl.exp(log_s)
        dx = dy * s
        dt = dy
        dr = (dy * xv * s + dl) * slope
    if MASKED:
        keep = tl.load(keep_mask + rows * k0 + cols, mask=mask, other=0) != 0
        dx = tl.where(keep, dy, dx)
        dt = tl.where(keep, 0.0, dt)
        dr = tl.where(keep, 0.0, dr)
    out = rows * D + cols
    out_ty = d_x.dtype.element_ty
    tl.store(d_x + out, dx.to(out_ty), mask=mask)
    tl.store(d_shift + out, dt.to(out_ty), mask=mask)
    tl.store(d_raw + out, dr.to(out_ty), mask=mask)


def _mask_args(mask, x):
    """(pointer, batch stride) of a bool (1 or N, D) mask, read as bytes; x stands in for none."""
    if mask is None:
        return x, 0
    return mask.view(torch.uint8), (mask.stride(0) if mask.shape[0] > 1 else 0)


def affine_coupling_forward(x, shift, scale_raw, mask, scale_map, reverse, clamp):
    """(y, logdet) for 2-D (N, D) inputs and a contiguous bool mask of shape (1 or N, D)."""
    N, D = x.shape
    y = empty((N, D), x.dtype, x.device)
    logdet = empty((N,), torch.promote_types(x.dtype, torch.float32), x.device)
    if N == 0:
        return y, logdet
    block_n, block_d = _tile(D)
    row_blocks = cdiv(N, block_n)
    # Few rows and long ones: cut D into partial sums until the GPU is full.
    splits = max(1, min(cdiv(D, block_d), num_programs_target(x.device) // row_blocks))
    parts = partial_sums(logdet, splits)
    keep, k0 = _mask_args(mask, x)
    launch(
        _forward_kernel,
        (row_blocks * splits,),
        x,
        shift,
        scale_raw,
        keep,
        y,
        parts,
        float(clamp),
        N,
        D,
        splits,
        *x.stride(),
        *shift.stride(),
        *scale_raw.stride(),
        k0,
        y.stride(0),
        SCALE_MAP=SCALE_MAPS[scale_map],
        REVERSE=bool(reverse),
        MASKED=mask is not None,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    sum_splits(parts, logdet)
    return y, logdet


def affine_coupling_backward(
    grad_y, grad_logdet, x, shift, scale_raw, mask, scale_map, reverse, clamp
):
    """(dx, dshift, dscale_raw), each contiguous (N, D)."""
    N, D = x.shape
    grads = [empty((N, D), x.dtype, x.device) for _ in range(3)]
    if N * D == 0:
        return tuple(grads)
    block_n, block_d = _tile(D)
    keep, k0 = _mask_args(mask, x)
    # dlogdet is read through its stride: logdet.sum()'s gradient is expanded (stride 0), and
    # a contiguous copy of it would be a device op of its own
    launch(
        _backward_kernel,
        (cdiv(N, block_n) * cdiv(D, block_d),),
        grad_y,
        grad_logdet,
        x,
        shift,
        scale_raw,
        keep,
        *grads,
        float(clamp),
        N,
        D,
        *grad_y.stride(),
        grad_logdet.stride(0),
        *x.stride(),
        *shift.stride(),
        *scale_raw.stride(),
        k0,
        SCALE_MAP=SCALE_MAPS[scale_map],
        REVERSE=bool(reverse),
        MASKED=mask is not None,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return tuple(grads)
