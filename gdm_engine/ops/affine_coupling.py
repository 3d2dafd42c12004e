"""affine_coupling: the affine coupling transform of RealNVP / Glow with its log-det, fused.

The public function checks its inputs and brings the mask to a compact bool tensor of shape
(1, *x.shape[1:]) (one mask shared by the batch, never copied per example) or x.shape, then calls
the registered op, a `torch.library.custom_op` with a fake implementation and a registered
backward op; each chooses the Triton kernel or the PyTorch reference when it runs
(gdm_engine.backend).

A mask's values (all 0 or 1) are checked, and its compact form built, once per mask tensor, and
again only after it changes in place: a steady-state call with the same mask (a coupling layer's
buffer) reads nothing back and launches nothing for it.
"""

import math
from typing import Optional

import torch
from torch.utils.weak import WeakIdKeyDictionary

from gdm_engine import backend, reference
from gdm_engine._validation import check_choice, check_shape_of, check_tensor
from gdm_engine.reference.affine_coupling import SCALE_MAPS

from ._autocast import autocast_inputs
from ._flow import check_positive, logdet_dtype, reference_vjp
from .outputs import FlowOutput


def _kernels():
    from gdm_engine.kernels import affine_coupling as kernels

    return kernels


def _rows(t):
    """(M, D) view (or copy) of an (M, ...) tensor; None stays None."""
    return t.reshape(t.shape[0], math.prod(t.shape[1:])) if t is not None else None


