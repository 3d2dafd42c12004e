"""k-diffusion's samplers (k-diffusion 0.1.x, `k_diffusion.sampling`) over the engine's fused
diffusion steps: `sample_euler`, `sample_euler_ancestral`, `sample_heun` and `sample_dpmpp_2m`.

Same signatures, same callback dictionaries ({'x', 'i', 'sigma', 'sigma_hat', 'denoised'}), the
same progress bar (tqdm's trange with `disable`) and the same noise: where upstream draws
`torch.randn_like(x)` (Euler's and Heun's churn, the ancestral sampler's default noise sampler)
or calls a given `noise_sampler(sigma, sigma_next)`, the drop-in draws or calls it too, in the
same order, and hands the numbers to the step kernel; with the same global seed it returns
upstream's samples to rounding.

    from gdm_engine.integrations import k_diffusion as K
    x = K.sample_heun(denoiser, x, sigmas)        # as k_diffusion.sampling.sample_heun

`model(x, sigma, **extra_args)` is k-diffusion's denoiser: it returns D(x; σ), the estimate of the
clean sample, for x in the σ (variance-exploding) form x = x0 + σ ε and sigma an (N,) tensor in
x's dtype. `sigmas` is the 1-D schedule from high to low noise (k-diffusion's get_sigmas_karras,
get_sigmas_exponential, ...), usually ending in 0.

What differs is the work per step:
- the schedule is read to the host once, at the start (one copy), and every coefficient is
  computed there in float64. Upstream's per-step comparisons of device sigmas
  (`s_tmin <= sigmas[i] <= s_tmax`, `sigmas[i + 1] > 0`, the min in get_ancestral_step) each
  wait for the GPU (k-diffusion issue 108);
- each model evaluation is followed by exactly one fused step kernel (`ops.diffusion.loop_step`)
  instead of a chain of tensor ops. Euler's and Heun's churn (Karras et al., 2022, Algorithm 2,
  lines 5-6) for step i + 1 is added by step i's kernel; only a churned first step costs one
  launch before the loop.

k-diffusion does not need to be installed to use this module (there is nothing to subclass: the
samplers are functions with upstream's signatures). `upstream_sampling()` loads upstream's
module where it is installed, for the tests and the benchmarks.
"""

import importlib
import importlib.util
import math
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, Optional, cast

import torch
from tqdm.auto import trange

from gdm_engine._validation import check_tensor
from gdm_engine.integrations import BenchmarkPair
from gdm_engine.ops.diffusion import loop_step

# k-diffusion's denoiser: model(x, sigma, **extra_args) -> D(x; σ)
Denoiser = Callable[..., torch.Tensor]
# the callback: called with {'x', 'i', 'sigma', 'sigma_hat', 'denoised'}
Callback = Callable[[dict[str, Any]], object]

# Karras et al. (2022), Algorithm 2: the churn γ is capped at √2 − 1 (σ̂ at most √2 σ)
CHURN_CAP = 2**0.5 - 1
# a churn γ with √((1 + γ)² − 1) = 1: the Euler step's noise is then s_noise · σ_next · z
UNIT_CHURN = 2**0.5 - 1


# --------------------------------------------------------------------------------------------------
# the schedule, read once
# --------------------------------------------------------------------------------------------------


