"""Sampler loops over the fused step kernels: DDPM's ancestral sampling, DDIM, Euler, Heun and
DPM-Solver++(2M), and annealed Langevin dynamics.

A loop computes its whole schedule once, on the host in float64 (the schedule tensor is read
once, before the first step: pass it on the CPU, as the DDPM model does, and nothing is read
back from a GPU), draws one seed per noisy step on the host, and puts the model's timestep
indices on the device once. Each step is then the model's evaluation(s) and exactly one step
kernel (`ops.diffusion.loop_step`; Heun's corrected step two, its Euler point and the
correction): no other device op, no read-back.

`cuda_graph=True` (CUDA tensors, Triton backend) runs the first step eagerly (a warm-up that
builds every kernel), captures the next one in a CUDA graph and replays it for the rest: one
launch per step instead of the model's dozens, for a small model where launching is the cost.
The replayed step reads its row of the loop's schedule (values, scalings and seed) and the
model's timestep from the device at a step counter the graph advances, so every replay is a
different step with fresh noise, and the result equals the eager loop's for the same generator.
The model must be capturable: no host read-back, no CPU work that changes between steps.

`denoiser(x, t)` is the model: x (N, ...) and t (N,) int64 indices into the schedule (0 is the
least noisy step); it returns the prediction the step expects ("eps", "x0" or "v"). With
`guidance_scale`, it returns the pair (conditional, unconditional) of outputs, which the step
combines as u + guidance_scale · (c − u) in the same pass (classifier-free guidance, Ho &
Salimans, 2022).

Euler, Heun and DPM-Solver++(2M) follow the σ form x = x0 + σ ε of Karras et al. (2022) on the
same discrete variance-preserving model, σ_t = sqrt((1 − ᾱ_t)/ᾱ_t). The loop keeps its sample in
the model's own scaling x_t = x / sqrt(1 + σ²), so the model reads it as it is; each step kernel
scales in and out of the σ form itself.
"""

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from tqdm import tqdm

from gdm_engine._random import draw, noise_seed
from gdm_engine.ops import diffusion as step_ops
from gdm_engine.reference.diffusion import PREDICTIONS

from .schedules import spaced_timesteps, timestep_spacing

# denoiser(x, t) -> the model's output, or the pair (conditional, unconditional) with guidance
Denoiser = Callable[
    [torch.Tensor, torch.Tensor], Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
]


def _device_of(device, schedule):
    return torch.device(device) if device is not None else schedule.device


def _host(schedule):
    """The schedule as host float64 values: one read, before the loop."""
    return schedule.detach().to("cpu", torch.float64).tolist()


def _seeds(count, generator):
    """One seed per step, drawn on the host (noise_seed: no read of the device)."""
    return [noise_seed(None, generator) for _ in range(count)]


def _guidance(guidance_scale):
    """The steps' guidance_scale: 1.0 (unused) without guidance."""
    return 1.0 if guidance_scale is None else guidance_scale


def _evaluate(denoiser, x, t, guidance_scale):
    """(model output, unconditional output or None) at x and the (N,) indices t."""
    output = denoiser(x, t)
    if guidance_scale is None:
        return output, None
    if not isinstance(output, (tuple, list)) or len(output) != 2:
        raise ValueError(
            "with guidance_scale the denoiser must return the pair (conditional, "
            "unconditional) of outputs"
        )
    return output


@dataclasses.dataclass
class _Call:
    """One kernel call of every step of a loop: its kind, the per-step rows (three schedule
    values, in_scale, out_scale, seed or None), the options that stay the same, and the name
    of its device table in a replayed step."""

    kind: str
    rows: list
    options: dict
    key: str = ""

    def __post_init__(self):
        self.key = self.key or self.kind

    def run(self, i, x, output, graph=None, **tensors):
        v0, v1, v2, in_scale, out_scale, seed = self.rows[i]
        if graph is not None:  # the replayed step reads its row on the device
            return step_ops.loop_step(
                self.kind,
                x,
                output,
                (v0, v1, v2),
                table=graph[self.key],
                state=graph["step"],
                seed=None if seed is None else 0,
                **self.options,
                **tensors,
            )
        return step_ops.loop_step(
            self.kind,
            x,
            output,
            (v0, v1, v2),
            scales=(in_scale, out_scale),
            seed=seed,
            **self.options,
            **tensors,
        )

    def table(self, device):
        """The rows as the (steps, 6) float64 device table that a replayed step reads."""
        rows = [row[:5] + (float(row[5] or 0),) for row in self.rows]
        return torch.tensor(rows, dtype=torch.float64).to(device, non_blocking=True)


