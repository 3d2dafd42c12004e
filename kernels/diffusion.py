"""The samplers' steps, fused: DDPM, DDIM and unadjusted Langevin in one elementwise kernel.

Each step is affine in the current sample x, the model's output m and the noise z, with
per-example coefficients that the op computes from the schedule (a table of N rows):

    without clamping:  out = cx·x + cm·m + σ·z
    with clamping:     x0 = clamp(cx·x + cm·m, −s, s) · inv     (clip, dynamic thresholding)
                       out = a0·x0 + ax·x + σ·z

DDPM (Ho et al., 2020, eq. 7), DDIM (Song et al., 2021, eq. 12) and Langevin differ only in the
table (gdm_engine/ops/diffusion.py). One pass reads x, m (and z when given) and writes out:
memory-bound, fp32 arithmetic, 2-D tiles of rows x columns on a 1-D grid, int64 offsets.

z is a given tensor, or drawn in the kernel: element (n, d) takes word d mod 4 of the Philox
draw tl.randn4x(seed, n·ceil(D/4) + d div 4), so one Philox round serves four elements and the
numbers depend on the element's index only, not on the tiling.
"""

import triton
import triton.language as tl

from ._runtime import INTERPRETED, empty, launch

TABLE_COLUMNS = 8  # cx, cm, a0, ax, sigma, s, inv, (unused)
NO_NOISE, GIVEN_NOISE, DRAWN_NOISE = 0, 1, 2


def _tile(d):
    """(BLOCK_N, BLOCK_D): about 1024 elements per program on a GPU (8 fp32 per thread of 128,
    16-byte vectors), 4096 under the interpreter (fewer, larger programs run faster there).
    BLOCK_D is a power of two of at least 4 (the Philox words); short rows stack several."""
    elements = 4096 if INTERPRETED else 1024
    block_d = min(elements, max(4, triton.next_power_of_2(d)))
    return elements // block_d, block_d


@triton.jit
def _normal_noise(seed, rows, col_start, QUADS, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """z for columns col_start + [0, BLOCK_D) of `rows` ([BLOCK_N, 1]), as [BLOCK_N, BLOCK_D]."""
    quads = col_start // 4 + tl.arange(0, BLOCK_D // 4)[None, :]
    z0, z1, z2, z3 = tl.randn4x(seed, rows * QUADS + quads)  # int64 offsets
    # join(join(z0, z2), join(z1, z3))[r, q, a, b] = z(2b + a) lands at column 4q + 2a + b.
    return tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), (BLOCK_N, BLOCK_D))


@triton.jit
def _step_kernel(x, m, noise, table, out, seed, N, D, QUADS, x0s, x1s, m0s, m1s, z0s, z1s,
                 NOISE: tl.constexpr, CLAMP: tl.constexpr, COLUMNS: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    col_blocks = tl.cdiv(D, BLOCK_D)
    rows = (pid // col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    start = (pid % col_blocks) * BLOCK_D
    cols = start + tl.arange(0, BLOCK_D)[None, :]
    row_mask = rows < N
    mask = row_mask & (cols < D)
    coef = table + rows * COLUMNS
    cx = tl.load(coef + 0, mask=row_mask, other=0.0)
    cm = tl.load(coef + 1, mask=row_mask, other=0.0)
    xv = tl.load(x + rows * x0s + cols * x1s, mask=mask, other=0.0).to(tl.float32)
    mv = tl.load(m + rows * m0s + cols * m1s, mask=mask, other=0.0).to(tl.float32)
    if CLAMP:
        a0 = tl.load(coef + 2, mask=row_mask, other=0.0)
        ax = tl.load(coef + 3, mask=row_mask, other=0.0)
        s = tl.load(coef + 5, mask=row_mask, other=1.0)
        inv = tl.load(coef + 6, mask=row_mask, other=1.0)
        x0 = tl.minimum(tl.maximum(cx * xv + cm * mv, -s), s) * inv
        y = a0 * x0 + ax * xv
    else:
        y = cx * xv + cm * mv
    if NOISE != 0:
        sigma = tl.load(coef + 4, mask=row_mask, other=0.0)
        if NOISE == 1:
            z = tl.load(noise + rows * z0s + cols * z1s, mask=mask, other=0.0).to(tl.float32)
        else:
            z = _normal_noise(seed, rows, start, QUADS, BLOCK_N, BLOCK_D)
        y += sigma * z
    tl.store(out + rows * D + cols, y.to(out.dtype.element_ty), mask=mask)


def diffusion_step(x, m, noise, table, seed, clamp, draw):
    """out (N, D), contiguous, for 2-D (N, D) x and m (any strides) and the op's (N, 8) float32
    coefficient table. z is `noise` when given, drawn from `seed` when `draw`, else absent."""
    N, D = x.shape
    out = empty((N, D), x.dtype, x.device)
    if N * D == 0:
        return out
    kind = GIVEN_NOISE if noise is not None else (DRAWN_NOISE if draw else NO_NOISE)
    block_n, block_d = _tile(D)
    z_strides = noise.stride() if noise is not None else (0, 0)
    launch(_step_kernel, (triton.cdiv(N, block_n) * triton.cdiv(D, block_d),),
           x, m, noise if noise is not None else x, table, out, seed, N, D, triton.cdiv(D, 4),
           *x.stride(), *m.stride(), *z_strides, NOISE=kind, CLAMP=clamp,
           COLUMNS=TABLE_COLUMNS, BLOCK_N=block_n, BLOCK_D=block_d)
    return out


__all__ = ["diffusion_step"]
