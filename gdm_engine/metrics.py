"""Likelihood in bits per dimension or nats, and sample quality: distances for 2-D toys, mode
coverage of mixtures, and for digits the Fréchet distance, precision and recall on the features of
a digit classifier (gdm_engine.digit_features)."""

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

import numpy
import torch

from gdm_engine import data as datasets
from gdm_engine import digit_features
from gdm_engine._modules import evaluating

if TYPE_CHECKING:  # the models import much; metrics imports them only where it uses one
    from gdm_engine.models import GenerativeModel


@torch.no_grad()
def _mean_log_prob(model, x, batch_size):
    total = 0.0
    with evaluating(model):
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size].to(model.device)
            total += model.log_prob(batch).double().sum().item()
    return total / len(x)


def nll_nats(model: "GenerativeModel", x: torch.Tensor, batch_size: int = 256) -> float:
    """Mean negative log-likelihood of the examples x, in nats per example (the negative of the
    model's log_prob: exact, or an upper bound where log_prob is a lower bound).

    Args:
        model: the model scored, in eval mode while it is (its mode is restored).
        x: (N, ...) examples as the model takes them, on any device (moved by batches).
        batch_size: examples per log_prob call.

    Returns:
        The mean NLL in nats.

    Raises:
        ValueError: x empty.
    """
    if len(x) == 0:
        raise ValueError("x must hold at least one example")
    return -_mean_log_prob(model, x, batch_size)


def bits_per_dim(model: "GenerativeModel", x: torch.Tensor, batch_size: int = 256) -> float:
    """-log2 P(x) / D for discrete data x (integer levels, (N, ...)), averaged over examples.

    The model's log_prob of discrete data is a log-probability mass (or a lower bound on one, which
    makes this an upper bound); continuous densities reach it by the engine's uniform
    dequantisation (gdm_engine.data.dequantized_log_prob), so every family is scored alike.

    Args:
        model: the model scored.
        x: (N, ...) integer levels.
        batch_size: examples per log_prob call.

    Returns:
        The mean bits per dimension.

    Raises:
        TypeError: x floating point (continuous data: use nll_nats).
        ValueError: x empty.
    """
    if x.is_floating_point():
        raise TypeError(
            "bits_per_dim needs discrete data (integer levels); for continuous data use nll_nats"
        )
    dims = x[0].numel() if len(x) else 0
    return nll_nats(model, x, batch_size) / (dims * math.log(2))


def _paired(x, y, limit, generator):
    """Equal-sized random subsets of x and y, at most `limit` points each."""
    n = min(len(x), len(y), limit)
    pick = lambda t: t[torch.randperm(len(t), generator=generator)[:n]].double()  # noqa: E731
    return pick(x), pick(y)


def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    projections: int = 512,
    max_points: int = 5000,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Sliced 2-Wasserstein distance between the point clouds x and y (N, d) (Rabin et al., 2011):
    the root mean square over random unit directions of the 1-D 2-Wasserstein distance of the
    projections, which for equal-sized samples is the distance between the sorted projections.

    Args:
        x: (N, d) points.
        y: (M, d) points.
        projections: the number of random directions.
        max_points: the most points of each cloud used (a random subset, equal-sized).
        generator: a CPU generator for the subsets and the directions; None: torch's global one.

    Returns:
        The distance, in the points' units.
    """
    x, y = _paired(x.cpu(), y.cpu(), max_points, generator)
    directions = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0)
    px, py = (torch.sort(t @ directions, dim=0).values for t in (x, y))
    return (px - py).square().mean().sqrt().item()


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    bandwidths: Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0),
    max_points: int = 2000,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Maximum mean discrepancy (Gretton et al., 2012), unbiased estimate of MMD², with the kernel
    k(a, b) = sum over `bandwidths` s of exp(-|a - b|² / (2 s²)).

    Args:
        x: (N, d) points.
        y: (M, d) points.
        bandwidths: the kernel's bandwidths s.
        max_points: the most points of each cloud used (a random subset, equal-sized).
        generator: a CPU generator for the subsets; None: torch's global one.

    Returns:
        The unbiased MMD² estimate (may be slightly negative).
    """
    x, y = _paired(x.cpu(), y.cpu(), max_points, generator)
    n = len(x)

    def kernel(a, b):
        sq = torch.cdist(a, b).square()
        return sum(torch.exp(-sq / (2 * s * s)) for s in bandwidths)

    def off_diagonal_mean(k):
        return (k.sum() - k.diagonal().sum()) / (n * (n - 1))

    return (
        off_diagonal_mean(kernel(x, x)) + off_diagonal_mean(kernel(y, y)) - 2 * kernel(x, y).mean()
    ).item()


def independent_pixel_bits_per_dim(data: datasets.Data, split: str = "test") -> float:
    """The baseline every image model must beat: bits/dim on `split` of a per-pixel categorical
    fitted to the training split (gdm_engine.models.IndependentPixels).

    Args:
        data: a discrete data set.
        split: the split scored: "train", "valid" or "test".

    Returns:
        The baseline's bits per dimension on `split`.
    """
    from gdm_engine.models import IndependentPixels

    baseline = IndependentPixels.for_data(data).fit(data.train)
    return bits_per_dim(baseline, getattr(data, split))


