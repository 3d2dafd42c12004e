"""Lossless compression with a trained model's likelihood: the bits/dim a model reports,
redeemed as a file.

* PixelCNN and WaveNet: entropy coding of every position's categorical conditional (ANS, from
  the constriction library); a file costs the exact −log2 p(x), plus its header and a word or two
  of the coder. The decoder is the model's cached sampler (with cached=False, its naive one),
  the coder in place of the draw.
* The VAE: bits-back coding (BB-ANS, Townsend et al., 2019); a file costs the negative ELBO plus
  the initial bits.

``compress(model, x, checkpoint)`` returns the file's bytes and ``decompress(model, blob,
checkpoint)`` the array, bit for bit (shape and dtype too). The header (compression/container.py)
names the checkpoint by the sha256 of its file: decoding with another is a clear error.

The condition for decoding: the same checkpoint and the same arithmetic as the encoder's (same
backend, same torch build and the same kind of device). Both sides quantise the model's float
conditionals alike, from the same float computation; where the arithmetic differs, a conditional
may round differently, and the data checksum makes that a CompressionError, never a wrong array.
"""

import hashlib
import os
from typing import Union

import numpy as np
import torch

from gdm_engine._modules import evaluating
from gdm_engine._validation import check_int
from gdm_engine.models import VAE, AutoregressiveModel, GenerativeModel

from . import autoregressive, bits_back
from .container import DIGEST_BYTES, DTYPES, CompressionError, Header, checksum, pack, unpack

CHUNK = 512  # examples per coding batch of the autoregressive codecs


def codec(model: GenerativeModel, cached: bool = True) -> str:
    """The codec that compresses with `model`.

    Args:
        model: a trained model.
        cached: for autoregressive models, decode with the cached sampler (else the naive one).

    Returns:
        "autoregressive-cached", "autoregressive-naive" or "bits-back".

    Raises:
        ValueError: the model has no lossless codec here.
    """
    if isinstance(model, AutoregressiveModel):
        return "autoregressive-cached" if cached else "autoregressive-naive"
    if isinstance(model, VAE) and model.levels is not None:
        return "bits-back"
    raise ValueError(
        f"model {model.name!r} has no lossless codec: PixelCNN and WaveNet code with their exact "
        f"conditionals, the VAE by bits back; flows' and the DDPM's likelihoods are densities "
        f"of dequantised data, and the EBM and the GAN have none"
    )


def checkpoint_digest(path: Union[str, os.PathLike]) -> bytes:
    """The sha256 of a checkpoint file, which names it in the compressed file's header.

    Args:
        path: the checkpoint file.

    Returns:
        The 32-byte digest.
    """
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).digest()


def compress(
    model: GenerativeModel,
    x: Union[np.ndarray, torch.Tensor],
    checkpoint: bytes,
    cached: bool = True,
    chunk: int = CHUNK,
) -> bytes:
    """A compressed file of the examples x.

    Args:
        model: the trained model, with the checkpoint's weights (EMA, as loaded).
        x: integer levels, one example (*model.shape) or several (N, *model.shape).
        checkpoint: the sha256 digest of the checkpoint file (``checkpoint_digest``).
        cached: for autoregressive models, code for the cached decoder (else the naive one).
        chunk: examples per coding batch of the autoregressive codecs.

    Returns:
        The file's bytes.

    Raises:
        TypeError: x is not an array or tensor of integers.
        ValueError: x is not shaped as the model's examples or holds a level outside
            0 .. levels − 1; checkpoint is not a sha256 digest; chunk is below 1; the model has
            no codec (see ``codec``).
    """
    name = codec(model, cached)
    check_int("chunk", chunk, 1)
    _check_digest(checkpoint)
    array = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.dtype.name not in DTYPES:
        raise TypeError(f"x must hold integer levels ({', '.join(DTYPES)}), got {array.dtype}")
    if array.shape != model.shape and array.shape[1:] != model.shape:
        raise ValueError(
            f"x must be shaped {model.shape} or (N, *{model.shape}), got {array.shape}"
        )
    examples = torch.from_numpy(array.astype(np.int64)).reshape(-1, *model.shape)
    model.check_data(examples)
    examples = examples.to(model.device)
    with evaluating(model):
        if isinstance(model, VAE):
            words = bits_back.encode(model, examples)
        else:
            assert isinstance(model, AutoregressiveModel)  # the models with a codec
            words = autoregressive.encode(model, examples, chunk, cached)
    header = Header(name, checkpoint, array.shape, array.dtype.name, checksum(array), chunk)
    return pack(header, words)


def decompress(model: GenerativeModel, blob: bytes, checkpoint: bytes) -> np.ndarray:
    """The array a compressed file holds, bit for bit as it was given to ``compress``.

    Args:
        model: the model of the checkpoint that compressed, as loaded.
        blob: the file's bytes.
        checkpoint: the sha256 digest of that checkpoint's file (``checkpoint_digest``).

    Returns:
        The array, its shape and dtype as compressed.

    Raises:
        CompressionError: the file is not one of ours, is corrupted or truncated, was made with
            another checkpoint or codec than this model's, or decodes to other data than it
            holds (another backend's arithmetic).
    """
    _check_digest(checkpoint)
    header, words = unpack(blob)
    if header.checkpoint != checkpoint:
        raise CompressionError(
            f"the file was compressed with checkpoint sha256 {header.checkpoint.hex()[:16]}…; "
            f"this checkpoint is {checkpoint.hex()[:16]}…: decompress with that one"
        )
    cached = header.codec != "autoregressive-naive"
    if codec(model, cached) != header.codec:
        raise CompressionError(f"the file's codec {header.codec!r} is not this model's")
    if header.shape != model.shape and header.shape[1:] != model.shape:
        raise CompressionError(f"the file holds {header.shape}, not examples of {model.shape}")
    count = 1 if header.shape == model.shape else header.shape[0]
    try:
        with evaluating(model):
            if isinstance(model, VAE):
                examples = bits_back.decode(model, words, count)
            else:
                assert isinstance(model, AutoregressiveModel)  # the models with a codec
                examples = autoregressive.decode(model, words, count, header.chunk, cached)
    except (ValueError, AssertionError) as error:  # constriction's, on words that are not code
        if isinstance(error, CompressionError):
            raise
        raise CompressionError(
            f"the code does not decode ({error}): the file is corrupted"
        ) from None
    array = examples.cpu().numpy().astype(header.dtype).reshape(header.shape)
    if checksum(array) != header.checksum:
        raise CompressionError(
            "the decoded data do not match the file's checksum: the file is corrupted, or this "
            "machine's arithmetic differs from the encoder's (same checkpoint, backend, torch "
            "build and kind of device are needed)"
        )
    return array


def _check_digest(checkpoint: bytes) -> None:
    if not isinstance(checkpoint, bytes) or len(checkpoint) != DIGEST_BYTES:
        raise ValueError(
            f"checkpoint must be the {DIGEST_BYTES}-byte sha256 digest of the checkpoint file "
            f"(checkpoint_digest(path)), got {checkpoint!r:.40}"
        )


__all__ = [
    "CHUNK",
    "CompressionError",
    "checkpoint_digest",
    "codec",
    "compress",
    "decompress",
]
