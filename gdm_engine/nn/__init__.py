"""nn.Module layers over gdm_engine.ops, drop-in beside their torch.nn counterparts, the
invertible layers of normalizing flows (forward(x) -> (y, logdet), inverse(y) -> (x, logdet)),
the denoising networks of diffusion models (UNet, ResidualMLP), and plain MLPs (mlp,
spectrally_normalised)."""

from .actnorm import ActNorm
from .causal_conv1d import CausalConv1d
from .coupling import AdditiveCoupling, AffineCoupling, SplineCoupling, Split
from .invertible import (
    InvConv1x1,
    InvertibleLayer,
    InvertibleSequential,
    Logit,
    Reshape,
    Squeeze,
    Unsqueeze,
)
from .masked_conv2d import MaskedConv2d
from .mlp import mlp, spectrally_normalised
from .unet import ConditionEmbedding, ResidualMLP, UNet

__all__ = [
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "CausalConv1d",
    "ConditionEmbedding",
    "InvConv1x1",
    "InvertibleLayer",
    "InvertibleSequential",
    "Logit",
    "MaskedConv2d",
    "Reshape",
    "ResidualMLP",
    "SplineCoupling",
    "Split",
    "Squeeze",
    "UNet",
    "Unsqueeze",
    "mlp",
    "spectrally_normalised",
]
