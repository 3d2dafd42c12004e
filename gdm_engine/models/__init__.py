"""Whole models: every one implements log_prob / loss / sample (see GenerativeModel)."""

from typing import cast

from .autoregressive import AutoregressiveModel
from .base import GenerativeModel, Player
from .ddpm import DDPM
from .ebm import EBM
from .flow import FlowModel
from .gan import GAN
from .glow import Glow
from .independent import IndependentPixels
from .nsf import NSF
from .pixelcnn import PixelCNN
from .realnvp import RealNVP
from .vae import VAE
from .wavenet import WaveNet

_REGISTERED: list[type[GenerativeModel]] = [
    VAE,
    IndependentPixels,
    PixelCNN,
    WaveNet,
    RealNVP,
    Glow,
    NSF,
    EBM,
    DDPM,
    GAN,
]
# every registered class names itself (a str; the base's None belongs to no model)
MODELS: dict[str, type[GenerativeModel]] = {cast(str, cls.name): cls for cls in _REGISTERED}


def get(name: str) -> type[GenerativeModel]:
    """The model class registered under `name`.

    Args:
        name: a key of MODELS ("vae", "pixelcnn", "ddpm", ...).

    Returns:
        The model's class.

    Raises:
        ValueError: name is not a registered model.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; the models are {', '.join(MODELS)}")
    return MODELS[name]


__all__ = [
    "AutoregressiveModel",
    "DDPM",
    "EBM",
    "FlowModel",
    "GAN",
    "GenerativeModel",
    "Glow",
    "IndependentPixels",
    "MODELS",
    "NSF",
    "PixelCNN",
    "Player",
    "RealNVP",
    "VAE",
    "WaveNet",
    "get",
]
