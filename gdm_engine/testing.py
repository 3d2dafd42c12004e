"""Kernels against their references: the harness of tests/ and of `gdm-engine validate`.

Every check draws fresh random inputs, poisons each kernel output buffer with NaN, runs the
kernel in the case's dtype and the reference in float64 on the same (upcast) inputs, and compares
‖out − ref‖ / ‖ref‖ with the catalog's tolerance. NaN or inf never passes. An fp32 quantity past
the tolerance is held instead to twice the error of the reference itself run in fp32, where that
is larger: an ill-conditioned case costs every fp32 computation the same digits.
"""

import collections
import contextlib
import dataclasses
import inspect
import math
import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from gdm_engine.catalog import Case


@dataclasses.dataclass
class Check:
    op: str
    dtype: str
    case: str
    quantity: str  # "forward" or "grad <argument>"
    error: float
    tolerance: float

    @property
    def passed(self):
        return self.error <= self.tolerance  # False for NaN

    def row(self):
        verdict = "ok" if self.passed else "FAIL"
        return {**dataclasses.asdict(self), "verdict": verdict}


def relative_error(out, ref):
    """‖out − ref‖ / ‖ref‖ in float64 (the plain norm of out − ref when ref is zero)."""
    if out.shape != ref.shape:
        return math.inf
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return math.inf
    diff, scale = (out - ref).norm().item(), ref.norm().item()
    return diff / scale if scale > 0 else diff


def noncontiguous(t):
    """The same values in a strided (non-contiguous) view: every other element of a wider buffer."""
    if t.ndim == 0:
        return t
    wide = torch.empty((*t.shape[:-1], 2 * t.shape[-1]), dtype=t.dtype, device=t.device)
    view = wide[..., ::2]
    view.copy_(t)
    return view


def with_tensors(case, fn, label_suffix=""):
    """A copy of `case` whose tensor arguments are fn(tensor)."""
    args = tuple(fn(a) if isinstance(a, torch.Tensor) else a for a in case.args)
    return Case(case.label + label_suffix, args, dict(case.kwargs))


def _tensor_names(spec, case):
    names = list(inspect.signature(spec.reference).parameters)
    return [(names[i], a) for i, a in enumerate(case.args) if isinstance(a, torch.Tensor)]


@contextlib.contextmanager
def allow_tf32(enabled):
    """Set PyTorch's switch for TF32 convolutions (torch.backends.cudnn.allow_tf32), which the
    fp32 dot kernels follow, inside the block."""
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


def check_case(spec, case, grads=True, generator=None, tf32=False):
    """Checks of one case: the forward output, then the gradient of every floating input
    (of differentiable ops).

    fp32 kernels run with TF32 products when `tf32` (PyTorch's default for convolutions, checked
    against the catalog's "tf32" tolerance) and with IEEE fp32 products otherwise."""
    from gdm_engine.kernels import poisoned_outputs

    grads = grads and spec.differentiable  # forward-only ops have no gradients to check
    dtype = case.tensors()[0].dtype
    tf32 = tf32 and dtype == torch.float32
    tolerance = spec.tolerance["tf32" if tf32 else dtype]
    label = str(dtype).replace("torch.", "") + (" tf32" if tf32 else "")
    named = varied_inputs(spec, case)
    ours = with_grads(spec, case, grads)
    ref_case = with_grads(spec, with_tensors(case, lambda t: t.double()), grads)
    with poisoned_outputs(), allow_tf32(tf32):
        out = spec.kernel(*ours.args, **ours.kwargs)
    ref = spec.reference(*ref_case.args, **ref_case.kwargs)

    outs, refs = as_tuple(out), as_tuple(ref)
    labels = ["forward"] if len(outs) == 1 else [f"forward {name}" for name in spec.outputs]
    grad_outs = []
    if grads and any(o.numel() for o in outs):
        grad_outs = [torch.randn(o.shape, generator=generator).to(o.device, dtype) for o in outs]
        with poisoned_outputs(), allow_tf32(tf32):
            outs += torch.autograd.grad(outs, varied(ours), grad_outs)
        refs += tuple(_reference_grads(refs, varied(ref_case), [g.double() for g in grad_outs]))
        labels += [f"grad {name}" for name, _ in named]
    errors = [relative_error(o, r) for o, r in zip(outs, refs)]
    tolerances = [tolerance] * len(errors)
    if dtype == torch.float32 and not tf32 and max(errors) > tolerance:
        tolerances = _fp32_conditioned(spec, case, grads, grad_outs, refs, tolerance)
    return [
        Check(spec.name, label, case.label, quantity, error, bound)
        for quantity, error, bound in zip(labels, errors, tolerances)
    ]


