"""The feature network of the digit sample-quality metrics: a small convolutional classifier of
the 8x8 digits whose penultimate layer (64 features) plays the part Inception-v3's pool layer
plays for FID (Heusel et al., 2017).

    network = feature_network()            # cached on disk, trained once (seconds) if not
    network.features(images)               # (N, 1, 8, 8) integer levels -> (N, 64)
    network.test_accuracy                  # 0.9798 (291 of 297) with the default settings

It trains on the training split only, with random 1-pixel shifts and label smoothing, AdamW and
a one-cycle learning rate, and keeps the last epoch (about 6 s on one CPU thread); the test accuracy
is measured once, reported, and stored beside the weights. Training is deterministic from
`DigitFeatureSettings.seed` and leaves torch's global random state as it found it.

The weights live in `default_cache_dir()` as `digit-features-<key>.pt`, where the key is a hash
of the settings and the file format, with a sidecar `.json` holding the settings, the file's
sha256, the test accuracy and the training time. A file that fails verification is never loaded:
it is reported with a warning and replaced by a fresh training.
"""

import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import tempfile
import time
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from gdm_engine import data as datasets
from gdm_engine._modules import evaluating

FORMAT_VERSION = 1  # bump when the file layout or the architecture changes: it changes every key
DIGIT_MAX_LEVEL = 16  # digits hold levels 0 .. 16


class FeatureCacheError(ValueError):
    """A cached feature network that cannot be trusted: missing sidecar, wrong hash, foreign or
    truncated file, settings that differ."""


@dataclasses.dataclass(frozen=True)
class DigitFeatureSettings:
    """Everything that decides the trained weights; its values make the cache key."""

    seed: int = 0
    epochs: int = 40
    width: int = 32
    features: int = 64
    dropout: float = 0.3
    lr: float = 3e-3
    weight_decay: float = 1e-2
    batch_size: int = 64
    label_smoothing: float = 0.1
    max_shift: int = 1

    def as_json(self):
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


class DigitClassifier(nn.Module):
    """conv 3x3 w -> conv 3x3 2w -> maxpool -> conv 3x3 2w -> maxpool -> linear (`features`,
    ReLU: the features) -> dropout -> linear (10 logits). Takes integer levels (N, 1, 8, 8)."""

    def __init__(self, width=32, features=64, dropout=0.3):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * 2 * 2, features),
            nn.ReLU(),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(features, 10)

    def features(self, x):
        """(N, features) penultimate activations of the images x (integer levels 0 .. 16)."""
        return self.trunk(x.float() / DIGIT_MAX_LEVEL)

    def forward(self, x):
        return self.head(self.dropout(self.features(x)))


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _random_shift(images, max_shift, generator):
    """Each image moved by its own random offset of up to max_shift pixels in each direction,
    zeros (the background level) filling in."""
    n, size = len(images), images.shape[-1]
    padded = F.pad(images, (max_shift,) * 4)
    rows, cols = (
        torch.randint(2 * max_shift + 1, (n, 1), generator=generator) + torch.arange(size)
        for _ in range(2)
    )
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows[:, :, None], cols[:, None, :]].unsqueeze(1)


@torch.no_grad()
def accuracy(network, images, labels):
    """Share of the images the network classifies as their label."""
    with evaluating(network):
        return (network(images).argmax(1) == labels).double().mean().item()


