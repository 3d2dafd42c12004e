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
import statistics
import time

import torch

from gdm_engine import benchmark, use_backend

OP_TARGET = 3.0
OP_COLUMNS = ["op", "case", "host_us", "custom_op_us", "host/custom_op", f"<={OP_TARGET:g}x",
              "diffusers_us", "host/diffusers"]
STEP_COLUMNS = ["sampler", "shape", "steps", "host_us", "diffusers", "diffusers_us",
                "host/diffusers", "<=diffusers"]
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


def median_us(call, repeats, context=contextlib.nullcontext, warmup=20):
    """Median µs of call() over `repeats` calls after `warmup`, each inside a fresh context()
    entered outside the timed region."""
    for _ in range(warmup):
        with context():
            call()
    samples = []
    for _ in range(repeats):
        with context():
            start = time.perf_counter_ns()
            call()
            samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1e3


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
            host = median_us(functools.partial(spec.op, *case.args, **case.kwargs), repeats,
                             launches_recorded)
            bare = median_us(functools.partial(bare_op, case.tensors()), repeats)
            peer = spec.peers.get("diffusers", lambda case: None)(case)
            diffusers = median_us(peer, repeats) if peer is not None else None
            rows.append({"op": spec.name, "case": case.label, "host_us": host,
                         "custom_op_us": bare, "host/custom_op": host / bare,
                         f"<={OP_TARGET:g}x": "yes" if host <= OP_TARGET * bare else "no",
                         "diffusers_us": diffusers, "host/diffusers": _ratio(host, diffusers)})
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


def step_us(make_loop, evaluations_per_step, intervals, context=contextlib.nullcontext):
    """Median µs of one step of the loop `make_loop(model)` builds around a stand-in model, over
    at least `intervals` steps after a warm-up run (each run inside a fresh context()); None
    where it builds none (a peer library that is not installed)."""
    model = _Stamped(benchmark.stand_in_model(None))
    loop = make_loop(model)
    if loop is None:
        return None
    with context():
        loop()
    samples = []
    while len(samples) < intervals:
        model.starts.clear()
        with context():
            loop()
        starts = model.starts[::evaluations_per_step]
        samples += [b - a for a, b in zip(starts, starts[1:])]
    return statistics.median(samples) / 1e3


def _langevin_loop(model):
    """Annealed Langevin dynamics over STEPS steps: 4 noise levels of STEPS / 4 steps each."""
    from gdm_engine import diffusion

    sigmas = torch.logspace(0, -2, 4)
    return lambda: diffusion.annealed_langevin_sample(
        model, SHAPE, sigmas, steps_per_level=STEPS // 4, generator=torch.Generator())


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
        host = step_us(ours, per_step, intervals, launches_recorded)
        diffusers = step_us(theirs, per_step, intervals)
        ran = diffusers is not None
        rows.append({"sampler": sampler, "shape": "x".join(map(str, SHAPE)), "steps": STEPS,
                     "host_us": host,
                     "diffusers": benchmark.DIFFUSERS_SCHEDULERS[sampler][0] if ran else None,
                     "diffusers_us": diffusers, "host/diffusers": _ratio(host, diffusers),
                     "<=diffusers": ("yes" if host <= diffusers else "no") if ran else None})
        if progress is not None:
            progress.update(1)
    return rows
