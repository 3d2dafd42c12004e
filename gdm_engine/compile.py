"""Ahead-of-time builds of every kernel for real GPUs, on any machine: `gdm-engine compile`.

The interpreter that runs the kernels in the tests accepts programs a GPU compiler may reject, and
says nothing of what decides speed on a GPU. This module builds each kernel exactly as Triton's JIT
would on an sm_80 or sm_90 device and reads what the build used:

1. Record: every catalog op runs forward and backward on its "medium" and "bench" cases, with the
   kernel backend, while `recording_launches()` notes each launch instead of running it (the
   launchers size their grids as for an H100's 132 SMs). fp32 cases run with TF32 on and off.
2. Specialise: Triton's own binder turns each launch's arguments into the signature, constants and
   divisibility attributes the JIT would use (ints equal to 1 become constants, pointers and ints
   divisible by 16 get `tt.divisibility`), for every configuration of an autotuned kernel.
3. Build each distinct specialisation for each architecture (`triton.compile` with a `GPUTarget`),
   in parallel, and read registers and stack (spill) bytes from `cuobjdump`, shared memory from the
   build's metadata, tensor-core instructions and vector widths of global loads and stores from the
   PTX; evaluate each launch's grid against the hardware limits.

A build fails the check when it does not compile, spills, needs more shared memory than a block may
have, or is launched on a grid axis over its limit. Speed is not measured here: that needs a GPU
and `gdm-engine bench`.
"""

import dataclasses
import datetime
import functools
import importlib
import inspect
import json
import multiprocessing
import os
import re
import subprocess
import tempfile
import time

import torch

ARCHITECTURES = {"sm_80": 80, "sm_86": 86, "sm_89": 89, "sm_90": 90}
# Shared memory one block may opt into (CUDA programming guide, compute capabilities table).
SHARED_MEMORY_LIMIT = {80: 163 * 1024, 86: 99 * 1024, 89: 99 * 1024, 90: 227 * 1024}
GRID_LIMITS = (2**31 - 1, 65535, 65535)
SIZES = ("medium", "bench")
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
COLUMNS = [
    "op",
    "kernel",
    "dtype",
    "variant",
    "config",
    "arch",
    "registers",
    "spill_bytes",
    "shared_bytes",
    "tensor_cores",
    "load_bytes",
    "store_bytes",
    "grid",
    "seconds",
    "verdict",
]


@dataclasses.dataclass
class Job:
    """One distinct build: a kernel specialised for one launch's argument types and one config."""

    op: str
    kernel: str
    dtype: str
    variant: str  # the launch's own constants, e.g. "ACTIVATION=3 GRAD=1"
    config: str  # the autotune configuration's tile sizes, warps and stages
    arch: int
    source: object  # triton.compiler.ASTSource
    options: dict
    grid: tuple  # (x, y, z): the largest grid any launch of this build asked for, per axis


@dataclasses.dataclass
class Build:
    op: str
    kernel: str
    dtype: str
    variant: str
    config: str
    arch: str
    registers: int = 0
    spill_bytes: int = 0
    shared_bytes: int = 0
    tensor_cores: str = "-"  # wgmma, mma or none for kernels with tl.dot; "-" for the others
    load_bytes: str = "-"  # narrowest..widest bytes per thread of a global load
    store_bytes: str = "-"
    grid: str = ""
    seconds: float = 0.0
    error: str = ""

    def problems(self):
        """Why this build fails the check (empty when it passes)."""
        found = [self.error] if self.error else []
        if self.spill_bytes:
            found.append(f"spills {self.spill_bytes} bytes")
        limit = SHARED_MEMORY_LIMIT[int(self.arch[3:])]
        if self.shared_bytes > limit:
            found.append(f"needs {self.shared_bytes} bytes of shared memory, over {limit}")
        grid = [int(g) for g in self.grid.split("x")] if self.grid else []
        found += [
            f"grid axis {axis} is {size}, over {GRID_LIMITS[axis]}"
            for axis, size in enumerate(grid)
            if size > GRID_LIMITS[axis]
        ]
        return found

    def row(self):
        return {**dataclasses.asdict(self), "verdict": "; ".join(self.problems()) or "ok"}


