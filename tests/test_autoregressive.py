"""The autoregressive models, PixelCNN and WaveNet: causality with no blind spot, normalisation,
the cached sampler against the naive one, sampling from the model's own distribution, and bad
settings."""

import itertools

import pytest
import torch

import gdm_engine
from gdm_engine import testing
from gdm_engine.models import PixelCNN, WaveNet

from conftest import SEED


def _model(cls, shape, levels, **options):
    torch.manual_seed(SEED)
    return cls(shape, levels, **options)


def _input_gradients(model, x, position):
    """|d(a random projection of the logits at `position`) / dx| summed over the examples of x
    (N, *shape) of float levels: an input the position depends on has a gradient for almost every
    example, while a ReLU that is off for one example can zero it there (seed 1487871004)."""
    x = x.detach().requires_grad_(True)
    logits = model.logits(x)[(slice(None), slice(None), *position)]
    (logits * torch.randn_like(logits)).sum().backward()
    return x.grad.abs().sum(0)


def _reaches(gradient):
    return gradient != 0


def test_pixelcnn_sees_every_earlier_pixel_and_nothing_after():
    # kernel 5, 4 layers: the receptive field of every pixel of an 8 x 8 image holds all the
    # pixels before it, including those up and to the right that the original PixelCNN missed
    model = _model(PixelCNN, (1, 8, 8), 17, channels=16, layers=4, kernel_size=5).double()
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64) * 16
    earlier = torch.arange(64).view(8, 8)
    for i, j in itertools.product(range(8), range(8)):
        gradient = _input_gradients(model, x, (0, i, j))
        assert torch.equal(_reaches(gradient[0]), earlier < 8 * i + j), (i, j)


def test_pixelcnn_colour_channels_see_the_channels_before_them_in_their_pixel():
    model = _model(PixelCNN, (3, 4, 4), 5, channels=24, layers=3, kernel_size=3).double()
    x = torch.rand(4, 3, 4, 4, dtype=torch.float64) * 4
    for c in range(3):
        gradient = _input_gradients(model, x, (c, 2, 1))
        assert torch.equal(_reaches(gradient[:, 2, 1]), torch.arange(3) < c)
        assert _reaches(gradient[:, 1]).all() and _reaches(gradient[:, 2, 0]).all()
        assert not _reaches(gradient[:, 2, 2:]).any() and not _reaches(gradient[:, 3]).any()


@pytest.mark.parametrize("layers", [6, 3])
def test_wavenet_sees_its_receptive_field_before_each_position_and_nothing_after(layers):
    # 6 layers (dilations 1 .. 32, kernel 2) see 65 steps back: all of 64; 3 layers see 9
    model = _model(WaveNet, (64,), 16, channels=16, layers=layers).double()
    x = torch.rand(4, 64, dtype=torch.float64) * 15
    steps = torch.arange(64)
    assert model.receptive_field == {6: 65, 3: 9}[layers]
    for t in range(64):
        gradient = _input_gradients(model, x, (t,))
        want = (steps < t) & (steps >= t - model.receptive_field)
        assert torch.equal(_reaches(gradient), want), t


def _all_values(shape, levels):
    values = itertools.product(range(levels), repeat=torch.Size(shape).numel())
    return torch.tensor(list(values)).view(-1, *shape)


@pytest.mark.parametrize("cls, shape, options", [
    (PixelCNN, (1, 2, 2), {"channels": 4, "layers": 2, "kernel_size": 3}),
    (PixelCNN, (2, 1, 2), {"channels": 4, "layers": 2, "kernel_size": 3}),
    (WaveNet, (4,), {"channels": 4, "layers": 2}),
])
def test_probabilities_of_every_binary_example_sum_to_one(cls, shape, options):
    model = _model(cls, shape, 2, **options)
    with torch.no_grad():
        total = model.log_prob(_all_values(shape, 2)).double().exp().sum()
    assert abs(total.item() - 1) < 1e-5


MODELS = [
    (PixelCNN, (1, 6, 5), 7, {"channels": 8, "layers": 3, "kernel_size": 3}),
    (PixelCNN, (3, 4, 4), 5, {"channels": 6, "layers": 2, "kernel_size": 5, "dropout": 0.5}),
    (WaveNet, (1, 30), 9, {"channels": 8, "layers": 3, "stacks": 2}),
    (WaveNet, (2, 3, 4), 5, {"channels": 6, "layers": 2, "kernel_size": 3, "dropout": 0.5}),
]


