"""One step of a sampler loop (gdm_engine.diffusion.samplers): arguments checked once per loop,
then `loop_step` launches exactly one kernel on the Triton backend; off it, float schedule
values take the host paths (coefficients on the host, a few torch ops) and the rest the
reference."""

import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import torch

from gdm_engine import backend
from gdm_engine.reference import diffusion as ref

from .coefficients import (
    _churn_level,
    _denoised_coefficients,
    _host_combination,
    _vp_x0_coefficients,
)
from .launch import _reference_output, _step


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


_HOST_KINDS = ("euler", "heun", "dpmpp_2m")  # the σ-form steps `_host_step` computes


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
