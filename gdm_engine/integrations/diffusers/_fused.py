"""What the drop-in schedulers share: the step counter, the host plan, the noise as upstream
draws it, and the fused launches.

diffusers' schedulers look a step's coefficients up by its timestep, on the device where the
timesteps live: indexing alphas_cumprod by a CUDA timestep syncs (diffusers issue 9475) and the
σ schedulers' first step finds its index with nonzero().item() (issue 3950). Here the
coefficients come from the scheduler's CPU schedule in float64, computed once per
set_timesteps (the "plan", one row per step), and a step counter names the row: a step reads
nothing back and launches one kernel (gdm_engine.ops.diffusion.loop_step).
"""

import inspect
import math
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union, cast

import torch

from gdm_engine.ops.diffusion import loop_step

from .. import require

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

# diffusers, imported by name: Any to the type checker, so that its schedulers can be the drop-ins'
# bases without their signatures being checked against ours (a drop-in adds keywords)
diffusers: Any = require("diffusers", "diffusers")
randn_tensor = require("diffusers.utils.torch_utils", "diffusers").randn_tensor

# classifier-free guidance as the steps take it: (the unconditional output, the scale g)
Guidance = Optional[tuple[torch.Tensor, float]]
# affine_plan's Euler launch: (σ, σ_next, (in scale, out scale), noise coefficient)
AffinePlan = tuple[float, float, tuple[float, float], float]
_Output = TypeVar("_Output", bound="DataclassInstance")

# diffusers' prediction types by the step ops' names ("original_sample": Euler's old alias)
PREDICTION_TYPES = {"epsilon": "eps", "sample": "x0", "original_sample": "x0", "v_prediction": "v"}
# loop_step adds s_noise·√((1 + churn)² − 1)·σ_next·out_scale·z: with this churn, s_noise alone
# sets the noise coefficient
_UNIT_CHURN = math.sqrt(2.0) - 1.0


def guidance_options(guidance: Guidance) -> dict[str, Any]:
    """loop_step's options for classifier-free guidance (uncond, g), or none."""
    if guidance is None:
        return {}
    uncond, scale = guidance
    return {"uncond": uncond, "guidance_scale": float(scale)}


def guided_output(model_output: torch.Tensor, guidance: Guidance) -> torch.Tensor:
    """u + g (m − u) in torch, for a fallback to upstream's step (Ho & Salimans, 2022).

    Args:
        model_output: the conditional output m.
        guidance: (the unconditional output u, the scale g), or None.

    Returns:
        The guided output; model_output itself where guidance is None.
    """
    if guidance is None:
        return model_output
    uncond, scale = guidance
    return uncond + scale * (model_output - uncond)


def euler_launch(
    x: torch.Tensor,
    model_output: torch.Tensor,
    sigma: float,
    sigma_next: float,
    *,
    prediction: str,
    scales: tuple[float, float] = (1.0, 1.0),
    noise: Optional[torch.Tensor] = None,
    noise_coefficient: float = 0.0,
    guidance: Guidance = None,
    denoised: bool = True,
) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """One fused Euler launch in the σ form on x·scales[0], written ·scales[1]:
    (x', D), x' = out_scale·(x_σ + (σ_next − σ)(x_σ − D)/σ) + noise_coefficient·z; D is None
    when not `denoised` (an output class without pred_original_sample)."""
    options: dict[str, Any] = {
        "prediction": prediction,
        "denoised": denoised,
        **guidance_options(guidance),
    }
    if noise is not None:
        level = sigma_next * scales[1]
        options.update(
            noise=noise,
            churn=_UNIT_CHURN,
            s_noise=noise_coefficient / level if noise_coefficient else 0.0,
        )
    out = loop_step("euler", x, model_output, (sigma, sigma_next), scales=scales, **options)
    if denoised:  # (x', D)
        return cast(tuple[torch.Tensor, torch.Tensor], out)
    return cast(torch.Tensor, out), None