@contextlib.contextmanager
def _one_intra_op_thread():
    """One intra-op thread inside the block, restored after. The network's operations are too
    small to gain from more, and on a busy machine OpenMP workers waiting on each other made
    training 25 to 40 times slower (169 s against 7 s on 2 loaded cores); one thread also keeps
    the float reductions, and so the weights, independent of the machine's core count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@_one_intra_op_thread()
def train(settings=DigitFeatureSettings()):
    """A freshly trained classifier (eval mode), with `test_accuracy` and `train_seconds`."""
    start = time.perf_counter()
    digits = datasets.digits()
    images, labels = digits.train, digits.labels["train"]
    steps_per_epoch = -(-len(images) // settings.batch_size)
    # fork_rng: initialisation and dropout draw from torch's global generator, seeded here and
    # restored afterwards; shuffling and shifts use their own generator
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        generator = torch.Generator().manual_seed(settings.seed)
        network = DigitClassifier(settings.width, settings.features, settings.dropout)
        optimiser = torch.optim.AdamW(
            network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, settings.lr, total_steps=settings.epochs * steps_per_epoch
        )
        for _ in range(settings.epochs):
            order = torch.randperm(len(images), generator=generator)
            for batch in order.split(settings.batch_size):
                x = _random_shift(images[batch], settings.max_shift, generator)
                loss = F.cross_entropy(
                    network(x), labels[batch], label_smoothing=settings.label_smoothing
                )
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
    network.eval()
    network.test_accuracy = accuracy(network, digits.test, digits.labels["test"])
    network.train_seconds = time.perf_counter() - start
    return network


# --------------------------------------------------------------------------------------------------
# The cache
# --------------------------------------------------------------------------------------------------


def default_cache_dir():
    """$GDM_ENGINE_CACHE, else $XDG_CACHE_HOME/gdm-engine, else ~/.cache/gdm-engine."""
    if os.environ.get("GDM_ENGINE_CACHE"):
        return os.environ["GDM_ENGINE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "gdm-engine")


def cache_path(settings=DigitFeatureSettings(), directory=None):
    """Where the weights of `settings` live: the key hashes the settings and the format."""
    key = hashlib.sha256(f"{FORMAT_VERSION}:{settings.as_json()}".encode()).hexdigest()[:16]
    return os.path.join(directory or default_cache_dir(), f"digit-features-{key}.pt")


def _sidecar(path):
    return os.path.splitext(path)[0] + ".json"


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write_atomically(path, write):
    """write(temporary path), then rename over `path`: readers see the old file or the new one."""
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
    os.close(handle)
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def save(network, settings, path):
    """The weights at `path`, then the sidecar that vouches for them."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    payload = {
        "format": FORMAT_VERSION,
        "settings": dataclasses.asdict(settings),
        "state_dict": network.state_dict(),
    }

    def write_weights(p):
        # through a file object: given a name, torch.save records it inside the archive, and the
        # random temporary name would make equal weights hash differently
        with open(p, "wb") as f:
            torch.save(payload, f)

    _write_atomically(path, write_weights)
    sidecar = {
        "format": FORMAT_VERSION,
        "settings": dataclasses.asdict(settings),
        "sha256": _sha256(path),
        "test_accuracy": network.test_accuracy,
        "train_seconds": network.train_seconds,
    }

    def write_sidecar(p):
        with open(p, "w") as f:
            json.dump(sidecar, f, indent=2, sort_keys=True)

    _write_atomically(_sidecar(path), write_sidecar)


def _read_sidecar(path):
    try:
        with open(_sidecar(path)) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FeatureCacheError(
            f"{path}: its sidecar {_sidecar(path)} is missing, so nothing vouches for the file"
        ) from None
    except (OSError, ValueError) as error:
        raise FeatureCacheError(f"{path}: unreadable sidecar {_sidecar(path)}: {error}") from None


def load_cached(path, settings=None):
    """The verified classifier at `path` (eval mode, frozen, with `test_accuracy`).

    Raises FeatureCacheError unless the sidecar exists, the file's sha256 matches it, and the
    settings in the file, the sidecar and `settings` (when given) agree."""
    sidecar = _read_sidecar(path)
    try:
        digest = _sha256(path)
    except OSError as error:
        raise FeatureCacheError(f"{path}: unreadable: {error}") from None
    if digest != sidecar.get("sha256"):
        raise FeatureCacheError(
            f"{path}: sha256 {digest[:12]}... differs from the sidecar's "
            f"{str(sidecar.get('sha256'))[:12]}...: corrupted or replaced"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        stored = DigitFeatureSettings(**payload["settings"])
    except Exception as error:  # any failure to unpickle means the file is not ours
        raise FeatureCacheError(f"{path}: not a digit feature network: {error}") from None
    wanted = [dataclasses.asdict(stored), sidecar.get("settings")]
    if settings is not None:
        wanted.append(dataclasses.asdict(settings))
    if payload.get("format") != FORMAT_VERSION or any(s != wanted[0] for s in wanted):
        raise FeatureCacheError(f"{path}: format or settings differ from those asked for")
    network = DigitClassifier(stored.width, stored.features, stored.dropout)
    try:
        network.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError) as error:
        raise FeatureCacheError(f"{path}: weights do not fit the network: {error}") from None
    network.test_accuracy = sidecar.get("test_accuracy")
    network.train_seconds = sidecar.get("train_seconds")
    return network.eval().requires_grad_(False)


def load_or_train(settings=DigitFeatureSettings(), directory=None):
    """The cached classifier of `settings` if it verifies; otherwise a fresh one, cached. A file
    that fails verification is refused with a warning and overwritten, never loaded."""
    path = cache_path(settings, directory)
    if os.path.exists(path):
        try:
            return load_cached(path, settings)
        except FeatureCacheError as error:
            warnings.warn(
                f"refusing the cached digit feature network {path}: {error}; retraining it",
                stacklevel=2,
            )
    network = train(settings)
    save(network, settings, path)
    return network.requires_grad_(False)


def feature_network(settings=None, cache_dir=None):
    """The digit feature network of `settings` (default DigitFeatureSettings()) from the cache
    `cache_dir` (default: `default_cache_dir()`), trained at most once per process."""
    directory = os.path.abspath(cache_dir or default_cache_dir())
    return _memoised_network(settings or DigitFeatureSettings(), directory)


@functools.cache
def _memoised_network(settings, directory):
    return load_or_train(settings, directory)
