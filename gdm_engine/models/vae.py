"""The variational autoencoder (Kingma & Welling, 2014) with an importance-weighted likelihood
bound (Burda et al., 2016)."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from gdm_engine import ops
from gdm_engine._validation import check_choice, check_fraction, check_int

from .base import GenerativeModel

DECODERS = ("logistic", "categorical")
EVAL_CHUNK_VALUES = 1 << 24  # decoder outputs held at once by log_prob (64 MB in fp32)


def _mlp(n_in, hidden, n_out, dropout):
    return nn.Sequential(
        nn.Linear(n_in, hidden),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, hidden),
        nn.SiLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )


def _standard_normal_log_prob(x):
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
    """

    name = "vae"

    def __init__(
        self,
        shape,
        levels=None,
        latent=16,
        hidden=128,
        iwae_samples=100,
        decoder="logistic",
        dropout=0.0,
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
        super().__init__(
            shape=list(shape),
            levels=levels,
            latent=latent,
            hidden=hidden,
            iwae_samples=iwae_samples,
            decoder=decoder,
            dropout=dropout,
        )
        self.shape, self.levels, self.latent = tuple(shape), levels, latent
        self.iwae_samples, self.decoder_kind = iwae_samples, decoder
        self.dims = math.prod(shape)
        outputs_per_dim = levels if levels is not None and decoder == "categorical" else 2
        self.encoder = _mlp(self.dims, hidden, 2 * latent, dropout)
        self.decoder = _mlp(latent, hidden, self.dims * outputs_per_dim, dropout)

    @property
    def likelihood(self):
        return f"bound (IWAE, K={self.iwae_samples})"

    def _inputs(self, x):
        """Network inputs: levels scaled to [-1, 1], continuous values as they are."""
        flat = x.reshape(len(x), -1).float()
        return flat / (self.levels - 1) * 2 - 1 if self.levels is not None else flat

    def encode(self, x):
        """(mean, log_var) of q(z|x), each (N, latent)."""
        return self.encoder(self._inputs(x)).chunk(2, dim=-1)

    def level_log_probs(self, z):
        """log p(x_d = k | z) for every pixel d and level k: (..., D, levels)."""
        out = self.decoder(z).float()
        if self.decoder_kind == "categorical":
            return torch.log_softmax(out.unflatten(-1, (self.dims, self.levels)), -1)
        return discretized_logistic_log_probs(*out.chunk(2, dim=-1), self.levels)

    def decoder_log_prob(self, x, z):
        """log p(x|z) in nats, for z of shape (..., N, latent) against x (N, ...)."""
        flat = x.reshape(len(x), -1)
        if self.levels is not None:
            log_probs = self.level_log_probs(z)
            index = flat.expand(*log_probs.shape[:-1]).unsqueeze(-1)
            return torch.gather(log_probs, -1, index).squeeze(-1).sum(-1)
        mean, log_var = self.decoder(z).float().chunk(2, dim=-1)
        sq = (flat.float() - mean).square() * torch.exp(-log_var)
        return -0.5 * (sq + log_var + math.log(2 * math.pi)).sum(-1)

    def loss(self, x, generator=None):
        """Negative ELBO, nats per example, averaged over the batch."""
        self.check_data(x)
        mean, log_var = self.encode(x)
        z, kl = ops.gaussian_reparam_kl(mean, log_var, generator=generator)
        return (kl - self.decoder_log_prob(x, z)).mean()

    @torch.no_grad()
    def log_prob(self, x, samples=None, generator=None):
        """A lower bound on log p(x): the importance-weighted bound with K = `samples` (default
        `iwae_samples`) draws from q(z|x) (Burda et al., 2016, eq. 8),
            log p(x) >= E[ log 1/K sum_k p(x, z_k) / q(z_k|x) ],
        which tightens as K grows (K = 1 is the ELBO). Nats per example."""
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

    def _log_weights(self, x, mean, log_var, eps):
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
    def sample(self, n, generator=None):
        """n examples: integer levels (n, *shape) for discrete data, floats for continuous."""
        device = _device_of(generator, self.device)
        z = torch.randn(n, self.latent, generator=generator, device=device).to(self.device)
        if self.levels is not None:
            probs = self.level_log_probs(z).exp().view(n * self.dims, self.levels).to(device)
            levels = torch.multinomial(probs, 1, generator=generator)
            return levels.view(n, *self.shape).to(self.device)
        mean, log_var = self.decoder(z).float().chunk(2, dim=-1)
        noise = torch.randn(mean.shape, generator=generator, device=device).to(self.device)
        return (mean + torch.exp(0.5 * log_var) * noise).view(n, *self.shape)


def discretized_logistic_log_probs(location, log_scale, levels):
    """log P(x = k) for k = 0 .. levels-1 under a logistic distribution discretised into equal bins
    on [-1, 1] (Salimans et al., 2017, eq. 2): bin k spans (b_{k-1}, b_k] with the edges
    b_k = -1 + (2k + 1) / (levels - 1), the first and last bins open to -inf and +inf.

    The mass sigmoid(a) - sigmoid(b) of a bin, with a and b its standardised upper and lower
    edges, is computed as logsigmoid(a) + logsigmoid(-b) + log(1 - exp(b - a)), an identity that
    stays finite (and keeps its gradient) where the difference would round to zero in fp32.
    location, log_scale: (..., D); returns (..., D, levels)."""
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


def _device_of(generator, device):
    """Random numbers are drawn on the generator's device (torch's global generator: `device`)."""
    return generator.device if generator is not None else device