class _Loop:
    """A sampler's steps: the model's timestep per step (device indices, put there once) and a
    step function step(i, x, t, graph) -> x; run eagerly, or with one step captured in a CUDA
    graph and replayed."""

    def __init__(self, denoiser, guidance_scale, times, n, device, calls, desc, last_differs=False):
        self.denoiser, self.guidance_scale = denoiser, guidance_scale
        self.times = torch.tensor(times, dtype=torch.long).to(device, non_blocking=True)
        self.n, self.device, self.calls, self.desc = n, device, calls, desc
        self.last_differs = last_differs  # the last step is not the replayed one (Heun's)

    def evaluate(self, x, t):
        return _evaluate(self.denoiser, x, t.expand(self.n), self.guidance_scale)

    def model_time(self, i, graph):
        if graph is None:
            return self.times[i]
        return self.times.index_select(0, graph["step"]).reshape(())

    def run(self, step, x, count, progress, cuda_graph, carry=()):
        """x after `count` steps (carry: tensors the steps pass on, such as DPM-Solver++'s D)."""
        bar = tqdm(total=count, desc=self.desc, unit="step", disable=not progress, leave=False)
        state = (x, *carry)
        first_replayed = 1 if cuda_graph else count
        for i in range(min(first_replayed, count)):
            state = step(i, *state, graph=None)
            bar.update(1)
        if first_replayed < count:
            state = self._replay(step, state, first_replayed, count, bar)
        bar.close()
        return state[0]

    def _replay(self, step, state, start, count, bar):
        """Steps start .. count − 1 by one captured step replayed; the last step runs eagerly
        where its form differs (Heun's last step is Euler's)."""
        if self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs the samples on a CUDA device")
        graph = {call.key: call.table(self.device) for call in self.calls}
        graph["step"] = torch.full((1,), start, dtype=torch.long, device=self.device)
        static = [t.clone() for t in state]
        # warm the capture's allocator on a side stream, as torch.cuda.graphs recommends
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            step(start, *[t.clone() for t in static], graph=graph)
        torch.cuda.current_stream(self.device).wait_stream(side)
        captured = torch.cuda.CUDAGraph()
        with torch.cuda.graph(captured):
            results = step(start, *static, graph=graph)
            for target, result in zip(static, results):
                target.copy_(result)
            graph["step"].add_(1)
        replayed = count - start - (1 if self.last_differs else 0)
        for _ in range(replayed):
            captured.replay()
            bar.update(1)
        state = tuple(static)
        if self.last_differs:
            state = step(count - 1, *state, graph=None)
            bar.update(1)
        return state


def _check_sampler(prediction, churn=0.0):
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    if isinstance(churn, bool) or not isinstance(churn, (int, float)) or not churn >= 0:
        raise ValueError(f"churn must be a float >= 0, got {churn!r}")


def _row(v0, v1, v2=1.0, scales=(1.0, 1.0), seed=None):
    return (float(v0), float(v1), float(v2), float(scales[0]), float(scales[1]), seed)


