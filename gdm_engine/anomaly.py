"""Anomaly scores from trained models, and how well they tell the digits' test split from
corrupted digits and from foreign images (AUROC).

A model with a likelihood scores an example by its bits per dimension (exact, or the bound its
`likelihood` names); the energy-based model by its energy; the GAN by its discriminator. Raw
likelihood is known to fail at this: deep generative models can give simpler inputs a higher
likelihood than their own data (Nalisnick et al., 2019, "Do deep generative models know what they
don't know?"), so likelihood models are also scored by two corrections, each against a reference
the caller fits on the training or validation split only:

* `likelihood_ratio`: the model's bits/dim minus those of a background model that captures only
  the low-level statistics, here the independent-pixel model (Ren et al., 2019, "Likelihood
  ratios for out-of-distribution detection"; a general-purpose background model as in
  Schirrmeister et al., 2020, "Understanding anomaly detection with deep invertible networks
  through hierarchies of distributions and features").
* `typicality`: the distance of an example's bits/dim from the mean of in-distribution examples
  (the per-example version of Nalisnick et al., 2019b, "Detecting out-of-distribution inputs to
  deep generative models using typicality").
"""

import inspect
import math
from collections.abc import Callable
from typing import Any, Optional, Union

import numpy
import torch
from sklearn.metrics import roc_auc_score

from gdm_engine import data as datasets
from gdm_engine._modules import evaluating
from gdm_engine._random import draw
from gdm_engine._validation import check_int
from gdm_engine.models import EBM, GAN, GenerativeModel, IndependentPixels
from gdm_engine.models.base import check_levels, continuous_space

NOISE_PROBABILITY = 0.3  # the share of pixels the "noise" corruption replaces
LIKELIHOOD_RATIO = "likelihood ratio (vs independent pixels)"
TYPICALITY = "typicality"

Scores = Union[torch.Tensor, numpy.ndarray]


# --------------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------------


def score_kind(model: GenerativeModel) -> str:
    """What `scores` gives for `model`, in words.

    Args:
        model: a model of the engine.

    Returns:
        "bits/dim (<model.likelihood>)" (e.g. "bits/dim (exact)"), "energy" or "discriminator".

    Raises:
        ValueError: model has neither a likelihood nor an energy or a discriminator.
    """
    if model.likelihood is not None:
        return f"bits/dim ({model.likelihood})"
    if isinstance(model, EBM):
        return "energy"
    if isinstance(model, GAN):
        return "discriminator"
    raise ValueError(f"model {model.name!r} has no likelihood, energy or discriminator to score")


def _bits_per_dim(model, x, generator):
    """-log p(x) / (D ln 2) per example: gdm_engine.metrics.bits_per_dim's convention, not
    averaged. Only the models whose log_prob draws noise (dequantisation, importance samples,
    diffusion steps) take a generator."""
    takes_generator = "generator" in inspect.signature(model.log_prob).parameters
    log_prob = model.log_prob(x, generator=generator) if takes_generator else model.log_prob(x)
    return -log_prob.double() / (x[0].numel() * math.log(2))


def _energy(model, x, generator):
    """E(x) on the model's own continuous space (dequantised as it trains)."""
    return model.energy(continuous_space(x, model.levels, generator).flatten(1))


def _negative_logit(model, x, generator):
    """−D(x): the discriminator applied to real data as in GAN.discriminator_loss, negated so that
    what it finds fake scores higher."""
    return -model.discriminator(continuous_space(x, model.levels, generator)).squeeze(1)


_SCORERS = {"energy": _energy, "discriminator": _negative_logit}  # else bits/dim


