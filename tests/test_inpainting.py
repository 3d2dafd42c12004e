"""Inpainting: completions keep the given pixels, the autoregressive models' completions are
draws of their exact conditional distribution (enumerated on tiny models), RePaint approaches a
Gaussian's known conditional, RePaint and Langevin fill any mask, the half masks, the accuracy
figure, and bad input."""

import itertools

import pytest
import torch
from conftest import SEED
from test_samplers import exact_eps

from gdm_engine import data
from gdm_engine.digit_features import DigitClassifier, accuracy
from gdm_engine.inpainting import (
    bottom_half_mask,
    complete,
    completion_accuracy,
    langevin_completion,
    repaint,
    right_half_mask,
)
from gdm_engine.models import DDPM, NSF, VAE, PixelCNN, WaveNet

DRAWS = 4000  # completions per prefix
# total variation between the frequencies of DRAWS completions over 2 to 9 outcomes and their
# distribution is about 0.02 or less; each case's weights are fixed so that the suffix's
# marginal (what a sampler that ignored the given pixels would draw) is > 3 TV_LIMIT away
TV_LIMIT = 0.04
# (model, the seed of its random weights), on examples of 3 and 4 positions
AUTOREGRESSIVE_CASES = [
    (lambda: WaveNet((3,), 3, channels=4, layers=2), 1),
    # one row of two pixels of two colours: draw order (pixel, colour), flat 0, 2, 1, 3
    (lambda: PixelCNN((2, 1, 2), 2, channels=4, layers=1, kernel_size=3), 2),
]


