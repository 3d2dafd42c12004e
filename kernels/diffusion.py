"""The samplers' steps and the training loss of diffusion models, fused: each call is one kernel.

Every step (DDPM, DDIM, Euler, Heun, DPM-Solver++(2M), Langevin, q_sample and its gradient) is
affine in the current sample x, the model's output m, a second output m2 (Heun's model output at
the Euler point, DPM-Solver++'s previous denoised estimate) and the noise z, with per-example
coefficients that the kernel forms itself, in float64, from the schedule values of its row:

    guidance (optional):  M = u + g·(m − u), M2 = u2 + g·(m2 − u2)   (classifier-free guidance)
    without clamping:     out = cx·x + cm·M + c2·M2 + σ·z
    with clamping:        x0 = cx·x + cm·M (the model's x0), x̂0 = clamp(x0, −b, b) / s
                          out = a0·x̂0 + ax·x + au·x0 + σ·z
    second (optional):    out2 = dx·x + dm·M (DPM-Solver++'s D; q_sample's gradient of ε)

Up to three schedule values (ᾱ_t and ᾱ_prev, σ and σ_next and σ_prev, a step size) come from one
SOURCE: SCALAR, float64 kernel arguments (a float schedule: exact, no device tensor at all);
PER_ROW, (N,) tensors read once per row; or INDEXED, a loop's (steps, 6) float64 table read at the
step that a device counter names, seed included (so a captured CUDA graph replays every step). Two
more factors, in_scale and out_scale, let a sampler loop keep its samples in the model's own
(variance-preserving) scaling: the σ-form step then reads x·in_scale and writes out·out_scale.

z is a given tensor, or drawn in the kernel from a seed that is a kernel argument never
specialised on, or read from the table (INDEXED loops): element (n, d) takes word d mod 4 of
the Philox draw tl.randn4x(seed, n·ceil(D/4) + d div 4), so one Philox
round serves four elements and the numbers depend on the element's index only, not on the tiling.

The loss kernel reads the model output m, x0 and ε and reduces w_n / D · Σ (m − target)² over
each of its rows, target = tx·x0 + tz·ε (ε, x0 or v); the backward kernel writes dL/dm (and, when
asked, dL/dx0 and dL/dε) in one more pass. Memory-bound, fp32 arithmetic per element, 2-D tiles
of rows x columns on a 1-D grid, int64 offsets.
"""

import functools

import torch
import triton
import triton.language as tl

from ._runtime import INTERPRETED, cdiv, empty, launch, next_power_of_2

# what a step computes (KIND), what the model predicts, where the schedule comes from
KINDS = ("ddpm", "ddim", "euler", "heun", "dpmpp_2m", "langevin", "q_sample", "q_sample_grad")
DDPM, DDIM, EULER, HEUN, DPMPP, LANGEVIN, Q_SAMPLE, Q_SAMPLE_GRAD = (
    tl.constexpr(i) for i in range(8)
)
PREDICTIONS = ("eps", "x0", "v")
EPS, X0, V = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
SCALAR, PER_ROW, INDEXED = 0, 1, 2
NO_NOISE, GIVEN_NOISE, DRAWN_NOISE = 0, 1, 2
NO_CLAMP, CLIP, THRESHOLD = 0, 1, 2
# columns of a loop's INDEXED table: the three schedule values, in_scale, out_scale and the seed
TABLE_COLUMNS = tl.constexpr(6)


@functools.cache
def _tile(d):
    """(BLOCK_N, BLOCK_D): about 1024 elements per program on a GPU (8 fp32 per thread of 128,
    16-byte vectors), 4096 under the interpreter (fewer, larger programs run faster there).
    BLOCK_D is a power of two of at least 4 (the Philox words); short rows stack several, up to
    128 (more would spill the per-row coefficients of Heun's step on sm_90)."""
    elements = 4096 if INTERPRETED else 1024
    block_d = min(elements, max(4, next_power_of_2(d)))
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
def _float64(scalar):
    """A float64 scalar argument as a float64 value: Triton's interpreter hands such arguments
    over as Python floats, which would become fp32 in the first jit function they reach."""
    return tl.full((), 1.0, tl.float64) * scalar


