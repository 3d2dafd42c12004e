"""Data sets: the digits split, the 2-D toys (samplers and true densities), user files, the
dequantisation convention, and what every model takes of discrete data (integer levels in range)."""

import math
import re

import numpy as np
import pytest
import torch

from gdm_engine import data, models


def test_digits_are_the_bundled_images_with_a_fixed_split():
    digits = data.load("digits")
    assert digits.train.shape == (1350, 1, 8, 8) and digits.valid.shape == (150, 1, 8, 8)
    assert digits.test.shape == (297, 1, 8, 8)
    assert digits.levels == 17 and digits.discrete and digits.shape == (1, 8, 8)
    assert digits.train.dtype == torch.int64
    assert int(digits.train.min()) == 0 and int(digits.train.max()) == 16
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images).long().unsqueeze(1)
    # in the file's order: train, then validation, then test (the last 297, as before)
    assert torch.equal(torch.cat([digits.train, digits.valid, digits.test]), images)


def test_digits_carry_their_labels_split_alike():
    from sklearn.datasets import load_digits

    digits = data.load("digits")
    assert digits.classes == 10 and set(digits.labels) == {"train", "valid", "test"}
    labels = torch.cat([digits.labels[split] for split in ("train", "valid", "test")])
    assert torch.equal(labels, torch.from_numpy(load_digits().target).long())
    assert all(len(digits.labels[s]) == len(getattr(digits, s)) for s in digits.labels)
    assert data.load("8gaussians").labels is None


@pytest.mark.parametrize("name", ["moons", "checkerboard"])
def test_toys_have_three_independent_samples(name):
    toy = data.load(name)
    assert (len(toy.train), len(toy.valid), len(toy.test)) == (20_000, 5_000, 5_000)
    assert not torch.equal(toy.valid, toy.test)
    assert torch.equal(toy.valid, data.load(name).valid)


@pytest.mark.parametrize("name", data.TOYS)
def test_toy_samplers_are_reproducible_2d_points(name):
    toy = data.TOYS[name]
    draw = lambda seed: toy.sample(500, torch.Generator().manual_seed(seed))  # noqa: E731
    points = draw(3)
    assert points.shape == (500, 2) and torch.isfinite(points).all()
    assert torch.equal(points, draw(3)) and not torch.equal(points, draw(4))
    assert 0.3 < points.std(0).min() and points.abs().max() < 6  # spread out, bounded


@pytest.mark.parametrize("name", [n for n, t in data.TOYS.items() if t.log_prob is not None])
def test_toy_densities_integrate_to_one_and_cover_their_samples(name):
    toy = data.TOYS[name]
    side = torch.linspace(-4, 4, 801, dtype=torch.float64)
    grid = torch.cartesian_prod(side, side)
    cell = (side[1] - side[0]) ** 2
    assert toy.log_prob(grid).exp().sum().item() * cell == pytest.approx(1.0, abs=0.02)
    samples = toy.sample(2000, torch.Generator().manual_seed(0))
    assert torch.isfinite(toy.log_prob(samples)).all()


def test_sines_are_mu_law_sequences_with_fixed_splits():
    sines = data.load("sines")
    assert sines.levels == 256 and sines.shape == (1, 1024) and sines.train.dtype == torch.int64
    assert (len(sines.train), len(sines.valid), len(sines.test)) == (2000, 250, 250)
    assert torch.equal(sines.valid, data.load("sines").valid)
    assert not torch.equal(sines.valid, sines.test[:250])
    assert int(sines.train.min()) >= 0 and int(sines.train.max()) <= 255
    # sinusoids move smoothly: neighbouring steps are close in the companded scale
    assert (sines.train[:, 0, 1:] - sines.train[:, 0, :-1]).abs().float().mean() < 40


def test_mu_law_decoding_inverts_encoding_on_every_level():
    levels = torch.arange(256)
    assert torch.equal(data.mu_law_encode(data.mu_law_decode(levels)), levels)
    x = torch.linspace(-1, 1, 1001)
    # within half a level: the widest levels, at full scale, span 0.043
    assert (data.mu_law_decode(data.mu_law_encode(x)) - x).abs().max() < 0.022


def test_dequantisation_lies_in_the_cell_of_each_level():
    x = torch.randint(0, 17, (100, 5))
    y = data.dequantize(x, 17, torch.Generator().manual_seed(0))
    assert ((y * 17).floor().long() == x).all() and (y >= 0).all() and (y < 1).all()


def test_dequantisation_never_rounds_into_the_next_cell(monkeypatch):
    # u within half an fp32 spacing of 1: x + u rounds up to x + 1 in fp32, y = 1.0 at x = 255
    monkeypatch.setattr(torch, "rand", lambda shape, **kw: torch.full(shape, 1 - 2.0**-24))
    x = torch.arange(256).repeat(4)
    y = data.dequantize(x, 256).double()
    assert (y < (x.double() + 1) / 256).all() and (y >= x.double() / 256).all()
    assert (y < 1).all()


def test_the_bound_of_a_uniform_density_is_the_uniform_mass():
    # p(y) = 1 on [0, 1)^D spreads mass levels^-D evenly: the bound is tight
    x = torch.randint(0, 17, (4, 6))
    bound = data.dequantized_log_prob(lambda y: torch.zeros(len(y)), x, 17)
    assert torch.allclose(bound, torch.full((4,), -6 * math.log(17)))


