"""What every catalog entry shares: Case (one call of an op), OpSpec (an op with everything
needed to check and time it), the sizes, the default tolerances and the input helpers the
families' modules use."""

import dataclasses
from collections.abc import Callable
from typing import Optional

import torch

from gdm_engine.backend import use_backend

SIZES = ("tiny", "medium", "bench")
# ‖out − ref‖ / ‖ref‖ in float64, per input dtype; "tf32": fp32 inputs whose products run as
# TF32 (10-bit mantissa, like fp16) on the tensor cores.
DEFAULT_TOLERANCE = {torch.float32: 1e-5, "tf32": 3e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2}


@dataclasses.dataclass
class Case:
    """One call of an op: its label (for tables), positional tensors and keyword arguments."""

    label: str
    args: tuple
    kwargs: dict

    def tensors(self):
        return [a for a in self.args if isinstance(a, torch.Tensor)]


@dataclasses.dataclass
class OpSpec:
    """An op with everything needed to check and time it.

    make_inputs(size, dtype, device, generator) returns a list of Case: "tiny" shapes run through
    Triton's interpreter in the tests, "medium" ones are random shapes for validation on a GPU (and
    CPU timings), "bench" ones fill a GPU. bytes_moved and flops give the least memory traffic
    and arithmetic of a case (the cost model behind GB/s, TFLOP/s and % of roofline).
    """

    name: str
    family: str
    op: Callable
    library_op: Callable  # the torch.library registration of `op`, for opcheck
    reference: Callable
    make_inputs: Callable
    bytes_moved: Callable
    flops: Callable
    tolerance: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    # name -> (case -> callable, or None where the peer cannot run the case, e.g. on this device)
    peers: dict = dataclasses.field(default_factory=dict)
    outputs: tuple = ("out",)  # names of the returned tensors, for ops that return several
    # (args, kwargs) of `library_op` for a case, where the public op prepares its arguments
    library_inputs: Callable = lambda case: (case.args, case.kwargs)  # noqa: E731
    # False for forward-only ops (the samplers' steps): no gradients to check, no autograd
    differentiable: bool = True
    # inputs of a differentiable op that take no gradient (schedule values): not checked
    constant_inputs: tuple = ()
    # device ops a steady-state call may dispatch besides its own kernels, forward and backward:
    # a count, or a function of the case (tests/test_device_ops.py holds every op to it); and
    # why, where it is not 0
    device_op_budget: dict = dataclasses.field(
        default_factory=lambda: {"forward": 0, "backward": 0}
    )
    budget_reason: str = ""
    # the sampler loops' calls of the op's kernel, replayed steps included: (dtype, device) ->
    # None, run by `gdm-engine compile` while it records launches
    loop_calls: Optional[Callable] = None

    def budget(self, direction, case):
        """The device ops a call of `case` may dispatch besides its kernels ("forward" or
        "backward")."""
        budget = self.device_op_budget[direction]
        return budget(case) if callable(budget) else budget

    def kernel(self, *args, **kwargs):
        """The op with its Triton kernel, whatever the global backend."""
        with use_backend("triton"):
            return self.op(*args, **kwargs)


def _randint(generator, low, high):
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _bytes_of(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)