# --------------------------------------------------------------------------------------------------
# 1. record the launches of every op
# --------------------------------------------------------------------------------------------------


def record_launches(spec, sizes=SIZES, dtypes=DTYPES, seed=0):
    """Every Launch the op makes, forward and backward, on its cases at `sizes` in `dtypes`."""
    from gdm_engine import use_backend
    from gdm_engine.kernels import recording_launches
    from gdm_engine.testing import allow_tf32, as_tuple, varied, with_grads

    generator = torch.Generator().manual_seed(seed)
    launches = []
    for dtype in dtypes:
        for tf32 in [True, False] if dtype == torch.float32 else [True]:
            for size in sizes:
                for case in spec.make_inputs(size, dtype, torch.device("cpu"), generator):
                    grads = spec.differentiable  # forward-only ops have no backward kernels
                    case = with_grads(spec, case, grads)
                    with recording_launches() as recorded, use_backend("triton"), allow_tf32(tf32):
                        outs = as_tuple(spec.op(*case.args, **case.kwargs))
                        if grads:
                            torch.autograd.grad(
                                outs, varied(case), [torch.empty_like(o) for o in outs]
                            )
                    launches += recorded
        if spec.loop_calls is not None:  # the sampler loops' calls, replayed steps included
            with recording_launches() as recorded, use_backend("triton"):
                spec.loop_calls(dtype, torch.device("cpu"))
            launches += recorded
    return launches


# --------------------------------------------------------------------------------------------------
# 2. specialise them as Triton's JIT does
# --------------------------------------------------------------------------------------------------


def _is_autotuned(kernel):
    return hasattr(kernel, "configs")  # a triton Autotuner, which wraps a JIT function


def launch_configs(launch):
    """(JIT function, configs) of a launch: an autotuned kernel's configurations that its tuner
    would try for these arguments (after its own pruning), or [None] for a plain kernel."""
    kernel = launch.kernel
    if _is_autotuned(kernel):
        kernel.nargs = dict(zip(kernel.arg_names, launch.args))
        return kernel.fn, kernel.prune_configs(launch.kwargs)
    return kernel, [None]


def launch_grid(launch, config=None):
    """The (x, y, z) grid of a launch with a configuration's tile sizes."""
    jit = launch.kernel.fn if _is_autotuned(launch.kernel) else launch.kernel
    names = inspect.signature(jit.fn).parameters
    args = {**dict(zip(names, launch.args)), **launch.kwargs, **(config.kwargs if config else {})}
    grid = tuple(launch.grid(args) if callable(launch.grid) else launch.grid)
    return grid + (1,) * (3 - len(grid))


def _config_label(config):
    if config is None:
        return ""
    tiles = " ".join(f"{k}={v}" for k, v in config.kwargs.items())
    return f"{tiles} warps={config.num_warps} stages={config.num_stages}"


def _dtype_label(signature, precision):
    """The element type of the first pointer argument, with the product precision of fp32 dots."""
    pointer = next((ty for ty in signature.values() if isinstance(ty, str) and ty[0] == "*"), "")
    return f"{pointer[1:]} {precision}" if pointer == "*fp32" and precision else pointer[1:]


# What `specialise` drives inside Triton's JIT, as (module, attribute path): Triton 3.6 to 3.9
# have all of it; these are internals, which another version may move.
TRITON_INTERNALS = [
    ("triton.backends.compiler", "GPUTarget"),
    ("triton.compiler", "ASTSource"),
    ("triton.compiler", "make_backend"),
    ("triton.runtime.jit", "create_function_from_signature"),
    ("triton.runtime.jit", "JITFunction._pack_args"),
    ("triton.knobs", "compilation.instrumentation_mode"),
]


def missing_triton_internals():
    """The names of TRITON_INTERNALS that the installed Triton lacks."""
    missing = []
    for module, path in TRITON_INTERNALS:
        try:
            functools.reduce(getattr, path.split("."), importlib.import_module(module))
        except (ImportError, AttributeError):
            missing.append(f"{module}.{path}")
    return missing