def test_the_bound_of_a_sloped_density_is_its_expectation_over_the_cell():
    # p(y) = 2y on [0, 1): E_u[log p((x + u) / L)] = log(2/L) + (x+1) log(x+1) - x log x - 1
    levels, x = 4, torch.tensor([0, 1, 2, 3]).repeat(20_000, 1).T.reshape(-1, 1)
    bound = data.dequantized_log_prob(lambda y: torch.log(2 * y).sum(1), x, levels,
                                      torch.Generator().manual_seed(0))
    for level in range(levels):
        k = float(level)
        xlogx = 0.0 if k == 0 else k * math.log(k)
        want = math.log(2 / levels) + (k + 1) * math.log(k + 1) - xlogx - 1 - math.log(levels)
        got = bound[x[:, 0] == level].double().mean().item()
        assert got == pytest.approx(want, abs=0.02), level


def test_npz_of_integers_is_discrete_with_a_fixed_split(tmp_path):
    images = np.random.default_rng(0).integers(0, 4, (50, 1, 3, 3))
    np.savez(tmp_path / "a.npz", x=images)
    loaded = data.load(str(tmp_path / "a.npz"))
    assert loaded.levels == 4
    assert (len(loaded.train), len(loaded.valid), len(loaded.test)) == (40, 5, 5)
    again = data.load(str(tmp_path / "a.npz"))
    assert torch.equal(loaded.valid, again.valid) and torch.equal(loaded.test, again.test)
    assert sorted(torch.cat([loaded.train, loaded.valid, loaded.test]).flatten().tolist()) == \
        sorted(images.flatten().tolist())
    np.savez(tmp_path / "b.npz", images=images, levels=9)
    assert data.load(str(tmp_path / "b.npz")).levels == 9


def test_npz_of_floats_is_continuous(tmp_path):
    np.savez(tmp_path / "p.npz", np.random.default_rng(0).normal(size=(30, 2)))
    loaded = data.load(str(tmp_path / "p.npz"))
    assert not loaded.discrete and loaded.train.dtype == torch.float32 and loaded.shape == (2,)


@pytest.mark.parametrize("arrays, message", [
    ({"a": np.zeros((5, 2)), "b": np.zeros((5, 2))}, "name the array"),
    ({"x": -np.ones((5, 2), dtype=np.int64)}, "levels >= 0"),
    ({"x": np.zeros((2, 3))}, "at least 3 examples"),
    ({"x": np.full((5, 2), 3), "levels": 3}, "above every value"),
])
def test_bad_npz_files_raise(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        data.load(str(tmp_path / "bad.npz"))


def test_folder_of_png_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 5, 7), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / f"{i:02d}.png")
    loaded = data.load(str(tmp_path))
    assert loaded.shape == (1, 5, 7) and loaded.levels == 256
    assert sorted(torch.cat([loaded.train, loaded.valid, loaded.test]).flatten().tolist()) == \
        sorted(pixels.flatten().tolist())
    Image.fromarray(pixels[0][:4]).save(tmp_path / "odd.png")
    with pytest.raises(ValueError, match="differ in size"):
        data.load(str(tmp_path))


def test_unknown_data_names_the_choices():
    with pytest.raises(ValueError, match="unknown data 'mnist'.*digits"):
        data.load("mnist")
    with pytest.raises(TypeError, match="data must be"):
        data.load(3)


# --------------------------------------------------------------------------------------------------
# What every model takes: discrete data are integer levels 0 .. levels - 1
# --------------------------------------------------------------------------------------------------


def _entries(model):
    """The public calls of a model that take examples: log_prob (where it has one) and loss (of
    its first player, for a model of several)."""
    players = model.players()
    options = {"player": players[0].name} if len(players) > 1 else {}
    entries = {"loss": lambda x: model.loss(x, **options)}
    if model.likelihood is not None:
        entries["log_prob"] = model.log_prob
    return entries


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_refuses_examples_that_are_not_its_levels(name):
    """Regression: out-of-range levels gave NaN or a number (the flows, the DDPM) or an
    IndexError (the VAE, the pixels, PixelCNN, WaveNet); float examples were taken as levels."""
    digits = data.load("digits")
    model = models.get(name).for_data(digits)
    x = digits.test[:2]
    bad = [(x + digits.levels, ValueError, "x must lie in 0 .. 16, got values from 17 to"),
           (x - 1, ValueError, "x must lie in 0 .. 16, got values from -1 to"),
           (x.float(), TypeError, "x must hold integer levels, got torch.float32"),
           (x[:, 0], ValueError, re.escape("x must have shape (N, 1, 8, 8), got (2, 8, 8)")),
           (x.tolist(), TypeError, "x must be a torch.Tensor")]
    for call, entry in _entries(model).items():
        for examples, error, message in bad:
            with pytest.raises(error, match=message):
                entry(examples)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_every_model_needs_two_levels_or_more(name):
    """Regression: IndependentPixels took levels=0 and levels=1."""
    for levels in (0, 1):
        with pytest.raises(ValueError, match="levels must be >= 2"):
            models.get(name)(shape=(1, 8, 8), levels=levels)
    with pytest.raises(TypeError, match="levels must be an int"):
        models.get(name)(shape=(1, 8, 8), levels=17.0)
