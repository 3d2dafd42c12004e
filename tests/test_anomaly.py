"""Anomaly scores and their AUROC (gdm_engine.anomaly): known answers on hand-made numbers, the
corruptions as specified, and the independent-pixel model on the digits end to end."""

import math

import pytest
import torch

from gdm_engine import anomaly, data, metrics, models
from gdm_engine.models.base import continuous_space


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


@pytest.fixture(scope="module")
def pixels(digits):
    return models.IndependentPixels.for_data(digits).fit(digits.train)


# ---- AUROC, likelihood ratio, typicality ------------------------------------------------------


def test_auroc_known_answers():
    assert anomaly.auroc(torch.tensor([0.0, 1.0]), torch.tensor([2.0, 3.0])) == 1.0
    assert anomaly.auroc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 0.0
    # pairs (anomalous > normal): 1 > 0, 3 > 0, 3 > 2 of the four: 3/4
    assert anomaly.auroc([0.0, 2.0], [1.0, 3.0]) == 0.75


def test_auroc_of_identical_scores_is_one_half_exactly(generator):
    same = torch.randn(7, generator=generator)
    assert anomaly.auroc(same, same) == 0.5
    assert anomaly.auroc(torch.ones(3), torch.ones(5)) == 0.5


def test_likelihood_ratio_and_typicality_on_hand_computed_numbers():
    ratio = anomaly.likelihood_ratio(torch.tensor([3.0, 2.5]), torch.tensor([1.0, 4.0]))
    assert ratio.tolist() == [2.0, -1.5] and ratio.dtype == torch.float64
    # reference mean 2: |1 - 2|, |2 - 2|, |5 - 2|
    typical = anomaly.typicality(torch.tensor([1.0, 2.0, 5.0]), torch.tensor([1.0, 3.0]))
    assert typical.tolist() == [1.0, 0.0, 3.0]


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: anomaly.auroc(torch.zeros(2, 2), torch.zeros(2)), "normal"),
        (lambda: anomaly.auroc(torch.zeros(2), torch.zeros(0)), "anomalous"),
        (lambda: anomaly.auroc(torch.zeros(2), torch.tensor([math.nan])), "NaN"),
        (lambda: anomaly.likelihood_ratio(torch.zeros(2), torch.zeros(3)), "background_scores"),
        (lambda: anomaly.typicality(torch.zeros(2), torch.zeros(())), "reference_scores"),
        (lambda: anomaly.corruptions(torch.zeros(2, 4, dtype=torch.long), 1), "levels"),
        (lambda: anomaly.corruptions(torch.full((2, 4), 3), 3), "x"),
        (lambda: anomaly.foreign(2, (), 17), "shape"),
        (lambda: anomaly.foreign(-1, (8, 8), 17), "n"),
    ],
)
def test_bad_arguments_raise_value_errors_naming_them(call, name):
    with pytest.raises(ValueError, match=name):
        call()


def test_float_images_raise_a_type_error_naming_x():
    with pytest.raises(TypeError, match="x must hold integer levels"):
        anomaly.corruptions(torch.zeros(2, 4), 17)


# ---- scores -----------------------------------------------------------------------------------


def test_independent_pixels_score_is_their_closed_form_bits_per_dim(digits, pixels):
    x = digits.test
    flat, train = x.flatten(1), digits.train.flatten(1)
    # add-one counts: p(x_d = k) = (count of k at pixel d + 1) / (N + levels)
    counts = torch.stack([(train == k).sum(0) for k in range(digits.levels)])  # (levels, D)
    p = (counts.gather(0, flat).double() + 1) / (len(train) + digits.levels)
    expected = -p.log2().sum(1) / flat.shape[1]
    scores = anomaly.scores(pixels, x, batch_size=50)
    assert scores.dtype == torch.float64 and scores.shape == (len(x),)
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=0)
    assert scores.mean().item() == pytest.approx(metrics.bits_per_dim(pixels, x), rel=1e-5)
    assert anomaly.score_kind(pixels) == "bits/dim (exact)"


def test_a_bound_names_itself():
    vae = models.VAE(shape=[4], levels=5, latent=2, hidden=4, iwae_samples=3)
    assert anomaly.score_kind(vae) == "bits/dim (bound (IWAE, K=3))"


def test_ebm_scores_are_energies_in_its_dequantised_space(digits):
    ebm = models.EBM.for_data(digits, hidden=[8], buffer_size=4).train()
    x = digits.test[:10]
    scores = anomaly.scores(ebm, x, torch.Generator().manual_seed(3), batch_size=4)
    space = continuous_space(x, digits.levels, torch.Generator().manual_seed(3))
    torch.testing.assert_close(scores, ebm.energy(space.flatten(1)).double().detach())
    assert anomaly.score_kind(ebm) == "energy"
    assert ebm.training  # its mode is restored