@pytest.mark.parametrize("cls, shape, levels, options", MODELS)
def test_cached_logits_equal_the_full_pass(cls, shape, levels, options):
    model = _model(cls, shape, levels, **options)
    x = torch.randint(0, levels, (3, *shape))
    model.eval()
    want = model.logits(x)
    assert want.shape == (3, levels, *shape)
    assert testing.relative_error(model.cached_logits(x), want.double()) < 1e-5


@pytest.mark.parametrize("cls, shape, levels, options", MODELS)
def test_cached_and_naive_samplers_draw_the_same_samples_in_float64(cls, shape, levels, options):
    model = _model(cls, shape, levels, **options).double()
    cached = model.sample(4, generator=torch.Generator().manual_seed(SEED))
    naive = model.sample(4, generator=torch.Generator().manual_seed(SEED), cached=False)
    assert cached.dtype == torch.long and cached.shape == (4, *shape)
    assert torch.equal(cached, naive)
    assert model.training  # sampling left the mode as it was


@pytest.mark.parametrize("cls, options", [
    (PixelCNN, {"channels": 4, "layers": 2, "kernel_size": 3}),
    (WaveNet, {"channels": 4, "layers": 2}),
])
def test_samples_follow_the_model_distribution(cls, options):
    torch.manual_seed(0)
    model = cls((1, 2, 2), 2, **options)
    with torch.no_grad():  # sharpen the distribution so that frequencies are far from uniform
        model.out.bias.mul_(0).add_(torch.tensor([1.5, -1.5]))
    images = _all_values((1, 2, 2), 2)
    want = model.log_prob(images).exp().detach()
    # a fixed seed: with fresh draws a test at 4 standard errors over 16 cells fails now and then
    draws = model.sample(8000, generator=torch.Generator().manual_seed(0))
    index = (draws.flatten(1) * torch.tensor([8, 4, 2, 1])).sum(1)
    frequencies = torch.bincount(index, minlength=16) / len(draws)
    assert (frequencies - want).abs().max() < 0.02  # 4 standard errors at p = 0.5


@pytest.mark.parametrize("cls, options", [
    (PixelCNN, {"channels": 4, "layers": 2, "kernel_size": 3}),
    (WaveNet, {"channels": 4, "layers": 2}),
])
def test_the_kernels_give_the_reference_log_prob_and_gradients(cls, options):
    model = _model(cls, (1, 4, 4), 5, **options)
    x = torch.randint(0, 5, (2, 1, 4, 4))
    results = []
    for backend in ("reference", "triton"):
        model.zero_grad()
        with gdm_engine.use_backend(backend):
            log_prob = model.log_prob(x)
            log_prob.sum().backward()
        results.append([log_prob.detach()] + [p.grad.clone() for p in model.parameters()])
    for got, want in zip(*results):
        assert testing.relative_error(got, want.double()) < 1e-4


@pytest.mark.parametrize("cls, shape, options, message", [
    (PixelCNN, (64,), {}, r"images \(C, H, W\)"),
    (PixelCNN, (1, 8, 8), {"kernel_size": 4}, "kernel_size must be odd"),
    (PixelCNN, (3, 8, 8), {"channels": 8}, "colour groups"),
    (PixelCNN, (1, 8, 8), {"dropout": 1.0}, "dropout"),
    (PixelCNN, (1, 8, 8), {"layers": 0}, "layers must be >= 1"),
    (WaveNet, (64,), {"kernel_size": 1}, "kernel_size must be >= 2"),
    (WaveNet, (64,), {"channels": 0}, "channels must be >= 1"),
])
def test_bad_settings_are_refused(cls, shape, options, message):
    with pytest.raises(ValueError, match=message):
        cls(shape, 17, **options)


@pytest.mark.parametrize("cls, shape, levels, options", MODELS)
def test_empty_batches(cls, shape, levels, options):
    model = _model(cls, shape, levels, **options)
    for cached in (True, False):
        assert model.sample(0, cached=cached).shape == (0, *shape)
    assert model.log_prob(torch.zeros(0, *shape, dtype=torch.long)).shape == (0,)
    with pytest.raises(ValueError, match="n must be >= 0"):
        model.sample(-1)


@pytest.mark.parametrize("cls", [PixelCNN, WaveNet])
def test_bad_data_is_refused(cls):
    with pytest.raises(ValueError, match="discrete data"):
        cls((1, 8, 8), None)
    model = cls((1, 8, 8), 17)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 1, 8, 8\)"):
        model.log_prob(torch.zeros(2, 1, 8, 7, dtype=torch.long))
