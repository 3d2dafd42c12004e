"""The VAE's Gaussian posterior step, fused: reparameterised sample and KL to the prior.

For each example n with posterior N(mu, diag(exp(log_var))) over D latent dimensions
(Kingma & Welling, 2014, sec. 2.4 and appendix B), with s = exp(log_var / 2):

    z[n, d]  = mu[n, d] + s[n, d] * eps[n, d]
    kl[n]    = 1/2 * sum_d ( mu² + s² - 1 - log_var )

One pass reads mu, log_var (and eps when given) and writes z and kl: the per-example KL is a
row reduction done in registers. When there are too few rows to fill the GPU, rows are cut into
partial sums along D, which `_reduce.sum_splits` adds up in a fixed order (the same KL every run,
and no other device op). s is exp(log_var / 2), never sqrt(exp(log_var)), which overflows
above log_var ≈ 88.

eps is either a given tensor or drawn in the kernel: element (n, d) takes word d mod 4 of the
Philox draw tl.randn4x(seed, n·ceil(D/4) + d div 4), so one Philox round serves four elements and
the numbers do not depend on the tiling. The backward pass draws the same eps again from the seed
instead of storing it. The seed is never specialised on (`do_not_specialize`): Triton would
otherwise compile a new variant for a seed equal to 1 or divisible by 16. Its gradients:

    dmu      = dz + dkl * mu
    dlog_var = dz * eps * s / 2 + dkl * (s² - 1) / 2
    deps     = dz * s
"""

import triton
import triton.language as tl

from ._reduce import partial_sums, sum_splits
from ._runtime import INTERPRETED, cdiv, empty, launch, num_programs_target


def _tile():
    """(BLOCK_N, BLOCK_D): small tiles under the interpreter; on a GPU 2 rows of 512, which give
    each of 128 threads 16-byte vectors. BLOCK_D is a multiple of 4 (the Philox words)."""
    return (4, 16) if INTERPRETED else (2, 512)


