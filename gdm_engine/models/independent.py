"""The independent-pixel baseline: one categorical distribution per pixel."""

import math
from collections.abc import Sequence
from typing import Optional

import torch

from .base import GenerativeModel


class IndependentPixels(GenerativeModel):
    """p(x) = prod_d Categorical(x_d; softmax(logits_d)): every pixel on its own, no correlation
    between pixels. `fit` sets it to the maximum-likelihood estimate with add-`smoothing` counts,
    the baseline every image model must beat. log_prob is exact.

    Args:
        shape: the shape of one example.
        levels: the number of levels of the discrete data (>= 2).

    Raises:
        TypeError: levels is not an int.
        ValueError: levels is None (continuous data) or below 2.
    """

    name = "pixels"

    def __init__(self, shape: Sequence[int], levels: int):
        if levels is None:
            raise ValueError("IndependentPixels needs discrete data (levels), got continuous data")
        super().__init__()
        self.shape, self.levels = tuple(shape), levels
        self.logits = torch.nn.Parameter(torch.zeros(math.prod(shape), levels))

    @torch.no_grad()
    def fit(self, images: torch.Tensor, smoothing: float = 1.0) -> "IndependentPixels":
        """Maximum likelihood with `smoothing` added to every count (Laplace's rule for 1).

        Args:
            images: training examples, integer levels (N, *shape).
            smoothing: the count added to every level of every pixel.

        Returns:
            The model itself, fitted.

        Raises:
            TypeError: images are not a tensor of integer levels.
            ValueError: images are not shaped (N, *shape), or hold a level outside
                0 .. levels − 1.
        """
        self.check_data(images)
        flat = images.reshape(len(images), -1).to(self.logits.device)
        counts = torch.zeros_like(self.logits).scatter_add_(
            1, flat.T, torch.ones(flat.T.shape, device=flat.device)
        )
        self.logits.copy_(torch.log(counts + smoothing))
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x), nats per example.

        Args:
            x: integer levels (N, *shape).

        Returns:
            (N,) log-probabilities.

        Raises:
            TypeError: x is not a tensor of integer levels.
            ValueError: x is not shaped (N, *shape), or holds a level outside 0 .. levels − 1.
        """
        self.check_data(x)
        log_p = torch.log_softmax(self.logits, -1)
        flat = x.reshape(len(x), -1)
        return log_p.gather(1, flat.T).T.sum(1)

    def loss(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Negative log-likelihood, nats per example, averaged over the batch.

        Args:
            x: integer levels (N, *shape).
            generator: unused (the loss draws nothing).

        Returns:
            The loss, a scalar.
        """
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n examples, every pixel drawn on its own from its categorical.

        Args:
            n: how many examples.
            generator: a CPU generator for the draws (None: torch's global one).

        Returns:
            Integer levels (n, *shape) on the model's device.
        """
        probs = torch.softmax(self.logits, -1).cpu()
        levels = torch.multinomial(probs, n, replacement=True, generator=generator)
        return levels.T.reshape(n, *self.shape).to(self.logits.device)