def _denoising_loop(
    kind,
    denoiser,
    shape,
    alpha_bars,
    times,
    generator,
    device,
    guidance_scale,
    progress,
    cuda_graph,
    options,
    noisy,
):
    """DDPM's and DDIM's loops over the schedule indices `times` (decreasing)."""
    device = _device_of(device, alpha_bars)
    a = _host(alpha_bars)
    seeds = _seeds(len(times), generator) if noisy else [None] * len(times)
    rows = [
        _row(a[t], a[times[i + 1]] if i + 1 < len(times) else 1.0, seed=seeds[i])
        for i, t in enumerate(times)
    ]
    call = _Call(kind, rows, {**options, "guidance_scale": _guidance(guidance_scale)})
    loop = _Loop(denoiser, guidance_scale, times, shape[0], device, [call], kind)

    def step(i, x, graph):
        output, uncond = loop.evaluate(x, loop.model_time(i, graph))
        return (call.run(i, x, output, graph, uncond=uncond),)

    return loop.run(step, draw(shape, generator, device), len(times), progress, cuda_graph)


def ddpm_sample(
    denoiser: Denoiser,
    shape: Sequence[int],
    alpha_bars: torch.Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    prediction: str = "eps",
    variance: str = "fixed_small",
    clip: Optional[float] = None,
    guidance_scale: Optional[float] = None,
    progress: bool = False,
    cuda_graph: bool = False,
) -> torch.Tensor:
    """Ancestral sampling (Ho et al., 2020, Algorithm 2) through every step of the schedule
    `alpha_bars` (T,), from x_T ~ N(0, I) to x_0; each step is one fused DDPM step kernel.

    Args:
        denoiser: the model, denoiser(x, t) with t (N,) int64 indices into alpha_bars.
        shape: (N, ...) of the samples.
        alpha_bars: the schedule ᾱ, shape (T,), decreasing, best on the CPU (read once).
        generator: draws x_T and each step's seed; None: torch's global generator.
        device: where the samples are made; None: alpha_bars' device.
        prediction: what the denoiser predicts: "eps", "x0" or "v".
        variance: "fixed_small" (β̃_t) or "fixed_large" (β_t).
        clip: > 0: each step's x0 clipped to [−clip, clip]; None: not clipped.
        guidance_scale: classifier-free guidance weight, with a denoiser that returns the
            pair (conditional, unconditional); None: no guidance.
        progress: show a progress bar.
        cuda_graph: replay one captured step in a CUDA graph (CUDA tensors, Triton backend;
            see the module).

    Returns:
        x_0, of `shape`, on `device`.

    Raises:
        ValueError: an unknown prediction, a denoiser that does not return a pair with
            guidance_scale, or cuda_graph off CUDA.
    """
    _check_sampler(prediction)
    times = list(range(len(alpha_bars) - 1, -1, -1))
    return _denoising_loop(
        "ddpm",
        denoiser,
        shape,
        alpha_bars,
        times,
        generator,
        device,
        guidance_scale,
        progress,
        cuda_graph,
        {"prediction": prediction, "variance": variance, "clip": clip},
        noisy=True,
    )


def ddim_sample(
    denoiser: Denoiser,
    shape: Sequence[int],
    alpha_bars: torch.Tensor,
    steps: int,
    *,
    eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    prediction: str = "eps",
    clip: Optional[float] = None,
    guidance_scale: Optional[float] = None,
    progress: bool = False,
    cuda_graph: bool = False,
) -> torch.Tensor:
    """DDIM (Song et al., 2021, eq. 12) on `steps` evenly spaced steps of the schedule
    `alpha_bars` (T,): deterministic with eta = 0, DDPM-like with eta = 1.

    Args:
        denoiser: the model, denoiser(x, t) with t (N,) int64 indices into alpha_bars.
        shape: (N, ...) of the samples.
        alpha_bars: the schedule ᾱ, shape (T,), decreasing, best on the CPU (read once).
        steps: in [1, T], the number of steps (spaced_timesteps).
        eta: ≥ 0, the scale of each step's noise.
        generator: draws x_T and each step's seed; None: torch's global generator.
        device: where the samples are made; None: alpha_bars' device.
        prediction: what the denoiser predicts: "eps", "x0" or "v".
        clip: > 0: each step's x0 clipped to [−clip, clip]; None: not clipped.
        guidance_scale: classifier-free guidance weight, with a denoiser that returns the
            pair (conditional, unconditional); None: no guidance.
        progress: show a progress bar.
        cuda_graph: replay one captured step in a CUDA graph (CUDA tensors, Triton backend;
            see the module).

    Returns:
        x_0, of `shape`, on `device`.

    Raises:
        TypeError: steps not an int.
        ValueError: an unknown prediction, steps outside [1, T], a denoiser that does not
            return a pair with guidance_scale, or cuda_graph off CUDA.
    """
    _check_sampler(prediction)
    times = spaced_timesteps(len(alpha_bars), steps).tolist()
    return _denoising_loop(
        "ddim",
        denoiser,
        shape,
        alpha_bars,
        times,
        generator,
        device,
        guidance_scale,
        progress,
        cuda_graph,
        {"prediction": prediction, "eta": eta, "clip": clip},
        noisy=eta != 0,
    )