@triton.jit
def _value(scalar, ptr, stride, column, rows, row_mask, step, SOURCE: tl.constexpr):
    """A schedule value as float64: the scalar, the row's entry (of a tensor of any stride, 0
    for an expanded value), or the loop table's at `step`."""
    if SOURCE == 0:
        return _float64(scalar)
    elif SOURCE == 1:
        return tl.load(ptr + rows * stride, mask=row_mask, other=0.5).to(tl.float64)
    else:
        return tl.load(ptr + step * TABLE_COLUMNS + column).to(tl.float64)


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
def _x0_coefficients(a, PREDICTION: tl.constexpr):
    """(cx, cm) with x0 = cx·x_t + cm·model_output in the VP form x_t = √ᾱ x0 + √(1 − ᾱ) ε."""
    if PREDICTION == 0:  # eps: x0 = (x_t − √(1 − ᾱ) ε) / √ᾱ   (Ho et al., 2020, eq. 4)
        return 1.0 / tl.sqrt(a), -tl.sqrt(1.0 - a) / tl.sqrt(a)
    elif PREDICTION == 1:
        return a * 0.0, a * 0.0 + 1.0
    else:  # v: x0 = √ᾱ x_t − √(1 − ᾱ) v   (Salimans & Ho, 2022, sec. 4)
        return tl.sqrt(a), -tl.sqrt(1.0 - a)


@triton.jit
def _denoised_coefficients(sigma, PREDICTION: tl.constexpr):
    """(dx, dm) with D(x; σ) = dx·x + dm·model_output in the σ form x = x0 + σ ε."""
    if PREDICTION == 0:
        return sigma * 0.0 + 1.0, -sigma
    elif PREDICTION == 1:
        return sigma * 0.0, sigma * 0.0 + 1.0
    else:  # v of the VP-scaled input x / √(1 + σ²)
        return 1.0 / (1.0 + sigma * sigma), -sigma / tl.sqrt(1.0 + sigma * sigma)


