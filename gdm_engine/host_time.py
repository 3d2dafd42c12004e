"""Host time: what an op call or a sampler step costs the CPU, without its kernels.

On a GPU a fused step's kernel takes microseconds; the Python around it (checks, dispatch,
coefficients) can take longer and then bounds the step. This times that part alone, behind
`gdm-engine bench --host`: every call runs with the backend "triton" on tiny CPU tensors while
the launches are recorded, not run (as `gdm-engine compile` records them). Beside it, per op, a
bare `torch.library.custom_op` call on the same tensors (the least any registered op costs)
and, where diffusers is installed, its scheduler's `step` (what a user would call otherwise);
per sampler loop, the same loop written with diffusers' scheduler. Medians of many calls after a
warm-up, from time.perf_counter_ns.

Targets: an op call within OP_TARGET times the bare custom_op call; a sampler step no slower
than diffusers'.
"""

import contextlib
import functools
import itertools
import statistics
import time

import torch

from gdm_engine import benchmark, use_backend

OP_TARGET = 3.0
OP_COLUMNS = [
    "op",
    "case",
    "host_us",
    "custom_op_us",
    "host/custom_op",
    f"<={OP_TARGET:g}x",
    "diffusers_us",
    "host/diffusers",
]
STEP_COLUMNS = [
    "sampler",
    "shape",
    "steps",
    "host_us",
    "diffusers",
    "diffusers_us",
    "host/diffusers",
    "<=diffusers",
]
# the sampler loops timed, with their model evaluations per step; langevin has no diffusers peer
SAMPLERS = {"ddpm": 1, "ddim": 1, "euler": 1, "heun": 2, "dpmpp_2m": 1, "langevin": 1}
SHAPE, STEPS = (2, 4, 8, 8), 20
_CPU = torch.device("cpu")


@torch.library.custom_op("gdm_engine_bench::bare", mutates_args=())
def bare_op(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The least a registered op costs: the dispatch of its tensors and one allocation."""
    return torch.empty_like(tensors[0])


@contextlib.contextmanager
def launches_recorded():
    """Our kernels' launches noted, not run: what remains is the host's work up to them."""
    from gdm_engine.kernels import recording_launches

    with recording_launches(), use_backend("triton"):
        yield


def median_us(calls, repeats, warmup=20):
    """The median µs of each (call, context) of `calls` over `repeats` rounds after `warmup`.
    The calls take turns within a round: a load coming and going on a shared machine weighs on
    each alike, and each call comes after other work, as an op's call does in a loop (a bare
    custom_op call repeated back to back, its dispatch always in cache, takes ~17 µs here
    against ~31 µs in turns). Each runs inside a fresh context(), outside the timed region."""
    samples = [[] for _ in calls]
    for round_ in range(warmup + repeats):
        for (call, context), times in zip(calls, samples):
            with context():
                start = time.perf_counter_ns()
                call()
                elapsed = time.perf_counter_ns() - start
            if round_ >= warmup:
                times.append(elapsed)
    return [statistics.median(times) / 1e3 for times in samples]


def _ratio(ours, theirs):
    return ours / theirs if theirs else None


def host_ops(specs, seed=0, cases_per_op=None, repeats=400, progress=None):
    """One row per tiny fp32 case of each op (its first `cases_per_op`): the host µs of a call,
    of a bare custom_op call on its tensors, and of diffusers' step where the catalog names that
    peer for the case."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for spec in specs:
        for case in spec.make_inputs("tiny", torch.float32, _CPU, generator)[:cases_per_op]:
            calls = [
                (functools.partial(spec.op, *case.args, **case.kwargs), launches_recorded),
                (functools.partial(bare_op, case.tensors()), contextlib.nullcontext),
            ]
            peer = spec.peers.get("diffusers", lambda case: None)(case)
            if peer is not None:
                calls.append((peer, contextlib.nullcontext))
            host, bare, *peer_us = median_us(calls, repeats)
            diffusers = peer_us[0] if peer_us else None
            rows.append(
                {
                    "op": spec.name,
                    "case": case.label,
                    "host_us": host,
                    "custom_op_us": bare,
                    "host/custom_op": host / bare,
                    f"<={OP_TARGET:g}x": "yes" if host <= OP_TARGET * bare else "no",
                    "diffusers_us": diffusers,
                    "host/diffusers": _ratio(host, diffusers),
                }
            )
            if progress is not None:
                progress.update(1)
    return rows


class _Stamped:
    """A stand-in model that notes when each of its evaluations starts: from one step's first
    evaluation to the next step's is one step of the loop (model, step op and bookkeeping)."""

    def __init__(self, model):
        self.model, self.starts = model, []

    def __call__(self, x, t):
        self.starts.append(time.perf_counter_ns())
        return self.model(x, t)


def step_us(make_loops, evaluations_per_step, intervals):
    """The median µs of one step of each loop that a (make_loop, context) of `make_loops`
    builds around a stand-in model, make_loop(model), over at least `intervals` steps after a
    warm-up run; None where it builds none (a peer library that is not installed). The loops
    take turns, a whole run each inside a fresh context(), as median_us's calls do."""
    models = [_Stamped(benchmark.stand_in_model(None)) for _ in make_loops]
    loops = [make_loop(model) for (make_loop, _), model in zip(make_loops, models)]
    samples = {i: [] for i, loop in enumerate(loops) if loop is not None}
    for round_ in itertools.count():
        for i in samples:
            models[i].starts.clear()
            with make_loops[i][1]():
                loops[i]()
            starts = models[i].starts[::evaluations_per_step]
            if round_:  # the first round warms up
                samples[i] += [b - a for a, b in zip(starts, starts[1:])]
        if round_ and all(len(times) >= intervals for times in samples.values()):
            break
    return [
        statistics.median(samples[i]) / 1e3 if i in samples else None for i in range(len(loops))
    ]


def _langevin_loop(model):
    """Annealed Langevin dynamics over STEPS steps: 4 noise levels of STEPS / 4 steps each."""
    from gdm_engine import sampling

    sigmas = torch.logspace(0, -2, 4)
    return lambda: sampling.annealed_langevin_sample(
        model, SHAPE, sigmas, steps_per_level=STEPS // 4, generator=torch.Generator()
    )


def host_sampler_steps(samplers=tuple(SAMPLERS), intervals=400, progress=None):
    """One row per sampler loop: the host µs of one of its steps on SHAPE (kernels recorded,
    not run), and of one step of the same loop with diffusers' scheduler where installed."""
    rows = []
    for sampler in samplers:
        per_step = SAMPLERS[sampler]
        case = benchmark.LoopCase(sampler, SHAPE, STEPS)
        if sampler == "langevin":
            ours, theirs = _langevin_loop, lambda model: None
        else:
            ours = functools.partial(benchmark.engine_loop, case, _CPU)
            theirs = functools.partial(benchmark.diffusers_loop, case, _CPU)
        host, diffusers = step_us(
            [(ours, launches_recorded), (theirs, contextlib.nullcontext)], per_step, intervals
        )
        ran = diffusers is not None
        rows.append(
            {
                "sampler": sampler,
                "shape": "x".join(map(str, SHAPE)),
                "steps": STEPS,
                "host_us": host,
                "diffusers": benchmark.DIFFUSERS_SCHEDULERS[sampler][0] if ran else None,
                "diffusers_us": diffusers,
                "host/diffusers": _ratio(host, diffusers),
                "<=diffusers": ("yes" if host <= diffusers else "no") if ran else None,
            }
        )
        if progress is not None:
            progress.update(1)
    return rows
