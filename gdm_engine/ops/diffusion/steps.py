"""The sampler steps: DDPM, DDIM, Euler, Heun, DPM-Solver++(2M) and Langevin. Each is a
`torch.library.custom_op` with a fake implementation and no autograd (forward only), its
`<step>_library_inputs` (the registered op's arguments for a checked call) and the public
function, which validates its inputs on the host and calls the registered op."""

import math
from typing import Any, Optional, Union

import torch

from gdm_engine import backend
from gdm_engine._random import noise_seed
from gdm_engine._validation import check_choice, check_shape_of
from gdm_engine.reference import diffusion as ref

from ..outputs import DPMSolverOutput
from .checks import (
    _check_churn,
    _check_denoising,
    _check_float,
    _check_order,
    _check_pair,
    _check_schedule,
    _check_sigmas,
    _is_float,
    _optional_float,
)
from .coefficients import _churn_level, _merged, schedule_arguments
from .launch import _reference_output, _seed, _shaped_like_input, _step

VARIANCES = ("fixed_small", "fixed_large")


# --------------------------------------------------------------------------------------------------
# registered ops (unchecked: call the public functions, which validate first)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("gdm_engine::ddpm_step", mutates_args=())
def ddpm_library_op(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    noise: Optional[torch.Tensor],
    uncond: Optional[torch.Tensor],
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Optional[float] = None,
    threshold: Optional[float] = None,
    guidance_scale: float = 1.0,
    seed: int = 0,
    draw: bool = True,
) -> torch.Tensor:
    """The registered ddpm_step: schedule (ᾱ_t, ᾱ_prev) as `schedule_arguments`; `draw`: the
    kernel draws z from `seed` (no noise given, σ not known to be 0)."""
    a, a_prev = _merged(schedule, values)
    if backend.resolve(x_t) != "triton":
        return _reference_output(
            ref.ddpm_step(
                x_t,
                model_output,
                a,
                a_prev,
                noise,
                uncond,
                prediction=prediction,
                variance=variance,
                clip=clip,
                threshold=threshold,
                guidance_scale=guidance_scale,
                seed=seed,
            ),
            x_t,
        )
    return _step(
        "ddpm",
        x_t,
        model_output,
        (a, a_prev),
        noise=noise,
        uncond=uncond,
        threshold=threshold,
        prediction=prediction,
        fixed_large=variance == "fixed_large",
        clip=clip,
        guidance_scale=guidance_scale,
        seed=_seed(draw, seed),
    )


ddpm_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::ddim_step", mutates_args=())
def ddim_library_op(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    noise: Optional[torch.Tensor],
    uncond: Optional[torch.Tensor],
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    eta: float = 0.0,
    prediction: str = "eps",
    clip: Optional[float] = None,
    threshold: Optional[float] = None,
    use_clipped_model_output: bool = False,
    guidance_scale: float = 1.0,
    seed: int = 0,
    draw: bool = True,
) -> torch.Tensor:
    """The registered ddim_step: schedule (ᾱ_t, ᾱ_prev) as `schedule_arguments`."""
    a, a_prev = _merged(schedule, values)
    if backend.resolve(x_t) != "triton":
        return _reference_output(
            ref.ddim_step(
                x_t,
                model_output,
                a,
                a_prev,
                noise,
                uncond,
                eta=eta,
                prediction=prediction,
                clip=clip,
                threshold=threshold,
                use_clipped_model_output=use_clipped_model_output,
                guidance_scale=guidance_scale,
                seed=seed,
            ),
            x_t,
        )
    return _step(
        "ddim",
        x_t,
        model_output,
        (a, a_prev),
        noise=noise,
        uncond=uncond,
        threshold=threshold,
        prediction=prediction,
        eta=eta,
        clip=clip,
        clipped_eps=use_clipped_model_output,
        guidance_scale=guidance_scale,
        seed=_seed(draw, seed),
    )


