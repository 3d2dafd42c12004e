"""Autocast rules for every gdm_engine:: op, chosen as PyTorch chooses them for its own ops.

A custom op without a rule ignores autocast: under torch.autocast(bfloat16) the convolutions would
run TF32 products on fp32 activations, and an op given bf16 activations would return its log-det
or KL in bf16 (three significant digits). Each op gets one rule, for the CPU and CUDA autocast:

- the autocast dtype (what the region asks for, as F.conv2d takes it): the convolutions, whose
  products are where 16-bit inputs pay (tensor cores);
- float32 (autocast's fp32 list: exp, log, sum, the losses): the ops that return log-dets, a KL or
  a loss, whose sums over many elements 16-bit types would round away;
- the inputs' own dtypes, for every other op: the elementwise diffusion steps, q_sample, and the
  backward ops (autocast's "no cast" ops).

Floating inputs are cast to the rule's dtype (float64 ones are left alone, as autocast leaves
them), then the op runs with autocast off, so that its body, the reference's too, computes in
that dtype. torch.library.register_autocast is not used: it casts to one dtype fixed when it is
registered, not the autocast region's, and it refuses keyword-only arguments, which most of these
ops have.

An op's public function, which checks that its inputs agree in dtype before it dispatches, calls
`autocast_inputs` first: under autocast a bf16 activation meets an fp32 weight.
"""

from typing import Any, Optional

import torch

AUTOCAST_DTYPE = ("causal_conv1d", "masked_conv2d")
FLOAT32 = ("gaussian_reparam_kl", "affine_coupling", "actnorm", "rq_spline", "diffusion_loss")
DEVICE_TYPES = ("cpu", "cuda")

_library = torch.library.Library("gdm_engine", "FRAGMENT")
_registered: set[str] = set()  # the ops whose rule is registered


def rule_dtype(name: str, device_type: str) -> Optional[torch.dtype]:
    """The dtype op `name` (without its namespace) computes in under autocast on `device_type`:
    None for the inputs' own dtypes."""
    if name in AUTOCAST_DTYPE:
        return torch.get_autocast_dtype(device_type)
    return torch.float32 if name in FLOAT32 else None


def _cast(value, device_type, dtype):
    if (
        isinstance(value, torch.Tensor)
        and value.is_floating_point()
        and value.device.type == device_type
        and value.dtype != torch.float64
    ):
        return value.to(dtype)
    return value


def autocast_inputs(name: str, *tensors: Optional[torch.Tensor]) -> tuple[Any, ...]:
    """`tensors` (None allowed) cast as op `name`'s rule casts them where autocast is on for their
    device, unchanged elsewhere: each comes back in its place, None and non-floating tensors as
    given (typed Any, so that a caller's checked tensor keeps its own type)."""
    if not torch._C._is_any_autocast_enabled():  # the usual case, at the cost of one call
        return tensors
    device_type = next((t.device.type for t in tensors if isinstance(t, torch.Tensor)), None)
    if device_type not in DEVICE_TYPES or not torch.is_autocast_enabled(device_type):
        return tensors
    dtype = rule_dtype(name, device_type)
    return tensors if dtype is None else tuple(_cast(t, device_type, dtype) for t in tensors)


def _autocast_kernel(name, device_type):
    """(kernel, dispatch key name) of op gdm_engine::`name`'s rule on `device_type`."""
    op = getattr(torch.ops.gdm_engine, name).default
    key = getattr(torch._C.DispatchKey, "Autocast" + torch._C._dispatch_key_for_device(device_type))

    def kernel(keyset, *args, **kwargs):
        dtype = rule_dtype(name, device_type)  # at each call: the region's own autocast dtype
        if dtype is not None:
            args = [_cast(a, device_type, dtype) for a in args]
            kwargs = {k: _cast(v, device_type, dtype) for k, v in kwargs.items()}
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op(*args, **kwargs)

    return kernel, key.name


def register_rules() -> None:
    """Register the rule of every gdm_engine:: op defined so far (each once)."""
    names = {
        n.split("::")[1]
        for n in torch._C._dispatch_get_all_op_names()
        if n.startswith("gdm_engine::")
    }
    for name in sorted(names - _registered):
        for device_type in DEVICE_TYPES:
            kernel, key = _autocast_kernel(name, device_type)
            _library.impl(name, kernel, key, with_keyset=True)
        _registered.add(name)
