"""The sampler loops of gdm_engine.diffusion on Gaussian data, whose exact denoiser and score are
known in closed form: every sampler must then draw that Gaussian."""

import math

import pytest
import torch

from gdm_engine import diffusion

MEAN, STD = torch.tensor([1.0, -2.0]), 0.5
N = 20_000


def _exact_eps(alpha_bars, mean=MEAN):
    """E[eps | x_t] for x_0 ~ N(mean, STD² I): x_t ~ N(sqrt(ab) mean, ab STD² + 1 - ab)."""
    def denoiser(x, t):
        ab = alpha_bars[t][:, None]
        return (1 - ab).sqrt() * (x - ab.sqrt() * mean) / (ab * STD**2 + 1 - ab)

    return denoiser


def _std_error(x):
    """The largest relative error of the samples' standard deviation, after checking the mean."""
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    assert (x.mean(0) - MEAN).abs().max() < 4 * STD / math.sqrt(N) + 0.01
    return ((x.std(0) / STD) - 1).abs().max().item()


def _schedule():
    return diffusion.linear_alpha_bars(1000)  # Ho et al.'s


def test_ddpm_ancestral_sampling_draws_the_data():
    alpha_bars = _schedule()
    x = diffusion.ddpm_sample(_exact_eps(alpha_bars), (N, 2), alpha_bars,
                              generator=torch.Generator().manual_seed(0))
    assert _std_error(x) < 0.03


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_draws_the_data_and_converges_with_steps(eta):
    # with the exact denoiser only the discretisation errs: 500 of the 1,000 steps come within
    # 1.5% of the data's spread, 50 steps fall short by more (DDIM shrinks it)
    alpha_bars = _schedule()
    errors = [_std_error(diffusion.ddim_sample(_exact_eps(alpha_bars), (N, 2), alpha_bars, steps,
                                               eta=eta, generator=torch.Generator().manual_seed(0)))
              for steps in (50, 500)]
    assert errors[1] < 0.03 and errors[1] < errors[0]


def test_samplers_are_reproducible_from_the_generator():
    alpha_bars = _schedule()
    for sample in (lambda g: diffusion.ddpm_sample(_exact_eps(alpha_bars), (4, 2), alpha_bars,
                                                   generator=g),
                   lambda g: diffusion.ddim_sample(_exact_eps(alpha_bars), (4, 2), alpha_bars, 10,
                                                   eta=0.5, generator=g)):
        first, again = (sample(torch.Generator().manual_seed(3)) for _ in range(2))
        assert torch.equal(first, again)
        assert not torch.equal(first, sample(torch.Generator().manual_seed(4)))


def test_annealed_langevin_draws_the_data():
    sigmas = torch.logspace(0, -2, 10)

    def score(x, level):  # of the data blurred by N(0, sigma²): N(MEAN, STD² + sigma²)
        return -(x - MEAN) / (STD**2 + sigmas[level][:, None] ** 2)

    x = diffusion.annealed_langevin_sample(score, (N, 2), sigmas, steps_per_level=100,
                                           epsilon=2e-5, generator=torch.Generator().manual_seed(0))
    assert _std_error(x) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_ddim_loop_makes_no_host_synchronisation():
    alpha_bars = _schedule().cuda()
    denoiser = _exact_eps(alpha_bars, MEAN.cuda())

    def sample():
        return diffusion.ddim_sample(denoiser, (64, 2), alpha_bars, 50,
                                     generator=torch.Generator().manual_seed(0))

    sample()  # the kernels' first launch compiles and tunes, which synchronises
    torch.cuda.set_sync_debug_mode("error")
    try:
        sample()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_deterministic_ddim_runs_alike_on_the_kernels_and_the_reference():
    import gdm_engine

    alpha_bars = _schedule()
    runs = []
    for backend in ("triton", "reference"):
        with gdm_engine.use_backend(backend):
            runs.append(diffusion.ddim_sample(_exact_eps(alpha_bars), (8, 2), alpha_bars, 10,
                                              generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(*runs, rtol=1e-4, atol=1e-5)