@torch.no_grad()
def per_example(
    model: GenerativeModel,
    x: torch.Tensor,
    function: Callable[[Any, torch.Tensor], torch.Tensor],
    batch_size: int = 256,
) -> torch.Tensor:
    """function(model, batch) over x by batches (moved to the model's device), in eval mode
    under torch.no_grad (the model's mode is restored), the results concatenated on the CPU.

    Args:
        model: the model evaluated.
        x: (N, *shape) examples as the model takes them, N >= 1.
        function: (model, batch) -> a tensor with one row per example.
        batch_size: examples per call.

    Returns:
        The concatenated rows, on the CPU.

    Raises:
        TypeError: x is not a tensor of examples as the model takes them; batch_size not an int.
        ValueError: x is empty, misshapen or out of range; batch_size < 1.
    """
    model.check_data(x)
    if len(x) == 0:
        raise ValueError("x must hold at least one example")
    check_int("batch_size", batch_size, 1)
    with evaluating(model):
        return torch.cat([function(model, b.to(model.device)).cpu() for b in x.split(batch_size)])


def scores(
    model: GenerativeModel,
    x: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    batch_size: int = 256,
) -> torch.Tensor:
    """Per-example anomaly scores, higher = more anomalous (see `score_kind`): bits per dimension
    for a model with a likelihood (for discrete data through the engine's one dequantisation
    convention, gdm_engine.data; for continuous data a differential value), the energy of the
    EBM, the negative discriminator logit of the GAN. The model is evaluated in eval mode, by
    batches (see `per_example`).

    Args:
        model: the model scoring.
        x: (N, *shape) examples as the model takes them (integer levels for discrete data).
        generator: draws the scores' randomness (dequantisation, importance samples; None:
            torch's global generator).
        batch_size: examples per model call.

    Returns:
        (N,) float64 scores on the CPU.

    Raises:
        TypeError: x is not a tensor of examples as the model takes them; batch_size not an int.
        ValueError: x is empty, misshapen or out of range; batch_size < 1; the model has
            nothing to score with.
    """
    scorer = _SCORERS.get(score_kind(model), _bits_per_dim)
    return per_example(model, x, lambda m, b: scorer(m, b, generator).double(), batch_size)


def _score_vector(name, values):
    """values as a 1-D float64 CPU tensor; ValueError naming the argument otherwise."""
    values = torch.as_tensor(values).detach().cpu().double()
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty vector (N,), got shape {tuple(values.shape)}")
    return values


def likelihood_ratio(model_scores: Scores, background_scores: Scores) -> torch.Tensor:
    """The model's bits/dim minus the background model's, per example: −log(p(x) / p₀(x)) /
    (D ln 2), the negated log-likelihood ratio of Ren et al. (2019, eq. 5), higher = more
    anomalous. The background (the independent-pixel model) explains the low-level statistics
    that dominate raw likelihood, so the ratio keeps what only the model knows.

    Args:
        model_scores: (N,) bits/dim of the model.
        background_scores: (N,) bits/dim of the background model on the same examples.

    Returns:
        (N,) float64 scores.

    Raises:
        ValueError: either is not a non-empty vector, or their lengths differ.
    """
    model_bits = _score_vector("model_scores", model_scores)
    background_bits = _score_vector("background_scores", background_scores)
    if model_bits.shape != background_bits.shape:
        raise ValueError(
            f"model_scores and background_scores must score the same examples, got "
            f"{len(model_bits)} and {len(background_bits)} scores"
        )
    return model_bits - background_bits


def typicality(scores: Scores, reference_scores: Scores) -> torch.Tensor:
    """|score − mean of the reference scores| per example: how far an example lies from the
    typical set of the in-distribution examples (Nalisnick et al., 2019b, eq. 4 for a batch of
    one), higher = more anomalous. Too likely is as suspicious as too unlikely.

    Args:
        scores: (N,) scores of the examples judged.
        reference_scores: (M,) scores of in-distribution examples the judged ones are not drawn
            from (the training or validation split, never the test split).

    Returns:
        (N,) float64 scores.

    Raises:
        ValueError: either is not a non-empty vector.
    """
    reference_mean = _score_vector("reference_scores", reference_scores).mean()
    return (_score_vector("scores", scores) - reference_mean).abs()


