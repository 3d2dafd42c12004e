"""ActNorm of Glow (Kingma & Dhariwal, 2018, sec. 3.1, table 1): a per-channel affine map.

For x viewed as (N, C, S), S spatial positions (S = 1 for (N, C) inputs):

    forward:  y = (x + loc[c]) · exp(log_scale[c])        logdet[n] =  S · Σ_c log_scale[c]
    reverse:  y = x · exp(−log_scale[c]) − loc[c]         logdet[n] = −S · Σ_c log_scale[c]

The forward kernel tiles (rows x columns): with S > 1 a row is one (example, channel) pair and the
columns are its S positions, contiguous in memory (CHANNEL_ROWS); with S = 1 a row is an example
and the columns are its channels. The logdet is the same for every example: the first program
sums the C log-scales and writes the N values, after its own tile.

Gradients, summed over the examples n and positions p of each channel (e = exp(±log_scale)):

    forward:  dx = dy · e,   dloc = Σ dy · e,   dlog_scale = Σ dy · y + S · Σ_n dlogdet
    reverse:  dx = dy · e,   dloc = −Σ dy,      dlog_scale = −Σ dy · (y + loc) − S · Σ_n dlogdet

(in reverse, y + loc = x · exp(−log_scale)). The backward kernels write dx and partial sums of
the two channel reductions, the dlogdet term (±S · dlogdet[n] for each pair (n, c)) included, cut
along (N · S) so that they spread over the GPU; `_reduce.sum_splits` adds them up per channel in
a fixed order, or, where one program saw all of a channel (one split of one example), that
program wrote its final sum itself.
"""

import torch
import triton
import triton.language as tl

from ._reduce import partial_sums, sum_splits
from ._runtime import INTERPRETED, cdiv, empty, launch, next_power_of_2, num_programs_target


def _tile(columns):
    """(BLOCK_R, BLOCK_L): small tiles under the interpreter; on a GPU 1024 elements a program,
    rows of up to 512 columns, which give each of 128 threads 16-byte vectors."""
    if INTERPRETED:
        return 4, 16
    block_l = min(512, max(4, next_power_of_2(columns)))
    return 1024 // block_l, block_l


