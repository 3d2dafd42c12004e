"""zuko's monotonic rational-quadratic spline (zuko 1.x) over the engine's `rq_spline` op.

`MonotonicRQSTransform` is zuko's class (a subclass): same arguments, same function — zuko's
parameterisation (each unnormalised width and height softly clipped, u / (1 + |2u / log slope|),
then a softmax; inner derivatives exp(u / (1 + |u / log slope|)), boundary derivatives 1; the
identity outside [-bound, bound]) — but each call is one fused kernel (forward or inverse, with
its log-derivative) instead of zuko's chain of tensor ops, and the knots are never built in
memory. `NSF` is zuko's neural spline flow whose splines are this transform; `accelerate(flow)`
swaps it into an existing zuko flow (NSF or any masked autoregressive flow with zuko's spline).

    from gdm_engine.integrations.zuko import NSF
    flow = NSF(features=3, context=0, bins=8, transforms=3)
    flow().log_prob(x)                                  # as zuko's NSF, the fused op underneath

Numbers: the same function to rounding (the op puts the outer knots exactly at ±bound where
zuko's cumulative sum rounds; its inverse takes the cancellation-free root of appendix A of
Durkan et al., 2019, where zuko's can lose digits next to steep knots).
"""

import functools
import weakref
from collections.abc import Callable
from typing import Any, Optional, TypeVar, cast

import torch
from torch.distributions import Transform
from torch.distributions.transforms import _InverseTransform

from gdm_engine import ops
from gdm_engine.integrations import BenchmarkPair, require
from gdm_engine.ops.outputs import SplineOutput
from gdm_engine.reference.rq_spline import spline_knots

# zuko's modules, imported by name; Any to the type checker (zuko ships no type information),
# so that its classes can be the bases below
zuko_transforms: Any = require("zuko.transforms", "zuko")
zuko_flows: Any = require("zuko.flows", "zuko")
zuko_autoregressive: Any = require("zuko.flows.autoregressive", "zuko")

_Flow = TypeVar("_Flow", bound=torch.nn.Module)


