"""diffusion: the fused steps of the samplers (DDPM, DDIM, Euler, Heun, DPM-Solver++(2M),
Langevin) and the training side (q_sample, the loss).

Each op is a `torch.library.custom_op` with a fake implementation (the steps have no autograd;
q_sample and the loss do). The public functions validate their inputs on the host and call the
registered op, which launches exactly one Triton kernel (kernels/diffusion.py) or runs the
PyTorch reference (gdm_engine.backend). No device op besides the kernel and no read-back: the
kernel forms every coefficient from the schedule values itself — floats as float64 kernel
arguments, per-example tensors read once per row. Dynamic thresholding is the exception: its
per-example quantile is computed in torch (two kthvalue passes), a budget the catalog declares.
"""

import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch

from gdm_engine import backend
from gdm_engine._random import noise_seed
from gdm_engine._validation import (
    check_choice,
    check_noise_source,
    check_shape_of,
    check_tensor,
    host_values,
)
from gdm_engine.reference import diffusion as ref
from gdm_engine.reference.diffusion import PREDICTIONS

from ._autocast import autocast_inputs
from .outputs import DPMSolverOutput

VARIANCES = ("fixed_small", "fixed_large")


def _kernels():
    from gdm_engine.kernels import diffusion as kernels

    return kernels


def _rows(t):
    """(N, D) view (or copy, where no view exists) of an (N, ...) tensor; None stays None."""
    return t.reshape(t.shape[0], t.shape[1:].numel()) if t is not None else None


# --------------------------------------------------------------------------------------------------
# Schedule values reach the registered ops as two lists: `schedule`, the (N,) tensors (None for a
# float), and `values`, the floats. The kernel takes a float as a float64 argument and reads a
# tensor once per row, forming every coefficient itself (kernels/diffusion.py): no device op
# besides the kernel, and no float rounded to fp32 before 1 − ᾱ is taken.
# --------------------------------------------------------------------------------------------------


def schedule_arguments(
    *values: Union[float, torch.Tensor],
) -> tuple[list[Optional[torch.Tensor]], list[float]]:
    """(schedule, values) of the registered ops for floats and (N,) tensors."""
    return (
        [v if isinstance(v, torch.Tensor) else None for v in values],
        [0.0 if isinstance(v, torch.Tensor) else float(v) for v in values],
    )


def _merged(schedule, values):
    """The schedule values back as floats or tensors, in order."""
    return [t if t is not None else v for t, v in zip(schedule, values)]


def _reference_output(out, like):
    """The reference's result in the kernel's layout and dtype: contiguous, like x (the
    reference computes in at least fp32 where the schedule is a float or an fp32 tensor)."""
    return out.to(like.dtype).contiguous()


def _threshold_scale(kind, x, m, values, uncond, threshold, **options):
    """Dynamic thresholding's per-example s (Saharia et al., 2022), from the model's x0 that the
    step kernel writes: the quantile is torch's (kthvalue), the op's declared extra device work."""
    x0 = _kernels().diffusion_step(
        kind, _rows(x), _rows(m), values, uncond=_rows(uncond), output_x0=True, **options
    )
    return ref.threshold_scale(x0, threshold)


def _step(
    kind,
    x,
    m,
    values,
    *,
    noise=None,
    uncond=None,
    second=None,
    uncond_second=None,
    second_output=False,
    threshold=None,
    **options,
):
    """The step kernel on (N, D) views; outputs shaped like x."""
    scale = None
    if threshold is not None:
        scale = _threshold_scale(
            kind,
            x,
            m,
            values,
            uncond,
            threshold,
            prediction=options["prediction"],
            guidance_scale=options["guidance_scale"],
            clip=options["clip"],
        )
    out = _kernels().diffusion_step(
        kind,
        _rows(x),
        _rows(m),
        values,
        noise=_rows(noise),
        uncond=_rows(uncond),
        second=_rows(second),
        uncond_second=_rows(uncond_second),
        threshold_scale=scale,
        second_output=second_output,
        **options,
    )
    if second_output:
        return tuple(t.view(x.shape) for t in out)
    return out.view(x.shape)


def _shaped_like_input(x, *args, **kwargs):
    """The fake implementation of a step that returns one tensor shaped like its first input."""
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _churn_level(churn, s_noise):
    """σ̂ = σ_next (1 + churn) is reached from σ_next by s_noise·√((1 + churn)² − 1)·σ_next of
    noise (Karras et al., 2022, Alg. 2)."""
    return s_noise * math.sqrt((1 + churn) ** 2 - 1)


