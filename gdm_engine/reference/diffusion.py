"""Reference denoising and Langevin steps: DDPM (Ho et al., 2020), DDIM (Song et al., 2021) and
unadjusted Langevin dynamics. The specification of kernels/diffusion.py.

Schedule values (alpha_bar_t, alpha_bar_prev, step_size) are Python floats or per-example
tensors of shape (N,). `noise` is z ~ N(0, I) shaped like x; None draws it from `seed` (the
reference's own stream: the Triton kernel draws different numbers from the same seed).
"""

import math

import torch


def _per_example(value, x):
    """A float or (N,) schedule value as a tensor broadcasting over x's (N, ...) examples."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.promote_types(value.dtype, x.dtype)).reshape(
            (-1,) + (1,) * (x.ndim - 1))
    return torch.full((1,) * x.ndim, float(value), dtype=x.dtype, device=x.device)


def _noise(x, noise, seed):
    if noise is not None:
        return noise
    generator = torch.Generator(x.device).manual_seed(seed)
    return torch.randn(x.shape, generator=generator, device=x.device).to(x.dtype)


def predicted_x0(x_t, model_output, alpha_bar_t, prediction="eps", clip=None, threshold=None):
    """x0 implied by the model's prediction, optionally clipped or dynamically thresholded.

    "eps": x0 = (x_t − sqrt(1−ᾱ_t) ε) / sqrt(ᾱ_t)            (Ho et al., 2020, eq. 4 inverted)
    "x0":  x0 = model_output
    "v":   x0 = sqrt(ᾱ_t) x_t − sqrt(1−ᾱ_t) v                (Salimans & Ho, 2022, sec. 4)
    clip: x0 = clamp(x0, −clip, clip).
    threshold (Saharia et al., 2022, sec. 2.3, dynamic thresholding): per example,
    s = max(quantile(|x0|, threshold), 1) and x0 = clamp(x0, −s, s) / s.
    """
    a = _per_example(alpha_bar_t, x_t)
    if prediction == "eps":
        x0 = (x_t - torch.sqrt(1 - a) * model_output) / torch.sqrt(a)
    elif prediction == "x0":
        x0 = model_output
    else:  # "v"
        x0 = torch.sqrt(a) * x_t - torch.sqrt(1 - a) * model_output
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    if threshold is not None:
        s = threshold_scale(x0, threshold).reshape((-1,) + (1,) * (x0.ndim - 1))
        x0 = torch.maximum(torch.minimum(x0, s), -s) / s
    return x0


def threshold_scale(x0, threshold):
    """Dynamic thresholding's per-example s = max(quantile(|x0|, threshold), 1), shape (N,).

    The quantile interpolates linearly between order statistics, as numpy.percentile and
    torch.quantile do: at position p = threshold·(D − 1) of the sorted |x0|,
    q = v[floor p] + (p − floor p)·(v[floor p + 1] − v[floor p]). Written with kthvalue, which
    (unlike torch.quantile) has no limit on the number of elements.
    """
    n = x0.shape[0]
    if n == 0:
        return x0.new_ones(0)
    magnitude = x0.abs().reshape(n, -1)
    if magnitude.dtype != torch.float64:
        magnitude = magnitude.float()
    d = magnitude.shape[1]
    position = threshold * (d - 1)
    k = math.floor(position)
    low = magnitude.kthvalue(k + 1, dim=1).values
    high = magnitude.kthvalue(min(k + 2, d), dim=1).values
    q = low + (position - k) * (high - low)
    return q.clamp(min=1.0).to(x0.dtype)


def ddpm_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, *, prediction="eps",
              variance="fixed_small", clip=None, threshold=None, seed=0):
    """One ancestral step x_t -> x_{t−1} (Ho et al., 2020, Algorithm 2 with eq. 6-7):

    α_t = ᾱ_t / ᾱ_prev, β_t = 1 − α_t,
    μ = sqrt(ᾱ_prev) β_t / (1 − ᾱ_t) x0 + sqrt(α_t) (1 − ᾱ_prev) / (1 − ᾱ_t) x_t   (eq. 7)
    σ² = β̃_t = (1 − ᾱ_prev) / (1 − ᾱ_t) β_t ("fixed_small") or β_t ("fixed_large")  (sec. 3.2)
    x_{t−1} = μ + σ z, with no noise on the last step (ᾱ_prev = 1).
    """
    x0 = predicted_x0(x_t, model_output, alpha_bar_t, prediction, clip, threshold)
    a, a_prev = _per_example(alpha_bar_t, x_t), _per_example(alpha_bar_prev, x_t)
    alpha = a / a_prev
    beta = 1 - alpha
    mean = (torch.sqrt(a_prev) * beta / (1 - a) * x0
            + torch.sqrt(alpha) * (1 - a_prev) / (1 - a) * x_t)
    var = (1 - a_prev) / (1 - a) * beta if variance == "fixed_small" else beta
    var = torch.where(a_prev == 1, torch.zeros_like(var), var)
    return mean + torch.sqrt(var) * _noise(x_t, noise, seed)


def ddim_step(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, *, eta=0.0,
              prediction="eps", clip=None, threshold=None, seed=0):
    """One DDIM step (Song et al., 2021, eq. 12 with eq. 16's σ):

    σ_t = eta sqrt((1 − ᾱ_prev) / (1 − ᾱ_t)) sqrt(1 − ᾱ_t / ᾱ_prev)
    x_{t−1} = sqrt(ᾱ_prev) x0 + sqrt(1 − ᾱ_prev − σ_t²) ε̂ + σ_t z,
    ε̂ = (x_t − sqrt(ᾱ_t) x0) / sqrt(1 − ᾱ_t), the noise implied by x0 and x_t.
    """
    x0 = predicted_x0(x_t, model_output, alpha_bar_t, prediction, clip, threshold)
    a, a_prev = _per_example(alpha_bar_t, x_t), _per_example(alpha_bar_prev, x_t)
    eps = (x_t - torch.sqrt(a) * x0) / torch.sqrt(1 - a)
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)
    direction = torch.sqrt((1 - a_prev - sigma**2).clamp(min=0))
    return torch.sqrt(a_prev) * x0 + direction * eps + sigma * _noise(x_t, noise, seed)


def langevin_step(x, score, step_size, noise=None, *, seed=0):
    """One step of unadjusted Langevin dynamics (Welling & Teh, 2011; Song & Ermon, 2019, eq. 4):
    x' = x + step_size / 2 · score + sqrt(step_size) · z."""
    h = _per_example(step_size, x)
    return x + h / 2 * score + torch.sqrt(h) * _noise(x, noise, seed)


__all__ = ["ddim_step", "ddpm_step", "langevin_step", "predicted_x0", "threshold_scale"]