def auroc(normal: Scores, anomalous: Scores) -> float:
    """The area under the ROC curve of telling `anomalous` (the positive class) from `normal` by
    their scores (sklearn.metrics.roc_auc_score): the probability that an anomalous example
    scores higher than a normal one, ties counting half. 1.0: every anomaly scores higher;
    0.5: no better than chance; 0.0: every anomaly scores lower.

    Args:
        normal: (N,) scores of normal examples.
        anomalous: (M,) scores of anomalous examples.

    Returns:
        The AUROC, in [0, 1].

    Raises:
        ValueError: either is not a non-empty vector, or holds a NaN.
    """
    both = torch.cat([_score_vector("normal", normal), _score_vector("anomalous", anomalous)])
    if both.isnan().any():
        raise ValueError("normal and anomalous scores must not hold NaN")
    labels = numpy.r_[numpy.zeros(len(normal)), numpy.ones(len(anomalous))]
    return float(roc_auc_score(labels, both.numpy()))


# --------------------------------------------------------------------------------------------------
# Anomalies
# --------------------------------------------------------------------------------------------------


def _check_images(x, levels):
    check_int("levels", levels, 2)
    check_levels("x", x, levels)
    if x.ndim < 2:
        raise ValueError(f"x must hold examples (N, ...), got shape {tuple(x.shape)}")


def corruptions(
    x: torch.Tensor, levels: int, generator: Optional[torch.Generator] = None
) -> dict[str, torch.Tensor]:
    """Corrupted copies of the images x, each of x's shape, dtype and range:

    * "noise": each pixel replaced, with probability NOISE_PROBABILITY (0.3), by a level drawn
      uniformly from 0 .. levels − 1 (which may be its own);
    * "inverted": levels − 1 − x (an involution);
    * "shuffled": each image's pixels in a random order of their own (its histogram kept, its
      structure lost);
    * "blank": every pixel 0.

    Args:
        x: (N, ...) integer levels in 0 .. levels − 1.
        levels: the number of levels (>= 2).
        generator: draws the noise and the permutations (None: torch's global generator).

    Returns:
        {name: corrupted images}, the names above.

    Raises:
        TypeError: x is not a tensor of integer levels; levels is not an int.
        ValueError: levels < 2; x has fewer than 2 dimensions or holds a level outside
            0 .. levels − 1.
    """
    _check_images(x, levels)
    flat = x.reshape(len(x), -1)
    replaced = draw(flat.shape, generator, x.device, uniform=True) < NOISE_PROBABILITY
    uniform = draw(flat.shape, generator, x.device, uniform=True)
    random_levels = datasets.quantize(uniform, levels).to(x.dtype)
    # independent uniform keys per pixel: their ranks are a uniformly random permutation per row
    order = draw(flat.shape, generator, x.device, uniform=True).argsort(1)
    return {
        "noise": torch.where(replaced, random_levels, flat).reshape(x.shape),
        "inverted": levels - 1 - x,
        "shuffled": flat.gather(1, order).reshape(x.shape),
        "blank": torch.zeros_like(x),
    }