class MonotonicRQSTransform(zuko_transforms.MonotonicRQSTransform):
    """zuko's `MonotonicRQSTransform(widths, heights, derivatives, bound=5.0, slope=1e-3)`, each
    call one `gdm_engine.ops.rq_spline` kernel (parameterisation="zuko").

    widths, heights: (*, K); derivatives: (*, K - 1), unconstrained, as zuko takes them; they
    broadcast against the input's shape as zuko's do. The knots (`horizontal`, `vertical`,
    `derivatives`) are computed only when read. The spline: Durkan et al. (2019), "Neural Spline
    Flows".

    Args:
        widths: unconstrained bin widths (*, K).
        heights: unconstrained bin heights (*, K).
        derivatives: unconstrained inner knot derivatives (*, K - 1).
        bound: the spline's (co)domain is [-bound, bound]; the identity outside.
        slope: the minimum slope of the transformation.
        **kwargs: torch's Transform arguments (cache_size).
    """

    _inv: Optional["weakref.ReferenceType[_Inverse]"]  # torch's: the inverse, held weakly

    def __init__(
        self,
        widths: torch.Tensor,
        heights: torch.Tensor,
        derivatives: torch.Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        **kwargs: Any,
    ):
        # zuko's __init__ builds the knots eagerly (clip, softmax, cumsum, exp: a dozen device
        # ops per transform); the kernel builds them per element from the unconstrained values,
        # so only Transform's own initialisation runs here.
        Transform.__init__(self, **kwargs)
        self.unconstrained = (widths, heights, derivatives)
        self.bound = bound
        self.slope = slope
        # the latest call: x, y (with their versions), its log-derivative and its direction
        self._last: Optional[tuple[torch.Tensor, int, torch.Tensor, int, torch.Tensor, bool]] = None

    @property
    def bins(self) -> int:
        """The number of bins K."""
        return self.unconstrained[0].shape[-1]

    def _knots(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return spline_knots(*self.unconstrained, self.bound, "zuko", slope=self.slope)

    # zuko's attributes, for code that reads them (built from the same parameters on demand)
    @property
    def horizontal(self) -> torch.Tensor:
        """zuko's x knots (*, K + 1), from -bound to bound."""
        return self._knots()[0]

    @property
    def vertical(self) -> torch.Tensor:
        """zuko's y knots (*, K + 1), from -bound to bound."""
        return self._knots()[1]

    @property
    def derivatives(self) -> torch.Tensor:
        """zuko's knot derivatives (*, K + 1), 1 at the boundary knots."""
        return self._knots()[2]

    def _spline(self, value: torch.Tensor, reverse: bool) -> SplineOutput:
        """(output, log|d output / d value|) by the fused op, parameters broadcast (as views)."""
        tensors: tuple[torch.Tensor, ...] = (value, *self.unconstrained)
        shapes = [value.shape] + [t.shape[:-1] for t in self.unconstrained]
        if any(shape != value.shape for shape in shapes):
            # (torch.broadcast_shapes alone costs about a fifth of a small call: only here)
            shape = torch.broadcast_shapes(*shapes)
            tensors = (
                value.expand(shape),
                *(t.expand(*shape, t.shape[-1]) for t in self.unconstrained),
            )
        return ops.rq_spline(
            *tensors,
            tail_bound=float(self.bound),
            reverse=reverse,
            parameterisation="zuko",
            slope=float(self.slope),
        )

    def _remember(
        self, x: torch.Tensor, y: torch.Tensor, ladj: torch.Tensor, reverse: bool
    ) -> None:
        self._last = (x, x._version, y, y._version, ladj, reverse)

    def _remembered(
        self, x: torch.Tensor, y: torch.Tensor, reverse: bool
    ) -> Optional[torch.Tensor]:
        """The log-derivative of the latest call if it mapped x to y (or y to x) in direction
        `reverse` and neither tensor was changed in place since; else None."""
        if self._last is None:
            return None
        last_x, x_version, last_y, y_version, ladj, last_reverse = self._last
        if (
            x is last_x
            and y is last_y
            and x._version == x_version
            and y._version == y_version
            and reverse == last_reverse
        ):
            return ladj
        return None

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        y, ladj = self._spline(x, reverse=False)
        self._remember(x, y, ladj, False)
        return y

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        x, inverse_ladj = self._spline(y, reverse=True)
        self._remember(x, y, inverse_ladj, True)
        return x

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log|dy/dx| per element, as zuko's: the kernel that computed y from x computed it too,
        so it is reused; else one forward call.

        Args:
            x: the input.
            y: the transform's output at x.

        Returns:
            log|dy/dx|, shaped like x.
        """
        ladj = self._remembered(x, y, reverse=False)
        return self.call_and_ladj(x)[1] if ladj is None else ladj

    def call_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(y, log|dy/dx|) in one kernel call, as zuko's.

        Args:
            x: the input.

        Returns:
            The output and its log-derivative per element, both shaped like x.
        """
        return self._spline(x, reverse=False)

    @property
    def inv(self) -> Transform:
        """The inverse transform (as torch's `inv`, held weakly), whose `call_and_ladj` is one
        inverse kernel call: torch's would call the inverse, then the forward for the ladj."""
        inverse = self._inv() if self._inv is not None else None
        if inverse is None:
            inverse = _Inverse(self)
            self._inv = weakref.ref(inverse)
        return inverse


class _Inverse(_InverseTransform):
    """torch's inverse of a transform, with the drop-in's one-call inverse and log-derivative."""

    @property
    def _forward(self) -> MonotonicRQSTransform:
        """The transform this inverts (only MonotonicRQSTransform.inv builds one)."""
        return cast(MonotonicRQSTransform, self._inv)

    def call_and_ladj(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._forward._spline(y, reverse=True)

    # (y, x): positional as torch's (x, y), named for the forward transform's input and output
    def log_abs_det_jacobian(  # type: ignore[override]
        self, y: torch.Tensor, x: torch.Tensor
    ) -> torch.Tensor:
        ladj = self._forward._remembered(x, y, reverse=True)
        return -self._forward.log_abs_det_jacobian(x, y) if ladj is None else ladj


def accelerate(flow: _Flow, slope: Optional[float] = None) -> _Flow:
    """`flow` (a zuko Flow or lazy transform) with every masked autoregressive transform whose
    univariate transform is zuko's `MonotonicRQSTransform` running this one: the same
    parameters and networks, the fused op underneath. Returns the flow (changed in place).

    Args:
        flow: a zuko Flow or LazyTransform (any torch module holding zuko's masked
            autoregressive transforms).
        slope: the splines' minimum slope (None: each transform's own).

    Returns:
        `flow` itself, changed in place.
    """
    for module in flow.modules():
        if not isinstance(module, zuko_autoregressive.MaskedAutoregressiveTransform):
            continue
        univariate = module.univariate
        keywords: dict[str, Any] = {}
        if isinstance(univariate, functools.partial):
            keywords = univariate.keywords
            univariate = univariate.func
        if univariate is zuko_transforms.MonotonicRQSTransform:
            if slope is not None:
                keywords = {**keywords, "slope": slope}
            module.univariate = functools.partial(MonotonicRQSTransform, **keywords)
    return flow


class NSF(zuko_flows.NSF):
    """zuko's `NSF(features, context=0, bins=8, slope=1e-3, **kwargs)` (a subclass) whose
    splines run the fused op: built as zuko builds it (same parameters, same initialisation for
    the same seed), then `accelerate`d. The flow: Durkan et al. (2019), "Neural Spline Flows".

    Args:
        features: the number of features.
        context: the number of context features.
        bins: the number of bins K.
        slope: the splines' minimum slope.
        **kwargs: zuko's MAF arguments (transforms, hidden_features, passes, ...).
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        bins: int = 8,
        slope: float = 1e-3,
        **kwargs: Any,
    ):
        super().__init__(features, context, bins, slope, **kwargs)
        accelerate(self)


def benchmark_pairs(size: str) -> list[BenchmarkPair]:
    """[(name, case, upstream, dropin)]: zero-argument callables running one call of zuko's
    spline and the same call of the drop-in, on CPU tensors built once. size: "tiny" or
    "medium".

    Args:
        size: "tiny" or "medium".

    Returns:
        The pairs: the transform's forward and inverse call_and_ladj, and an NSF's log_prob.

    Raises:
        ValueError: another size.
    """
    if size not in ("tiny", "medium"):
        raise ValueError(f"size must be 'tiny' or 'medium', got {size!r}")
    n, features, K = (64, 4, 8) if size == "tiny" else (4096, 16, 8)
    generator = torch.Generator().manual_seed(0)
    x = 6 * torch.rand(n, features, generator=generator) - 3
    params = [torch.randn(n, features, k, generator=generator) for k in (K, K, K - 1)]
    case = f"x=({n}, {features}) K={K}"

    def forward(cls: Any) -> Callable[[], object]:
        return lambda: cls(*params).call_and_ladj(x)

    def inverse(cls: Any) -> Callable[[], object]:
        return lambda: cls(*params).inv.call_and_ladj(x)

    def flow_log_prob(cls: Any) -> Callable[[], object]:
        torch.manual_seed(0)
        flow = cls(features, bins=K, transforms=2, hidden_features=(32, 32))
        data = x[: min(n, 256)]
        return lambda: flow().log_prob(data)

    pairs: list[BenchmarkPair] = []
    for name, make in (
        ("MonotonicRQSTransform.call_and_ladj", forward),
        ("MonotonicRQSTransform.inv.call_and_ladj", inverse),
    ):
        pairs.append(
            (name, case, make(zuko_transforms.MonotonicRQSTransform), make(MonotonicRQSTransform))
        )
    pairs.append(
        (
            "NSF.log_prob",
            f"x=({min(n, 256)}, {features}) K={K} 2 transforms",
            flow_log_prob(zuko_flows.NSF),
            flow_log_prob(NSF),
        )
    )
    return pairs
