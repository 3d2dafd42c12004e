"""A steady-state call reaches its kernels and nothing else: every catalog case, forward and
backward, dispatches no device op besides its own Triton kernels (launches recorded, not run)
beyond the budget its catalog entry declares, and reads nothing back to the host."""

import pytest
import torch

from gdm_engine import catalog, sampling
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


# --------------------------------------------------------------------------------------------------
# sampler loops: per step, the model's evaluation(s) and exactly the step kernel(s)
# --------------------------------------------------------------------------------------------------

LOOPS = {  # name: (run(denoiser, steps), step kernels per step)
    "ddpm": (lambda model, steps, schedule: sampling.ddpm_sample(
        model, (3, 2, 4), schedule[:steps], generator=torch.Generator().manual_seed(0)), 1),
    "ddim": (lambda model, steps, schedule: sampling.ddim_sample(
        model, (3, 2, 4), schedule, steps, eta=0.5, clip=1.0,
        generator=torch.Generator().manual_seed(0)), 1),
    "euler": (lambda model, steps, schedule: sampling.euler_sample(
        model, (3, 2, 4), schedule, steps, churn=0.2,
        generator=torch.Generator().manual_seed(0)), 1),
    "heun": (lambda model, steps, schedule: sampling.heun_sample(
        model, (3, 2, 4), schedule, steps, prediction="v"), 2),
    "dpmpp_2m": (lambda model, steps, schedule: sampling.dpmpp_2m_sample(
        model, (3, 2, 4), schedule, steps, guidance_scale=2.0), 1),
    "langevin": (lambda model, steps, schedule: sampling.annealed_langevin_sample(
        model, (3, 2, 4), torch.tensor([1.0, 0.5]), steps_per_level=steps // 2 + 1), 1),
}


def _stand_in(guided):
    """A model that costs no device op: it returns one fixed output (the pair when guided)."""
    output = torch.randn(3, 2, 4)
    return lambda x, t: (output, output) if guided else output


def _loop_counts(name, steps):
    run, _ = LOOPS[name]
    schedule = sampling.linear_alpha_bars(100)
    _, counted = device_ops(run, _stand_in(name == "dpmpp_2m"), steps, schedule)
    return counted


@pytest.mark.parametrize("name", list(LOOPS))
def test_a_sampler_step_is_the_model_and_its_step_kernel(name):
    """The difference between loops of 4 and 8 steps (the langevin loop: 2 levels of 3 and 5)
    is 4 steps' worth: no device op, no read-back, and the step's kernel launches alone."""
    short, long = _loop_counts(name, 4), _loop_counts(name, 8)
    steps, kernels = (4, LOOPS[name][1])
    assert long.count == short.count, (short.ops, long.ops)
    assert len(long.read_backs) == len(short.read_backs), (short.read_backs, long.read_backs)
    launches = len(long.launches) - len(short.launches)
    # Heun's last step is Euler's: one launch fewer than two per step, in both loops alike
    assert launches == steps * kernels, (len(short.launches), len(long.launches))
