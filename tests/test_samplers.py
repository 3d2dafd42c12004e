"""The sampler loops of gdm_engine.sampling on Gaussian data, whose exact denoiser and score are
known in closed form: every sampler must then draw that Gaussian."""

import math

import pytest
import torch

from gdm_engine import sampling

MEAN, STD = torch.tensor([1.0, -2.0]), 0.5
N = 20_000


def exact_eps(alpha_bars, mean=MEAN, covariance=STD**2 * torch.eye(2)):
    """E[eps | x_t] for x_0 ~ N(mean, covariance): x_t ~ N(sqrt(ab) mean, ab Σ + (1 - ab) I)
    (Ho et al., 2020, eq. 4), so E[eps | x_t] = sqrt(1 - ab) (ab Σ + (1 - ab) I)⁻¹
    (x_t - sqrt(ab) mean)."""
    def denoiser(x, t):
        ab = alpha_bars[t][:, None].to(x)
        noised = ab[..., None] * covariance.to(x) + (1 - ab[..., None]) * torch.eye(len(mean)).to(x)
        return (1 - ab).sqrt() * torch.linalg.solve(noised, x - ab.sqrt() * mean)

    return denoiser


def _std_error(x):
    """The largest relative error of the samples' standard deviation, after checking the mean."""
    assert x.shape == (N, 2) and torch.isfinite(x).all()
    assert (x.mean(0) - MEAN).abs().max() < 4 * STD / math.sqrt(N) + 0.01
    return ((x.std(0) / STD) - 1).abs().max().item()


def _schedule():
    return sampling.linear_alpha_bars(1000)  # Ho et al.'s


def test_ddpm_ancestral_sampling_draws_the_data():
    alpha_bars = _schedule()
    x = sampling.ddpm_sample(exact_eps(alpha_bars), (N, 2), alpha_bars,
                              generator=torch.Generator().manual_seed(0))
    assert _std_error(x) < 0.03


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_draws_the_data_and_converges_with_steps(eta):
    # with the exact denoiser only the discretisation errs: 500 of the 1,000 steps come within
    # 1.5% of the data's spread, 50 steps fall short by more (DDIM shrinks it)
    alpha_bars = _schedule()
    errors = [_std_error(sampling.ddim_sample(exact_eps(alpha_bars), (N, 2), alpha_bars, steps,
                                               eta=eta, generator=torch.Generator().manual_seed(0)))
              for steps in (50, 500)]
    assert errors[1] < 0.03 and errors[1] < errors[0]


def test_samplers_are_reproducible_from_the_generator():
    alpha_bars = _schedule()
    for sample in (lambda g: sampling.ddpm_sample(exact_eps(alpha_bars), (4, 2), alpha_bars,
                                                   generator=g),
                   lambda g: sampling.ddim_sample(exact_eps(alpha_bars), (4, 2), alpha_bars, 10,
                                                   eta=0.5, generator=g),
                   lambda g: sampling.heun_sample(exact_eps(alpha_bars), (4, 2), alpha_bars, 10,
                                                   churn=0.3, generator=g)):
        first, again = (sample(torch.Generator().manual_seed(3)) for _ in range(2))
        assert torch.equal(first, again)
        assert not torch.equal(first, sample(torch.Generator().manual_seed(4)))


def test_annealed_langevin_draws_the_data():
    sigmas = torch.logspace(0, -2, 10)

    def score(x, level):  # of the data blurred by N(0, sigma²): N(MEAN, STD² + sigma²)
        return -(x - MEAN) / (STD**2 + sigmas[level][:, None] ** 2)

    x = sampling.annealed_langevin_sample(score, (N, 2), sigmas, steps_per_level=100,
                                           epsilon=2e-5, generator=torch.Generator().manual_seed(0))
    assert _std_error(x) < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun"])
