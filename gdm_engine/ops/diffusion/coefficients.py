"""Schedule values and the coefficients formed from them.

Schedule values reach the registered ops as two lists: `schedule`, the (N,) tensors (None
for a float), and `values`, the floats. The kernel takes a float as a float64 argument and
reads a tensor once per row, forming every coefficient itself (kernels/diffusion.py): no
device op besides the kernel, and no float rounded to fp32 before 1 − ᾱ is taken. Off the
Triton backend, a sampler loop's step of float values forms its coefficients on the host
(loop.py), in float64, with the functions here."""

import math
from typing import Optional, Union

import torch


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


def _churn_level(churn, s_noise):
    """σ̂ = σ_next (1 + churn) is reached from σ_next by s_noise·√((1 + churn)² − 1)·σ_next of
    noise (Karras et al., 2022, Alg. 2)."""
    return s_noise * math.sqrt((1 + churn) ** 2 - 1)


def _denoised_coefficients(sigma, prediction):
    """(a, b) of D(x; σ) = a·x + b·M, reference.diffusion.denoised's three forms."""
    if prediction == "eps":
        return 1.0, -sigma
    if prediction == "x0":
        return 0.0, 1.0
    return 1.0 / (1.0 + sigma * sigma), -sigma / math.sqrt(1.0 + sigma * sigma)


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


def _vp_x0_coefficients(alpha_bar, prediction):
    """(ax, bm) of the VP form's x0 = ax·x_t + bm·M, reference.diffusion.predicted_x0's forms."""
    if prediction == "eps":
        return 1 / math.sqrt(alpha_bar), -math.sqrt(1 - alpha_bar) / math.sqrt(alpha_bar)
    if prediction == "x0":
        return 0.0, 1.0
    return math.sqrt(alpha_bar), -math.sqrt(1 - alpha_bar)
