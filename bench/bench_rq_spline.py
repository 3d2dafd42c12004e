"""rq_spline: kernel, eager and compiled reference, and nflows where installed (on a GPU), at the
catalog's shapes, forward and inverse. bench/rq_spline_cpu_vs_nflows.py times the reference
against nflows on a CPU."""

import pytest
from catalog_suite import provider_params, run

PARAMS = provider_params("rq_spline")


@pytest.mark.parametrize("fn", [fn for _, fn in PARAMS], ids=[label for label, _ in PARAMS])
def bench_rq_spline(benchmark, fn):
    run(benchmark, fn)
