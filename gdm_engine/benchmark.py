"""Timing of every catalog op against its providers, behind `gdm-engine bench` and bench/.

Providers: "triton" (our kernel; timed on a GPU only: interpreter timings say nothing of speed),
"eager" (the PyTorch reference), "compile" (torch.compile of the reference), and the peer
libraries the catalog names where they are installed, each timed for the forward pass alone and
for forward plus backward. Each row gives the median time, the speedup over eager and, for the
forward pass, the achieved GB/s and TFLOP/s from the op's cost model and the percentage of the
device's measured memory roofline.

It also times sampling: the autoregressive models' cached samplers against recomputing the whole
network at every step (`sampling_cases`, `bench_sampling`); and the memory and time of training a
flow with memory saving against plain autograd (`flow_memory_cases`, `bench_flow_memory`).

`report` measures the sections `gdm-engine bench` asks for and `write_markdown` writes them.
"""

import dataclasses
import datetime
import functools
import math
import secrets
import statistics
import sys
import time
from collections.abc import Collection
from typing import Optional

import torch

from gdm_engine.backend import installed_version
from gdm_engine.testing import supported_dtypes

COLUMNS = [
    "op",
    "case",
    "dtype",
    "pass",
    "provider",
    "median_ms",
    "GB/s",
    "TFLOP/s",
    "%roofline",
    "vs_eager",
]