def _seed(draw, seed):
    """The kernel's seed: None draws no noise."""
    return seed if draw else None


# --------------------------------------------------------------------------------------------------
# one step of a sampler loop (gdm_engine.diffusion.samplers): arguments checked once per loop
# --------------------------------------------------------------------------------------------------


def _reference_loop_step(kind, x, m, values, seed, options):
    """The reference of one loop step on x in the σ form; (out, D) for DPM-Solver++(2M)."""
    v0, v1, v2 = (list(values) + [None, None])[:3]
    common = {"guidance_scale": options.get("guidance_scale", 1.0)}
    given = {"uncond": options.get("uncond"), "noise": options.get("noise")}
    prediction = options.get("prediction", "eps")
    seeded = {"seed": seed if seed is not None else 0}
    if kind == "langevin":
        return (
            ref.langevin_step(x, m, v0, seed=seeded["seed"])
            if seed is not None
            else ref.langevin_step(x, m, v0, torch.zeros_like(x))
        )
    if kind == "dpmpp_2m":
        return ref.dpmpp_2m_step(
            x,
            m,
            v0,
            v1,
            options.get("second"),
            given["uncond"],
            sigma_prev=v2 if options.get("second") is not None else None,
            prediction=prediction,
            **common,
        )
    if seed is None and given["noise"] is None:  # no noise drawn nor given: σ z is 0
        given["noise"] = torch.zeros_like(x)
    if kind == "ddpm":
        return ref.ddpm_step(
            x,
            m,
            v0,
            v1,
            **given,
            prediction=prediction,
            variance=options.get("variance", "fixed_small"),
            clip=options.get("clip"),
            **common,
            **seeded,
        )
    if kind == "ddim":
        return ref.ddim_step(
            x,
            m,
            v0,
            v1,
            **given,
            eta=options.get("eta", 0.0),
            prediction=prediction,
            clip=options.get("clip"),
            use_clipped_model_output=options.get("clipped_eps", False),
            **common,
            **seeded,
        )
    churn = {"churn": options.get("churn", 0.0), "s_noise": options.get("s_noise", 1.0)}
    if kind == "euler":
        return ref.euler_step(
            x, m, v0, v1, **given, prediction=prediction, **churn, **common, **seeded
        )
    return ref.heun_step(
        x,
        m,
        options["second"],
        v0,
        v1,
        given["noise"],
        given["uncond"],
        options.get("uncond_second"),
        prediction=prediction,
        **churn,
        **common,
        **seeded,
    )


def _denoised_coefficients(sigma, prediction):
    """(a, b) of D(x; σ) = a·x + b·M, reference.diffusion.denoised's three forms."""
    if prediction == "eps":
        return 1.0, -sigma
    if prediction == "x0":
        return 0.0, 1.0
    return 1.0 / (1.0 + sigma * sigma), -sigma / math.sqrt(1.0 + sigma * sigma)


_HOST_KINDS = ("euler", "heun", "dpmpp_2m")  # the σ-form steps `_host_step` computes


def _host_combination(kind, values, prediction, churn, s_noise, has_previous):
    """The host coefficients (cx, c1, c2, level) of a σ-form step written as
    x' = cx·x + c1·M + c2·T + level·z, with M the (guided) model output at (x, σ) and T the
    third term: for "heun" the model output at the Euler point (Karras et al., 2022, Algorithm
    2, lines 9-11, expanded: D = a·x + b·M is linear in x and M, and so is the Euler point);
    for "dpmpp_2m" the previous step's D (Lu et al., 2022, Algorithm 2); unused by "euler"."""
    sigma, sigma_next = values[0], values[1]
    a, b = _denoised_coefficients(sigma, prediction)
    if kind == "dpmpp_2m":
        ratio = sigma_next / sigma
        half_inverse_r = 0.0  # the first-order step: first step, or σ_next = 0
        if has_previous and sigma_next > 0:
            half_inverse_r = math.log(sigma / sigma_next) / (2 * math.log(values[2] / sigma))
        weight = (1 - ratio) * (1 + half_inverse_r)
        return ratio + weight * a, weight * b, -(1 - ratio) * half_inverse_r, 0.0
    h = sigma_next - sigma
    level = sigma_next * _churn_level(churn, s_noise)
    p, q = (1 - a) / sigma, -b / sigma  # d = (x − D) / σ = p·x + q·M
    if kind == "euler":
        return 1 + h * p, h * q, 0.0, level
    a_next, b_next = _denoised_coefficients(sigma_next, prediction)
    u, w = (1 - a_next) / sigma_next, -b_next / sigma_next  # d' = u·x_e + w·T
    # x_e = (1 + h p) x + h q M, x' = x + h/2 (d + d')
    return 1 + h / 2 * (p + u * (1 + h * p)), h / 2 * q * (1 + u * h), h / 2 * w, level


