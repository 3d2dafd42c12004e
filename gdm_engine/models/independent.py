"""The independent-pixel baseline: one categorical distribution per pixel."""

import math

import torch

from .base import GenerativeModel


class IndependentPixels(GenerativeModel):
    """p(x) = prod_d Categorical(x_d; softmax(logits_d)): every pixel on its own, no correlation
    between pixels. `fit` sets it to the maximum-likelihood estimate with add-`smoothing` counts,
    the baseline every image model must beat. log_prob is exact."""

    name = "pixels"

    def __init__(self, shape, levels):
        if levels is None:
            raise ValueError("IndependentPixels needs discrete data (levels), got continuous data")
        super().__init__(shape=list(shape), levels=levels)
        self.shape, self.levels = tuple(shape), levels
        self.logits = torch.nn.Parameter(torch.zeros(math.prod(shape), levels))

    @torch.no_grad()
    def fit(self, images, smoothing=1.0):
        """Maximum likelihood with `smoothing` added to every count (Laplace's rule for 1)."""
        self.check_data(images)
        flat = images.reshape(len(images), -1).to(self.logits.device)
        counts = torch.zeros_like(self.logits).scatter_add_(
            1, flat.T, torch.ones(flat.T.shape, device=flat.device)
        )
        self.logits.copy_(torch.log(counts + smoothing))
        return self

    def log_prob(self, x):
        self.check_data(x)
        log_p = torch.log_softmax(self.logits, -1)
        flat = x.reshape(len(x), -1)
        return log_p.gather(1, flat.T).T.sum(1)

    def loss(self, x, generator=None):
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n, generator=None):
        probs = torch.softmax(self.logits, -1).cpu()
        levels = torch.multinomial(probs, n, replacement=True, generator=generator)
        return levels.T.reshape(n, *self.shape).to(self.logits.device)
