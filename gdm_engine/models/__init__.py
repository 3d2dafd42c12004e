"""Whole models: every one implements log_prob / loss / sample (see GenerativeModel)."""

from .base import GenerativeModel
from .autoregressive import AutoregressiveModel
from .independent import IndependentPixels
from .pixelcnn import PixelCNN
from .vae import VAE
from .wavenet import WaveNet

MODELS = {cls.name: cls for cls in [VAE, IndependentPixels, PixelCNN, WaveNet]}


def get(name):
    """The model class registered under `name`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the models are {', '.join(MODELS)}")
    return MODELS[name]


__all__ = ["AutoregressiveModel", "GenerativeModel", "IndependentPixels", "MODELS", "PixelCNN",
           "VAE", "WaveNet", "get"]
