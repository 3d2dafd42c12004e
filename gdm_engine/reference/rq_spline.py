"""Reference monotonic rational-quadratic spline with linear tails (Durkan et al., 2019, "Neural
Spline Flows", sec. 3.1 and appendix A), in the convention of nflows'
`unconstrained_rational_quadratic_spline`.

Per element, K bins on [-B, B] (B = tail_bound), from unnormalised parameters:

    bin widths   w = m + (1 - m K) softmax(widths),       m = MIN_BIN_WIDTH = 1e-3
    bin heights  h = m + (1 - m K) softmax(heights),      m = MIN_BIN_HEIGHT = 1e-3
    knots        x_0 = -B, x_k = -B + 2B (w_0 + ... + w_{k-1}), x_K = B   (same for y_k from h)
    derivatives  d_0 = d_K = 1 (the identity tails join smoothly),
                 d_k = MIN_DERIVATIVE + softplus(derivatives[k-1]) for the K-1 inner knots.

The bin widths used in the formulas are the knot differences x_{k+1} - x_k (so the last knot is
exactly B). Inside bin k, with s_k = (y_{k+1} - y_k) / (x_{k+1} - x_k) and xi = (x - x_k) / w_k,
eqs. (4)-(6):

    y       = y_k + h_k (s_k xi² + d_k xi (1 - xi)) / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))
    dy/dx   = s_k² (d_{k+1} xi² + 2 s_k xi (1 - xi) + d_k (1 - xi)²)
              / (s_k + (d_{k+1} + d_k - 2 s_k) xi (1 - xi))²

Outside [-B, B] the map is the identity with log|dy/dx| = 0.

nflows' `rational_quadratic_spline` (its tails=None) is the same spline on a box: x knots on
[left, right], y knots on [bottom, top], and all K + 1 knot derivatives learned
(min_derivative + softplus, the ends too). `box=(left, right, bottom, top)` replaces
[-B, B] x [-B, B], and derivatives of K + 1 entries give the ends' derivatives; the identity
still holds outside the box (of x forward, of y inverse). The bin of x is the number of inner
knots x_1 .. x_{K-1} that are <= x: the bin whose left knot is <= x, clamped to K - 1, so x = B
falls in the last bin (nflows gets the same by nudging the last knot up by 1e-6 in its
searchsorted). The inverse searches the y knots the same way and takes the root in [0, 1] of
the quadratic a xi² + b xi + c = 0 of appendix A (eqs. 29-32),

    a = h_k (s_k - d_k) + (y - y_k) (d_{k+1} + d_k - 2 s_k)
    b = h_k d_k - (y - y_k) (d_{k+1} + d_k - 2 s_k)
    c = -s_k (y - y_k)

in the numerically stable form xi = 2c / (-b - sqrt(b² - 4ac)) (or its mirror image from the
bin's right end, see below); its log|dx/dy| is minus the forward one at that xi.

Two parameterisations map the unnormalised parameters u to shares and knot derivatives:

* "nflows" (nflows' `unconstrained_rational_quadratic_spline`, tails="linear"): the formulas
  above, with the minimum shares and derivative as arguments (default 1e-3 each);
* "zuko" (zuko 1.x `MonotonicRQSTransform`): each u is first softly clipped,
  u / (1 + |u| / c) with c = |log slope| / 2 for widths and heights and c = |log slope| for the
  inner derivatives, then shares = softmax (no minimum share) and d_k = exp(u) (so the slopes
  and the bins' size ratios stay within [slope, 1 / slope]); boundary derivatives exp(0) = 1.
  The clip is the "nflows" one with 1 / c = 0: u / (1 + 0) = u. As in zuko, the interval is
  (-B, B]: x = -B takes the identity (the same value, no gradient of the log-derivative).

float16 and bfloat16 inputs are computed in float32 and the results rounded back, as the
kernels do.
"""

import math

import torch
import torch.nn.functional as F

MIN_BIN_WIDTH = 1e-3
MIN_BIN_HEIGHT = 1e-3
MIN_DERIVATIVE = 1e-3
SLOPE = 1e-3  # zuko's default minimum slope
PARAMETERISATIONS = ("nflows", "zuko")


def _softmax(t):
    """softmax over the last dimension, written out: on a CPU torch.softmax over a last dimension
    of a few bins is 2.5 times slower than these elementwise passes. The maximum is subtracted
    for range only; softmax does not depend on it, so it is held constant for autograd."""
    e = torch.exp(t - t.amax(dim=-1, keepdim=True).detach())
    return e / e.sum(dim=-1, keepdim=True)


