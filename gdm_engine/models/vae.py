"""The variational autoencoder (Kingma & Welling, 2014) with an importance-weighted likelihood
bound (Burda et al., 2016)."""

import math

import torch
from torch import nn

from gdm_engine import ops
from gdm_engine.ops._checks import check_int

from .base import GenerativeModel


def _mlp(n_in, hidden, n_out):
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, n_out))


def _standard_normal_log_prob(x):
    """log N(x; 0, I), summed over the last dimension."""
    return -0.5 * (x.square() + math.log(2 * math.pi)).sum(-1)


class VAE(GenerativeModel):
    """Gaussian encoder q(z|x) = N(mu(x), diag(exp(log_var(x)))), prior p(z) = N(0, I), and a
    decoder p(x|z): a categorical distribution over the grey levels of each pixel for discrete
    data (a discretised decoder: it gives probability mass, so likelihoods are exact masses), a
    diagonal Gaussian for continuous data. Encoder and decoder are two-hidden-layer MLPs.

    loss = the negative evidence lower bound, averaged over the batch (eq. 3 of Kingma & Welling),
    with the sample of z and its KL to the prior from the fused op `gaussian_reparam_kl`.
    """

    name = "vae"

    def __init__(self, shape, levels=None, latent=16, hidden=256, iwae_samples=100):
        for name, value in [("latent", latent), ("hidden", hidden), ("iwae_samples", iwae_samples)]:
            check_int(name, value, 1)
        super().__init__(shape=list(shape), levels=levels, latent=latent, hidden=hidden,
                         iwae_samples=iwae_samples)
        self.shape, self.levels, self.latent = tuple(shape), levels, latent
        self.iwae_samples = iwae_samples
        self.dims = math.prod(shape)
        outputs_per_dim = levels if levels is not None else 2
        self.encoder = _mlp(self.dims, hidden, 2 * latent)
        self.decoder = _mlp(latent, hidden, self.dims * outputs_per_dim)

    def _inputs(self, x):
        """Network inputs: levels scaled to [-1, 1], continuous values as they are."""
        flat = x.reshape(len(x), -1).float()
        return flat / (self.levels - 1) * 2 - 1 if self.levels is not None else flat

    def encode(self, x):
        """(mean, log_var) of q(z|x), each (N, latent)."""
        return self.encoder(self._inputs(x)).chunk(2, dim=-1)

    def decoder_log_prob(self, x, z):
        """log p(x|z) in nats, for z of shape (..., N, latent) against x (N, ...)."""
        out = self.decoder(z)
        flat = x.reshape(len(x), -1)
        if self.levels is not None:
            logits = out.unflatten(-1, (self.dims, self.levels)).float()
            chosen = torch.gather(logits, -1, flat.expand(*out.shape[:-1], -1).unsqueeze(-1))
            return (chosen.squeeze(-1) - logits.logsumexp(-1)).sum(-1)
        mean, log_var = out.float().chunk(2, dim=-1)
        sq = (flat.float() - mean).square() * torch.exp(-log_var)
        return -0.5 * (sq + log_var + math.log(2 * math.pi)).sum(-1)

    def loss(self, x, generator=None):
        """Negative ELBO, nats per example, averaged over the batch."""
        mean, log_var = self.encode(x)
        z, kl = ops.gaussian_reparam_kl(mean, log_var, generator=generator)
        return (kl - self.decoder_log_prob(x, z)).mean()

    @torch.no_grad()
    def log_prob(self, x, samples=None, generator=None):
        """A lower bound on log p(x): the importance-weighted bound with K = `samples` (default
        `iwae_samples`) draws from q(z|x) (Burda et al., 2016, eq. 8),
            log p(x) >= E[ log 1/K sum_k p(x, z_k) / q(z_k|x) ],
        which tightens as K grows (K = 1 is the ELBO). Nats per example."""
        k = samples or self.iwae_samples
        mean, log_var = self.encode(x)
        eps = torch.randn((k, *mean.shape), generator=generator,
                          device=_device_of(generator, mean)).to(mean)
        z, _ = ops.gaussian_reparam_kl(mean.expand_as(eps).reshape(-1, self.latent),
                                       log_var.expand_as(eps).reshape(-1, self.latent),
                                       eps.reshape(-1, self.latent))
        z = z.view(eps.shape)
        log_q = _standard_normal_log_prob(eps) - 0.5 * log_var.sum(-1)
        log_weights = self.decoder_log_prob(x, z) + _standard_normal_log_prob(z) - log_q
        return torch.logsumexp(log_weights.float(), 0) - math.log(k)

    @torch.no_grad()
    def sample(self, n, generator=None):
        """n examples: integer levels (n, *shape) for discrete data, floats for continuous."""
        device = _device_of(generator, self.device)
        z = torch.randn(n, self.latent, generator=generator, device=device).to(self.device)
        out = self.decoder(z).float()
        if self.levels is not None:
            probs = torch.softmax(out.view(n * self.dims, self.levels), -1).to(device)
            levels = torch.multinomial(probs, 1, generator=generator)
            return levels.view(n, *self.shape).to(self.device)
        mean, log_var = out.chunk(2, dim=-1)
        noise = torch.randn(mean.shape, generator=generator, device=device).to(self.device)
        return (mean + torch.exp(0.5 * log_var) * noise).view(n, *self.shape)


def _device_of(generator, fallback):
    """Random numbers are drawn on the generator's device (torch's global generator: fallback's)."""
    if generator is not None:
        return generator.device
    return fallback.device if isinstance(fallback, torch.Tensor) else fallback
