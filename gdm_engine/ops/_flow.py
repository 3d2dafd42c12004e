"""What the flow ops and layers share: their reference backward, the dtype of a log-det, and the
check of their positive settings (a scale's clamp, a spline's tail bound)."""

import math

import torch


def reference_vjp(fn, primals, cotangents, keep_apart=()):
    """Vector-Jacobian products of `fn` at `primals` with `cotangents`, by torch.func.vjp (the
    body of a custom op runs below autograd). Each gradient comes back contiguous and sharing
    memory with no primal, cotangent, tensor of `keep_apart` or other gradient: a custom op's
    outputs may alias none of its inputs (the gradient of a plain sum is the cotangent itself)."""
    _, vjp = torch.func.vjp(fn, *primals)
    taken = {
        t.untyped_storage().data_ptr()
        for t in (*primals, *cotangents, *keep_apart)
        if t is not None
    }
    fresh = []
    for grad in vjp(cotangents):
        grad = grad.clone() if grad.untyped_storage().data_ptr() in taken else grad.contiguous()
        taken.add(grad.untyped_storage().data_ptr())
        fresh.append(grad)
    return tuple(fresh)


def check_positive(name: str, value: object) -> None:
    """Raise TypeError unless `value` is a Python int or float (not a bool), ValueError unless it
    is finite and > 0; the message names the argument `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def logdet_dtype(x: torch.Tensor) -> torch.dtype:
    """A log-det sums many terms: it is kept in at least fp32, whatever x's precision."""
    return torch.promote_types(x.dtype, torch.float32)
