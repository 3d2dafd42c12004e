"""Inpainting: the masked pixels of images filled in from a model, given the other pixels.

    mask = bottom_half_mask(data.shape)              # True: a pixel to fill
    completed = complete(model, images, mask)        # images' levels kept where mask is False
    completion_accuracy(model, data, feature_network(), mask)

How depends on the model:

* autoregressive models (PixelCNN, WaveNet): exact conditional sampling, where the missing
  pixels are a suffix of the model's draw order (the bottom half of a raster): the sampler
  walks the positions in order, keeping the given levels and drawing the rest from their
  conditionals, so the completion is a draw of p(suffix | prefix).
* DDPM: RePaint (Lugmayr et al., 2022, Algorithm 1), for any mask.
* flows (RealNVP, Glow, NSF): Langevin dynamics on the missing pixels under the flow's density,
  the given pixels held at the middles of their levels' cells.
"""

from collections.abc import Callable
from typing import Any, Optional, cast

import torch

from gdm_engine import digit_features, ops, sampling
from gdm_engine._modules import evaluating
from gdm_engine._random import draw
from gdm_engine._validation import check_int
from gdm_engine.data import Data, cell_centres, quantize
from gdm_engine.models.autoregressive import AutoregressiveModel, draw_categorical
from gdm_engine.models.base import GenerativeModel, check_levels
from gdm_engine.models.ddpm import DDPM
from gdm_engine.models.flow import FlowModel

# RePaint's defaults. Lugmayr et al. run 250 strided steps with 10 resamplings; a forward pass of
# the digits U-Net (width 64) on the 297 test images takes about 0.9 s on one CPU thread, so 100
# steps x 5 resamplings (500 passes) take about 7 minutes there, and 1000 x 5 over an hour.
REPAINT_STEPS = 100
REPAINT_RESAMPLINGS = 5
# Langevin on a flow: steps, and the step size in units of one level's cell width squared. On
# the digits' RealNVP (bottom halves of 100 test digits, 200 steps) the classifier's accuracy on
# the completions was 0.44 at 0.1, 0.53 at 0.5, 0.52 at 1 and 0.38 at 2: at 0.1 the missing
# pixels barely move from their random start (200 steps diffuse about 1.4 cells)
LANGEVIN_STEPS = 200
LANGEVIN_STEP_SIZE = 0.5


def bottom_half_mask(shape: tuple[int, ...]) -> torch.Tensor:
    """The bottom half of one image (C, H, W): True on its last H // 2 rows.

    Args:
        shape: (C, H, W) of one image.

    Returns:
        A bool mask of `shape`, True where a pixel is to be filled.

    Raises:
        ValueError: shape is not (C, H, W).
    """
    return _half_mask(shape, axis=1)


def right_half_mask(shape: tuple[int, ...]) -> torch.Tensor:
    """The right half of one image (C, H, W): True on its last W // 2 columns.

    Args:
        shape: (C, H, W) of one image.

    Returns:
        A bool mask of `shape`, True where a pixel is to be filled.

    Raises:
        ValueError: shape is not (C, H, W).
    """
    return _half_mask(shape, axis=2)


def _half_mask(shape: tuple[int, ...], axis: int) -> torch.Tensor:
    """True on the last half (rounded down) of the indices along `axis` of an image shape."""
    if len(shape) != 3 or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape must be an image's (C, H, W), got {tuple(shape)}")
    size = shape[axis]
    along = torch.arange(size) >= size - size // 2
    return along.view([size if a == axis else 1 for a in range(3)]).expand(shape).clone()