def time_ms(fn, device):
    """Median milliseconds of fn(): CUDA events through triton.testing.do_bench on a GPU, the
    wall clock over repeated calls elsewhere. Both warm up first."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return do_bench(fn, warmup=25, rep=100, return_mode="median")
    fn()
    samples, start = [], time.perf_counter()
    while len(samples) < 5 or (time.perf_counter() - start < 0.5 and len(samples) < 100):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


@functools.cache
def copy_bandwidth_gbs(device_str):
    """Measured device memory bandwidth: a large copy, bytes read plus bytes written."""
    device = torch.device(device_str)
    numel = (1 << 28 if device.type == "cuda" else 1 << 25) // 4
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


# Every case, dtype and pass (grad mode) is its own graph of one reference function: past
# dynamo's default of 8 graphs per function it would silently run the rest eagerly.
_GRAPHS_PER_FUNCTION = 256


@functools.cache
def _compiled(fn):
    """torch.compile of a reference, one static graph per case: what a user compiles for a fixed
    shape. (Dynamic shapes also broke here: inductor's backward of the masked convolution asserted
    the strides of another shape, torch 2.13.)"""
    import torch._dynamo

    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, _GRAPHS_PER_FUNCTION)
    return torch.compile(fn, dynamic=False)


def providers(spec, case, device, compiled=True):
    """name -> zero-argument callable running the case; "compile" only where `compiled` (its
    graphs take minutes to build)."""
    args, kwargs = case.args, case.kwargs
    found = {"eager": lambda: spec.reference(*args, **kwargs)}
    if compiled:
        reference = _compiled(spec.reference)
        found["compile"] = lambda: reference(*args, **kwargs)
    if device.type == "cuda":
        found["triton"] = lambda: spec.kernel(*args, **kwargs)
    for name, make in spec.peers.items():
        fn = make(case)
        if fn is not None:
            found[name] = fn
    return found


def timed_calls(spec, case, device, compiled=True):
    """(pass, provider, zero-argument callable) for every provider: the forward pass alone, under
    no_grad, and (for differentiable ops) the forward pass followed by the gradients of every
    input (the backward's cost)."""
    from gdm_engine.testing import varied, with_grads

    calls = []
    for name, fn in providers(spec, case, device, compiled).items():
        calls.append(("forward", name, _without_grad(fn)))
    if not spec.differentiable:  # forward-only ops (the samplers' steps)
        return calls
    grad_case = with_grads(spec, case)
    for name, fn in providers(spec, grad_case, device, compiled).items():
        calls.append(("forward+backward", name, _with_backward(fn, varied(grad_case))))
    return calls


def _with_backward(fn, inputs):
    """fn() and the gradients of `inputs` for fixed random output gradients (drawn once)."""
    from gdm_engine.testing import as_tuple

    grads = []

    def call():
        outs = as_tuple(fn())
        if not grads:
            grads.extend(torch.randn_like(o) for o in outs)
        # an input a provider does not use (x0 of an "eps" loss) gets zeros
        return torch.autograd.grad(outs, inputs, grads, materialize_grads=True)

    return call


def _without_grad(fn):
    def call():
        with torch.no_grad():
            return fn()

    return call


def bench_case(spec, case, device, compiled=True):
    """One row per pass and provider of `case`. GB/s, TFLOP/s and % of roofline come from the
    op's cost model, which counts the forward pass only: forward+backward rows give times."""
    moved, flops = spec.bytes_moved(case), spec.flops(case)
    bandwidth = copy_bandwidth_gbs(str(device))
    rows = []
    for pass_, name, fn in timed_calls(spec, case, device, compiled):
        ms = time_ms(fn, device)
        forward = pass_ == "forward"
        rows.append(
            {
                "op": spec.name,
                "case": case.label,
                "dtype": str(case.tensors()[0].dtype).replace("torch.", ""),
                "pass": pass_,
                "provider": name,
                "median_ms": ms,
                "GB/s": moved / (ms * 1e-3) / 1e9 if forward else None,
                "TFLOP/s": flops / (ms * 1e-3) / 1e12 if forward else None,
                "%roofline": 100 * (moved / (bandwidth * 1e9)) / (ms * 1e-3) if forward else None,
            }
        )
    for row in rows:
        eager = next(
            r["median_ms"] for r in rows if r["provider"] == "eager" and r["pass"] == row["pass"]
        )
        row["vs_eager"] = eager / row["median_ms"]
    return rows


def bench(specs, size, device, seed, dtypes=None, progress=None, cases_per_op=None, compiled=True):
    """Rows of every provider (torch.compile only where `compiled`) on each op's cases at
    `size` (the first `cases_per_op` of them, where given)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for spec in specs:
        for dtype in dtypes or supported_dtypes(device):
            for case in spec.make_inputs(size, dtype, device, generator)[:cases_per_op]:
                rows += bench_case(spec, case, device, compiled)
                if progress is not None:
                    progress.update(1)
    return rows


# --------------------------------------------------------------------------------------------------
# Sampling: the cached samplers of the autoregressive models against full recomputation
# --------------------------------------------------------------------------------------------------

SAMPLING_COLUMNS = ["model", "case", "batch", "steps", "sampler", "seconds", "ms/step", "vs_naive"]


@dataclasses.dataclass(frozen=True)
class ModelCase:
    """A model to time: a registered model, its data shape and levels, options and batch."""

    label: str
    model: str  # the registered name
    shape: tuple
    levels: int
    options: dict
    batch: int

    def build(self, device, **options):
        """The model with weights drawn from seed 0; `options` add to the case's own."""
        from gdm_engine import models

        torch.manual_seed(0)
        cls = models.get(self.model)
        return cls(self.shape, self.levels, **self.options, **options).to(device)


def sampling_cases(device, quick=False):
    """The issue's cases: WaveNet, one stack of 10 layers (dilations 1 .. 512), 32 channels,
    batch 16, 1,024 steps; PixelCNN, 6 layers, 32 channels, batch 8, 16 x 16 (256 levels each);
    on a GPU also PixelCNN at 28 x 28, batch 64. `quick`: small stand-ins for tests."""
    if quick:
        return [
            ModelCase(
                "4 layers, 8 ch, 64 steps", "wavenet", (1, 64), 256, {"channels": 8, "layers": 4}, 2
            ),
            ModelCase(
                "2 layers, 8 ch, 6x6", "pixelcnn", (1, 6, 6), 256, {"channels": 8, "layers": 2}, 2
            ),
        ]
    cases = [
        ModelCase(
            "10 layers, 32 ch, 1024 steps",
            "wavenet",
            (1, 1024),
            256,
            {"channels": 32, "layers": 10},
            16,
        ),
        ModelCase(
            "6 layers, 32 ch, 16x16", "pixelcnn", (1, 16, 16), 256, {"channels": 32, "layers": 6}, 8
        ),
    ]
    if device.type == "cuda":
        cases.append(
            ModelCase(
                "6 layers, 32 ch, 28x28",
                "pixelcnn",
                (1, 28, 28),
                256,
                {"channels": 32, "layers": 6},
                64,
            )
        )
    return cases


def _seconds(fn, device, repeats):
    """The median wall time of `repeats` calls (whole sampling runs: long enough to need no
    warm-up loop beyond one call, which the cached sampler gets)."""
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_sampling(cases, device, progress=None):
    """One row per case and sampler: the time to draw `batch` samples. The naive sampler runs once
    (it takes seconds to minutes on a CPU); the cached one runs three times. Both warm up first
    on a GPU (the kernels' JIT and autotuning); on a CPU only the cached one needs to."""
    rows = []
    for case in cases:
        model = case.build(device)
        steps = math.prod(case.shape)
        timed = {}
        for sampler, cached in (("naive", False), ("cached", True)):

            def draw():
                model.sample(case.batch, torch.Generator(device).manual_seed(0), cached=cached)

            if cached or device.type == "cuda":
                draw()
            timed[sampler] = _seconds(draw, device, 3 if cached else 1)
            rows.append(
                {
                    "model": case.model,
                    "case": case.label,
                    "batch": case.batch,
                    "steps": steps,
                    "sampler": sampler,
                    "seconds": timed[sampler],
                    "ms/step": 1e3 * timed[sampler] / steps,
                    "vs_naive": timed["naive"] / timed[sampler],
                }
            )
            if progress is not None:
                progress.update(1)
    return rows


# --------------------------------------------------------------------------------------------------
# Diffusion sampler loops: the fused steps against diffusers' schedulers, around the same stand-in
# model (an elementwise function: the loop's own cost is what differs)
# --------------------------------------------------------------------------------------------------

DIFFUSION_LOOP_COLUMNS = [
    "loop",
    "shape",
    "steps",
    "provider",
    "seconds",
    "ms/step",
    "vs_diffusers",
]
# diffusers' counterpart of each sampler loop: its scheduler and options
DIFFUSERS_SCHEDULERS = {
    "ddpm": ("DDPMScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpmpp_2m": (
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
    ),
}


@dataclasses.dataclass(frozen=True)
class LoopCase:
    sampler: str  # a name of gdm_engine.sampling.SAMPLERS (and of DIFFUSERS_SCHEDULERS)
    shape: tuple
    steps: int
    # classifier-free guidance: the model returns two outputs
    guidance_scale: Optional[float] = None

    @property
    def label(self):
        return self.sampler + (f" + guidance {self.guidance_scale}" if self.guidance_scale else "")


def diffusion_loop_cases(device, quick=False):
    """The issue's latents, (64, 4, 64, 64) fp32, on a GPU; (16, 4, 32, 32) on a CPU; 50 DDIM
    steps with and without guidance, 20 DPM-Solver++(2M) steps."""
    shape = (2, 4, 8, 8) if quick else (64, 4, 64, 64) if device.type == "cuda" else (16, 4, 32, 32)
    return [
        LoopCase("ddim", shape, 50),
        LoopCase("ddim", shape, 50, guidance_scale=7.5),
        LoopCase("dpmpp_2m", shape, 20),
    ]


def stand_in_model(guidance_scale):
    """ε̂ = 0.1·x (and 0.05·x unconditionally): one elementwise pass, the same for both loops."""
    if guidance_scale is None:
        return lambda x, t: 0.1 * x
    return lambda x, t: (0.1 * x, 0.05 * x)


def diffusers_loop(case, device, model):
    """diffusers' loop around `model`, as its pipelines write it, or None where diffusers is not
    installed."""
    try:
        import diffusers
    except ImportError:
        return None
    name, options = DIFFUSERS_SCHEDULERS[case.sampler]
    scheduler = getattr(diffusers, name)(num_train_timesteps=1000, **options)

    def loop():
        scheduler.set_timesteps(case.steps, device=device)
        x = torch.randn(case.shape, device=device) * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            output = model(scheduler.scale_model_input(x, t), t)
            if case.guidance_scale is not None:
                output = output[1] + case.guidance_scale * (output[0] - output[1])
            x = scheduler.step(output, t, x).prev_sample
        return x

    return loop


def engine_loop(case, device, model):
    """Our loop around `model` on diffusers' default schedule, kept on the CPU (DDPM, which runs
    every step of its schedule, on one of `case.steps` steps)."""
    from gdm_engine import sampling

    alpha_bars = sampling.linear_alpha_bars(case.steps if case.sampler == "ddpm" else 1000)
    return lambda: sampling.sample(
        model,
        case.shape,
        alpha_bars,
        case.sampler,
        case.steps,
        device=device,
        guidance_scale=case.guidance_scale,
        generator=torch.Generator().manual_seed(0),
    )


def bench_diffusion_loops(cases, device, progress=None):
    """One row per case and provider: a whole sampler loop's time (median of 3, after a warm-up
    run), ours (the fused steps: kernels on a GPU, the reference on a CPU) and diffusers'."""
    rows = []
    for case in cases:
        timed = {}
        for provider, make in (("diffusers", diffusers_loop), ("gdm_engine", engine_loop)):
            loop = make(case, device, stand_in_model(case.guidance_scale))
            if loop is None:
                continue
            loop()
            timed[provider] = _seconds(loop, device, 3)
            rows.append(
                {
                    "loop": case.label,
                    "shape": "x".join(map(str, case.shape)),
                    "steps": case.steps,
                    "provider": provider,
                    "seconds": timed[provider],
                    "ms/step": 1e3 * timed[provider] / case.steps,
                    "vs_diffusers": timed.get("diffusers", math.nan) / timed[provider],
                }
            )
        if progress is not None:
            progress.update(1)
    return rows


# --------------------------------------------------------------------------------------------------
# Flow memory: training a flow with memory saving (activations rebuilt by inverses) against plain
# autograd
# --------------------------------------------------------------------------------------------------

FLOW_MEMORY_COLUMNS = [
    "model",
    "case",
    "batch",
    "training",
    "saved_MB",
    "saved_vs_plain",
    "step_ms",
    "time_vs_plain",
]


def flow_memory_cases(quick=False):
    """The issue's case: a Glow of depth 32 (K = 32 steps per level, L = 3 levels, as the Glow
    paper's CIFAR-10 model, with 64 hidden channels instead of 512 so that it runs on a CPU) on
    3 x 32 x 32 images of 256 levels, batch 16. `quick`: a small stand-in for tests."""
    if quick:
        return [
            ModelCase(
                "depth 2, 2 levels, 8 hidden, 1x8x8",
                "glow",
                (1, 8, 8),
                17,
                {"scales": 2, "depth": 2, "hidden": 8},
                4,
            )
        ]
    return [
        ModelCase(
            "depth 32, 3 levels, 64 hidden, 3x32x32",
            "glow",
            (3, 32, 32),
            256,
            {"scales": 3, "depth": 32, "hidden": 64},
            16,
        )
    ]


def saved_tensor_bytes(fn):
    """(bytes of the tensors autograd saves for backward while fn() runs, fn's result), counted
    with torch.autograd.graph.saved_tensors_hooks."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = fn()
    return total, result


def bench_flow_memory(cases, device, repeats=3, progress=None):
    """One row per case and way of training: the bytes saved for backward by one training step's
    forward pass and the median time of the whole step (forward, backward), after one step that
    also runs ActNorm's data-dependent initialisation."""
    rows = []
    for case in cases:
        x = torch.randint(
            0,
            case.levels,
            (case.batch, *case.shape),
            device=device,
            generator=torch.Generator(device).manual_seed(0),
        )
        plain = {}
        for training, memory_saving in (("plain autograd", False), ("memory saving", True)):
            model = case.build(device, memory_saving=memory_saving)
            model.loss(x)

            def step():
                loss = model.loss(x, torch.Generator(device).manual_seed(1))
                loss.backward()

            saved, loss = saved_tensor_bytes(
                lambda: model.loss(x, torch.Generator(device).manual_seed(1))
            )
            loss.backward()
            seconds = _seconds(step, device, repeats)
            plain = plain or {"saved": saved, "seconds": seconds}
            rows.append(
                {
                    "model": case.model,
                    "case": case.label,
                    "batch": case.batch,
                    "training": training,
                    "saved_MB": saved / 2**20,
                    "saved_vs_plain": saved / plain["saved"],
                    "step_ms": 1e3 * seconds,
                    "time_vs_plain": seconds / plain["seconds"],
                }
            )
            if progress is not None:
                progress.update(1)
    return rows


# --------------------------------------------------------------------------------------------------
# The report of `gdm-engine bench`
# --------------------------------------------------------------------------------------------------

# "ops": every op against its providers; "engine": the samplers, flow memory and sampler loops;
# "host": the host time of each op call (and sampler step); "integrations": the drop-ins against
# their upstream libraries
REPORT_SECTIONS = ("ops", "engine", "host", "integrations")


def report(
    device: torch.device,
    specs: list,
    *,
    whole_engine: bool = True,
    quick: bool = False,
    seed: Optional[int] = None,
    cases_per_op: Optional[int] = None,
    compiled: bool = True,
    sections: Collection[str] = REPORT_SECTIONS,
) -> dict:
    """Times what `sections` name and prints each table as it is measured.

    Args:
        device: where to time; on a CPU only the references and peers are timed, in fp32.
        specs: the catalog's OpSpecs to time.
        whole_engine: whether `specs` is the whole catalog: the host table then times one step of
            every sampler loop too.
        quick: smaller shapes, fewer repeats, two cases per op (unless `cases_per_op`).
        seed: the inputs' random seed (default: fresh).
        cases_per_op: only the first N cases of each op.
        compiled: whether to time torch.compile of the references too (minutes of graphs).
        sections: which of REPORT_SECTIONS to measure.

    Returns:
        The report: date, device, versions, and per section its rows ("rows", "sampling",
        "flow_memory", "diffusion_loops", "host", "integrations"), as `write_markdown` reads it.
    """
    unknown = set(sections) - set(REPORT_SECTIONS)
    if unknown:
        raise ValueError(f"sections must be of {REPORT_SECTIONS}, got {sorted(unknown)}")
    cases_per_op = cases_per_op or (2 if quick else None)
    result = {
        "date": datetime.date.today().isoformat(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "triton": installed_version("triton"),
    }
    if "ops" in sections:
        seed = seed if seed is not None else secrets.randbits(31)
        result.update(_op_timings(device, specs, quick, seed, cases_per_op, compiled))
        result.update(sampling=[], flow_memory=[], diffusion_loops=[])  # unless measured below
    if "engine" in sections:
        result.update(_engine_timings(device, quick))
    if "host" in sections:
        result["host"] = _host_timings(specs, whole_engine, quick, cases_per_op)
    if "integrations" in sections:
        result["integrations"] = _integration_timings(quick)
    return result


def _progress(description, unit):
    from tqdm import tqdm

    return tqdm(desc=description, unit=unit, disable=None, file=sys.stderr)


def _op_timings(device, specs, quick, seed, cases_per_op, compiled):
    """Every op against its providers: GPU sizes on a GPU; on a CPU the references in fp32."""
    from gdm_engine._table import format_table

    if device.type == "cuda":
        size, dtypes = ("medium" if quick else "bench"), None
    else:
        size, dtypes = ("tiny" if quick else "medium"), [torch.float32]
        print(
            "no GPU: timing the reference providers (eager, torch.compile) and installed peers "
            "on the CPU in float32."
            " Kernel timings need a GPU: the interpreter's speed says nothing of the kernels'."
        )
    with _progress("cases", "case") as bar:
        rows = bench(
            specs,
            size,
            device,
            seed,
            dtypes,
            progress=bar,
            cases_per_op=cases_per_op,
            compiled=compiled,
        )
    print(format_table(rows, COLUMNS))
    return {"size": size, "copy_bandwidth_gbs": copy_bandwidth_gbs(str(device)), "rows": rows}


def _engine_timings(device, quick):
    """The samplers (cached against naive), flow training memory and the sampler loops."""
    from gdm_engine._table import format_table

    cases = sampling_cases(device, quick=quick)
    print(f"\nsampling: cached against naive ({'; '.join(c.label for c in cases)})")
    with _progress("samplers", "run") as bar:
        sampling = bench_sampling(cases, device, progress=bar)
    print(format_table(sampling, SAMPLING_COLUMNS))
    print("\nflow training: memory saving against plain autograd")
    with _progress("flows", "run") as bar:
        flow_memory = bench_flow_memory(flow_memory_cases(quick), device, progress=bar)
    print(format_table(flow_memory, FLOW_MEMORY_COLUMNS))
    print(
        "\ndiffusion sampler loops: the fused steps against diffusers' schedulers "
        "(a stand-in elementwise model)"
    )
    with _progress("loops", "case") as bar:
        loops = bench_diffusion_loops(diffusion_loop_cases(device, quick), device, progress=bar)
    print(format_table(loops, DIFFUSION_LOOP_COLUMNS))
    return {"sampling": sampling, "flow_memory": flow_memory, "diffusion_loops": loops}


def _host_timings(specs, whole_engine, quick, cases_per_op):
    """The host table: every op's call and, for the whole engine, one step of every sampler."""
    from gdm_engine import host_time
    from gdm_engine._table import format_table

    repeats = 50 if quick else 400
    print(
        f"\nhost time (µs, medians of {repeats}): a call on tiny CPU tensors with its kernels "
        f"recorded, not run, against a bare torch.library.custom_op call on the same tensors "
        f"(target <= {host_time.OP_TARGET:g}x) and diffusers' step where installed"
    )
    with _progress("host", "case") as bar:
        ops = host_time.host_ops(specs, cases_per_op=cases_per_op, repeats=repeats, progress=bar)
    print(format_table(ops, host_time.OP_COLUMNS))
    steps = []
    if whole_engine:
        print(
            "\nhost time of one sampler step (µs, medians): our loop (kernels recorded, not run) "
            "against the same loop with diffusers' scheduler (target: no slower), a stand-in "
            "model"
        )
        with _progress("host steps", "loop") as bar:
            steps = host_time.host_sampler_steps(intervals=repeats, progress=bar)
        print(format_table(steps, host_time.STEP_COLUMNS))
    return {"ops": ops, "sampler_steps": steps}


def _integration_timings(quick):
    """The drop-ins against their upstream libraries: a step or spline call each."""
    from gdm_engine._table import format_table
    from gdm_engine.integrations import speed

    repeats = 20 if quick else 200
    sizes = ("tiny",) if quick else speed.SIZES
    print(
        f"\nintegrations (µs, medians of {repeats}): each drop-in against the upstream call it "
        f"replaces, on the same tensors (target: speedup >= {speed.TARGET:g})"
    )
    missing = speed.missing_libraries()
    if missing:
        print(f"not installed, not timed: {', '.join(missing)}")
    with _progress("integrations", "case") as bar:
        rows = speed.integration_rows(sizes=sizes, repeats=repeats, progress=bar)
    print(format_table(rows, speed.COLUMNS))
    return rows


def write_markdown(path: str, report: dict) -> None:
    """The bench report (`report`'s result) as markdown tables, one section each, to `path`.

    Args:
        path: the markdown file to write.
        report: what `report` returned (or its JSON read back).
    """
    from gdm_engine import host_time
    from gdm_engine._table import format_table
    from gdm_engine.integrations import speed

    host = report.get("host", {})
    sections = [
        ("Sampling", report.get("sampling"), SAMPLING_COLUMNS),
        ("Flow training memory", report.get("flow_memory"), FLOW_MEMORY_COLUMNS),
        ("Diffusion sampler loops", report.get("diffusion_loops"), DIFFUSION_LOOP_COLUMNS),
        ("Host time per op call (µs)", host.get("ops"), host_time.OP_COLUMNS),
        ("Host time per sampler step (µs)", host.get("sampler_steps"), host_time.STEP_COLUMNS),
        ("Integrations (µs)", report.get("integrations"), speed.COLUMNS),
    ]
    with open(path, "w") as f:
        f.write(
            f"# gdm-engine bench, {report['device']}, {report['date']}\n\n"
            f"torch {report['torch']}, triton {report['triton']}\n"
        )
        if "rows" in report:
            f.write(
                f"measured copy bandwidth {report['copy_bandwidth_gbs']:.0f} GB/s\n\n"
                f"{format_table(report['rows'], COLUMNS, markdown=True)}\n"
            )
        for title, rows, columns in sections:
            if rows:
                f.write(f"\n## {title}\n\n{format_table(rows, columns, markdown=True)}\n")
