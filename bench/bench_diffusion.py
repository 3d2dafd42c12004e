"""diffusion (ddpm_step, ddim_step, langevin_step): kernel, eager and compiled reference, at the
catalog's shapes (forward only: the samplers' steps have no backward)."""

import pytest
from catalog_suite import provider_params, run

DDPM = provider_params("ddpm_step")
DDIM = provider_params("ddim_step")
LANGEVIN = provider_params("langevin_step")


@pytest.mark.parametrize("fn", [fn for _, fn in DDPM], ids=[label for label, _ in DDPM])
def bench_ddpm_step(benchmark, fn):
    run(benchmark, fn)


@pytest.mark.parametrize("fn", [fn for _, fn in DDIM], ids=[label for label, _ in DDIM])
def bench_ddim_step(benchmark, fn):
    run(benchmark, fn)


@pytest.mark.parametrize("fn", [fn for _, fn in LANGEVIN], ids=[label for label, _ in LANGEVIN])
def bench_langevin_step(benchmark, fn):
    run(benchmark, fn)
