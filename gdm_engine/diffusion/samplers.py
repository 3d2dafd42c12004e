"""Sampler loops over the fused step ops: DDPM's ancestral sampling, DDIM, Euler, Heun and
DPM-Solver++(2M), and annealed Langevin dynamics.

A loop keeps its schedule on the device of the samples and hands each step its schedule values
as per-example tensors, so it never reads a number back to the host: on a GPU the whole loop
can be captured in one CUDA graph. Noise is drawn inside the step kernels from seeds taken from
`generator`, which should live on the CPU (a seed drawn from a CUDA generator would synchronise).

`denoiser(x, t)` is the model: x (N, ...) and t (N,) int64 indices into the schedule (0 is the
least noisy step); it returns the prediction the step expects ("eps", "x0" or "v"). With
`guidance_scale`, it returns the pair (conditional, unconditional) of outputs, which the step
combines as u + guidance_scale · (c − u) in the same pass (classifier-free guidance, Ho &
Salimans, 2022).

Euler, Heun and DPM-Solver++(2M) run in the σ form x = x0 + σ ε of Karras et al. (2022), on
the same discrete variance-preserving model: σ_t = sqrt((1 − ᾱ_t)/ᾱ_t), and the model sees
x / sqrt(1 + σ²), its own x_t.
"""

import torch
from tqdm import tqdm

from gdm_engine import ops

from .schedules import sigmas_from_alpha_bars, spaced_timesteps, timestep_spacing

PREDICTIONS = ("eps", "x0", "v")


def _start(shape, generator, device):
    """x_T ~ N(0, I): drawn on the generator's device, moved to the samples' device."""
    drawn_on = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=drawn_on).to(device)


def _per_example(value, n):
    """A 0-d schedule tensor as the (N,) tensor the step ops take, without a host read."""
    return value.reshape(1).expand(n)


def _steps(count, progress, desc):
    return tqdm(range(count), desc=desc, unit="step", disable=not progress, leave=False)


def _evaluate(denoiser, x, t, guidance_scale):
    """(model output, unconditional output or None) at x and the (N,) indices t."""
    output = denoiser(x, t)
    if guidance_scale is None:
        return output, None
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        raise ValueError("with guidance_scale the denoiser must return the pair (conditional, "
                         "unconditional) of outputs")
    return output


def _guidance(guidance_scale):
    """The step ops' guidance_scale: 1.0 (unused) without guidance."""
    return 1.0 if guidance_scale is None else guidance_scale


def _indices(t, n, device):
    return torch.full((n,), t, device=device, dtype=torch.long)


def ddpm_sample(denoiser, shape, alpha_bars, *, generator=None, device=None, prediction="eps",
                variance="fixed_small", clip=None, guidance_scale=None, progress=False):
    """Ancestral sampling (Ho et al., 2020, Algorithm 2) through every step of the schedule
    `alpha_bars` (T,), from x_T ~ N(0, I) to x_0; each step is one fused `ops.ddpm_step`."""
    device = torch.device(device) if device is not None else alpha_bars.device
    alpha_bars = alpha_bars.to(device, non_blocking=True)  # no synchronisation
    n = shape[0]
    x = _start(shape, generator, device)
    one = torch.ones((), device=device, dtype=alpha_bars.dtype)
    count = len(alpha_bars)
    for i in _steps(count, progress, "ddpm"):
        t = count - 1 - i
        prev = alpha_bars[t - 1] if t > 0 else one
        output, uncond = _evaluate(denoiser, x, _indices(t, n, device), guidance_scale)
        x = ops.ddpm_step(x, output, _per_example(alpha_bars[t], n), _per_example(prev, n),
                          prediction=prediction, variance=variance, clip=clip, uncond=uncond,
                          guidance_scale=_guidance(guidance_scale), generator=generator)
    return x


def ddim_sample(denoiser, shape, alpha_bars, steps, *, eta=0.0, generator=None, device=None,
                prediction="eps", clip=None, guidance_scale=None, progress=False):
    """DDIM (Song et al., 2021, eq. 12) on `steps` evenly spaced steps of the schedule
    `alpha_bars` (T,): deterministic with eta = 0, DDPM-like with eta = 1."""
    device = torch.device(device) if device is not None else alpha_bars.device
    alpha_bars = alpha_bars.to(device, non_blocking=True)  # no synchronisation
    n = shape[0]
    x = _start(shape, generator, device)
    times = spaced_timesteps(len(alpha_bars), steps).tolist()  # on the host: no device read
    one = torch.ones((), device=device, dtype=alpha_bars.dtype)
    for i in _steps(len(times), progress, "ddim"):
        t = times[i]
        prev = alpha_bars[times[i + 1]] if i + 1 < len(times) else one
        output, uncond = _evaluate(denoiser, x, _indices(t, n, device), guidance_scale)
        x = ops.ddim_step(x, output, _per_example(alpha_bars[t], n), _per_example(prev, n),
                          eta=eta, prediction=prediction, clip=clip, uncond=uncond,
                          guidance_scale=_guidance(guidance_scale), generator=generator)
    return x


