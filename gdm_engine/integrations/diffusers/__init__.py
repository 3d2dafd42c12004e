"""diffusers' schedulers with the engine's fused steps underneath (drop-ins).

Each class subclasses diffusers' class of the same name, so ConfigMixin (from_config,
save_pretrained / from_pretrained), set_timesteps (every timestep_spacing), scale_model_input
and the pipelines' own checks stay upstream's; `step` (and DDPM's and DDIM's `add_noise`) run
one fused launch with coefficients planned on the host in float64 once per set_timesteps.
Configurations the kernels do not cover run upstream's `step` (`coverage()` lists both).

    from gdm_engine.integrations.diffusers import accelerate
    pipe = accelerate(pipe)   # its scheduler swapped for the drop-in built from its config
"""

from .. import require

require("diffusers", "diffusers")

from diffusers import SchedulerMixin  # noqa: E402,F401 (see FusedScheduler.__init_subclass__)

from ._fused import guided_output  # noqa: E402
from .ddpm import DDIMScheduler, DDPMScheduler  # noqa: E402
from .sigmas import (  # noqa: E402
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

SCHEDULERS = {
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


def coverage():
    """One row per drop-in: scheduler, the configurations its fused step covers, those that
    run upstream's step."""
    return [
        {"scheduler": name, "fused": fused, "upstream step": fallback}
        for name, (fused, fallback) in _COVERAGE.items()
    ]


def accelerate(pipe):
    """`pipe` with its scheduler replaced by the drop-in built from that scheduler's config
    (from_config); a scheduler with no drop-in is refused by name (ValueError)."""
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
    pipe.scheduler = drop_in.from_config(scheduler.config)
    return pipe


def guided_step(scheduler, cond, uncond, guidance_scale, t, sample, **kwargs):
    """scheduler.step on the classifier-free guided output uncond + g (cond − uncond) (Ho &
    Salimans, 2022), combined inside the step's kernel, for loops written by hand. kwargs as
    the scheduler's step (generator, eta, return_dict, ...)."""
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


def benchmark_pairs(size):
    """(name, case, upstream step, drop-in step) for the speed table; see .bench."""
    from .bench import benchmark_pairs as pairs

    return pairs(size)


__all__ = [*SCHEDULERS, "accelerate", "coverage", "guided_step", "guided_output", "benchmark_pairs"]
