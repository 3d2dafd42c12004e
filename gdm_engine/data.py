"""Data sets that need no download, and the one dequantisation convention of the engine.

    data = gdm_engine.data.load("digits")      # or "moons", "checkerboard", "run/x.npz", "pngs/"
    data.train, data.valid, data.test          # tensors: integer levels, or float points
    data.levels                                # grey levels of discrete data; None if continuous

Discrete data (images) hold integer levels 0 .. levels-1. Every model's `log_prob` of discrete
data is the log-probability mass of those levels in nats, or a lower bound on it. A model with a
continuous density gets there by uniform dequantisation (Theis et al., 2016, sec. 3.1;
Uria et al., 2013): y = (x + u) / levels with u ~ U[0, 1)^D lies in the cube of volume
levels^-D that belongs to x, and by Jensen's inequality

    log P(x) >= E_u[ log p(y) ] - D log(levels),

which `dequantized_log_prob` computes. `gdm_engine.metrics.bits_per_dim` divides by D log 2.

The splits are fixed, so figures from different runs compare. Training chooses (the best
checkpoint, early stopping, settings) on the validation split only; the test split is for the
figure that is reported.
* digits: scikit-learn's bundled 8x8 digits (1,797 images, 17 levels, 1x8x8). The first 1,350
  images are the training split, the next 150 the validation split and the last 297 the test split
  (sklearn keeps them in the order of the UCI file).
* 2-D toys: a training sample of 20,000 points drawn with seed 0, a validation sample of 5,000
  drawn with seed 2 and a test sample of 5,000 drawn with seed 1 from the toy's sampler.
* sines: audio-like sequences (1 x 1,024 steps, 256 levels) made here, no download: sums of one
  to three sinusoids of random frequency (50 to 2,000 Hz at 16 kHz), amplitude and phase, mu-law
  quantised like WaveNet's audio (van den Oord et al., 2016, sec. 2.2); 2,000 training sequences
  drawn with seed 0, 250 validation with seed 2 and 250 test with seed 1.
* user files (.npz, folders of PNG images): a permutation with seed 0; its first 80% are the
  training split, the next 10% the validation split, the last 10% the test split.
"""

import dataclasses
import math
import os
from collections.abc import Callable
from typing import Optional

import numpy as np
import torch