def _sigma_plan(alpha_bars, steps, spacing, churn):
    """The σ-form loop's host plan: per step (σ, the model's timestep, σ_next, σ_next's
    timestep), with σ raised by churn (Karras et al., 2022, Alg. 2) to σ̂ = σ (1 + γ) and the
    model evaluated at its level nearest to σ̂."""
    a = _host(alpha_bars)
    levels = [math.sqrt((1 - v) / v) for v in a]  # increasing with t
    times = timestep_spacing(alpha_bars, steps, spacing)
    sigmas = [levels[t] for t in times] + [0.0]
    plan = []
    for i, t in enumerate(times):
        sigma = sigmas[i] * (1 + churn) if churn else sigmas[i]
        if churn:  # the model's nearest level to σ̂
            t = min(range(len(levels)), key=lambda j: abs(levels[j] - sigma))
        plan.append((sigma, t, sigmas[i + 1], times[i + 1] if i + 1 < len(times) else 0))
    return plan


def _vp_scale(sigma):
    """x_t = x_σ / sqrt(1 + σ²): the model's scaling of a sample at level σ."""
    return 1 / math.sqrt(1 + sigma * sigma)


def _karras_loop(
    second_order,
    denoiser,
    shape,
    alpha_bars,
    steps,
    spacing,
    churn,
    generator,
    device,
    prediction,
    guidance_scale,
    progress,
    cuda_graph,
    desc,
):
    """Karras et al. (2022), Algorithm 2 (Algorithm 1 without the correction, or with churn 0),
    each step lifting the result to the next step's σ̂ (the churn of the next step, fused)."""
    _check_sampler(prediction, churn)
    device = _device_of(device, alpha_bars)
    plan = _sigma_plan(alpha_bars, steps, spacing, churn)
    count = len(plan)
    seeds = _seeds(count, generator) if churn else [None] * count
    euler_rows, heun_rows = [], []
    for i, (sigma, _, sigma_next, _) in enumerate(plan):
        last = i + 1 == count
        lifted = 0.0 if last else plan[i + 1][0]  # σ̂ of the next step (σ_next without churn)
        seed = None if last else seeds[i]
        scales = (1 / _vp_scale(sigma), _vp_scale(lifted))
        euler_rows.append(_row(sigma, sigma_next, scales=scales, seed=seed))
        # Heun's Euler point at σ_next, in the model's scaling for its second evaluation
        heun_rows.append(_row(sigma, sigma_next, scales=(scales[0], _vp_scale(sigma_next))))
    common = {"prediction": prediction, "guidance_scale": _guidance(guidance_scale)}
    churned = {"churn": churn, **common}
    euler = _Call("euler", euler_rows, churned)
    point = _Call("euler", heun_rows, common, key="point")
    heun = _Call("heun", euler_rows, churned)
    loop = _Loop(
        denoiser,
        guidance_scale,
        [t for _, t, _, _ in plan],
        shape[0],
        device,
        [heun, point] if second_order else [euler],
        desc,
        last_differs=second_order,
    )
    next_times = torch.tensor([t_next for *_, t_next in plan], dtype=torch.long).to(
        device, non_blocking=True
    )

    def step(i, x, graph):
        output, uncond = loop.evaluate(x, loop.model_time(i, graph))
        if not second_order or (graph is None and i + 1 == count):
            return (euler.run(i, x, output, graph, uncond=uncond),)
        x_point = point.run(i, x, output, graph, uncond=uncond)
        t_next = (
            next_times[i]
            if graph is None
            else next_times.index_select(0, graph["step"]).reshape(())
        )
        output_next, uncond_next = loop.evaluate(x_point, t_next)
        return (
            heun.run(
                i, x, output, graph, uncond=uncond, second=output_next, uncond_second=uncond_next
            ),
        )

    x = draw(shape, generator, device)
    return loop.run(step, x, count, progress, cuda_graph)