def _fp32_conditioned(spec, case, grads, grad_outs, refs, tolerance):
    """Per quantity, the tolerance or twice the error of the plain reference run in fp32 itself,
    whichever is larger: where a case is ill-conditioned in fp32 (a sum that cancels, an inverse
    through a steep bin) no fp32 computation, PyTorch's included, reaches the catalog's figure,
    and the kernel is held to what PyTorch's own fp32 arithmetic reaches there."""
    plain_case = with_grads(spec, case, grads)
    plain = as_tuple(spec.reference(*plain_case.args, **plain_case.kwargs))
    if grad_outs:
        plain += tuple(_reference_grads(plain, varied(plain_case), grad_outs))
    bounds = [2 * relative_error(p, r) for p, r in zip(plain, refs)]
    return [max(tolerance, b) if math.isfinite(b) else tolerance for b in bounds]


def _reference_grads(outputs, inputs, grad_outputs):
    """The reference's gradients, zero for an input it does not use (x0 of an "eps" loss) and
    for every input when no output depends on one (a convolution with no input channels and no
    bias is zero, whatever its inputs)."""
    used = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not used:
        return [torch.zeros_like(t) for t in inputs]
    outputs, grad_outputs = zip(*used)
    return torch.autograd.grad(outputs, inputs, grad_outputs, materialize_grads=True)


def varied_inputs(spec, case):
    """(name, tensor) of the case's inputs that take gradients: all but spec.constant_inputs."""
    return [(name, t) for name, t in _tensor_names(spec, case) if name not in spec.constant_inputs]


def with_grads(spec, case, grads=True):
    """A copy of `case` with detached tensors, those of varied_inputs requiring grad (if
    `grads`); `varied` of it lists them."""
    varied = {id(t) for _, t in varied_inputs(spec, case)}
    return with_tensors(case, lambda t: t.detach().requires_grad_(grads and id(t) in varied))


def varied(case):
    """The case's tensors that take gradients."""
    return [t for t in case.tensors() if t.requires_grad]


def as_tuple(out):
    """An op's outputs as a tuple, whether it returns one tensor or several."""
    return out if isinstance(out, tuple) else (out,)


def assert_checks_pass(checks):
    """Fail with one line per failed check: case, quantity, error and tolerance."""
    failed = [c for c in checks if not c.passed]
    assert not failed, "\n".join(
        f"{c.case} {c.quantity}: {c.error:.3g} > {c.tolerance:.3g}" for c in failed
    )


def supported_dtypes(device):
    """The kernel dtypes this device runs: bf16 needs compute capability 8.0 on a GPU."""
    dtypes = [torch.float32, torch.float16, torch.bfloat16]
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
        dtypes.remove(torch.bfloat16)
    return dtypes


def check_precisions(device, smoke=False):
    """(dtype, tf32) pairs to check on `device`: every supported dtype, fp32 with TF32 products
    off and on; for a smoke check the fp32 pairs and bf16 only."""
    pairs = [
        (dtype, tf32)
        for dtype in supported_dtypes(device)
        for tf32 in ([False, True] if dtype == torch.float32 else [False])
    ]
    return [p for p in pairs if p[0] != torch.float16] if smoke else pairs


def validate(
    specs, sizes, device, seed, grads=True, progress=None, precisions=None, cases_per_op=None
):
    """All checks of `specs` at `sizes` in the (dtype, tf32) `precisions` (default: all of
    `check_precisions(device)`), contiguous and strided; the first `cases_per_op` cases of each
    size where given."""
    generator = torch.Generator().manual_seed(seed)
    checks = []
    for spec in specs:
        for dtype, tf32 in precisions or check_precisions(device):
            for size in sizes:
                for case in spec.make_inputs(size, dtype, device, generator)[:cases_per_op]:
                    for variant in (case, with_tensors(case, noncontiguous, " strided")):
                        checks += check_case(spec, variant, grads, generator, tf32)
                        if progress is not None:
                            progress.update(1)
    return checks


