"""actnorm: kernel, eager and compiled reference, at the catalog's shapes."""

import pytest
from catalog_suite import provider_params, run

PARAMS = provider_params("actnorm")


@pytest.mark.parametrize("fn", [fn for _, fn in PARAMS], ids=[label for label, _ in PARAMS])
def bench_actnorm(benchmark, fn):
    run(benchmark, fn)