def affine_plan(
    alpha_bar: float, x0_coefficient: float, x_coefficient: float, std: float
) -> Optional[AffinePlan]:
    """The Euler launch (σ, σ_next, scales, noise coefficient) of x' = c0·x0 + cx·x + std·z in
    the VP form x = √ᾱ x0 + √(1 − ᾱ) ε: DDPM's posterior mean (Ho et al., 2020, eq. 7) and DDIM's
    update (Song et al., 2021, eq. 12) both are. With σ = √((1 − ᾱ)/ᾱ) and x_σ = x/√ᾱ, x0 is
    D(x_σ; σ) for every prediction type, and x' = s·(r·x_σ + (1 − r)·D) + std·z for
    s = c0 + cx√ᾱ and r = cx√ᾱ/s: an Euler step from σ to r·σ written ·s, whose D is
    pred_original_sample. None where no such step exists (noise but r·σ = 0)."""
    sigma, root = math.sqrt((1 - alpha_bar) / alpha_bar), math.sqrt(alpha_bar)
    out_scale = x0_coefficient + x_coefficient * root
    if out_scale == 0:
        return None
    sigma_next = x_coefficient * root / out_scale * sigma
    if std > 0 and sigma_next <= 0:
        return None
    return sigma, sigma_next, (1 / root, out_scale), std


def draw_noise(
    model_output: torch.Tensor,
    generator: Optional[torch.Generator],
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """The noise upstream draws: randn_tensor with its shape, device, dtype and generator."""
    return randn_tensor(
        model_output.shape,
        generator=generator,
        device=model_output.device,
        dtype=dtype or model_output.dtype,
    )


def output(
    output_class: type[_Output], return_dict: bool, *values: Optional[torch.Tensor]
) -> Union[_Output, tuple[Optional[torch.Tensor], ...]]:
    """Upstream's output: its class, or a tuple with return_dict=False."""
    if not return_dict:
        return values
    names = [f.name for f in output_class.__dataclass_fields__.values()]
    return output_class(**dict(zip(names, values)))


# the mixin's base: object, but to the type checker the diffusers scheduler that follows the mixin
# in a drop-in's bases (Any: its attributes and super() calls are diffusers')
_SchedulerBase: Any = object


class FusedScheduler(_SchedulerBase):
    """The mixin of every drop-in, listed first among its bases: set_timesteps builds the
    timesteps on the host (moving them to `device` after), and the plan is rebuilt lazily from
    the host schedule. Subclasses define `_plan_rows()` and `fallback_reason()`."""

    timesteps: torch.Tensor  # upstream's
    _plan: Optional[list[Any]]  # one row per step, built from the host schedule
    _fused_index: Optional[int]

    def __init_subclass__(cls, **kwargs: Any):
        # A pipeline's save_pretrained records each component as (its class's module, its
        # name), and from_pretrained imports that module and looks the class and its loading
        # base (SchedulerMixin) up in it: the package exports both, so a pipeline saved after
        # accelerate() loads with the drop-in.
        super().__init_subclass__(**kwargs)
        cls.__module__ = "gdm_engine.integrations.diffusers"

    def set_timesteps(self, *args: Any, **kwargs: Any) -> None:
        """Upstream's set_timesteps (same arguments), the timesteps built on the host and moved
        to `device` after; the fused plan is rebuilt at the next step."""
        bound = inspect.signature(super().set_timesteps).bind(*args, **kwargs)
        device = bound.arguments.pop("device", None)
        super().set_timesteps(*bound.args, **bound.kwargs)
        if device is not None:
            self.timesteps = self.timesteps.to(device)
        self._plan = None
        self._fused_index = None

    def _row(self, index: int) -> Any:
        """The plan's row of step `index` (built once per set_timesteps)."""
        plan = getattr(self, "_plan", None)
        if plan is None:
            plan = self._plan = self._plan_rows()
        return plan[index]

    def _next_index(self) -> int:
        """The step counter: the plan's row of this call, counted from the begin index (0, or
        what set_begin_index set, as pipelines do for img2img) since set_timesteps."""
        index = getattr(self, "_step_index", None)
        if index is None:
            index = getattr(self, "_begin_index", None) or 0
        return index

    def fallback_reason(self) -> Optional[str]:
        """Why this configuration runs upstream's step, or None where the fused step covers it."""
        return None


def unsupported(what: str, value: object) -> str:
    return f"{what}={value!r}"