def specialise(op, launch, arch):
    """The Jobs of one launch on one architecture: one per autotune configuration."""
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    fn, configs = launch_configs(launch)
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    # the options Triton's JIT adds to every launch (JITFunction.run); Triton 3.9 added the
    # floating-point sanitizer's, which 3.6-3.8 neither have nor accept
    jit_options = {"debug": False, "instrumentation_mode": knobs.compilation.instrumentation_mode}
    if hasattr(knobs.compilation, "fpsan_homomorphic_casts"):
        jit_options["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    jobs = []
    for config in configs:
        kwargs = dict(launch.kwargs, **jit_options)
        if config is not None:
            kwargs.update(config.all_kwargs())
        bound, specialization, options = binder(*launch.args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(
            backend, kwargs, bound, specialization, options
        )
        variant = " ".join(
            f"{k}={int(v) if isinstance(v, bool) else v}"
            for k, v in launch.kwargs.items()
            if k != "PRECISION"
        )
        dtype = _dtype_label(signature, launch.kwargs.get("PRECISION"))
        jobs.append(
            Job(
                op,
                fn.__name__,
                dtype,
                variant,
                _config_label(config),
                arch,
                ASTSource(fn, signature, constexprs, attrs),
                options.__dict__,
                launch_grid(launch, config),
            )
        )
    return jobs


def _key(job):
    src = job.source
    return (
        job.kernel,
        job.arch,
        job.config,
        tuple(src.signature.items()),
        tuple(sorted(map(str, src.constants.items()))),
        str(src.attrs),
    )


def plan(specs, archs=(80, 90), sizes=SIZES, dtypes=DTYPES, seed=0):
    """The distinct Jobs of every op, each with the largest grid its launches use."""
    return distinct_jobs(
        (
            (spec.name, launch)
            for spec in specs
            for launch in record_launches(spec, sizes, dtypes, seed)
        ),
        archs,
    )


def distinct_jobs(op_launches, archs):
    """The distinct Jobs of (op name, Launch) pairs, each with the largest grid its launches
    use."""
    jobs = {}
    for op, launch in op_launches:
        for arch in archs:
            for job in specialise(op, launch, arch):
                seen = jobs.setdefault(_key(job), job)
                seen.grid = tuple(map(max, seen.grid, job.grid))
    return list(jobs.values())


# --------------------------------------------------------------------------------------------------
# 3. build them and read what they use
# --------------------------------------------------------------------------------------------------

_MEMORY_OP = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)*)")
_ASYNC_COPY = re.compile(
    r"cp\.async\.c[ag]\.shared\.global(?:\.[\w:]+)*\s*\[[^\]]*\],\s*"
    r"\[[^\]]*\],\s*(0x[0-9a-fA-F]+|\d+)"
)