# --------------------------------------------------------------------------------------------------
# what a call dispatches besides its kernels, and what it reads back
# --------------------------------------------------------------------------------------------------

# Allocations launch nothing on a GPU (the caching allocator hands out memory on the host);
# views and shape arithmetic neither.
_FREE_OPS = {
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "new_empty_strided",
    "detach",
    "lift_fresh",
    "alias",
    "resolve_conj",
    "resolve_neg",
    "promote_types",
    "sym_size",
    "sym_stride",
    "sym_numel",
    "sym_storage_offset",
    "set_",
}
# Ops that read device memory back to the host (a synchronisation on a GPU), or that make a
# tensor of host values (a host-to-device copy once moved to a GPU).
READ_BACKS = {
    "_local_scalar_dense",
    "item",
    "is_nonzero",
    "nonzero",
    "nonzero_numpy",
    "nonzero_static",
    "equal",
    "allclose",
    "_assert_async",
    "lift_fresh_copy",
    "masked_select",
    "unique",
    "_unique2",
    "unique_consecutive",
    "repeat_interleave",
}


def _is_free(func):
    name = func.overloadpacket.__name__
    return func.is_view or name in _FREE_OPS or func.namespace == "gdm_engine"


def _uses_host_generator(args, kwargs):
    """A draw from a CPU torch.Generator (or the default one) runs on the host: it is where a
    seed for a kernel comes from, and no device op on a GPU."""
    generator = (kwargs or {}).get("generator")
    return isinstance(generator, torch.Generator) and generator.device.type == "cpu"


class DeviceOps(TorchDispatchMode):
    """Counts the aten ops that a block dispatches besides its own registered (gdm_engine::)
    ops, looking inside those too, as a GPU would launch them: every op that is not a view, an
    allocation or a host draw. `ops` maps op names to counts; `read_backs` lists the ops of
    READ_BACKS, which a test may also refuse outright with `fail_on_read_back=True`."""

    def __init__(self, fail_on_read_back=False):
        super().__init__()
        self.ops = collections.Counter()
        self.read_backs = []
        self.fail_on_read_back = fail_on_read_back
        # tensors drawn on the host, by id (held weakly: a freed tensor's id is reused)
        self._host_draws = weakref.WeakValueDictionary()

    @property
    def count(self):
        return sum(self.ops.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if func.namespace == "gdm_engine":  # look inside our own ops: their Python bodies
            from torch._library.custom_ops import OPDEFS

            body = OPDEFS[func._schema.name]._backend_fns[None]
            with self:
                return body(*args, **(kwargs or {}))
        result = func(*args, **(kwargs or {}))
        if _uses_host_generator(args, kwargs) or any(
            self._host_draws.get(id(a)) is a for a in args
        ):
            if isinstance(result, torch.Tensor):  # a seed drawn, then read, on the host
                self._host_draws[id(result)] = result
            return result
        if name in READ_BACKS:
            self.read_backs.append(name)
            if self.fail_on_read_back:
                raise AssertionError(f"aten::{name} reads device memory back to the host")
        if not _is_free(func):
            self.ops[name] += 1
        return result


def device_ops(fn, *args, **kwargs):
    """(result, DeviceOps) of fn(*args, **kwargs), with Triton launches recorded, not run, as
    `gdm-engine compile` records them: what the call dispatches besides its kernels, and the
    kernel launches (`.launches`)."""
    from gdm_engine import use_backend
    from gdm_engine.kernels import recording_launches

    counter = DeviceOps()
    with recording_launches() as launches, use_backend("triton"), counter:
        result = fn(*args, **kwargs)
    counter.launches = list(launches)
    return result, counter


@contextlib.contextmanager
def no_read_backs():
    """Fail on any op that would read device memory back to the host (`.item()`, `bool(t)`,
    `nonzero`, ...) or build a tensor of host values, inside the block."""
    with DeviceOps(fail_on_read_back=True) as mode:
        yield mode