@triton.jit
def _normal_noise(seed, rows, col_start, QUADS, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """eps for columns col_start + [0, BLOCK_D) of `rows` ([BLOCK_N, 1]), as [BLOCK_N, BLOCK_D]."""
    quads = col_start // 4 + tl.arange(0, BLOCK_D // 4)[None, :]
    n0, n1, n2, n3 = tl.randn4x(seed, rows * QUADS + quads)  # int64 offsets: no wrap-around
    # join(join(n0, n2), join(n1, n3))[r, q, a, b] = n(2b + a) sits at column 4q + 2a + b.
    return tl.reshape(tl.join(tl.join(n0, n2), tl.join(n1, n3)), (BLOCK_N, BLOCK_D))


@triton.jit
def _exp_minus_1_minus(x):
    """e^x − 1 − x without cancellation: its Taylor series to x^8 where |x| < 0.5 (truncation
    below 4e-8 relative), the plain difference elsewhere (there the result is at least 0.1).
    In the KL's s² − 1 − log_var, a log-variance near 0 would otherwise cancel to noise."""
    series = (
        x
        * x
        * (
            1 / 2
            + x
            * (
                1 / 6
                + x * (1 / 24 + x * (1 / 120 + x * (1 / 720 + x * (1 / 5040 + x * (1 / 40320)))))
            )
        )
    )
    return tl.where(tl.abs(x) < 0.5, series, tl.exp(x) - 1.0 - x)


@triton.jit
def _load_tile(
    mean,
    log_var,
    noise,
    seed,
    rows,
    cols,
    col_start,
    mask,
    QUADS,
    m0,
    m1,
    l0,
    l1,
    e0,
    e1,
    GIVEN_NOISE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """mu, log_var and eps of one (rows x cols) tile, in fp32."""
    mu = tl.load(mean + rows * m0 + cols * m1, mask=mask, other=0.0).to(tl.float32)
    lv = tl.load(log_var + rows * l0 + cols * l1, mask=mask, other=0.0).to(tl.float32)
    if GIVEN_NOISE:
        eps = tl.load(noise + rows * e0 + cols * e1, mask=mask, other=0.0).to(tl.float32)
    else:
        eps = _normal_noise(seed, rows, col_start, QUADS, BLOCK_N, BLOCK_D)
    return mu, lv, eps


@triton.jit(do_not_specialize=["seed"])
def _forward_kernel(
    mean,
    log_var,
    noise,
    z,
    kl_parts,
    seed,
    N,
    D,
    QUADS,
    SPLITS,
    m0,
    m1,
    l0,
    l1,
    e0,
    e1,
    z0,
    z1,
    GIVEN_NOISE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program: BLOCK_N rows over the split-th stretch of D; its KL partial sums go to
    # kl_parts[split, rows] (the kl output itself when SPLITS is 1).
    pid = tl.program_id(0).to(tl.int64)
    split = pid % SPLITS
    rows = (pid // SPLITS) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    per_split = tl.cdiv(tl.cdiv(D, BLOCK_D), SPLITS) * BLOCK_D
    first = split * per_split
    kl_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for start in range(first, tl.minimum(first + per_split, D), BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)[None, :]
        mask = (rows < N) & (cols < D)
        mu, lv, eps = _load_tile(
            mean,
            log_var,
            noise,
            seed,
            rows,
            cols,
            start,
            mask,
            QUADS,
            m0,
            m1,
            l0,
            l1,
            e0,
            e1,
            GIVEN_NOISE,
            BLOCK_N,
            BLOCK_D,
        )
        s = tl.exp(0.5 * lv)
        tl.store(z + rows * z0 + cols * z1, (mu + s * eps).to(z.dtype.element_ty), mask=mask)
        kl_acc += tl.where(mask, mu * mu + _exp_minus_1_minus(lv), 0.0)
    out_rows = tl.reshape(rows, (BLOCK_N,))
    kl = (0.5 * tl.sum(kl_acc, axis=1)).to(kl_parts.dtype.element_ty)
    tl.store(kl_parts + split * N + out_rows, kl, mask=out_rows < N)


@triton.jit(do_not_specialize=["seed"])
def _backward_kernel(
    grad_z,
    grad_kl,
    mean,
    log_var,
    noise,
    d_mean,
    d_log_var,
    d_noise,
    seed,
    N,
    D,
    QUADS,
    m0,
    m1,
    l0,
    l1,
    e0,
    e1,
    g0,
    g1,
    k0,
    GIVEN_NOISE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per (rows x cols) tile, on a 1-D grid (no 65,535 limit). Inputs may be strided;
    # the gradients are allocated contiguous (N, D).
    pid = tl.program_id(0).to(tl.int64)
    col_blocks = tl.cdiv(D, BLOCK_D)
    rows = (pid // col_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    start = (pid % col_blocks) * BLOCK_D
    cols = start + tl.arange(0, BLOCK_D)[None, :]
    mask = (rows < N) & (cols < D)
    mu, lv, eps = _load_tile(
        mean,
        log_var,
        noise,
        seed,
        rows,
        cols,
        start,
        mask,
        QUADS,
        m0,
        m1,
        l0,
        l1,
        e0,
        e1,
        GIVEN_NOISE,
        BLOCK_N,
        BLOCK_D,
    )
    dz = tl.load(grad_z + rows * g0 + cols * g1, mask=mask, other=0.0).to(tl.float32)
    dkl = tl.load(grad_kl + rows * k0, mask=rows < N, other=0.0).to(tl.float32)
    s = tl.exp(0.5 * lv)
    out = rows * D + cols
    out_ty = d_mean.dtype.element_ty
    # one rounding (fma): dz and dkl · mu may nearly cancel
    tl.store(d_mean + out, tl.fma(dkl, mu, dz).to(out_ty), mask=mask)
    s2_minus_1 = _exp_minus_1_minus(lv) + lv  # expm1(log_var), accurate near 0
    tl.store(d_log_var + out, (0.5 * (dz * eps * s + dkl * s2_minus_1)).to(out_ty), mask=mask)
    if GIVEN_NOISE:
        tl.store(d_noise + out, (dz * s).to(out_ty), mask=mask)


def _strides(t):
    return t.stride() if t is not None else (0, 0)


def gaussian_reparam_kl_forward(mean, log_var, noise, seed):
    """(z, kl) for 2-D (N, D) inputs; eps is `noise`, or drawn from `seed` when noise is None."""
    N, D = mean.shape
    z = empty((N, D), mean.dtype, mean.device)
    if N == 0:
        return z, empty((0,), mean.dtype, mean.device)
    block_n, block_d = _tile()
    row_blocks = cdiv(N, block_n)
    # Few rows and long ones: cut D into partial sums until the GPU is full.
    splits = max(1, min(cdiv(D, block_d), num_programs_target(mean.device) // row_blocks))
    kl = empty((N,), mean.dtype, mean.device)
    kl_parts = partial_sums(kl, splits)
    launch(
        _forward_kernel,
        (row_blocks * splits,),
        mean,
        log_var,
        noise if noise is not None else mean,
        z,
        kl_parts,
        seed,
        N,
        D,
        cdiv(D, 4),
        splits,
        *mean.stride(),
        *log_var.stride(),
        *_strides(noise),
        *z.stride(),
        GIVEN_NOISE=noise is not None,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    sum_splits(kl_parts, kl)
    return z, kl


def gaussian_reparam_kl_backward(grad_z, grad_kl, mean, log_var, noise, seed):
    """(dmean, dlog_var, dnoise); dnoise is None when the noise was drawn from `seed`."""
    N, D = mean.shape
    d_mean, d_log_var = (empty((N, D), mean.dtype, mean.device) for _ in range(2))
    d_noise = empty((N, D), mean.dtype, mean.device) if noise is not None else None
    if N * D == 0:
        return d_mean, d_log_var, d_noise
    block_n, block_d = _tile()
    launch(
        _backward_kernel,
        (cdiv(N, block_n) * cdiv(D, block_d),),
        grad_z,
        grad_kl,
        mean,
        log_var,
        noise if noise is not None else mean,
        d_mean,
        d_log_var,
        d_noise if d_noise is not None else d_mean,
        seed,
        N,
        D,
        cdiv(D, 4),
        *mean.stride(),
        *log_var.stride(),
        *_strides(noise),
        *grad_z.stride(),
        grad_kl.stride(0),
        GIVEN_NOISE=noise is not None,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return d_mean, d_log_var, d_noise