def euler_sample(
    denoiser: Denoiser,
    shape: Sequence[int],
    alpha_bars: torch.Tensor,
    steps: int,
    *,
    spacing: str = "logsnr",
    churn: float = 0.0,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    prediction: str = "eps",
    guidance_scale: Optional[float] = None,
    progress: bool = False,
    cuda_graph: bool = False,
) -> torch.Tensor:
    """Euler's method on the probability-flow ODE (Karras et al., 2022, Algorithm 1) over `steps`
    steps of the schedule `alpha_bars` placed by `spacing` (schedules.timestep_spacing: "logsnr",
    "karras" or "uniform"), one model evaluation each; with churn
    γ > 0, the stochastic sampler of their Algorithm 2 (first order): each level σ is raised to
    σ (1 + γ) by fresh noise, and the model is evaluated at its nearest level.

    Args:
        denoiser: the model, denoiser(x, t) with t (N,) int64 indices into alpha_bars.
        shape: (N, ...) of the samples.
        alpha_bars: the schedule ᾱ, shape (T,), decreasing, best on the CPU (read once).
        steps: >= 1, the number of steps (at most T where spacing is not "uniform").
        spacing: "logsnr", "karras" or "uniform" (schedules.timestep_spacing).
        churn: γ ≥ 0; 0: the deterministic sampler.
        generator: draws x_T and each step's seed; None: torch's global generator.
        device: where the samples are made; None: alpha_bars' device.
        prediction: what the denoiser predicts: "eps", "x0" or "v".
        guidance_scale: classifier-free guidance weight, with a denoiser that returns the
            pair (conditional, unconditional); None: no guidance.
        progress: show a progress bar.
        cuda_graph: replay one captured step in a CUDA graph (CUDA tensors, Triton backend;
            see the module).

    Returns:
        x_0, of `shape`, on `device`.

    Raises:
        ValueError: an unknown prediction or spacing, churn < 0, steps above T, a denoiser
            that does not return a pair with guidance_scale, or cuda_graph off CUDA.
        TypeError: steps not an int.
    """
    return _karras_loop(
        False,
        denoiser,
        shape,
        alpha_bars,
        steps,
        spacing,
        churn,
        generator,
        device,
        prediction,
        guidance_scale,
        progress,
        cuda_graph,
        "euler",
    )


def heun_sample(
    denoiser: Denoiser,
    shape: Sequence[int],
    alpha_bars: torch.Tensor,
    steps: int,
    *,
    spacing: str = "logsnr",
    churn: float = 0.0,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    prediction: str = "eps",
    guidance_scale: Optional[float] = None,
    progress: bool = False,
    cuda_graph: bool = False,
) -> torch.Tensor:
    """Heun's second-order method (Karras et al., 2022, Algorithm 2): as `euler_sample` with a
    correction at every step but the last, 2 · steps − 1 model evaluations.

    Args:
        denoiser: the model, denoiser(x, t) with t (N,) int64 indices into alpha_bars.
        shape: (N, ...) of the samples.
        alpha_bars: the schedule ᾱ, shape (T,), decreasing, best on the CPU (read once).
        steps: >= 1, the number of steps (at most T where spacing is not "uniform").
        spacing: "logsnr", "karras" or "uniform" (schedules.timestep_spacing).
        churn: γ ≥ 0; 0: the deterministic sampler.
        generator: draws x_T and each step's seed; None: torch's global generator.
        device: where the samples are made; None: alpha_bars' device.
        prediction: what the denoiser predicts: "eps", "x0" or "v".
        guidance_scale: classifier-free guidance weight, with a denoiser that returns the
            pair (conditional, unconditional); None: no guidance.
        progress: show a progress bar.
        cuda_graph: replay one captured step in a CUDA graph (CUDA tensors, Triton backend;
            see the module).

    Returns:
        x_0, of `shape`, on `device`.

    Raises:
        ValueError: an unknown prediction or spacing, churn < 0, steps above T, a denoiser
            that does not return a pair with guidance_scale, or cuda_graph off CUDA.
        TypeError: steps not an int.
    """
    return _karras_loop(
        True,
        denoiser,
        shape,
        alpha_bars,
        steps,
        spacing,
        churn,
        generator,
        device,
        prediction,
        guidance_scale,
        progress,
        cuda_graph,
        "heun",
    )


