"""Whole models: every one implements log_prob / loss / sample (see GenerativeModel)."""

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

MODELS = {
    cls.name: cls
    for cls in [VAE, IndependentPixels, PixelCNN, WaveNet, RealNVP, Glow, NSF, EBM, DDPM, GAN]
}


def get(name):
    """The model class registered under `name`."""
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
