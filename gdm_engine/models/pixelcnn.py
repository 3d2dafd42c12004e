"""Gated PixelCNN (van den Oord et al., 2016b, "Conditional Image Generation with PixelCNN
Decoders"): vertical and horizontal stacks with no blind spot, gated residual blocks, colour
groups, a categorical output per channel; and its cached sampler (Ramachandran et al., 2017,
"Fast Generation for Convolutional Autoregressive Models")."""

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from gdm_engine._validation import check_fraction, check_int
from gdm_engine.nn import MaskedConv2d

from .autoregressive import AutoregressiveModel, Draw, as_matrix


def rows_above(kernel_size: int, with_centre_row: bool) -> torch.Tensor:
    """The vertical stack's (k, k) mask: the rows above the centre, and the centre row too for
    every layer after the first (whose input, the vertical stack below, sees only rows above).

    Args:
        kernel_size: k, odd.
        with_centre_row: include the centre row.

    Returns:
        A (k, k) bool mask.
    """
    mask = torch.zeros(kernel_size, kernel_size, dtype=torch.bool)
    mask[: kernel_size // 2 + with_centre_row] = True
    return mask


def gate(pre: torch.Tensor, groups: int) -> torch.Tensor:
    """The gated unit tanh(a) * sigmoid(b) (2016b, eq. 2) over channels laid out as `groups`
    colour groups, each holding its a half then its b half: the layout that a masked
    convolution's colour groups give without a fused gate, so output group j gates within
    input group j.

    Args:
        pre: pre-activations (N, 2 · C, ...), channels as described.
        groups: the number of colour groups.

    Returns:
        The gated units (N, C, ...).
    """
    a, b = pre.unflatten(1, (groups, 2, -1)).unbind(2)
    return (torch.tanh(a) * torch.sigmoid(b)).flatten(1, 2)


class PixelCNN(AutoregressiveModel):
    """Gated PixelCNN over images (C, H, W) of integer levels, in raster order, colour channels
    in order within a pixel.

    The vertical stack sees the rows above (k x k convolutions masked to rows above, then rows up
    to the centre); the horizontal stack sees the current row to the left (1 x k, mask "A" then
    "B"), plus the vertical stack at the same pixel through a 1 x 1 link. Together they cover every
    earlier pixel in the receptive field, with none of the original PixelCNN's blind spot. The
    horizontal stack's blocks are gated and residual: h + 1x1(gate(conv(h) + link(v))), with
    dropout on the gated outputs of both stacks while training. Colour groups (C of them) keep
    channel j of a pixel from seeing channels >= j of the same pixel. The output is a categorical
    over `levels` for each channel; log_prob is exact.

    Args:
        shape: (C, H, W) of one image; C is the number of colour groups.
        levels: the number of levels of the discrete data (>= 2).
        channels: channels of both stacks (a multiple of C).
        layers: gated layers per stack.
        kernel_size: k of the stacks' convolutions, odd, >= 3.
        hidden: channels of the output head (a multiple of C; None: 2 · channels).
        dropout: dropout probability on the gated outputs while training.

    Raises:
        TypeError: levels, channels, layers, kernel_size or hidden is not an int.
        ValueError: shape is not (C, H, W); levels is None or below 2; channels, layers or
            hidden is below 1; kernel_size is even or below 3; channels or hidden does not
            divide into the C colour groups; dropout is not in [0, 1).
    """

    name = "pixelcnn"

    def __init__(
        self,
        shape: Sequence[int],
        levels: int,
        channels: int = 64,
        layers: int = 6,
        kernel_size: int = 5,
        hidden: Optional[int] = None,
        dropout: float = 0.0,
    ):
        if len(shape) != 3:
            raise ValueError(f"PixelCNN models images (C, H, W); got shape {tuple(shape)}")
        for name, value in [
            ("channels", channels),
            ("layers", layers),
            ("kernel_size", kernel_size),
        ]:
            check_int(name, value, 1)
        colours = shape[0]
        hidden = 2 * channels if hidden is None else hidden
        check_int("hidden", hidden, 1)
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"kernel_size must be odd and at least 3, got {kernel_size}")
        if channels % colours or hidden % colours:
            raise ValueError(
                f"channels ({channels}) and hidden ({hidden}) must divide into the "
                f"{colours} colour groups"
            )
        check_fraction("dropout", dropout)
        super().__init__(shape, levels, hidden=hidden)  # hidden: resolved from None
        self.colours, self.channels, self.kernel_size = colours, channels, kernel_size
        k, p, g = kernel_size, channels, colours
        self.vertical = nn.ModuleList(
            MaskedConv2d(
                g if i == 0 else p, 2 * p, k, mask=rows_above(k, i > 0), activation="gated"
            )
            for i in range(layers)
        )
        self.horizontal = nn.ModuleList(
            MaskedConv2d(
                g if i == 0 else p, 2 * p, (1, k), mask="A" if i == 0 else "B", color_groups=g
            )
            for i in range(layers)
        )
        self.links = nn.ModuleList(MaskedConv2d(p, 2 * p, 1) for _ in range(layers))
        self.residuals = nn.ModuleList(MaskedConv2d(p, p, 1, color_groups=g) for _ in range(layers))
        self.head = MaskedConv2d(p, hidden, 1, color_groups=g, activation="relu")
        self.out = MaskedConv2d(hidden, g * levels, 1, color_groups=g)
        self.dropout = nn.Dropout(dropout)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, levels, C, H, W) of every channel's conditional given the pixels before it
        and the channels before it in its pixel.

        Args:
            x: levels (N, C, H, W), integer or float.

        Returns:
            Logits (N, levels, C, H, W).

        Raises:
            TypeError: x is not a tensor.
            ValueError: x is not shaped (N, C, H, W).
        """
        self.check_shape(x)
        v = h = self.scaled(x)
        for i in range(len(self.vertical)):
            v, h = self._block(i, v, h)
        return self._output(h)

    def _block(self, i: int, v: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i of both stacks."""
        v = self.dropout(self.vertical[i](v))
        pre = self.horizontal[i](h, self.links[i](v))
        update = self.dropout(gate(pre, self.colours))
        return v, self.residuals[i](update, h if i > 0 else None)

    def _output(self, h: torch.Tensor) -> torch.Tensor:
        """The head on features (N, channels, ...): logits (N, levels, C, ...)."""
        logits = self.out(self.head(torch.relu(h)))
        return logits.unflatten(1, (self.colours, self.levels)).transpose(1, 2)

    def draw_order(self) -> torch.Tensor:
        """Pixels in raster order, the colour channels of each pixel in turn: (i, j, c).

        Returns:
            (C·H·W,) int64 flat indices into one (C, H, W) example.
        """
        return torch.arange(math.prod(self.shape)).view(self.shape).permute(1, 2, 0).flatten()

    def _sample_naive(self, x: torch.Tensor, draw: Draw) -> None:
        """Recompute the whole network for every channel of every pixel."""
        _, height, width = self.shape
        for i in range(height):
            for j in range(width):
                for c in range(self.colours):
                    x[:, c, i, j] = draw(self.logits(x)[:, :, c, i, j])

    def _generate(self, x: torch.Tensor, draw: Optional[Draw]) -> Optional[torch.Tensor]:
        """The cached sampler. The vertical stack at row i sees only rows above, so each of its
        layers is computed for the whole of row i once, when the row begins, from the rows of the
        layer below that it reaches. The horizontal stack at pixel (i, j) reaches only its own row
        to the left, which the caches hold: each step computes every layer at that one pixel, from
        a 1 x (k//2 + 1) window, once per colour channel (a drawn channel changes what the later
        channels of the pixel see). Caches start empty and take each value as it is drawn."""
        (n, colours, height, width), r = x.shape, self.kernel_size // 2
        pixel = _PixelStep(self)
        inputs = pixel.zeros(n, colours, height, width)
        vertical = [pixel.zeros(n, self.channels, height, width) for _ in self.vertical]
        # the horizontal caches are padded with r zero columns on the left, "same" padding's zeros
        horizontal = [pixel.zeros(n, colours, height, width + r)] + [
            pixel.zeros(n, self.channels, height, width + r) for _ in self.horizontal
        ]
        logits = pixel.zeros(n, self.levels, *self.shape) if draw is None else None
        for i in range(height):
            pixel.vertical_row(inputs, vertical, i)
            for j in range(width):
                for c in range(colours):
                    step = pixel.logits(vertical, horizontal, i, j)[:, :, c]
                    if draw is None:  # teacher forcing: keep x, record the logits
                        assert logits is not None  # made above for draw None
                        logits[:, :, c, i, j] = step
                    else:
                        x[:, c, i, j] = draw(step)
                    inputs[:, c, i, j] = horizontal[0][:, c, i, j + r] = self.scaled(x[:, c, i, j])
        return logits


