"""Metrics: bits/dim against a model whose likelihood is known, and the sample distances."""

import math

import pytest
import torch

from gdm_engine import data, metrics
from gdm_engine.models import IndependentPixels


def test_bits_per_dim_of_the_uniform_model_is_log2_of_the_levels():
    x = torch.randint(0, 17, (10, 1, 4, 4))
    uniform = IndependentPixels(shape=(1, 4, 4), levels=17)  # zero logits
    assert metrics.bits_per_dim(uniform, x, batch_size=3) == pytest.approx(math.log2(17))
    assert metrics.nll_nats(uniform, x) == pytest.approx(16 * math.log(17))


def test_bits_per_dim_averages_per_example_over_uneven_batches():
    # examples of different likelihood, and batches of 3 over 10 (the last holds 1): the figure is
    # the mean over examples, not over batches
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 5, (10, 1, 2, 3), generator=g)
    model = IndependentPixels(shape=(1, 2, 3), levels=5)
    with torch.no_grad():
        model.logits.copy_(torch.randn(6, 5, generator=g) * 2)
    per_example = model.log_prob(x).double()
    assert per_example.std() > 0.5
    want = -per_example.mean().item() / (6 * math.log(2))
    assert metrics.bits_per_dim(model, x, batch_size=3) == pytest.approx(want, rel=1e-9)


def test_bits_per_dim_needs_discrete_data():
    with pytest.raises(TypeError, match="discrete data"):
        metrics.bits_per_dim(IndependentPixels(shape=(2,), levels=3), torch.rand(4, 2))


def test_fitted_baseline_is_the_smoothed_empirical_frequency():
    x = torch.tensor([[0, 1], [0, 2], [0, 1]])
    model = IndependentPixels(shape=(2,), levels=3).fit(x, smoothing=1.0)
    probs = torch.softmax(model.logits, -1)
    assert torch.allclose(probs, torch.tensor([[4 / 6, 1 / 6, 1 / 6], [1 / 6, 3 / 6, 2 / 6]]))
    digits = data.load("digits")
    assert metrics.independent_pixel_bits_per_dim(digits) < math.log2(17)


def test_sliced_wasserstein_of_a_shift_is_its_length_over_root_d():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 2, generator=g)
    shift = torch.tensor([0.6, -0.8])  # length 1: random directions give sqrt(E[(v.θ)²]) = 1/√2
    distance = metrics.sliced_wasserstein(x, x + shift, projections=2000, generator=g)
    assert distance == pytest.approx(1 / math.sqrt(2), rel=0.05)
    assert metrics.sliced_wasserstein(x, x.clone(), generator=g) == pytest.approx(0, abs=1e-12)


def test_mmd_separates_distributions():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1000, 2, generator=g), torch.randn(1000, 2, generator=g)
    same = metrics.mmd(a, b, generator=g)
    different = metrics.mmd(a, b * 0.5 + 1.0, generator=g)
    assert abs(same) < 0.01 and different > 0.2
