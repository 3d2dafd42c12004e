"""The samplers' steps and the training loss of diffusion models, fused.

Every step (DDPM, DDIM, Euler, Heun, DPM-Solver++(2M), Langevin, and q_sample) is affine in
the current sample x, the model's output m, a second output m2 (Heun's model output at the Euler
point, DPM-Solver++'s previous denoised estimate) and the noise z, with per-example
coefficients that the op computes from the schedule (a table of N rows):

    guidance (optional):  M = u + g·(m − u), M2 = u2 + g·(m2 − u2)   (classifier-free guidance)
    without clamping:     out = cx·x + cm·M + c2·M2 + σ·z
    with clamping:        x0 = clamp(cx·x + cm·M, −s, s) · inv          (clip, dynamic thresholding)
                          out = a0·x0 + ax·x + σ·z
    denoised (optional):  second output dx·x + dm·M                       (DPM-Solver++'s D)

The schedules differ only in the table (gdm_engine/ops/diffusion.py). One pass reads x, m (and
u, m2, u2, z where present) and writes out: memory-bound, fp32 arithmetic, 2-D tiles of rows x
columns on a 1-D grid, int64 offsets.

z is a given tensor, or drawn in the kernel: element (n, d) takes word d mod 4 of the Philox
draw tl.randn4x(seed, n·ceil(D/4) + d div 4), so one Philox round serves four elements and the
numbers depend on the element's index only, not on the tiling.

The loss kernels read the model output m, x0 and ε and reduce (m − target)² per example, with
target = tx·x0 + tz·ε (ε, x0 or v), into partial sums over column blocks; the backward kernel
writes dL/dm = c·(m − target) in one more pass.
"""

import torch
import triton
import triton.language as tl

from ._runtime import INTERPRETED, empty, launch

TABLE_COLUMNS = 16
# columns of the step table (the op stacks its coefficients in this order)
STEP_COLUMNS = ("cx", "cm", "c2", "a0", "ax", "sigma", "s", "inv", "g", "dx", "dm")
CX, CM, C2, A0, AX = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2), tl.constexpr(3), \
    tl.constexpr(4)
SIGMA, S, INV, G, DX, DM = (tl.constexpr(i) for i in range(5, 11))
# columns of the loss table: the target's coefficients, and the backward's per-example factor
LOSS_COLUMNS = ("tx", "tz", "grad")
TX, TZ, GRAD = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
NO_NOISE, GIVEN_NOISE, DRAWN_NOISE = 0, 1, 2


