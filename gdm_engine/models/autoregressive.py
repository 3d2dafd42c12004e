"""What the autoregressive models (PixelCNN, WaveNet) share: an exact log_prob from the logits of
every position's conditional, and sampling one position at a time, either from caches that the
model updates only where the new position reaches (``cached=True``) or by recomputing the whole
network at every step (``cached=False``)."""

import torch

from gdm_engine._validation import check_int

from .base import GenerativeModel


class AutoregressiveModel(GenerativeModel):
    """p(x) = prod_t p(x_t | x_<t), each factor a categorical over `levels`, in the model's order.

    A subclass defines ``logits(x)`` -> (N, levels, *shape), the logits of every position's
    conditional given the positions before it (one pass, teacher forcing), and
    ``_generate(x, draw)``: the cached sampler, which walks the positions in order, computes each
    position's logits (n, levels) from its caches, and sets x there to ``draw(logits)``; with
    `draw` None it keeps x and returns every position's logits (the teacher-forced run of the
    cached path that tests compare with ``logits``). The naive sampler, ``_sample_naive``,
    recomputes the network at each step.
    """

    likelihood = "exact"

    def __init__(self, shape, levels, **config):
        if levels is None:
            raise ValueError(
                f"{type(self).__name__} models discrete data (levels); got continuous data"
            )
        super().__init__(shape=list(shape), levels=levels, **config)
        self.shape, self.levels = tuple(shape), levels

    def scaled(self, x):
        """Levels 0 .. levels-1 (integers, or floats so that tests can take gradients) as network
        inputs in [-1, 1], in the dtype of the model's parameters."""
        dtype = next(self.parameters()).dtype
        return x.to(dtype) / (self.levels - 1) * 2 - 1

    def logits(self, x):
        raise NotImplementedError

    def log_prob(self, x):
        """Exact log p(x) in nats per example, for x of integer levels (N, *shape)."""
        self.check_data(x)
        logits = self.logits(x)  # at least float32 (bf16 under autocast), float64 kept
        log_p = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), 1)
        return log_p.gather(1, x.unsqueeze(1).long()).flatten(1).sum(1)

    def loss(self, x, generator=None):
        """Negative log-likelihood, nats per example, averaged over the batch."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def cached_logits(self, x):
        """The logits that the cached sampler computes, position by position, with x fed in as if
        it had been drawn: equal to ``logits(x)`` (what the tests check)."""
        self.check_shape(x)
        with _evaluating(self):
            return self._generate(x.clone(), draw=None)

    @torch.no_grad()
    def sample(self, n, generator=None, cached=True):
        """n examples of integer levels (n, *shape). ``cached=True`` walks the positions with the
        model's caches (O(layers) work per position); ``cached=False`` recomputes the network at
        every position. For the same generator both give the same samples (exactly so in
        float64; in lower precision a draw that falls on a rounding boundary may differ)."""
        check_int("n", n, 0)
        x = torch.zeros(n, *self.shape, dtype=torch.long, device=self.device)

        def draw(logits):
            return draw_categorical(logits, generator)

        with _evaluating(self):
            if cached:
                self._generate(x, draw)
            else:
                self._sample_naive(x, draw)
        return x


def draw_categorical(logits, generator=None):
    """One draw per row of logits (n, levels), by inverting the CDF at a uniform from `generator`:
    one uniform per row and step, so that every sampler consumes the generator alike."""
    device = generator.device if generator is not None else logits.device
    u = torch.rand(len(logits), 1, generator=generator, device=device, dtype=torch.float64)
    cdf = torch.softmax(logits.double(), -1).cumsum(-1)
    return (cdf < u.to(logits.device)).sum(-1).clamp(max=logits.shape[-1] - 1)


def as_matrix(weight, bias):
    """A convolution's weight (C_out, C_in, *taps) as the matrix W of taps @ W, for a window of
    its input flattened channel-major (window.flatten(1)), with its bias: what the cached
    samplers multiply at one position."""
    return weight.flatten(1).T, bias


class _evaluating:
    """Evaluation mode (no dropout) for the duration of a block, then the mode it was in."""

    def __init__(self, model):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
