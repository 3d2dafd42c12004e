"""pytest-benchmark suites generated from the catalog: `pytest bench/ --benchmark-json out.json`.

On a GPU the "bench" shapes are timed for every provider (kernel, eager reference, compiled
reference, peers), forward and forward+backward; on a CPU the "tiny" shapes in float32 for the
reference providers only, since the interpreter's timings say nothing of the kernels' speed.
"""

import torch

from gdm_engine import benchmark, catalog
from gdm_engine.testing import supported_dtypes

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def provider_params(op_name):
    """(label, callable) pairs for one catalog op, every pass and provider, for parametrize."""
    spec = catalog.get(op_name)
    size = "bench" if DEVICE.type == "cuda" else "tiny"
    dtypes = supported_dtypes(DEVICE) if DEVICE.type == "cuda" else [torch.float32]
    generator = torch.Generator().manual_seed(0)
    params = []
    for dtype in dtypes:
        for case in spec.make_inputs(size, dtype, DEVICE, generator):
            for pass_, name, fn in benchmark.timed_calls(spec, case, DEVICE):
                params.append((f"{case.label} {dtype} {pass_} {name}".replace("torch.", ""), fn))
    return params


def run(benchmark_fixture, fn):
    """Time fn with the fixture, synchronising the GPU inside each round."""
    def call():
        fn()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark_fixture(call)