def _check_number(name: str, value: float, low: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not value >= low:  # NaN fails too
        raise ValueError(f"{name} must be a float >= {low}, got {value!r}")


def _read_sigmas(x: torch.Tensor, sigmas: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
    """(host tensor, float64 values) of the schedule: its one read, checked on the host."""
    check_tensor("x", x)
    if x.ndim < 1:
        raise ValueError("x must have shape (N, ...): a batch of examples, got a scalar")
    check_tensor("sigmas", sigmas, ndim=1)
    if sigmas.numel() == 0:
        raise ValueError("sigmas must hold at least one noise level, got an empty tensor")
    host = sigmas.detach().to("cpu")
    values = host.double().tolist()
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"sigmas must be finite, got {values}")
    if any(v <= 0 for v in values[:-1]) or values[-1] < 0:
        raise ValueError(f"sigmas must be > 0 but for the last, which may be 0, got {values}")
    if any(b > a for a, b in zip(values, values[1:])):
        raise ValueError(f"sigmas must not increase (noise levels from high to low), got {values}")
    return host, values


def _model_levels(levels: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Upstream's σ·s_in with s_in = x.new_ones([N]): the model's (N,) noise level in x's dtype,
    for every step at once, as rows of a (steps, N) table (each step's input is a view)."""
    return levels.to(x.device, x.dtype)[:, None].expand(-1, x.shape[0]).contiguous()


def _gammas(host: torch.Tensor, s_churn: float, s_tmin: float, s_tmax: float) -> list[float]:
    """Each step's churn γ_i (Karras et al., 2022, Algorithm 2): min(s_churn / steps, √2 − 1)
    where s_tmin <= σ_i <= s_tmax, else 0. Compared in the schedule's own dtype, as upstream."""
    steps = len(host) - 1
    if steps == 0:
        return []
    gamma = min(s_churn / steps, CHURN_CAP)
    inside = ((host[:-1] >= s_tmin) & (host[:-1] <= s_tmax)).tolist()
    return [gamma if within else 0.0 for within in inside]


def _raised_levels(
    sigmas: torch.Tensor, host: torch.Tensor, gammas: Sequence[float]
) -> tuple[list[float], torch.Tensor]:
    """(host floats, device tensor) of σ̂_i = σ_i (γ_i + 1), rounded as upstream's
    `sigmas[i] * (gamma + 1)`: a product in at least fp32, stored in the schedule's dtype. The
    tensor (for the callback's 'sigma_hat') is the one host-to-device copy, made only where some
    step churns."""
    if not any(gammas):
        return host[:-1].double().tolist(), sigmas[:-1]
    factors = torch.tensor(
        [g + 1 for g in gammas], dtype=torch.promote_types(host.dtype, torch.float32)
    )
    raised = (host[:-1] * factors).to(host.dtype)
    return raised.double().tolist(), raised.to(sigmas.device)


def _extra(extra_args: Optional[dict[str, Any]]) -> dict[str, Any]:
    return {} if extra_args is None else extra_args


def _denoise(
    model: Denoiser,
    x: torch.Tensor,
    level: torch.Tensor,
    extra_args: dict[str, Any],
    callback: Optional[Callback],
    i: int,
    sigma: torch.Tensor,
    sigma_hat: torch.Tensor,
) -> torch.Tensor:
    """The model's D(x; σ) at the (N,) level, reported to `callback` as upstream reports it."""
    denoised = model(x, level, **extra_args)
    if callback is not None:
        callback({"x": x, "i": i, "sigma": sigma, "sigma_hat": sigma_hat, "denoised": denoised})
    return denoised


# --------------------------------------------------------------------------------------------------
# Euler and Heun (Karras et al., 2022, Algorithm 2)
# --------------------------------------------------------------------------------------------------


def _karras(
    second_order: bool,
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Optional[dict[str, Any]],
    callback: Optional[Callback],
    disable: Optional[bool],
    s_churn: float,
    s_tmin: float,
    s_tmax: float,
    s_noise: float,
) -> torch.Tensor:
    host, values = _read_sigmas(x, sigmas)
    _check_number("s_churn", s_churn)
    _check_number("s_noise", s_noise)
    extra, steps = _extra(extra_args), len(values) - 1
    gammas = _gammas(host, s_churn, s_tmin, s_tmax)
    raised, raised_tensor = _raised_levels(sigmas, host, gammas)
    at_raised = _model_levels(raised_tensor, x)
    at_next = _model_levels(sigmas[1:], x) if second_order else None
    # upstream draws ε = randn_like(x) at the start of every step once any step churns (the
    # draws of unchurned steps are discarded, but they advance the generator)
    noisy = any(gammas)
    if noisy:
        first = torch.randn_like(x)
        if gammas[0]:  # the first step's churn: one launch before the loop
            x = cast(
                torch.Tensor,
                loop_step(
                    "euler",
                    x,
                    x,
                    (values[0], values[0]),
                    prediction="x0",
                    churn=gammas[0],
                    s_noise=s_noise,
                    noise=first,
                ),
            )
    for i in trange(steps, disable=disable):
        denoised = _denoise(model, x, at_raised[i], extra, callback, i, sigmas[i], raised_tensor[i])
        sigma, sigma_next = raised[i], values[i + 1]
        second: dict[str, Any] = {}
        if (
            at_next is not None and sigma_next > 0
        ):  # Heun's correction: the model at the Euler point
            point = cast(
                torch.Tensor, loop_step("euler", x, denoised, (sigma, sigma_next), prediction="x0")
            )
            second["second"] = model(point, at_next[i], **extra)
        # the next step's churn, fused: its ε is drawn now, as upstream draws it next
        churn = gammas[i + 1] if i + 1 < steps else 0.0
        noise = torch.randn_like(x) if noisy and i + 1 < steps else None
        x = cast(
            torch.Tensor,
            loop_step(
                "heun" if second else "euler",
                x,
                denoised,
                (sigma, sigma_next),
                prediction="x0",
                churn=churn,
                s_noise=s_noise,
                noise=noise if churn else None,
                **second,
            ),
        )
    return x


@torch.no_grad()
def sample_euler(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Optional[dict[str, Any]] = None,
    callback: Optional[Callback] = None,
    disable: Optional[bool] = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """k-diffusion's `sample_euler`: Euler steps of Karras et al. (2022), Algorithm 2, with churn
    γ = min(s_churn / steps, √2 − 1) on the steps whose σ lies in [s_tmin, s_tmax]. One fused
    kernel per step.

    Args:
        model: k-diffusion's denoiser, model(x, sigma, **extra_args) -> D(x; σ).
        x: the initial noise, x = σ_0 z, (N, ...).
        sigmas: the schedule (steps + 1,), from high to low noise, usually ending in 0.
        extra_args: keyword arguments for `model` (None: none).
        callback: called after each model evaluation with {'x', 'i', 'sigma', 'sigma_hat',
            'denoised'}, as upstream's.
        disable: disables the progress bar (tqdm's `disable`).
        s_churn: the churn S_churn (0: none).
        s_tmin: the lowest σ that churns.
        s_tmax: the highest σ that churns.
        s_noise: S_noise, the churn noise's scale.

    Returns:
        The sample at the last σ, shaped like x.

    Raises:
        TypeError: x or sigmas is not a tensor, or a number argument is not a float.
        ValueError: x is a scalar; sigmas is empty, not finite, not > 0 but for its last (>= 0)
            or increasing; s_churn or s_noise below 0.
    """
    return _karras(
        False, model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise
    )


@torch.no_grad()
def sample_heun(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Optional[dict[str, Any]] = None,
    callback: Optional[Callback] = None,
    disable: Optional[bool] = None,
    s_churn: float = 0.0,
    s_tmin: float = 0.0,
    s_tmax: float = float("inf"),
    s_noise: float = 1.0,
) -> torch.Tensor:
    """k-diffusion's `sample_heun`: Heun's second-order steps of Karras et al. (2022), Algorithm
    2 (Euler's where σ_next = 0). Two model evaluations and two fused kernels (the Euler point,
    then the corrected step) per step.

    Args:
        model: k-diffusion's denoiser, model(x, sigma, **extra_args) -> D(x; σ).
        x: the initial noise, x = σ_0 z, (N, ...).
        sigmas: the schedule (steps + 1,), from high to low noise, usually ending in 0.
        extra_args: keyword arguments for `model` (None: none).
        callback: called after each model evaluation with {'x', 'i', 'sigma', 'sigma_hat',
            'denoised'}, as upstream's.
        disable: disables the progress bar (tqdm's `disable`).
        s_churn: the churn S_churn (0: none).
        s_tmin: the lowest σ that churns.
        s_tmax: the highest σ that churns.
        s_noise: S_noise, the churn noise's scale.

    Returns:
        The sample at the last σ, shaped like x.

    Raises:
        TypeError: x or sigmas is not a tensor, or a number argument is not a float.
        ValueError: x is a scalar; sigmas is empty, not finite, not > 0 but for its last (>= 0)
            or increasing; s_churn or s_noise below 0.
    """
    return _karras(
        True, model, x, sigmas, extra_args, callback, disable, s_churn, s_tmin, s_tmax, s_noise
    )


# --------------------------------------------------------------------------------------------------
# Euler ancestral
# --------------------------------------------------------------------------------------------------


def _ancestral_levels(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(σ_down, σ_up) of an ancestral step from σ to σ_next: DDIM's η noise (Song et al., 2021,
    eq. 16) in the σ form, σ_up = η σ_next √(1 − σ_next²/σ²) capped at σ_next, and
    σ_down = √(σ_next² − σ_up²), so that σ_down² + σ_up² = σ_next²."""
    if not eta:
        return sigma_next, 0.0
    up = min(sigma_next, eta * sigma_next * math.sqrt(1 - (sigma_next / sigma) ** 2))
    return math.sqrt(max(sigma_next**2 - up**2, 0.0)), up


def _ancestral_step(
    sigma: float, sigma_next: float, eta: float, s_noise: float, noise: Optional[torch.Tensor]
) -> dict[str, Any]:
    """loop_step's arguments for x' = x + (σ_down − σ)(x − D)/σ + s_noise σ_up z: the Euler step
    to σ_down, whose churn noise (level · σ_down · z) carries s_noise σ_up."""
    down, up = _ancestral_levels(sigma, sigma_next, eta)
    if noise is None or up * s_noise == 0:
        return {"values": (sigma, down)}
    noisy: dict[str, Any] = {"churn": UNIT_CHURN, "noise": noise}
    if down > 0:
        return {"values": (sigma, down), "s_noise": s_noise * up / down, **noisy}
    # σ_down = 0 (η > 1, σ_up capped at σ_next): x' = D + s_noise σ_up z, written as the Euler
    # step to σ/2 of x·0, doubled: 2 (D/2 + level · σ/2 · z)
    return {
        "values": (sigma, sigma / 2),
        "scales": (0.0, 2.0),
        "s_noise": s_noise * up / sigma,
        **noisy,
    }


def _noise(
    noise_sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    sigmas: torch.Tensor,
    i: int,
    x: torch.Tensor,
) -> torch.Tensor:
    noise = noise_sampler(sigmas[i], sigmas[i + 1])
    if not isinstance(noise, torch.Tensor) or noise.shape != x.shape:
        raise ValueError(
            f"noise_sampler must return a tensor shaped like x, {tuple(x.shape)}, "
            f"got {getattr(noise, 'shape', type(noise).__name__)}"
        )
    return noise


@torch.no_grad()
def sample_euler_ancestral(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Optional[dict[str, Any]] = None,
    callback: Optional[Callback] = None,
    disable: Optional[bool] = None,
    eta: float = 1.0,
    s_noise: float = 1.0,
    noise_sampler: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> torch.Tensor:
    """k-diffusion's `sample_euler_ancestral`: an Euler step down to σ_down, then s_noise σ_up of
    fresh noise (DDIM with η in the σ form, Song et al., 2021, eq. 16), from
    `noise_sampler(sigma, sigma_next)` (default: torch.randn_like of the initial x, as upstream).
    One fused kernel per step.

    Args:
        model: k-diffusion's denoiser, model(x, sigma, **extra_args) -> D(x; σ).
        x: the initial noise, x = σ_0 z, (N, ...).
        sigmas: the schedule (steps + 1,), from high to low noise, usually ending in 0.
        extra_args: keyword arguments for `model` (None: none).
        callback: called after each model evaluation with {'x', 'i', 'sigma', 'sigma_hat',
            'denoised'}, as upstream's.
        disable: disables the progress bar (tqdm's `disable`).
        eta: η, the share of fresh noise (0: deterministic, 1: ancestral sampling).
        s_noise: the fresh noise's scale.
        noise_sampler: noise_sampler(sigma, sigma_next) -> a tensor shaped like x (None:
            torch.randn_like of the initial x).

    Returns:
        The sample at the last σ, shaped like x.

    Raises:
        TypeError: x or sigmas is not a tensor, or a number argument is not a float.
        ValueError: x is a scalar; sigmas is empty, not finite, not > 0 but for its last (>= 0)
            or increasing; eta or s_noise below 0; noise_sampler returns no tensor shaped like x.
    """
    host, values = _read_sigmas(x, sigmas)
    _check_number("eta", eta)
    _check_number("s_noise", s_noise)
    extra, steps = _extra(extra_args), len(values) - 1
    if noise_sampler is None:
        initial = x
        noise_sampler = lambda sigma, sigma_next: torch.randn_like(initial)  # noqa: E731
    at_sigma = _model_levels(sigmas[:-1], x)
    for i in trange(steps, disable=disable):
        denoised = _denoise(model, x, at_sigma[i], extra, callback, i, sigmas[i], sigmas[i])
        sigma, sigma_next = values[i], values[i + 1]
        noise = _noise(noise_sampler, sigmas, i, x) if sigma_next > 0 else None
        x = cast(
            torch.Tensor,
            loop_step(
                "euler",
                x,
                denoised,
                prediction="x0",
                **_ancestral_step(sigma, sigma_next, eta, s_noise, noise),
            ),
        )
    return x


# --------------------------------------------------------------------------------------------------
# DPM-Solver++(2M)
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_dpmpp_2m(
    model: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    extra_args: Optional[dict[str, Any]] = None,
    callback: Optional[Callback] = None,
    disable: Optional[bool] = None,
) -> torch.Tensor:
    """k-diffusion's `sample_dpmpp_2m`: DPM-Solver++(2M) (Lu et al., 2022, Algorithm 2),
    first order on the first step and where σ_next = 0. One fused kernel per step.

    Args:
        model: k-diffusion's denoiser, model(x, sigma, **extra_args) -> D(x; σ).
        x: the initial noise, x = σ_0 z, (N, ...).
        sigmas: the schedule (steps + 1,), from high to low noise, usually ending in 0.
        extra_args: keyword arguments for `model` (None: none).
        callback: called after each model evaluation with {'x', 'i', 'sigma', 'sigma_hat',
            'denoised'}, as upstream's.
        disable: disables the progress bar (tqdm's `disable`).

    Returns:
        The sample at the last σ, shaped like x.

    Raises:
        TypeError: x or sigmas is not a tensor.
        ValueError: x is a scalar; sigmas is empty, not finite, not > 0 but for its last (>= 0)
            or increasing.
    """
    _, values = _read_sigmas(x, sigmas)
    extra, steps = _extra(extra_args), len(values) - 1
    at_sigma = _model_levels(sigmas[:-1], x)
    previous: dict[str, Any] = {}
    for i in trange(steps, disable=disable):
        denoised = _denoise(model, x, at_sigma[i], extra, callback, i, sigmas[i], sigmas[i])
        sigma_prev = values[i - 1] if i else 1.0  # unused on the first step
        x, _ = loop_step(
            "dpmpp_2m",
            x,
            denoised,
            (values[i], values[i + 1], sigma_prev),
            prediction="x0",
            **previous,
        )
        previous = {"second": denoised}
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "sample_euler": sample_euler,
    "sample_euler_ancestral": sample_euler_ancestral,
    "sample_heun": sample_heun,
    "sample_dpmpp_2m": sample_dpmpp_2m,
}


# --------------------------------------------------------------------------------------------------
# upstream, for the tests and the benchmarks
# --------------------------------------------------------------------------------------------------

# a private name: a user's own `import k_diffusion` stays untouched
_UPSTREAM = "_gdm_upstream_k_diffusion"


def _placeholder_torchvision() -> list[str]:
    """Modules standing in for torchvision while k_diffusion.utils is loaded: it imports
    torchvision.transforms.functional for its PIL conversions, which the samplers never call.
    Returns the names put in sys.modules (none where torchvision is importable)."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return []
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.functional"]
    modules: list[Any] = [types.ModuleType(name) for name in names]  # attributes set below
    modules[0].transforms, modules[1].functional = modules[1], modules[2]
    sys.modules.update(zip(names, modules))
    return names


def upstream_sampling() -> Optional[types.ModuleType]:
    """k-diffusion's `sampling` module, or None where k-diffusion (or a module its samplers
    import: scipy, torchdiffeq, torchsde, tqdm, PIL, safetensors) is not installed.

    k-diffusion's package __init__ imports its training and evaluation modules (clip, clean-fid,
    torchvision, ...), which the samplers never use; so the installed folder is registered as a
    bare package under a private name, without running the __init__, and only `sampling` (with
    the `utils` it imports) is loaded from it. Loaded once, then cached.

    Returns:
        The module (k_diffusion.sampling under a private package name), or None.
    """
    if _UPSTREAM in sys.modules:
        return getattr(sys.modules[_UPSTREAM], "sampling", None)
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        return None
    package: Any = types.ModuleType(_UPSTREAM)  # attributes set below
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules[_UPSTREAM] = package
    placeholders = _placeholder_torchvision()
    try:
        package.sampling = importlib.import_module(f"{_UPSTREAM}.sampling")
    except ImportError:
        package.sampling = None
    finally:
        for name in placeholders:
            sys.modules.pop(name, None)
    return package.sampling


# --------------------------------------------------------------------------------------------------
# the speed table's pairs
# --------------------------------------------------------------------------------------------------


def _toy_denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A cheap stand-in for a network: the posterior mean of x0 under a unit Gaussian prior."""
    return x / (1 + sigma[:, None, None, None] ** 2)


def benchmark_pairs(size: str) -> list[BenchmarkPair]:
    """[(name, case, upstream, dropin)]: zero-argument callables that each run one sampler loop
    of `steps` steps on a trivial denoiser (one call = one loop: the ratio is the steps'),
    upstream's and the drop-in's, on CPU tensors built once; [] where k-diffusion is not
    installed. size: "tiny" or "medium".

    Args:
        size: "tiny" or "medium".

    Returns:
        One pair per sampler (empty where k-diffusion is not installed).

    Raises:
        ValueError: another size.
    """
    if size not in ("tiny", "medium"):
        raise ValueError(f"size must be 'tiny' or 'medium', got {size!r}")
    upstream = upstream_sampling()
    if upstream is None:
        return []
    shape, steps = ((2, 3, 8, 8), 8) if size == "tiny" else ((8, 4, 64, 64), 8)
    sigmas = upstream.get_sigmas_karras(steps, 0.01, 80.0)
    x = 80.0 * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    case = f"x={shape}, a loop of {steps} steps"
    options: dict[str, dict[str, Any]] = {
        "sample_euler": {"s_churn": 1.0},
        "sample_euler_ancestral": {},
        "sample_heun": {},
        "sample_dpmpp_2m": {},
    }

    def run(sampler: Callable[..., torch.Tensor], kwargs: dict[str, Any]) -> Callable[[], object]:
        return lambda: sampler(_toy_denoiser, x, sigmas, disable=True, **kwargs)

    return [
        (
            f"k_diffusion.{name}",
            case,
            run(getattr(upstream, name), kwargs),
            run(SAMPLERS[name], kwargs),
        )
        for name, kwargs in options.items()
    ]