# --------------------------------------------------------------------------------------------------
# Sample quality on features: Fréchet distance, precision and recall
# --------------------------------------------------------------------------------------------------


def _feature_rows(name: str, x: Union[torch.Tensor, numpy.ndarray], min_rows: int) -> torch.Tensor:
    """x as a float64 (N, d) CPU matrix; ValueError naming the argument otherwise."""
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be a matrix (N, d) of feature rows, got shape {tuple(x.shape)}"
        )
    if len(x) < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} rows, got {len(x)}")
    return x.detach().cpu().double()


def _same_width(x, y, names):
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features, got "
            f"{x.shape[1]} and {y.shape[1]}"
        )


def _mean_and_covariance(x):
    """The mean and the unbiased (N - 1) sample covariance of the rows of x."""
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / (len(x) - 1)


def _symmetric_sqrt(matrix):
    """The principal square root of a symmetric positive semi-definite matrix, by eigh; rounding
    may leave tiny negative eigenvalues, which are clamped to 0."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(
    x: Union[torch.Tensor, numpy.ndarray], y: Union[torch.Tensor, numpy.ndarray]
) -> float:
    """Fréchet (2-Wasserstein squared) distance between Gaussians fitted to the feature rows x
    (N, d) and y (M, d), the formula of FID (Heusel et al., 2017, "GANs Trained by a Two
    Time-Scale Update Rule Converge to a Local Nash Equilibrium"):

        |mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)).

    S_x S_y is not symmetric, but it is similar to A = S_x^(1/2) S_y S_x^(1/2), which is symmetric
    positive semi-definite, so Tr((S_x S_y)^(1/2)) is the sum of the square roots of A's
    eigenvalues: eigh in float64 instead of a general matrix square root (scipy's sqrtm), which
    can return complex parts from rounding.

    Args:
        x: (N, d) feature rows, N >= 2 (a tensor or an array).
        y: (M, d) feature rows, M >= 2.

    Returns:
        The distance (squared units of the features).

    Raises:
        ValueError: x or y not a matrix, with fewer than 2 rows, or of different widths.
    """
    x, y = _feature_rows("x", x, 2), _feature_rows("y", y, 2)
    _same_width(x, y, ("x", "y"))
    mean_x, cov_x = _mean_and_covariance(x)
    mean_y, cov_y = _mean_and_covariance(y)
    root_x = _symmetric_sqrt(cov_x)
    product = root_x @ cov_y @ root_x
    trace_sqrt = torch.linalg.eigvalsh((product + product.T) / 2).clamp(min=0).sqrt().sum()
    return (
        (mean_x - mean_y).square().sum() + cov_x.trace() + cov_y.trace() - 2 * trace_sqrt
    ).item()


def _row_chunks(points, reference):
    """Chunks of `points` whose distance matrix to `reference` stays near 16M float64 entries."""
    return points.split(max(1, 2**24 // len(reference)))


def _knn_radii(points, k):
    """Distance from each point to its k-th nearest neighbour among the others."""
    # the point itself is the nearest, at distance 0: the (k+1)-th smallest distance is the k-th
    # neighbour's, duplicates included
    return torch.cat(
        [
            torch.cdist(chunk, points).kthvalue(k + 1, dim=1).values
            for chunk in _row_chunks(points, points)
        ]
    )


def _share_inside_balls(points, centres, radii):
    """Share of `points` within radius of at least one centre (the k-NN manifold estimate)."""
    inside = torch.cat(
        [(torch.cdist(chunk, centres) <= radii).any(1) for chunk in _row_chunks(points, centres)]
    )
    return inside.double().mean().item()


def precision_recall(
    real: Union[torch.Tensor, numpy.ndarray], fake: Union[torch.Tensor, numpy.ndarray], k: int = 3
) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019, "Improved Precision and Recall
    Metric for Assessing Generative Models"), on feature rows real (N, d) and fake (M, d).

    Each real point's ball reaches its k-th nearest real neighbour; precision is the share of fake
    points inside at least one real ball (fidelity). Recall is the same with the roles swapped:
    the share of real points inside the fake balls (diversity).

    Args:
        real: (N, d) feature rows, N > k (a tensor or an array).
        fake: (M, d) feature rows, M > k.
        k: >= 1, the neighbour whose distance is a ball's radius.

    Returns:
        (precision, recall), each in [0, 1].

    Raises:
        ValueError: k < 1, or real or fake not a matrix, with k rows or fewer, or of different
            widths.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    real, fake = _feature_rows("real", real, k + 1), _feature_rows("fake", fake, k + 1)
    _same_width(real, fake, ("real", "fake"))
    precision = _share_inside_balls(fake, real, _knn_radii(real, k))
    recall = _share_inside_balls(real, fake, _knn_radii(fake, k))
    return precision, recall


# --------------------------------------------------------------------------------------------------
# Mode coverage of 2-D mixtures
# --------------------------------------------------------------------------------------------------


def mode_coverage(
    samples: Union[torch.Tensor, numpy.ndarray],
    centres: Union[torch.Tensor, numpy.ndarray],
    std: float,
    sigmas: float = 3.0,
    min_share: float = 0.05,
) -> dict[str, Any]:
    """How a sample of a Gaussian mixture (isotropic components of standard deviation `std`)
    covers its modes, the measure of mode collapse of Srivastava et al. (2017, VEEGAN) on the
    2-D mixtures: each sample is assigned to its nearest centre, and counts for it when it lies
    within `sigmas` * std. Returns

        {"within_<sigmas>_sigma": share of samples near their centre (high quality),
         "modes_covered": centres holding at least `min_share` of all samples, near ones only,
         "mode_shares": each centre's share of all samples, near ones only}.

    For an isotropic 2-D Gaussian the share within 3 sigma is 1 - exp(-9/2) = 0.989.

    Args:
        samples: (N, d) samples (a tensor or an array).
        centres: (K, d) the mixture's centres.
        std: > 0, the components' standard deviation.
        sigmas: the radius, in std, within which a sample counts for its centre.
        min_share: the share of all samples a centre needs to count as covered.

    Returns:
        The dict above: a float, an int and a list of K floats.

    Raises:
        ValueError: samples or centres not a non-empty matrix, of different widths, or
            std <= 0.
    """
    samples = _feature_rows("samples", samples, 1)
    centres = _feature_rows("centres", centres, 1)
    _same_width(samples, centres, ("samples", "centres"))
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    distance, nearest = torch.cdist(samples, centres).min(1)
    near = distance <= sigmas * std
    shares = torch.bincount(nearest[near], minlength=len(centres)).double() / len(samples)
    return {
        f"within_{sigmas:g}_sigma": near.double().mean().item(),
        "modes_covered": int((shares >= min_share).sum()),
        "mode_shares": shares.tolist(),
    }


def eight_gaussians_coverage(samples: Union[torch.Tensor, numpy.ndarray]) -> dict[str, Any]:
    """mode_coverage of a sample (N, 2) against the 8gaussians toy's centres and std.

    Args:
        samples: (N, 2) samples.

    Returns:
        mode_coverage's dict.

    Raises:
        ValueError: samples not a non-empty (N, 2) matrix.
    """
    return mode_coverage(samples, datasets.eight_gaussian_centres(), datasets.EIGHT_GAUSSIANS_STD)


# --------------------------------------------------------------------------------------------------
# Digits
# --------------------------------------------------------------------------------------------------


def _check_digits(name, images):
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise ValueError(
            f"{name} must be digits (N, 1, 8, 8) of levels 0 .. 16, got shape {tuple(images.shape)}"
        )


@torch.no_grad()
def _digit_features(images, network, batch_size=512):
    device = next(network.parameters()).device
    return torch.cat(
        [network.features(batch.to(device)).cpu() for batch in images.split(batch_size)]
    )


def digit_quality(
    samples: torch.Tensor,
    reference: torch.Tensor,
    network: Optional[digit_features.DigitClassifier] = None,
) -> dict[str, float]:
    """The Fréchet digit distance (frechet_distance) and the precision and recall
    (precision_recall, reference as the real set) of the images `samples` against `reference`,
    both (N, 1, 8, 8) integer levels, on the 64 features of the digit classifier `network`
    (default: digit_features.feature_network()).

    Args:
        samples: (N, 1, 8, 8) generated digits, integer levels 0 .. 16.
        reference: (M, 1, 8, 8) real digits, the same.
        network: the feature network; None: digit_features.feature_network() (cached, trained
            once if absent).

    Returns:
        {"frechet_digit_distance", "precision", "recall"}: floats.

    Raises:
        ValueError: samples or reference not of shape (N, 1, 8, 8), or with 3 images or
            fewer (precision_recall's k = 3).
    """
    _check_digits("samples", samples)
    _check_digits("reference", reference)
    network = network or digit_features.feature_network()
    fake, real = _digit_features(samples, network), _digit_features(reference, network)
    precision, recall = precision_recall(real, fake)
    return {
        "frechet_digit_distance": frechet_distance(fake, real),
        "precision": precision,
        "recall": recall,
    }


def digit_quality_floor(
    data: datasets.Data,
    split: str = "test",
    n: Optional[int] = None,
    seed: int = 0,
    network: Optional[digit_features.DigitClassifier] = None,
) -> dict[str, float]:
    """digit_quality of n real training digits (a random subset drawn with `seed`; default all)
    against `split`: what a perfect model of the data would score, the floor to print beside a
    model's figures.

    Args:
        data: the digits data set (gdm_engine.data.digits()).
        split: the split compared against: "train", "valid" or "test".
        n: how many training digits; None: all.
        seed: the seed of the random subset.
        network: the feature network; None: digit_features.feature_network().

    Returns:
        digit_quality's dict.
    """
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    return digit_quality(data.train[order[:n]], getattr(data, split), network)