def dpmpp_2m_sample(
    denoiser: Denoiser,
    shape: Sequence[int],
    alpha_bars: torch.Tensor,
    steps: int,
    *,
    spacing: str = "logsnr",
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    prediction: str = "eps",
    guidance_scale: Optional[float] = None,
    progress: bool = False,
    cuda_graph: bool = False,
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2): second-order multistep in the σ form,
    reusing the previous step's denoised estimate, so `steps` model evaluations; first order on
    the first and the last step.

    Args:
        denoiser: the model, denoiser(x, t) with t (N,) int64 indices into alpha_bars.
        shape: (N, ...) of the samples.
        alpha_bars: the schedule ᾱ, shape (T,), decreasing, best on the CPU (read once).
        steps: >= 1, the number of steps (at most T where spacing is not "uniform").
        spacing: "logsnr", "karras" or "uniform" (schedules.timestep_spacing).
        generator: draws x_T; None: torch's global generator.
        device: where the samples are made; None: alpha_bars' device.
        prediction: what the denoiser predicts: "eps", "x0" or "v".
        guidance_scale: classifier-free guidance weight, with a denoiser that returns the
            pair (conditional, unconditional); None: no guidance.
        progress: show a progress bar.
        cuda_graph: replay one captured step in a CUDA graph (CUDA tensors, Triton backend;
            see the module).

    Returns:
        x_0, of `shape`, on `device`.

    Raises:
        TypeError: steps not an int.
        ValueError: an unknown prediction or spacing, steps above T, a denoiser that does not
            return a pair with guidance_scale, or cuda_graph off CUDA.
    """
    _check_sampler(prediction)
    device = _device_of(device, alpha_bars)
    plan = _sigma_plan(alpha_bars, steps, spacing, 0.0)
    rows = []
    for i, (sigma, _, sigma_next, _) in enumerate(plan):
        sigma_prev = plan[i - 1][0] if i else 1.0  # unused on the first step
        rows.append(
            _row(
                sigma, sigma_next, sigma_prev, scales=(1 / _vp_scale(sigma), _vp_scale(sigma_next))
            )
        )
    call = _Call(
        "dpmpp_2m", rows, {"prediction": prediction, "guidance_scale": _guidance(guidance_scale)}
    )
    loop = _Loop(
        denoiser, guidance_scale, [t for _, t, _, _ in plan], shape[0], device, [call], "dpm++2m"
    )

    def step(i, x, previous, graph):
        output, uncond = loop.evaluate(x, loop.model_time(i, graph))
        return call.run(
            i, x, output, graph, uncond=uncond, second=previous if i or graph is not None else None
        )

    x = draw(shape, generator, device)
    return loop.run(step, x, len(plan), progress, cuda_graph, carry=(torch.zeros_like(x),))


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": ddpm_sample,
    "ddim": ddim_sample,
    "euler": euler_sample,
    "heun": heun_sample,
    "dpmpp_2m": dpmpp_2m_sample,
}
# the samplers that take `clip` (the ancestral ones, in ᾱ form): x̂0 clipped at each step
CLIPPING_SAMPLERS = frozenset({"ddpm", "ddim"})


def sample(
    denoiser: Denoiser,
    shape: Sequence[int],
    alpha_bars: torch.Tensor,
    sampler: str = "ddpm",
    steps: Optional[int] = None,
    **kwargs: Any,
) -> torch.Tensor:
    """Any of SAMPLERS by name: "ddpm" runs every step of the schedule (steps None or
    len(alpha_bars)); the others take `steps` (default 50, or every step of a shorter
    schedule). kwargs go to the sampler.

    Args:
        denoiser: the model, denoiser(x, t) with t (N,) int64 indices into alpha_bars.
        shape: (N, ...) of the samples.
        alpha_bars: the schedule ᾱ, shape (T,), decreasing, best on the CPU (read once).
        sampler: "ddpm", "ddim", "euler", "heun" or "dpmpp_2m".
        steps: the number of steps; None: every step for "ddpm", else min(50, T).
        **kwargs: the chosen sampler's keyword arguments.

    Returns:
        x_0, of `shape`.

    Raises:
        ValueError: an unknown sampler, steps other than None or T for "ddpm", or what the
            sampler raises.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if sampler == "ddpm":
        if steps not in (None, len(alpha_bars)):
            raise ValueError(
                f"the ddpm sampler runs all {len(alpha_bars)} steps; use ddim, "
                f"euler, heun or dpmpp_2m for {steps}"
            )
        return ddpm_sample(denoiser, shape, alpha_bars, **kwargs)
    steps = min(50, len(alpha_bars)) if steps is None else steps
    return SAMPLERS[sampler](denoiser, shape, alpha_bars, steps, **kwargs)