def complete(
    model: GenerativeModel,
    condition: torch.Tensor,
    mask: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    **options: Any,
) -> torch.Tensor:
    """The pixels of `condition` where `mask` is True filled in by `model`, given the others.

    Autoregressive models sample exactly from p(missing | given) (`autoregressive_completion`,
    masks that are a suffix of the draw order), DDPM by RePaint (`repaint`, any mask), flows by
    Langevin dynamics (`langevin_completion`); `options` go to that function.

    Args:
        model: an autoregressive model, a DDPM or a flow.
        condition: (N, *shape) examples as the model takes them (integer levels for discrete
            data); the values under the mask are ignored.
        mask: a bool tensor broadcastable to condition, True where a pixel is to be filled.
        generator: draws the completions' randomness (None: torch's global generator).
        **options: the chosen method's options (`steps`, `resamplings`, `labels` for DDPM;
            `steps`, `step_size` for flows).

    Returns:
        (N, *shape) examples on the model's device, equal to condition where mask is False.

    Raises:
        TypeError: condition is not a tensor (of integer levels for discrete data), mask not a
            bool tensor, or an option the method does not take.
        ValueError: the model is not one of the supported families, condition is not shaped
            (N, *shape) or holds a level outside 0 .. levels − 1, mask does not broadcast to
            condition, or (autoregressive models) mask is not a suffix of the draw order.
    """
    method = completion_method(model)
    condition = _checked_condition(model, condition)
    mask = _checked_mask(mask, condition)
    filled = method(model, condition, mask, generator, **options)
    return torch.where(mask, filled, condition)  # a guarantee: the methods keep them too


def completion_method(model: GenerativeModel) -> Callable[..., torch.Tensor]:
    """The completion function of the model's family, the one `complete` runs.

    Args:
        model: the model.

    Returns:
        autoregressive_completion, repaint or langevin_completion.

    Raises:
        ValueError: the model's family has no completion method.
    """
    methods: list[tuple[type, Callable[..., torch.Tensor]]] = [
        (AutoregressiveModel, autoregressive_completion),
        (DDPM, repaint),
        (FlowModel, langevin_completion),
    ]
    for family, method in methods:
        if isinstance(model, family):
            return method
    raise ValueError(
        f"inpainting does not support {type(model).__name__} models; it supports autoregressive "
        f"models (PixelCNN, WaveNet), DDPM and flows (RealNVP, Glow, NSF)"
    )


def _checked_condition(model: GenerativeModel, condition: torch.Tensor) -> torch.Tensor:
    """condition (N, *shape) as the model takes it, on the model's device."""
    model.check_shape(condition, "condition")
    if model.levels is not None:
        check_levels("condition", condition, model.levels)
        condition = condition.long()
    return condition.to(model.device)


