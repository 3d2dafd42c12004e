"""Timing of every catalog op against its providers, behind `gdm-engine bench` and bench/.

Providers: "triton" (our kernel; timed on a GPU only: interpreter timings say nothing of speed),
"eager" (the PyTorch reference), "compile" (torch.compile of the reference), and the peer
libraries the catalog names where they are installed. Each row gives the median time, the
achieved GB/s and TFLOP/s from the op's cost model, the percentage of the device's measured
memory roofline, and the speedup over eager.
"""

import functools
import statistics
import time

import torch

from gdm_engine.testing import supported_dtypes

COLUMNS = ["op", "case", "dtype", "provider", "median_ms", "GB/s", "TFLOP/s", "%roofline",
           "vs_eager"]


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


@functools.lru_cache(maxsize=None)
def copy_bandwidth_gbs(device_str):
    """Measured device memory bandwidth: a large copy, bytes read plus bytes written."""
    device = torch.device(device_str)
    numel = (1 << 28 if device.type == "cuda" else 1 << 25) // 4
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


@functools.lru_cache(maxsize=None)
def _compiled(fn):
    return torch.compile(fn)


def providers(spec, case, device):
    """name -> zero-argument callable running the case."""
    args, kwargs = case.args, case.kwargs
    found = {"eager": lambda: spec.reference(*args, **kwargs)}
    compiled = _compiled(spec.reference)
    found["compile"] = lambda: compiled(*args, **kwargs)
    if device.type == "cuda":
        found["triton"] = lambda: spec.kernel(*args, **kwargs)
    for name, make in spec.peers.items():
        fn = make(case) if device.type == "cuda" else None
        if fn is not None:
            found[name] = fn
    return found


def bench_case(spec, case, device):
    """One row per provider of `case`."""
    moved, flops = spec.bytes_moved(case), spec.flops(case)
    bandwidth = copy_bandwidth_gbs(str(device))
    rows = []
    with torch.no_grad():
        for name, fn in providers(spec, case, device).items():
            ms = time_ms(fn, device)
            rows.append({
                "op": spec.name, "case": case.label,
                "dtype": str(case.tensors()[0].dtype).replace("torch.", ""),
                "provider": name, "median_ms": ms,
                "GB/s": moved / (ms * 1e-3) / 1e9, "TFLOP/s": flops / (ms * 1e-3) / 1e12,
                "%roofline": 100 * (moved / (bandwidth * 1e9)) / (ms * 1e-3),
            })
    eager = next(r["median_ms"] for r in rows if r["provider"] == "eager")
    for row in rows:
        row["vs_eager"] = eager / row["median_ms"]
    return rows


def bench(specs, size, device, seed, dtypes=None, progress=None):
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for spec in specs:
        for dtype in dtypes or supported_dtypes(device):
            for case in spec.make_inputs(size, dtype, device, generator):
                rows += bench_case(spec, case, device)
                if progress is not None:
                    progress.update(1)
    return rows
