"""A steady-state call reaches its kernels and nothing else: every catalog case, forward and
backward, dispatches no device op besides its own Triton kernels (launches recorded, not run)
beyond the budget its catalog entry declares, and reads nothing back to the host."""

import pytest
import torch

from gdm_engine import catalog
from gdm_engine.testing import as_tuple, device_ops, varied, with_grads

SPECS = list(catalog.CATALOG.values())


def _cases(spec):
    generator = torch.Generator().manual_seed(7)
    return [with_grads(spec, case, spec.differentiable)
            for case in spec.make_inputs("tiny", torch.float32, torch.device("cpu"), generator)]


def _forward_and_backward(spec, case):
    """(forward DeviceOps, backward DeviceOps or None) of the second call of a case (caches warm)."""
    for _ in range(2):
        outs, forward = device_ops(lambda: as_tuple(spec.op(*case.args, **case.kwargs)))
        backward = None
        if spec.differentiable and any(o.requires_grad for o in outs):
            _, backward = device_ops(torch.autograd.grad, outs, varied(case),
                                     [torch.ones_like(o) for o in outs], allow_unused=True)
    return forward, backward


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_a_call_dispatches_only_its_kernels(spec):
    for case in _cases(spec):
        forward, backward = _forward_and_backward(spec, case)
        for direction, counted in (("forward", forward), ("backward", backward)):
            if counted is None:
                continue
            assert counted.launches, f"{case.label} {direction}: no kernel launched"
            budget = spec.budget(direction, case)
            assert counted.count <= budget, (
                f"{case.label} {direction}: {counted.count} device ops besides the kernels "
                f"(budget {budget}): {dict(counted.ops)}")
            assert not counted.read_backs, f"{case.label} {direction}: {counted.read_backs}"
