"""WaveNet (van den Oord et al., 2016, "WaveNet: A Generative Model for Raw Audio"): stacks of
dilated causal convolutions with gated units, residual and skip connections, and a categorical
output; and its cached sampler, a ring buffer per dilated layer (Paine et al., 2016, "Fast
Wavenet Generation Algorithm")."""

import math
from collections.abc import Sequence
from typing import Optional, Union, cast

import torch
import torch.nn.functional as F
from torch import nn

from gdm_engine._validation import check_fraction, check_int
from gdm_engine.nn import CausalConv1d

from .autoregressive import AutoregressiveModel, Draw, as_matrix


class WaveNet(AutoregressiveModel):
    """WaveNet over sequences of integer levels: data of any shape is read as one sequence, its
    values in the tensor's raster order (8 x 8 digits: 64 steps, row by row).

    The input, levels scaled to [-1, 1] and shifted one step right (position t sees x_<t only),
    goes through a causal convolution to `channels`, then `stacks` x `layers` gated blocks with
    dilations 1, 2, 4, ... 2^(layers-1) in each stack (sec. 2.3-2.4): z = tanh(W_f * h) *
    sigmoid(W_g * h) by `causal_conv1d` with the fused gated epilogue, then one 1 x 1 convolution
    gives the residual (h + ...) and the skip output. The summed skips go through ReLU, 1 x 1,
    ReLU, 1 x 1 to logits over `levels` (sec. 2.2's softmax). Dropout on z while training.
    log_prob is exact.

    Args:
        shape: the shape of one example, read as a sequence of prod(shape) steps.
        levels: the number of levels of the discrete data (>= 2).
        channels: residual channels.
        skip_channels: channels of the skip outputs (None: channels).
        layers: dilated layers per stack (dilations 1 .. 2^(layers-1)).
        stacks: how many stacks of dilated layers.
        kernel_size: taps of every causal convolution (>= 2).
        hidden: channels of the output head (None: 2 · skip_channels).
        dropout: dropout probability on the gated units while training.

    Raises:
        TypeError: levels, channels, skip_channels, layers, stacks, kernel_size or hidden is
            not an int.
        ValueError: levels is None or below 2; channels, skip_channels, layers, stacks or
            hidden is below 1, kernel_size below 2; dropout is not in [0, 1).
    """

    name = "wavenet"

    def __init__(
        self,
        shape: Sequence[int],
        levels: int,
        channels: int = 32,
        skip_channels: Optional[int] = None,
        layers: int = 10,
        stacks: int = 1,
        kernel_size: int = 2,
        hidden: Optional[int] = None,
        dropout: float = 0.0,
    ):
        skip_channels = channels if skip_channels is None else skip_channels
        hidden = 2 * skip_channels if hidden is None else hidden
        for name, value in [
            ("channels", channels),
            ("skip_channels", skip_channels),
            ("layers", layers),
            ("stacks", stacks),
            ("hidden", hidden),
        ]:
            check_int(name, value, 1)
        check_int("kernel_size", kernel_size, 2)
        check_fraction("dropout", dropout)
        # skip_channels and hidden: resolved from None
        super().__init__(shape, levels, skip_channels=skip_channels, hidden=hidden)
        self.channels, self.kernel_size = channels, kernel_size
        self.length = math.prod(shape)
        self.dilations = [2**i for i in range(layers)] * stacks
        self.input = CausalConv1d(1, channels, kernel_size)
        self.gates = nn.ModuleList(
            CausalConv1d(channels, 2 * channels, kernel_size, dilation=d, activation="gated")
            for d in self.dilations
        )
        self.outputs = nn.ModuleList(
            CausalConv1d(channels, channels + skip_channels, 1) for _ in self.dilations
        )
        self.head = CausalConv1d(skip_channels, hidden, 1, activation="relu")
        self.out = CausalConv1d(hidden, levels, 1)
        self.dropout = nn.Dropout(dropout)

    @property
    def receptive_field(self) -> int:
        """How many earlier positions a position's conditional sees: k through the input
        convolution (after the one-step shift), and (k - 1) * d more through each dilated layer."""
        return self.kernel_size + (self.kernel_size - 1) * sum(self.dilations)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, levels, *shape) of every position's conditional given the positions before
        it in raster order.

        Args:
            x: levels (N, *shape), integer or float.

        Returns:
            Logits (N, levels, *shape).

        Raises:
            TypeError: x is not a tensor.
            ValueError: x is not shaped (N, *shape).
        """
        self.check_shape(x)
        return self.sequence_logits(self.scaled(x).reshape(len(x), 1, self.length)).reshape(
            len(x), self.levels, *self.shape
        )

    def sequence_logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (N, levels, T) for scaled inputs (N, 1, T): position t from inputs[:, :, <t].

        Args:
            inputs: levels scaled to [-1, 1] (see `scaled`), (N, 1, T).

        Returns:
            Logits (N, levels, T).
        """
        h = self.input(F.pad(inputs, (1, -1)))
        skips: Union[torch.Tensor, int] = 0
        for gated, output in zip(self.gates, self.outputs):
            out = output(self.dropout(gated(h)))
            h, skip = h + out[:, : self.channels], out[:, self.channels :]
            skips = skips + skip
        # a tensor: every model has at least one dilated layer
        return self.out(self.head(torch.relu(cast(torch.Tensor, skips))))

    def _sample_naive(self, x: torch.Tensor, draw: Draw) -> None:
        """At every step, the whole stack over the receptive field before the new position."""
        flat, window = x.view(len(x), self.length), self.receptive_field
        for t in range(self.length):
            start = max(0, t - window)
            inputs = self.scaled(flat[:, start : t + 1]).unsqueeze(1)
            flat[:, t] = draw(self.sequence_logits(inputs)[:, :, -1])

    def _generate(self, x: torch.Tensor, draw: Optional[Draw]) -> Optional[torch.Tensor]:
        """The cached sampler: a ring buffer per layer holds the last (k - 1) * d + 1 inputs of
        that layer, so each step runs every layer once, on one position, reading its dilated taps
        from the buffer (O(layers) work per step, not O(receptive field))."""
        flat = x.view(len(x), self.length)
        step = _SequenceStep(self, len(x))
        logits = step.zeros(len(x), self.levels, self.length) if draw is None else None
        previous = step.zeros(len(x), 1)  # the shift's zero padding before the first position
        for t in range(self.length):
            position = step.logits(previous, t)
            if draw is None:  # teacher forcing: keep x, record the logits
                assert logits is not None  # made above for draw None
                logits[:, :, t] = position
            else:
                flat[:, t] = draw(position)
            previous = self.scaled(flat[:, t]).unsqueeze(1)
        return None if logits is None else logits.reshape(len(x), self.levels, *self.shape)


