"""Bits-back coding with a VAE (BB-ANS: Townsend, Bird & Barber, 2019, "Practical lossless
compression with latent variables using bits back coding"): an image costs its negative ELBO,
−log p(x|z) − log p(z) + log q(z|x), in bits, plus the initial bits amortised over the file.

Per image the encoder pops z from the stack with the posterior q(z|x) (taking back bits that are
already there), pushes x with p(x|z), then pushes z with the prior p(z) (§2.3 of the paper); the
decoder runs the mirror image in reverse order and pushes z back with q(z|x), returning the stack
to where the encoder found it. The latent space is discretised into 2^LATENT_BITS buckets per
dimension of equal mass under the prior (§2.5.1), so the prior is uniform over buckets and z is
each bucket's median. Images go through the networks one at a time on both sides, so both
compute alike. The first image's pop needs bits on the stack: the coder starts from SEED_WORDS
fixed random words (the initial bits), which the decoder finds again at the end.
"""

import math

import constriction
import numpy as np
import torch

from gdm_engine.models import VAE

from .autoregressive import CATEGORICAL
from .container import CompressionError

LATENT_BITS = 12  # buckets per latent dimension: 4,096 of equal prior mass
BUCKETS = 1 << LATENT_BITS
PRIOR = constriction.stream.model.Uniform(BUCKETS)
SEED = 0x6264  # of the initial bits: any fixed value, the same for encoder and decoder

# bucket i of a latent dimension spans the prior's quantiles i / B .. (i + 1) / B; its z is the
# median (i + 1/2) / B
_EDGES = torch.special.ndtri(torch.arange(BUCKETS + 1, dtype=torch.float64) / BUCKETS)
_MEDIANS = torch.special.ndtri((torch.arange(BUCKETS, dtype=torch.float64) + 0.5) / BUCKETS)


def seed_words(model: VAE) -> np.ndarray:
    """The initial bits: fixed random words, enough for the first image's pop of z (a bucket
    index of LATENT_BITS bits for each latent dimension, and one word more).

    Args:
        model: the VAE.

    Returns:
        uint32 words, none zero (the coder's top word must not be).
    """
    count = math.ceil(model.latent * LATENT_BITS / 32) + 1
    return np.random.default_rng(SEED).integers(1, 1 << 32, count, dtype=np.uint32)


def encode(model: VAE, x: torch.Tensor) -> np.ndarray:
    """The coder's words for x by BB-ANS.

    Args:
        model: the VAE (discrete data).
        x: levels (N, *model.shape), int64.

    Returns:
        The compressed words (uint32), the initial bits included.
    """
    coder = constriction.stream.stack.AnsCoder(seed_words(model))
    for image in x.split(1):
        buckets = coder.decode(CATEGORICAL, _posterior(model, image))  # bits back
        coder.encode_reverse(_pixels(image), CATEGORICAL, _likelihood(model, buckets))
        coder.encode_reverse(buckets, PRIOR)
    return coder.get_compressed()


def decode(model: VAE, words: np.ndarray, count: int) -> torch.Tensor:
    """The images that `encode` coded into `words`.

    Args:
        model: the VAE that encoded.
        words: the compressed words.
        count: how many images.

    Returns:
        Levels (count, *model.shape), int64, on the model's device.

    Raises:
        CompressionError: the stack does not end at the initial bits (the file is corrupted).
    """
    coder = constriction.stream.stack.AnsCoder(words)
    images = []
    for _ in range(count):  # last image first
        buckets = coder.decode(PRIOR, model.latent)
        pixels = coder.decode(CATEGORICAL, _likelihood(model, buckets))
        image = torch.from_numpy(pixels.astype(np.int64)).view(1, *model.shape).to(model.device)
        coder.encode_reverse(buckets, CATEGORICAL, _posterior(model, image))  # bits returned
        images.append(image)
    if not np.array_equal(coder.get_compressed(), seed_words(model)):
        raise CompressionError("the code does not end at its initial bits: the file is corrupted")
    return torch.cat(images[::-1]) if images else torch.zeros(0, *model.shape, dtype=torch.long)


def _pixels(image: torch.Tensor) -> np.ndarray:
    return image.flatten().cpu().numpy().astype(np.int32)


@torch.no_grad()
def _posterior(model: VAE, image: torch.Tensor) -> np.ndarray:
    """q(bucket | x) for every latent dimension of one image, (latent, BUCKETS) float64: the
    Gaussian posterior's mass between each bucket's edges."""
    mean, log_var = (t.double().cpu() for t in model.encode(image))
    std = torch.exp(0.5 * log_var)
    cdf = torch.special.ndtr((_EDGES - mean.T) / std.T)  # (latent, BUCKETS + 1)
    return (cdf[:, 1:] - cdf[:, :-1]).numpy()


@torch.no_grad()
def _likelihood(model: VAE, buckets: np.ndarray) -> np.ndarray:
    """p(x_d = k | z) for every pixel d at z = the buckets' medians, (D, levels) float64."""
    z = _MEDIANS[torch.from_numpy(buckets.astype(np.int64))].to(model.device, torch.float32)
    return model.level_log_probs(z.unsqueeze(0))[0].double().exp().cpu().numpy()
