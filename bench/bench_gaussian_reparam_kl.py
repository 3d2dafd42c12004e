"""gaussian_reparam_kl: kernel, eager and compiled reference, at the catalog's shapes."""

import pytest
from catalog_suite import provider_params, run

PARAMS = provider_params("gaussian_reparam_kl")


@pytest.mark.parametrize("fn", [fn for _, fn in PARAMS], ids=[label for label, _ in PARAMS])
def bench_gaussian_reparam_kl(benchmark, fn):
    run(benchmark, fn)
