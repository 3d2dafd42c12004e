"""causal_conv1d: kernel, eager and compiled reference, and peers, at the catalog's shapes."""

import pytest
from catalog_suite import provider_params, run

PARAMS = provider_params("causal_conv1d")


@pytest.mark.parametrize("fn", [fn for _, fn in PARAMS], ids=[label for label, _ in PARAMS])
def bench_causal_conv1d(benchmark, fn):
    run(benchmark, fn)
