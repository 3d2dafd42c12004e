"""Sample quality: the Fréchet distance against its closed form, precision and recall on clouds
whose answer is known, mode coverage of the 8 gaussians, and the digit feature network with its
cache."""

import hashlib
import math
import os

import pytest
import scipy.linalg
import torch

from gdm_engine import data, digit_features, metrics

TINY = digit_features.DigitFeatureSettings(epochs=1)  # seconds-cheap, for the cache's behaviour


def _gaussian(n, mean, cov, generator):
    return mean + torch.randn(n, len(mean), generator=generator, dtype=torch.float64) @ \
        torch.linalg.cholesky(cov).T


def _closed_form_frechet(mean_x, cov_x, mean_y, cov_y):
    cross = scipy.linalg.sqrtm(cov_x.numpy() @ cov_y.numpy()).real
    return ((mean_x - mean_y).square().sum() + cov_x.trace() + cov_y.trace()
            - 2 * cross.trace()).item()


def test_frechet_distance_matches_the_closed_form_of_two_gaussians(generator):
    mean_x, mean_y = torch.tensor([0.0, 1.0, -1.0]).double(), torch.tensor([0.5, 0.0, 1.0]).double()
    cov_x = torch.tensor([[2.0, 0.8, 0.3], [0.8, 1.0, -0.2], [0.3, -0.2, 0.5]]).double()
    cov_y = torch.tensor([[0.6, -0.3, 0.0], [-0.3, 1.5, 0.7], [0.0, 0.7, 1.2]]).double()
    assert not torch.allclose(cov_x @ cov_y, cov_y @ cov_x)  # the non-commuting case
    x = _gaussian(200_000, mean_x, cov_x, generator)
    y = _gaussian(200_000, mean_y, cov_y, generator)
    # the estimate's sampling error at 200k points is about 0.015 (measured on 20 draws)
    want = _closed_form_frechet(mean_x, cov_x, mean_y, cov_y)
    assert metrics.frechet_distance(x, y) == pytest.approx(want, abs=0.08)
    # and exactly the closed form of the fitted moments
    fitted = _closed_form_frechet(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    assert metrics.frechet_distance(x, y) == pytest.approx(fitted, rel=1e-9)


def test_frechet_distance_of_a_mean_shift_is_its_squared_length(generator):
    # float64 points: in float32, x + shift would itself move the covariance by rounding
    x = torch.randn(500, 4, generator=generator, dtype=torch.float64) @ \
        torch.randn(4, 4, generator=generator, dtype=torch.float64)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    assert metrics.frechet_distance(x, x.clone()) == pytest.approx(0, abs=1e-9)
    assert metrics.frechet_distance(x, x + shift) == pytest.approx(5.25, abs=1e-8)


def test_precision_recall_of_clouds_with_known_overlap(generator):
    real = torch.randn(400, 4, generator=generator)
    far = real + 100.0
    assert metrics.precision_recall(real, real.clone()) == (1.0, 1.0)
    assert metrics.precision_recall(real, far) == (0.0, 0.0)
    # real: clusters A and B; fake: A and a far cloud. Half the fakes are real points (precision
    # 1/2), and they cover cluster A, half the real points (recall 1/2)
    a, b = real[:200], real[200:] + torch.tensor([50.0, 0, 0, 0])
    precision, recall = metrics.precision_recall(torch.cat([a, b]), torch.cat([a, far[200:]]))
    assert (precision, recall) == (0.5, 0.5)


def test_mode_coverage_of_the_eight_gaussians(generator):
    samples = data.TOYS["8gaussians"].sample(20_000, generator)
    coverage = metrics.eight_gaussians_coverage(samples)
    assert coverage["modes_covered"] == 8
    # a 2-D isotropic Gaussian puts 1 - exp(-9/2) = 0.9889 within 3 sigma of its mean
    assert coverage["within_3_sigma"] == pytest.approx(1 - math.exp(-4.5), abs=0.005)
    assert coverage["mode_shares"] == pytest.approx([0.9889 / 8] * 8, abs=0.01)


def test_mode_coverage_counts_only_modes_above_the_minimum_share(generator):
    centres, std = data.eight_gaussian_centres(), data.EIGHT_GAUSSIANS_STD
    # 3 modes fully, and a fourth with 2% of the samples: below min_share = 5%
    picks = torch.tensor([0, 3, 5]).repeat_interleave(1000).tolist() + [6] * 60
    samples = centres[picks] + std * torch.randn(len(picks), 2, generator=generator)
    coverage = metrics.mode_coverage(samples, centres, std)
    assert coverage["modes_covered"] == 3
    assert coverage["mode_shares"][6] == pytest.approx(0.02, abs=0.005)
    assert coverage["mode_shares"][1] == 0


def test_mode_coverage_of_a_uniform_square_is_the_area_of_the_discs(generator):
    samples = 6 * torch.rand(40_000, 2, generator=generator) - 3
    # the 8 disjoint discs of radius 3 std = 0.6 lie inside the square [-3, 3]^2 of area 36
    coverage = metrics.eight_gaussians_coverage(samples)
    assert coverage["within_3_sigma"] == pytest.approx(8 * math.pi * 0.36 / 36, abs=0.01)


def test_the_feature_network_classifies_the_test_digits():
    network = digit_features.feature_network()
    assert network.test_accuracy >= 0.97
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    digits = data.digits()
    assert digit_features.accuracy(network, digits.test, digits.labels["test"]) == \
        network.test_accuracy
    assert network.features(digits.test[:5]).shape == (5, 64)
    assert digit_features.feature_network() is network  # memoised: trained at most once


def test_feature_training_is_deterministic_and_leaves_the_global_rng_alone(tmp_path):
    state = torch.get_rng_state()
    for directory in ("a", "b"):
        digit_features.load_or_train(TINY, tmp_path / directory)
    assert torch.equal(torch.get_rng_state(), state)
    files = [digit_features.cache_path(TINY, tmp_path / d) for d in ("a", "b")]
    hashes = [hashlib.sha256(open(f, "rb").read()).hexdigest() for f in files]
    assert hashes[0] == hashes[1]


def _corrupt(path):
    """Flip a run of bytes in the middle of the file, where the tensors lie."""
    content = bytearray(open(path, "rb").read())
    middle = len(content) // 2
    content[middle:middle + 16] = bytes(b ^ 0xFF for b in content[middle:middle + 16])
    open(path, "wb").write(bytes(content))


def test_a_corrupted_cache_file_is_refused_and_retrained(tmp_path):
    trained = digit_features.load_or_train(TINY, tmp_path)
    path = digit_features.cache_path(TINY, tmp_path)
    _corrupt(path)
    with pytest.raises(digit_features.FeatureCacheError, match="sha256"):
        digit_features.load_cached(path)
    with pytest.warns(UserWarning, match="refusing .*digit-features-.*sha256"):
        retrained = digit_features.load_or_train(TINY, tmp_path)
    for name, tensor in trained.state_dict().items():
        assert torch.equal(retrained.state_dict()[name], tensor)
    digit_features.load_cached(path, TINY)  # the file was overwritten with a good one


def test_truncated_foreign_or_unvouched_cache_files_are_refused(tmp_path):
    digit_features.load_or_train(TINY, tmp_path)
    path = digit_features.cache_path(TINY, tmp_path)
    with pytest.raises(digit_features.FeatureCacheError, match="settings differ"):
        digit_features.load_cached(path, digit_features.DigitFeatureSettings(epochs=2))
    content = open(path, "rb").read()
    open(path, "wb").write(content[:len(content) // 3])
    with pytest.raises(digit_features.FeatureCacheError, match="sha256"):
        digit_features.load_cached(path)
    # a file its sidecar vouches for, that is not a network
    torch.save({"weights": torch.zeros(3)}, path)
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    sidecar = os.path.splitext(path)[0] + ".json"
    open(sidecar, "w").write(f'{{"sha256": "{digest}"}}')
    with pytest.raises(digit_features.FeatureCacheError, match="not a digit feature network"):
        digit_features.load_cached(path)
    os.remove(sidecar)
    with pytest.raises(digit_features.FeatureCacheError, match="sidecar .* is missing"):
        digit_features.load_cached(path)


def test_digit_quality_tells_digits_from_noise(generator):
    digits = data.digits()
    floor = metrics.digit_quality_floor(digits)
    noise = torch.randint(0, 17, digits.test.shape, generator=generator)
    random = metrics.digit_quality(noise, digits.test)
    assert floor["frechet_digit_distance"] < 3
    assert floor["precision"] > 0.7 and floor["recall"] > 0.6
    assert random["frechet_digit_distance"] > 10 * floor["frechet_digit_distance"]
    # against a reference of 297 digits the k-NN balls are wide and catch some noise: precision
    # falls less than recall, which the noise all but loses (noise's precision is ~0.56, 0.65
    # for an unlucky draw: the seed is fresh every run)
    assert random["precision"] < floor["precision"] - 0.1
    assert random["recall"] < 0.25


@pytest.mark.parametrize("call, name", [
    (lambda: metrics.frechet_distance(torch.zeros(5), torch.zeros(5, 2)), "x must be a matrix"),
    (lambda: metrics.frechet_distance(torch.zeros(5, 2), torch.zeros(1, 2)), "y needs at least"),
    (lambda: metrics.frechet_distance(torch.zeros(5, 2), torch.zeros(5, 3)), "x and y must"),
    (lambda: metrics.precision_recall(torch.zeros(5, 2), torch.zeros(5, 2), k=0), "k must"),
    (lambda: metrics.precision_recall(torch.zeros(3, 2), torch.zeros(5, 2)), "real needs"),
    (lambda: metrics.mode_coverage(torch.zeros(5, 3), torch.zeros(8, 2), 0.2), "samples and"),
    (lambda: metrics.mode_coverage(torch.zeros(5, 2), torch.zeros(8, 2), 0.0), "std must"),
    (lambda: metrics.digit_quality(torch.zeros(5, 8, 8), torch.zeros(5, 1, 8, 8)), "samples must"),
])
def test_bad_input_is_refused_by_name(call, name):
    with pytest.raises(ValueError, match=name):
        call()