def test_sampler_loop_makes_no_host_synchronisation(sampler):
    # the schedule is handed over on the CPU (where its steps are placed) and the loop runs on
    # the GPU: 50 steps without a single read back to the host
    alpha_bars = _schedule()
    denoiser = exact_eps(alpha_bars.cuda(), MEAN.cuda())

    def sample():
        return sampling.sample(denoiser, (64, 2), alpha_bars, sampler, 50, device="cuda",
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
            runs.append(sampling.ddim_sample(exact_eps(alpha_bars), (8, 2), alpha_bars, 10,
                                              generator=torch.Generator().manual_seed(0)))
    assert torch.allclose(*runs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("sampler, steps, bound", [("euler", 50, 0.06), ("heun", 20, 0.05),
                                                   ("heun", 50, 0.01), ("dpmpp_2m", 20, 0.03)])
def test_sigma_form_samplers_draw_the_data(sampler, steps, bound):
    # the exact denoiser leaves only the discretisation error: second-order methods need far
    # fewer steps than Euler (= DDIM) for the same spread
    alpha_bars = _schedule()
    x = sampling.sample(exact_eps(alpha_bars), (N, 2), alpha_bars, sampler, steps,
                         generator=torch.Generator().manual_seed(0))
    assert _std_error(x) < bound


def test_churn_keeps_the_samplers_on_the_data():
    alpha_bars = _schedule()
    x = sampling.heun_sample(exact_eps(alpha_bars), (N, 2), alpha_bars, 50, churn=0.2,
                              generator=torch.Generator().manual_seed(0))
    assert _std_error(x) < 0.05


@pytest.mark.parametrize("sampler", list(sampling.SAMPLERS))
def test_guidance_combines_the_two_outputs(sampler):
    # the pair (c, u) with scale w samples as the single output u + w (c − u) does
    alpha_bars = _schedule()
    exact = exact_eps(alpha_bars)
    shifted = exact_eps(alpha_bars, MEAN + 1)
    w = 2.0

    def pair(x, t):
        return exact(x, t), shifted(x, t)

    def combined(x, t):
        return shifted(x, t) + w * (exact(x, t) - shifted(x, t))

    steps = None if sampler == "ddpm" else 10
    runs = [sampling.sample(fn, (64, 2), alpha_bars, sampler, steps,
                             generator=torch.Generator().manual_seed(0), **kwargs)
            for fn, kwargs in ((pair, {"guidance_scale": w}), (combined, {}))]
    assert torch.allclose(*runs, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="pair"):
        sampling.sample(exact, (4, 2), alpha_bars, sampler, steps, guidance_scale=w)


def test_sampler_choice_and_steps_are_checked():
    alpha_bars = _schedule()
    with pytest.raises(ValueError, match="sampler"):
        sampling.sample(exact_eps(alpha_bars), (4, 2), alpha_bars, "plms", 10)
    with pytest.raises(ValueError, match="ddpm"):
        sampling.sample(exact_eps(alpha_bars), (4, 2), alpha_bars, "ddpm", 10)
    with pytest.raises(ValueError, match="churn"):
        sampling.euler_sample(exact_eps(alpha_bars), (4, 2), alpha_bars, 10, churn=-1.0)
    with pytest.raises(ValueError, match="prediction"):
        sampling.dpmpp_2m_sample(exact_eps(alpha_bars), (4, 2), alpha_bars, 10,
                                  prediction="score")


@pytest.mark.parametrize("spacing", sampling.SPACINGS)
def test_timestep_spacings_run_down_the_whole_schedule(spacing):
    alpha_bars = _schedule()
    times = sampling.timestep_spacing(alpha_bars, 20, spacing)
    assert times[0] == 999 and times[-1] == 0 and 18 <= len(times) <= 20
    assert all(a > b for a, b in zip(times, times[1:]))
    with pytest.raises(ValueError, match="spacing"):
        sampling.timestep_spacing(alpha_bars, 20, "quadratic")
