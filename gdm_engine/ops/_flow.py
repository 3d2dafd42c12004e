"""What the flow ops share: their reference backward, and the dtype of a log-det."""

import torch


def reference_vjp(fn, primals, cotangents, keep_apart=()):
    """Vector-Jacobian products of `fn` at `primals` with `cotangents`, by torch.func.vjp (the
    body of a custom op runs below autograd). Each gradient comes back contiguous and sharing
    memory with no primal, cotangent, tensor of `keep_apart` or other gradient: a custom op's
    outputs may alias none of its inputs (the gradient of a plain sum is the cotangent itself)."""
    _, vjp = torch.func.vjp(fn, *primals)
    taken = {t.untyped_storage().data_ptr() for t in (*primals, *cotangents, *keep_apart)
             if t is not None}
    fresh = []
    for grad in vjp(cotangents):
        grad = grad.clone() if grad.untyped_storage().data_ptr() in taken else grad.contiguous()
        taken.add(grad.untyped_storage().data_ptr())
        fresh.append(grad)
    return tuple(fresh)


def logdet_dtype(x):
    """A log-det sums many terms: it is kept in at least fp32, whatever x's precision."""
    return torch.promote_types(x.dtype, torch.float32)