ddim_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::euler_step", mutates_args=())
def euler_library_op(
    x: torch.Tensor,
    model_output: torch.Tensor,
    noise: Optional[torch.Tensor],
    uncond: Optional[torch.Tensor],
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    prediction: str = "eps",
    churn: float = 0.0,
    s_noise: float = 1.0,
    guidance_scale: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """The registered euler_step: schedule (σ, σ_next) as `schedule_arguments`."""
    sigma, sigma_next = _merged(schedule, values)
    if backend.resolve(x) != "triton":
        return _reference_output(
            ref.euler_step(
                x,
                model_output,
                sigma,
                sigma_next,
                noise,
                uncond,
                prediction=prediction,
                churn=churn,
                s_noise=s_noise,
                guidance_scale=guidance_scale,
                seed=seed,
            ),
            x,
        )
    return _step(
        "euler",
        x,
        model_output,
        (sigma, sigma_next),
        noise=noise,
        uncond=uncond,
        prediction=prediction,
        noise_level=_churn_level(churn, s_noise),
        guidance_scale=guidance_scale,
        seed=_seed(churn != 0, seed),
    )


euler_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::heun_step", mutates_args=())
def heun_library_op(
    x: torch.Tensor,
    model_output: torch.Tensor,
    model_output_next: torch.Tensor,
    noise: Optional[torch.Tensor],
    uncond: Optional[torch.Tensor],
    uncond_next: Optional[torch.Tensor],
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    prediction: str = "eps",
    churn: float = 0.0,
    s_noise: float = 1.0,
    guidance_scale: float = 1.0,
    seed: int = 0,
) -> torch.Tensor:
    """The registered heun_step: schedule (σ, σ_next) as `schedule_arguments`."""
    sigma, sigma_next = _merged(schedule, values)
    if backend.resolve(x) != "triton":
        return _reference_output(
            ref.heun_step(
                x,
                model_output,
                model_output_next,
                sigma,
                sigma_next,
                noise,
                uncond,
                uncond_next,
                prediction=prediction,
                churn=churn,
                s_noise=s_noise,
                guidance_scale=guidance_scale,
                seed=seed,
            ),
            x,
        )
    return _step(
        "heun",
        x,
        model_output,
        (sigma, sigma_next),
        noise=noise,
        uncond=uncond,
        second=model_output_next,
        uncond_second=uncond_next,
        prediction=prediction,
        noise_level=_churn_level(churn, s_noise),
        guidance_scale=guidance_scale,
        seed=_seed(churn != 0, seed),
    )


heun_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::dpmpp_2m_step", mutates_args=())
def dpmpp_2m_library_op(
    x: torch.Tensor,
    model_output: torch.Tensor,
    previous_denoised: Optional[torch.Tensor],
    uncond: Optional[torch.Tensor],
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    prediction: str = "eps",
    guidance_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered dpmpp_2m_step: schedule (σ, σ_next, σ_prev) as `schedule_arguments`
    (σ_prev unused without previous_denoised). Returns (x', denoised)."""
    sigma, sigma_next, sigma_prev = _merged(schedule, values)
    if backend.resolve(x) != "triton":
        out, d = ref.dpmpp_2m_step(
            x,
            model_output,
            sigma,
            sigma_next,
            previous_denoised,
            uncond,
            sigma_prev=sigma_prev if previous_denoised is not None else None,
            prediction=prediction,
            guidance_scale=guidance_scale,
        )
        # fresh tensors: the reference's D may be model_output itself ("x0")
        return _reference_output(out, x).clone(), _reference_output(d, x).clone()
    return _step(
        "dpmpp_2m",
        x,
        model_output,
        (sigma, sigma_next, sigma_prev),
        uncond=uncond,
        second=previous_denoised,
        second_output=True,
        prediction=prediction,
        guidance_scale=guidance_scale,
    )


@dpmpp_2m_library_op.register_fake
def _(x, *args, **kwargs):
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        torch.empty_like(x, memory_format=torch.contiguous_format),
    )


@torch.library.custom_op("gdm_engine::langevin_step", mutates_args=())
def langevin_library_op(
    x: torch.Tensor,
    score: torch.Tensor,
    noise: Optional[torch.Tensor],
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    seed: int = 0,
    draw: bool = True,
) -> torch.Tensor:
    """The registered langevin_step: the step size as `schedule_arguments`."""
    (step_size,) = _merged(schedule, values)
    if backend.resolve(x) != "triton":
        return _reference_output(ref.langevin_step(x, score, step_size, noise, seed=seed), x)
    return _step("langevin", x, score, (step_size,), noise=noise, seed=_seed(draw, seed))


langevin_library_op.register_fake(_shaped_like_input)


# --------------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------------


def _draws(noise, generator, *zero_noise):
    """(seed, draw): whether the kernel draws z (no noise given, and σ not known to be 0 from
    `zero_noise`), and the seed it draws from (taken from the generator only then)."""
    draw = noise is None and not any(zero_noise)
    return (noise_seed(noise, generator) if draw else 0), draw


def ddpm_library_inputs(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    alpha_bar_t: Union[float, torch.Tensor],
    alpha_bar_prev: Union[float, torch.Tensor],
    noise: Optional[torch.Tensor] = None,
    uncond: Optional[torch.Tensor] = None,
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Optional[float] = None,
    threshold: Optional[float] = None,
    guidance_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `ddpm_library_op` for a checked call of `ddpm_step`."""
    seed, draw = _draws(noise, generator, _is_float(alpha_bar_prev, 1))
    kwargs = dict(
        prediction=prediction,
        variance=variance,
        clip=_optional_float(clip),
        threshold=_optional_float(threshold),
        guidance_scale=float(guidance_scale),
        seed=seed,
        draw=draw,
    )
    return (
        x_t,
        model_output,
        noise,
        uncond,
        *schedule_arguments(alpha_bar_t, alpha_bar_prev),
    ), kwargs


def ddpm_step(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    alpha_bar_t: Union[float, torch.Tensor],
    alpha_bar_prev: Union[float, torch.Tensor],
    *,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Optional[float] = None,
    threshold: Optional[float] = None,
    uncond: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One DDPM ancestral step x_t -> x_{t−1} (Ho et al., 2020), fused in one pass.

    x_{t−1} = μ + σ z, the posterior q(x_{t−1} | x_t, x0) at the model's x0 (Ho et al., 2020,
    eq. 7), guidance combined in the same pass; no noise where alpha_bar_prev = 1 (the last
    step). A drawn z is reproducible per backend, not across them. Forward only (no autograd).

    Args:
        x_t: (N, ...) the noisy sample at step t.
        model_output: the model's prediction at x_t, shaped like x_t, its dtype and device.
        alpha_bar_t: ᾱ_t in (0, 1): a float, or a per-example (N,) tensor (float32 or x_t's
            dtype, on x_t's device).
        alpha_bar_prev: ᾱ_{t−1} in [alpha_bar_t, 1], the same kinds.
        prediction: what the model predicts: "eps" (the noise), "x0" or "v" (Salimans & Ho,
            2022).
        variance: "fixed_small" (β̃_t) or "fixed_large" (β_t).
        clip: > 0: x0 clipped to [−clip, clip]; None: not clipped.
        threshold: a quantile in (0, 1): x0 dynamically thresholded at that per-example
            quantile (Saharia et al., 2022); None: not thresholded.
        uncond: the model's unconditional output, shaped like model_output; with it the step
            uses the guided output uncond + guidance_scale · (model_output − uncond)
            (classifier-free guidance, Ho & Salimans, 2022). None: no guidance.
        guidance_scale: the guidance weight; must be 1 without uncond.
        noise: z, shaped like x_t (then kernel and reference agree); None: drawn by the
            running implementation from a seed taken from `generator`.
        generator: the source of that seed; None: torch's global generator. Not with `noise`.

    Returns:
        x_{t−1}, shaped like x_t, in its dtype.

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype than x_t, a
            schedule value neither a number nor a tensor (or of another dtype), a number
            argument not a number, or generator not a torch.Generator.
        ValueError: tensors of other shapes or devices, a schedule value outside its interval
            or alpha_bar_prev < alpha_bar_t, an unknown prediction or variance, clip ≤ 0,
            threshold outside (0, 1), guidance_scale ≠ 1 without uncond, or both noise and
            generator.
    """
    _check_denoising(
        x_t,
        model_output,
        alpha_bar_t,
        alpha_bar_prev,
        prediction,
        clip,
        threshold,
        noise,
        generator,
        uncond,
        guidance_scale,
    )
    check_choice("variance", variance, VARIANCES)
    args, kwargs = ddpm_library_inputs(
        x_t,
        model_output,
        alpha_bar_t,
        alpha_bar_prev,
        noise,
        uncond,
        prediction=prediction,
        variance=variance,
        clip=clip,
        threshold=threshold,
        guidance_scale=guidance_scale,
        generator=generator,
    )
    return ddpm_library_op(*args, **kwargs)


def ddim_library_inputs(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    alpha_bar_t: Union[float, torch.Tensor],
    alpha_bar_prev: Union[float, torch.Tensor],
    noise: Optional[torch.Tensor] = None,
    uncond: Optional[torch.Tensor] = None,
    *,
    eta: float = 0.0,
    prediction: str = "eps",
    clip: Optional[float] = None,
    threshold: Optional[float] = None,
    use_clipped_model_output: bool = False,
    guidance_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `ddim_library_op` for a checked call of `ddim_step`."""
    seed, draw = _draws(noise, generator, eta == 0, _is_float(alpha_bar_prev, 1))
    kwargs = dict(
        eta=float(eta),
        prediction=prediction,
        clip=_optional_float(clip),
        threshold=_optional_float(threshold),
        use_clipped_model_output=bool(use_clipped_model_output),
        guidance_scale=float(guidance_scale),
        seed=seed,
        draw=draw,
    )
    return (
        x_t,
        model_output,
        noise,
        uncond,
        *schedule_arguments(alpha_bar_t, alpha_bar_prev),
    ), kwargs


def ddim_step(
    x_t: torch.Tensor,
    model_output: torch.Tensor,
    alpha_bar_t: Union[float, torch.Tensor],
    alpha_bar_prev: Union[float, torch.Tensor],
    *,
    eta: float = 0.0,
    prediction: str = "eps",
    clip: Optional[float] = None,
    threshold: Optional[float] = None,
    use_clipped_model_output: bool = False,
    uncond: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One DDIM step x_t -> x_{t−1} (Song et al., 2021, eq. 12), fused in one pass.

    Arguments as `ddpm_step`; eta ≥ 0 scales the noise: 0 is deterministic DDIM, 1 matches
    DDPM's posterior variance. x_{t−1} = sqrt(ᾱ_prev) x0 + sqrt(1 − ᾱ_prev − σ²) ε̂ + σ z with
    σ = eta sqrt((1 − ᾱ_prev)/(1 − ᾱ_t)) sqrt(1 − ᾱ_t/ᾱ_prev). With clip or threshold, x0 is
    clamped but ε̂ stays the model's (the one implied by the unclamped x0), as in the DDIM
    authors' code and diffusers' DDIMScheduler; `use_clipped_model_output=True` derives ε̂ from
    the clamped x0 instead (diffusers' option of that name). Forward only (no autograd).

    Args:
        x_t: (N, ...) the noisy sample at step t.
        model_output: the model's prediction at x_t, shaped like x_t, its dtype and device.
        alpha_bar_t: ᾱ_t in (0, 1): a float or a per-example (N,) tensor, as in `ddpm_step`.
        alpha_bar_prev: ᾱ_prev in [alpha_bar_t, 1], the same kinds.
        eta: ≥ 0, the scale of the noise (0: deterministic).
        prediction: "eps", "x0" or "v".
        clip: > 0: x0 clipped to [−clip, clip]; None: not clipped.
        threshold: a quantile in (0, 1) for dynamic thresholding; None: none.
        use_clipped_model_output: derive ε̂ from the clamped x0.
        uncond: the model's unconditional output, shaped like model_output; with it the step
            uses the guided output uncond + guidance_scale · (model_output − uncond)
            (classifier-free guidance, Ho & Salimans, 2022). None: no guidance.
        guidance_scale: the guidance weight; must be 1 without uncond.
        noise: z, shaped like x_t; None: drawn from a seed taken from `generator` (unused
            when eta = 0).
        generator: the source of that seed; None: torch's global generator. Not with `noise`.

    Returns:
        x_{t−1}, shaped like x_t, in its dtype.

    Raises:
        TypeError: as `ddpm_step`.
        ValueError: as `ddpm_step` (but for variance), and eta < 0.
    """
    _check_denoising(
        x_t,
        model_output,
        alpha_bar_t,
        alpha_bar_prev,
        prediction,
        clip,
        threshold,
        noise,
        generator,
        uncond,
        guidance_scale,
    )
    _check_float("eta", eta, 0.0)
    args, kwargs = ddim_library_inputs(
        x_t,
        model_output,
        alpha_bar_t,
        alpha_bar_prev,
        noise,
        uncond,
        eta=eta,
        prediction=prediction,
        clip=clip,
        threshold=threshold,
        use_clipped_model_output=use_clipped_model_output,
        guidance_scale=guidance_scale,
        generator=generator,
    )
    return ddim_library_op(*args, **kwargs)


def euler_library_inputs(
    x: torch.Tensor,
    model_output: torch.Tensor,
    sigma: Union[float, torch.Tensor],
    sigma_next: Union[float, torch.Tensor],
    noise: Optional[torch.Tensor] = None,
    uncond: Optional[torch.Tensor] = None,
    *,
    prediction: str = "eps",
    churn: float = 0.0,
    s_noise: float = 1.0,
    guidance_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `euler_library_op` for a checked call of `euler_step`."""
    seed, _ = _draws(noise, generator, churn == 0)
    kwargs = dict(
        prediction=prediction,
        churn=float(churn),
        s_noise=float(s_noise),
        guidance_scale=float(guidance_scale),
        seed=seed,
    )
    return (x, model_output, noise, uncond, *schedule_arguments(sigma, sigma_next)), kwargs


def euler_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    sigma: Union[float, torch.Tensor],
    sigma_next: Union[float, torch.Tensor],
    *,
    prediction: str = "eps",
    churn: float = 0.0,
    s_noise: float = 1.0,
    uncond: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One Euler step of the probability-flow ODE in the σ form x = x0 + σ ε (Karras et al.,
    2022, Algorithms 1-2), fused in one pass: x' = x + (σ_next − σ) (x − D) / σ, where
    D = x − σ ε̂ ("eps"), the model's x0 ("x0"), or x/(1+σ²) − σ/sqrt(1+σ²) v̂ ("v", v of the
    VP-scaled input x/sqrt(1+σ²)). sigma > 0 and 0 <= sigma_next <= sigma: floats or (N,)
    tensors. churn γ >= 0 (Karras et al. cap it at sqrt(2) − 1) lifts the result to the next
    step's level σ̂ = σ_next (1 + γ) with s_noise · sqrt(σ̂² − σ_next²) z (Algorithm 2, lines
    5-6, of the next step, fused here): evaluate the model next at σ̂. Guidance and z as in
    `ddpm_step`. Forward only (no autograd).

    Args:
        x: (N, ...) the sample at level σ, in the σ form.
        model_output: the model's prediction at (x, σ), shaped like x, its dtype and device.
        sigma: σ > 0: a float or a per-example (N,) tensor (float32 or x's dtype, on x's
            device).
        sigma_next: σ_next in [0, sigma], the same kinds.
        prediction: "eps", "x0" or "v".
        churn: γ ≥ 0; 0: the deterministic step (no noise).
        s_noise: ≥ 0, the scale of the churn's noise.
        uncond: the model's unconditional output, shaped like model_output; with it the step
            uses the guided output uncond + guidance_scale · (model_output − uncond)
            (classifier-free guidance, Ho & Salimans, 2022). None: no guidance.
        guidance_scale: the guidance weight; must be 1 without uncond.
        noise: z, shaped like x (used where churn > 0); None: drawn from a seed taken from
            `generator`.
        generator: the source of that seed; None: torch's global generator. Not with `noise`.

    Returns:
        x', shaped like x, in its dtype.

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype than x, a
            schedule value neither a number nor a tensor (or of another dtype), a number
            argument not a number, or generator not a torch.Generator.
        ValueError: tensors of other shapes or devices, sigma ≤ 0, sigma_next < 0 or
            > sigma, an unknown prediction, churn or s_noise < 0 or not finite,
            guidance_scale ≠ 1 without uncond, or both noise and generator.
    """
    _check_pair("x", x, "model_output", model_output, noise, generator, uncond=uncond)
    _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale)
    _check_churn(churn, s_noise)
    args, kwargs = euler_library_inputs(
        x,
        model_output,
        sigma,
        sigma_next,
        noise,
        uncond,
        prediction=prediction,
        churn=churn,
        s_noise=s_noise,
        guidance_scale=guidance_scale,
        generator=generator,
    )
    return euler_library_op(*args, **kwargs)


def heun_library_inputs(
    x: torch.Tensor,
    model_output: torch.Tensor,
    model_output_next: torch.Tensor,
    sigma: Union[float, torch.Tensor],
    sigma_next: Union[float, torch.Tensor],
    noise: Optional[torch.Tensor] = None,
    uncond: Optional[torch.Tensor] = None,
    uncond_next: Optional[torch.Tensor] = None,
    *,
    prediction: str = "eps",
    churn: float = 0.0,
    s_noise: float = 1.0,
    guidance_scale: float = 1.0,
    generator: Optional[torch.Generator] = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `heun_library_op` for a checked call of `heun_step`."""
    seed, _ = _draws(noise, generator, churn == 0)
    kwargs = dict(
        prediction=prediction,
        churn=float(churn),
        s_noise=float(s_noise),
        guidance_scale=float(guidance_scale),
        seed=seed,
    )
    return (
        x,
        model_output,
        model_output_next,
        noise,
        uncond,
        uncond_next,
        *schedule_arguments(sigma, sigma_next),
    ), kwargs


def heun_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    model_output_next: torch.Tensor,
    sigma: Union[float, torch.Tensor],
    sigma_next: Union[float, torch.Tensor],
    *,
    prediction: str = "eps",
    churn: float = 0.0,
    s_noise: float = 1.0,
    uncond: Optional[torch.Tensor] = None,
    uncond_next: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """Heun's second-order step (Karras et al., 2022, Algorithm 2, lines 7-11), fused in one pass:
    `model_output` is the model at (x, σ), `model_output_next` the model at the Euler point
    x_e = euler_step(x, model_output, σ, σ_next) and σ_next, which the kernel recomputes rather
    than reads; x' = x + (σ_next − σ) (d + d') / 2. sigma_next > 0 (a last step to 0 is Euler's).
    uncond / uncond_next guide the two outputs with one guidance_scale. Churn, prediction and z
    as in `euler_step`. Forward only (no autograd).

    Args:
        x: (N, ...) the sample at level σ, in the σ form.
        model_output: the model's prediction at (x, σ), shaped like x, its dtype and device.
        model_output_next: the model's prediction at the Euler point and σ_next, the same.
        sigma: σ > 0: a float or a per-example (N,) tensor, as in `euler_step`.
        sigma_next: σ_next in (0, sigma], the same kinds.
        prediction: "eps", "x0" or "v".
        churn: γ ≥ 0, as in `euler_step`.
        s_noise: ≥ 0, the scale of the churn's noise.
        uncond: the unconditional output at (x, σ); None: no guidance.
        uncond_next: the unconditional output at the Euler point; given with uncond only.
        guidance_scale: the guidance weight; must be 1 without uncond.
        noise: z, shaped like x (used where churn > 0); None: drawn from a seed taken from
            `generator`.
        generator: the source of that seed; None: torch's global generator. Not with `noise`.

    Returns:
        x', shaped like x, in its dtype.

    Raises:
        TypeError: as `euler_step`.
        ValueError: as `euler_step`, sigma_next = 0, or only one of uncond and uncond_next.
    """
    _check_pair(
        "x",
        x,
        "model_output",
        model_output,
        noise,
        generator,
        uncond=uncond,
        uncond_next=uncond_next,
    )
    check_shape_of("model_output_next", model_output_next, "x", x)
    _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale, next_positive=True)
    if (uncond is None) != (uncond_next is None):
        raise ValueError(
            "uncond and uncond_next go together: guidance needs the unconditional "
            "output at both points"
        )
    _check_churn(churn, s_noise)
    args, kwargs = heun_library_inputs(
        x,
        model_output,
        model_output_next,
        sigma,
        sigma_next,
        noise,
        uncond,
        uncond_next,
        prediction=prediction,
        churn=churn,
        s_noise=s_noise,
        guidance_scale=guidance_scale,
        generator=generator,
    )
    return heun_library_op(*args, **kwargs)


def dpmpp_2m_library_inputs(
    x: torch.Tensor,
    model_output: torch.Tensor,
    sigma: Union[float, torch.Tensor],
    sigma_next: Union[float, torch.Tensor],
    previous_denoised: Optional[torch.Tensor] = None,
    uncond: Optional[torch.Tensor] = None,
    *,
    sigma_prev: Optional[Union[float, torch.Tensor]] = None,
    prediction: str = "eps",
    guidance_scale: float = 1.0,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `dpmpp_2m_library_op` for a checked call of `dpmpp_2m_step`."""
    prev = sigma_prev if sigma_prev is not None else 1.0  # unused on a first-order step
    return (
        x,
        model_output,
        previous_denoised,
        uncond,
        *schedule_arguments(sigma, sigma_next, prev),
    ), dict(prediction=prediction, guidance_scale=float(guidance_scale))


def dpmpp_2m_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    sigma: Union[float, torch.Tensor],
    sigma_next: Union[float, torch.Tensor],
    *,
    previous_denoised: Optional[torch.Tensor] = None,
    sigma_prev: Optional[Union[float, torch.Tensor]] = None,
    prediction: str = "eps",
    uncond: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
) -> DPMSolverOutput:
    """One DPM-Solver++(2M) step (Lu et al., 2022, Algorithm 2) in the σ form, fused in one pass:
    x' = (σ_next/σ) x + (1 − σ_next/σ) D̄ with D̄ = (1 + 1/2r) D − D_prev/2r, r = h_prev/h,
    h = log(σ/σ_next), h_prev = log(sigma_prev/σ); first order (D̄ = D) without
    previous_denoised and where σ_next = 0. Returns DPMSolverOutput(x', D), D = D(x; σ) of this
    step: pass it as the next step's previous_denoised, with this σ as its sigma_prev.
    Prediction and guidance as in `euler_step`. Deterministic; forward only (no autograd).

    Args:
        x: (N, ...) the sample at level σ, in the σ form.
        model_output: the model's prediction at (x, σ), shaped like x, its dtype and device.
        sigma: σ > 0: a float or a per-example (N,) tensor, as in `euler_step`.
        sigma_next: σ_next in [0, sigma], the same kinds.
        previous_denoised: the previous step's D, shaped like x; None: a first-order step.
        sigma_prev: the previous step's σ (> sigma), given with previous_denoised only.
        prediction: "eps", "x0" or "v".
        uncond: the model's unconditional output, shaped like model_output; with it the step
            uses the guided output uncond + guidance_scale · (model_output − uncond)
            (classifier-free guidance, Ho & Salimans, 2022). None: no guidance.
        guidance_scale: the guidance weight; must be 1 without uncond.

    Returns:
        DPMSolverOutput(x, denoised): x' and D, both shaped like x, in its dtype.

    Raises:
        TypeError: as `euler_step`.
        ValueError: as `euler_step`, only one of previous_denoised and sigma_prev, or
            sigma_prev ≤ sigma.
    """
    _check_pair(
        "x",
        x,
        "model_output",
        model_output,
        None,
        None,
        uncond=uncond,
        previous_denoised=previous_denoised,
    )
    _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale)
    if (previous_denoised is None) != (sigma_prev is None):
        raise ValueError(
            "previous_denoised and sigma_prev go together: the second-order step "
            "needs the previous estimate and its noise level"
        )
    if sigma_prev is not None:
        _check_schedule("sigma_prev", sigma_prev, x, 0, math.inf, high_open=True)
        _check_order(
            "sigma", sigma, "sigma_prev", sigma_prev, "the noise level decreases", strict=True
        )
    args, kwargs = dpmpp_2m_library_inputs(
        x,
        model_output,
        sigma,
        sigma_next,
        previous_denoised,
        uncond,
        sigma_prev=sigma_prev,
        prediction=prediction,
        guidance_scale=guidance_scale,
    )
    return DPMSolverOutput(*dpmpp_2m_library_op(*args, **kwargs))


def langevin_library_inputs(
    x: torch.Tensor,
    score: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    noise: Optional[torch.Tensor] = None,
    *,
    generator: Optional[torch.Generator] = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `langevin_library_op` for a checked call of `langevin_step`."""
    seed, draw = _draws(noise, generator, _is_float(step_size, 0))
    return (x, score, noise, *schedule_arguments(step_size)), dict(seed=seed, draw=draw)


def langevin_step(
    x: torch.Tensor,
    score: torch.Tensor,
    step_size: Union[float, torch.Tensor],
    *,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One step of unadjusted Langevin dynamics, fused in one pass:
    x + step_size / 2 · score + sqrt(step_size) · z (Song & Ermon, 2019, eq. 4).

    z as in `ddpm_step`. Forward only (no autograd).

    Args:
        x: (N, ...) the current sample.
        score: the score ∇_x log p at x, shaped like x, its dtype and device.
        step_size: ≥ 0: a float or a per-example (N,) tensor (float32 or x's dtype, on x's
            device); 0 adds no noise.
        noise: z, shaped like x; None: drawn from a seed taken from `generator`.
        generator: the source of that seed; None: torch's global generator. Not with `noise`.

    Returns:
        The next sample, shaped like x, in its dtype.

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype than x,
            step_size neither a number nor a tensor (or of another dtype), or generator not
            a torch.Generator.
        ValueError: tensors of other shapes or devices, step_size < 0 or not finite, or both
            noise and generator.
    """
    _check_pair("x", x, "score", score, noise, generator)
    _check_schedule("step_size", step_size, x, 0, math.inf, low_open=False, high_open=True)
    args, kwargs = langevin_library_inputs(x, score, step_size, noise, generator=generator)
    return langevin_library_op(*args, **kwargs)