def soft_clip(u, inverse_scale):
    """zuko's soft clip u / (1 + |u| / c), with inverse_scale = 1 / c (0: no clip)."""
    if inverse_scale == 0:
        return u
    return u / (1 + inverse_scale * u.abs())


def clip_scales(parameterisation, slope):
    """(1 / c of widths and heights, 1 / c of the inner derivatives): 0 for "nflows"; for
    "zuko", c = |log slope| / 2 and |log slope|."""
    if parameterisation == "nflows":
        return 0.0, 0.0
    return 2 / abs(math.log(slope)), 1 / abs(math.log(slope))


def _knots(unnormalised, minimum, low, high, clip=0.0):
    """Knot positions (..., K + 1) on [low, high] from unnormalised bin sizes (..., K): soft
    clip, softmax, a minimum share per bin, cumulative sum."""
    K = unnormalised.shape[-1]
    share = _softmax(soft_clip(unnormalised, clip))
    if minimum:
        share = minimum + (1 - minimum * K) * share
    inner = (high - low) * torch.cumsum(share[..., :-1], dim=-1) + low
    # the ends exactly at low and high (the cumulative sum rounds): so y(±B) = ±B
    return torch.cat(
        [torch.full_like(inner[..., :1], low), inner, torch.full_like(inner[..., :1], high)], dim=-1
    )


def _knot_derivatives(
    unnormalised, ends_learned, parameterisation="nflows", minimum=MIN_DERIVATIVE, clip=0.0
):
    """(..., K + 1) derivatives at the knots from (..., K - 1) unnormalised inner ones (1 at
    both ends) or (..., K + 1) for all: minimum + softplus ("nflows") or exp of the
    soft-clipped value ("zuko")."""
    if parameterisation == "zuko":
        learned = torch.exp(soft_clip(unnormalised, clip))
    else:
        learned = minimum + F.softplus(unnormalised)
    if ends_learned:
        return learned
    one = torch.ones_like(learned[..., :1])
    return torch.cat([one, learned, one], dim=-1)


def spline_box(tail_bound, box=None):
    """(left, right, bottom, top): `box`, or [-B, B] x [-B, B] for B = tail_bound."""
    if box is not None:
        return tuple(float(v) for v in box)
    B = float(tail_bound)
    return -B, B, -B, B


def spline_knots(
    widths,
    heights,
    derivatives,
    tail_bound,
    parameterisation="nflows",
    min_bin_width=MIN_BIN_WIDTH,
    min_bin_height=MIN_BIN_HEIGHT,
    min_derivative=MIN_DERIVATIVE,
    slope=SLOPE,
    box=None,
):
    """(x knots, y knots, knot derivatives), each (..., K + 1): the spline that the unnormalised
    parameters describe (zuko's `horizontal`, `vertical` and `derivatives`)."""
    clip, clip_d = clip_scales(parameterisation, slope)
    if parameterisation == "zuko":
        min_bin_width = min_bin_height = 0.0
    left, right, bottom, top = spline_box(tail_bound, box)
    x_knots = _knots(widths, min_bin_width, left, right, clip)
    y_knots = _knots(heights, min_bin_height, bottom, top, clip)
    ends_learned = derivatives.shape[-1] == widths.shape[-1] + 1
    return (
        x_knots,
        y_knots,
        _knot_derivatives(derivatives, ends_learned, parameterisation, min_derivative, clip_d),
    )


def _bin_index(knots, v):
    """The bin of v: how many inner knots (1 .. K-1) are <= v, so in [0, K - 1]."""
    return (v[..., None] >= knots[..., 1:-1]).sum(dim=-1, keepdim=True)


def _bin_ends(x_knots, y_knots, d, index):
    """x_k, x_{k+1}, y_k, y_{k+1}, d_k, d_{k+1} of bin `index` (..., 1): one gather of the
    three knot tensors stacked (each op's dispatch is much of a small call's time)."""
    table = torch.stack([x_knots, y_knots, d], dim=-2)  # (..., 3, K + 1)
    ends = torch.cat([index, index + 1], dim=-1)[..., None, :].expand(*index.shape[:-1], 3, 2)
    ends = torch.gather(table, -1, ends)
    return [ends[..., row, end] for row in range(3) for end in range(2)]


def _log_derivative(xi, s, d_left, d_right):
    """log dy/dx of eq. (6) at xi in bin with slope s and knot derivatives d_left, d_right,
    summed in logs so that no product overflows."""
    t = xi * (1 - xi)
    numerator = d_right * xi.square() + 2 * s * t + d_left * (1 - xi).square()
    denominator = s + (d_right + d_left - 2 * s) * t
    return 2 * torch.log(s) + torch.log(numerator) - 2 * torch.log(denominator)