class _PixelStep:
    """The layers of a PixelCNN as the cached sampler uses them: each masked weight cut to its
    active rows or columns and, for the per-pixel horizontal layers, flattened into one matrix
    (the horizontal convolution and the link from the vertical stack in a single product)."""

    def __init__(self, model):
        self.model, r = model, model.kernel_size // 2
        self.vertical = [
            (layer.masked_weight()[:, :, : r + 1], layer.bias) for layer in model.vertical
        ]
        self.horizontal = []
        for conv, link in zip(model.horizontal, model.links):
            taps = conv.masked_weight()[:, :, 0, : r + 1].flatten(1)
            self.horizontal.append(
                (torch.cat([taps, link.masked_weight().flatten(1)], 1).T, conv.bias + link.bias)
            )
        self.residuals = [as_matrix(layer.masked_weight(), layer.bias) for layer in model.residuals]
        self.head = as_matrix(model.head.masked_weight(), model.head.bias)
        self.out = as_matrix(model.out.masked_weight(), model.out.bias)

    def zeros(self, *shape):
        return self.model.out.weight.new_zeros(shape)

    def vertical_row(self, inputs, vertical, i):
        """Row i of every vertical layer: the layer below's rows i-r .. i (row i is masked out
        for the first layer), zero-padded above the image and on both sides."""
        r = self.model.kernel_size // 2
        below = inputs
        for (weight, bias), cache in zip(self.vertical, vertical):
            window = F.pad(below[:, :, max(0, i - r) : i + 1], (r, r, max(0, r - i), 0))
            cache[:, :, i] = gate(F.conv2d(window, weight, bias), 1)[:, :, 0]
            below = cache

    def logits(self, vertical, horizontal, i, j):
        """Every horizontal layer at pixel (i, j), stored in the caches; the logits
        (n, levels, C) there."""
        r, colours = self.model.kernel_size // 2, self.model.colours
        for index, ((weight, bias), (res_weight, res_bias)) in enumerate(
            zip(self.horizontal, self.residuals)
        ):
            window = horizontal[index][:, :, i, j : j + r + 1].flatten(1)
            pre = torch.addmm(bias, torch.cat([window, vertical[index][:, :, i, j]], 1), weight)
            out = torch.addmm(res_bias, gate(pre, colours), res_weight)
            if index:
                out = out + horizontal[index][:, :, i, j + r]
            horizontal[index + 1][:, :, i, j + r] = out
        hidden = torch.relu(torch.addmm(self.head[1], torch.relu(out), self.head[0]))
        logits = torch.addmm(self.out[1], hidden, self.out[0])
        return logits.unflatten(1, (colours, self.model.levels)).transpose(1, 2)
