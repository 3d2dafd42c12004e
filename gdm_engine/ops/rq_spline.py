"""rq_spline: the monotonic rational-quadratic spline of Neural Spline Flows, elementwise, with
its log-derivative, forward or inverse, as a registered torch op.

Registered as `torch.library.custom_op`s (forward and backward): each chooses the Triton kernel
or the PyTorch reference when it runs (gdm_engine.backend). The Triton kernels hold the K bins
of an element in registers and support 2 <= K <= MAX_KERNEL_BINS; the reference takes any K >= 2.
Two parameterisations of the unnormalised parameters: nflows' (minimum shares and derivative,
softplus) and zuko's (soft clip by `slope`, exp derivatives); see gdm_engine.reference.rq_spline.
"""

import functools
import math
from collections.abc import Sequence
from typing import Any, Optional

import torch

from gdm_engine import backend, reference
from gdm_engine._validation import check_like, check_tensor
from gdm_engine.reference.rq_spline import (
    MIN_BIN_HEIGHT,
    MIN_BIN_WIDTH,
    MIN_DERIVATIVE,
    PARAMETERISATIONS,
    SLOPE,
    clip_scales,
    spline_box,
)

from ._autocast import autocast_inputs
from ._flow import reference_vjp
from .outputs import SplineOutput

MAX_KERNEL_BINS = 64  # the most bins the Triton kernels hold in registers without spilling
_NFLOWS_DEFAULTS = {
    "min_bin_width": MIN_BIN_WIDTH,
    "min_bin_height": MIN_BIN_HEIGHT,
    "min_derivative": MIN_DERIVATIVE,
}


def _kernels():
    from gdm_engine.kernels import rq_spline as kernels

    return kernels


@functools.lru_cache(maxsize=64)
def _kernel_parameterisation(
    parameterisation, min_bin_width, min_bin_height, min_derivative, slope
):
    """The kernels' Parameterisation (their minimum shares, soft clips and derivative map)."""
    clip, clip_derivative = clip_scales(parameterisation, slope)
    if parameterisation == "zuko":
        return _kernels().Parameterisation(0.0, 0.0, 0.0, clip, clip_derivative, True)
    return _kernels().Parameterisation(
        min_bin_width, min_bin_height, min_derivative, 0.0, 0.0, False
    )


def _flat(x, widths, heights, derivatives):
    """x as (N,) and the parameters as (N, K) and (N, K -/+ 1): views where the strides
    allow."""
    K = widths.shape[-1]
    return (
        x.reshape(-1),
        widths.reshape(-1, K),
        heights.reshape(-1, K),
        derivatives.reshape(-1, derivatives.shape[-1]),
    )


