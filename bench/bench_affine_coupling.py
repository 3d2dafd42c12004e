"""affine_coupling: kernel, eager and compiled reference, at the catalog's shapes."""

import pytest
from catalog_suite import provider_params, run

PARAMS = provider_params("affine_coupling")


@pytest.mark.parametrize("fn", [fn for _, fn in PARAMS], ids=[label for label, _ in PARAMS])
def bench_affine_coupling(benchmark, fn):
    run(benchmark, fn)
