"""Denoising networks of diffusion models: a small U-Net for images and a residual MLP for
vectors, both conditioned on the diffusion step (a sinusoidal embedding, Vaswani et al., 2017,
sec. 3.5, as in Ho et al., 2020, appendix B) and optionally on a class label.

Both take `(x, t, labels)`: x (N, ...), t (N,) int64 step indices, labels (N,) int64 in
0 .. classes, where the extra label `classes` is the learned null label of classifier-free
guidance (Ho & Salimans, 2022); labels=None means the null label (or no label at all for an
unconditional network, classes = 0). The output has the shape of x, and the last layer starts
at zero, so an untrained network predicts 0 (Ho et al.'s initialisation of the output).
"""

import math
from collections.abc import Sequence
from typing import Optional, TypeVar, Union

import torch
from torch import nn

from gdm_engine._validation import check_fraction, check_int

_Layer = TypeVar("_Layer", nn.Conv2d, nn.Linear)


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) step indices -> (N, dim): sines and cosines of t at dim/2 frequencies, geometric
    from 1 to 1/10,000 (Vaswani et al., 2017, sec. 3.5).

    Args:
        t: (N,) step indices (any real dtype).
        dim: the embedding's size, even.

    Returns:
        (N, dim): the sines, then the cosines.
    """
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ConditionEmbedding(nn.Module):
    """The step's sinusoidal embedding through a two-layer MLP, plus a learned embedding of the
    class label (classes + 1 rows: the last is the null label) when classes > 0.

    Args:
        dim: the sinusoidal embedding's size (even); the output has 4 * dim.
        classes: the number of class labels; default 0 (unconditional).

    Raises:
        TypeError: `classes` is not an int.
        ValueError: `classes` is negative.
    """

    def __init__(self, dim: int, classes: int = 0):
        super().__init__()
        check_int("classes", classes, 0)
        self.dim, self.classes = dim, classes
        self.time = nn.Sequential(nn.Linear(dim, 4 * dim), nn.SiLU(), nn.Linear(4 * dim, 4 * dim))
        self.label = nn.Embedding(classes + 1, 4 * dim) if classes else None

    @property
    def out_dim(self) -> int:
        """The embedding's size, 4 * dim."""
        return 4 * self.dim

    def null_labels(self, n: int, device: Union[torch.device, str]) -> torch.Tensor:
        """n null labels (the label `classes`) for classifier-free guidance's unconditional pass.

        Args:
            n: how many.
            device: where they are made.

        Returns:
            (n,) int64, all `classes`.
        """
        return torch.full((n,), self.classes, dtype=torch.long, device=device)

    def forward(self, t: torch.Tensor, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The embedding of steps t and labels.

        Args:
            t: (N,) int64 step indices.
            labels: (N,) int64 in 0 .. classes; default None: the null label (no label with
                classes = 0).

        Returns:
            (N, 4 * dim).

        Raises:
            ValueError: labels given to an unconditional embedding (classes = 0).
        """
        embedding = self.time(sinusoidal_embedding(t, self.dim))
        if self.label is None:
            if labels is not None:
                raise ValueError("labels were given to an unconditional network (classes=0)")
            return embedding
        if labels is None:
            labels = self.null_labels(len(t), t.device)
        return embedding + self.label(labels)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


def _zero(layer: _Layer) -> _Layer:
    assert layer.bias is not None  # every layer zeroed here is built with a bias
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class ResidualBlock(nn.Module):
    """GroupNorm, SiLU, 3x3 conv; add the projected condition embedding; GroupNorm, SiLU,
    dropout, 3x3 conv (zero-initialised, so the block starts as its skip path); plus the input,
    through a 1x1 conv where the channel count changes (Ho et al., 2020, appendix B)."""

    def __init__(
        self, channels_in: int, channels_out: int, embedding_dim: int, dropout: float = 0.0
    ):
        super().__init__()
        self.first = nn.Sequential(
            _group_norm(channels_in), nn.SiLU(), nn.Conv2d(channels_in, channels_out, 3, padding=1)
        )
        self.condition = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, channels_out))
        self.second = nn.Sequential(
            _group_norm(channels_out),
            nn.SiLU(),
            nn.Dropout(dropout),
            _zero(nn.Conv2d(channels_out, channels_out, 3, padding=1)),
        )
        self.skip: nn.Module = (
            nn.Conv2d(channels_in, channels_out, 1)
            if channels_in != channels_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The block on x (N, C_in, H, W) conditioned on embedding (N, embedding_dim):
        (N, C_out, H, W)."""
        h = self.first(x) + self.condition(embedding)[:, :, None, None]
        return self.skip(x) + self.second(h)


class UNet(nn.Module):
    """A U-Net over images (C, H, W): one resolution per entry of `multipliers` (width x
    multiplier channels, `blocks` residual blocks each), halved between them by a strided conv
    and doubled back by nearest-neighbour upsampling and a conv, with skip connections from
    every block of the way down to the way up, and a middle block at the lowest resolution.
    No attention: at 8x8 pixels the convolutions already see the whole image. `inputs`: the
    input's channels where they differ from the output's `channels` (extra input features).

    Args:
        channels: the output's channels.
        width: the channels at the first resolution; default 64.
        multipliers: the channels of each resolution, in multiples of width; default (1, 2).
        blocks: residual blocks per resolution on the way down (one more on the way up);
            default 2.
        classes: class labels to condition on; default 0 (unconditional).
        dropout: the residual blocks' dropout rate, in [0, 1); default 0.
        inputs: the input's channels; default None: `channels`.

    Raises:
        TypeError: `channels`, `width`, `blocks`, `inputs` or `classes` is not an int.
        ValueError: `channels`, `width`, `blocks` or `inputs` below 1, `classes` negative,
            `multipliers` empty or not all ints >= 1, or `dropout` not in [0, 1).
    """

    def __init__(
        self,
        channels: int,
        width: int = 64,
        multipliers: Sequence[int] = (1, 2),
        blocks: int = 2,
        classes: int = 0,
        dropout: float = 0.0,
        inputs: Optional[int] = None,
    ):
        super().__init__()
        inputs = channels if inputs is None else inputs
        for name, value in [
            ("channels", channels),
            ("width", width),
            ("blocks", blocks),
            ("inputs", inputs),
        ]:
            check_int(name, value, 1)
        if not multipliers or not all(isinstance(m, int) and m >= 1 for m in multipliers):
            raise ValueError(
                f"multipliers must be a non-empty list of ints >= 1, got {multipliers!r}"
            )
        check_fraction("dropout", dropout)
        self.embedding = ConditionEmbedding(width, classes)
        dim = self.embedding.out_dim
        widths = [width * m for m in multipliers]
        self.first = nn.Conv2d(inputs, width, 3, padding=1)
        self.down, skips, current = nn.ModuleList(), [width], width
        for level, level_width in enumerate(widths):
            for _ in range(blocks):
                self.down.append(ResidualBlock(current, level_width, dim, dropout))
                current = level_width
                skips.append(current)
            if level < len(widths) - 1:
                self.down.append(nn.Conv2d(current, current, 3, stride=2, padding=1))
                skips.append(current)
        self.middle = ResidualBlock(current, current, dim, dropout)
        self.up = nn.ModuleList()
        for level, level_width in reversed(list(enumerate(widths))):
            for _ in range(blocks + 1):
                self.up.append(ResidualBlock(current + skips.pop(), level_width, dim, dropout))
                current = level_width
            if level > 0:
                self.up.append(
                    nn.Sequential(
                        nn.Upsample(scale_factor=2, mode="nearest"),
                        nn.Conv2d(current, current, 3, padding=1),
                    )
                )
        self.last = nn.Sequential(
            _group_norm(current), nn.SiLU(), _zero(nn.Conv2d(current, channels, 3, padding=1))
        )
        self.downsamplings = len(widths) - 1

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The network's prediction for x at steps t.

        Args:
            x: (N, inputs, H, W), H and W divisible by 2 ** (len(multipliers) - 1).
            t: (N,) int64 step indices.
            labels: (N,) int64 in 0 .. classes; default None: the null label.

        Returns:
            (N, channels, H, W).

        Raises:
            ValueError: H or W does not divide by 2 ** (len(multipliers) - 1); labels given to
                an unconditional network.
        """
        factor = 2**self.downsamplings
        if x.shape[-1] % factor or x.shape[-2] % factor:
            raise ValueError(
                f"x's height and width must divide by {factor} (the U-Net halves "
                f"them {self.downsamplings} times), got shape {tuple(x.shape)}"
            )
        embedding = self.embedding(t, labels)
        h = self.first(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, embedding) if isinstance(layer, ResidualBlock) else layer(h)
            skips.append(h)
        h = self.middle(h, embedding)
        for layer in self.up:
            if isinstance(layer, ResidualBlock):
                h = layer(torch.cat([h, skips.pop()], dim=1), embedding)
            else:
                h = layer(h)
        return self.last(h)


class ResidualMLP(nn.Module):
    """An MLP over vectors (D,): a linear map to `width` units, `blocks` residual blocks
    (LayerNorm, SiLU, linear, plus the projected condition embedding, SiLU, dropout, linear),
    and a zero-initialised linear map back to D. `inputs`: the input's size where it differs
    from the output's D (extra input features).

    Args:
        features: D, the output's size.
        width: the hidden units; default 256.
        blocks: the residual blocks; default 3.
        classes: class labels to condition on; default 0 (unconditional).
        dropout: the blocks' dropout rate, in [0, 1); default 0.
        inputs: the input's size; default None: `features`.

    Raises:
        TypeError: `features`, `width`, `blocks`, `inputs` or `classes` is not an int.
        ValueError: `features`, `width`, `blocks` or `inputs` below 1, `classes` negative, or
            `dropout` not in [0, 1).
    """

    def __init__(
        self,
        features: int,
        width: int = 256,
        blocks: int = 3,
        classes: int = 0,
        dropout: float = 0.0,
        inputs: Optional[int] = None,
    ):
        super().__init__()
        inputs = features if inputs is None else inputs
        for name, value in [
            ("features", features),
            ("width", width),
            ("blocks", blocks),
            ("inputs", inputs),
        ]:
            check_int(name, value, 1)
        check_fraction("dropout", dropout)
        self.embedding = ConditionEmbedding(width, classes)
        self.first = nn.Linear(inputs, width)
        self.blocks = nn.ModuleList(
            _MLPBlock(width, self.embedding.out_dim, dropout) for _ in range(blocks)
        )
        self.last = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), _zero(nn.Linear(width, features)))

    def forward(
        self, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """The network's prediction for x at steps t.

        Args:
            x: (N, inputs).
            t: (N,) int64 step indices.
            labels: (N,) int64 in 0 .. classes; default None: the null label.

        Returns:
            (N, features).

        Raises:
            ValueError: labels given to an unconditional network (classes = 0).
        """
        embedding = self.embedding(t, labels)
        h = self.first(x)
        for block in self.blocks:
            h = block(h, embedding)
        return self.last(h)


class _MLPBlock(nn.Module):
    def __init__(self, width: int, embedding_dim: int, dropout: float):
        super().__init__()
        self.first = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, width))
        self.condition = nn.Sequential(nn.SiLU(), nn.Linear(embedding_dim, width))
        self.second = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), nn.Linear(width, width))

    def forward(self, h: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        return h + self.second(self.first(h) + self.condition(embedding))