@triton.jit
def _coefficients(
    v0,
    v1,
    v2,
    eta,
    noise_level,
    KIND: tl.constexpr,
    PREDICTION: tl.constexpr,
    FIXED_LARGE: tl.constexpr,
    FOLD: tl.constexpr,
    CLIPPED_EPS: tl.constexpr,
    SECOND: tl.constexpr,
):
    """(cx, cm, c2, a0, ax, au, sigma, dx, dm) of the step KIND from its schedule values, in
    float64 (see the module docstring for what each multiplies). `noise_level` is Euler's and
    Heun's s_noise·√((1 + γ)² − 1) of the churn, `eta` DDIM's. FOLD (no clamp, and the step
    rather than x0 wanted): DDPM's and DDIM's x0 folded into (cx, cm) of the step."""
    zero = v0 * 0.0
    cx, cm, c2, a0, ax, au, sigma, dx, dm = zero, zero, zero, zero, zero, zero, zero, zero, zero
    if KIND == 0 or KIND == 1:  # DDPM, DDIM: v0 = ᾱ_t, v1 = ᾱ_prev
        a, a_prev = v0, v1
        cx, cm = _x0_coefficients(a, PREDICTION)
        if KIND == 0:  # Ho et al. (2020), eq. 7 and sec. 3.2; β_t = 1 − ᾱ_t/ᾱ_prev
            beta = (a_prev - a) / a_prev
            a0 = tl.sqrt(a_prev) * beta / (1.0 - a)
            ax = tl.sqrt(a / a_prev) * (1.0 - a_prev) / (1.0 - a)
            var = beta if FIXED_LARGE else (1.0 - a_prev) / (1.0 - a) * beta
            sigma = tl.where(a_prev == 1.0, 0.0, tl.sqrt(tl.maximum(var, 0.0)))
        else:  # Song et al. (2021), eq. 12 and 16
            sigma = (
                eta
                * tl.sqrt((1.0 - a_prev) / (1.0 - a))
                * tl.sqrt(tl.maximum((a_prev - a) / a_prev, 0.0))
            )
            direction = tl.sqrt(tl.maximum(1.0 - a_prev - sigma * sigma, 0.0))
            # x_{t−1} = √ᾱ_prev x̂0 + d ε̂ + σ z, ε̂ = (x_t − √ᾱ_t x0) / √(1 − ᾱ_t): the model's ε
            # (from the unclamped x0) unless CLIPPED_EPS, where ε̂ comes from the clamped x̂0
            a0 = tl.sqrt(a_prev)
            ax = direction / tl.sqrt(1.0 - a)
            if FOLD or CLIPPED_EPS:
                a0 = a0 - direction * tl.sqrt(a) / tl.sqrt(1.0 - a)
            else:
                au = -direction * tl.sqrt(a) / tl.sqrt(1.0 - a)
        if FOLD:  # x0 folded into the step: one linear combination
            cx, cm = a0 * cx + ax, a0 * cm
    elif KIND == 2 or KIND == 3 or KIND == 4:  # the σ form: v0 = σ, v1 = σ_next, v2 = σ_prev
        s, s_next = v0, v1
        dx, dm = _denoised_coefficients(s, PREDICTION)
        ratio = s_next / s
        if KIND == 2:  # Euler: x' = x + (σ_next − σ)(x − D)/σ (Karras et al., 2022, Alg. 1)
            cx, cm = ratio + (1.0 - ratio) * dx, (1.0 - ratio) * dm
            sigma = noise_level * s_next
        elif KIND == 3:  # Heun: x' = x + h/2 (d + d'), d' at the Euler point x_e (Alg. 2)
            h = s_next - s
            dx_next, dm_next = _denoised_coefficients(s_next, PREDICTION)
            ex, em = 1.0 + h * (1.0 - dx) / s, -h * dm / s  # x_e = ex·x + em·M
            slope = (1.0 - dx_next) / s_next  # d' per unit of x_e
            cx = 1.0 + h / 2 * ((1.0 - dx) / s + slope * ex)
            cm = h / 2 * (-dm / s + slope * em)
            c2 = -h / 2 * dm_next / s_next
            sigma = noise_level * s_next
        else:  # DPM-Solver++(2M), Lu et al. (2022), Alg. 2: D̄ = (1 + k) D − k D_prev
            k = zero
            if SECOND:  # k = 1/2r = h / (2 h_prev); 0 (first order) where σ_next = 0
                k = tl.where(s_next > 0.0, tl.log(s / s_next) / (2.0 * tl.log(v2 / s)), 0.0)
            combined = (1.0 - ratio) * (1.0 + k)
            cx, cm, c2 = ratio + combined * dx, combined * dm, -(1.0 - ratio) * k
    elif KIND == 5:  # Langevin: x + h/2 score + √h z (Song & Ermon, 2019, eq. 4)
        cx, cm, sigma = zero + 1.0, v0 / 2, tl.sqrt(v0)
    elif KIND == 6:  # q_sample: √ᾱ x0 + √(1 − ᾱ) ε
        cx, cm = tl.sqrt(v0), tl.sqrt(1.0 - v0)
    else:  # q_sample's gradient: out = √ᾱ g (for x0), out2 = √(1 − ᾱ) g (for ε)
        cx, dm = tl.sqrt(v0), tl.sqrt(1.0 - v0)
    return cx, cm, c2, a0, ax, au, sigma, dx, dm


