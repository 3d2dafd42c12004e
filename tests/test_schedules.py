"""Noise schedules (gdm_engine.sampling.schedules): their published values and shapes, the σ
form, spaced timesteps and bad settings."""

import math

import pytest
import torch

from gdm_engine import sampling


def test_linear_schedule_is_ho_et_al():
    alpha_bars = sampling.linear_alpha_bars()
    assert alpha_bars.shape == (1000,) and alpha_bars.dtype == torch.float32
    assert alpha_bars[0].item() == pytest.approx(1 - 1e-4)
    # prod (1 - beta) over the 1,000 linear betas from 1e-4 to 0.02: about 4.04e-5
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert alpha_bars[-1].item() == pytest.approx(math.prod(1 - b for b in betas.tolist()),
                                                  rel=1e-5)
    assert (alpha_bars[1:] < alpha_bars[:-1]).all()


def test_cosine_schedule_follows_nichol_and_dhariwal():
    steps, offset = 50, 0.008
    alpha_bars = sampling.cosine_alpha_bars(steps, offset=offset, max_beta=0.999)
    f = lambda t: math.cos((t / steps + offset) / (1 + offset) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 25, 40):  # before the beta cap binds
        assert alpha_bars[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-5)
    betas = 1 - alpha_bars[1:].double() / alpha_bars[:-1].double()
    assert betas.max() <= 0.999 + 1e-6 and (alpha_bars > 0).all()


def test_karras_sigmas_run_from_max_to_min_then_zero():
    sigmas = sampling.karras_sigmas(10, sigma_min=0.002, sigma_max=80.0, rho=7.0)
    assert sigmas.shape == (11,) and sigmas[-1] == 0
    assert sigmas[0].item() == pytest.approx(80.0) and sigmas[-2].item() == pytest.approx(0.002)
    assert (sigmas[1:] < sigmas[:-1]).all()
    # eq. 5: the rho-th roots are evenly spaced
    roots = sigmas[:-1].double() ** (1 / 7)
    assert torch.allclose(roots.diff(), roots.diff()[:1].expand(9), rtol=1e-4)
    assert sampling.karras_sigmas(1).tolist() == [80.0, 0.0]


def test_sigma_form_round_trips(generator):
    alpha_bars = sampling.linear_alpha_bars(device="cpu")
    sigmas = sampling.sigmas_from_alpha_bars(alpha_bars)
    assert torch.allclose(sampling.alpha_bars_from_sigmas(sigmas), alpha_bars, rtol=1e-5)
    assert sigmas[0].item() == pytest.approx(math.sqrt(1e-4 / (1 - 1e-4)), rel=1e-3)


def test_spaced_timesteps_cover_the_schedule_in_decreasing_order():
    steps = sampling.spaced_timesteps(1000, 50)
    assert steps.shape == (50,) and steps.dtype == torch.int64
    assert steps[0] == 999 and steps[-1] == 0 and (steps.diff() < 0).all()
    assert sampling.spaced_timesteps(5, 5).tolist() == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("make, message", [
    (lambda: sampling.linear_alpha_bars(0), "steps"),
    (lambda: sampling.linear_alpha_bars(beta_end=1.5), "beta_end"),
    (lambda: sampling.linear_alpha_bars(beta_start=-0.1), "beta_start"),
    (lambda: sampling.cosine_alpha_bars(max_beta=1.0), "max_beta"),
    (lambda: sampling.karras_sigmas(10, sigma_min=90.0), "sigma_min"),
    (lambda: sampling.karras_sigmas(10, rho=0), "rho"),
    (lambda: sampling.sigmas_from_alpha_bars(torch.tensor([0.5, 0.0])), "alpha_bars"),
    (lambda: sampling.alpha_bars_from_sigmas(torch.tensor([-1.0])), "sigmas"),
    (lambda: sampling.spaced_timesteps(10, 20), "steps"),
])
def test_bad_settings_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make()