class _SequenceStep:
    """A WaveNet as the cached sampler runs it: each convolution as one matrix over its taps
    (k taps x channels), and a ring buffer per convolution of the inputs its taps reach."""

    def __init__(self, model, n):
        self.model, k = model, model.kernel_size
        self.convolutions = [
            (as_matrix(conv.weight, conv.bias), conv.dilation)
            for conv in [model.input, *model.gates]
        ]
        self.outputs = [as_matrix(conv.weight, conv.bias) for conv in model.outputs]
        self.head = as_matrix(model.head.weight, model.head.bias)
        self.out = as_matrix(model.out.weight, model.out.bias)
        self.buffers = [
            self.zeros(n, weight.shape[0] // k, (k - 1) * d + 1)
            for (weight, _), d in self.convolutions
        ]

    def zeros(self, *shape):
        return self.model.out.weight.new_zeros(shape)

    def _convolve(self, index, value, t):
        """Push `value` (n, C) into buffer `index` at time t; the convolution's output there."""
        (weight, bias), dilation = self.convolutions[index]
        buffer, k = self.buffers[index], self.model.kernel_size
        span = buffer.shape[-1]
        buffer[:, :, t % span] = value
        taps = [(t - (k - 1 - tap) * dilation) % span for tap in range(k)]
        return torch.addmm(bias, buffer[:, :, taps].flatten(1), weight)

    def logits(self, previous, t):
        """Logits (n, levels) of position t, given the shifted input there (the scaled value of
        position t - 1, shape (n, 1))."""
        channels = self.model.channels
        h = self._convolve(0, previous, t)
        skips = 0
        for index, (weight, bias) in enumerate(self.outputs, start=1):
            a, b = self._convolve(index, h, t).chunk(2, dim=1)
            out = torch.addmm(bias, torch.tanh(a) * torch.sigmoid(b), weight)
            h, skips = h + out[:, :channels], skips + out[:, channels:]
        hidden = torch.relu(torch.addmm(self.head[1], torch.relu(skips), self.head[0]))
        return torch.addmm(self.out[1], hidden, self.out[0])
