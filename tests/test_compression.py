"""Lossless compression: every codec's round trip is exact on random and adversarial inputs, its
size is the model's code length, and a damaged, truncated or foreign file is a clear error."""

import hashlib
import math

import numpy as np
import pytest
import torch

from gdm_engine import compression
from gdm_engine.compression import bits_back, container
from gdm_engine.models import VAE, PixelCNN, RealNVP, WaveNet

SHAPE, COLOUR, LEVELS = (1, 4, 5), (3, 2, 3), 9
DIGEST = bytes(range(32))


def _models():
    torch.manual_seed(0)
    return {
        "pixelcnn": PixelCNN(SHAPE, LEVELS, channels=8, layers=2, kernel_size=3),
        # colour: the draw order walks the channels of each pixel in turn
        "pixelcnn colour": PixelCNN(COLOUR, LEVELS, channels=9, layers=2, kernel_size=3),
        "wavenet": WaveNet(SHAPE, LEVELS, channels=8, layers=3),
        "vae": VAE(SHAPE, LEVELS, latent=4, hidden=16),
    }


MODELS = _models()
CODECS = [("pixelcnn", True), ("pixelcnn", False), ("wavenet", True), ("wavenet", False)]
CODECS += [("pixelcnn colour", True), ("pixelcnn colour", False), ("vae", True)]


def _inputs(shape, generator):
    """Random levels, and what a digits model finds unlikely: all white, all black, noise."""
    random = torch.randint(0, LEVELS, (7, *shape), generator=generator)
    return {
        "random": random,
        "white": torch.full((3, *shape), LEVELS - 1),
        "black": torch.zeros(2, *shape, dtype=torch.long),
        "one example": random[0],
    }


@pytest.mark.parametrize("name,cached", CODECS)
def test_round_trip_is_exact(name, cached, generator):
    for kind, x in _inputs(MODELS[name].shape, generator).items():
        for dtype in (np.uint8, np.int64):
            array = x.numpy().astype(dtype)
            blob = compression.compress(MODELS[name], array, DIGEST, cached=cached, chunk=3)
            back = compression.decompress(MODELS[name], blob, DIGEST)
            assert back.dtype == array.dtype and back.shape == array.shape, kind
            assert np.array_equal(back, array), kind


@pytest.mark.parametrize("name,cached", CODECS[:4])
def test_autoregressive_file_costs_the_exact_likelihood(name, cached):
    model = MODELS[name]
    x = torch.randint(0, LEVELS, (16, *SHAPE))
    header, words = container.unpack(compression.compress(model, x, DIGEST, cached=cached))
    with torch.no_grad():
        bits = -model.eval().log_prob(x).sum().item() / math.log(2)
    # ANS costs the information content plus the coder's final state (at most two words)
    assert bits - 1 <= 32 * len(words) <= bits * 1.001 + 64


def test_bits_back_costs_the_negative_elbo_plus_the_initial_bits():
    model = MODELS["vae"]
    x = torch.randint(0, LEVELS, (64, *SHAPE))
    _, words = container.unpack(compression.compress(model, x, DIGEST))
    with torch.no_grad():  # the ELBO averaged over many draws of z per image
        draws = torch.stack([model.eval().log_prob(x, samples=1) for _ in range(200)])
    elbo_bits = -draws.mean(0).sum().item() / math.log(2)
    net_bits = 32 * (len(words) - len(bits_back.seed_words(model)))
    assert abs(net_bits - elbo_bits) < 0.02 * elbo_bits + 64


@pytest.mark.parametrize("name", ["pixelcnn", "vae"])
def test_damaged_file_is_an_error_never_a_wrong_array(name):
    model, x = MODELS[name], torch.randint(0, LEVELS, (6, *SHAPE))
    blob = compression.compress(model, x, DIGEST)
    header_end = len(blob) - 4 * len(container.unpack(blob)[1])
    for position in [5, header_end - 1, header_end, len(blob) - 1, len(blob) // 2 + 3]:
        damaged = bytearray(blob)
        damaged[position] ^= 0x10
        with pytest.raises(compression.CompressionError):
            compression.decompress(model, bytes(damaged), DIGEST)
    for cut in [6, header_end - 2, len(blob) - 4, len(blob) - 1]:
        with pytest.raises(compression.CompressionError, match="truncated"):
            compression.decompress(model, blob[:cut], DIGEST)
    with pytest.raises(compression.CompressionError, match="not a gdm-engine"):
        compression.decompress(model, b"PNG" + blob, DIGEST)


def test_another_checkpoint_or_model_is_a_clear_error():
    x = torch.randint(0, LEVELS, (2, *SHAPE))
    blob = compression.compress(MODELS["pixelcnn"], x, DIGEST)
    with pytest.raises(compression.CompressionError, match="checkpoint sha256 000102"):
        compression.decompress(MODELS["pixelcnn"], blob, bytes(32))
    with pytest.raises(compression.CompressionError, match="codec"):
        compression.decompress(MODELS["vae"], blob, DIGEST)


def test_other_arithmetic_is_an_error_never_a_wrong_array():
    """A decoder whose conditionals differ from the encoder's (another backend's rounding,
    here weights nudged by 1e-3) fails on the checksum or the leftover code."""
    torch.manual_seed(1)
    model = PixelCNN(SHAPE, LEVELS, channels=8, layers=2, kernel_size=3)
    x = torch.randint(0, LEVELS, (8, *SHAPE))
    blob = compression.compress(model, x, DIGEST)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1 + 1e-3 * torch.randn_like(p))
    with pytest.raises(compression.CompressionError):
        compression.decompress(model, blob, DIGEST)


def test_header_round_trip():
    header = container.Header(
        "bits-back", bytes(range(32)), (300, 1, 128, 70000), "uint16", 0xDEADBEEF, 512
    )
    words = np.arange(1, 11, dtype=np.uint32) * 0x01010101
    back, back_words = container.unpack(container.pack(header, words))
    assert back == header and np.array_equal(back_words, words)


def test_bad_arguments_name_themselves():
    model = MODELS["pixelcnn"]
    x = torch.randint(0, LEVELS, (2, *SHAPE))
    with pytest.raises(TypeError, match="x must hold integer levels"):
        compression.compress(model, x.float(), DIGEST)
    with pytest.raises(ValueError, match="x must be shaped"):
        compression.compress(model, x[:, :, :3], DIGEST)
    with pytest.raises(ValueError, match=f"0 .. {LEVELS - 1}"):
        compression.compress(model, x + LEVELS, DIGEST)
    with pytest.raises(ValueError, match="checkpoint must be"):
        compression.compress(model, x, "abc")
    with pytest.raises(ValueError, match="chunk"):
        compression.compress(model, x, DIGEST, chunk=0)
    with pytest.raises(ValueError, match="no lossless codec"):
        compression.compress(RealNVP((1, 4, 4), LEVELS), x, DIGEST)


def test_checkpoint_digest_is_the_files_sha256(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"weights")
    assert compression.checkpoint_digest(path) == hashlib.sha256(b"weights").digest()