def _access_bytes(suffixes):
    """Bytes per thread of one ld/st.global: vector count times element bits, from its suffixes."""
    vector = re.search(r"\.v(\d+)", suffixes)
    bits = re.findall(r"\.[bfsu](\d+)\b", suffixes)
    return (int(vector.group(1)) if vector else 1) * (int(bits[-1]) // 8 if bits else 4)


def _span(widths):
    if not widths:
        return "-"
    low, high = min(widths), max(widths)
    return str(high) if low == high else f"{low}..{high}"


def memory_widths(ptx):
    """(load, store) byte spans of the global memory accesses in the PTX; cp.async copies (the
    pipelined loads of dot kernels) count as loads."""
    loads, stores = [], []
    for kind, suffixes in _MEMORY_OP.findall(ptx):
        (loads if kind == "ld" else stores).append(_access_bytes(suffixes))
    loads += [int(size, 0) for size in _ASYNC_COPY.findall(ptx)]
    return _span(loads), _span(stores)


def tensor_cores(ttir, ptx):
    """wgmma / mma / none for kernels with a tl.dot; "-" for kernels without one."""
    if "tt.dot" not in ttir:
        return "-"
    if "wgmma.mma_async" in ptx:
        return "wgmma"
    return "mma" if re.search(r"\bmma\.sync", ptx) else "none"


def _cuobjdump():
    import triton

    return os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")


def resource_usage(cubin):
    """(registers per thread, stack bytes per thread) of the cubin's kernel, from cuobjdump."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run(
            [_cuobjdump(), "--dump-resource-usage", f.name],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    registers = re.search(r"REG:(\d+)", out)
    stack = re.search(r"STACK:(\d+)", out)
    return int(registers.group(1)), int(stack.group(1))


def build(job):
    """Compile one Job and read its resources; errors are reported, never raised."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import compile as triton_compile

    result = Build(
        job.op,
        job.kernel,
        job.dtype,
        job.variant,
        job.config,
        f"sm_{job.arch}",
        grid="x".join(map(str, job.grid)),
    )
    start = time.perf_counter()
    try:
        kernel = triton_compile(
            job.source, target=GPUTarget("cuda", job.arch, 32), options=job.options
        )
        result.registers, result.spill_bytes = resource_usage(kernel.asm["cubin"])
        result.shared_bytes = kernel.metadata.shared
        result.tensor_cores = tensor_cores(kernel.asm["ttir"], kernel.asm["ptx"])
        result.load_bytes, result.store_bytes = memory_widths(kernel.asm["ptx"])
    except Exception as error:  # a failed build is a row of the table, not a crash
        result.error = f"build failed: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    result.seconds = time.perf_counter() - start
    return result


_JOBS: list[Job] = []  # the jobs of the running build_all, inherited by its forked workers


def _build_job(index):
    return build(_JOBS[index])


def build_all(jobs, workers=None, progress=None):
    """Build every job on `workers` processes (default: one per core)."""
    workers = workers or os.cpu_count() or 1
    _JOBS[:] = jobs
    try:
        if workers == 1:
            results = []
            for job in jobs:
                results.append(build(job))
                if progress is not None:
                    progress.update(1)
            return results
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            results = []
            for result in pool.imap(_build_job, range(len(jobs))):
                results.append(result)
                if progress is not None:
                    progress.update(1)
            return results
    finally:
        _JOBS.clear()


def summary(builds):
    """One row per (op, kernel, arch): builds, worst registers, spills and shared memory, the
    tensor-core instructions and the vector widths seen."""
    groups = {}
    for b in builds:
        groups.setdefault((b.op, b.kernel, b.arch), []).append(b)
    rows = []
    for (op, kernel, arch), group in groups.items():

        def seen(field):
            return ", ".join(sorted({getattr(b, field) for b in group}))

        rows.append(
            {
                "op": op,
                "kernel": kernel,
                "arch": arch,
                "builds": len(group),
                "max_registers": max(b.registers for b in group),
                "max_spill_bytes": max(b.spill_bytes for b in group),
                "max_shared_bytes": max(b.shared_bytes for b in group),
                "tensor_cores": seen("tensor_cores"),
                "load_bytes": seen("load_bytes"),
                "store_bytes": seen("store_bytes"),
                "failed": sum(bool(b.problems()) for b in group),
            }
        )
    return rows


SUMMARY_COLUMNS = [
    "op",
    "kernel",
    "arch",
    "builds",
    "max_registers",
    "max_spill_bytes",
    "max_shared_bytes",
    "tensor_cores",
    "load_bytes",
    "store_bytes",
    "failed",
]


# --------------------------------------------------------------------------------------------------
# what was last built, for `gdm-engine info`
# --------------------------------------------------------------------------------------------------


def record_path():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "gdm-engine", "compile.json")


def save_record(builds):
    """Note, per op and kernel, the architectures it was built for now and how many builds
    failed the check."""
    record = load_record()
    today = datetime.date.today().isoformat()
    for row in summary(builds):
        entry = record.setdefault(f"{row['op']}/{row['kernel']}", {})
        entry[row["arch"]] = {"date": today, "builds": row["builds"], "failed": row["failed"]}
    os.makedirs(os.path.dirname(record_path()), exist_ok=True)
    with open(record_path() + ".tmp", "w") as f:
        json.dump(record, f, indent=1)
    os.replace(record_path() + ".tmp", record_path())


def load_record():
    """{"op/kernel": {arch: {"date", "builds", "failed"}}} of earlier runs; {} if none."""
    try:
        with open(record_path()) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