def _random_weights(model, seed):
    """Weights drawn from N(0, 1): conditionals far from uniform, which depend on the positions
    before them."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn_like(parameter))
    return model.double().eval()


def _from_draw_order(model, ordered):
    """Examples (N, *shape) from their levels listed in draw order (N, positions)."""
    x = torch.empty_like(ordered)
    x[:, model.draw_order()] = ordered
    return x.view(-1, *model.shape)


def _total_variation(p, q):
    return 0.5 * (p - q).abs().sum().item()


@pytest.mark.parametrize("make, seed", AUTOREGRESSIVE_CASES)
def test_autoregressive_completions_are_draws_of_the_exact_conditional(make, seed, generator):
    model = _random_weights(make(), seed)
    levels, positions = model.levels, len(model.draw_order())
    # every example, in draw order, lexicographic: prefix values are the major index
    ordered = torch.tensor(list(itertools.product(range(levels), repeat=positions)))
    joint = model.log_prob(_from_draw_order(model, ordered)).exp().detach()
    conditions, masks, expected = [], [], []
    for given in (1, 2):  # two prefix lengths, completed in one batch
        by_prefix = joint.view(levels**given, -1)  # rows: prefix values, columns: suffixes
        conditionals = by_prefix / by_prefix.sum(1, keepdim=True)
        marginal = by_prefix.sum(0)
        distances = 0.5 * (conditionals - marginal).abs().sum(1)
        prefix = int(distances.argmax())
        assert distances[prefix] > 3 * TV_LIMIT  # the test can tell a wrong sampler
        example = ordered[prefix * by_prefix.shape[1]]  # the prefix, then the first suffix
        conditions.append(_from_draw_order(model, example[None]).expand(DRAWS, *model.shape))
        missing = torch.arange(positions) >= given
        masks.append(_from_draw_order(model, missing[None]).expand(DRAWS, *model.shape))
        expected.append(conditionals[prefix])
    completed = complete(model, torch.cat(conditions), torch.cat(masks), generator)
    suffixes = completed.flatten(1)[:, model.draw_order()]
    for i, (given, distribution) in enumerate(zip((1, 2), expected)):
        rows = suffixes[i * DRAWS : (i + 1) * DRAWS, given:]
        index = (rows * levels ** torch.arange(positions - given - 1, -1, -1)).sum(1)
        frequencies = torch.bincount(index, minlength=len(distribution)) / DRAWS
        assert _total_variation(frequencies.double(), distribution) < TV_LIMIT, given


def _tiny_ddpm():
    torch.manual_seed(SEED)
    return DDPM(shape=(1, 4, 4), levels=17, width=8, blocks=1, timesteps=12)


def _tiny_flow():
    torch.manual_seed(SEED)
    return NSF((4,), levels=5, transforms=2, hidden=8)


def _given_and_filled(model, method, mask, generator, **options):
    """Random conditions, their completions by `method` (before `complete` copies the given
    pixels back) and by `complete`."""
    condition = torch.randint(model.levels, (5, *model.shape), generator=generator)
    mask = mask.expand_as(condition)
    raw = method(model, condition, mask, generator, **options)
    return condition, mask, raw, complete(model, condition, mask, generator, **options)


@pytest.mark.parametrize(
    "make, method, mask, options",
    [
        (_tiny_ddpm, repaint, right_half_mask((1, 4, 4)), {"resamplings": 2}),
        (_tiny_ddpm, repaint, torch.arange(16).view(1, 4, 4) % 3 == 0, {"steps": 5}),
        (_tiny_flow, langevin_completion, torch.tensor([False, True, False, True]), {"steps": 5}),
    ],
)
def test_repaint_and_langevin_keep_the_given_pixels_and_fill_the_others(
    make, method, mask, options, generator
):
    model = make()
    condition, mask, raw, completed = _given_and_filled(model, method, mask, generator, **options)
    for filled in (raw, completed):  # the method itself keeps them, not only the copy back
        assert filled.dtype == torch.long and filled.shape == condition.shape
        assert torch.equal(filled[~mask], condition[~mask])
        assert 0 <= filled.min() and filled.max() < model.levels
    assert not torch.equal(completed[mask], condition[mask])  # filled, not copied


def test_repaint_of_a_gaussian_draws_its_conditional(generator, monkeypatch):
    # A DDPM whose network is the exact ε-prediction for a correlated 2-D Gaussian: RePaint given
    # x1 = 2.5 should draw x2 ~ N(-0.3 + 0.8 (2.5 - 0.5), 1 - 0.8²) = N(1.3, 0.6²), not the
    # marginal N(-0.3, 1). RePaint approximates that conditional, the better the finer its steps
    # and the more its resamplings: at 250 x 10 mean 1.21-1.25 and std 0.57-0.58 over seeds;
    # without resampling it stays near 0.7 (the harmonisation is what carries the condition)
    mean, covariance = torch.tensor([0.5, -0.3]), torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    model = DDPM(shape=(2,), width=8, blocks=1)
    denoiser = exact_eps(model.alpha_bars, mean, covariance)
    monkeypatch.setattr(model, "denoiser", lambda labels=None, guidance_scale=None: denoiser)
    condition = torch.tensor([2.5, 0.0]).expand(DRAWS, 2)
    mask = torch.tensor([False, True]).expand(DRAWS, 2)
    harmonised = repaint(model, condition, mask, generator, steps=250, resamplings=10)[:, 1]
    assert abs(harmonised.mean() - 1.3) < 0.12 and abs(harmonised.std() - 0.6) < 0.06
    once = repaint(model, condition, mask, generator, steps=250, resamplings=1)[:, 1]
    assert once.mean() < 1.0


def test_autoregressive_completion_keeps_the_given_pixels(generator):
    torch.manual_seed(SEED)
    model = PixelCNN((1, 4, 4), 17, channels=4, layers=1, kernel_size=3)
    condition = torch.randint(17, (6, 1, 4, 4), generator=generator)
    # each row its own suffix of the raster: 0, 3, 8 (the top half), 9, 15 and 16 pixels given
    raster = torch.arange(16).view(1, 4, 4)
    mask = raster >= torch.tensor([0, 3, 8, 9, 15, 16]).view(6, 1, 1, 1)
    completed = complete(model, condition, mask, generator)
    assert torch.equal(completed[~mask], condition[~mask])
    assert not torch.equal(completed[0], condition[0])  # the row without given pixels is drawn


def test_autoregressive_completion_refuses_a_mask_that_is_not_a_suffix_of_the_draw_order():
    model = PixelCNN((2, 1, 2), 2, channels=4, layers=1, kernel_size=3)
    condition = torch.zeros(1, 2, 1, 2, dtype=torch.long)
    colour_1 = torch.tensor([False, True]).view(2, 1, 1).expand(2, 1, 2)  # draw order 2nd and 4th
    with pytest.raises(ValueError, match="suffix of pixelcnn's draw order.*DDPM"):
        complete(model, condition, colour_1)
    with pytest.raises(ValueError, match="suffix"):
        complete(
            WaveNet((8,), 4, channels=4, layers=1),
            torch.zeros(1, 8, dtype=torch.long),
            torch.arange(8) < 4,
        )  # the top half missing: a prefix


def test_half_masks():
    bottom, right = bottom_half_mask((1, 5, 4)), right_half_mask((2, 3, 4))
    assert bottom.shape == (1, 5, 4) and right.shape == (2, 3, 4)
    assert torch.equal(bottom[0, :, 0], torch.tensor([False, False, False, True, True]))
    assert torch.equal(right[1, 2], torch.tensor([False, False, True, True]))
    assert bottom.all(2).equal(bottom.any(2)) and right.all(1).equal(right.any(1))
    with pytest.raises(ValueError, match="shape"):
        bottom_half_mask((64,))


def test_completion_accuracy_scores_completions_halves_and_originals(generator):
    digits = data.load("digits")
    torch.manual_seed(SEED)
    model = WaveNet(digits.shape, digits.levels, channels=4, layers=2)
    classifier = DigitClassifier().eval()
    mask = bottom_half_mask(digits.shape)
    scores = completion_accuracy(model, digits, classifier, mask, generator, n=7)
    images, labels = digits.test[:7], digits.labels["test"][:7]
    assert set(scores) == {"completed", "given_half_only", "original"}
    assert all(0 <= value <= 1 for value in scores.values())
    assert scores["original"] == accuracy(classifier, images, labels)
    assert scores["given_half_only"] == accuracy(classifier, torch.where(mask, 0, images), labels)


@pytest.mark.parametrize(
    "mask, error, message",
    [
        (torch.ones(1, 3, 3).bool(), ValueError, "mask of shape"),
        (torch.ones(1, 4, 4), TypeError, "mask must be a bool tensor"),
        ([[True]], TypeError, "mask must be a bool tensor"),
    ],
)
def test_bad_masks_are_refused_naming_mask(mask, error, message):
    model = PixelCNN((1, 4, 4), 17, channels=4, layers=1, kernel_size=3)
    with pytest.raises(error, match=message):
        complete(model, torch.zeros(2, 1, 4, 4, dtype=torch.long), mask)


def test_bad_conditions_and_models_are_refused():
    model = PixelCNN((1, 4, 4), 17, channels=4, layers=1, kernel_size=3)
    mask = bottom_half_mask((1, 4, 4))
    with pytest.raises(ValueError, match="condition must have shape"):
        complete(model, torch.zeros(2, 1, 4, 5, dtype=torch.long), mask)
    with pytest.raises(TypeError, match="condition must hold integer levels"):
        complete(model, torch.zeros(2, 1, 4, 4), mask)
    with pytest.raises(ValueError, match="condition must lie in 0 .. 16"):
        complete(model, torch.full((2, 1, 4, 4), 17), mask)
    with pytest.raises(ValueError, match="does not support VAE.*DDPM"):
        complete(VAE((1, 4, 4), 17), torch.zeros(2, 1, 4, 4, dtype=torch.long), mask)
