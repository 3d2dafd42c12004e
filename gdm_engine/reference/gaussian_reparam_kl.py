"""Reference reparameterised Gaussian sample and KL to N(0, I) (Kingma & Welling, 2014)."""

import torch


def standard_normal_like(mean, seed):
    """eps ~ N(0, I) of mean's shape, reproducible from `seed` (the reference's own stream: the
    Triton kernel draws different numbers from the same seed)."""
    generator = torch.Generator(mean.device).manual_seed(seed)
    return torch.randn(mean.shape, generator=generator, device=mean.device).to(mean.dtype)


def gaussian_reparam_kl(mean, log_var, noise=None, seed=0):
    """(z, kl): z = mean + exp(log_var / 2) * noise (sec. 2.4), and per example (first dimension)
    KL(N(mean, exp(log_var)) || N(0, I)) = 1/2 sum (mean² + exp(log_var) - 1 - log_var)
    (appendix B). noise=None draws it from `seed`."""
    eps = noise if noise is not None else standard_normal_like(mean, seed)
    # in at least fp32, as the kernel computes, returned in mean's dtype
    wide = torch.promote_types(mean.dtype, torch.float32)
    mean_w, log_var_w = mean.to(wide), log_var.to(wide)
    z = mean_w + torch.exp(0.5 * log_var_w) * eps.to(wide)
    kl = 0.5 * (mean_w.square() + log_var_w.exp() - 1.0 - log_var_w).flatten(1).sum(1)
    return z.to(mean.dtype), kl.to(mean.dtype)