@triton.jit(do_not_specialize=["seed"])
def _step_kernel(
    x,
    m,
    u,
    m2,
    u2,
    noise,
    out,
    out2,
    threshold_scale,
    p0,
    p1,
    p2,
    state,
    v0: tl.float64,
    v1: tl.float64,
    v2: tl.float64,
    in_scale: tl.float64,
    out_scale: tl.float64,
    eta: tl.float64,
    noise_level: tl.float64,
    g,
    clip,
    seed: tl.int64,
    N,
    D,
    QUADS,
    p0s,
    p1s,
    p2s,
    x0s,
    x1s,
    m0s,
    m1s,
    u0s,
    u1s,
    n0s,
    n1s,
    v0s,
    v1s,
    z0s,
    z1s,
    KIND: tl.constexpr,
    PREDICTION: tl.constexpr,
    FIXED_LARGE: tl.constexpr,
    SOURCE: tl.constexpr,
    NOISE: tl.constexpr,
    CLAMP: tl.constexpr,
    CLIPPED_EPS: tl.constexpr,
    OUTPUT_X0: tl.constexpr,
    GUIDED: tl.constexpr,
    SECOND: tl.constexpr,
    GUIDED2: tl.constexpr,
    OUT2: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows, start, cols, row_mask, mask = _tile_of(pid, N, D, BLOCK_N, BLOCK_D)
    in_scale, out_scale = _float64(in_scale), _float64(out_scale)
    eta, noise_level = _float64(eta), _float64(noise_level)
    step = 0
    if SOURCE == 2:  # a loop's step lives on the device: its row holds scales and seed
        step = tl.load(state)
        in_scale = tl.load(p0 + step * TABLE_COLUMNS + 3)
        out_scale = tl.load(p0 + step * TABLE_COLUMNS + 4)
        seed = tl.load(p0 + step * TABLE_COLUMNS + 5).to(tl.int64)
    s0 = _value(v0, p0, p0s, 0, rows, row_mask, step, SOURCE)
    s1 = _value(v1, p1, p1s, 1, rows, row_mask, step, SOURCE)
    s2 = _value(v2, p2, p2s, 2, rows, row_mask, step, SOURCE)
    cx, cm, c2, a0, ax, au, sigma, dx, dm = _coefficients(
        s0,
        s1,
        s2,
        eta,
        noise_level,
        KIND,
        PREDICTION,
        FIXED_LARGE,
        CLAMP == 0 and not OUTPUT_X0,
        CLIPPED_EPS,
        SECOND,
    )
    # a loop in the model's scaling: x_σ = x·in_scale, and the result is written ·out_scale
    cx, dx = cx * in_scale * out_scale, dx * in_scale
    cm, c2, sigma = cm * out_scale, c2 * out_scale, sigma * out_scale
    xv = _load(x, rows, cols, x0s, x1s, mask)
    mv = _guided_load(m, u, rows, cols, m0s, m1s, u0s, u1s, mask, g, GUIDED)
    if CLAMP != 0 or OUTPUT_X0:
        x0 = cx.to(tl.float32) * xv + cm.to(tl.float32) * mv
        bound = clip + 0.0 * x0
        scale = 1.0
        if CLAMP == 2:  # dynamic thresholding: s per example (Saharia et al., 2022)
            s = tl.load(threshold_scale + rows, mask=row_mask, other=1.0).to(tl.float32)
            bound, scale = tl.minimum(bound, s), s
        # clamp to [−bound, bound], NaN staying NaN as in torch.clamp
        clamped = tl.where(x0 == x0, tl.minimum(tl.maximum(x0, -bound), bound), x0) / scale
        if OUTPUT_X0 and CLAMP == 1:
            y = clamped
        elif OUTPUT_X0:
            y = x0
        else:
            y = a0.to(tl.float32) * clamped + ax.to(tl.float32) * xv + au.to(tl.float32) * x0
    else:
        y = cx.to(tl.float32) * xv + cm.to(tl.float32) * mv
    if SECOND:
        m2v = _guided_load(m2, u2, rows, cols, n0s, n1s, v0s, v1s, mask, g, GUIDED2)
        y += c2.to(tl.float32) * m2v
    if NOISE != 0:
        if NOISE == 1:
            z = _load(noise, rows, cols, z0s, z1s, mask)
        else:
            z = _normal_noise(seed, rows, start, QUADS, BLOCK_N, BLOCK_D)
        y += sigma.to(tl.float32) * z
    tl.store(out + rows * D + cols, y.to(out.dtype.element_ty), mask=mask)
    if OUT2:
        y2 = dx.to(tl.float32) * xv + dm.to(tl.float32) * mv
        tl.store(out2 + rows * D + cols, y2.to(out2.dtype.element_ty), mask=mask)


def _strides(t):
    return t.stride() if t is not None else (0, 0)


def _pointer(value, like):
    """A tensor schedule value is read by the kernel; a float is a scalar argument."""
    return value if isinstance(value, torch.Tensor) else like


def _stride(value):
    return value.stride(0) if isinstance(value, torch.Tensor) else 0


def _scalar(value):
    return 0.0 if isinstance(value, torch.Tensor) or value is None else float(value)


def diffusion_step(
    kind,
    x,
    m,
    schedule,
    *,
    prediction="eps",
    fixed_large=False,
    eta=0.0,
    noise_level=0.0,
    guidance_scale=1.0,
    clip=None,
    threshold_scale=None,
    clipped_eps=False,
    output_x0=False,
    noise=None,
    seed=None,
    uncond=None,
    second=None,
    uncond_second=None,
    second_output=False,
    scales=(1.0, 1.0),
    table=None,
    state=None,
):
    """The step `kind` (one of KINDS) on 2-D (N, D) inputs of any strides: out (N, D),
    contiguous, or (out, out2) with `second_output`.

    `schedule`: up to three values, each a float or an (N,) tensor; or, with `table`
    ((steps, 6) float64: the values, in_scale, out_scale, seed) and `state` (the step, one int64
    on the device), the step's row is read on the device. z is `noise` when given, drawn when
    `seed` is given (from the table's seed with `table`), else absent. `clip`
    and/or `threshold_scale` ((N,) per-example s) clamp x0; `output_x0` writes the model's x0
    (clipped where `clip`) instead of the step."""
    N, D = x.shape
    out = empty((N, D), x.dtype, x.device)
    out2 = empty((N, D), x.dtype, x.device) if second_output else None
    if N * D == 0:
        return (out, out2) if second_output else out
    values = list(schedule) + [None] * (3 - len(schedule))
    if table is not None:
        source, pointers = INDEXED, [table] * 3
    else:
        source = PER_ROW if any(isinstance(v, torch.Tensor) for v in values) else SCALAR
        pointers = [_pointer(v, x) for v in values]
    kind_noise = (
        GIVEN_NOISE if noise is not None else (DRAWN_NOISE if seed is not None else NO_NOISE)
    )
    clamp = THRESHOLD if threshold_scale is not None else (CLIP if clip is not None else NO_CLAMP)
    block_n, block_d = _tile(D)
    tensors = (uncond, second, uncond_second, noise)
    launch(
        _step_kernel,
        (cdiv(N, block_n) * cdiv(D, block_d),),
        x,
        m,
        *(t if t is not None else x for t in tensors),
        out,
        out2 if second_output else out,
        threshold_scale if threshold_scale is not None else x,
        *pointers,
        state if state is not None else x,
        *(_scalar(v) for v in values),
        float(scales[0]),
        float(scales[1]),
        float(eta),
        float(noise_level),
        float(guidance_scale),
        float(clip if clip is not None else float("inf")),
        int(seed or 0),
        N,
        D,
        cdiv(D, 4),
        *(_stride(v) for v in values),
        *x.stride(),
        *m.stride(),
        *(s for t in tensors for s in _strides(t)),
        KIND=KINDS.index(kind),
        PREDICTION=PREDICTIONS.index(prediction),
        FIXED_LARGE=fixed_large,
        SOURCE=source,
        NOISE=kind_noise,
        CLAMP=clamp,
        CLIPPED_EPS=clipped_eps,
        OUTPUT_X0=output_x0,
        GUIDED=uncond is not None,
        SECOND=second is not None,
        GUIDED2=uncond_second is not None,
        OUT2=second_output,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return (out, out2) if second_output else out


# --------------------------------------------------------------------------------------------------
# the training loss
# --------------------------------------------------------------------------------------------------


@triton.jit
def _loss_row(a, gamma, inv_d, PREDICTION: tl.constexpr, MIN_SNR: tl.constexpr):
    """(tx, tz, w / D): target = tx·x0 + tz·ε, and the example's weight over its elements
    (min-SNR-γ, Hang et al., 2023, sec. 3.4: min(SNR, γ) on the x0 loss, min(SNR, γ)/SNR on ε,
    min(SNR, γ)/(SNR + 1) on v, SNR = ᾱ/(1 − ᾱ))."""
    if PREDICTION == 0:
        tx, tz = a * 0.0, a * 0.0 + 1.0
    elif PREDICTION == 1:
        tx, tz = a * 0.0 + 1.0, a * 0.0
    else:  # v = √ᾱ ε − √(1 − ᾱ) x0
        tx, tz = -tl.sqrt(1.0 - a), tl.sqrt(a)
    weight = a * 0.0 + 1.0
    if MIN_SNR:
        snr = a / (1.0 - a)
        clipped = tl.minimum(snr, gamma)
        if PREDICTION == 0:
            weight = clipped / snr
        elif PREDICTION == 1:
            weight = clipped
        else:
            weight = clipped / (snr + 1.0)
    return tx, tz, weight * inv_d


@triton.jit
def _loss_error(m, x0, eps, rows, cols, mask, tx, tz, m0s, m1s, x0s, x1s, e0s, e1s):
    return (
        _load(m, rows, cols, m0s, m1s, mask)
        - tx.to(tl.float32) * _load(x0, rows, cols, x0s, x1s, mask)
        - tz.to(tl.float32) * _load(eps, rows, cols, e0s, e1s, mask)
    )


@triton.jit
def _loss_kernel(
    m,
    x0,
    eps,
    alpha_bar,
    loss,
    a_value: tl.float64,
    gamma: tl.float64,
    inv_d: tl.float64,
    a_stride,
    N,
    D,
    m0s,
    m1s,
    x0s,
    x1s,
    e0s,
    e1s,
    PREDICTION: tl.constexpr,
    MIN_SNR: tl.constexpr,
    SOURCE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """loss[n] = w_n / D · Σ_d (m − target)²: a program sums BLOCK_N whole rows (no partials
    left for another op, and the same order on every run)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)[:, None]
    row_mask = rows < N
    a = _value(a_value, alpha_bar, a_stride, 0, rows, row_mask, 0, SOURCE)
    tx, tz, scale = _loss_row(a, _float64(gamma), _float64(inv_d), PREDICTION, MIN_SNR)
    total = tl.zeros((BLOCK_N, BLOCK_D), tl.float32)
    for start in range(0, D, BLOCK_D):
        cols = start + tl.arange(0, BLOCK_D)[None, :].to(tl.int64)
        error = _loss_error(
            m, x0, eps, rows, cols, row_mask & (cols < D), tx, tz, m0s, m1s, x0s, x1s, e0s, e1s
        )
        total += error * error  # masked elements are 0 − 0 − 0
    row_loss = tl.sum(total, axis=1)[:, None].to(tl.float64) * scale
    tl.store(loss + rows, row_loss.to(loss.dtype.element_ty), mask=row_mask)


@triton.jit
def _loss_backward_kernel(
    m,
    x0,
    eps,
    alpha_bar,
    grad,
    d_m,
    d_x0,
    d_eps,
    a_value: tl.float64,
    gamma: tl.float64,
    inv_d: tl.float64,
    a_stride,
    grad_stride,
    N,
    D,
    m0s,
    m1s,
    x0s,
    x1s,
    e0s,
    e1s,
    PREDICTION: tl.constexpr,
    MIN_SNR: tl.constexpr,
    SOURCE: tl.constexpr,
    WANT_X0: tl.constexpr,
    WANT_EPS: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dL/dm = 2 g_n w_n / D · (m − target); dL/dx0 = −tx·dL/dm, dL/dε = −tz·dL/dm."""
    pid = tl.program_id(0).to(tl.int64)
    rows, start, cols, row_mask, mask = _tile_of(pid, N, D, BLOCK_N, BLOCK_D)
    a = _value(a_value, alpha_bar, a_stride, 0, rows, row_mask, 0, SOURCE)
    tx, tz, scale = _loss_row(a, _float64(gamma), _float64(inv_d), PREDICTION, MIN_SNR)
    g = tl.load(grad + rows * grad_stride, mask=row_mask, other=0.0).to(tl.float64)
    factor = (2.0 * g * scale).to(tl.float32)
    d = factor * _loss_error(m, x0, eps, rows, cols, mask, tx, tz, m0s, m1s, x0s, x1s, e0s, e1s)
    tl.store(d_m + rows * D + cols, d.to(d_m.dtype.element_ty), mask=mask)
    if WANT_X0:
        tl.store(
            d_x0 + rows * D + cols, (-tx.to(tl.float32) * d).to(d_x0.dtype.element_ty), mask=mask
        )
    if WANT_EPS:
        tl.store(
            d_eps + rows * D + cols, (-tz.to(tl.float32) * d).to(d_eps.dtype.element_ty), mask=mask
        )


def _loss_arguments(alpha_bar, like, min_snr_gamma, prediction):
    """The alpha_bar pointer and scalars (ᾱ, γ, 1/D: an example of no elements loses 0), and
    the constexprs the loss kernels share."""
    per_row = isinstance(alpha_bar, torch.Tensor)
    return (
        (
            _pointer(alpha_bar, like),
            _scalar(alpha_bar),
            float(min_snr_gamma if min_snr_gamma is not None else 0.0),
            1.0 / max(like.shape[1], 1),
            _stride(alpha_bar),
        ),
        dict(
            PREDICTION=PREDICTIONS.index(prediction),
            MIN_SNR=min_snr_gamma is not None,
            SOURCE=PER_ROW if per_row else SCALAR,
        ),
    )


def diffusion_loss(m, x0, eps, alpha_bar, loss_dtype, *, prediction="eps", min_snr_gamma=None):
    """(N,) losses of 2-D (N, D) inputs (any strides); alpha_bar a float or an (N,) tensor."""
    N, D = m.shape
    loss = empty((N,), loss_dtype, m.device)
    if N == 0:
        return loss
    block_d = min(512, max(16, next_power_of_2(D)))  # 1024 spills on sm_90
    block_n = max(1, min(4096 if INTERPRETED else 1024, 16 * block_d) // block_d)
    pointer_and_scalars, flags = _loss_arguments(alpha_bar, m, min_snr_gamma, prediction)
    launch(
        _loss_kernel,
        (cdiv(N, block_n),),
        m,
        x0,
        eps,
        pointer_and_scalars[0],
        loss,
        *pointer_and_scalars[1:],
        N,
        D,
        *m.stride(),
        *x0.stride(),
        *eps.stride(),
        **flags,
        BLOCK_N=block_n,
        BLOCK_D=block_d,
    )
    return loss


def diffusion_loss_backward(
    grad,
    m,
    x0,
    eps,
    alpha_bar,
    *,
    prediction="eps",
    min_snr_gamma=None,
    want_x0=False,
    want_eps=False,
):
    """(dL/dm, dL/dx0 or None, dL/dε or None), each (N, D) contiguous, for the (N,) grad."""
    N, D = m.shape
    d_m = empty((N, D), m.dtype, m.device)
    d_x0 = empty((N, D), x0.dtype, m.device) if want_x0 else None
    d_eps = empty((N, D), eps.dtype, m.device) if want_eps else None
    if N * D > 0:
        block_n, block_d = _tile(D)
        pointer_and_scalars, flags = _loss_arguments(alpha_bar, m, min_snr_gamma, prediction)
        launch(
            _loss_backward_kernel,
            (cdiv(N, block_n) * cdiv(D, block_d),),
            m,
            x0,
            eps,
            pointer_and_scalars[0],
            grad,
            d_m,
            d_x0 if want_x0 else d_m,
            d_eps if want_eps else d_m,
            *pointer_and_scalars[1:],
            grad.stride(0),
            N,
            D,
            *m.stride(),
            *x0.stride(),
            *eps.stride(),
            **flags,
            WANT_X0=want_x0,
            WANT_EPS=want_eps,
            BLOCK_N=block_n,
            BLOCK_D=block_d,
        )
    return d_m, d_x0, d_eps


__all__ = ["KINDS", "TABLE_COLUMNS", "diffusion_loss", "diffusion_loss_backward", "diffusion_step"]