DIGITS_TRAIN, DIGITS_VALID = 1350, 150  # of the first 1,500; the last 297 are the test split
TOY_TRAIN, TOY_VALID, TOY_TEST = 20_000, 5_000, 5_000
USER_VALID_FRACTION = USER_TEST_FRACTION = 0.1
SINES_TRAIN, SINES_VALID, SINES_TEST = 2_000, 250, 250
SINES_LENGTH, SINES_LEVELS, SINES_RATE = 1024, 256, 16_000
SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Data:
    """A data set with its fixed splits: `levels` for discrete data, `toy` for 2-D densities."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    levels: Optional[int] = None
    toy: Optional["Toy"] = None
    # class labels per split, (N,) int64, where the data set has them (digits: 0 .. 9)
    labels: Optional[dict] = None
    classes: Optional[int] = None

    @property
    def discrete(self):
        return self.levels is not None

    @property
    def shape(self):
        """The shape of one example."""
        return tuple(self.train.shape[1:])


def dequantize(x, levels, generator=None):
    """The convention: integer levels x -> (x + u) / levels in [0, 1), u ~ U[0, 1).

    In fp32, x + u rounds up to x + 1 when u is within half a spacing of 1 (at x = 255 that is
    u > 1 - 2^-17), which would put y in the next level's cell (or at 1.0); the largest float
    below (x + 1) / levels caps it."""
    u = torch.rand(x.shape, generator=generator, device=x.device)
    y = (x.float() + u) / levels
    top = torch.nextafter((x.float() + 1) / levels, torch.zeros((), device=x.device))
    return torch.minimum(y, top)


def cell_centres(x, levels):
    """The deterministic counterpart of the convention: integer levels x -> the centres of their
    cells, (x + 1/2) / levels in (0, 1)."""
    return (x.float() + 0.5) / levels


def quantize(y, levels):
    """The inverse of the convention: y in [0, 1) -> its level floor(y * levels), clamped into
    0 .. levels - 1 (a model's continuous samples back to discrete data)."""
    return torch.floor(y * levels).clamp(0, levels - 1).long()


def dequantized_log_prob(log_density, x, levels, generator=None):
    """Lower bound on log P(x) of integer levels x from a density on [0, 1)^D (nats, per
    example): log_density(y) - D log(levels) at one dequantised y."""
    dims = x[0].numel() if len(x) else 0
    return log_density(dequantize(x, levels, generator)) - dims * math.log(levels)


# --------------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------------


def digits():
    """scikit-learn's bundled 8x8 digits: (N, 1, 8, 8) levels 0..16, fixed split, with the
    digit each image shows as its label (`data.labels[split]`, 0 .. 9)."""
    from sklearn.datasets import load_digits

    bundle = load_digits()
    images = torch.from_numpy(bundle.images.astype(np.int64)).unsqueeze(1)
    sizes = [DIGITS_TRAIN, DIGITS_VALID, len(images) - DIGITS_TRAIN - DIGITS_VALID]
    train, valid, test = images.split(sizes)
    labels = dict(zip(SPLITS, torch.from_numpy(bundle.target.astype(np.int64)).split(sizes)))
    return Data("digits", train, valid, test, levels=17, labels=labels, classes=10)


def _user_split(name, array, levels):
    if len(array) < 3:
        raise ValueError(
            f"{name}: need at least 3 examples (train, validation and test splits), "
            f"found {len(array)}"
        )
    order = torch.randperm(len(array), generator=torch.Generator().manual_seed(0))
    n_valid = max(1, round(USER_VALID_FRACTION * len(array)))
    n_test = max(1, round(USER_TEST_FRACTION * len(array)))
    train, valid, test = array[order].split([len(array) - n_valid - n_test, n_valid, n_test])
    return Data(name, train, valid, test, levels=levels)


def load_npz(path, key=None):
    """A data set from an .npz file: integer arrays are discrete (levels = the file's "levels"
    entry, or max + 1), float arrays continuous. `key` picks the array (default: "x", "images",
    or the only array besides "levels")."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    candidates = (
        [key]
        if key
        else [k for k in ("x", "images") if k in arrays] or [k for k in arrays if k != "levels"]
    )
    if len(candidates) != 1 or candidates[0] not in arrays:
        raise ValueError(f"{path}: name the array to use with key=, one of {sorted(arrays)}")
    array = arrays[candidates[0]]
    if array.ndim < 2 or len(array) < 3:
        raise ValueError(
            f"{path}: the array must hold at least 3 examples along its first "
            f"dimension, got shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        if array.min() < 0:
            raise ValueError(f"{path}: integer data must be levels >= 0, found {array.min()}")
        levels = int(arrays["levels"]) if "levels" in arrays else int(array.max()) + 1
        if levels < 2 or levels <= array.max():
            raise ValueError(
                f"{path}: levels must be >= 2 and above every value (max "
                f"{array.max()}), got {levels}"
            )
        return _user_split(path, torch.from_numpy(array.astype(np.int64)), levels)
    return _user_split(path, torch.from_numpy(array.astype(np.float32)), None)


def load_image_folder(path):
    """Every .png in a folder (all the same size): (N, C, H, W) levels 0..255, C = 1 for grey
    images and 3 for colour."""
    from PIL import Image

    files = sorted(f for f in os.listdir(path) if f.lower().endswith(".png"))
    if len(files) < 3:
        raise ValueError(f"{path}: need at least 3 .png images, found {len(files)}")
    with Image.open(os.path.join(path, files[0])) as first:
        mode = "L" if first.mode in ("1", "L", "LA", "I", "I;16") else "RGB"
    arrays = []
    for f in files:
        with Image.open(os.path.join(path, f)) as image:
            arrays.append(np.asarray(image.convert(mode)))
    if len({a.shape for a in arrays}) != 1:
        raise ValueError(f"{path}: the images differ in size: {sorted({a.shape for a in arrays})}")
    images = np.stack(arrays).reshape(len(arrays), *arrays[0].shape[:2], -1).transpose(0, 3, 1, 2)
    return _user_split(path, torch.from_numpy(images.astype(np.int64)), 256)


# --------------------------------------------------------------------------------------------------
# Audio-like sequences
# --------------------------------------------------------------------------------------------------


def mu_law_encode(x, levels=SINES_LEVELS):
    """Waveform values in [-1, 1] -> integer levels 0 .. levels-1 by mu-law companding with
    mu = levels - 1 (WaveNet, sec. 2.2): f(x) = sign(x) ln(1 + mu|x|) / ln(1 + mu)."""
    mu = levels - 1
    companded = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
    return ((companded + 1) / 2 * mu).round().long().clamp(0, mu)


def mu_law_decode(levels_of, levels=SINES_LEVELS):
    """The inverse of mu_law_encode, to the centre of each level's companded interval."""
    mu = levels - 1
    companded = 2 * levels_of.double() / mu - 1
    return torch.sign(companded) * ((1 + mu) ** companded.abs() - 1) / mu


def _sines_sample(n, generator):
    """n sequences (n, 1, SINES_LENGTH): sums of 1 to 3 random sinusoids, scaled into [-1, 1]."""
    components = 3
    frequency = 50 * (2000 / 50) ** torch.rand(n, components, 1, generator=generator)
    amplitude = 0.1 + 0.9 * torch.rand(n, components, 1, generator=generator)
    amplitude *= torch.arange(components)[None, :, None] < torch.randint(
        1, components + 1, (n, 1, 1), generator=generator
    )
    phase = 2 * math.pi * torch.rand(n, components, 1, generator=generator)
    time = torch.arange(SINES_LENGTH) / SINES_RATE
    waves = (amplitude * torch.sin(2 * math.pi * frequency * time + phase)).sum(1)
    waves /= amplitude.sum(1)
    return mu_law_encode(waves).unsqueeze(1)


def sines():
    """The fixed splits of the sinusoid sequences."""
    train, valid, test = (
        _sines_sample(n, torch.Generator().manual_seed(seed))
        for n, seed in [(SINES_TRAIN, 0), (SINES_VALID, 2), (SINES_TEST, 1)]
    )
    return Data("sines", train, valid, test, levels=SINES_LEVELS)


# --------------------------------------------------------------------------------------------------
# 2-D toy densities
# --------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Toy:
    """A 2-D density: `sample(n, generator)` -> (n, 2), and `log_prob(x)` -> (n,) nats where it
    has a closed form (None otherwise)."""

    name: str
    sample: Callable
    log_prob: Optional[Callable] = None


def _randn(n, generator, *shape):
    return torch.randn(n, *shape, generator=generator)


def _rand(n, generator, *shape):
    return torch.rand(n, *shape, generator=generator)


EIGHT_GAUSSIANS_RADIUS, EIGHT_GAUSSIANS_STD = 2.0, 0.2


def eight_gaussian_centres():
    """The 8 means of the 8gaussians toy, (8, 2): evenly spaced on a circle of radius
    EIGHT_GAUSSIANS_RADIUS."""
    angles = torch.arange(8) * (2 * math.pi / 8)
    return EIGHT_GAUSSIANS_RADIUS * torch.stack([angles.cos(), angles.sin()], 1)


def _eight_gaussians_sample(n, generator=None):
    centre = torch.randint(8, (n,), generator=generator)
    return eight_gaussian_centres()[centre] + EIGHT_GAUSSIANS_STD * _randn(n, generator, 2)


def _eight_gaussians_log_prob(x):
    """An equal mixture of isotropic Gaussians: logsumexp over components - log 8."""
    sq = (x[:, None, :] - eight_gaussian_centres().to(x)).square().sum(-1)
    log_normal = -sq / (2 * EIGHT_GAUSSIANS_STD**2) - math.log(2 * math.pi * EIGHT_GAUSSIANS_STD**2)
    return torch.logsumexp(log_normal, 1) - math.log(8)


def _two_moons_sample(n, generator=None):
    """Two interleaved half circles (the shape of sklearn's make_moons), noise std 0.1."""
    t = math.pi * _rand(n, generator)
    upper = torch.rand(n, generator=generator) < 0.5
    x = torch.where(upper, t.cos(), 1 - t.cos())
    y = torch.where(upper, t.sin(), 0.5 - t.sin())
    points = torch.stack([x - 0.5, y - 0.25], 1) * 2
    return points + 0.1 * _randn(n, generator, 2)


def _checkerboard_sample(n, generator=None):
    """Uniform on the 8 dark unit squares of a 4x4 board on [-2, 2)^2."""
    column = torch.randint(4, (n,), generator=generator)
    row = 2 * torch.randint(2, (n,), generator=generator) + (column % 2)
    return torch.stack([column, row], 1) - 2 + _rand(n, generator, 2)


def _checkerboard_log_prob(x):
    """log(1/8) on the dark squares, -inf elsewhere."""
    cells = torch.floor(x + 2)
    inside = ((cells >= 0) & (cells < 4)).all(1) & ((cells[:, 0] + cells[:, 1]) % 2 == 0)
    # row = 2k + (column % 2) makes column + row even on the dark squares
    return torch.where(inside, -math.log(8.0), -math.inf).to(x.dtype)


def _rings_sample(n, generator=None):
    """Four concentric circles of radii 0.5 .. 2, noise std 0.08."""
    radius = 0.5 * (1 + torch.randint(4, (n,), generator=generator)).float()
    angle = 2 * math.pi * _rand(n, generator)
    points = radius[:, None] * torch.stack([angle.cos(), angle.sin()], 1)
    return points + 0.08 * _randn(n, generator, 2)


def _pinwheel_sample(n, generator=None):
    """Five arms: Gaussian blobs stretched along the x-axis, then turned by an angle that grows
    with the distance along the arm (the pinwheel of Johnson et al., 2016, sec. 6)."""
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.05, 0.25
    arm = torch.randint(arms, (n,), generator=generator)
    blob = _randn(n, generator, 2) * torch.tensor([radial_std, tangential_std])
    blob[:, 0] += 1.0
    angle = arm * (2 * math.pi / arms) + rate * torch.exp(blob[:, 0])
    cos, sin = angle.cos(), angle.sin()
    points = torch.stack(
        [cos * blob[:, 0] - sin * blob[:, 1], sin * blob[:, 0] + cos * blob[:, 1]], 1
    )
    return 2 * points


def _swiss_roll_sample(n, generator=None):
    """The 2-D swiss roll: t in [1.5pi, 4.5pi), point t(cos t, sin t)/5, noise std 0.1."""
    t = 1.5 * math.pi * (1 + 2 * _rand(n, generator))
    points = torch.stack([t * t.cos(), t * t.sin()], 1) / 5
    return points + 0.1 * _randn(n, generator, 2)


TOYS = {
    toy.name: toy
    for toy in [
        Toy("8gaussians", _eight_gaussians_sample, _eight_gaussians_log_prob),
        Toy("moons", _two_moons_sample),
        Toy("checkerboard", _checkerboard_sample, _checkerboard_log_prob),
        Toy("rings", _rings_sample),
        Toy("pinwheel", _pinwheel_sample),
        Toy("swissroll", _swiss_roll_sample),
    ]
}


def toy(name):
    """The toy's fixed training, validation and test samples."""
    density = TOYS[name]
    train = density.sample(TOY_TRAIN, torch.Generator().manual_seed(0))
    valid = density.sample(TOY_VALID, torch.Generator().manual_seed(2))
    test = density.sample(TOY_TEST, torch.Generator().manual_seed(1))
    return Data(name, train, valid, test, toy=density)


# --------------------------------------------------------------------------------------------------
# By name
# --------------------------------------------------------------------------------------------------

NAMES = ("digits", "sines", *TOYS)


def load(name):
    """A data set by name ("digits", "sines" or a toy), or a path to an .npz file or a folder of
    PNGs."""
    if not isinstance(name, str):
        raise TypeError(f"data must be a name or a path (str), got {type(name).__name__}")
    if name == "digits":
        return digits()
    if name == "sines":
        return sines()
    if name in TOYS:
        return toy(name)
    if name.endswith(".npz") and os.path.isfile(name):
        return load_npz(name)
    if os.path.isdir(name):
        return load_image_folder(name)
    raise ValueError(
        f"unknown data {name!r}: use one of {', '.join(NAMES)}, an .npz file or a "
        f"folder of .png images"
    )