def _checked_mask(mask: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
    """mask as a bool tensor of condition's shape and device."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool tensor (True: a pixel to fill), got {got}")
    try:
        return mask.to(condition.device).expand_as(condition)
    except RuntimeError:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to condition's shape "
            f"{tuple(condition.shape)}"
        ) from None


# ---- autoregressive models: exact conditional sampling ------------------------------------------


@torch.no_grad()
def autoregressive_completion(
    model: AutoregressiveModel,
    condition: torch.Tensor,
    mask: torch.Tensor,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """An exact draw of p(missing | given) where each example's missing pixels are a suffix of
    the model's draw order: the cached sampler walks the positions in that order, keeping the
    given levels (which the model then conditions on) and drawing the others from their
    conditionals. One uniform is drawn per example and position, as in `model.sample`.

    Args:
        model: a PixelCNN or WaveNet.
        condition: (N, *shape) integer levels on the model's device.
        mask: bool, condition's shape and device, True where a pixel is to be filled.
        generator: draws the levels (None: torch's global generator).

    Returns:
        (N, *shape) integer levels, equal to condition where mask is False.

    Raises:
        ValueError: an example's missing pixels are not a suffix of the draw order.
    """
    order = model.draw_order().to(condition.device)
    missing = mask.flatten(1)[:, order]  # (N, positions), in draw order
    if (missing[:, :-1] & ~missing[:, 1:]).any():
        raise ValueError(
            f"mask must be a suffix of {model.name}'s draw order (given pixels first, then the "
            f"missing ones, e.g. the bottom half of a raster); use a DDPM for any other mask"
        )
    given = condition.flatten(1)[:, order]
    positions = iter(range(len(order)))

    def keep_or_draw(logits: torch.Tensor) -> torch.Tensor:
        position = next(positions)
        drawn = draw_categorical(logits, generator)
        return torch.where(missing[:, position], drawn, given[:, position])

    x = condition.clone()
    model.generate(x, keep_or_draw)
    return x


# ---- DDPM: RePaint ------------------------------------------------------------------------------


@torch.no_grad()
def repaint(
    model: DDPM,
    condition: torch.Tensor,
    mask: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    steps: Optional[int] = None,
    resamplings: int = REPAINT_RESAMPLINGS,
    labels: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """RePaint (Lugmayr et al., 2022, Algorithm 1) over `steps` evenly spaced steps of the
    schedule: at each reverse step t -> t−1 the given pixels are the condition forward-noised
    to t−1, x_{t−1} ~ q(x_{t−1} | x_0) (eq. 8), and the missing ones the model's ancestral step
    (eq. 9); `resamplings` times in all, x_{t−1} is noised back to x_t by the forward step
    q(x_t | x_{t−1}) and the step repeated (sec. 4.2, jump length 1), so that the missing
    pixels harmonise with the given ones. The last step keeps the given pixels exactly.

    Cost: steps × resamplings network passes (see REPAINT_STEPS).

    Args:
        model: the DDPM.
        condition: (N, *shape) examples (integer levels for discrete data) on the model's
            device.
        mask: bool, condition's shape and device, True where a pixel is to be filled.
        generator: draws the noise (None: torch's global generator).
        steps: reverse steps, evenly spaced over the schedule (None: REPAINT_STEPS, or all the
            model's timesteps if fewer).
        resamplings: U, the passes per step (1: no resampling).
        labels: (N,) int64 classes of a conditional model (None: the null label).

    Returns:
        (N, *shape) examples, equal to condition where mask is False.

    Raises:
        TypeError: steps or resamplings is not an int; labels are not an int64 (N,) tensor.
        ValueError: steps is outside 1 .. timesteps, resamplings below 1; labels are given to
            an unconditional model or lie outside 0 .. classes − 1.
    """
    steps = min(REPAINT_STEPS, model.timesteps) if steps is None else steps
    times = sampling.spaced_timesteps(model.timesteps, steps).tolist()
    check_int("resamplings", resamplings, 1)
    denoiser = model.denoiser(model._check_labels(labels, len(condition)))
    # read once, as the samplers do; index −1, after the last step, is the clean data (ᾱ = 1)
    alpha_bars = model.alpha_bars.tolist() + [1.0]
    x0 = model._inputs(condition)
    x = draw(x0.shape, generator, x0.device)
    for t, t_prev in zip(times, times[1:] + [-1]):
        a_t, a_prev = alpha_bars[t], alpha_bars[t_prev]
        t_batch = torch.full((len(x),), t, dtype=torch.long, device=x.device)
        for _ in range(resamplings - 1 if a_prev < 1 else 0):
            previous = _repaint_step(model, denoiser, x, x0, mask, t_batch, a_t, a_prev, generator)
            # back to t: q(x_t | x_{t−1}) = N(sqrt(ᾱ_t / ᾱ_{t−1}) x_{t−1}, (1 − ᾱ_t / ᾱ_{t−1}) I)
            x = ops.q_sample(previous, a_t / a_prev, draw(x0.shape, generator, x0.device))
        x = _repaint_step(model, denoiser, x, x0, mask, t_batch, a_t, a_prev, generator)
    return model._outputs(x)


def _repaint_step(
    model: DDPM,
    denoiser: Callable[..., Any],
    x: torch.Tensor,
    x0: torch.Tensor,
    mask: torch.Tensor,
    t: torch.Tensor,
    a_t: float,
    a_prev: float,
    generator: Optional[torch.Generator],
) -> torch.Tensor:
    """x_{t−1}: the model's ancestral step where mask is True, q(x_{t−1} | x0) elsewhere
    (Lugmayr et al., 2022, Algorithm 1, lines 5-8)."""
    output = cast(torch.Tensor, denoiser(x, t))  # unguided: one tensor
    unknown = ops.ddpm_step(
        x,
        output,
        a_t,
        a_prev,
        prediction=model.prediction,
        clip=model._clip("ddpm").get("clip"),  # x̂0 clipped to [−1, 1] for discrete data
        generator=generator,
    )
    known = ops.q_sample(x0, a_prev, draw(x0.shape, generator, x0.device))
    return torch.where(mask, unknown, known)


# ---- flows: Langevin dynamics -------------------------------------------------------------------


def langevin_completion(
    model: FlowModel,
    condition: torch.Tensor,
    mask: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    steps: int = LANGEVIN_STEPS,
    step_size: Optional[float] = None,
) -> torch.Tensor:
    """The missing pixels drawn by unadjusted Langevin dynamics under the flow's density,
    y <- y + (ε/2) ∇ log p(y) + sqrt(ε) z (Song & Ermon, 2019, eq. 4), in the flow's continuous
    space ([0, 1) for discrete data, see gdm_engine.data.dequantize), the given pixels held at
    the middles of their levels' cells (their values for continuous data), then quantised. It
    samples p(missing | given) only approximately (finite steps, no Metropolis correction).

    Args:
        model: the flow.
        condition: (N, *shape) examples (integer levels for discrete data) on the model's
            device.
        mask: bool, condition's shape and device, True where a pixel is to be filled.
        generator: draws the start and the noise (None: torch's global generator).
        steps: Langevin steps.
        step_size: ε (None: (LANGEVIN_STEP_SIZE · w)², w = 1 / levels, a level's cell width,
            or 1 for continuous data).

    Returns:
        (N, *shape) examples, equal to condition where mask is False.

    Raises:
        TypeError: steps is not an int.
        ValueError: steps is below 1.
    """
    check_int("steps", steps, 1)
    cell = 1.0 if model.levels is None else 1 / model.levels
    step_size = (LANGEVIN_STEP_SIZE * cell) ** 2 if step_size is None else step_size
    given = condition.to(model.flow_dtype)
    if model.levels is None:
        start = draw(condition.shape, generator, condition.device)
    else:
        given = cell_centres(given, model.levels).to(model.flow_dtype)
        start = draw(condition.shape, generator, condition.device, uniform=True)
    y = torch.where(mask, start.to(given.dtype), given)
    with evaluating(model):
        for _ in range(steps):
            y = ops.langevin_step(y, _score(model, y), step_size, generator=generator)
            y = torch.where(mask, y if model.levels is None else y.clamp(0, 1), given)
    return y if model.levels is None else quantize(y, model.levels)


def _score(model: FlowModel, y: torch.Tensor) -> torch.Tensor:
    """∇_y log p(y) under the flow."""
    with torch.enable_grad():
        y = y.detach().requires_grad_(True)
        (score,) = torch.autograd.grad(model.log_density(y).sum(), y)
    return score


# ---- the measured figure ------------------------------------------------------------------------


def completion_accuracy(
    model: GenerativeModel,
    data: Data,
    classifier: torch.nn.Module,
    mask: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    n: Optional[int] = None,
    **options: Any,
) -> dict[str, float]:
    """The digit classifier's accuracy against the test split's labels on the model's
    completions of the test images under `mask`, beside its accuracy on the given pixels alone
    (the missing ones blank, level 0) and on the originals.

    Args:
        model: a model `complete` supports, trained on `data`.
        data: the data set (its test split and labels); the digits for the default classifier.
        classifier: a network from images to class logits, e.g.
            gdm_engine.digit_features.feature_network().
        mask: bool mask of one example (or broadcastable to the test split), True where a
            pixel is to be filled (e.g. bottom_half_mask(data.shape)).
        generator: draws the completions (None: torch's global generator).
        n: score the first n test images (None: all of them).
        **options: the completion method's options (see `complete`).

    Returns:
        {"completed": ..., "given_half_only": ..., "original": ...}, accuracies in [0, 1].

    Raises:
        TypeError: n is not an int; as `complete`.
        ValueError: data have no labels, n is below 1; as `complete`.
    """
    if data.labels is None:
        raise ValueError(f"data must have class labels; {data.name} has none")
    if n is not None:
        check_int("n", n, 1)
    images, labels = data.test[:n], data.labels["test"][:n]
    mask = _checked_mask(mask, images)
    given_only = torch.where(mask, 0, images)
    completed = complete(model, given_only, mask, generator, **options)
    device = next(classifier.parameters()).device
    return {
        name: digit_features.accuracy(classifier, x.to(device), labels.to(device))
        for name, x in [
            ("completed", completed),
            ("given_half_only", given_only),
            ("original", images),
        ]
    }