class _SigmaForm:
    """A discrete VP denoiser seen in the σ form: the levels σ_t, the model evaluated at x of noise
    level σ (its input scaled to x / sqrt(1 + σ²)), and the start x ~ N(0, (1 + σ_max²) I)."""

    def __init__(self, denoiser, alpha_bars, steps, spacing, device, guidance_scale):
        self.denoiser, self.guidance_scale, self.device = denoiser, guidance_scale, device
        self.times = timestep_spacing(alpha_bars, steps, spacing)  # host ints, before the loop
        # a CPU schedule goes over without a synchronisation (an asynchronous copy)
        self.sigmas = sigmas_from_alpha_bars(alpha_bars).to(device, non_blocking=True)
        self.zero = self.sigmas.new_zeros(())

    def sigma(self, i):
        """σ of the i-th step, 0 past the last."""
        return self.sigmas[self.times[i]] if i < len(self.times) else self.zero

    def start(self, shape, generator):
        return _start(shape, generator, self.device) * (1 + self.sigma(0).square()).sqrt()

    def __call__(self, x, sigma, t):
        """The model's (output, uncond) at x of level sigma (0-d), its indices t (N,)."""
        return _evaluate(self.denoiser, x * (1 + sigma.square()).rsqrt(), t, self.guidance_scale)

    def lifted(self, i, churn):
        """(σ̂, t̂): step i's level raised by churn, and the model's nearest level to it."""
        if not churn:
            return self.sigma(i), self.times[i]
        raised = self.sigma(i) * (1 + churn)
        nearest = torch.searchsorted(self.sigmas, raised.reshape(1)).clamp(max=len(self.sigmas) - 1)
        return raised, nearest


def _check_sigma_form(prediction, churn):
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if isinstance(churn, bool) or not isinstance(churn, (int, float)) or not churn >= 0:
        raise ValueError(f"churn must be a float >= 0, got {churn!r}")


def _karras_loop(second_order, denoiser, shape, alpha_bars, steps, spacing, churn, generator,
                 device, prediction, guidance_scale, progress, desc):
    """Karras et al. (2022), Algorithm 2 (Algorithm 1 without the correction, or with churn 0)."""
    _check_sigma_form(prediction, churn)
    device = torch.device(device) if device is not None else alpha_bars.device
    form = _SigmaForm(denoiser, alpha_bars, steps, spacing, device, guidance_scale)
    n = shape[0]
    x = form.start(shape, generator)
    sigma, t = form.lifted(0, churn)
    if churn:  # x_T at σ_max lifted to σ̂_0: more noise of the same kind
        x = x * (1 + sigma.square()).sqrt() / (1 + form.sigma(0).square()).sqrt()
    common = dict(prediction=prediction, guidance_scale=_guidance(guidance_scale))
    for i in _steps(len(form.times), progress, desc):
        sigma_next = form.sigma(i + 1)
        last = i + 1 == len(form.times)
        step_churn = 0.0 if last else churn
        output, uncond = form(x, sigma, _indices(t, n, device) if isinstance(t, int)
                              else t.expand(n))
        s, s_next = _per_example(sigma, n), _per_example(sigma_next, n)
        if second_order and not last:
            euler = ops.euler_step(x, output, s, s_next, uncond=uncond, **common)
            output_next, uncond_next = form(euler, sigma_next,
                                            _indices(form.times[i + 1], n, device))
            x = ops.heun_step(x, output, output_next, s, s_next, churn=step_churn, uncond=uncond,
                              uncond_next=uncond_next, generator=generator, **common)
        else:
            x = ops.euler_step(x, output, s, s_next, churn=step_churn, uncond=uncond,
                               generator=generator, **common)
        if not last:
            sigma, t = form.lifted(i + 1, step_churn)
    return x