@triton.jit
def _offsets(rows, cols, C, x0, x1, x2, CHANNEL_ROWS: tl.constexpr):
    """(element offsets, channel index) of a (rows x cols) tile of the (N, C, S) view."""
    if CHANNEL_ROWS:
        channel = rows % C
        offsets = (rows // C) * x0 + channel * x1 + cols * x2
    else:
        channel = cols
        offsets = rows * x0 + cols * x1
    return offsets, channel


@triton.jit
def _forward_kernel(
    x,
    loc,
    log_scale,
    y,
    logdet,
    N,
    C,
    SPATIAL,
    ROWS,
    COLS,
    x0,
    x1,
    x2,
    c0,
    s0,
    CHANNEL_ROWS: tl.constexpr,
    REVERSE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    # A 1-D grid of (rows x cols) tiles over (ROWS, COLS): (N·C, S) or (N, C). y is contiguous,
    # so a tile's element (r, l) sits at r·COLS + l.
    pid = tl.program_id(0).to(tl.int64)
    col_blocks = tl.cdiv(COLS, BLOCK_L)
    rows = (pid // col_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    cols = (pid % col_blocks) * BLOCK_L + tl.arange(0, BLOCK_L)[None, :]
    mask = (rows < ROWS) & (cols < COLS)
    offsets, channel = _offsets(rows, cols, C, x0, x1, x2, CHANNEL_ROWS)
    cmask = (rows < ROWS) if CHANNEL_ROWS else (cols < COLS)
    b = tl.load(loc + channel * c0, mask=cmask, other=0.0).to(tl.float32)
    ls = tl.load(log_scale + channel * s0, mask=cmask, other=0.0).to(tl.float32)
    xv = tl.load(x + offsets, mask=mask, other=0.0).to(tl.float32)
    if REVERSE:
        yv = xv * tl.exp(-ls) - b
    else:
        yv = (xv + b) * tl.exp(ls)
    tl.store(y + rows * COLS + cols, yv.to(y.dtype.element_ty), mask=mask)
    if pid == 0:
        acc = tl.zeros((BLOCK_R * BLOCK_L,), dtype=tl.float32)
        for start in range(0, C, BLOCK_R * BLOCK_L):
            c = start + tl.arange(0, BLOCK_R * BLOCK_L)
            acc += tl.load(log_scale + c * s0, mask=c < C, other=0.0).to(tl.float32)
        total = tl.sum(acc, axis=0) * SPATIAL
        if REVERSE:
            total = -total
        value = tl.full((BLOCK_R * BLOCK_L,), 0.0, tl.float32) + total
        for start in range(0, N, BLOCK_R * BLOCK_L):
            n = start + tl.arange(0, BLOCK_R * BLOCK_L)
            tl.store(logdet + n, value.to(logdet.dtype.element_ty), mask=n < N)


@triton.jit
def _grad_terms(dy, xv, b, ls, REVERSE: tl.constexpr):
    """(dx, the dloc term, the dlog_scale term) of one tile, in fp32."""
    if REVERSE:
        e = tl.exp(-ls)
        dx = dy * e
        return dx, -dy, -dx * xv
    e = tl.exp(ls)
    dx = dy * e
    return dx, dx, dx * (xv + b)


@triton.jit
def _logdet_share(grad_logdet, n, mask, l0, SPATIAL, REVERSE: tl.constexpr):
    """The dlogdet term of dlog_scale for examples n: ±S · dlogdet[n] (d logdet[n] / d
    log_scale[c] = ±S for every c), in fp32; 0 where mask is off."""
    share = SPATIAL * tl.load(grad_logdet + n * l0, mask=mask, other=0.0).to(tl.float32)
    if REVERSE:
        share = -share
    return share


@triton.jit
def _backward_rows_kernel(
    grad_y,
    grad_logdet,
    x,
    loc,
    log_scale,
    d_x,
    loc_parts,
    scale_parts,
    C,
    ROWS,
    COLS,
    SPLITS,
    g0,
    g1,
    g2,
    l0,
    x0,
    x1,
    x2,
    c0,
    s0,
    REVERSE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    # S > 1: rows are (example, channel) pairs, columns their positions. One program: BLOCK_R
    # rows over the split-th stretch of the positions; the per-row partial sums go to
    # *_parts[split, rows], i.e. *_parts[split · N + n, c]: (SPLITS · N, C) partial sums of the
    # channels (the sums themselves when SPLITS · N is 1).
    pid = tl.program_id(0).to(tl.int64)
    split = pid % SPLITS
    rows = (pid // SPLITS) * BLOCK_R + tl.arange(0, BLOCK_R)[:, None]
    per_split = tl.cdiv(tl.cdiv(COLS, BLOCK_L), SPLITS) * BLOCK_L
    first = split * per_split
    b = tl.load(loc + (rows % C) * c0, mask=rows < ROWS, other=0.0).to(tl.float32)
    ls = tl.load(log_scale + (rows % C) * s0, mask=rows < ROWS, other=0.0).to(tl.float32)
    loc_acc = tl.zeros((BLOCK_R, BLOCK_L), dtype=tl.float32)
    scale_acc = tl.zeros((BLOCK_R, BLOCK_L), dtype=tl.float32)
    for start in range(first, tl.minimum(first + per_split, COLS), BLOCK_L):
        cols = start + tl.arange(0, BLOCK_L)[None, :]
        mask = (rows < ROWS) & (cols < COLS)
        x_off, _ = _offsets(rows, cols, C, x0, x1, x2, True)
        g_off, _ = _offsets(rows, cols, C, g0, g1, g2, True)
        dy = tl.load(grad_y + g_off, mask=mask, other=0.0).to(tl.float32)
        xv = tl.load(x + x_off, mask=mask, other=0.0).to(tl.float32)
        dx, loc_term, scale_term = _grad_terms(dy, xv, b, ls, REVERSE)
        tl.store(d_x + rows * COLS + cols, dx.to(d_x.dtype.element_ty), mask=mask)
        loc_acc += loc_term  # zero outside the tile: dy was loaded as 0 there
        scale_acc += scale_term
    out_rows = tl.reshape(rows, (BLOCK_R,))
    keep = out_rows < ROWS
    # each row's dlogdet term, S · dlogdet[n], once: by the split that starts the row
    share = _logdet_share(grad_logdet, out_rows // C, keep, l0, COLS, REVERSE)
    share = tl.where(split == 0, share, 0.0)
    tl.store(
        loc_parts + split * ROWS + out_rows,
        tl.sum(loc_acc, axis=1).to(loc_parts.dtype.element_ty),
        mask=keep,
    )
    tl.store(
        scale_parts + split * ROWS + out_rows,
        (tl.sum(scale_acc, axis=1) + share).to(scale_parts.dtype.element_ty),
        mask=keep,
    )


@triton.jit
def _backward_cols_kernel(
    grad_y,
    grad_logdet,
    x,
    loc,
    log_scale,
    d_x,
    loc_parts,
    scale_parts,
    N,
    C,
    SPLITS,
    g0,
    g1,
    l0,
    x0,
    x1,
    c0,
    s0,
    REVERSE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_L: tl.constexpr,
):
    # S = 1: rows are examples, columns channels. One program: BLOCK_L channels over the
    # split-th stretch of the examples; its per-channel partial sums go to *_parts[split, cols]
    # (the sums themselves when SPLITS is 1).
    pid = tl.program_id(0).to(tl.int64)
    split = pid % SPLITS
    cols = (pid // SPLITS) * BLOCK_L + tl.arange(0, BLOCK_L)[None, :]
    per_split = tl.cdiv(tl.cdiv(N, BLOCK_R), SPLITS) * BLOCK_R
    first = split * per_split
    b = tl.load(loc + cols * c0, mask=cols < C, other=0.0).to(tl.float32)
    ls = tl.load(log_scale + cols * s0, mask=cols < C, other=0.0).to(tl.float32)
    loc_acc = tl.zeros((BLOCK_R, BLOCK_L), dtype=tl.float32)
    scale_acc = tl.zeros((BLOCK_R, BLOCK_L), dtype=tl.float32)
    for start in range(first, tl.minimum(first + per_split, N), BLOCK_R):
        rows = start + tl.arange(0, BLOCK_R)[:, None]
        mask = (rows < N) & (cols < C)
        dy = tl.load(grad_y + rows * g0 + cols * g1, mask=mask, other=0.0).to(tl.float32)
        xv = tl.load(x + rows * x0 + cols * x1, mask=mask, other=0.0).to(tl.float32)
        dx, loc_term, scale_term = _grad_terms(dy, xv, b, ls, REVERSE)
        tl.store(d_x + rows * C + cols, dx.to(d_x.dtype.element_ty), mask=mask)
        loc_acc += loc_term
        # each (n, c)'s dlogdet term, S · dlogdet[n] with S = 1; also added in columns past C,
        # whose sums are never stored
        scale_acc += scale_term + _logdet_share(grad_logdet, rows, rows < N, l0, 1, REVERSE)
    out_cols = tl.reshape(cols, (BLOCK_L,))
    keep = out_cols < C
    tl.store(
        loc_parts + split * C + out_cols,
        tl.sum(loc_acc, axis=0).to(loc_parts.dtype.element_ty),
        mask=keep,
    )
    tl.store(
        scale_parts + split * C + out_cols,
        tl.sum(scale_acc, axis=0).to(scale_parts.dtype.element_ty),
        mask=keep,
    )


def actnorm_forward(x, loc, log_scale, reverse):
    """(y, logdet) for x viewed as (N, C, S) and loc, log_scale (C,); y is contiguous (N, C, S)."""
    N, C, S = x.shape
    y = empty((N, C, S), x.dtype, x.device)
    logdet = empty((N,), torch.promote_types(x.dtype, torch.float32), x.device)
    if N * C * S == 0:  # nothing to transform; the logdet, S · Σ_c log_scale, is then 0
        return y, logdet.zero_()
    channel_rows = S > 1
    rows, cols = (N * C, S) if channel_rows else (N, C)
    block_r, block_l = _tile(cols)
    grid = (cdiv(rows, block_r) * cdiv(cols, block_l),)
    launch(
        _forward_kernel,
        grid,
        x,
        loc,
        log_scale,
        y,
        logdet,
        N,
        C,
        S,
        rows,
        cols,
        *x.stride(),
        loc.stride(0),
        log_scale.stride(0),
        CHANNEL_ROWS=channel_rows,
        REVERSE=bool(reverse),
        BLOCK_R=block_r,
        BLOCK_L=block_l,
    )
    return y, logdet


def actnorm_backward(grad_y, grad_logdet, x, loc, log_scale, reverse):
    """(dx, dloc, dlog_scale): dx contiguous (N, C, S), the others (C,)."""
    N, C, S = x.shape
    d_x = empty((N, C, S), x.dtype, x.device)
    d_loc = empty((C,), loc.dtype, x.device)
    d_log_scale = empty((C,), log_scale.dtype, x.device)
    if N * C * S == 0:  # no element: both sums are 0 (S · Σ_n dlogdet too), sums of no part
        for out in (d_loc, d_log_scale):
            sum_splits(partial_sums(out, 0), out)
        return d_x, d_loc, d_log_scale
    target = num_programs_target(x.device)
    if S > 1:
        rows = N * C
        block_r, block_l = _tile(S)
        row_blocks = cdiv(rows, block_r)
        splits = max(1, min(cdiv(S, block_l), target // row_blocks))
        loc_parts, scale_parts = (partial_sums(out, splits * N) for out in (d_loc, d_log_scale))
        launch(
            _backward_rows_kernel,
            (row_blocks * splits,),
            grad_y,
            grad_logdet,
            x,
            loc,
            log_scale,
            d_x,
            loc_parts,
            scale_parts,
            C,
            rows,
            S,
            splits,
            *grad_y.stride(),
            grad_logdet.stride(0),
            *x.stride(),
            loc.stride(0),
            log_scale.stride(0),
            REVERSE=bool(reverse),
            BLOCK_R=block_r,
            BLOCK_L=block_l,
        )
    else:
        block_r, block_l = _tile(C)
        col_blocks = cdiv(C, block_l)
        splits = max(1, min(cdiv(N, block_r), target // col_blocks))
        loc_parts, scale_parts = (partial_sums(out, splits) for out in (d_loc, d_log_scale))
        launch(
            _backward_cols_kernel,
            (col_blocks * splits,),
            grad_y,
            grad_logdet,
            x,
            loc,
            log_scale,
            d_x,
            loc_parts,
            scale_parts,
            N,
            C,
            splits,
            grad_y.stride(0),
            grad_y.stride(1),
            grad_logdet.stride(0),
            x.stride(0),
            x.stride(1),
            loc.stride(0),
            log_scale.stride(0),
            REVERSE=bool(reverse),
            BLOCK_R=block_r,
            BLOCK_L=block_l,
        )
    sum_splits(loc_parts, d_loc)
    sum_splits(scale_parts, d_log_scale)
    return d_x, d_loc, d_log_scale