def _tile(d):
    """(BLOCK_N, BLOCK_D): about 1024 elements per program on a GPU (8 fp32 per thread of 128,
    16-byte vectors), 4096 under the interpreter (fewer, larger programs run faster there).
    BLOCK_D is a power of two of at least 4 (the Philox words); short rows stack several, up to
    128 (more would spill the per-row coefficients of Heun's step on sm_90)."""
    elements = 4096 if INTERPRETED else 1024
    block_d = min(elements, max(4, triton.next_power_of_2(d)))
    # at most 128 rows (one per thread): each row holds its coefficients in registers
    return min(elements // block_d, 128), block_d


@triton.jit
def _tile_of(pid, N, D, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rows ([BLOCK_N, 1]), first column, columns ([1, BLOCK_D]) and masks of program pid."""
    col_blocks = tl.cdiv(D, BLOCK_D)
    rows = (pid // col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    start = (pid % col_blocks) * BLOCK_D
    cols = start + tl.arange(0, BLOCK_D)[None, :]
    row_mask = rows < N
    return rows, start, cols, row_mask, row_mask & (cols < D)


@triton.jit
def _load(ptr, rows, cols, s0, s1, mask):
    return tl.load(ptr + rows * s0 + cols * s1, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _guided_load(c, u, rows, cols, c0s, c1s, u0s, u1s, mask, g, GUIDED: tl.constexpr):
    """The model output at the tile, or u + g·(c − u) when guided (Ho & Salimans, 2022)."""
    out = _load(c, rows, cols, c0s, c1s, mask)
    if GUIDED:
        uv = _load(u, rows, cols, u0s, u1s, mask)
        out = uv + g * (out - uv)
    return out


@triton.jit
def _normal_noise(seed, rows, col_start, QUADS, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """z for columns col_start + [0, BLOCK_D) of `rows` ([BLOCK_N, 1]), as [BLOCK_N, BLOCK_D]."""
    quads = col_start // 4 + tl.arange(0, BLOCK_D // 4)[None, :]
    z0, z1, z2, z3 = tl.randn4x(seed, rows * QUADS + quads)  # int64 offsets
    # join(join(z0, z2), join(z1, z3))[r, q, a, b] = z(2b + a) lands at column 4q + 2a + b.
    return tl.reshape(tl.join(tl.join(z0, z2), tl.join(z1, z3)), (BLOCK_N, BLOCK_D))


@triton.jit
def _step_kernel(x, m, u, m2, u2, noise, table, out, denoised, seed, N, D, QUADS,
                 x0s, x1s, m0s, m1s, u0s, u1s, n0s, n1s, v0s, v1s, z0s, z1s,
                 NOISE: tl.constexpr, CLAMP: tl.constexpr, GUIDED: tl.constexpr,
                 SECOND: tl.constexpr, GUIDED2: tl.constexpr, DENOISED: tl.constexpr,
                 COLUMNS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    rows, start, cols, row_mask, mask = _tile_of(pid, N, D, BLOCK_N, BLOCK_D)
    coef = table + rows * COLUMNS
    cx = tl.load(coef + CX, mask=row_mask, other=0.0)
    cm = tl.load(coef + CM, mask=row_mask, other=0.0)
    g = tl.load(coef + G, mask=row_mask, other=1.0)
    xv = _load(x, rows, cols, x0s, x1s, mask)
    mv = _guided_load(m, u, rows, cols, m0s, m1s, u0s, u1s, mask, g, GUIDED)
    if CLAMP:
        a0 = tl.load(coef + A0, mask=row_mask, other=0.0)
        ax = tl.load(coef + AX, mask=row_mask, other=0.0)
        s = tl.load(coef + S, mask=row_mask, other=1.0)
        inv = tl.load(coef + INV, mask=row_mask, other=1.0)
        x0 = tl.minimum(tl.maximum(cx * xv + cm * mv, -s), s) * inv
        y = a0 * x0 + ax * xv
    else:
        y = cx * xv + cm * mv
    if SECOND:
        c2 = tl.load(coef + C2, mask=row_mask, other=0.0)
        m2v = _guided_load(m2, u2, rows, cols, n0s, n1s, v0s, v1s, mask, g, GUIDED2)
        y += c2 * m2v
    if NOISE != 0:
        sigma = tl.load(coef + SIGMA, mask=row_mask, other=0.0)
        if NOISE == 1:
            z = _load(noise, rows, cols, z0s, z1s, mask)
        else:
            z = _normal_noise(seed, rows, start, QUADS, BLOCK_N, BLOCK_D)
        y += sigma * z
    tl.store(out + rows * D + cols, y.to(out.dtype.element_ty), mask=mask)
    if DENOISED:
        dx = tl.load(coef + DX, mask=row_mask, other=0.0)
        dm = tl.load(coef + DM, mask=row_mask, other=0.0)
        tl.store(denoised + rows * D + cols, (dx * xv + dm * mv).to(denoised.dtype.element_ty),
                 mask=mask)


def _strides(t):
    return t.stride() if t is not None else (0, 0)


def diffusion_step(x, m, table, seed=0, *, noise=None, draw=False, clamp=False, uncond=None,
                   second=None, uncond_second=None, store_denoised=False):
    """out (N, D), contiguous, for 2-D (N, D) inputs (any strides) and the op's (N, 16) float32
    coefficient table; with `store_denoised`, (out, denoised). z is `noise` when given, drawn
    from `seed` when `draw`, else absent."""
    N, D = x.shape
    out = empty((N, D), x.dtype, x.device)
    denoised = empty((N, D), x.dtype, x.device) if store_denoised else None
    if N * D > 0:
        kind = GIVEN_NOISE if noise is not None else (DRAWN_NOISE if draw else NO_NOISE)
        block_n, block_d = _tile(D)
        tensors = (uncond, second, uncond_second, noise)
        launch(_step_kernel, (triton.cdiv(N, block_n) * triton.cdiv(D, block_d),),
               x, m, *(t if t is not None else x for t in tensors), table, out,
               denoised if store_denoised else out, seed, N, D, triton.cdiv(D, 4),
               *x.stride(), *m.stride(), *(s for t in tensors for s in _strides(t)),
               NOISE=kind, CLAMP=clamp, GUIDED=uncond is not None, SECOND=second is not None,
               GUIDED2=uncond_second is not None, DENOISED=store_denoised,
               COLUMNS=TABLE_COLUMNS, BLOCK_N=block_n, BLOCK_D=block_d)
    return (out, denoised) if store_denoised else out


@triton.jit
def _loss_error(m, x0, eps, table, N, D, m0s, m1s, x0s, x1s, e0s, e1s, COLUMNS: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """m − target on program's tile (0 outside), and the tile's rows, first column, columns and
    masks."""
    pid = tl.program_id(0).to(tl.int64)
    rows, start, cols, row_mask, mask = _tile_of(pid, N, D, BLOCK_N, BLOCK_D)
    coef = table + rows * COLUMNS
    tx = tl.load(coef + TX, mask=row_mask, other=0.0)
    tz = tl.load(coef + TZ, mask=row_mask, other=0.0)
    error = (_load(m, rows, cols, m0s, m1s, mask) - tx * _load(x0, rows, cols, x0s, x1s, mask)
             - tz * _load(eps, rows, cols, e0s, e1s, mask))
    return error, rows, start, cols, row_mask, mask


@triton.jit
def _loss_kernel(m, x0, eps, table, partial, N, D, m0s, m1s, x0s, x1s, e0s, e1s,
                 COLUMNS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """partial[n, column block] = Σ over the block's columns of (m − target)²."""
    error, rows, start, cols, row_mask, mask = _loss_error(
        m, x0, eps, table, N, D, m0s, m1s, x0s, x1s, e0s, e1s, COLUMNS, BLOCK_N, BLOCK_D)
    total = tl.sum(error * error, axis=1)  # masked elements are 0 − 0 − 0
    col_blocks = tl.cdiv(D, BLOCK_D)
    tl.store(partial + tl.reshape(rows, (BLOCK_N,)) * col_blocks + start // BLOCK_D, total,
             mask=tl.reshape(row_mask, (BLOCK_N,)))


@triton.jit
def _loss_backward_kernel(m, x0, eps, table, grad, N, D, m0s, m1s, x0s, x1s, e0s, e1s,
                          COLUMNS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """grad[n, d] = c_n · (m − target)[n, d]."""
    error, rows, start, cols, row_mask, mask = _loss_error(
        m, x0, eps, table, N, D, m0s, m1s, x0s, x1s, e0s, e1s, COLUMNS, BLOCK_N, BLOCK_D)
    c = tl.load(table + rows * COLUMNS + GRAD, mask=row_mask, other=0.0)
    tl.store(grad + rows * D + cols, (c * error).to(grad.dtype.element_ty), mask=mask)


def _loss_launch(kernel, m, x0, eps, table, result, block_n, block_d):
    N, D = m.shape
    launch(kernel, (triton.cdiv(N, block_n) * triton.cdiv(D, block_d),),
           m, x0, eps, table, result, N, D, *m.stride(), *x0.stride(), *eps.stride(),
           COLUMNS=TABLE_COLUMNS, BLOCK_N=block_n, BLOCK_D=block_d)


def loss_partial_sums(m, x0, eps, table):
    """(N, column blocks) float32 partial sums of (m − target)² for 2-D (N, D) inputs."""
    N, D = m.shape
    block_n, block_d = _tile(D)
    partial = empty((N, triton.cdiv(D, block_d)), torch.float32, m.device)
    if N * D > 0:
        _loss_launch(_loss_kernel, m, x0, eps, table, partial, block_n, block_d)
    return partial


def loss_backward(m, x0, eps, table):
    """dL/dm (N, D), contiguous, with the per-example factor in the table's GRAD column."""
    N, D = m.shape
    grad = empty((N, D), m.dtype, m.device)
    if N * D > 0:
        _loss_launch(_loss_backward_kernel, m, x0, eps, table, grad, *_tile(D))
    return grad


__all__ = ["diffusion_step", "loss_backward", "loss_partial_sums"]
