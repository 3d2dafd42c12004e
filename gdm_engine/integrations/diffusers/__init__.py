"""diffusers' schedulers with the engine's fused steps underneath (drop-ins).

Each class subclasses diffusers' class of the same name, so ConfigMixin (from_config,
save_pretrained / from_pretrained), set_timesteps (every timestep_spacing), scale_model_input
and the pipelines' own checks stay upstream's; `step` (and DDPM's and DDIM's `add_noise`) run
one fused launch with coefficients planned on the host in float64 once per set_timesteps.
Configurations the kernels do not cover run upstream's `step` (`coverage()` lists both).

    from gdm_engine.integrations.diffusers import accelerate
    pipe = accelerate(pipe)   # its scheduler swapped for the drop-in built from its config
"""

from typing import Any, TypeVar, Union, cast

import torch

from .. import BenchmarkPair, require

require("diffusers", "diffusers")

from diffusers import SchedulerMixin  # noqa: E402,F401 (see FusedScheduler.__init_subclass__)
from diffusers.utils import BaseOutput  # noqa: E402

from ._fused import FusedScheduler, guided_output  # noqa: E402
from .ddpm import DDIMScheduler, DDPMScheduler  # noqa: E402
from .sigmas import (  # noqa: E402
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

SCHEDULERS: dict[str, type[FusedScheduler]] = {
    cls.__name__: cls
    for cls in (
        DDPMScheduler,
        DDIMScheduler,
        EulerDiscreteScheduler,
        EulerAncestralDiscreteScheduler,
        HeunDiscreteScheduler,
        DPMSolverMultistepScheduler,
        FlowMatchEulerDiscreteScheduler,
    )
}

# scheduler: (covered by the fused step, run by upstream's step); the README prints it
_COVERAGE = {
    "DDPMScheduler": (
        "epsilon / sample / v_prediction; variance_type fixed_small(_log), fixed_large; "
        "clip_sample (x0 clipped: a 2nd launch for pred_original_sample); every spacing",
        "thresholding; variance_type learned, learned_range, fixed_large_log",
    ),
    "DDIMScheduler": (
        "epsilon / sample / v_prediction; eta with variance_noise or generator; clip_sample, "
        "use_clipped_model_output (a 2nd launch for pred_original_sample); every spacing",
        "thresholding; eta so large that 1 − ᾱ_prev − σ² < 0",
    ),
    "EulerDiscreteScheduler": (
        "epsilon / sample / v_prediction; karras / exponential / beta sigmas; every spacing",
        "steps with churn (s_churn > 0 and s_tmin <= σ <= s_tmax)",
    ),
    "EulerAncestralDiscreteScheduler": (
        "epsilon / v_prediction, noise from generator; every spacing",
        "prediction_type sample (upstream raises)",
    ),
    "HeunDiscreteScheduler": (
        "epsilon / sample / v_prediction; the correction: the Heun kernel (+1 launch for "
        "pred_original_sample)",
        "clip_sample",
    ),
    "DPMSolverMultistepScheduler": (
        "dpmsolver++, solver_order 2, midpoint; epsilon / sample / v_prediction; "
        "lower_order_final, euler_at_final, final_sigmas_type",
        "dpmsolver / sde-*, solver_order 1 or 3, solver_type heun, thresholding, learned "
        "variances, use_lu_lambdas, use_flow_sigmas, flow_prediction",
    ),
    "FlowMatchEulerDiscreteScheduler": (
        "the deterministic Euler step; shift, dynamic shifting, every sigma option",
        "stochastic_sampling; per_token_timesteps",
    ),
}


_Pipeline = TypeVar("_Pipeline")


def coverage() -> list[dict[str, str]]:
    """One row per drop-in: scheduler, the configurations its fused step covers, those that
    run upstream's step.

    Returns:
        Rows {"scheduler", "fused", "upstream step"}.
    """
    return [
        {"scheduler": name, "fused": fused, "upstream step": fallback}
        for name, (fused, fallback) in _COVERAGE.items()
    ]


def accelerate(pipe: _Pipeline) -> _Pipeline:
    """`pipe` with its scheduler replaced by the drop-in built from that scheduler's config
    (from_config); a scheduler with no drop-in is refused by name (ValueError).

    Args:
        pipe: a diffusers pipeline (any object with a `scheduler` attribute).

    Returns:
        `pipe` itself, its scheduler swapped (unchanged where it already is a drop-in).

    Raises:
        ValueError: pipe has no scheduler, or one with no drop-in (a subclass of diffusers'
            class included).
    """
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None:
        raise ValueError(f"accelerate: pipe must have a scheduler, got {type(pipe).__name__}")
    name = type(scheduler).__name__
    if isinstance(scheduler, tuple(SCHEDULERS.values())):
        return pipe
    drop_in = SCHEDULERS.get(name)
    if drop_in is None or type(scheduler) is not drop_in.__bases__[-1]:  # upstream's class
        raise ValueError(
            f"accelerate: no fused drop-in for the scheduler {name}; covered: "
            f"{', '.join(SCHEDULERS)}"
        )
    # (Any: the `type(scheduler) is` test above leaves mypy an `object`)
    cast(Any, pipe).scheduler = drop_in.from_config(cast(Any, scheduler).config)
    return pipe


def guided_step(
    scheduler: FusedScheduler,
    cond: torch.Tensor,
    uncond: torch.Tensor,
    guidance_scale: float,
    t: Union[int, float, torch.Tensor],
    sample: torch.Tensor,
    **kwargs: Any,
) -> Union[BaseOutput, tuple]:
    """scheduler.step on the classifier-free guided output uncond + g (cond − uncond) (Ho &
    Salimans, 2022), combined inside the step's kernel, for loops written by hand. kwargs as
    the scheduler's step (generator, eta, return_dict, ...).

    Args:
        scheduler: a drop-in scheduler of this module.
        cond: the model's conditional output.
        uncond: the model's unconditional output, shaped like cond.
        guidance_scale: g.
        t: the step's timestep, as the scheduler's step takes it.
        sample: the current sample.
        **kwargs: the scheduler's step keywords (generator, eta, return_dict, ...).

    Returns:
        The scheduler's step output (its output class, or a tuple with return_dict=False).

    Raises:
        TypeError: scheduler is not a drop-in.
        ValueError: uncond is not shaped like cond.
    """
    if not isinstance(scheduler, tuple(SCHEDULERS.values())):
        raise TypeError(
            f"guided_step: scheduler must be a drop-in of "
            f"gdm_engine.integrations.diffusers, got {type(scheduler).__name__}"
        )
    if cond.shape != uncond.shape:
        raise ValueError(
            f"guided_step: uncond must have cond's shape {tuple(cond.shape)}, got "
            f"{tuple(uncond.shape)}"
        )
    return scheduler.step(cond, t, sample, _guidance=(uncond, float(guidance_scale)), **kwargs)


def benchmark_pairs(size: str) -> list[BenchmarkPair]:
    """(name, case, upstream step, drop-in step) for the speed table; see .bench.

    Args:
        size: "tiny" or "medium".

    Returns:
        One pair per drop-in scheduler.

    Raises:
        ValueError: another size.
    """
    from .bench import benchmark_pairs as pairs

    return pairs(size)


__all__ = [*SCHEDULERS, "accelerate", "coverage", "guided_step", "guided_output", "benchmark_pairs"]
