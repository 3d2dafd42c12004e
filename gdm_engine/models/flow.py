"""What the normalizing flows share: the change-of-variables likelihood, the dequantisation of
discrete data, and sampling by the inverse."""

import math

import torch

from gdm_engine import nn as gnn
from gdm_engine._validation import check_int
from gdm_engine.data import dequantize, quantize

from .base import GenerativeModel


def standard_normal_log_prob(z):
    """log N(z; 0, I) per example, summed over every dimension but the first."""
    return -0.5 * (z.float().square() + math.log(2 * math.pi)).flatten(1).sum(1)


def check_image_shape(model, shape):
    """The multi-scale flows model images (C, H, W) only."""
    if len(shape) != 3:
        raise ValueError(
            f"{model} models images (C, H, W), got shape {tuple(shape)}: use nsf for vectors"
        )


class FlowModel(GenerativeModel):
    """A flow f from data to a standard normal z of the data's shape:
    log p(x) = log N(f(x); 0, I) + log|det df/dx| (Dinh et al., 2017, eq. 3), exact for
    continuous data.

    Discrete data (integer levels) are dequantised by the engine's convention (x + u) / levels,
    u ~ U[0, 1) (gdm_engine.data.dequantize), then mapped to the real line by a Logit layer whose
    Jacobian is counted, so log_prob is a lower bound on log P(x) (Theis et al., 2016, sec. 3.1).
    With `iwae_samples` = K > 1 it is the importance-weighted bound over K draws of u,
    log 1/K sum_k p((x + u_k) / levels) levels^-D, which tightens towards log P(x) as K grows
    (Ho et al., 2019, sec. 3.1); training uses K = 1.

    Subclasses build their layers in `layers(memory_saving)`; `memory_saving=True` trains them
    without storing activations (gdm_engine.nn.InvertibleSequential).
    """

    def __init__(
        self, shape, levels=None, memory_saving=False, iwae_samples=1, alpha=0.05, **options
    ):
        check_int("iwae_samples", iwae_samples, 1)
        if not isinstance(memory_saving, bool):
            raise TypeError(f"memory_saving must be a bool, got {type(memory_saving).__name__}")
        super().__init__(
            shape=list(shape),
            levels=levels,
            memory_saving=memory_saving,
            iwae_samples=iwae_samples,
            alpha=alpha,
            **options,
        )
        self.shape, self.levels, self.iwae_samples = tuple(shape), levels, iwae_samples
        self.dims = math.prod(self.shape)
        first = [gnn.Logit(alpha)] if levels is not None else []
        self.flow = gnn.InvertibleSequential(
            *first, *self.layers(memory_saving), memory_saving=memory_saving
        )

    def layers(self, memory_saving):
        raise NotImplementedError

    @property
    def likelihood(self):
        if self.levels is None:
            return "exact"
        return f"bound (uniform dequantisation, K={self.iwae_samples})"

    def log_density(self, y):
        """log p(y) of continuous y (N, *shape), nats per example: exact."""
        z, logdet = self.flow(y)
        return standard_normal_log_prob(z) + logdet

    def log_prob(self, x, samples=None, generator=None):
        """Exact log-density for continuous x; for discrete x the (importance-weighted, K =
        `samples`, default `iwae_samples`) dequantisation bound on log P(x). Nats per example."""
        self.check_data(x)
        if self.levels is None:
            return self.log_density(x.to(self.flow_dtype))
        k = self.iwae_samples if samples is None else samples
        check_int("samples", k, 1)
        log_weights = torch.stack(
            [self.log_density(dequantize(x, self.levels, generator)) for _ in range(k)]
        )
        return torch.logsumexp(log_weights, 0) - math.log(k) - self.dims * math.log(self.levels)

    @property
    def flow_dtype(self):
        return next(self.parameters()).dtype

    def loss(self, x, generator=None):
        """Negative log-likelihood (the K = 1 bound for discrete data), nats per example."""
        return -self.log_prob(x, samples=1, generator=generator).mean()

    @torch.no_grad()
    def sample(self, n, generator=None, temperature=1.0):
        """n examples: z ~ N(0, temperature² I) through the inverse flow (temperature < 1 draws
        from the typical middle of the density, Kingma & Dhariwal, 2018, sec. 5); discrete data
        come back as integer levels (floor of levels * y)."""
        if (
            not isinstance(temperature, (int, float))
            or isinstance(temperature, bool)
            or temperature < 0
        ):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        device = generator.device if generator is not None else self.device
        z = torch.randn(n, *self.shape, generator=generator, device=device)
        y, _ = self.flow.inverse((temperature * z).to(self.device, self.flow_dtype))
        if self.levels is None:
            return y
        return quantize(y, self.levels)
