"""(name, case, upstream, drop-in) pairs for the "integrations" speed table: zero-argument
callables that each run one `step` of diffusers' scheduler and of its drop-in on CPU tensors
built once, the scheduler's state reset before each call so that repeated calls are valid."""

from collections.abc import Callable
from typing import Any

import diffusers
import torch

from .. import BenchmarkPair
from . import SCHEDULERS

SHAPES = {"tiny": (1, 4, 8, 8), "medium": (4, 4, 32, 32)}
STEPS = 10
# scheduler: (case label, config, step keywords)
CASES: dict[str, tuple[str, dict[str, Any], dict[str, bool]]] = {
    "DDPMScheduler": ("epsilon, clip_sample, generator", {}, {"generator": True}),
    "DDIMScheduler": ("epsilon, clip_sample, eta 0", {}, {}),
    "EulerDiscreteScheduler": ("epsilon", {}, {}),
    "EulerAncestralDiscreteScheduler": ("epsilon, generator", {}, {"generator": True}),
    "HeunDiscreteScheduler": ("epsilon, first call", {}, {}),
    "DPMSolverMultistepScheduler": ("2M, second order", {}, {}),
    "FlowMatchEulerDiscreteScheduler": ("euler", {}, {}),
}


def _reset(scheduler: Any, index: int, previous: torch.Tensor) -> None:
    """The state before step `index` (the middle one): upstream's counter and ours, Heun's
    first-order state, DPM-Solver's previous estimate."""
    scheduler._step_index = index
    scheduler._fused_index = index
    scheduler.is_scale_input_called = True
    if hasattr(scheduler, "model_outputs"):
        scheduler.model_outputs = [previous, previous]
        scheduler.lower_order_nums = 1
    if hasattr(scheduler, "state_in_first_order"):
        scheduler.dt = None


def _caller(
    scheduler: Any, index: int, tensors: list[torch.Tensor], keywords: dict[str, bool]
) -> Callable[[], object]:
    sample, model_output, previous = tensors
    timestep = scheduler.timesteps[index]

    def call() -> object:
        _reset(scheduler, index, previous)
        kwargs = {}
        if keywords.get("generator"):
            kwargs["generator"] = torch.Generator().manual_seed(0)
        return scheduler.step(model_output, timestep, sample, **kwargs)

    return call


def benchmark_pairs(size: str) -> list[BenchmarkPair]:
    """One pair per drop-in at SHAPES[size]: a middle step of a STEPS-step schedule.

    Args:
        size: "tiny" or "medium".

    Returns:
        (name, case, upstream step, drop-in step) per scheduler.

    Raises:
        ValueError: another size.
    """
    if size not in SHAPES:
        raise ValueError(f"size must be one of {sorted(SHAPES)}, got {size!r}")
    generator = torch.Generator().manual_seed(0)
    tensors = [torch.randn(SHAPES[size], generator=generator) for _ in range(3)]
    pairs: list[BenchmarkPair] = []
    for name, drop_in in SCHEDULERS.items():
        case, config, keywords = CASES[name]
        upstream = getattr(diffusers, name)(**config)
        ours = drop_in.from_config(upstream.config)
        for scheduler in (upstream, ours):
            scheduler.set_timesteps(STEPS)
        index = 2 * (STEPS // 2) if name == "HeunDiscreteScheduler" else STEPS // 2
        label = f"x={SHAPES[size]} {case}"
        pairs.append(
            (
                name,
                label,
                _caller(upstream, index, tensors, keywords),
                _caller(ours, index, tensors, keywords),
            )
        )
    return pairs