def _combination(x, x_coefficient, m, m_coefficient):
    """x_coefficient·x + m_coefficient·M, a new tensor, without the op that multiplies x by
    exactly 1 or 0 (an unscaled "eps" step's x, an "x0" model's D): on tiny tensors each op's
    dispatch is most of a step's time, on large ones each is a pass over memory."""
    if x_coefficient == 0.0:
        return m * m_coefficient
    return torch.add(x if x_coefficient == 1.0 else x * x_coefficient, m, alpha=m_coefficient)


def _guided_wide(output, uncond, guidance_scale, wide):
    """The model output in `wide`, with classifier-free guidance u + g·(m − u) where u is
    given (Ho & Salimans, 2022)."""
    output = output.to(wide)
    return output if uncond is None else torch.lerp(uncond.to(wide), output, guidance_scale)


def _vp_x0_coefficients(alpha_bar, prediction):
    """(ax, bm) of the VP form's x0 = ax·x_t + bm·M, reference.diffusion.predicted_x0's forms."""
    if prediction == "eps":
        return 1 / math.sqrt(alpha_bar), -math.sqrt(1 - alpha_bar) / math.sqrt(alpha_bar)
    if prediction == "x0":
        return 0.0, 1.0
    return math.sqrt(alpha_bar), -math.sqrt(1 - alpha_bar)


def _host_vp_step(
    kind,
    x,
    m,
    values,
    *,
    prediction="eps",
    variance="fixed_small",
    clip=None,
    eta=0.0,
    clipped_eps=False,
    noise=None,
    uncond=None,
    guidance_scale=1.0,
):
    """A DDPM or DDIM step of float ᾱ values off the Triton backend (clip, no threshold),
    as `_host_step`: x0 = clamp(ax·x + bm·M) and x' = k0·x0 + kx·x + km·M + std·z, the
    coefficients of reference.diffusion.ddpm_step and ddim_step formed on the host."""
    a, a_prev = values[0], values[1]
    wide = torch.promote_types(x.dtype, torch.float32)
    x_wide = x.to(wide)
    m = _guided_wide(m, uncond, guidance_scale, wide)
    ax, bm = _vp_x0_coefficients(a, prediction)
    x0 = _combination(x_wide, ax, m, bm)
    if clip is not None:
        x0 = x0.clamp(-clip, clip)
    if kind == "ddpm":  # Ho et al., 2020, eq. 7 and sec. 3.2
        beta = 1 - a / a_prev
        k0, kx, km = (
            math.sqrt(a_prev) * beta / (1 - a),
            math.sqrt(1 - beta) * (1 - a_prev) / (1 - a),
            0.0,
        )
        std = (
            0.0
            if a_prev == 1
            else math.sqrt((1 - a_prev) / (1 - a) * beta if variance == "fixed_small" else beta)
        )
    else:  # Song et al., 2021, eq. 12 and 16; ε̂ from the unclipped x0 unless clipped_eps
        std = eta * math.sqrt((1 - a_prev) / (1 - a)) * math.sqrt(1 - a / a_prev)
        direction = math.sqrt(max(1 - a_prev - std**2, 0.0))
        eps_x, eps_x0 = direction / math.sqrt(1 - a), -direction * math.sqrt(a / (1 - a))
        k0, kx, km = math.sqrt(a_prev), eps_x, 0.0
        if clipped_eps:
            k0 += eps_x0
        else:  # ε̂'s x0 is ax·x + bm·M
            kx, km = kx + eps_x0 * ax, eps_x0 * bm
    out = _combination(x_wide, kx, x0, k0)
    if km:
        out.add_(m, alpha=km)
    if noise is not None and std:
        out.add_(noise, alpha=std)
    return out.to(x.dtype)


