"""Reference denoising and Langevin steps, and the training objective: DDPM (Ho et al., 2020),
DDIM (Song et al., 2021), Euler and Heun in the σ form of Karras et al. (2022), DPM-Solver++(2M)
(Lu et al., 2022), unadjusted Langevin dynamics, q_sample and the simple loss with min-SNR-γ
weighting (Hang et al., 2023). The specification of kernels/diffusion.py.

Schedule values (alpha_bar_t, alpha_bar_prev, sigma, sigma_next, step_size) are Python floats or
per-example tensors of shape (N,). `noise` is z ~ N(0, I) shaped like x; None draws it from
`seed` (the reference's own stream: the Triton kernel draws different numbers from the same
seed). `uncond`, where given, is the unconditional output of the model, and the step uses the
classifier-free guided output u + guidance_scale · (model_output − u) (Ho & Salimans, 2022,
eq. 6) in place of model_output.
"""

import math

import torch

# what a denoising model may predict: the noise ε, the clean x0, or v (Salimans & Ho, 2022)
PREDICTIONS = ("eps", "x0", "v")


def _per_example(value, x):
    """A float or (N,) schedule value as a tensor broadcasting over x's (N, ...) examples: a
    float in float64 (exactly as given: 1 − ᾱ keeps its digits), a tensor in at least fp32 (σ²
    stays finite where x is fp16); the ops return the result in x's dtype."""
    if isinstance(value, torch.Tensor):
        dtype = torch.promote_types(torch.promote_types(value.dtype, x.dtype), torch.float32)
        return value.to(dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return torch.full((1,) * x.ndim, float(value), dtype=torch.float64, device=x.device)


def _noise(x, noise, seed):
    if noise is not None:
        return noise
    generator = torch.Generator(x.device).manual_seed(seed)
    return torch.randn(x.shape, generator=generator, device=x.device).to(x.dtype)


def guided(model_output, uncond=None, guidance_scale=1.0):
    """Classifier-free guidance (Ho & Salimans, 2022, eq. 6): u + w (c − u); c without uncond."""
    if uncond is None:
        return model_output
    wide = torch.promote_types(model_output.dtype, torch.float32)  # as the kernel combines
    uncond, model_output = uncond.to(wide), model_output.to(wide)
    return uncond + _per_example(guidance_scale, model_output) * (model_output - uncond)


def predicted_x0(
    x_t, model_output, alpha_bar_t, prediction="eps", clip=None, threshold=None, clamped=True
):
    """x0 implied by the model's prediction, optionally clipped or dynamically thresholded.

    "eps": x0 = (x_t − sqrt(1−ᾱ_t) ε) / sqrt(ᾱ_t)            (Ho et al., 2020, eq. 4 inverted)
    "x0":  x0 = model_output
    "v":   x0 = sqrt(ᾱ_t) x_t − sqrt(1−ᾱ_t) v                (Salimans & Ho, 2022, sec. 4)
    clip: x0 = clamp(x0, −clip, clip).
    threshold (Saharia et al., 2022, sec. 2.3, dynamic thresholding): per example,
    s = max(quantile(|x0|, threshold), 1) and x0 = clamp(x0, −s, s) / s.
    `clamped=False` returns the prediction before clip and threshold.
    """
    a = _per_example(alpha_bar_t, x_t)
    if prediction == "eps":
        x0 = (x_t - torch.sqrt(1 - a) * model_output) / torch.sqrt(a)
    elif prediction == "x0":
        x0 = model_output
    else:  # "v"
        x0 = torch.sqrt(a) * x_t - torch.sqrt(1 - a) * model_output
    if not clamped:
        return x0
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
    if n == 0 or x0[0].numel() == 0:  # no elements: nothing to scale
        return x0.new_ones(n)
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


def ddpm_step(
    x_t,
    model_output,
    alpha_bar_t,
    alpha_bar_prev,
    noise=None,
    uncond=None,
    *,
    prediction="eps",
    variance="fixed_small",
    clip=None,
    threshold=None,
    guidance_scale=1.0,
    seed=0,
):
    """One ancestral step x_t -> x_{t−1} (Ho et al., 2020, Algorithm 2 with eq. 6-7):

    α_t = ᾱ_t / ᾱ_prev, β_t = 1 − α_t,
    μ = sqrt(ᾱ_prev) β_t / (1 − ᾱ_t) x0 + sqrt(α_t) (1 − ᾱ_prev) / (1 − ᾱ_t) x_t   (eq. 7)
    σ² = β̃_t = (1 − ᾱ_prev) / (1 − ᾱ_t) β_t ("fixed_small") or β_t ("fixed_large")  (sec. 3.2)
    x_{t−1} = μ + σ z, with no noise on the last step (ᾱ_prev = 1).
    """
    model_output = guided(model_output, uncond, guidance_scale)
    x0 = predicted_x0(x_t, model_output, alpha_bar_t, prediction, clip, threshold)
    a, a_prev = _per_example(alpha_bar_t, x_t), _per_example(alpha_bar_prev, x_t)
    alpha = a / a_prev
    beta = 1 - alpha
    mean = (
        torch.sqrt(a_prev) * beta / (1 - a) * x0 + torch.sqrt(alpha) * (1 - a_prev) / (1 - a) * x_t
    )
    var = (1 - a_prev) / (1 - a) * beta if variance == "fixed_small" else beta
    var = torch.where(a_prev == 1, torch.zeros_like(var), var)
    return mean + torch.sqrt(var) * _noise(x_t, noise, seed)


def ddim_step(
    x_t,
    model_output,
    alpha_bar_t,
    alpha_bar_prev,
    noise=None,
    uncond=None,
    *,
    eta=0.0,
    prediction="eps",
    clip=None,
    threshold=None,
    use_clipped_model_output=False,
    guidance_scale=1.0,
    seed=0,
):
    """One DDIM step (Song et al., 2021, eq. 12 with eq. 16's σ):

    σ_t = eta sqrt((1 − ᾱ_prev) / (1 − ᾱ_t)) sqrt(1 − ᾱ_t / ᾱ_prev)
    x_{t−1} = sqrt(ᾱ_prev) x0 + sqrt(1 − ᾱ_prev − σ_t²) ε̂ + σ_t z,
    ε̂ = (x_t − sqrt(ᾱ_t) x0') / sqrt(1 − ᾱ_t), the noise implied by the model's x0' before
    clip and threshold (as the DDIM authors' code and diffusers' DDIMScheduler), or by the
    clamped x0 with `use_clipped_model_output`.
    """
    model_output = guided(model_output, uncond, guidance_scale)
    x0 = predicted_x0(x_t, model_output, alpha_bar_t, prediction, clip, threshold)
    a, a_prev = _per_example(alpha_bar_t, x_t), _per_example(alpha_bar_prev, x_t)
    implied = (
        x0
        if use_clipped_model_output
        else predicted_x0(x_t, model_output, alpha_bar_t, prediction, clamped=False)
    )
    eps = (x_t - torch.sqrt(a) * implied) / torch.sqrt(1 - a)
    sigma = eta * torch.sqrt((1 - a_prev) / (1 - a)) * torch.sqrt(1 - a / a_prev)
    direction = torch.sqrt((1 - a_prev - sigma**2).clamp(min=0))
    return torch.sqrt(a_prev) * x0 + direction * eps + sigma * _noise(x_t, noise, seed)


def langevin_step(x, score, step_size, noise=None, *, seed=0):
    """One step of unadjusted Langevin dynamics (Welling & Teh, 2011; Song & Ermon, 2019, eq. 4):
    x' = x + step_size / 2 · score + sqrt(step_size) · z."""
    h = _per_example(step_size, x)
    return x + h / 2 * score + torch.sqrt(h) * _noise(x, noise, seed)


# --------------------------------------------------------------------------------------------------
# the σ form: x = x0 + σ ε (Karras et al., 2022, eq. 1-2; VP's x_t is x / sqrt(1 + σ²) with
# ᾱ = 1 / (1 + σ²))
# --------------------------------------------------------------------------------------------------


def denoised(x, model_output, sigma, prediction="eps"):
    """D(x; σ), the model's estimate of x0 at noise level σ > 0:

    "eps": D = x − σ ε̂
    "x0":  D = model_output
    "v":   D = x / (1 + σ²) − σ / sqrt(1 + σ²) v̂, v̂ predicted for the VP-scaled input
           x / sqrt(1 + σ²) (Salimans & Ho, 2022: x0 = sqrt(ᾱ) x_vp − sqrt(1 − ᾱ) v).
    """
    s = _per_example(sigma, x)
    if prediction == "eps":
        return x - s * model_output
    if prediction == "x0":
        return model_output
    return x / (1 + s**2) - s / torch.sqrt(1 + s**2) * model_output


def _churn(x, sigma_next, churn, s_noise, noise, seed):
    """Karras et al. (2022), Algorithm 2, lines 5-6 of the next step, fused into this one: raise
    the noise level from σ_next to σ̂ = σ_next (1 + churn) by adding s_noise sqrt(σ̂² − σ_next²) z."""
    if churn == 0:
        return x
    s_next = _per_example(sigma_next, x)
    level = s_noise * s_next * math.sqrt((1 + churn) ** 2 - 1)
    return x + level * _noise(x, noise, seed)


def euler_step(
    x,
    model_output,
    sigma,
    sigma_next,
    noise=None,
    uncond=None,
    *,
    prediction="eps",
    churn=0.0,
    s_noise=1.0,
    guidance_scale=1.0,
    seed=0,
):
    """One Euler step of the probability-flow ODE dx/dσ = (x − D(x; σ)) / σ from σ to σ_next
    (Karras et al., 2022, Algorithm 1-2, line 8): x' = x + (σ_next − σ) d, d = (x − D) / σ.
    With churn γ > 0, noise then lifts x' to the next step's σ̂ = σ_next (1 + γ) (Algorithm 2,
    lines 5-6), where the model is evaluated next."""
    d = x - denoised(x, guided(model_output, uncond, guidance_scale), sigma, prediction)
    d = d / _per_example(sigma, x)
    out = x + (_per_example(sigma_next, x) - _per_example(sigma, x)) * d
    return _churn(out, sigma_next, churn, s_noise, noise, seed)


def heun_step(
    x,
    model_output,
    model_output_next,
    sigma,
    sigma_next,
    noise=None,
    uncond=None,
    uncond_next=None,
    *,
    prediction="eps",
    churn=0.0,
    s_noise=1.0,
    guidance_scale=1.0,
    seed=0,
):
    """Heun's second-order correction (Karras et al., 2022, Algorithm 2, lines 9-11): with
    d = (x − D(x; σ)) / σ, the Euler point x_e = x + (σ_next − σ) d (recomputed here) and
    d' = (x_e − D(x_e; σ_next)) / σ_next from `model_output_next`, the model at (x_e, σ_next),
    x' = x + (σ_next − σ) (d + d') / 2. σ_next > 0 (the last step is Euler's). Churn as in
    `euler_step`."""
    s, s_next = _per_example(sigma, x), _per_example(sigma_next, x)
    d = (x - denoised(x, guided(model_output, uncond, guidance_scale), sigma, prediction)) / s
    x_euler = x + (s_next - s) * d
    d_next = x_euler - denoised(
        x_euler, guided(model_output_next, uncond_next, guidance_scale), sigma_next, prediction
    )
    out = x + (s_next - s) * (d + d_next / s_next) / 2
    return _churn(out, sigma_next, churn, s_noise, noise, seed)


def dpmpp_2m_step(
    x,
    model_output,
    sigma,
    sigma_next,
    previous_denoised=None,
    uncond=None,
    *,
    sigma_prev=None,
    prediction="eps",
    guidance_scale=1.0,
):
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2) in the σ form, where α = 1 and
    λ = −log σ: with h = λ_next − λ, x' = (σ_next / σ) x − (e^{−h} − 1) D̄ = (σ_next / σ) x +
    (1 − σ_next / σ) D̄. D̄ = D (first order) on the first step (no previous_denoised) and where
    σ_next = 0, else D̄ = (1 + 1 / 2r) D − D_prev / 2r with r = h_prev / h, h_prev = λ − λ_prev.
    Returns (x', D): D is the next step's previous_denoised."""
    s, s_next = _per_example(sigma, x), _per_example(sigma_next, x)
    d_now = denoised(x, guided(model_output, uncond, guidance_scale), sigma, prediction)
    combined = d_now
    if previous_denoised is not None:
        h = torch.log(s / s_next)  # inf where σ_next = 0: 1 / 2r = 0, the first-order step
        h_prev = torch.log(_per_example(sigma_prev, x) / s)
        half_inverse_r = h / (2 * h_prev)
        half_inverse_r = torch.where(s_next == 0, torch.zeros_like(half_inverse_r), half_inverse_r)
        combined = (1 + half_inverse_r) * d_now - half_inverse_r * previous_denoised
    ratio = s_next / s
    return ratio * x + (1 - ratio) * combined, d_now


# --------------------------------------------------------------------------------------------------
# training: the forward process and the simple loss
# --------------------------------------------------------------------------------------------------


def q_sample(x0, alpha_bar, noise):
    """x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε, a draw of q(x_t | x0) (Ho et al., 2020, eq. 4)."""
    a = _per_example(alpha_bar, x0)
    return torch.sqrt(a) * x0 + torch.sqrt(1 - a) * noise


def loss_target(x0, noise, alpha_bar, prediction="eps"):
    """What the model learns to predict: ε, x0, or v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0 (Salimans &
    Ho, 2022, sec. 4)."""
    if prediction == "eps":
        return noise
    if prediction == "x0":
        return x0
    a = _per_example(alpha_bar, x0)
    return torch.sqrt(a) * noise - torch.sqrt(1 - a) * x0


def min_snr_weight(alpha_bar, prediction="eps", gamma=None):
    """The per-example weight of the min-SNR-γ strategy (Hang et al., 2023, sec. 3.4): with
    SNR = ᾱ / (1 − ᾱ), min(SNR, γ) on the x0 loss, which is min(SNR, γ) / SNR on the ε loss and
    min(SNR, γ) / (SNR + 1) on the v loss. 1 without gamma."""
    a = (
        alpha_bar.double()
        if isinstance(alpha_bar, torch.Tensor)
        else torch.tensor(float(alpha_bar), dtype=torch.float64)
    )
    if gamma is None:
        return torch.ones_like(a)
    snr = a / (1 - a)
    clipped = snr.clamp(max=gamma)
    return {"eps": clipped / snr, "x0": clipped, "v": clipped / (snr + 1)}[prediction]


def diffusion_loss(model_output, x0, noise, alpha_bar, *, prediction="eps", min_snr_gamma=None):
    """The simple loss of Ho et al. (2020, eq. 14) per example: the mean over an example's
    elements of (model_output − target)², times the min-SNR-γ weight. Returns shape (N,)."""
    dtype = torch.promote_types(model_output.dtype, torch.float32)  # fp16 squares overflow
    target = loss_target(x0.to(dtype), noise.to(dtype), alpha_bar, prediction).to(dtype)
    error = (
        (model_output.to(dtype) - target)
        .square()
        .reshape(model_output.shape[0], model_output.shape[1:].numel())
    )
    weight = min_snr_weight(alpha_bar, prediction, min_snr_gamma).to(error.device, dtype)
    # an example of no elements loses 0 (the mean of nothing would be NaN)
    return error.sum(dim=1) / max(error.shape[1], 1) * weight


__all__ = [
    "ddim_step",
    "ddpm_step",
    "denoised",
    "diffusion_loss",
    "dpmpp_2m_step",
    "euler_step",
    "guided",
    "heun_step",
    "langevin_step",
    "loss_target",
    "min_snr_weight",
    "predicted_x0",
    "q_sample",
    "threshold_scale",
]
