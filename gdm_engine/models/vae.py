"""The variational autoencoder (Kingma & Welling, 2014) with an importance-weighted likelihood
bound (Burda et al., 2016)."""

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from gdm_engine import ops
from gdm_engine._validation import check_choice, check_fraction, check_int

from .base import GenerativeModel

DECODERS = ("logistic", "categorical")
EVAL_CHUNK_VALUES = 1 << 24  # decoder outputs held at once by log_prob (64 MB in fp32)


def _mlp(n_in: int, hidden: int, n_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )


def _standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """log N(x; 0, I), summed over the last dimension."""
    return -0.5 * (x.square() + math.log(2 * math.pi)).sum(-1)


class VAE(GenerativeModel):
    """Gaussian encoder q(z|x) = N(mu(x), diag(exp(log_var(x)))), prior p(z) = N(0, I), and a
    decoder p(x|z) independent over pixels. For discrete data it gives probability mass over the
    grey levels: decoder="logistic" (default) is a discretised logistic per pixel (a location and
    a scale: neighbouring levels get similar mass, which generalises from few images), and
    decoder="categorical" a free categorical per pixel (levels logits: more flexible, and it
    overfits the 1,500 digits within a few thousand steps). For continuous data it is a diagonal
    Gaussian. Encoder and decoder are two-hidden-layer MLPs, with `dropout` after each hidden
    layer while training (a regulariser for small data; 0 by default).

    loss = the negative evidence lower bound, averaged over the batch (eq. 3 of Kingma & Welling),
    with the sample of z and its KL to the prior from the fused op `gaussian_reparam_kl`.

    Args:
        shape: the shape of one example.
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        latent: dimensions of z.
        hidden: units of the encoder's and decoder's hidden layers.
        iwae_samples: K, the draws of z in log_prob's importance-weighted bound.
        decoder: "logistic" or "categorical" (discrete data only).
        dropout: dropout probability after each hidden layer while training.

    Raises:
        TypeError: latent, hidden or iwae_samples is not an int.
        ValueError: latent, hidden or iwae_samples is below 1; decoder is not one of the two,
            or "categorical" for continuous data; dropout is not in [0, 1); levels is below 2.
    """

    name = "vae"
    bound_settings = frozenset({"iwae_samples"})

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        latent: int = 16,
        hidden: int = 128,
        iwae_samples: int = 100,
        decoder: str = "logistic",
        dropout: float = 0.0,
    ):
        for name, value in [("latent", latent), ("hidden", hidden), ("iwae_samples", iwae_samples)]:
            check_int(name, value, 1)
        check_choice("decoder", decoder, DECODERS)
        check_fraction("dropout", dropout)
        if levels is None and decoder == "categorical":
            raise ValueError(
                "decoder='categorical' needs discrete data (levels); continuous data "
                "get a Gaussian decoder"
            )
        super().__init__()
        self.shape, self.levels, self.latent = tuple(shape), levels, latent
        self.iwae_samples, self.decoder_kind = iwae_samples, decoder
        self.dims = math.prod(shape)
        outputs_per_dim = levels if levels is not None and decoder == "categorical" else 2
        self.encoder = _mlp(self.dims, hidden, 2 * latent, dropout)
        self.decoder = _mlp(latent, hidden, self.dims * outputs_per_dim, dropout)

    # read-only, computed from the configuration, where the base class's default is a plain
    # class attribute: the override is deliberate (no model sets `likelihood` on an instance)
    @property
    def likelihood(self) -> str:  # type: ignore[override]
        """What log_prob gives: the importance-weighted bound with its K."""
        return f"bound (IWAE, K={self.iwae_samples})"

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Network inputs: levels scaled to [-1, 1], continuous values as they are."""
        flat = x.reshape(len(x), -1).float()
        return flat / (self.levels - 1) * 2 - 1 if self.levels is not None else flat

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_var) of q(z|x), each (N, latent).

        Args:
            x: examples (N, *shape).

        Returns:
            (mean, log_var), each (N, latent).
        """
        mean, log_var = self.encoder(self._inputs(x)).chunk(2, dim=-1)
        return mean, log_var

    def level_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        """log p(x_d = k | z) for every pixel d and level k: (..., D, levels).

        Args:
            z: latents (..., latent).

        Returns:
            float32 log-probabilities (..., D, levels).
        """
        assert self.levels is not None, "level_log_probs is for discrete data (levels)"
        out = self.decoder(z).float()
        if self.decoder_kind == "categorical":
            return torch.log_softmax(out.unflatten(-1, (self.dims, self.levels)), -1)
        location, log_scale = out.chunk(2, dim=-1)
        return discretized_logistic_log_probs(location, log_scale, self.levels)

    def decoder_log_prob(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats, for z of shape (..., N, latent) against x (N, ...).

        Args:
            x: examples (N, *shape).
            z: latents (..., N, latent).

        Returns:
            (..., N) log-likelihoods.
        """
        flat = x.reshape(len(x), -1)
        if self.levels is not None:
            log_probs = self.level_log_probs(z)
            index = flat.expand(*log_probs.shape[:-1]).unsqueeze(-1)
            return torch.gather(log_probs, -1, index).squeeze(-1).sum(-1)
        mean, log_var = self.decoder(z).float().chunk(2, dim=-1)
        sq = (flat.float() - mean).square() * torch.exp(-log_var)
        return -0.5 * (sq + log_var + math.log(2 * math.pi)).sum(-1)

    def loss(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Negative ELBO, nats per example, averaged over the batch.

        Args:
            x: examples (N, *shape): integer levels for discrete data.
            generator: draws z (None: torch's global generator).

        Returns:
            The loss, a scalar.

        Raises:
            TypeError: x is not a tensor, or not integer levels for discrete data.
            ValueError: x is not shaped (N, *shape), or holds a level outside 0 .. levels − 1.
        """
        self.check_data(x)
        mean, log_var = self.encode(x)
        z, kl = ops.gaussian_reparam_kl(mean, log_var, generator=generator)
        return (kl - self.decoder_log_prob(x, z)).mean()

    @torch.no_grad()
    def log_prob(
        self,
        x: torch.Tensor,
        samples: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """A lower bound on log p(x): the importance-weighted bound with K = `samples` (default
        `iwae_samples`) draws from q(z|x) (Burda et al., 2016, eq. 8),
            log p(x) >= E[ log 1/K sum_k p(x, z_k) / q(z_k|x) ],
        which tightens as K grows (K = 1 is the ELBO). Nats per example.

        Args:
            x: examples (N, *shape): integer levels for discrete data.
            samples: K (None: iwae_samples).
            generator: draws the z_k (None: torch's global generator).

        Returns:
            (N,) lower bounds on log p(x).

        Raises:
            TypeError: x is not a tensor (integer levels for discrete data), samples not an int.
            ValueError: x is not shaped (N, *shape), holds a level outside 0 .. levels − 1, or
                samples is below 1.
        """
        self.check_data(x)
        k = self.iwae_samples if samples is None else samples
        check_int("samples", k, 1)
        mean, log_var = self.encode(x)
        eps = torch.randn(
            (k, *mean.shape), generator=generator, device=_device_of(generator, mean.device)
        ).to(mean)
        # The decoder's level log-probabilities take K x N x D x levels values: a few samples at
        # a time keep that under EVAL_CHUNK_VALUES (K = 100 of 3x32x32 images would need GBs).
        per_sample = len(x) * self.dims * (self.levels or 2)
        chunk = max(1, EVAL_CHUNK_VALUES // max(per_sample, 1))
        log_weights = torch.cat([self._log_weights(x, mean, log_var, e) for e in eps.split(chunk)])
        return torch.logsumexp(log_weights.float(), 0) - math.log(k)

    def _log_weights(
        self, x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, eps: torch.Tensor
    ) -> torch.Tensor:
        """log p(x, z) - log q(z|x) at z = mean + exp(log_var / 2) * eps, for eps (K, N, latent)."""
        z, _ = ops.gaussian_reparam_kl(
            mean.expand_as(eps).reshape(-1, self.latent),
            log_var.expand_as(eps).reshape(-1, self.latent),
            eps.reshape(-1, self.latent),
        )
        z = z.view(eps.shape)
        log_q = _standard_normal_log_prob(eps) - 0.5 * log_var.sum(-1)
        return self.decoder_log_prob(x, z) + _standard_normal_log_prob(z) - log_q

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n examples: integer levels (n, *shape) for discrete data, floats for continuous.

        Args:
            n: how many examples.
            generator: draws z and x, on its own device (None: torch's global generator).

        Returns:
            (n, *shape) examples.
        """
        device = _device_of(generator, self.device)
        z = torch.randn(n, self.latent, generator=generator, device=device).to(self.device)
        if self.levels is not None:
            probs = self.level_log_probs(z).exp().view(n * self.dims, self.levels).to(device)
            levels = torch.multinomial(probs, 1, generator=generator)
            return levels.view(n, *self.shape).to(self.device)
        mean, log_var = self.decoder(z).float().chunk(2, dim=-1)
        noise = torch.randn(mean.shape, generator=generator, device=device).to(self.device)
        return (mean + torch.exp(0.5 * log_var) * noise).view(n, *self.shape)


def discretized_logistic_log_probs(
    location: torch.Tensor, log_scale: torch.Tensor, levels: int
) -> torch.Tensor:
    """log P(x = k) for k = 0 .. levels-1 under a logistic distribution discretised into equal bins
    on [-1, 1] (Salimans et al., 2017, eq. 2): bin k spans (b_{k-1}, b_k] with the edges
    b_k = -1 + (2k + 1) / (levels - 1), the first and last bins open to -inf and +inf.

    The mass sigmoid(a) - sigmoid(b) of a bin, with a and b its standardised upper and lower
    edges, is computed as logsigmoid(a) + logsigmoid(-b) + log(1 - exp(b - a)), an identity that
    stays finite (and keeps its gradient) where the difference would round to zero in fp32.
    location, log_scale: (..., D); returns (..., D, levels).

    Args:
        location: the logistics' locations on [-1, 1], (..., D).
        log_scale: their log-scales, (..., D) (clamped to [-7, 5]).
        levels: the number of bins.

    Returns:
        (..., D, levels) log-probabilities.
    """
    inner = torch.linspace(-1, 1, levels, device=location.device)[:-1] + 1 / (levels - 1)
    # far-away finite stand-ins for -inf / +inf: an infinite edge would give 0 * inf gradients
    far = torch.full((1,), 1e4, device=location.device)
    upper, lower = torch.cat([inner, far]), torch.cat([-far, inner])
    # log_scale in [-7, 5]: narrower bins underflow; at e^7 the ±1e4 stand-ins for the open ends
    # would already cut off 2e-4 of the mass (9 scales out), at e^5 less than 1e-28. A logistic
    # e^5 wide is flat over the data's [-1, 1] anyway.
    inverse_scale = torch.exp(-log_scale.clamp(-7, 5)).unsqueeze(-1)
    a = (upper - location.unsqueeze(-1)) * inverse_scale
    b = (lower - location.unsqueeze(-1)) * inverse_scale
    return F.logsigmoid(a) + F.logsigmoid(-b) + torch.log(-torch.expm1(b - a))


def _device_of(generator: Optional[torch.Generator], device: torch.device) -> torch.device:
    """Random numbers are drawn on the generator's device (torch's global generator: `device`)."""
    return generator.device if generator is not None else device
