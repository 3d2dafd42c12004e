"""Whole models: every one implements log_prob / loss / sample (see GenerativeModel)."""

from .base import GenerativeModel
from .independent import IndependentPixels
from .vae import VAE

MODELS = {cls.name: cls for cls in [VAE, IndependentPixels]}


def get(name):
    """The model class registered under `name`."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the models are {', '.join(MODELS)}")
    return MODELS[name]


__all__ = ["GenerativeModel", "IndependentPixels", "MODELS", "VAE", "get"]
