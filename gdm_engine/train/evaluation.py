"""Held-out figures of a model: its likelihood where it has one, and the quality of its samples
(Fréchet digit distance, precision and recall on digits; sliced Wasserstein, MMD and mode coverage
on the 2-D toys)."""

import contextlib
from collections.abc import Iterator, Mapping
from typing import Optional

import torch

from gdm_engine import metrics
from gdm_engine.data import Data
from gdm_engine.models import GenerativeModel

# samples drawn for the sample figures: the toys' splits hold 5,000 points; 1,000 digits keep
# the Fréchet distance's bias small against the 150 validation and 297 test digits
TOY_SAMPLES, IMAGE_SAMPLES = 2000, 1000
LIKELIHOOD_FIGURES = ("bits_per_dim", "nll_nats")


@contextlib.contextmanager
def _fork_rng(device: torch.device) -> Iterator[None]:
    """Leave torch's global random state as it was: seeding model building, evaluation or
    sampling must not disturb training."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def has_sample_figures(data: Data) -> bool:
    """Whether samples of `data` can be scored: the 2-D toys and other continuous vectors by
    sample distances, the 8x8 digits (17 levels) by the digit feature network.

    Args:
        data: the data set.

    Returns:
        True where `evaluate` can score samples of `data`.
    """
    if data.discrete:
        return data.shape == (1, 8, 8) and data.levels == 17
    return len(data.shape) == 1


def selectable_figures(model: GenerativeModel, data: Data) -> list[str]:
    """The validation figures that can choose `model`'s best checkpoint on `data` (lower is
    better), the default first: its likelihood figure where it has one, then the distances of its
    samples to the split.

    Args:
        model: the model.
        data: the data set it trains on.

    Returns:
        The figures' names (empty where none applies).
    """
    figures = []
    if model.likelihood is not None:
        figures.append("bits_per_dim" if data.discrete else "nll_nats")
    if has_sample_figures(data):
        figures += ["frechet_digit_distance"] if data.discrete else ["sliced_wasserstein", "mmd"]
    return figures


def default_selection(model: GenerativeModel, data: Data) -> str:
    """The validation figure that chooses a model's best checkpoint: its likelihood figure, or
    for a model without one (an EBM, a GAN) the distance of its samples to the split.

    Args:
        model: the model.
        data: the data set it trains on.

    Returns:
        The first of `selectable_figures(model, data)`.

    Raises:
        ValueError: the model has no likelihood and samples of `data` have no figure.
    """
    figures = selectable_figures(model, data)
    if not figures:
        raise ValueError(
            f"model {model.name!r} has no likelihood and the samples of "
            f"{data.name!r} have no figure (the digits and continuous vectors "
            f"have)"
        )
    return figures[0]


def sample_figure_names(data: Data) -> list[str]:
    """The figures figures_of_samples gives for `data`, in order."""
    if not has_sample_figures(data):
        return []
    if data.discrete:
        return ["frechet_digit_distance", "precision", "recall"]
    coverage = ["within_3_sigma", "modes_covered"] if data.name == "8gaussians" else []
    return ["sliced_wasserstein", "mmd", *coverage]


def figures_of_samples(
    drawn: torch.Tensor, data: Data, reference: torch.Tensor, generator: torch.Generator
) -> dict[str, float]:
    """The distances of the samples `drawn` to the examples `reference` of `data`."""
    if data.discrete:
        return metrics.digit_quality(drawn, reference)
    figures = {
        "sliced_wasserstein": metrics.sliced_wasserstein(drawn, reference, generator=generator),
        "mmd": metrics.mmd(drawn, reference, generator=generator),
    }
    if data.name == "8gaussians":
        coverage = metrics.eight_gaussians_coverage(drawn)
        figures.update(
            within_3_sigma=coverage["within_3_sigma"], modes_covered=coverage["modes_covered"]
        )
    return figures


def evaluate(
    model: GenerativeModel,
    data: Data,
    split: str = "valid",
    seed: int = 0,
    samples: Optional[int] = None,
    sample_quality: bool = False,
) -> dict[str, float]:
    """Figures of `model` on a split of `data`: bits/dim for discrete data, NLL in nats for
    continuous data (where the model has a likelihood), and the distances of `samples` model
    samples to the split (default: 2,000 for vectors, 1,000 images) for 2-D toys, for models
    without a likelihood, and for any model when `sample_quality` is set.

    Args:
        model: the model to evaluate.
        data: the data set.
        split: "train", "valid" or "test".
        seed: seeds the evaluation's randomness (torch's global state is left as it was).
        samples: model samples to score (None: the default above; 0: none).
        sample_quality: score samples also for a model with a likelihood (where the data has
            sample figures).

    Returns:
        {figure: value}: bits_per_dim or nll_nats, and the sample figures where scored
        (frechet_digit_distance, precision, recall; or sliced_wasserstein, mmd, and for
        8gaussians within_3_sigma and modes_covered).

    Raises:
        ValueError: a model without a likelihood whose samples cannot be scored (no figure for
            `data`, or samples=0).
    """
    x = getattr(data, split)
    if samples is None:
        samples = IMAGE_SAMPLES if data.discrete else TOY_SAMPLES
    if model.likelihood is None:
        default_selection(model, data)  # raises where its samples have no figure
        if not samples:
            raise ValueError(
                f"model {model.name!r} has no likelihood: evaluate needs samples "
                f">= 1 to score it by its samples"
            )
    scored_by_samples = (
        has_sample_figures(data)
        and samples
        and (sample_quality or model.likelihood is None or data.toy is not None)
    )
    figures: dict[str, float] = {}
    with _fork_rng(model.device):
        torch.manual_seed(seed)
        if model.likelihood is not None:
            figures = (
                {"bits_per_dim": metrics.bits_per_dim(model, x)}
                if data.discrete
                else {"nll_nats": metrics.nll_nats(model, x)}
            )
        if scored_by_samples:
            generator = torch.Generator().manual_seed(seed)
            drawn = model.sample(samples, generator=generator)
            figures.update(figures_of_samples(drawn, data, x, generator))
    return figures


def describe(results: Mapping[str, object], separator: str = "  ") -> str:
    """A results dict in words: "bits per dim 1.9234  samples samples-0001000.png".

    Args:
        results: {name: value}; floats are written with 4 decimals.
        separator: between the items.

    Returns:
        The line.
    """
    return separator.join(
        f"{k.replace('_', ' ')} {v:.4f}" if isinstance(v, float) else f"{k.replace('_', ' ')} {v}"
        for k, v in results.items()
    )