@torch.library.custom_op("gdm_engine::rq_spline", mutates_args=())
def library_op(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    tail_bound: float = 3.0,
    reverse: bool = False,
    parameterisation: str = "nflows",
    min_bin_width: float = 1e-3,
    min_bin_height: float = 1e-3,
    min_derivative: float = 1e-3,
    slope: float = 1e-3,
    box: list[float] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered op, unchecked: call `rq_spline`, which validates its inputs first."""
    form = (parameterisation, min_bin_width, min_bin_height, min_derivative, slope)
    if backend.resolve(x) == "triton":
        y, logabsdet = _kernels().rq_spline_forward(
            *_flat(x, widths, heights, derivatives),
            spline_box(tail_bound, box),
            bool(reverse),
            _kernel_parameterisation(*form),
        )
        return y.view(x.shape), logabsdet.view(x.shape)
    y, logabsdet = reference.rq_spline(
        x, widths, heights, derivatives, tail_bound, reverse, *form, box
    )
    return y.contiguous(), logabsdet.contiguous()


@library_op.register_fake
def _(
    x,
    widths,
    heights,
    derivatives,
    *,
    tail_bound=3.0,
    reverse=False,
    parameterisation="nflows",
    min_bin_width=1e-3,
    min_bin_height=1e-3,
    min_derivative=1e-3,
    slope=1e-3,
    box=None,
):
    return x.new_empty(x.shape), x.new_empty(x.shape)


@torch.library.custom_op("gdm_engine::rq_spline_backward", mutates_args=())
def _backward(
    grad_y: torch.Tensor,
    grad_logabsdet: torch.Tensor,
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    tail_bound: float,
    reverse: bool,
    parameterisation: str,
    min_bin_width: float,
    min_bin_height: float,
    min_derivative: float,
    slope: float,
    box: list[float] | None,
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dwidths, dheights, dderivatives) by the implementation that ran the forward pass."""
    form = (parameterisation, min_bin_width, min_bin_height, min_derivative, slope)
    if implementation == "triton":
        grads = _kernels().rq_spline_backward(
            grad_y.reshape(-1),
            grad_logabsdet.reshape(-1),
            *_flat(x, widths, heights, derivatives),
            spline_box(tail_bound, box),
            bool(reverse),
            _kernel_parameterisation(*form),
        )
        shapes = (x.shape, widths.shape, heights.shape, derivatives.shape)
        return tuple(g.view(shape) for g, shape in zip(grads, shapes))
    return reference_vjp(
        lambda x, w, h, d: reference.rq_spline(x, w, h, d, tail_bound, reverse, *form, box),
        (x, widths, heights, derivatives),
        (grad_y, grad_logabsdet),
    )


@_backward.register_fake
def _(
    grad_y,
    grad_logabsdet,
    x,
    widths,
    heights,
    derivatives,
    tail_bound,
    reverse,
    parameterisation,
    min_bin_width,
    min_bin_height,
    min_derivative,
    slope,
    box,
    implementation,
):
    return (
        x.new_empty(x.shape),
        widths.new_empty(widths.shape),
        heights.new_empty(heights.shape),
        derivatives.new_empty(derivatives.shape),
    )


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    ctx.save_for_backward(*inputs)
    kw = keyword_only_inputs
    ctx.config = (
        float(kw["tail_bound"]),
        bool(kw["reverse"]),
        kw["parameterisation"],
        kw["min_bin_width"],
        kw["min_bin_height"],
        kw["min_derivative"],
        kw["slope"],
        kw["box"],
        backend.resolve(inputs[0]),
    )


def _autograd_backward(ctx, grad_y, grad_logabsdet):
    return _backward(grad_y, grad_logabsdet, *ctx.saved_tensors, *ctx.config)


library_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def _check_number(name, value, low, high, rule):
    """A finite Python number (not a bool) with `rule(value)`; the message says [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not (math.isfinite(value) and rule(value)):
        raise ValueError(f"{name} must be in {low}, {high}, got {value!r}")


def resolve_parameterisation(
    parameterisation: str,
    K: int,
    min_bin_width: Optional[float] = None,
    min_bin_height: Optional[float] = None,
    min_derivative: Optional[float] = None,
    slope: Optional[float] = None,
) -> dict[str, Any]:
    """The library op's keyword arguments for a parameterisation, defaults filled in, after
    checking them: the minimum shares and derivative belong to "nflows" (each >= 0, a share
    times K at most 1, as nflows requires), `slope` to "zuko" (in (0, 1): its log clips)."""
    if not isinstance(parameterisation, str):
        raise TypeError(f"parameterisation must be a str, got {type(parameterisation).__name__}")
    if parameterisation not in PARAMETERISATIONS:
        raise ValueError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )
    mins = {
        "min_bin_width": min_bin_width,
        "min_bin_height": min_bin_height,
        "min_derivative": min_derivative,
    }
    if parameterisation == "zuko":
        for name, value in mins.items():
            if value is not None:
                raise ValueError(
                    f"{name} applies to parameterisation='nflows'; zuko's "
                    f"parameterisation takes slope, got {name}={value!r}"
                )
        slope = SLOPE if slope is None else slope
        _check_number("slope", slope, "(0", "1)", lambda v: 0 < v < 1)
        return {"parameterisation": "zuko", **_NFLOWS_DEFAULTS, "slope": float(slope)}
    if slope is not None:
        raise ValueError(f"slope applies to parameterisation='zuko', got slope={slope!r}")
    filled: dict[str, float] = {}
    for name, value in mins.items():
        filled[name] = _NFLOWS_DEFAULTS[name] if value is None else value
        if name == "min_derivative":
            _check_number(name, filled[name], "[0", "inf)", lambda v: v >= 0)
        else:
            _check_number(
                name, filled[name], "[0", f"1 / K = 1 / {K}]", lambda v: 0 <= v and v * K <= 1
            )
    return {
        "parameterisation": "nflows",
        **{n: float(v) for n, v in filled.items()},
        "slope": SLOPE,
    }


def _check_box(tail_bound, box):
    """tail_bound a positive finite number, or box four finite numbers with left < right and
    bottom < top; not both (tail_bound None: the default 3.0)."""
    if box is None:
        if tail_bound is None:
            return
        if isinstance(tail_bound, bool) or not isinstance(tail_bound, (int, float)):
            raise TypeError(f"tail_bound must be a number, got {type(tail_bound).__name__}")
        if not math.isfinite(tail_bound) or tail_bound <= 0:
            raise ValueError(f"tail_bound must be a positive finite number, got {tail_bound!r}")
        return
    if tail_bound is not None:
        raise ValueError(
            f"give tail_bound or box, not both (tail_bound={tail_bound!r}, box={box!r})"
        )
    if not isinstance(box, (tuple, list)) or len(box) != 4:
        raise TypeError(f"box must be a tuple (left, right, bottom, top), got {box!r}")
    for value in box:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"box must hold four numbers (left, right, bottom, top), got {box!r}")
    left, right, bottom, top = box
    if not (all(math.isfinite(v) for v in box) and left < right and bottom < top):
        raise ValueError(
            f"box (left, right, bottom, top) must be finite with left < right and "
            f"bottom < top, got {tuple(box)!r}"
        )


def check_inputs(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    tail_bound: Optional[float],
    reverse: bool,
    box: Optional[Sequence[float]] = None,
) -> None:
    """Raise ValueError/TypeError, naming the argument, for anything the op cannot compute."""
    check_tensor("x", x)
    for name, value in (("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        check_tensor(name, value)
        check_like(name, value, "x", x)
    if widths.ndim != x.ndim + 1 or widths.shape[:-1] != x.shape:
        raise ValueError(
            f"widths must have shape x.shape + (K,) = {tuple(x.shape)} + (K,), got "
            f"{tuple(widths.shape)}"
        )
    K = widths.shape[-1]
    if K < 2:
        raise ValueError(f"widths must have K >= 2 bins in its last dimension, got K = {K}")
    if heights.shape != widths.shape:
        raise ValueError(
            f"heights must have the shape of widths, {tuple(widths.shape)}, got "
            f"{tuple(heights.shape)}"
        )
    if derivatives.shape not in ((*x.shape, K - 1), (*x.shape, K + 1)):
        raise ValueError(
            f"derivatives must have shape x.shape + (K - 1,) = "
            f"{(*x.shape, K - 1)} (inner knots) or x.shape + (K + 1,) (all knots) "
            f"for K = {K} bins, got {tuple(derivatives.shape)}"
        )
    _check_box(tail_bound, box)
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    if K > MAX_KERNEL_BINS and backend.resolve(x) == "triton":
        raise ValueError(
            f"widths has K = {K} bins but the Triton kernels hold at most "
            f"{MAX_KERNEL_BINS}; use fewer bins or the reference backend"
        )


def rq_spline(
    x: torch.Tensor,
    widths: torch.Tensor,
    heights: torch.Tensor,
    derivatives: torch.Tensor,
    *,
    tail_bound: Optional[float] = None,
    reverse: bool = False,
    parameterisation: str = "nflows",
    min_bin_width: Optional[float] = None,
    min_bin_height: Optional[float] = None,
    min_derivative: Optional[float] = None,
    slope: Optional[float] = None,
    box: Optional[Sequence[float]] = None,
) -> SplineOutput:
    """Monotonic rational-quadratic spline with identity tails (Durkan et al., 2019), elementwise.

    x: (...) float tensor. widths, heights: (..., K) unnormalised bin widths and heights (softmax
    over K, each bin at least 1e-3 of the interval); derivatives: (..., K - 1) unnormalised
    derivatives at the inner knots (softplus + 1e-3; the derivatives at ±tail_bound are exactly 1,
    so the spline joins the identity smoothly). On [-tail_bound, tail_bound] (default 3.0) the
    spline maps x to y; outside it is the identity with zero log-derivative.

    nflows' tails=None spline (`rational_quadratic_spline`): box=(left, right, bottom, top)
    instead of tail_bound puts the x knots on [left, right] and the y knots on [bottom, top],
    and derivatives of shape (..., K + 1) give all knot derivatives, the ends' too, each
    min_derivative + softplus (zuko: exp). The identity still holds outside the box.

    Returns SplineOutput(y, logabsdet), both shaped like x: logabsdet = log|dy/dx| per element
    (the Jacobian is diagonal). With reverse=True the first argument is y and the op returns
    (x, log|dx/dy|), the inverse and minus the forward log-derivative. Gradients flow to every
    tensor argument.
    The convention is that of nflows' `unconstrained_rational_quadratic_spline` with
    tails="linear", but for the boundary derivatives, which are exactly 1 here; its
    min_bin_width, min_bin_height and min_derivative default to nflows' 1e-3.

    parameterisation="zuko" reads the parameters as zuko's `MonotonicRQSTransform` does: each
    softly clipped by `slope` (default 1e-3), softmax shares without a minimum, inner
    derivatives exp of the clipped value (and, as there, y = x outside [-B, B]).

    Args:
        x: (...) float input (y with reverse=True).
        widths: (..., K) unnormalised bin widths, K >= 2 (at most MAX_KERNEL_BINS on the
            Triton backend), x's dtype and device.
        heights: (..., K) unnormalised bin heights.
        derivatives: (..., K - 1) unnormalised inner-knot derivatives, or (..., K + 1) with
            the ends'.
        tail_bound: B > 0 of the interval [-B, B]; None: 3.0 (or `box`).
        reverse: compute the inverse.
        parameterisation: "nflows" or "zuko".
        min_bin_width: nflows' minimum share of a bin (share · K <= 1); None: 1e-3.
        min_bin_height: the same for the heights; None: 1e-3.
        min_derivative: nflows' minimum derivative (>= 0); None: 1e-3.
        slope: zuko's soft clip, in (0, 1); None: 1e-3.
        box: (left, right, bottom, top), finite with left < right and bottom < top, instead
            of tail_bound; None: [-B, B] x [-B, B].

    Returns:
        SplineOutput(y, logabsdet), both shaped like x.

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype than x, a
            number argument not a number, reverse not a bool, parameterisation not a str, or
            box not four numbers.
        ValueError: parameter tensors of the wrong shapes or on another device, K < 2 (or
            above MAX_KERNEL_BINS on Triton), tail_bound and box both given or out of range,
            an unknown parameterisation, a setting of the other parameterisation, or a
            minimum or slope out of range.
    """
    x, widths, heights, derivatives = autocast_inputs("rq_spline", x, widths, heights, derivatives)
    check_inputs(x, widths, heights, derivatives, tail_bound, reverse, box)
    form = resolve_parameterisation(
        parameterisation, widths.shape[-1], min_bin_width, min_bin_height, min_derivative, slope
    )
    where = (
        {"box": [float(v) for v in box]}
        if box is not None
        else {"tail_bound": 3.0 if tail_bound is None else float(tail_bound)}
    )
    return SplineOutput(
        *library_op(x, widths, heights, derivatives, reverse=reverse, **where, **form)
    )