def annealed_langevin_sample(
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: Sequence[int],
    sigmas: torch.Tensor,
    *,
    steps_per_level: int = 100,
    epsilon: float = 2e-5,
    generator: Optional[torch.Generator] = None,
    device: Optional[Union[torch.device, str]] = None,
    start: Optional[torch.Tensor] = None,
    progress: bool = False,
    cuda_graph: bool = False,
) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon, 2019, Algorithm 1): for each noise level σ_i of
    the decreasing `sigmas` (L,), `steps_per_level` unadjusted Langevin steps (one fused kernel
    each) with step size epsilon · σ_i² / σ_L², on the score `score(x, i)` of the data blurred at
    σ_i (i an (N,) int64 index into sigmas). Starts from `start`, or N(0, σ_1² I).

    Args:
        score: the score model, score(x, i) -> ∇_x log p_σ_i(x), shaped like x.
        shape: (N, ...) of the samples.
        sigmas: the noise levels σ_1 > ... > σ_L > 0, shape (L,), best on the CPU (read once).
        steps_per_level: the Langevin steps at each level.
        epsilon: the step size at the last level σ_L.
        generator: draws the start and each step's seed; None: torch's global generator.
        device: where the samples are made; None: sigmas' device.
        start: the initial sample, of `shape`; None: drawn from N(0, σ_1² I).
        progress: show a progress bar.
        cuda_graph: replay one captured step in a CUDA graph (CUDA tensors, Triton backend).

    Returns:
        The samples, of `shape`, on `device`.

    Raises:
        ValueError: cuda_graph off CUDA.
    """
    device = _device_of(device, sigmas)
    levels = _host(sigmas)
    sizes = [epsilon * s * s / (levels[-1] ** 2) for s in levels]
    count = len(levels) * steps_per_level
    seeds = _seeds(count, generator)
    rows = [_row(sizes[i // steps_per_level], 0.0, seed=seeds[i]) for i in range(count)]
    call = _Call("langevin", rows, {})
    level_of_step = [i // steps_per_level for i in range(count)]
    loop = _Loop(
        lambda x, t: score(x, t), None, level_of_step, shape[0], device, [call], "langevin"
    )

    def step(i, x, graph):
        return (call.run(i, x, loop.evaluate(x, loop.model_time(i, graph))[0], graph),)

    x = start.to(device) if start is not None else levels[0] * draw(shape, generator, device)
    return loop.run(step, x, count, progress, cuda_graph)