def test_gan_scores_are_negative_discriminator_logits(digits):
    gan = models.GAN.for_data(digits, width=4, latent=4)
    x = digits.test[:10]
    scores = anomaly.scores(gan, x, torch.Generator().manual_seed(3))
    real = continuous_space(x, digits.levels, torch.Generator().manual_seed(3))
    torch.testing.assert_close(scores, -gan.discriminator(real).squeeze(1).double().detach())
    assert anomaly.score_kind(gan) == "discriminator"


def test_scores_refuse_a_bad_batch_size(pixels, digits):
    with pytest.raises(ValueError, match="batch_size"):
        anomaly.scores(pixels, digits.test, batch_size=0)


# ---- corruptions and foreign images -----------------------------------------------------------


def test_corruptions_keep_shape_dtype_and_range_and_do_as_specified(digits, generator):
    x, levels = digits.test, digits.levels
    corrupted = anomaly.corruptions(x, levels, generator)
    assert set(corrupted) == {"noise", "inverted", "shuffled", "blank"}
    for images in corrupted.values():
        assert images.shape == x.shape and images.dtype == x.dtype
        assert images.min() >= 0 and images.max() < levels
    assert (corrupted["blank"] == 0).all()
    assert torch.equal(levels - 1 - corrupted["inverted"], x)  # an involution
    assert (corrupted["inverted"] != x).any()
    rows, shuffled = x.flatten(1), corrupted["shuffled"].flatten(1)
    assert torch.equal(shuffled.sort(1).values, rows.sort(1).values)  # a permutation per row
    assert (shuffled != rows).any(1).float().mean() > 0.9
    # a pixel changes when it is replaced (0.3) by another level (16 of 17)
    changed = (corrupted["noise"] != x).double().mean().item()
    assert changed == pytest.approx(0.3 * (levels - 1) / levels, abs=0.02)


def test_corruptions_are_reproducible_from_the_generator(digits):
    first, second = (
        anomaly.corruptions(digits.test[:20], digits.levels, torch.Generator().manual_seed(5))
        for _ in range(2)
    )
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_foreign_images_are_requantised_windows_of_the_sines_stream(generator):
    stream = data.sines().test.flatten()
    # a window as long as the stream can only start at 0: the stream itself
    whole = anomaly.foreign(1, (len(stream),), 256, generator)
    assert torch.equal(whole[0], stream)
    two_levels = anomaly.foreign(1, (len(stream),), 2, generator)
    assert torch.equal(two_levels[0], (stream >= 128).long())
    images = anomaly.foreign(5, (1, 8, 8), 17, generator)
    assert images.shape == (5, 1, 8, 8) and images.dtype == torch.long
    assert images.min() >= 0 and images.max() < 17


# ---- the table, end to end ----------------------------------------------------------------------


def test_independent_pixels_on_digits_fails_on_blank_images_where_typicality_does_not(
    digits, pixels, generator
):
    rows = {row["anomaly"]: row for row in anomaly.anomaly_table(pixels, digits, generator)}
    assert list(rows) == ["noise", "inverted", "shuffled", "blank", "foreign (sines)"]
    # Nalisnick et al.'s failure: a blank image is likelier than every test digit
    assert rows["blank"]["auroc"] == 0.0
    assert rows["blank"][anomaly.TYPICALITY] == 1.0
    assert rows["inverted"]["auroc"] == 1.0
    for name in ("noise", "shuffled", "foreign (sines)"):
        assert rows[name]["auroc"] > 0.95
    # the model against itself as the background: every ratio 0, every AUROC a tie
    assert all(row[anomaly.LIKELIHOOD_RATIO] == 0.5 for row in rows.values())


def test_a_model_without_likelihood_gets_only_its_raw_score(digits, generator):
    gan = models.GAN.for_data(digits, width=4, latent=4)
    rows = anomaly.anomaly_table(gan, digits, generator)
    assert len(rows) == 5
    for row in rows:
        assert row["score"] == "discriminator" and 0 <= row["auroc"] <= 1
        assert row[anomaly.LIKELIHOOD_RATIO] is None and row[anomaly.TYPICALITY] is None


def test_the_table_refuses_continuous_data(pixels):
    with pytest.raises(ValueError, match="data must be discrete"):
        anomaly.anomaly_table(pixels, data.load("8gaussians"))