def euler_sample(denoiser, shape, alpha_bars, steps, *, spacing="logsnr", churn=0.0, generator=None,
                 device=None, prediction="eps", guidance_scale=None, progress=False):
    """Euler's method on the probability-flow ODE (Karras et al., 2022, Algorithm 1) over `steps`
    steps of the schedule `alpha_bars` placed by `spacing` (schedules.timestep_spacing: "logsnr",
    "karras" or "uniform"), one model evaluation each; with churn
    γ > 0, the stochastic sampler of their Algorithm 2 (first order): each level σ is raised to
    σ (1 + γ) by fresh noise, and the model is evaluated at its nearest level."""
    return _karras_loop(False, denoiser, shape, alpha_bars, steps, spacing, churn, generator,
                        device, prediction, guidance_scale, progress, "euler")


def heun_sample(denoiser, shape, alpha_bars, steps, *, spacing="logsnr", churn=0.0, generator=None,
                device=None, prediction="eps", guidance_scale=None, progress=False):
    """Heun's second-order method (Karras et al., 2022, Algorithm 2): as `euler_sample` with a
    correction at every step but the last, 2 · steps − 1 model evaluations."""
    return _karras_loop(True, denoiser, shape, alpha_bars, steps, spacing, churn, generator,
                        device, prediction, guidance_scale, progress, "heun")


def dpmpp_2m_sample(denoiser, shape, alpha_bars, steps, *, spacing="logsnr", generator=None,
                    device=None, prediction="eps", guidance_scale=None, progress=False):
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2): second-order multistep in the σ form,
    reusing the previous step's denoised estimate, so `steps` model evaluations; first order on
    the first and the last step."""
    _check_sigma_form(prediction, 0.0)
    device = torch.device(device) if device is not None else alpha_bars.device
    form = _SigmaForm(denoiser, alpha_bars, steps, spacing, device, guidance_scale)
    n = shape[0]
    x = form.start(shape, generator)
    previous, sigma_prev = None, None
    for i in _steps(len(form.times), progress, "dpm++2m"):
        sigma = form.sigma(i)
        output, uncond = form(x, sigma, _indices(form.times[i], n, device))
        x, denoised = ops.dpmpp_2m_step(x, output, _per_example(sigma, n),
                                        _per_example(form.sigma(i + 1), n),
                                        previous_denoised=previous, sigma_prev=sigma_prev,
                                        prediction=prediction, uncond=uncond,
                                        guidance_scale=_guidance(guidance_scale))
        previous, sigma_prev = denoised, _per_example(sigma, n)
    return x


SAMPLERS = {"ddpm": ddpm_sample, "ddim": ddim_sample, "euler": euler_sample,
            "heun": heun_sample, "dpmpp_2m": dpmpp_2m_sample}


def sample(denoiser, shape, alpha_bars, sampler="ddpm", steps=None, **kwargs):
    """Any of SAMPLERS by name: "ddpm" runs every step of the schedule (steps None or
    len(alpha_bars)); the others take `steps` (default 50, or every step of a shorter
    schedule). kwargs go to the sampler."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "ddpm":
        if steps not in (None, len(alpha_bars)):
            raise ValueError(f"the ddpm sampler runs all {len(alpha_bars)} steps; use ddim, "
                             f"euler, heun or dpmpp_2m for {steps}")
        return ddpm_sample(denoiser, shape, alpha_bars, **kwargs)
    steps = min(50, len(alpha_bars)) if steps is None else steps
    return SAMPLERS[sampler](denoiser, shape, alpha_bars, steps, **kwargs)


def annealed_langevin_sample(score, shape, sigmas, *, steps_per_level=100, epsilon=2e-5,
                             generator=None, device=None, start=None, progress=False):
    """Annealed Langevin dynamics (Song & Ermon, 2019, Algorithm 1): for each noise level σ_i of
    the decreasing `sigmas` (L,), `steps_per_level` unadjusted Langevin steps (`ops.langevin_step`)
    with step size epsilon · σ_i² / σ_L², on the score `score(x, i)` of the data blurred at σ_i
    (i an (N,) int64 index into sigmas). Starts from `start`, or N(0, σ_1² I)."""
    device = torch.device(device) if device is not None else sigmas.device
    sigmas = sigmas.to(device)
    n = shape[0]
    x = start.to(device) if start is not None else sigmas[0] * _start(shape, generator, device)
    sizes = epsilon * sigmas.square() / sigmas[-1].square()
    for level in _steps(len(sigmas), progress, "langevin"):
        index = torch.full((n,), level, device=device, dtype=torch.long)
        size = _per_example(sizes[level], n)
        for _ in range(steps_per_level):
            x = ops.langevin_step(x, score(x, index), size, generator=generator)
    return x
