"""What a trained model's features know: codes of examples (`encode`) and a linear probe of the
digit classes on them (`linear_probe`), against the same probe on the raw pixels.

Each model family is encoded by what it computes anyway (ENCODINGS); the features of
the networks without a latent space are read by forward hooks, the models left as they are.
Every encoding is deterministic: discrete levels enter the continuous models at the centre of
their dequantisation cell, (x + 1/2) / levels, rather than at a random point of it.
"""

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Union

import numpy
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gdm_engine import data as datasets
from gdm_engine import ops
from gdm_engine.anomaly import per_example
from gdm_engine.models import GenerativeModel
from gdm_engine.nn.unet import UNet

PROBE_MAX_ITER = 5000  # lbfgs iterations: enough to converge on standardised codes
DDPM_STEP_SHARE = 0.05  # the DDPM is encoded at step t = 0.05 T (50 of 1000): little noise
DDPM_NOISE_SEED = 0  # seeds the one noise image every example gets
PIXELS = "raw pixels (levels, flattened)"  # pixel_probe's encoding

_FLOW_Z = "z = f(x) at the cell centres (x + 1/2) / levels, flattened"


# --------------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------------


def _cell_centres(x, levels):
    """Discrete levels at the centre of their cell, (x + 1/2) / levels in (0, 1): the
    deterministic counterpart of gdm_engine.data.dequantize. Continuous data as floats."""
    return x.float() if levels is None else datasets.cell_centres(x, levels)


def _centred(x, levels):
    """The cell centres in [−1, 1], the space of models.base.continuous_space."""
    return x.float() if levels is None else 2 * _cell_centres(x, levels) - 1


def _captured(module, run, output=False):
    """What `module` takes as its first input (output=True: what it gives) while run() runs."""
    captured = []

    def keep(_module, args, result):
        captured.append(result if output else args[0])  # returns None: the output is unchanged

    handle = module.register_forward_hook(keep)
    try:
        run()
    finally:
        handle.remove()
    return captured[0]


def _pooled(features):
    """Features (N, C, ...) averaged over the positions after C; (N, C) as they are."""
    return features.flatten(2).mean(2) if features.ndim > 2 else features


def _vae(model, x):
    return model.encode(x)[0]


def _flow(model, x):
    z, _ = model.flow(_cell_centres(x, model.levels).to(model.flow_dtype))
    return z.flatten(1)


def _head_input(model, x):
    """PixelCNN and WaveNet: the features their output head takes, over every position."""
    return _pooled(_captured(model.head, lambda: model.logits(x)))


def _ddpm(model, x):
    step = torch.full((len(x),), int(DDPM_STEP_SHARE * model.timesteps), device=x.device)
    noise = torch.randn(model.shape, generator=torch.Generator().manual_seed(DDPM_NOISE_SEED))
    alpha_bar = model.alpha_bars[step].float()
    # x_t ~ q(x_t | x_0) (Ho et al., 2020, eq. 4), x_0 in the DDPM's own scale
    x_t = ops.q_sample(model._inputs(x), alpha_bar, noise.to(x.device).expand(len(x), *model.shape))
    network = model.network
    bottleneck = network.middle if isinstance(network, UNet) else network.blocks[-1]
    return _pooled(_captured(bottleneck, lambda: model.denoiser()(x_t, step), output=True))


def _ebm(model, x):
    network = model.network
    return _captured(network[-1], lambda: network(_centred(x, model.levels).flatten(1)))


def _gan(model, x):
    network = model.discriminator
    return _captured(network[-1], lambda: network(_centred(x, model.levels)))


class Encoding(NamedTuple):
    """What `encode` gives for one model family: in words, and the function computing it."""

    description: str
    encoder: Callable[[Any, torch.Tensor], torch.Tensor]  # (model, x) -> (N, features)


ENCODINGS = {
    "vae": Encoding("the posterior mean of q(z|x)", _vae),
    "realnvp": Encoding(_FLOW_Z, _flow),
    "glow": Encoding(_FLOW_Z, _flow),
    "nsf": Encoding(_FLOW_Z, _flow),
    "pixelcnn": Encoding(
        "the output head's input (the horizontal stack's last features after a ReLU), "
        "mean over pixels",
        _head_input,
    ),
    "wavenet": Encoding(
        "the output head's input (the sum of the skip outputs after a ReLU), mean over time",
        _head_input,
    ),
    "ddpm": Encoding(
        "the network's bottleneck (the U-Net's middle block, the MLP's last block) at step "
        f"t = {DDPM_STEP_SHARE} T for x_t noised by one fixed noise image, mean over space",
        _ddpm,
    ),
    "ebm": Encoding("the energy network's last hidden layer at the cell centres", _ebm),
    "gan": Encoding("the discriminator's penultimate features at the cell centres", _gan),
}


def encoding_kind(model: GenerativeModel) -> str:
    """What `encode` gives for `model`, in words (ENCODINGS).

    Args:
        model: a model of the engine.

    Returns:
        The description.

    Raises:
        ValueError: the model has no encoding here (the independent-pixel model has no features
            beyond the pixels: probe them with `pixel_probe`).
    """
    if model.name not in ENCODINGS:
        raise ValueError(
            f"model {model.name!r} has no encoding: encode takes {', '.join(ENCODINGS)} "
            "(the independent-pixel model has no features beyond the pixels: see pixel_probe)"
        )
    return ENCODINGS[model.name].description


