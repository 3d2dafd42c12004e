"""Partial sums added up on the device, deterministically: what a split reduction shares.

A kernel that reduces along a long axis, with too few rows to fill the GPU, cuts the axis into
splits and writes one partial sum per (split, output element): a (K, R) fp32 buffer for R
outputs. `sum_splits` adds each column up with a second, small kernel, in a fixed order (a loop
over K in tiles, then one tile's tree, both fixed by the launch), so the same inputs give the same
sums on every run: no atomics. Where one partial sum is the whole sum (K = 1), the kernel writes
it straight into the output instead (`partial_sums` hands it the output), and `sum_splits` then
launches nothing.

    parts = partial_sums(out, splits)     # out itself when splits == 1
    launch(reducing_kernel, ..., parts, ...)
    sum_splits(parts, out)                # out[r] = Σ_k parts[k, r], cast to out's dtype
"""

import torch
import triton
import triton.language as tl

from ._runtime import INTERPRETED, cdiv, empty, launch, next_power_of_2


def _tile(columns):
    """(BLOCK_K, BLOCK_R): small tiles under the interpreter; on a GPU 2048 elements a program
    and iteration, rows of up to 512 columns, which give each of 128 threads 16-byte vectors.
    Several partial sums (rows) a tile, not one: the loop over K is as short as it can be, and
    a tile's loads are in flight together instead of one dependent load an iteration."""
    if INTERPRETED:
        return 4, 16
    block_r = min(512, max(4, next_power_of_2(columns)))
    return 2048 // block_r, block_r


@triton.jit
def _sum_splits_kernel(
    parts, out, keep, K, R, HAS_KEEP: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr
):
    # One program: BLOCK_R columns of the contiguous (K, R) parts, summed over all K rows;
    # columns that `keep` switches off are 0, their parts (never written) not read.
    cols = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R)
    summed = cols < R
    if HAS_KEEP:
        summed = summed & (tl.load(keep + cols, mask=cols < R, other=0) != 0)
    acc = tl.zeros((BLOCK_K, BLOCK_R), dtype=tl.float32)
    for start in range(0, K, BLOCK_K):
        ks = (start + tl.arange(0, BLOCK_K)[:, None]).to(tl.int64)  # K · R may pass 2³¹
        acc += tl.load(
            parts + ks * R + cols[None, :], mask=(ks < K) & summed[None, :], other=0.0
        ).to(tl.float32)
    tl.store(out + cols, tl.sum(acc, axis=0).to(out.dtype.element_ty), mask=cols < R)


def partial_sums(out, splits):
    """Where a kernel writes `splits` partial sums of each element of the contiguous `out`:
    out itself when there is one (the kernel's sum is then final), else a new (splits,
    out.numel()) fp32 buffer for `sum_splits` (splits = 0 too: no part, sums of 0)."""
    if splits == 1:
        return out
    return empty((splits, out.numel()), torch.float32, out.device)


def sum_splits(parts, out, keep=None):
    """out[r] = Σ_k parts[k, r] for the contiguous (K, R) `parts` of `partial_sums(out, K)`,
    added in fp32 in a fixed order and cast to out's dtype; K = 0 writes zeros, and so does a
    column r where the (R,) byte tensor `keep` is 0 (its parts are not read). Nothing to do
    when parts is out (one split, already written)."""
    if parts is out or out.numel() == 0:
        return
    splits, columns = parts.shape
    block_k, block_r = _tile(columns)
    launch(
        _sum_splits_kernel,
        (cdiv(columns, block_r),),
        parts,
        out,
        keep if keep is not None else parts,
        splits,
        columns,
        HAS_KEEP=keep is not None,
        BLOCK_K=block_k,
        BLOCK_R=block_r,
    )
