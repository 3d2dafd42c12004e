"""Likelihood in bits per dimension or nats, and sample quality: distances for 2-D toys, mode
coverage of mixtures, and for digits the Fréchet distance, precision and recall on the features of
a digit classifier (gdm_engine.digit_features)."""

import math

import torch

from gdm_engine import data as datasets
from gdm_engine import digit_features


@torch.no_grad()
def _mean_log_prob(model, x, batch_size):
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size].to(model.device)
        total += model.log_prob(batch).double().sum().item()
    model.train(was_training)
    return total / len(x)


def nll_nats(model, x, batch_size=256):
    """Mean negative log-likelihood of the examples x, in nats per example (the negative of the
    model's log_prob: exact, or an upper bound where log_prob is a lower bound)."""
    if len(x) == 0:
        raise ValueError("x must hold at least one example")
    return -_mean_log_prob(model, x, batch_size)


def bits_per_dim(model, x, batch_size=256):
    """-log2 P(x) / D for discrete data x (integer levels, (N, ...)), averaged over examples.

    The model's log_prob of discrete data is a log-probability mass (or a lower bound on one, which
    makes this an upper bound); continuous densities reach it by the engine's uniform
    dequantisation (gdm_engine.data.dequantized_log_prob), so every family is scored alike.
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


def sliced_wasserstein(x, y, projections=512, max_points=5000, generator=None):
    """Sliced 2-Wasserstein distance between the point clouds x and y (N, d) (Rabin et al., 2011):
    the root mean square over random unit directions of the 1-D 2-Wasserstein distance of the
    projections, which for equal-sized samples is the distance between the sorted projections."""
    x, y = _paired(x.cpu(), y.cpu(), max_points, generator)
    directions = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    directions /= directions.norm(dim=0)
    px, py = (torch.sort(t @ directions, dim=0).values for t in (x, y))
    return (px - py).square().mean().sqrt().item()


def mmd(x, y, bandwidths=(0.1, 0.2, 0.5, 1.0, 2.0), max_points=2000, generator=None):
    """Maximum mean discrepancy (Gretton et al., 2012), unbiased estimate of MMD², with the kernel
    k(a, b) = sum over `bandwidths` s of exp(-|a - b|² / (2 s²))."""
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


def independent_pixel_bits_per_dim(data, split="test"):
    """The baseline every image model must beat: bits/dim on `split` of a per-pixel categorical
    fitted to the training split (gdm_engine.models.IndependentPixels)."""
    from gdm_engine.models import IndependentPixels

    baseline = IndependentPixels.for_data(data).fit(data.train)
    return bits_per_dim(baseline, getattr(data, split))


# --------------------------------------------------------------------------------------------------
# Sample quality on features: Fréchet distance, precision and recall
# --------------------------------------------------------------------------------------------------


def _feature_rows(name, x, min_rows):
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


def frechet_distance(x, y):
    """Fréchet (2-Wasserstein squared) distance between Gaussians fitted to the feature rows x
    (N, d) and y (M, d), the formula of FID (Heusel et al., 2017, "GANs Trained by a Two
    Time-Scale Update Rule Converge to a Local Nash Equilibrium"):

        |mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^(1/2)).

    S_x S_y is not symmetric, but it is similar to A = S_x^(1/2) S_y S_x^(1/2), which is symmetric
    positive semi-definite, so Tr((S_x S_y)^(1/2)) is the sum of the square roots of A's
    eigenvalues: eigh in float64 instead of a general matrix square root (scipy's sqrtm), which
    can return complex parts from rounding."""
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


def precision_recall(real, fake, k=3):
    """Improved precision and recall (Kynkäänniemi et al., 2019, "Improved Precision and Recall
    Metric for Assessing Generative Models"), on feature rows real (N, d) and fake (M, d).

    Each real point's ball reaches its k-th nearest real neighbour; precision is the share of fake
    points inside at least one real ball (fidelity). Recall is the same with the roles swapped:
    the share of real points inside the fake balls (diversity). Returns (precision, recall)."""
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


def mode_coverage(samples, centres, std, sigmas=3.0, min_share=0.05):
    """How a sample of a Gaussian mixture (isotropic components of standard deviation `std`)
    covers its modes, the measure of mode collapse of Srivastava et al. (2017, VEEGAN) on the
    2-D mixtures: each sample is assigned to its nearest centre, and counts for it when it lies
    within `sigmas` * std. Returns

        {"within_<sigmas>_sigma": share of samples near their centre (high quality),
         "modes_covered": centres holding at least `min_share` of all samples, near ones only,
         "mode_shares": each centre's share of all samples, near ones only}.

    For an isotropic 2-D Gaussian the share within 3 sigma is 1 - exp(-9/2) = 0.989."""
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


def eight_gaussians_coverage(samples):
    """mode_coverage of a sample (N, 2) against the 8gaussians toy's centres and std."""
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


def digit_quality(samples, reference, network=None):
    """The Fréchet digit distance (frechet_distance) and the precision and recall
    (precision_recall, reference as the real set) of the images `samples` against `reference`,
    both (N, 1, 8, 8) integer levels, on the 64 features of the digit classifier `network`
    (default: digit_features.feature_network())."""
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


def digit_quality_floor(data, split="test", n=None, seed=0, network=None):
    """digit_quality of n real training digits (a random subset drawn with `seed`; default all)
    against `split`: what a perfect model of the data would score, the floor to print beside a
    model's figures."""
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
    return digit_quality(data.train[order[:n]], getattr(data, split), network)
