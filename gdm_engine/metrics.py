"""Likelihood in bits per dimension or nats, and sample-quality distances for 2-D toys."""

import math

import torch


@torch.no_grad()
def _mean_log_prob(model, x, batch_size):
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(x), batch_size):
        batch = x[start:start + batch_size].to(model.device)
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
        raise TypeError("bits_per_dim needs discrete data (integer levels); for continuous data "
                        "use nll_nats")
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

    return (off_diagonal_mean(kernel(x, x)) + off_diagonal_mean(kernel(y, y))
            - 2 * kernel(x, y).mean()).item()


def independent_pixel_bits_per_dim(data, split="test"):
    """The baseline every image model must beat: bits/dim on `split` of a per-pixel categorical
    fitted to the training split (gdm_engine.models.IndependentPixels)."""
    from gdm_engine.models import IndependentPixels

    baseline = IndependentPixels.for_data(data).fit(data.train)
    return bits_per_dim(baseline, getattr(data, split))