def encode(model: GenerativeModel, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The codes of the examples x: one feature row each, as ENCODINGS says per model,
    deterministic (the same x gives the same codes; in other batch sizes, up to rounding). The
    model runs in eval mode, by batches (gdm_engine.anomaly.per_example).

    Args:
        model: the model encoding.
        x: (N, *shape) examples as the model takes them (integer levels for discrete data).
        batch_size: examples per model call.

    Returns:
        (N, features) float32 codes on the CPU.

    Raises:
        TypeError: x is not a tensor of examples as the model takes them; batch_size not an int.
        ValueError: the model has no encoding (see `encoding_kind`); x is empty, misshapen or out
            of range; batch_size < 1.
    """
    encoding_kind(model)  # raises for a model without an encoding
    encoder = ENCODINGS[str(model.name)].encoder
    return per_example(model, x, lambda m, b: encoder(m, b).float(), batch_size)


# --------------------------------------------------------------------------------------------------
# Linear probes
# --------------------------------------------------------------------------------------------------

Array = Union[torch.Tensor, numpy.ndarray]


def _split(name, codes, labels):
    """codes (N, F) float64 and labels (N,) as numpy arrays; ValueError naming them otherwise."""
    codes = numpy.asarray(torch.as_tensor(codes).detach().cpu().double())
    labels = numpy.asarray(torch.as_tensor(labels).detach().cpu())
    if codes.ndim != 2 or len(codes) == 0:
        raise ValueError(f"{name}_codes must be a matrix (N, features), got shape {codes.shape}")
    if labels.shape != (len(codes),):
        raise ValueError(
            f"{name}_labels must be a vector of {len(codes)} labels, one per row of "
            f"{name}_codes, got shape {labels.shape}"
        )
    return codes, labels


def linear_probe(
    train_codes: Array,
    train_labels: Array,
    valid_codes: Array,
    valid_labels: Array,
    test_codes: Array,
    test_labels: Array,
    Cs: Sequence[float] = (0.01, 0.1, 1, 10, 100),
) -> dict[str, float]:
    """A linear probe (Alain & Bengio, 2017, "Understanding intermediate layers using linear
    classifier probes"): scikit-learn's multinomial logistic regression on the codes,
    standardised by a StandardScaler fitted on the training split, trained on the training
    split for each inverse regularisation strength C in Cs; the C of the best validation
    accuracy (the first in Cs among equals) is scored on the test split.

    Args:
        train_codes: (N, F) codes of the training split.
        train_labels: (N,) their class labels.
        valid_codes: (M, F) codes of the validation split.
        valid_labels: (M,) their class labels.
        test_codes: (K, F) codes of the test split.
        test_labels: (K,) their class labels.
        Cs: the values of C tried.

    Returns:
        {"C": the chosen C, "valid_accuracy": its validation accuracy, "test_accuracy": its
        test accuracy}.

    Raises:
        ValueError: codes not non-empty matrices of one width, labels not one per row, the
            training split of a single class, or Cs empty or not all positive numbers.
    """
    train = _split("train", train_codes, train_labels)
    valid = _split("valid", valid_codes, valid_labels)
    test = _split("test", test_codes, test_labels)
    if not valid[0].shape[1] == test[0].shape[1] == train[0].shape[1]:
        raise ValueError(
            "train_codes, valid_codes and test_codes must have the same number of features, got "
            f"{train[0].shape[1]}, {valid[0].shape[1]} and {test[0].shape[1]}"
        )
    if len(numpy.unique(train[1])) < 2:
        raise ValueError("train_labels must hold at least two classes")
    if not Cs or not all(isinstance(c, (int, float)) and c > 0 for c in Cs):
        raise ValueError(f"Cs must be a non-empty list of positive numbers, got {Cs!r}")
    probes = [
        make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=PROBE_MAX_ITER)).fit(
            *train
        )
        for c in Cs
    ]
    accuracies = [probe.score(*valid) for probe in probes]
    best = accuracies.index(max(accuracies))
    return {
        "C": Cs[best],
        "valid_accuracy": accuracies[best],
        "test_accuracy": probes[best].score(*test),
    }


def _check_labels(data):
    if data.labels is None:
        raise ValueError(f"data {data.name!r} has no class labels to probe")


def _probe(data, codes, encoding):
    """linear_probe of codes {split: (N, F)} against data's labels, with what was encoded."""
    _check_labels(data)
    splits = [item for split in datasets.SPLITS for item in (codes[split], data.labels[split])]
    return {"encoding": encoding, "features": codes["train"].shape[1], **linear_probe(*splits)}


def probe_table(
    model: GenerativeModel, data: datasets.Data, batch_size: int = 256
) -> dict[str, Any]:
    """The linear probe of data's class labels on the model's codes of its three splits.

    Args:
        model: the model encoding, shaped for data.
        data: a data set with class labels (the digits).
        batch_size: examples per model call.

    Returns:
        {"encoding": encoding_kind(model), "features": the codes' width, and linear_probe's
        "C", "valid_accuracy", "test_accuracy"}.

    Raises:
        ValueError: data has no class labels; the model has no encoding.
    """
    _check_labels(data)  # before the encoding's cost
    codes = {split: encode(model, getattr(data, split), batch_size) for split in datasets.SPLITS}
    return _probe(data, codes, encoding_kind(model))


def pixel_probe(data: datasets.Data) -> dict[str, Any]:
    """The baseline of `probe_table`: the same probe on the raw pixels (levels, flattened).

    Args:
        data: a data set with class labels (the digits).

    Returns:
        {"encoding": PIXELS, "features": the pixels per example, and linear_probe's
        "C", "valid_accuracy", "test_accuracy"}.

    Raises:
        ValueError: data has no class labels.
    """
    codes = {split: getattr(data, split).flatten(1) for split in datasets.SPLITS}
    return _probe(data, codes, PIXELS)


__all__ = [
    "ENCODINGS",
    "Encoding",
    "encode",
    "encoding_kind",
    "linear_probe",
    "pixel_probe",
    "probe_table",
]
