"""The rational-quadratic spline of Neural Spline Flows (Durkan et al., 2019, sec. 3.1 and
appendix A), fused: one kernel per direction and one for the backward pass.

A program takes BLOCK elements; the K bins of each element sit along the second axis of
[BLOCK, KP] register tiles (KP = K rounded up to a power of two). For each element the kernel
reads x, the K unnormalised widths and heights and the K - 1 unnormalised inner derivatives, and

1. soft-clips the unnormalised widths and heights, u / (1 + |u| / c) (zuko's; 1 / c = 0 for
   nflows' parameterisation, where it is u), takes their softmax and gives each bin its minimum
   share (nflows: 1e-3 by default; zuko: 0); a cumulative sum along the tile from each end gives,
   for bin j, the shares before it and from it on;
2. finds the bin k of x: how many of the inner knots x_1 .. x_{K-1} are <= x (the last bin
   includes x = B), picks that bin's sums, share and the two knot derivatives (1 at ±B; inside,
   min_derivative + softplus (nflows) or exp of the soft-clipped value (zuko), taken of these
   two only);
3. evaluates eqs. (4)-(6) (forward) or the root of the quadratic of appendix A (inverse), and
   log|dy/dx| from eq. (6) as a sum of logs. Outside [-B, B] it writes the input and 0.

nflows' tails=None spline is the same on a box: the x knots span [left, right], the y knots
[bottom, top] (2B below is then right - left or top - bottom), and with ENDS the derivatives at
the two ends are learned like the inner ones rather than 1.

The numbers are those of the reference, computed so that fp32 keeps their precision near both
ends of every bin (where a flow's inputs at ±B land):

* a knot is -B + 2B (shares before it) in the left half of the interval and B - 2B (shares from
  it on) in the right half, so ±B are exact; a bin's size is 2B share (not a difference of two
  knots near B); both xi = (x - x_k) / w_k and 1 - xi = (x_{k+1} - x) / w_k are computed from
  the nearer knot, and the denominator of eq. (4) is s (xi² + (1 - xi)²) + (d_k + d_{k+1})
  xi (1 - xi), a sum of positive terms;
* the inverse: with Δ = y - y_k and Δ' = y_{k+1} - y (so Δ + Δ' = h_k) and m = Δ' d_k - Δ d_{k+1},
  the quadratic a xi² + b xi + c of appendix A (eqs. 29-32) has b = m + 2 s Δ, c = -s Δ and
  b² - 4ac = m² + 4 s² Δ Δ' (no cancellation). Its stable root 2c / (-b - sqrt(b² - 4ac)) is
  xi = 2 s Δ / (b + sqrt(...)); the same spline read from the right end of the bin gives
  1 - xi = 2 s Δ' / (b' + sqrt(...)) with b' = -m + 2 s Δ'. Since b + b' = 2 s h_k > 0, one of
  b and b' is >= 0; the kernel takes the form from the nearer knot if its b is, else the other:
  the denominator never cancels, and y = ±B gives xi = 0 or 1 exactly.

The backward kernel recomputes all of this and applies the chain rule by hand. With
xi = (x - x_k) / w_k, s = h_k / w_k and the spline y = F(xi; y_k, h_k, s, d_k, d_{k+1}),
L = log dy/dx (L(xi; s, d_k, d_{k+1})):

* forward: G_xi = gy F_xi + gl L_xi, so dx = G_xi / w_k, d(x_k) = -G_xi / w_k,
  d(w_k) = -G_xi xi / w_k; d(y_k) = gy; and gy F_θ + gl L_θ for θ in h_k, s, d_k, d_{k+1};
* inverse (x = x_k + w_k xi, xi the root of F(xi) = y, logabsdet = -L): implicitly
  dxi/dθ = -F_θ / F_xi and dxi/dy = 1 / F_xi, so with λ = (gx w_k - gl L_xi) / F_xi:
  dy = λ, d(y_k) = -λ, d(x_k) = gx, d(w_k) = gx xi, and -λ F_θ - gl L_θ for the others;
* then s = h_k / w_k adds G_s / w_k to d(h_k) and -G_s s / w_k to d(w_k); x_k is
  -B + 2B (share_0 + ... + share_{k-1}) and w_k = 2B share_k, so
  d(share_i) = 2B ((i < k) d(x_k) + (i = k) d(w_k)). For a bin in the right half the kernel
  writes x_k = x_{k+1} - w_k with x_{k+1} = B - 2B (share_{k+1} + ... + share_{K-1}) instead:
  d(share_i) = 2B (-(i > k) d(x_k) + (i = k) (d(w_k) - d(x_k))), with d(w_k) - d(x_k) written
  without cancellation. Both differ by a constant shift of d(share), which the softmax backward
  p (g - sum(p g)) removes; this one keeps the exact zeros at x = B exact (there y = B whatever
  the parameters). The softmax backward brings d(share) to the unnormalised widths (heights
  alike, from y_k and h_k); the soft clip's derivative 1 / (1 + |u| / c)² takes it on to u
  (the backward kernel reloads u for it rather than hold another tile); softplus' derivative
  is the sigmoid, exp's is exp.
"""