def foreign(
    n: int,
    shape: tuple[int, ...],
    levels: int,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """n foreign images: windows of prod(shape) consecutive steps of the sines data set's test
    split (gdm_engine.data.sines: sums of sinusoids, mu-law levels 0 .. 255), its sequences read
    one after another as one stream (so any image size fits), each window at a random start,
    reshaped to `shape` and requantised from 256 levels to `levels` by the centre of each level,
    floor((s + 1/2) levels / 256).

    Args:
        n: how many images (>= 0).
        shape: the shape of one image.
        levels: the number of levels (>= 2).
        generator: draws the windows' starts (None: torch's global generator).

    Returns:
        (n, *shape) int64 levels in 0 .. levels − 1.

    Raises:
        TypeError: n or levels is not an int.
        ValueError: n < 0, levels < 2, shape empty or not positive ints, or one image larger
            than the whole stream.
    """
    check_int("n", n, 0)
    check_int("levels", levels, 2)
    if not shape or not all(isinstance(s, int) and s >= 1 for s in shape):
        raise ValueError(f"shape must be a non-empty tuple of positive ints, got {shape!r}")
    stream = datasets.sines().test.flatten()
    size = math.prod(shape)
    if size > len(stream):
        raise ValueError(f"shape {shape} holds more values than the sines stream ({len(stream)})")
    starts = draw((n,), generator, torch.device("cpu"), uniform=True) * (len(stream) - size + 1)
    windows = stream[starts.long()[:, None] + torch.arange(size)]
    return datasets.quantize((windows + 0.5) / datasets.SINES_LEVELS, levels).reshape(n, *shape)


def anomaly_sets(
    data: datasets.Data, generator: Optional[torch.Generator] = None
) -> dict[str, torch.Tensor]:
    """The anomalies the table scores: each corruption of data.test, and as many foreign images.

    Args:
        data: a discrete image data set (the digits).
        generator: draws the corruptions and the foreign windows (None: torch's global one).

    Returns:
        {name: images}: "noise", "inverted", "shuffled", "blank" and "foreign (sines)".

    Raises:
        ValueError: data is continuous.
    """
    if data.levels is None:
        raise ValueError(f"data must be discrete images (levels), got continuous {data.name!r}")
    sets = corruptions(data.test, data.levels, generator)
    sets["foreign (sines)"] = foreign(len(data.test), data.shape, data.levels, generator)
    return sets


def anomaly_table(
    model: GenerativeModel,
    data: datasets.Data,
    generator: Optional[torch.Generator] = None,
    background: Optional[GenerativeModel] = None,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """The AUROC of telling each anomaly set (`anomaly_sets`) from data.test, one row per set:

        {"anomaly": name, "score": score_kind(model), "auroc": of the raw score,
         LIKELIHOOD_RATIO: ..., TYPICALITY: ...}

    the last two for models with a likelihood only (None otherwise): the likelihood ratio against
    `background`, and the typicality with the validation split's scores as the reference (never
    the test split's). The model's own settings (iwae_samples, bound_timesteps) set the cost.

    Args:
        model: the model scoring, shaped for data.
        data: a discrete image data set.
        generator: draws the anomalies and the scores' randomness (None: torch's global one).
        background: the background model of the likelihood ratio, in bits/dim (None: an
            IndependentPixels fitted in closed form on data.train).
        batch_size: examples per model call.

    Returns:
        The rows, in the order of `anomaly_sets`.

    Raises:
        ValueError: data is continuous; the model has nothing to score with.
    """
    sets = anomaly_sets(data, generator)
    raw = _all_scores(model, data.test, sets, generator, batch_size)
    rows = [
        {"anomaly": name, "score": score_kind(model), "auroc": auroc(raw["normal"], raw[name])}
        for name in sets
    ]
    if model.likelihood is None:
        return [{**row, LIKELIHOOD_RATIO: None, TYPICALITY: None} for row in rows]
    if background is None:
        background = IndependentPixels.for_data(data).fit(data.train)
    base = _all_scores(background, data.test, sets, generator, batch_size)
    reference = scores(model, data.valid, generator, batch_size)
    for row in rows:
        name = row["anomaly"]
        row[LIKELIHOOD_RATIO] = auroc(
            likelihood_ratio(raw["normal"], base["normal"]),
            likelihood_ratio(raw[name], base[name]),
        )
        row[TYPICALITY] = auroc(
            typicality(raw["normal"], reference), typicality(raw[name], reference)
        )
    return rows


def _all_scores(model, normal, sets, generator, batch_size):
    """{"normal": scores of `normal`, name: scores of each anomaly set}."""
    return {
        name: scores(model, x, generator, batch_size)
        for name, x in {"normal": normal, **sets}.items()
    }
