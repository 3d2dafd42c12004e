"""diffusion (ddpm_step, ddim_step, euler_step, heun_step, dpmpp_2m_step, langevin_step, q_sample,
diffusion_loss): kernel, eager and compiled reference and installed peers (diffusers' schedulers),
at the catalog's shapes (the samplers' steps are forward only)."""

import pytest
from catalog_suite import provider_params, run

OPS = ["ddpm_step", "ddim_step", "euler_step", "heun_step", "dpmpp_2m_step", "langevin_step",
       "q_sample", "diffusion_loss"]
CASES = [(f"{op}-{label}", fn) for op in OPS for label, fn in provider_params(op)]


@pytest.mark.parametrize("fn", [fn for _, fn in CASES], ids=[label for label, _ in CASES])
def bench_diffusion(benchmark, fn):
    run(benchmark, fn)
