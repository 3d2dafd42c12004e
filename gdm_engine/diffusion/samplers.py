"""Sampler loops over the fused step ops: DDPM's ancestral sampling, DDIM, and annealed Langevin
dynamics.

A loop keeps its schedule on the device of the samples and hands each step its schedule values
as per-example tensors, so it never reads a number back to the host: on a GPU the whole loop
can be captured in one CUDA graph. Noise is drawn inside the step kernels from seeds taken from
`generator`, which should live on the CPU (a seed drawn from a CUDA generator would synchronise).

`denoiser(x, t)` is the model: x (N, ...) and t (N,) int64 indices into the schedule (0 is the
least noisy step); it returns the prediction the step expects ("eps", "x0" or "v").
"""

import torch
from tqdm import tqdm

from gdm_engine import ops

from .schedules import spaced_timesteps


def _start(shape, generator, device):
    """x_T ~ N(0, I): drawn on the generator's device, moved to the samples' device."""
    drawn_on = generator.device if generator is not None else device
    return torch.randn(shape, generator=generator, device=drawn_on).to(device)


def _per_example(value, n):
    """A 0-d schedule tensor as the (N,) tensor the step ops take, without a host read."""
    return value.reshape(1).expand(n)


def _steps(count, progress, desc):
    return tqdm(range(count), desc=desc, unit="step", disable=not progress, leave=False)


def ddpm_sample(denoiser, shape, alpha_bars, *, generator=None, device=None, prediction="eps",
                variance="fixed_small", clip=None, progress=False):
    """Ancestral sampling (Ho et al., 2020, Algorithm 2) through every step of the schedule
    `alpha_bars` (T,), from x_T ~ N(0, I) to x_0; each step is one fused `ops.ddpm_step`."""
    device = torch.device(device) if device is not None else alpha_bars.device
    alpha_bars = alpha_bars.to(device)
    n = shape[0]
    x = _start(shape, generator, device)
    one = torch.ones((), device=device, dtype=alpha_bars.dtype)
    count = len(alpha_bars)
    for i in _steps(count, progress, "ddpm"):
        t = count - 1 - i
        prev = alpha_bars[t - 1] if t > 0 else one
        output = denoiser(x, torch.full((n,), t, device=device, dtype=torch.long))
        x = ops.ddpm_step(x, output, _per_example(alpha_bars[t], n), _per_example(prev, n),
                          prediction=prediction, variance=variance, clip=clip,
                          generator=generator)
    return x


def ddim_sample(denoiser, shape, alpha_bars, steps, *, eta=0.0, generator=None, device=None,
                prediction="eps", clip=None, progress=False):
    """DDIM (Song et al., 2021, eq. 12) on `steps` evenly spaced steps of the schedule
    `alpha_bars` (T,): deterministic with eta = 0, DDPM-like with eta = 1."""
    device = torch.device(device) if device is not None else alpha_bars.device
    alpha_bars = alpha_bars.to(device)
    n = shape[0]
    x = _start(shape, generator, device)
    times = spaced_timesteps(len(alpha_bars), steps).tolist()  # on the host: no device read
    one = torch.ones((), device=device, dtype=alpha_bars.dtype)
    for i in _steps(len(times), progress, "ddim"):
        t = times[i]
        prev = alpha_bars[times[i + 1]] if i + 1 < len(times) else one
        output = denoiser(x, torch.full((n,), t, device=device, dtype=torch.long))
        x = ops.ddim_step(x, output, _per_example(alpha_bars[t], n), _per_example(prev, n),
                          eta=eta, prediction=prediction, clip=clip, generator=generator)
    return x


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
