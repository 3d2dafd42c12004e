"""nflows' rational-quadratic spline functions over the engine's `rq_spline` op, and `patch()`,
which makes nflows' (and normflows') spline transforms call them.

    from gdm_engine.integrations import nflows as fast
    with fast.patch():
        flow.log_prob(x)    # PiecewiseRationalQuadraticCouplingTransform(tails="linear") etc.

`unconstrained_rational_quadratic_spline` has nflows' signature and defaults (tails="linear",
tail_bound=1.0, minimum bin width, height and derivative 1e-3). With tails="linear" it is one
fused kernel per call, forward or inverse with its log-derivative: the spline on
[-tail_bound, tail_bound] with the boundary derivatives nflows' constant
log(exp(1 - min_derivative) - 1) gives (1 after its softplus, so the spline starts out joining
the identity tails smoothly; exactly 1 here, 1 up to rounding in nflows), the identity with
log-derivative 0 outside. What nflows does with read-backs — `torch.any(inside)` before calling
the spline, boolean-mask indexing (a `nonzero`) to gather the inside elements, and the
rational_quadratic_spline's domain check `torch.min(inputs) < left` that raises
InputOutsideDomain — the drop-in does without: the kernel tests each element against the
interval on the device and takes the identity outside it, so no input can be outside the
spline's domain and nothing is read back.

Falls back to upstream's own function (the same result, upstream's speed) for what the op does
not express: tails other than "linear" (nflows raises for them; normflows' "circular" and
per-feature tails) and a tensor tail_bound (normflows). `rational_quadratic_spline` (nflows'
tails=None spline on a box [left, right] x [bottom, top] whose boundary derivatives are learned
too) is upstream's function: the op has no learned boundary derivatives nor an asymmetric box;
`patch()` leaves it as it is.
"""

import contextlib
import functools
import importlib

import torch

from gdm_engine import ops
from gdm_engine.integrations import require

splines = require("nflows.transforms.splines", "nflows")
rational_quadratic = require("nflows.transforms.splines.rational_quadratic", "nflows")

DEFAULT_MIN_BIN_WIDTH = rational_quadratic.DEFAULT_MIN_BIN_WIDTH
DEFAULT_MIN_BIN_HEIGHT = rational_quadratic.DEFAULT_MIN_BIN_HEIGHT
DEFAULT_MIN_DERIVATIVE = rational_quadratic.DEFAULT_MIN_DERIVATIVE


def _fused(upstream):
    """nflows' `unconstrained_rational_quadratic_spline` signature over the op, calling
    `upstream` (nflows' or normflows' own function) for what the op cannot express."""

    @functools.wraps(upstream)
    def unconstrained_rational_quadratic_spline(
            inputs, unnormalized_widths, unnormalized_heights, unnormalized_derivatives,
            inverse=False, tails="linear", tail_bound=1.0, min_bin_width=DEFAULT_MIN_BIN_WIDTH,
            min_bin_height=DEFAULT_MIN_BIN_HEIGHT, min_derivative=DEFAULT_MIN_DERIVATIVE):
        if not (isinstance(tails, str) and tails == "linear") or torch.is_tensor(tail_bound):
            return upstream(inputs, unnormalized_widths, unnormalized_heights,
                            unnormalized_derivatives, inverse=inverse, tails=tails,
                            tail_bound=tail_bound, min_bin_width=min_bin_width,
                            min_bin_height=min_bin_height, min_derivative=min_derivative)
        return ops.rq_spline(inputs, unnormalized_widths, unnormalized_heights,
                             unnormalized_derivatives, tail_bound=float(tail_bound),
                             reverse=bool(inverse), min_bin_width=float(min_bin_width),
                             min_bin_height=float(min_bin_height),
                             min_derivative=float(min_derivative))

    unconstrained_rational_quadratic_spline.__doc__ = (
        "nflows' unconstrained_rational_quadratic_spline (same arguments, same (outputs, "
        "logabsdet)), one fused gdm_engine.ops.rq_spline call for tails='linear' with no read-"
        "back; upstream's function otherwise. See gdm_engine.integrations.nflows.")
    return unconstrained_rational_quadratic_spline


unconstrained_rational_quadratic_spline = _fused(
    rational_quadratic.unconstrained_rational_quadratic_spline)

# nflows' tails=None spline: upstream's (see the module's docstring)
rational_quadratic_spline = rational_quadratic.rational_quadratic_spline


def _targets():
    """(module, drop-in) for every place the spline transforms look the function up at call
    time: nflows' splines package (coupling and nonlinearities call splines.<name>), its
    rational_quadratic module, its autoregressive module (which imported the name), and
    normflows' own copy where normflows is installed."""
    found = [(splines, unconstrained_rational_quadratic_spline),
             (rational_quadratic, unconstrained_rational_quadratic_spline),
             (importlib.import_module("nflows.transforms.autoregressive"),
              unconstrained_rational_quadratic_spline)]
    try:
        normflows_splines = importlib.import_module("normflows.utils.splines")
    except ImportError:
        return found
    return found + [(normflows_splines,
                     _fused(normflows_splines.unconstrained_rational_quadratic_spline))]


@contextlib.contextmanager
def patch():
    """Within the block, nflows' spline transforms (PiecewiseRationalQuadraticCoupling-,
    MaskedPiecewiseRationalQuadraticAutoregressive- and PiecewiseRationalQuadraticCDF with
    tails="linear") and normflows' (its own copy of the functions) run the fused op. Restores
    upstream's functions on exit, also after an exception; nests."""
    name = "unconstrained_rational_quadratic_spline"
    saved = []
    try:
        for module, drop_in in _targets():
            saved.append((module, getattr(module, name)))
            setattr(module, name, drop_in)
        yield
    finally:
        for module, original in reversed(saved):
            setattr(module, name, original)


def benchmark_pairs(size):
    """[(name, case, upstream, dropin)]: zero-argument callables running one call of nflows'
    spline function and the same call of the drop-in, forward and inverse, on CPU tensors built
    once. size: "tiny" or "medium"."""
    if size not in ("tiny", "medium"):
        raise ValueError(f"size must be 'tiny' or 'medium', got {size!r}")
    n, features, K, B = (64, 4, 8, 3.0) if size == "tiny" else (4096, 16, 8, 3.0)
    generator = torch.Generator().manual_seed(0)
    x = (2 * torch.rand(n, features, generator=generator) - 1) * 1.2 * B
    params = [torch.randn(n, features, k, generator=generator) for k in (K, K, K - 1)]
    case = f"x=({n}, {features}) K={K} B={B:g}"
    upstream = rational_quadratic.unconstrained_rational_quadratic_spline
    pairs = []
    for inverse in (False, True):
        def run(fn, inverse=inverse):
            return lambda: fn(x, *params, inverse=inverse, tails="linear", tail_bound=B)

        name = f"unconstrained_rational_quadratic_spline{' inverse' if inverse else ''}"
        pairs.append((name, case, run(upstream), run(unconstrained_rational_quadratic_spline)))
    return pairs
