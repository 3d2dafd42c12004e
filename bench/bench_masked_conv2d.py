"""masked_conv2d: kernel, eager reference (cuDNN on masked weights) and compiled reference."""

import pytest
from catalog_suite import provider_params, run

PARAMS = provider_params("masked_conv2d")


@pytest.mark.parametrize("fn", [fn for _, fn in PARAMS], ids=[label for label, _ in PARAMS])
def bench_masked_conv2d(benchmark, fn):
    run(benchmark, fn)
