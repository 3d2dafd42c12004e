"""The Python stages of the GPU check (bench/run_gpu.sh), each writing STEM-<stage>.json and .md:

    python3 bench/gpu_check.py versions STEM     # versions, the GPU, compiled kernels
    python3 bench/gpu_check.py build STEM SEED   # the smoke validate's kernels, built in parallel
    python3 bench/gpu_check.py gpu-tests STEM    # pytest -m gpu, results as they come
    python3 bench/gpu_check.py ddim STEM         # the 50-step DDIM loop, eager and graph-replayed

Each exits non-zero when its check fails. The other stages are `gdm-engine` commands.
"""

import inspect
import json
import platform
import statistics
import sys

import torch

DDIM_SHAPE, DDIM_STEPS = (64, 4, 64, 64), 50


def _write(stem, stage, title, data, table):
    """STEM-stage.json (data) and STEM-stage.md (title, then the markdown lines of `table`)."""
    with open(f"{stem}-{stage}.json", "w") as f:
        json.dump(data, f, indent=1)
    with open(f"{stem}-{stage}.md", "w") as f:
        f.write(f"# {title}\n\n" + "\n".join(table) + "\n")


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def versions(stem):
    """The software and the GPU; fails where the kernels would run through the interpreter."""
    import triton

    import gdm_engine
    from gdm_engine import compile as aot
    from gdm_engine.kernels import INTERPRETED

    properties = torch.cuda.get_device_properties(0)
    data = {"python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton.__version__,
            "gdm_engine": gdm_engine.__file__, "gpu": properties.name,
            "capability": "sm_%d%d" % (properties.major, properties.minor),
            "gpus": torch.cuda.device_count(),
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "multiprocessors": properties.multi_processor_count, "INTERPRETED": INTERPRETED,
            "compile_lacks": aot.missing_triton_internals(),
            **{name: _version(name) for name in ("numpy", "pytest", "diffusers")}}
    _write(stem, "versions", "GPU check: versions", data,
           ["| what | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in data.items()])
    print(json.dumps(data, indent=1))
    if INTERPRETED:
        sys.exit("Triton's interpreter is on (TRITON_INTERPRET): the kernels would not be compiled")


def build(stem, seed):
    """Every kernel that `gdm-engine validate --smoke --seed SEED` will launch, built for this GPU
    on every core into Triton's cache, as `gdm-engine compile` builds them (exactly as the JIT
    would), so that the smoke finds them built: one at a time, its ~500 builds (most of them the
    convolutions' autotuning configurations) would not fit its stage. Reports each kernel's
    registers and spills; fails where a build fails compile's check."""
    from gdm_engine import catalog, compile as aot, testing
    from gdm_engine._table import format_table
    from gdm_engine.kernels import recording_launches

    gpu = torch.cuda.get_device_properties(0)
    precisions = testing.check_precisions(torch.device("cuda"), smoke=True)
    launches = []
    for spec in catalog.CATALOG.values():
        # the smoke's own calls, launches recorded, not run, on the host: validate's inputs are
        # the same on every device, and so are the launches
        with recording_launches(gpu.multi_processor_count) as recorded:
            testing.validate([spec], ["tiny"], torch.device("cpu"), int(seed),
                             precisions=precisions, cases_per_op=2)
        launches += [(spec.name, launch) for launch in recorded]
    builds = aot.build_all(aot.distinct_jobs(launches, [10 * gpu.major + gpu.minor]))
    summary = aot.summary(builds)
    failed = [b.row() for b in builds if b.problems()]
    _write(stem, "build", f"GPU check: the smoke validate's {len(builds)} builds",
           {"builds": len(builds), "failed": failed, "summary": summary},
           [format_table(summary, aot.SUMMARY_COLUMNS, markdown=True)])
    print(format_table(summary, aot.SUMMARY_COLUMNS))
    if failed:
        print(format_table(failed, aot.COLUMNS))
        sys.exit(f"{len(failed)} of {len(builds)} builds failed compile's check")


class _Reports:
    """A pytest plugin: each test's outcome, written out as soon as it is known."""

    def __init__(self, stem):
        self.stem, self.rows = stem, []
        self.write()

    def pytest_runtest_logreport(self, report):
        if report.when == "call" or report.outcome != "passed":  # setup skips and errors too
            if isinstance(report.longrepr, tuple):  # a skip: (file, line, reason)
                message = report.longrepr[2]
            else:
                message = str(report.longrepr).splitlines()[-1][:300] if report.longrepr else ""
            self.rows.append({"test": report.nodeid, "when": report.when,
                              "outcome": report.outcome, "seconds": round(report.duration, 2),
                              "message": message})
            self.write()

    def write(self):
        _write(self.stem, "gpu-tests", "GPU check: pytest -m gpu", self.rows,
               ["| test | outcome | s | message |", "|---|---|---|---|"]
               + [f"| {r['test']} | {r['outcome']} | {r['seconds']} | {r['message']} |"
                  for r in self.rows])


def gpu_tests(stem):
    """The tests marked gpu (sync-debug mode, CUDA-graph replay, the tuning cache, ...)."""
    import pytest

    # a test module that cannot be imported here (a missing optional package) costs its own
    # tests, not every other one
    status = pytest.main(["tests", "-q", "-m", "gpu", "-p", "no:cacheprovider",
                          "--continue-on-collection-errors"], plugins=[_Reports(stem)])
    sys.exit(int(status))


def _cuda_ms(fn, repeats=3):
    """Median milliseconds of fn() between CUDA events, after a warm-up call (builds kernels,
    captures graphs)."""
    fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def ddim(stem):
    """The 50-step DDIM loop on (64, 4, 64, 64) fp32 latents around a stand-in model (one
    elementwise op): ours eagerly and graph-replayed, diffusers' DDIMScheduler where installed;
    and the step kernel's time against the bytes it must move."""
    from triton.testing import do_bench_cudagraph

    from gdm_engine import benchmark, ops, sampling

    device = torch.device("cuda")
    model = benchmark.stand_in_model(None)
    alpha_bars = sampling.linear_alpha_bars(1000)  # diffusers' default schedule, on the host
    notes = []

    def ours(**options):
        return lambda: sampling.ddim_sample(model, DDIM_SHAPE, alpha_bars, DDIM_STEPS,
                                             device=device, **options,
                                             generator=torch.Generator().manual_seed(0))

    loops = {"gdm_engine eager": ours()}
    if "cuda_graph" in inspect.signature(sampling.ddim_sample).parameters:
        loops["gdm_engine cuda graph"] = ours(cuda_graph=True)
    else:
        notes.append("ddim_sample has no cuda_graph option in this tree: not timed")
    case = benchmark.LoopCase("ddim", DDIM_SHAPE, DDIM_STEPS)
    peer = benchmark.diffusers_loop(case, device, model)
    if peer is not None:
        loops["diffusers DDIMScheduler"] = peer
    else:
        notes.append("diffusers is not installed: no peer loop")
    timed = {name: _cuda_ms(loop) for name, loop in loops.items()}
    rows = [{"loop": name, "ms": ms, "ms/step": ms / DDIM_STEPS,
             "vs_eager": timed["gdm_engine eager"] / ms} for name, ms in timed.items()]
    if "gdm_engine cuda graph" in loops:  # the same seed: the same samples
        eager, replayed = loops["gdm_engine eager"](), loops["gdm_engine cuda graph"]()
        notes.append(f"graph-replayed against eager, same seed: max |difference| "
                     f"{(eager - replayed).abs().max().item():.3g}")

    x = torch.randn(DDIM_SHAPE, device=device)
    eps = torch.randn_like(x)
    # replayed from a CUDA graph: the kernel's own time, not the host's time to launch it
    step_ms = do_bench_cudagraph(lambda: ops.ddim_step(x, eps, 0.5, 0.6), return_mode="median")
    step_bytes = 3 * x.numel() * x.element_size()  # x and the model's output read, x_prev written
    copy_gbs = benchmark.copy_bandwidth_gbs(str(device))
    step = {"us": 1e3 * step_ms, "bytes": step_bytes, "GB/s": step_bytes / step_ms / 1e6,
            "copy_GB/s": copy_gbs, "%copy": 100 * step_bytes / step_ms / 1e6 / copy_gbs}
    shape = "x".join(map(str, DDIM_SHAPE))
    _write(stem, "ddim", f"GPU check: {DDIM_STEPS}-step DDIM loop on {shape} fp32",
           {"shape": DDIM_SHAPE, "steps": DDIM_STEPS, "rows": rows, "step_kernel": step,
            "notes": notes},
           ["| loop | ms | ms/step | vs eager |", "|---|---|---|---|"]
           + [f"| {r['loop']} | {r['ms']:.2f} | {r['ms/step']:.3f} | {r['vs_eager']:.2f} |"
              for r in rows]
           + ["", f"one ddim_step kernel: {step['us']:.1f} µs for {step_bytes / 1e6:.1f} MB, "
                  f"{step['GB/s']:.0f} GB/s ({step['%copy']:.0f}% of a measured copy's "
                  f"{copy_gbs:.0f} GB/s)", ""] + [f"- {note}" for note in notes])
    print(json.dumps({"rows": rows, "step_kernel": step, "notes": notes}, indent=1))


STAGES = {"versions": versions, "build": build, "gpu-tests": gpu_tests, "ddim": ddim}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in STAGES:
        sys.exit(f"usage: python3 bench/gpu_check.py {{{','.join(STAGES)}}} STEM [SEED]")
    STAGES[sys.argv[1]](*sys.argv[2:])