@torch.library.custom_op("gdm_engine::affine_coupling", mutates_args=())
def library_op(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale_raw: torch.Tensor,
    mask: Optional[torch.Tensor] = None,
    *,
    scale_map: str = "exp",
    reverse: bool = False,
    clamp: float = 3.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered op, unchecked, for a bool mask of shape (1, *x.shape[1:]) or x.shape (see
    `compact_mask`): call `affine_coupling`, which validates first."""
    if backend.resolve(x) == "triton":
        y, logdet = _kernels().affine_coupling_forward(
            _rows(x), _rows(shift), _rows(scale_raw), _rows(mask), scale_map, reverse, clamp
        )
        return y.view(x.shape), logdet
    y, logdet = reference.affine_coupling(
        x, shift, scale_raw, scale_map=scale_map, mask=mask, reverse=reverse, clamp=clamp
    )
    return y.contiguous(), logdet.contiguous()


@library_op.register_fake
def _(x, shift, scale_raw, mask=None, *, scale_map="exp", reverse=False, clamp=3.0):
    return x.new_empty(x.shape), x.new_empty(x.shape[:1], dtype=logdet_dtype(x))


@torch.library.custom_op("gdm_engine::affine_coupling_backward", mutates_args=())
def _backward(
    grad_y: torch.Tensor,
    grad_logdet: torch.Tensor,
    x: torch.Tensor,
    shift: torch.Tensor,
    scale_raw: torch.Tensor,
    mask: Optional[torch.Tensor],
    scale_map: str,
    reverse: bool,
    clamp: float,
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dshift, dscale_raw) by the implementation that ran the forward pass."""
    if implementation == "triton":
        grads = _kernels().affine_coupling_backward(
            _rows(grad_y),
            grad_logdet,
            _rows(x),
            _rows(shift),
            _rows(scale_raw),
            _rows(mask),
            scale_map,
            reverse,
            clamp,
        )
        return tuple(g.view(x.shape) for g in grads)

    def forward(x, shift, scale_raw):
        return reference.affine_coupling(
            x, shift, scale_raw, scale_map=scale_map, mask=mask, reverse=reverse, clamp=clamp
        )

    return reference_vjp(forward, (x, shift, scale_raw), (grad_y, grad_logdet), (mask,))


@_backward.register_fake
def _(grad_y, grad_logdet, x, shift, scale_raw, mask, scale_map, reverse, clamp, implementation):
    return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    x, shift, scale_raw, mask = inputs
    ctx.save_for_backward(x, shift, scale_raw, mask)
    kw = keyword_only_inputs
    ctx.config = (kw["scale_map"], kw["reverse"], kw["clamp"], backend.resolve(x))


def _autograd_backward(ctx, grad_y, grad_logdet):
    x, shift, scale_raw, mask = ctx.saved_tensors
    dx, dshift, dscale_raw = _backward(grad_y, grad_logdet, x, shift, scale_raw, mask, *ctx.config)
    return dx, dshift, dscale_raw, None


library_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def check_inputs(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale_raw: torch.Tensor,
    scale_map: str,
    mask: Optional[torch.Tensor],
    reverse: bool,
    clamp: float,
) -> None:
    """Raise ValueError/TypeError, naming the argument, for anything the op cannot compute."""
    check_tensor("x", x)
    if x.ndim < 1:
        raise ValueError("x must have shape (N, ...): a batch of examples, got a 0-d tensor")
    for name, value in (("shift", shift), ("scale_raw", scale_raw)):
        check_shape_of(name, value, "x", x)
    check_choice("scale_map", scale_map, SCALE_MAPS)
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    check_positive("clamp", clamp)
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.device != x.device:
        raise ValueError(f"mask is on {mask.device} but x is on {x.device}")
    if mask.is_complex():
        raise TypeError(f"mask must be bool, integer or floating point, got {mask.dtype}")
    if mask.ndim > x.ndim or any(
        m != 1 and m != s for m, s in zip(mask.shape[::-1], x.shape[::-1])
    ):
        raise ValueError(
            f"mask must be broadcastable to x's shape {tuple(x.shape)}, got {tuple(mask.shape)}"
        )


# mask -> ((its version, the shape it was compacted to), compact mask): see the module's docstring
_compacted: WeakIdKeyDictionary = WeakIdKeyDictionary()


def compact_mask(mask: Optional[torch.Tensor], x: torch.Tensor) -> Optional[torch.Tensor]:
    """The mask as the registered op takes it: bool, contiguous, of shape (1, *x.shape[1:]) when
    it is the same for every example (no per-example copy), else x.shape; None stays None.
    Raises ValueError for a mask of numbers that are not all 0 or 1 (a data-dependent check,
    skipped while torch.compile or export traces). Cached per mask tensor (see the module)."""
    if mask is None:
        return None
    per_example = mask.ndim == x.ndim and mask.shape[0] != 1
    shape = (x.shape[0] if per_example else 1, *x.shape[1:])
    if torch.compiler.is_compiling():
        return _compact(mask, shape)
    # an inference tensor has no version counter to tell an in-place change: never cached
    key = None if mask.is_inference() else (mask._version, shape)
    cached = _compacted.get(mask)
    if key is not None and cached is not None and cached[0] == key:
        return cached[1]
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must be binary: bool, or numbers that are all 0 or 1")
    compact = _compact(mask, shape)
    if key is not None:
        _compacted[mask] = (key, compact)
    return compact


def _compact(mask, shape):
    mask = mask.reshape((1,) * (len(shape) - mask.ndim) + tuple(mask.shape)) != 0
    return mask.expand(shape).contiguous()


def affine_coupling(
    x: torch.Tensor,
    shift: torch.Tensor,
    scale_raw: torch.Tensor,
    *,
    scale_map: str = "exp",
    mask: Optional[torch.Tensor] = None,
    reverse: bool = False,
    clamp: float = 3.0,
) -> FlowOutput:
    """Affine coupling transform (RealNVP, Dinh et al. 2017; Glow, Kingma & Dhariwal 2018).

    Forward, y = x · s + shift; reverse=True, y = (x − shift) · exp(−log s) (x is then the
    flow's output and y its input). log s is scale_raw ("exp"), logsigmoid(scale_raw + 2)
    ("sigmoid", Glow's sigmoid(h + 2)) or clamp · tanh(scale_raw / clamp) ("softclamp",
    |log s| < clamp). Where the mask is 1, y = x and nothing is added to logdet
    (y = b·x + (1 − b)·(x · s + shift)). Gradients flow to x, shift and scale_raw.

    Args:
        x: (N, ...) input.
        shift: the shift, shaped like x, x's dtype and device.
        scale_raw: the unconstrained scale, shaped like x, x's dtype and device.
        scale_map: "exp", "sigmoid" or "softclamp": how scale_raw becomes log s.
        mask: bool, or numbers all 0 or 1, broadcastable to x, on x's device; 1 passes x
            through. None: every element is transformed.
        reverse: apply the inverse map.
        clamp: the bound of "softclamp" (> 0, finite); unused by the other maps.

    Returns:
        FlowOutput(y, logdet): y shaped like x; logdet (N,), the sum of log s over every
        dimension but the first (masked elements excluded), negated in reverse, in at least fp32.

    Raises:
        TypeError: a tensor argument of the wrong type or dtype, reverse not a bool, clamp not
            a number, or mask neither None nor a real tensor.
        ValueError: shift or scale_raw not shaped like x or on another device, x a 0-d
            tensor, scale_map unknown, clamp not finite and > 0, or mask not broadcastable to
            x, on another device, or holding numbers other than 0 and 1.
    """
    x, shift, scale_raw = autocast_inputs("affine_coupling", x, shift, scale_raw)
    check_inputs(x, shift, scale_raw, scale_map, mask, reverse, clamp)
    return FlowOutput(
        *library_op(
            x,
            shift,
            scale_raw,
            compact_mask(mask, x),
            scale_map=scale_map,
            reverse=reverse,
            clamp=float(clamp),
        )
    )