def rq_spline(
    x,
    widths,
    heights,
    derivatives,
    tail_bound=3.0,
    reverse=False,
    parameterisation="nflows",
    min_bin_width=MIN_BIN_WIDTH,
    min_bin_height=MIN_BIN_HEIGHT,
    min_derivative=MIN_DERIVATIVE,
    slope=SLOPE,
    box=None,
):
    """(y, logabsdet), both shaped like x: the rational-quadratic spline of x (or its inverse
    when `reverse`, then logabsdet = log|dx/dy|), elementwise, with parameters widths (..., K),
    heights (..., K) and derivatives (..., K - 1), or (..., K + 1) with the ends', per element
    of x (...). The minimum shares and derivative apply to parameterisation "nflows", `slope`
    to "zuko"; `box` (left, right, bottom, top) replaces [-B, B] x [-B, B].
    """
    if x.dtype in (torch.float16, torch.bfloat16):
        y, logabsdet = rq_spline(
            x.float(),
            widths.float(),
            heights.float(),
            derivatives.float(),
            tail_bound,
            reverse,
            parameterisation,
            min_bin_width,
            min_bin_height,
            min_derivative,
            slope,
            box,
        )
        return y.to(x.dtype), logabsdet.to(x.dtype)
    x_knots, y_knots, d = spline_knots(
        widths,
        heights,
        derivatives,
        tail_bound,
        parameterisation,
        min_bin_width,
        min_bin_height,
        min_derivative,
        slope,
        box,
    )
    left, right, bottom, top = spline_box(tail_bound, box)
    low, high = (bottom, top) if reverse else (left, right)  # the interval of the input
    # Evaluate the spline on clamped inputs everywhere (finite values and gradients), then keep
    # the identity outside: where clamping moved x (or x is NaN).
    v = x.clamp(low, high)
    inside = v == x
    if parameterisation == "zuko":
        # zuko's interval is (-B, B]: at -B both give y = -B, but the identity's
        # log-derivative has no gradient there
        inside = inside & (x > low)
    index = _bin_index(y_knots if reverse else x_knots, v)
    x_k, x_next, y_k, y_next, d_left, d_right = _bin_ends(x_knots, y_knots, d, index)
    w_k, h_k = x_next - x_k, y_next - y_k
    s = h_k / w_k
    if not reverse:
        xi = (v - x_k) / w_k
        t = xi * (1 - xi)
        out = y_k + h_k * (s * xi.square() + d_left * t) / (s + (d_right + d_left - 2 * s) * t)
        logabsdet = _log_derivative(xi, s, d_left, d_right)
    else:
        # Appendix A's quadratic a xi² + b xi + c = 0 (eqs. 29-32) with Δ = y - y_k and
        # Δ' = h_k - Δ: b = h_k d_k - Δ (d_{k+1} + d_k - 2 s_k) = m + 2 s_k Δ where
        # m = Δ' d_k - Δ d_{k+1}, c = -s_k Δ, and b² - 4ac = m² + 4 s_k² Δ Δ' (expanded: a sum
        # of squares, no cancellation). The stable root 2c / (-b - sqrt(b² - 4ac)) is
        # xi = 2 s_k Δ / (b + sqrt(...)), free of cancellation while b >= 0; the same bin read
        # from its right end (xi -> 1 - xi, Δ <-> Δ', d_k <-> d_{k+1}) gives
        # 1 - xi = 2 s_k Δ' / (b' + sqrt(...)) with b' = 2 s_k Δ' - m. As b + b' = 2 s_k h_k > 0,
        # one of b and b' is >= 0: take the form from the nearer knot if its b is, else the
        # other (2c / (-b - sqrt(...)) alone cancels where a steep knot derivative makes b very
        # negative).
        delta = v - y_k
        delta_next = h_k - delta
        m = delta_next * d_left - delta * d_right
        b = m + 2 * s * delta
        b_next = 2 * s * delta_next - m
        root = torch.sqrt(m.square() + 4 * s.square() * delta * delta_next)
        from_left = (b >= 0) & ((delta <= delta_next) | (b_next < 0))
        # (where, not maximum: at a tie the gradient must follow the form that was taken)
        q = (
            2
            * s
            * torch.where(from_left, delta, delta_next)
            / (torch.where(from_left, b, b_next) + root)
        )
        xi = torch.where(from_left, q, 1 - q)
        out = x_k + xi * w_k
        logabsdet = -_log_derivative(xi, s, d_left, d_right)
    out = torch.where(inside, out, x)
    logabsdet = torch.where(inside, logabsdet, 0.0)
    return out, logabsdet