def _host_step(
    kind,
    x,
    m,
    values,
    scales,
    denoised,
    *,
    prediction="eps",
    churn=0.0,
    s_noise=1.0,
    noise=None,
    uncond=None,
    guidance_scale=1.0,
    second=None,
    uncond_second=None,
):
    """An Euler, Heun or DPM-Solver++(2M) step of float schedule values off the Triton backend,
    computed as the kernel computes it: coefficients on the host in float64
    (`_host_combination`), then a few torch ops in at least fp32 (the drop-ins' hot path on a
    CPU; the reference's float64 tensors and its dozen ops made it slower than the libraries it
    replaces). x is read as x·s0, the result written ·s1; D = a·x·s0 + b·M where returned."""
    (s0, s1), wide = scales, torch.promote_types(x.dtype, torch.float32)
    x_wide = x.to(wide)
    m = _guided_wide(m, uncond, guidance_scale, wide)
    third = None
    if kind == "heun":
        third = _guided_wide(second, uncond_second, guidance_scale, wide)
    elif kind == "dpmpp_2m" and second is not None:
        third = second.to(wide)
    cx, c1, c2, level = _host_combination(
        kind, values, prediction, churn, s_noise, second is not None
    )
    out = _combination(x_wide, s1 * s0 * cx, m, s1 * c1)
    if third is not None and c2:
        out.add_(third, alpha=s1 * c2)
    if noise is not None and level:
        out.add_(noise, alpha=s1 * level)
    out = out.to(x.dtype)
    if not denoised:
        return out
    a, b = _denoised_coefficients(values[0], prediction)
    # an "x0" model's D is its output, as upstream's samplers return it
    denoised = m if s0 * a == 0.0 and b == 1.0 else _combination(x_wide, s0 * a, m, b)
    return out, denoised.to(x.dtype)


def loop_step(
    kind: str,
    x: torch.Tensor,
    model_output: torch.Tensor,
    values: Sequence[float],
    *,
    scales: tuple[float, float] = (1.0, 1.0),
    seed: Optional[int] = None,
    table: Optional[torch.Tensor] = None,
    state: Optional[torch.Tensor] = None,
    **options: Any,
) -> Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """One step of a sampler loop: the step `kind` (kernels.diffusion.KINDS) with schedule
    `values` (floats), x read as x·scales[0] (the σ form) and the result written ·scales[1] (the
    model's scaling), noise drawn from `seed` where given (None: no noise). Options as the step
    ops' (prediction, variance, eta, clip, churn, s_noise, uncond, second, uncond_second,
    guidance_scale), and `noise`, a given z (then no seed). On the Triton backend exactly one
    kernel launch; with `table` and `state` (a CUDA-graph replay) the kernel reads the step's row
    on the device. Unchecked: the loop checks its arguments once. Returns x', or (x', D) for
    "dpmpp_2m" and for "euler" with `denoised=True` (D = D(x·scales[0]; σ), the model's x0 in
    the same pass: what diffusers' schedulers return as pred_original_sample)."""
    denoised = options.pop("denoised", False)
    second_output = kind == "dpmpp_2m" or (kind == "euler" and denoised)
    if backend.resolve(x) == "triton":
        churn, s_noise = options.pop("churn", 0.0), options.pop("s_noise", 1.0)
        if kind in ("euler", "heun"):
            options["noise_level"] = _churn_level(churn, s_noise)
        options["fixed_large"] = options.pop("variance", "fixed_small") == "fixed_large"
        return _step(
            kind,
            x,
            model_output,
            values,
            scales=scales,
            seed=seed,
            table=table,
            state=state,
            second_output=second_output,
            **options,
        )
    if table is not None:
        raise ValueError("a CUDA-graph replay of a loop needs the Triton backend on a GPU")
    float_schedule = seed is None and all(isinstance(v, float) for v in values)
    if kind in _HOST_KINDS and float_schedule:
        return _host_step(kind, x, model_output, values, scales, second_output, **options)
    if (
        kind in ("ddpm", "ddim")
        and float_schedule
        and scales == (1.0, 1.0)
        and options.get("threshold") is None
    ):
        options.pop("threshold", None)
        return _host_vp_step(kind, x, model_output, values, **options)
    out = _reference_loop_step(kind, x * scales[0], model_output, values, seed, options)
    if kind == "euler" and denoised:
        guided = ref.guided(model_output, options.get("uncond"), options.get("guidance_scale", 1.0))
        out = out, ref.denoised(x * scales[0], guided, values[0], options.get("prediction", "eps"))
    if second_output:
        return _reference_output(out[0] * scales[1], x), _reference_output(out[1], x)
    return _reference_output(out * scales[1], x)


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
# training: q_sample and the loss (differentiable)
# --------------------------------------------------------------------------------------------------