import collections

import triton
import triton.language as tl

from ._runtime import INTERPRETED, cdiv, empty, launch, next_power_of_2

# How unnormalised parameters become shares and knot derivatives: the minimum bin width and
# height (shares of the interval), the minimum inner derivative (softplus), the soft clips' 1 / c
# of widths and heights and of the derivatives, and `zuko`: whether the derivatives are exp and
# the interval (-B, B] (zuko) or min_derivative + softplus on [-B, B] (nflows). NFLOWS is
# nflows' defaults.
Parameterisation = collections.namedtuple(
    "Parameterisation", "min_bin_width min_bin_height min_derivative clip clip_derivative zuko"
)
NFLOWS = Parameterisation(1e-3, 1e-3, 1e-3, 0.0, 0.0, False)


def _tile(K):
    """(BLOCK, KP, num_warps): KP = K rounded up to a power of two. On a GPU a [BLOCK, KP] tile
    holds 512 values (1024 for K > 32: at least 16 rows), 4 or 8 per thread of 4 warps; compile
    shows no spills for 2 <= K <= 64."""
    kp = next_power_of_2(K)
    if INTERPRETED:
        return 32, kp, 4
    return max(16, min(256, 512 // kp)), kp, 4


@triton.jit
def _softplus(u):
    """log(1 + exp(u)) without overflow; log1p by the (1 + z) - 1 correction for small z."""
    z = tl.exp(-tl.abs(u))
    p = 1.0 + z
    log1p = tl.where(p == 1.0, z, tl.log(p) * (z / (p - 1.0)))
    return tl.maximum(u, 0.0) + log1p


@triton.jit
def _soft_clip(u, inverse_scale):
    """zuko's soft clip u / (1 + |u| / c): the identity for 1 / c = 0."""
    return u / (1.0 + inverse_scale * tl.abs(u))


@triton.jit
def _derivative(u, min_derivative, clip_derivative, ZUKO: tl.constexpr):
    """A knot's derivative from its unnormalised value."""
    if ZUKO:
        return tl.exp(_soft_clip(u, clip_derivative))
    return min_derivative + _softplus(u)


@triton.jit
def _derivative_slope(u, clip_derivative, ZUKO: tl.constexpr):
    """d/du of `_derivative`: exp of the soft clip times the clip's slope (zuko), or softplus'
    derivative, the sigmoid, without overflow (nflows)."""
    if ZUKO:
        r = 1.0 / (1.0 + clip_derivative * tl.abs(u))
        return tl.exp(u * r) * r * r
    z = tl.exp(-tl.abs(u))
    return tl.where(u >= 0, 1.0, z) / (1.0 + z)


@triton.jit
def _knot(before, after, low, high):
    """The knot with shares `before` to its left and `after` to its right (before + after = 1),
    from the nearer end of [low, high]."""
    span = high - low
    return tl.where(before <= after, span * before + low, high - span * after)


@triton.jit
def _pick(tile, onehot):
    return tl.sum(tl.where(onehot, tile, 0.0), axis=1)


@triton.jit
def _bin(ptr, rows, cols, row_mask, v, s0, s1, low, high, minimum, clip, K: tl.constexpr):
    """Softmax probabilities p, shares, and the shares before and from each bin on, as
    [BLOCK, KP]; and the bin k of v ([BLOCK]) among these knots."""
    valid = cols < K
    u = tl.load(ptr + rows * s0 + cols * s1, mask=row_mask & valid, other=0.0).to(tl.float32)
    u = tl.where(valid, _soft_clip(u, clip), float("-inf"))
    e = tl.exp(u - tl.max(u, axis=1)[:, None])
    p = e / tl.sum(e, axis=1)[:, None]
    share = tl.where(valid, minimum + (1.0 - minimum * K) * p, 0.0)
    before = tl.cumsum(share, axis=1) - share  # exactly 0 for bin 0
    after = tl.cumsum(share, axis=1, reverse=True)  # exactly share_{K-1} for bin K - 1
    inner = (cols >= 1) & valid & (v[:, None] >= _knot(before, after, low, high))
    return p, share, before, after, tl.sum(inner.to(tl.int32), axis=1)


@triton.jit
def _last_knot(derivs, rows, row_mask, sd0, sd1, K: tl.constexpr):
    """The unnormalised derivative of knot K (the last bin's right end) where derivs holds all
    K + 1: read alone, as a tile of K + 1 columns would double KP for K a power of two."""
    return tl.load(derivs + rows * sd0 + K * sd1, mask=row_mask, other=0.0).to(tl.float32)


@triton.jit
def _locate(
    x,
    widths,
    heights,
    derivs,
    rows,
    N,
    x_low,
    x_high,
    y_low,
    y_high,
    min_w,
    min_h,
    min_d,
    clip,
    clip_d,
    sx,
    sw0,
    sw1,
    sh0,
    sh1,
    sd0,
    sd1,
    K: tl.constexpr,
    KP: tl.constexpr,
    REVERSE: tl.constexpr,
    ZUKO: tl.constexpr,
    ENDS: tl.constexpr,
):
    """Everything about the bins of `rows` (1-D): the input, its clamped value v, whether it was
    inside its interval ([x_low, x_high] forward, [y_low, y_high] inverse), its bin k, that
    bin's shares and knots, its knot derivatives, and the tiles the backward pass needs. ENDS:
    derivs holds all K + 1 knot derivatives (column j: knot j) rather than the K - 1 inner ones
    (column j: knot j + 1) with 1 at both ends."""
    row_mask = rows < N
    value = tl.load(x + rows * sx, mask=row_mask, other=0.0).to(tl.float32)
    if REVERSE:
        low = y_low
        high = y_high
    else:
        low = x_low
        high = x_high
    inside = (value >= low) & (value <= high)
    if ZUKO:  # zuko's interval is (-B, B]: -B itself is in the identity tail
        inside = inside & (value > low)
    v = tl.minimum(tl.maximum(value, low), high)
    tile_rows = rows[:, None]
    tile_mask = row_mask[:, None]
    cols = tl.arange(0, KP)[None, :]
    pw, sw, bw, aw, kw = _bin(
        widths, tile_rows, cols, tile_mask, v, sw0, sw1, x_low, x_high, min_w, clip, K
    )
    ph, sh, bh, ah, kh = _bin(
        heights, tile_rows, cols, tile_mask, v, sh0, sh1, y_low, y_high, min_h, clip, K
    )
    k = kh if REVERSE else kw
    onehot = cols == k[:, None]
    share_w, before_w, after_w = _pick(sw, onehot), _pick(bw, onehot), _pick(aw, onehot)
    share_h, before_h, after_h = _pick(sh, onehot), _pick(bh, onehot), _pick(ah, onehot)
    if ENDS:  # knots 0 .. K - 1 in the tile, knot K alone
        du = tl.load(
            derivs + tile_rows * sd0 + cols * sd1, mask=tile_mask & (cols < K), other=0.0
        ).to(tl.float32)
        d_left = _derivative(_pick(du, onehot), min_d, clip_d, ZUKO)
        d_right = _derivative(
            tl.where(
                k == K - 1,
                _last_knot(derivs, rows, row_mask, sd0, sd1, K),
                _pick(du, cols == k[:, None] + 1),
            ),
            min_d,
            clip_d,
            ZUKO,
        )
    else:
        du = tl.load(
            derivs + tile_rows * sd0 + cols * sd1, mask=tile_mask & (cols < K - 1), other=0.0
        ).to(tl.float32)
        d_left = tl.where(
            k == 0, 1.0, _derivative(_pick(du, cols == k[:, None] - 1), min_d, clip_d, ZUKO)
        )
        d_right = tl.where(k == K - 1, 1.0, _derivative(_pick(du, onehot), min_d, clip_d, ZUKO))
    x_k = _knot(before_w, after_w, x_low, x_high)
    x_next = _knot(before_w + share_w, after_w - share_w, x_low, x_high)  # x_high: last bin
    y_k = _knot(before_h, after_h, y_low, y_high)
    y_next = _knot(before_h + share_h, after_h - share_h, y_low, y_high)
    w_k = (x_high - x_low) * share_w
    h_k = (y_high - y_low) * share_h
    # (the spans' ratio is exactly 1 on [-B, B] x [-B, B]: s is then the shares' ratio)
    s = share_h / share_w * ((y_high - y_low) / (x_high - x_low))
    # whether the bin lies more right than left: then its gradient goes through its right knot
    x_from_right = before_w > after_w - share_w
    y_from_right = before_h > after_h - share_h
    return (
        value,
        v,
        inside,
        k,
        cols,
        pw,
        ph,
        du,
        x_k,
        x_next,
        w_k,
        y_k,
        y_next,
        h_k,
        s,
        d_left,
        d_right,
        x_from_right,
        y_from_right,
    )


@triton.jit
def _solve(v, x_k, x_next, w_k, y_k, y_next, h_k, s, d_left, d_right, REVERSE: tl.constexpr):
    """(xi, 1 - xi, spline output) in the bin: eq. (4) forward, appendix A's root inverse."""
    if REVERSE:
        delta = tl.maximum(v - y_k, 0.0)
        delta_next = tl.maximum(y_next - v, 0.0)
        m = delta_next * d_left - delta * d_right
        b = m + 2.0 * s * delta
        b_next = 2.0 * s * delta_next - m
        root = tl.sqrt(m * m + 4.0 * s * s * delta * delta_next)
        # the form from the nearer knot while its b >= 0 (then it cannot cancel), else the other
        from_left = (b >= 0.0) & ((delta <= delta_next) | (b_next < 0.0))
        q = (
            2.0
            * s
            * tl.where(from_left, delta, delta_next)
            / (tl.where(from_left, b, b_next) + root)
        )
        q = tl.minimum(q, 1.0)
        xi = tl.where(from_left, q, 1.0 - q)
        one_m = tl.where(from_left, 1.0 - q, q)
        out = tl.where(xi <= 0.5, x_k + xi * w_k, x_next - one_m * w_k)
    else:
        # xi from the nearer knot, and 1 - xi from it: both exact at the knots
        xi = tl.minimum(tl.maximum((v - x_k) / w_k, 0.0), 1.0)
        one_m = tl.minimum(tl.maximum((x_next - v) / w_k, 0.0), 1.0)
        near_left = xi <= one_m
        xi, one_m = tl.where(near_left, xi, 1.0 - one_m), tl.where(near_left, 1.0 - xi, one_m)
        t = xi * one_m
        denominator = s * (xi * xi + one_m * one_m) + (d_left + d_right) * t
        # from the nearer knot: 1 - N / D = (s (1 - xi)² + d_{k+1} xi (1 - xi)) / D
        out = tl.where(
            xi <= 0.5,
            y_k + h_k * (s * xi * xi + d_left * t) / denominator,
            y_next - h_k * (s * one_m * one_m + d_right * t) / denominator,
        )
    return xi, one_m, out


@triton.jit
def _log_derivative(xi, one_m, s, d_left, d_right):
    """log dy/dx, eq. (6), as a sum of logs (no product overflows)."""
    t = xi * one_m
    numerator = d_right * xi * xi + 2.0 * s * t + d_left * one_m * one_m
    denominator = s * (xi * xi + one_m * one_m) + (d_left + d_right) * t
    return 2.0 * tl.log(s) + tl.log(numerator) - 2.0 * tl.log(denominator)


@triton.jit
def _forward_kernel(
    x,
    widths,
    heights,
    derivs,
    y,
    lad,
    N,
    x_low,
    x_high,
    y_low,
    y_high,
    min_w,
    min_h,
    min_d,
    clip,
    clip_d,
    sx,
    sw0,
    sw1,
    sh0,
    sh1,
    sd0,
    sd1,
    K: tl.constexpr,
    KP: tl.constexpr,
    REVERSE: tl.constexpr,
    ZUKO: tl.constexpr,
    ENDS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    (
        value,
        v,
        inside,
        k,
        cols,
        pw,
        ph,
        du,
        x_k,
        x_next,
        w_k,
        y_k,
        y_next,
        h_k,
        s,
        d_left,
        d_right,
        x_from_right,
        y_from_right,
    ) = _locate(
        x,
        widths,
        heights,
        derivs,
        rows,
        N,
        x_low,
        x_high,
        y_low,
        y_high,
        min_w,
        min_h,
        min_d,
        clip,
        clip_d,
        sx,
        sw0,
        sw1,
        sh0,
        sh1,
        sd0,
        sd1,
        K,
        KP,
        REVERSE,
        ZUKO,
        ENDS,
    )
    xi, one_m, out = _solve(v, x_k, x_next, w_k, y_k, y_next, h_k, s, d_left, d_right, REVERSE)
    logabsdet = _log_derivative(xi, one_m, s, d_left, d_right)
    if REVERSE:
        logabsdet = -logabsdet
    row_mask = rows < N
    tl.store(y + rows, tl.where(inside, out, value).to(y.dtype.element_ty), mask=row_mask)
    tl.store(lad + rows, tl.where(inside, logabsdet, 0.0).to(lad.dtype.element_ty), mask=row_mask)


@triton.jit
def _softmax_backward(
    p, cols, k, from_right, g_knot, g_size, span, minimum, clip_slope, K: tl.constexpr
):
    """Gradient of the unnormalised sizes from those of bin k's left knot and size, on an
    interval [low, high] of length `span` (2B for [-B, B]). The knot is
    low + span (share_0 + ... + share_{k-1}) and the size span share_k; or, `from_right`, the
    bin is its right knot high - span (share_{k+1} + ... + share_{K-1}) less its size, and
    g_size is then
    the gradient of the size with that knot held (d(w_k) - d(x_k)). Both give the same result
    (they differ by a constant shift of d(share)); the one from the nearer end keeps exact
    zeros exact: at x = ±B the parameters get no gradient. `clip_slope` is the soft clip's
    derivative at each unnormalised size."""
    kk = k[:, None]
    right = from_right[:, None]
    g_share = span * (
        tl.where(right & (cols > kk), -g_knot[:, None], 0.0)
        + tl.where(~right & (cols < kk), g_knot[:, None], 0.0)
        + tl.where(cols == kk, g_size[:, None], 0.0)
    )
    g_p = (1.0 - minimum * K) * g_share
    return clip_slope * p * (g_p - tl.sum(p * g_p, axis=1)[:, None])


@triton.jit
def _clip_slope(ptr, rows, cols, mask, s0, s1, clip):
    """d/du of the soft clip u / (1 + |u| / c), 1 / (1 + |u| / c)², at the unnormalised values
    (reloaded: cheaper than holding them through the backward pass)."""
    u = tl.load(ptr + rows * s0 + cols * s1, mask=mask, other=0.0).to(tl.float32)
    r = 1.0 / (1.0 + clip * tl.abs(u))
    return r * r


@triton.jit
def _backward_kernel(
    grad_y,
    grad_lad,
    x,
    widths,
    heights,
    derivs,
    dx,
    dwidths,
    dheights,
    dderivs,
    N,
    x_low,
    x_high,
    y_low,
    y_high,
    min_w,
    min_h,
    min_d,
    clip,
    clip_d,
    sgy,
    sgl,
    sx,
    sw0,
    sw1,
    sh0,
    sh1,
    sd0,
    sd1,
    K: tl.constexpr,
    KP: tl.constexpr,
    REVERSE: tl.constexpr,
    ZUKO: tl.constexpr,
    ENDS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    rows = pid * BLOCK + tl.arange(0, BLOCK)
    row_mask = rows < N
    (
        value,
        v,
        inside,
        k,
        cols,
        pw,
        ph,
        du,
        x_k,
        x_next,
        w_k,
        y_k,
        y_next,
        h_k,
        s,
        d_left,
        d_right,
        x_from_right,
        y_from_right,
    ) = _locate(
        x,
        widths,
        heights,
        derivs,
        rows,
        N,
        x_low,
        x_high,
        y_low,
        y_high,
        min_w,
        min_h,
        min_d,
        clip,
        clip_d,
        sx,
        sw0,
        sw1,
        sh0,
        sh1,
        sd0,
        sd1,
        K,
        KP,
        REVERSE,
        ZUKO,
        ENDS,
    )
    gy = tl.load(grad_y + rows * sgy, mask=row_mask, other=0.0).to(tl.float32)
    gl = tl.load(grad_lad + rows * sgl, mask=row_mask, other=0.0).to(tl.float32)
    xi, one_m, out = _solve(v, x_k, x_next, w_k, y_k, y_next, h_k, s, d_left, d_right, REVERSE)

    # partial derivatives of F = y_k + h_k N / D and of L = log dy/dx at (xi, s, d_k, d_{k+1}),
    # each written as sums of positive terms where it can be (xi + one_m = 1)
    t = xi * one_m
    xi2 = xi * xi
    om2 = one_m * one_m
    curvature = d_right + d_left - 2.0 * s
    num_f = s * xi2 + d_left * t
    inv_den = 1.0 / (s * (xi2 + om2) + (d_left + d_right) * t)
    inv_den2 = inv_den * inv_den
    num_l = d_right * xi2 + 2.0 * s * t + d_left * om2
    inv_num_l = 1.0 / num_l
    f_xi = h_k * s * num_l * inv_den2
    f_h = num_f * inv_den
    f_s = h_k * t * (d_right * xi2 - d_left * om2) * inv_den2
    f_dl = h_k * t * (s * om2 + d_right * t) * inv_den2
    f_dr = -h_k * num_f * t * inv_den2
    l_xi = (
        2.0 * (d_right * xi + s * (one_m - xi) - d_left * one_m) * inv_num_l
        - 2.0 * curvature * (one_m - xi) * inv_den
    )
    l_s = 2.0 / s + 2.0 * t * inv_num_l - 2.0 * (xi2 + om2) * inv_den
    l_dl = om2 * inv_num_l - 2.0 * t * inv_den
    l_dr = xi2 * inv_num_l - 2.0 * t * inv_den
    inv_w = 1.0 / w_k
    one_m_f_h = (s * om2 + d_right * t) * inv_den  # 1 - f_h
    # g_w_right = d(w_k) - d(x_k) and g_h_right = d(h_k) - d(y_k): the size's gradient with the
    # bin's right knot held, written without cancellation
    if REVERSE:
        lam = (gy * w_k - gl * l_xi) / f_xi
        g_in = lam
        g_xk = gy
        g_wk = gy * xi
        g_w_right = -gy * one_m
        g_yk = -lam
        g_hk = -lam * f_h
        g_h_right = lam * one_m_f_h
        g_s = -lam * f_s - gl * l_s
        g_dl = -lam * f_dl - gl * l_dl
        g_dr = -lam * f_dr - gl * l_dr
    else:
        g_xi = gy * f_xi + gl * l_xi
        g_in = g_xi * inv_w
        g_xk = -g_xi * inv_w
        g_wk = -g_xi * xi * inv_w
        g_w_right = g_xi * one_m * inv_w
        g_yk = gy
        g_hk = gy * f_h
        g_h_right = -gy * one_m_f_h
        g_s = gy * f_s + gl * l_s
        g_dl = gy * f_dl + gl * l_dl
        g_dr = gy * f_dr + gl * l_dr
    g_wk = tl.where(x_from_right, g_w_right, g_wk) - g_s * s * inv_w
    g_hk = tl.where(y_from_right, g_h_right, g_hk) + g_s * inv_w
    # outside [-B, B] the identity: the input's gradient passes, the parameters get none
    g_in = tl.where(inside, g_in, gy)
    zero = tl.zeros_like(g_in)
    g_xk = tl.where(inside, g_xk, zero)
    g_wk = tl.where(inside, g_wk, zero)
    g_yk = tl.where(inside, g_yk, zero)
    g_hk = tl.where(inside, g_hk, zero)
    g_dl = tl.where(inside, g_dl, zero)
    g_dr = tl.where(inside, g_dr, zero)

    out_ty = dx.dtype.element_ty
    tl.store(dx + rows, g_in.to(out_ty), mask=row_mask)
    tile_rows = rows[:, None]
    tile_mask = row_mask[:, None]
    bins = tile_mask & (cols < K)
    g_widths = _softmax_backward(
        pw,
        cols,
        k,
        x_from_right,
        g_xk,
        g_wk,
        x_high - x_low,
        min_w,
        _clip_slope(widths, tile_rows, cols, bins, sw0, sw1, clip),
        K,
    )
    tl.store(dwidths + tile_rows * K + cols, g_widths.to(out_ty), mask=bins)
    g_heights = _softmax_backward(
        ph,
        cols,
        k,
        y_from_right,
        g_yk,
        g_hk,
        y_high - y_low,
        min_h,
        _clip_slope(heights, tile_rows, cols, bins, sh0, sh1, clip),
        K,
    )
    tl.store(dheights + tile_rows * K + cols, g_heights.to(out_ty), mask=bins)
    slope = _derivative_slope(du, clip_d, ZUKO)
    kk = k[:, None]
    if ENDS:  # column j: knot j; knot K's column stored alone
        g_du = slope * (
            tl.where(cols == kk, g_dl[:, None], 0.0) + tl.where(cols == kk + 1, g_dr[:, None], 0.0)
        )
        tl.store(dderivs + tile_rows * (K + 1) + cols, g_du.to(out_ty), mask=tile_mask & (cols < K))
        # (knot K's value reloaded: cheaper than holding it through the backward pass)
        u_last = _last_knot(derivs, rows, row_mask, sd0, sd1, K)
        g_last = tl.where(k == K - 1, g_dr * _derivative_slope(u_last, clip_d, ZUKO), 0.0)
        tl.store(dderivs + rows * (K + 1) + K, g_last.to(out_ty), mask=row_mask)
    else:  # column j: knot j + 1
        g_du = slope * (
            tl.where(cols == kk - 1, g_dl[:, None], 0.0) + tl.where(cols == kk, g_dr[:, None], 0.0)
        )
        tl.store(
            dderivs + tile_rows * (K - 1) + cols, g_du.to(out_ty), mask=tile_mask & (cols < K - 1)
        )


def _scalars(parameterisation):
    """The kernels' float arguments and ZUKO of a Parameterisation."""
    p = parameterisation
    return (
        (
            float(p.min_bin_width),
            float(p.min_bin_height),
            float(p.min_derivative),
            float(p.clip),
            float(p.clip_derivative),
        ),
        bool(p.zuko),
    )


def rq_spline_forward(x, widths, heights, derivatives, box, reverse, parameterisation=NFLOWS):
    """(y, logabsdet), each (N,) contiguous, for x (N,), widths and heights (N, K) and
    derivatives (N, K - 1) (inner knots; 1 at the ends) or (N, K + 1) (all knots), all of any
    strides, on box = (left, right, bottom, top)."""
    N, K = widths.shape
    y = empty((N,), x.dtype, x.device)
    lad = empty((N,), x.dtype, x.device)
    if N == 0:
        return y, lad
    block, kp, warps = _tile(K)
    scalars, zuko = _scalars(parameterisation)
    launch(
        _forward_kernel,
        (cdiv(N, block),),
        x,
        widths,
        heights,
        derivatives,
        y,
        lad,
        N,
        *box,
        *scalars,
        x.stride(0),
        *widths.stride(),
        *heights.stride(),
        *derivatives.stride(),
        K=K,
        KP=kp,
        REVERSE=reverse,
        ZUKO=zuko,
        ENDS=derivatives.shape[1] == K + 1,
        BLOCK=block,
        num_warps=warps,
    )
    return y, lad


def rq_spline_backward(
    grad_y, grad_lad, x, widths, heights, derivatives, box, reverse, parameterisation=NFLOWS
):
    """(dx (N,), dwidths (N, K), dheights (N, K), dderivatives (shaped as derivatives)),
    contiguous, from the gradients of y and logabsdet (N,)."""
    N, K = widths.shape
    dx = empty((N,), x.dtype, x.device)
    dwidths = empty((N, K), x.dtype, x.device)
    dheights = empty((N, K), x.dtype, x.device)
    dderivs = empty(tuple(derivatives.shape), x.dtype, x.device)
    if N == 0:
        return dx, dwidths, dheights, dderivs
    block, kp, warps = _tile(K)
    scalars, zuko = _scalars(parameterisation)
    launch(
        _backward_kernel,
        (cdiv(N, block),),
        grad_y,
        grad_lad,
        x,
        widths,
        heights,
        derivatives,
        dx,
        dwidths,
        dheights,
        dderivs,
        N,
        *box,
        *scalars,
        grad_y.stride(0),
        grad_lad.stride(0),
        x.stride(0),
        *widths.stride(),
        *heights.stride(),
        *derivatives.stride(),
        K=K,
        KP=kp,
        REVERSE=reverse,
        ZUKO=zuko,
        ENDS=derivatives.shape[1] == K + 1,
        BLOCK=block,
        num_warps=warps,
    )
    return dx, dwidths, dheights, dderivs
