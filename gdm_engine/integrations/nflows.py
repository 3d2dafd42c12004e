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

`rational_quadratic_spline` (nflows' tails=None spline on a box [left, right] x [bottom, top]
whose K + 1 knot derivatives are all learned) is the op with `box` and K + 1 derivatives: one
launch too. nflows checks its inputs with `torch.min(inputs) < left` and raises
InputOutsideDomain; the drop-in checks CPU inputs from host memory (nothing dispatched) against
the input's side of the box ([left, right] forward, [bottom, top] inverse; nflows tests
[left, right] both ways, the same for its default unit box) and raises the same; device inputs
are not read back, and an element outside the box passes through (the identity, log-derivative
0).

Falls back to upstream's own function (the same result, upstream's speed) for what the op does
not express: tails other than "linear" (nflows raises for them; normflows' "circular" and
per-feature tails, whose inner call is then the fused `rational_quadratic_spline`), and tensor
bounds (normflows' tail_bound, left, right, bottom, top).
"""

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Union

import torch

from gdm_engine import ops
from gdm_engine._validation import host_values
from gdm_engine.integrations import BenchmarkPair, require

splines = require("nflows.transforms.splines", "nflows")
rational_quadratic = require("nflows.transforms.splines.rational_quadratic", "nflows")
InputOutsideDomain = require("nflows.transforms.base", "nflows").InputOutsideDomain

# a spline function's (outputs, logabsdet)
_Spline = tuple[torch.Tensor, torch.Tensor]
# a bound: a float, or (upstream's fallback) normflows' tensor bounds
_Bound = Union[float, torch.Tensor]

DEFAULT_MIN_BIN_WIDTH = rational_quadratic.DEFAULT_MIN_BIN_WIDTH
DEFAULT_MIN_BIN_HEIGHT = rational_quadratic.DEFAULT_MIN_BIN_HEIGHT
DEFAULT_MIN_DERIVATIVE = rational_quadratic.DEFAULT_MIN_DERIVATIVE


def _fused(upstream: Callable[..., _Spline]) -> Callable[..., _Spline]:
    """nflows' `unconstrained_rational_quadratic_spline` signature over the op, calling
    `upstream` (nflows' or normflows' own function) for what the op cannot express."""

    @functools.wraps(upstream)
    def unconstrained_rational_quadratic_spline(
        inputs: torch.Tensor,
        unnormalized_widths: torch.Tensor,
        unnormalized_heights: torch.Tensor,
        unnormalized_derivatives: torch.Tensor,
        inverse: bool = False,
        tails: Any = "linear",
        tail_bound: _Bound = 1.0,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    ) -> _Spline:
        if not (isinstance(tails, str) and tails == "linear") or torch.is_tensor(tail_bound):
            return upstream(
                inputs,
                unnormalized_widths,
                unnormalized_heights,
                unnormalized_derivatives,
                inverse=inverse,
                tails=tails,
                tail_bound=tail_bound,
                min_bin_width=min_bin_width,
                min_bin_height=min_bin_height,
                min_derivative=min_derivative,
            )
        return ops.rq_spline(
            inputs,
            unnormalized_widths,
            unnormalized_heights,
            unnormalized_derivatives,
            tail_bound=float(tail_bound),
            reverse=bool(inverse),
            min_bin_width=float(min_bin_width),
            min_bin_height=float(min_bin_height),
            min_derivative=float(min_derivative),
        )

    unconstrained_rational_quadratic_spline.__doc__ = (
        "nflows' unconstrained_rational_quadratic_spline (same arguments, same (outputs, "
        "logabsdet)), one fused gdm_engine.ops.rq_spline call for tails='linear' with no read-"
        "back; upstream's function otherwise. See gdm_engine.integrations.nflows."
    )
    return unconstrained_rational_quadratic_spline


unconstrained_rational_quadratic_spline = _fused(
    rational_quadratic.unconstrained_rational_quadratic_spline
)


def _check_domain(inputs: torch.Tensor, low: float, high: float) -> None:
    """nflows' InputOutsideDomain for a CPU tensor with values outside [low, high], read from
    host memory; device tensors are not read (that would sync)."""
    values = host_values(inputs)
    if values is not None and values.size and (values.min() < low or values.max() > high):
        raise InputOutsideDomain()


def _fused_box(upstream: Callable[..., _Spline], check_domain: bool) -> Callable[..., _Spline]:
    """nflows' `rational_quadratic_spline` signature over the op, calling `upstream` (nflows' or
    normflows' own function) for tensor bounds; `check_domain`: raise as nflows does for
    inputs outside the box (normflows does not check)."""

    @functools.wraps(upstream)
    def rational_quadratic_spline(
        inputs: torch.Tensor,
        unnormalized_widths: torch.Tensor,
        unnormalized_heights: torch.Tensor,
        unnormalized_derivatives: torch.Tensor,
        inverse: bool = False,
        left: _Bound = 0.0,
        right: _Bound = 1.0,
        bottom: _Bound = 0.0,
        top: _Bound = 1.0,
        min_bin_width: float = DEFAULT_MIN_BIN_WIDTH,
        min_bin_height: float = DEFAULT_MIN_BIN_HEIGHT,
        min_derivative: float = DEFAULT_MIN_DERIVATIVE,
    ) -> _Spline:
        box = (left, right, bottom, top)
        if any(torch.is_tensor(v) for v in box):
            return upstream(
                inputs,
                unnormalized_widths,
                unnormalized_heights,
                unnormalized_derivatives,
                inverse=inverse,
                left=left,
                right=right,
                bottom=bottom,
                top=top,
                min_bin_width=min_bin_width,
                min_bin_height=min_bin_height,
                min_derivative=min_derivative,
            )
        bounds = tuple(float(v) for v in box)  # no tensor among them (above)
        if check_domain:
            _check_domain(inputs, *(bounds[2:] if inverse else bounds[:2]))
        return ops.rq_spline(
            inputs,
            unnormalized_widths,
            unnormalized_heights,
            unnormalized_derivatives,
            box=bounds,
            reverse=bool(inverse),
            min_bin_width=float(min_bin_width),
            min_bin_height=float(min_bin_height),
            min_derivative=float(min_derivative),
        )

    rational_quadratic_spline.__doc__ = (
        "nflows' rational_quadratic_spline (same arguments, same (outputs, logabsdet)), one "
        "fused gdm_engine.ops.rq_spline call on the box with K + 1 learned derivatives; CPU "
        "inputs outside the box raise InputOutsideDomain. See gdm_engine.integrations.nflows."
    )
    return rational_quadratic_spline


rational_quadratic_spline = _fused_box(
    rational_quadratic.rational_quadratic_spline, check_domain=True
)

_NAMES = ("unconstrained_rational_quadratic_spline", "rational_quadratic_spline")


def _targets() -> list[tuple[ModuleType, str, Callable[..., _Spline]]]:
    """(module, name, drop-in) for every place the spline transforms look the functions up at
    call time: nflows' splines package (coupling and nonlinearities call splines.<name>), its
    rational_quadratic module, its autoregressive module (which imported the names), and
    normflows' own copies where normflows is installed."""
    drop_ins = {
        "unconstrained_rational_quadratic_spline": unconstrained_rational_quadratic_spline,
        "rational_quadratic_spline": rational_quadratic_spline,
    }
    modules = [
        splines,
        rational_quadratic,
        importlib.import_module("nflows.transforms.autoregressive"),
    ]
    found = [(module, name, drop_ins[name]) for module in modules for name in _NAMES]
    try:
        normflows_splines = importlib.import_module("normflows.utils.splines")
    except ImportError:
        return found
    return found + [
        (
            normflows_splines,
            _NAMES[0],
            _fused(normflows_splines.unconstrained_rational_quadratic_spline),
        ),
        (
            normflows_splines,
            _NAMES[1],
            _fused_box(normflows_splines.rational_quadratic_spline, check_domain=False),
        ),
    ]


@contextlib.contextmanager
def patch() -> Iterator[None]:
    """Within the block, nflows' spline transforms (PiecewiseRationalQuadraticCoupling-,
    MaskedPiecewiseRationalQuadraticAutoregressive- and PiecewiseRationalQuadraticCDF, with
    tails="linear" or tails=None) and normflows' (its own copy of the functions) run the fused
    op. Restores upstream's functions on exit, also after an exception; nests. The splines:
    Durkan et al. (2019), "Neural Spline Flows".

    Returns:
        A context manager (a `with` block), yielding nothing.
    """
    saved: list[tuple[ModuleType, str, Any]] = []
    try:
        for module, name, drop_in in _targets():
            saved.append((module, name, getattr(module, name)))
            setattr(module, name, drop_in)
        yield
    finally:
        for module, name, original in reversed(saved):
            setattr(module, name, original)


def benchmark_pairs(size: str) -> list[BenchmarkPair]:
    """[(name, case, upstream, dropin)]: zero-argument callables running one call of nflows'
    spline functions and the same call of the drop-ins, forward and inverse, on CPU tensors
    built once: `unconstrained_rational_quadratic_spline` (linear tails, about a sixth of the
    inputs in them) and `rational_quadratic_spline` (the unit box). size: "tiny" or "medium".

    Args:
        size: "tiny" or "medium".

    Returns:
        Four pairs: each function forward and inverse.

    Raises:
        ValueError: another size.
    """
    if size not in ("tiny", "medium"):
        raise ValueError(f"size must be 'tiny' or 'medium', got {size!r}")
    n, features, K, B = (64, 4, 8, 3.0) if size == "tiny" else (4096, 16, 8, 3.0)
    generator = torch.Generator().manual_seed(0)
    x = (2 * torch.rand(n, features, generator=generator) - 1) * 1.2 * B
    unit = torch.rand(n, features, generator=generator)
    params = [torch.randn(n, features, k, generator=generator) for k in (K, K, K - 1)]
    all_derivatives = torch.randn(n, features, K + 1, generator=generator)
    calls: list[tuple[Callable[..., _Spline], Any, tuple[torch.Tensor, ...], dict[str, Any], str]]
    calls = [
        (
            unconstrained_rational_quadratic_spline,
            rational_quadratic.unconstrained_rational_quadratic_spline,
            (x, *params),
            {"tails": "linear", "tail_bound": B},
            f"x=({n}, {features}) K={K} B={B:g}",
        ),
        (
            rational_quadratic_spline,
            rational_quadratic.rational_quadratic_spline,
            (unit, *params[:2], all_derivatives),
            {},
            f"x=({n}, {features}) K={K} box=[0, 1]²",
        ),
    ]
    pairs: list[BenchmarkPair] = []
    for drop_in, upstream, args, kwargs, case in calls:
        for inverse in (False, True):

            def run(
                fn: Callable[..., _Spline],
                args: tuple[torch.Tensor, ...] = args,
                kwargs: dict[str, Any] = kwargs,
                inverse: bool = inverse,
            ) -> Callable[[], _Spline]:
                return lambda: fn(*args, inverse=inverse, **kwargs)

            name = f"{drop_in.__name__}{' inverse' if inverse else ''}"
            pairs.append((name, case, run(upstream), run(drop_in)))
    return pairs