@torch.library.custom_op("gdm_engine::q_sample", mutates_args=())
def q_sample_library_op(
    x0: torch.Tensor,
    noise: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
) -> torch.Tensor:
    """The registered q_sample: ᾱ as `schedule_arguments`."""
    (alpha_bar,) = _merged(schedule, values)
    if backend.resolve(x0) != "triton":
        return _reference_output(ref.q_sample(x0, alpha_bar, noise), x0)
    return _step("q_sample", x0, noise, (alpha_bar,))


q_sample_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::q_sample_backward", mutates_args=())
def _q_sample_backward(
    grad: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(√ᾱ·grad, √(1 − ᾱ)·grad): x_t is linear in x0 and ε. One kernel writes both, with the
    coefficients in float64 (a reduced-precision gradient would round ᾱ = 0.999 away)."""
    (alpha_bar,) = _merged(schedule, values)
    if implementation == "triton":
        return _step("q_sample_grad", grad, grad, (alpha_bar,), second_output=True)
    ones = torch.ones_like(grad)
    return (
        _reference_output(ref.q_sample(grad, alpha_bar, 0 * ones), grad),
        _reference_output(ref.q_sample(0 * ones, alpha_bar, grad), grad),
    )


@_q_sample_backward.register_fake
def _(grad, schedule, values, implementation):
    return (
        torch.empty_like(grad, memory_format=torch.contiguous_format),
        torch.empty_like(grad, memory_format=torch.contiguous_format),
    )


def _no_grads(schedule):
    """The schedule's (absent) gradients, in the structure autograd sees the list in: a list
    where it holds a tensor, one None where it holds none."""
    return [None] * len(schedule) if any(t is not None for t in schedule) else None


def _q_sample_setup(ctx, inputs, output):
    ctx.schedule, ctx.values = inputs[2], inputs[3]
    ctx.save_for_backward(*(t for t in inputs[2] if t is not None))
    ctx.implementation = backend.resolve(inputs[0])


def _q_sample_autograd(ctx, grad):
    saved = iter(ctx.saved_tensors)
    schedule = [next(saved) if t is not None else None for t in ctx.schedule]
    d_x0, d_noise = _q_sample_backward(grad, schedule, ctx.values, ctx.implementation)
    return d_x0, d_noise, _no_grads(ctx.schedule), None


q_sample_library_op.register_autograd(_q_sample_autograd, setup_context=_q_sample_setup)


def _loss_dtype(model_output):
    return torch.promote_types(model_output.dtype, torch.float32)


@torch.library.custom_op("gdm_engine::diffusion_loss", mutates_args=())
def diffusion_loss_library_op(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    prediction: str = "eps",
    min_snr_gamma: Optional[float] = None,
) -> torch.Tensor:
    """The registered diffusion_loss: ᾱ as `schedule_arguments`. Returns (N,) losses."""
    (alpha_bar,) = _merged(schedule, values)
    if backend.resolve(model_output) != "triton":
        return ref.diffusion_loss(
            model_output, x0, noise, alpha_bar, prediction=prediction, min_snr_gamma=min_snr_gamma
        )
    return _kernels().diffusion_loss(
        _rows(model_output),
        _rows(x0),
        _rows(noise),
        alpha_bar,
        _loss_dtype(model_output),
        prediction=prediction,
        min_snr_gamma=min_snr_gamma,
    )


@diffusion_loss_library_op.register_fake
def _(model_output, x0, noise, schedule, values, **kwargs):
    return model_output.new_empty(model_output.shape[:1], dtype=_loss_dtype(model_output))


@torch.library.custom_op("gdm_engine::diffusion_loss_backward", mutates_args=())
def _loss_backward(
    grad: torch.Tensor,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    prediction: str,
    min_snr_gamma: Optional[float],
    implementation: str,
    want_x0: bool,
    want_noise: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dmodel_output, dL/dx0, dL/dnoise) = (c_n·(m − target), −tx·…, −tz·…) with
    c_n = 2·grad_n·weight_n / D; unwanted gradients are empty."""
    (alpha_bar,) = _merged(schedule, values)
    if implementation == "triton":
        grads = _kernels().diffusion_loss_backward(
            grad,
            _rows(model_output),
            _rows(x0),
            _rows(noise),
            alpha_bar,
            prediction=prediction,
            min_snr_gamma=min_snr_gamma,
            want_x0=want_x0,
            want_eps=want_noise,
        )
        grads = [g.view(model_output.shape) if g is not None else None for g in grads]
    else:
        grads = _reference_loss_backward(
            grad, model_output, x0, noise, alpha_bar, prediction, min_snr_gamma
        )
    d_output, d_x0, d_noise = (
        g if g is not None and wanted else model_output.new_empty(0)
        for g, wanted in zip(grads, (True, want_x0, want_noise))
    )
    return d_output, d_x0, d_noise


def _reference_loss_backward(grad, model_output, x0, noise, alpha_bar, prediction, min_snr_gamma):
    # torch.func.vjp rather than torch.autograd: the body of a custom op runs below autograd
    def loss(m, x0, noise):
        return ref.diffusion_loss(
            m, x0, noise, alpha_bar, prediction=prediction, min_snr_gamma=min_snr_gamma
        )

    _, vjp = torch.func.vjp(loss, model_output, x0, noise)
    return [g.contiguous() for g in vjp(grad)]


@_loss_backward.register_fake
def _(
    grad,
    model_output,
    x0,
    noise,
    schedule,
    values,
    prediction,
    min_snr_gamma,
    implementation,
    want_x0,
    want_noise,
):
    return (
        torch.empty_like(model_output, memory_format=torch.contiguous_format),
        torch.empty_like(x0, memory_format=torch.contiguous_format)
        if want_x0
        else model_output.new_empty(0),
        torch.empty_like(noise, memory_format=torch.contiguous_format)
        if want_noise
        else model_output.new_empty(0),
    )


def _loss_setup(ctx, inputs, keyword_only_inputs, output):
    model_output, x0, noise, schedule, values = inputs
    ctx.save_for_backward(model_output, x0, noise, *(t for t in schedule if t is not None))
    ctx.schedule, ctx.values = schedule, values
    ctx.config = (
        keyword_only_inputs["prediction"],
        keyword_only_inputs["min_snr_gamma"],
        backend.resolve(model_output),
    )


def _loss_autograd(ctx, grad):
    model_output, x0, noise, *saved = ctx.saved_tensors
    saved = iter(saved)
    schedule = [next(saved) if t is not None else None for t in ctx.schedule]
    want_x0, want_noise = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    d_output, d_x0, d_noise = _loss_backward(
        grad, model_output, x0, noise, schedule, ctx.values, *ctx.config, want_x0, want_noise
    )
    return (
        d_output,
        d_x0 if want_x0 else None,
        d_noise if want_noise else None,
        _no_grads(ctx.schedule),
        None,
    )


diffusion_loss_library_op.register_autograd(_loss_autograd, setup_context=_loss_setup)


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def _check_pair(x_name, x, m_name, m, noise, generator, **others):
    """x a batch; m (required), the noise and the `others` given (name=tensor or None) shaped
    like it."""
    check_tensor(x_name, x)
    if x.ndim < 1:
        raise ValueError(f"{x_name} must have shape (N, ...): a batch of examples, got a scalar")
    check_shape_of(m_name, m, x_name, x)
    for name, value in [("noise", noise), *others.items()]:
        if value is not None:
            check_shape_of(name, value, x_name, x)
    check_noise_source(noise, generator)


def _check_float(name, value, low=-math.inf, what="a float"):
    """A finite Python float (or int) >= low."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {what}, got {type(value).__name__}")
    if not value >= low or math.isinf(value):
        raise ValueError(f"{name} must be a finite float >= {low}, got {value!r}")


def _check_guidance(uncond, guidance_scale):
    _check_float("guidance_scale", guidance_scale)
    if uncond is None and guidance_scale != 1:
        raise ValueError(
            "guidance_scale needs uncond, the model's unconditional output "
            "(classifier-free guidance combines the two)"
        )


def _check_schedule(name, value, x, low, high, low_open=True, high_open=False):
    """A float in the interval, or an (N,) float tensor (float32 or x's dtype) on x's device.
    Floats are checked exactly (in Python's float64); a tensor's values where reading them is
    free (host_values: CPU tensors), never on a GPU's hot path."""

    def describe():
        return f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"

    def outside(v):
        below = v <= low if low_open else v < low
        above = v >= high if high_open else v > high
        return below | above | (v != v)  # NaN is outside every interval

    if isinstance(value, torch.Tensor):
        if value.dtype not in (torch.float32, x.dtype):
            raise TypeError(f"{name} must be float32 or {x.dtype} (x's dtype), got {value.dtype}")
        if value.shape != (x.shape[0],):
            raise ValueError(
                f"{name} must be a float or a per-example tensor of shape "
                f"({x.shape[0]},), got shape {tuple(value.shape)}"
            )
        if value.device != x.device:
            raise ValueError(f"{name} is on {value.device} but x is on {x.device}")
        values = host_values(value)
        if values is not None and outside(values).any():
            raise ValueError(
                f"{name} must lie in {describe()}, got {float(values[outside(values)][0])!r}"
            )
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float or an (N,) tensor, got {type(value).__name__}")
    if outside(float(value)):
        raise ValueError(f"{name} must lie in {describe()}, got {value!r}")


def _check_order(low_name, low, high_name, high, why, strict=False):
    """low <= high (low < high where `strict`), checked where both values can be read."""
    values = [host_values(v) if isinstance(v, torch.Tensor) else v for v in (low, high)]
    if any(v is None for v in values):
        return
    bad = values[0] >= values[1] if strict else values[0] > values[1]
    if bad is True or (bad is not False and bad.any()):
        raise ValueError(
            f"{high_name} must be {'>' if strict else '>='} {low_name} ({why}), got "
            f"{high_name}={high!r} and {low_name}={low!r}"
        )


def _is_float(value, number):
    return not isinstance(value, torch.Tensor) and float(value) == number


def _optional_float(value):
    return float(value) if value is not None else None


def _check_clip_threshold(clip, threshold):
    if clip is not None:
        if isinstance(clip, bool) or not isinstance(clip, (int, float)):
            raise TypeError(f"clip must be a positive float or None, got {type(clip).__name__}")
        if not clip > 0 or math.isinf(clip):
            raise ValueError(f"clip must be a positive finite float, got {clip!r}")
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
            raise TypeError(
                f"threshold must be a float in (0, 1) or None, got {type(threshold).__name__}"
            )
        if not 0 < threshold < 1:
            raise ValueError(f"threshold must be a quantile in (0, 1), got {threshold!r}")


def _check_denoising(
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
):
    _check_pair("x_t", x_t, "model_output", model_output, noise, generator, uncond=uncond)
    # ᾱ_t = 1 would be a step from clean data: the posterior divides by 1 − ᾱ_t.
    _check_schedule("alpha_bar_t", alpha_bar_t, x_t, 0, 1, high_open=True)
    _check_schedule("alpha_bar_prev", alpha_bar_prev, x_t, 0, 1)
    _check_order(
        "alpha_bar_t", alpha_bar_t, "alpha_bar_prev", alpha_bar_prev, "ᾱ decreases along the chain"
    )
    check_choice("prediction", prediction, PREDICTIONS)
    _check_clip_threshold(clip, threshold)
    _check_guidance(uncond, guidance_scale)


def _check_sigmas(x, sigma, sigma_next, prediction, uncond, guidance_scale, next_positive=False):
    """A step of the σ form from σ > 0 down to 0 <= σ_next <= σ (> 0 where `next_positive`)."""
    _check_schedule("sigma", sigma, x, 0, math.inf, high_open=True)
    _check_schedule(
        "sigma_next", sigma_next, x, 0, math.inf, low_open=next_positive, high_open=True
    )
    _check_order("sigma_next", sigma_next, "sigma", sigma, "the noise level decreases")
    check_choice("prediction", prediction, PREDICTIONS)
    _check_guidance(uncond, guidance_scale)


def _check_churn(churn, s_noise):
    _check_float("churn", churn, 0.0)
    _check_float("s_noise", s_noise, 0.0)


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


def q_sample_library_inputs(
    x0: torch.Tensor, alpha_bar: Union[float, torch.Tensor], noise: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `q_sample_library_op` for a checked call of `q_sample`."""
    return (x0, noise, *schedule_arguments(alpha_bar)), {}


def q_sample(
    x0: torch.Tensor, alpha_bar: Union[float, torch.Tensor], noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε, a draw of q(x_t | x0) (Ho et al., 2020, eq. 4), in one
    pass. Differentiable in x0 and noise.

    Args:
        x0: (N, ...) clean data.
        alpha_bar: ᾱ in (0, 1]: a float or a per-example (N,) tensor (float32 or x0's dtype,
            on x0's device).
        noise: ε, shaped like x0, its dtype and device.

    Returns:
        x_t, shaped like x0, in its dtype.

    Raises:
        TypeError: x0 or noise not a floating tensor or of other dtypes, or alpha_bar neither
            a number nor a tensor (or of another dtype).
        ValueError: noise not shaped like x0 or on another device, x0 a 0-d tensor, or
            alpha_bar outside (0, 1].
    """
    _check_pair("x0", x0, "noise", noise, None, None)
    _check_schedule("alpha_bar", alpha_bar, x0, 0, 1)
    args, kwargs = q_sample_library_inputs(x0, alpha_bar, noise)
    return q_sample_library_op(*args, **kwargs)


def diffusion_loss_library_inputs(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: Union[float, torch.Tensor],
    *,
    prediction: str = "eps",
    min_snr_gamma: Optional[float] = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `diffusion_loss_library_op` for a checked call of `diffusion_loss`."""
    return (model_output, x0, noise, *schedule_arguments(alpha_bar)), dict(
        prediction=prediction, min_snr_gamma=_optional_float(min_snr_gamma)
    )


def diffusion_loss(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: Union[float, torch.Tensor],
    *,
    prediction: str = "eps",
    min_snr_gamma: Optional[float] = None,
) -> torch.Tensor:
    """The simple loss of Ho et al. (2020, eq. 14) per example, fused: the mean over an example's
    elements of (model_output − target)², target = noise ("eps"), x0 ("x0") or
    sqrt(ᾱ) noise − sqrt(1 − ᾱ) x0 ("v", Salimans & Ho, 2022), weighted by min-SNR-γ (Hang et
    al., 2023: min(SNR, γ)/SNR for eps, min(SNR, γ) for x0, min(SNR, γ)/(SNR + 1) for v, with
    SNR = ᾱ/(1 − ᾱ)) when min_snr_gamma is given. x_t = q_sample(x0, alpha_bar, noise) is what
    the model saw. Differentiable: the backward is one more fused pass for model_output (x0 and
    noise, usually data, get a scaling of it).

    Args:
        model_output: (N, ...) the model's prediction at x_t.
        x0: the clean data, shaped like model_output, its dtype and device.
        noise: the ε that made x_t, the same.
        alpha_bar: ᾱ in (0, 1): a float or a per-example (N,) tensor (float32 or x0's dtype,
            on its device).
        prediction: what the model predicts: "eps", "x0" or "v".
        min_snr_gamma: γ > 0 of the min-SNR-γ weighting; None: unweighted.

    Returns:
        (N,) losses, in at least fp32.

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype, alpha_bar
            neither a number nor a tensor, or min_snr_gamma not a number.
        ValueError: tensors of other shapes or devices, alpha_bar outside (0, 1), an unknown
            prediction, or min_snr_gamma ≤ 0.
    """
    model_output, x0, noise = autocast_inputs("diffusion_loss", model_output, x0, noise)
    _check_pair("model_output", model_output, "x0", x0, noise, None)
    check_shape_of("noise", noise, "model_output", model_output)
    _check_schedule("alpha_bar", alpha_bar, x0, 0, 1, high_open=True)
    check_choice("prediction", prediction, PREDICTIONS)
    if min_snr_gamma is not None:
        _check_float("min_snr_gamma", min_snr_gamma, 0.0, "a positive float or None")
        if min_snr_gamma == 0:
            raise ValueError("min_snr_gamma must be > 0 (Hang et al. use 5)")
    args, kwargs = diffusion_loss_library_inputs(
        model_output, x0, noise, alpha_bar, prediction=prediction, min_snr_gamma=min_snr_gamma
    )
    return diffusion_loss_library_op(*args, **kwargs)
