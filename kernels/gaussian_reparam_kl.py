"""The VAE's Gaussian posterior step, fused: reparameterised sample and KL to the prior.

For each example n with posterior N(mu, diag(exp(log_var))) over D latent dimensions
(Kingma & Welling, 2014, sec. 2.4 and appendix B):

    z[n, d]  = mu[n, d] + exp(log_var[n, d] / 2) * eps[n, d]
    kl[n]    = 1/2 * sum_d ( mu² + exp(log_var) - 1 - log_var )

One pass reads mu, log_var (and eps when given) and writes z and kl: the per-example KL is a
row reduction done in registers. eps is either a given tensor or drawn in the kernel with
tl.randn(seed, element index); the backward pass draws the same eps again from the seed instead
of storing it. Its gradients, with s = exp(log_var / 2):

    dmu      = dz + dkl * mu
    dlog_var = dz * eps * s / 2 + dkl * (s² - 1) / 2
    deps     = dz * s
"""

import triton
import triton.language as tl

from ._buffers import INTERPRETED, empty


def _tile(rows):
    """(BLOCK_N, BLOCK_D): small tiles under the interpreter, wide rows on a GPU."""
    if INTERPRETED:
        return 4, 16
    return (4 if rows >= 4096 else 1), 256


@triton.jit
def _load_row_tile(mean, log_var, noise, seed, rows, cols, mask, D, m0, m1, l0, l1, e0, e1,
                   GIVEN_NOISE: tl.constexpr):
    """mu, log_var and eps of one (rows x cols) tile, in fp32."""
    mu = tl.load(mean + rows * m0 + cols * m1, mask=mask, other=0.0)
    lv = tl.load(log_var + rows * l0 + cols * l1, mask=mask, other=0.0)
    if GIVEN_NOISE:
        eps = tl.load(noise + rows * e0 + cols * e1, mask=mask, other=0.0)
        eps = eps.to(tl.float32)
    else:
        eps = tl.randn(seed, rows * D + cols)  # int64 element index: no wrap-around
    return mu.to(tl.float32), lv.to(tl.float32), eps


@triton.jit
def _forward_kernel(mean, log_var, noise, z, kl, seed, N, D,
                    m0, m1, l0, l1, e0, e1, z0, z1,
                    GIVEN_NOISE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    kl_acc = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)[None, :].to(tl.int64)
        mask = (rows < N) & (cols < D)
        mu, lv, eps = _load_row_tile(mean, log_var, noise, seed, rows, cols, mask, D, m0, m1, l0,
                                     l1, e0, e1, GIVEN_NOISE)
        var = tl.exp(lv)
        tl.store(z + rows * z0 + cols * z1, mu + tl.sqrt(var) * eps, mask=mask)
        kl_acc += tl.where(mask, mu * mu + var - 1.0 - lv, 0.0)
    row_kl = 0.5 * tl.sum(kl_acc, axis=1)
    out_rows = tl.reshape(rows, (BLOCK_N,))
    tl.store(kl + out_rows, row_kl, mask=out_rows < N)


@triton.jit
def _backward_kernel(grad_z, grad_kl, mean, log_var, noise, d_mean, d_log_var, d_noise, seed,
                     N, D, m0, m1, l0, l1, e0, e1, g0, g1,
                     GIVEN_NOISE: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    # Inputs may be strided; the gradients are allocated contiguous (N, D).
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    cols = tl.program_id(1).to(tl.int64) * BLOCK_D + tl.arange(0, BLOCK_D)[None, :]
    mask = (rows < N) & (cols < D)
    mu, lv, eps = _load_row_tile(mean, log_var, noise, seed, rows, cols, mask, D, m0, m1, l0, l1,
                                 e0, e1, GIVEN_NOISE)
    dz = tl.load(grad_z + rows * g0 + cols * g1, mask=mask, other=0.0).to(tl.float32)
    dkl = tl.load(grad_kl + rows, mask=rows < N, other=0.0).to(tl.float32)
    scale = tl.exp(0.5 * lv)
    out = rows * D + cols
    tl.store(d_mean + out, dz + dkl * mu, mask=mask)
    tl.store(d_log_var + out, 0.5 * (dz * eps * scale + dkl * (scale * scale - 1.0)), mask=mask)
    if GIVEN_NOISE:
        tl.store(d_noise + out, dz * scale, mask=mask)


def _strides(t):
    return t.stride() if t is not None else (0, 0)


def gaussian_reparam_kl_forward(mean, log_var, noise, seed):
    """(z, kl) for 2-D (N, D) inputs; eps is `noise`, or drawn from `seed` when noise is None."""
    N, D = mean.shape
    z = empty((N, D), mean.dtype, mean.device)
    kl = empty((N,), mean.dtype, mean.device)
    if N == 0:
        return z, kl
    block_n, block_d = _tile(N)
    _forward_kernel[(triton.cdiv(N, block_n),)](
        mean, log_var, noise if noise is not None else mean, z, kl, seed, N, D,
        *mean.stride(), *log_var.stride(), *_strides(noise), *z.stride(),
        GIVEN_NOISE=noise is not None, BLOCK_N=block_n, BLOCK_D=block_d)
    return z, kl


def gaussian_reparam_kl_backward(grad_z, grad_kl, mean, log_var, noise, seed):
    """(dmean, dlog_var, dnoise); dnoise is None when the noise was drawn from `seed`."""
    N, D = mean.shape
    d_mean, d_log_var = (empty((N, D), mean.dtype, mean.device) for _ in range(2))
    d_noise = empty((N, D), mean.dtype, mean.device) if noise is not None else None
    if N * D == 0:
        return d_mean, d_log_var, d_noise
    block_n, block_d = _tile(N)
    grad_kl = grad_kl.contiguous()
    _backward_kernel[(triton.cdiv(N, block_n), triton.cdiv(D, block_d))](
        grad_z, grad_kl, mean, log_var, noise if noise is not None else mean, d_mean, d_log_var,
        d_noise if d_noise is not None else d_mean, seed, N, D,
        *mean.stride(), *log_var.stride(), *_strides(noise), *grad_z.stride(),
        GIVEN_NOISE=noise is not None, BLOCK_N=block_n, BLOCK_D=block_d)
    return d_mean, d_log_var, d_noise

