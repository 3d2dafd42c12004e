"""What the autoregressive models (PixelCNN, WaveNet) share: an exact log_prob from the logits of
every position's conditional, and sampling one position at a time, either from caches that the
model updates only where the new position reaches (``cached=True``) or by recomputing the whole
network at every step (``cached=False``)."""

import math
from collections.abc import Callable, Sequence
from typing import Any, Optional

import torch

from gdm_engine._modules import evaluating
from gdm_engine._validation import check_int

from .base import GenerativeModel

# a sampler's draw: one position's logits (n, levels) -> the levels drawn there (n,)
Draw = Callable[[torch.Tensor], torch.Tensor]


class AutoregressiveModel(GenerativeModel):
    """p(x) = prod_t p(x_t | x_<t), each factor a categorical over `levels`, in the model's order.

    A subclass defines ``logits(x)`` -> (N, levels, *shape), the logits of every position's
    conditional given the positions before it (one pass, teacher forcing), and
    ``_generate(x, draw)``: the cached sampler, which walks the positions in order, computes each
    position's logits (n, levels) from its caches, and sets x there to ``draw(logits)``; with
    `draw` None it keeps x and returns every position's logits (the teacher-forced run of the
    cached path that tests compare with ``logits``). The naive sampler, ``_sample_naive``,
    recomputes the network at each step.

    Args:
        shape: the shape of one example.
        levels: the number of levels of the discrete data (>= 2).
        **resolved: values the subclass resolved for its None defaults, recorded in ``config``
            (see GenerativeModel).

    Raises:
        TypeError: levels is not an int.
        ValueError: levels is None (continuous data) or below 2.
    """

    likelihood = "exact"
    sample_options = frozenset({"cached"})
    levels: int  # discrete data only

    def __init__(self, shape: Sequence[int], levels: int, **resolved: Any):
        if levels is None:
            raise ValueError(
                f"{type(self).__name__} models discrete data (levels); got continuous data"
            )
        super().__init__(**resolved)
        self.shape, self.levels = tuple(shape), levels

    def scaled(self, x: torch.Tensor) -> torch.Tensor:
        """Levels 0 .. levels-1 (integers, or floats so that tests can take gradients) as network
        inputs in [-1, 1], in the dtype of the model's parameters.

        Args:
            x: levels, any shape.

        Returns:
            x scaled to [-1, 1].
        """
        dtype = next(self.parameters()).dtype
        return x.to(dtype) / (self.levels - 1) * 2 - 1

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of every position's conditional given the positions before it (one
        teacher-forced pass).

        Args:
            x: levels (N, *shape), integer or float.

        Returns:
            Logits (N, levels, *shape).

        Raises:
            NotImplementedError: always, here; the subclasses implement it.
        """
        raise NotImplementedError

    def draw_order(self) -> torch.Tensor:
        """The positions in the order the samplers draw them (and call ``draw``): flat indices
        into one example, C-order over ``shape``. Raster order here; a model with another order
        overrides it. Coders and inpainting read positions in this order.

        Returns:
            (prod(shape),) int64 indices.
        """
        return torch.arange(math.prod(self.shape))

    def _generate(self, x: torch.Tensor, draw: Optional[Draw]) -> Optional[torch.Tensor]:
        """The cached sampler (see the class docstring); the subclasses implement it."""
        raise NotImplementedError

    def _sample_naive(self, x: torch.Tensor, draw: Draw) -> None:
        """The naive sampler (see the class docstring); the subclasses implement it."""
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) in nats per example, for x of integer levels (N, *shape).

        Args:
            x: integer levels (N, *shape).

        Returns:
            (N,) log-probabilities.

        Raises:
            TypeError: x is not a tensor of integer levels.
            ValueError: x is not shaped (N, *shape), or a level lies outside 0 .. levels − 1.
        """
        self.check_data(x)
        logits = self.logits(x)  # at least float32 (bf16 under autocast), float64 kept
        log_p = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), 1)
        return log_p.gather(1, x.unsqueeze(1).long()).flatten(1).sum(1)

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
    def cached_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits that the cached sampler computes, position by position, with x fed in as if
        it had been drawn: equal to ``logits(x)`` (what the tests check).

        Args:
            x: levels (N, *shape).

        Returns:
            Logits (N, levels, *shape).

        Raises:
            TypeError: x is not a tensor.
            ValueError: x is not shaped (N, *shape).
        """
        self.check_shape(x)
        with evaluating(self):
            logits = self._generate(x.clone(), draw=None)
        assert logits is not None  # without a draw the cached sampler returns the logits
        return logits

    @torch.no_grad()
    def conditionals(self, x: torch.Tensor, cached: bool = True) -> torch.Tensor:
        """Every position's logits exactly as ``generate`` computes them when its draws are x,
        in evaluation mode: with ``cached``, the cached sampler's teacher-forced run
        (``cached_logits``); else the naive sampler's, run with x's values as its draws (one
        network pass per position). What a coder's encoder needs to compute the decoder's
        conditionals bit for bit.

        Args:
            x: levels (N, *shape).
            cached: as the cached sampler computes them (else as the naive one does).

        Returns:
            Logits (N, levels, *shape).
        """
        if cached:
            return self.cached_logits(x)
        flat, order = x.flatten(1), self.draw_order().to(x.device)
        steps: list[torch.Tensor] = []

        def replay(logits: torch.Tensor) -> torch.Tensor:
            steps.append(logits)
            return flat[:, order[len(steps) - 1]]

        self.generate(torch.zeros_like(x), replay, cached=False)
        logits = torch.empty(len(x), self.levels, len(order), dtype=steps[0].dtype, device=x.device)
        logits[:, :, order] = torch.stack(steps, -1)
        return logits.view(len(x), self.levels, *self.shape)

    @torch.no_grad()
    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, cached: bool = True
    ) -> torch.Tensor:
        """n examples of integer levels (n, *shape). ``cached=True`` walks the positions with the
        model's caches (O(layers) work per position); ``cached=False`` recomputes the network at
        every position. For the same generator both give the same samples (exactly so in
        float64; in lower precision a draw that falls on a rounding boundary may differ).

        Args:
            n: how many examples.
            generator: draws the uniforms that pick each level (None: torch's global generator).
            cached: use the cached sampler (else the naive one).

        Returns:
            Integer levels (n, *shape) on the model's device.

        Raises:
            TypeError: n is not an int.
            ValueError: n is below 0.
        """
        check_int("n", n, 0)
        x = torch.zeros(n, *self.shape, dtype=torch.long, device=self.device)
        self.generate(x, lambda logits: draw_categorical(logits, generator), cached)
        return x

    @torch.no_grad()
    def generate(self, x: torch.Tensor, draw: Draw, cached: bool = True) -> None:
        """Walk the positions of x in draw order (see ``draw_order``), in evaluation mode, and set
        each to ``draw(logits)``, its conditional's logits (n, levels) given the positions
        before it: what ``sample`` runs with a random draw, and what a decoder runs with an
        entropy coder's, or inpainting with the given values' (``draw`` may return what x holds).

        Args:
            x: levels (n, *shape) to fill in place; only the positions before the current one
                are read.
            draw: logits (n, levels) -> the levels (n,) to set at the current position.
            cached: use the cached sampler (else the naive one, which recomputes the network).
        """
        with evaluating(self):
            if cached:
                self._generate(x, draw)
            else:
                self._sample_naive(x, draw)


def draw_categorical(
    logits: torch.Tensor, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """One draw per row of logits (n, levels), by inverting the CDF at a uniform from `generator`:
    one uniform per row and step, so that every sampler consumes the generator alike.

    Args:
        logits: (n, levels).
        generator: draws the uniforms, on its own device (None: torch's global generator).

    Returns:
        (n,) int64 levels on logits' device.
    """
    device = generator.device if generator is not None else logits.device
    u = torch.rand(len(logits), 1, generator=generator, device=device, dtype=torch.float64)
    cdf = torch.softmax(logits.double(), -1).cumsum(-1)
    return (cdf < u.to(logits.device)).sum(-1).clamp(max=logits.shape[-1] - 1)


def as_matrix(
    weight: torch.Tensor, bias: Optional[torch.Tensor]
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """A convolution's weight (C_out, C_in, *taps) as the matrix W of taps @ W, for a window of
    its input flattened channel-major (window.flatten(1)), with its bias: what the cached
    samplers multiply at one position.

    Args:
        weight: the convolution's weight (C_out, C_in, *taps).
        bias: its bias (C_out,), or None.

    Returns:
        (W, bias), W of shape (C_in · taps, C_out).
    """
    return weight.flatten(1).T, bias
