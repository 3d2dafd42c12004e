"""Coupling layers (Dinh et al., 2015 and 2017; Durkan et al., 2019) and Glow's split with a
learned prior (Kingma & Dhariwal, 2018), over the fused ops `affine_coupling` and `rq_spline`.

A coupling layer leaves one part x_a of its input as it is and transforms the other part x_b by
an invertible map whose parameters a conditioner network computes from x_a; its Jacobian is
triangular, so its log-det is the sum of the elementwise log-derivatives. The parts are

* partition="channel": the two halves of dimension 1 (channels of images, features of vectors),
  `parity` choosing which half is transformed;
* partition="checkerboard" (images, RealNVP sec. 3.4): pixels with (row + column + parity) even
  pass through, the others are transformed; the conditioner sees the passing pixels only.

Conditioners end in a zero-initialised layer, so that every coupling starts as the identity.
"""

import math
from collections.abc import Callable, Sequence
from typing import Optional, Union

import torch
from torch import nn

from gdm_engine import ops
from gdm_engine._validation import check_choice, check_fraction, check_int
from gdm_engine.ops._flow import check_positive

from .invertible import InvertibleLayer, InvertibleSequential, Replay

PARTITIONS = ("channel", "checkerboard")


def conditioner(
    shape: Sequence[int], channels_in: int, channels_out: int, hidden: int, dropout: float = 0.0
) -> nn.Sequential:
    """The network of a coupling: for images (C, H, W) 3x3 conv - ReLU - 1x1 conv - ReLU - 3x3
    conv (Glow's NN(), sec. 3.3), for vectors an MLP of two hidden layers; the last layer starts
    at zero.

    Args:
        shape: an example's shape, (C, H, W) for images, (D,) for vectors.
        channels_in: the network's input channels (features).
        channels_out: its output channels (features).
        hidden: the width of its hidden layers.
        dropout: the dropout rate before the last layer; default 0.

    Returns:
        The network, an nn.Sequential.
    """
    image = len(shape) == 3
    layers: list[nn.Module]
    if image:
        layers = [
            nn.Conv2d(channels_in, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv2d(hidden, channels_out, 3, padding=1),
        ]
    else:
        layers = [
            nn.Linear(channels_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, channels_out),
        ]
    last = layers[-1]
    assert isinstance(last, (nn.Conv2d, nn.Linear)) and last.bias is not None
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    return nn.Sequential(*layers)


def checkerboard(shape: Sequence[int], parity: int) -> torch.Tensor:
    """(1, C, H, W) bool mask: True where (row + column + parity) is even (the pixels that pass).

    Args:
        shape: an image's shape, (C, H, W).
        parity: 0 or 1, which of the two boards.

    Returns:
        The (1, C, H, W) bool mask.
    """
    _, height, width = shape
    rows, cols = torch.arange(height)[:, None], torch.arange(width)[None, :]
    board = (rows + cols + parity) % 2 == 0
    return board.expand(shape[0], height, width).unsqueeze(0).contiguous()


class _Coupling(InvertibleLayer):
    """What every coupling shares: the partition of the input and its conditioner.

    Subclasses give `params_per_element` conditioner outputs per transformed element and
    `_transform(x_b, params, mask, reverse)` -> (y_b, logdet)."""

    params_per_element = 2
    mask: torch.Tensor  # partition="checkerboard" only: the pixels that pass, (1, C, H, W)

    def __init__(
        self,
        shape: Sequence[int],
        partition: str = "channel",
        parity: int = 0,
        hidden: int = 64,
        dropout: float = 0.0,
        net: Optional[nn.Module] = None,
    ):
        super().__init__()
        check_choice("partition", partition, PARTITIONS)
        check_choice("parity", parity, (0, 1))
        check_int("hidden", hidden, 1)
        check_fraction("dropout", dropout)
        self.shape, self.partition, self.parity = tuple(shape), partition, parity
        channels = self.shape[0]
        if partition == "checkerboard":
            if len(self.shape) != 3:
                raise ValueError(
                    f"partition='checkerboard' needs images (C, H, W), got shape {self.shape}"
                )
            self.register_buffer("mask", checkerboard(self.shape, parity), persistent=False)
            c_in, c_out = channels, channels
        else:
            if channels < 2:
                raise ValueError(
                    f"partition='channel' needs at least 2 channels, got shape {self.shape}"
                )
            self.passing = channels // 2 if parity == 0 else channels - channels // 2
            c_in, c_out = self.passing, channels - self.passing
        self.net = (
            net
            if net is not None
            else conditioner(self.shape, c_in, c_out * self.params_per_element, hidden, dropout)
        )

    def extra_repr(self) -> str:
        """The shape and the partition, for the module's repr."""
        return f"shape={self.shape}, partition={self.partition!r}, parity={self.parity}"

    def _transform(
        self,
        x: torch.Tensor,
        params: Sequence[torch.Tensor],
        mask: Optional[torch.Tensor],
        reverse: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The elementwise map of x_b by the conditioner's `params`, and its logdet (N,)."""
        raise NotImplementedError

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_a, x_b): x_a passes, x_b is transformed; parity 1 swaps the halves."""
        first, second = x[:, : self._cut], x[:, self._cut :]
        return (first, second) if self.parity == 0 else (second, first)

    @property
    def _cut(self) -> int:
        return self.passing if self.parity == 0 else self.shape[0] - self.passing

    def _join(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.cat([a, b] if self.parity == 0 else [b, a], 1)

    def _params(self, conditioning: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The conditioner's output split into params_per_element tensors shaped like `like`."""
        out = self.net(conditioning).to(like.dtype)
        return out.unflatten(1, (self.params_per_element, like.shape[1])).unbind(1)

    def _couple(self, x: torch.Tensor, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
        if self.partition == "checkerboard":
            return self._transform(x, self._params(x * self.mask, x), self.mask, reverse)
        a, b = self._halves(x)
        y_b, logdet = self._transform(b, self._params(a, b), None, reverse)
        return self._join(a, y_b), logdet

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x_a as it is, x_b transformed with the parameters the conditioner computes from x_a.

        Args:
            x: an example batch, (N, *shape).

        Returns:
            (y, logdet): y shaped like x, logdet (N,).
        """
        return self._couple(x, reverse=False)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse map: y_a = x_a gives the same parameters, which invert y_b.

        Args:
            y: the coupling's output, (N, *shape).

        Returns:
            (x, logdet): x shaped like y, logdet (N,), minus forward's.
        """
        return self._couple(y, reverse=True)

    def replay(self, y: torch.Tensor, restore_rng: Optional[Callable[[], None]] = None) -> Replay:
        """Memory-saving backward's replay with the conditioner run once: the passing part of
        the input is read from the output, the network's parameters computed from it under
        autograd, the transformed part inverted with them, then transformed again under
        autograd (the elementwise op only).

        Args:
            y: the coupling's output, (N, *shape).
            restore_rng: unused: the conditioner runs once, so it draws its dropout mask once.

        Returns:
            The Replay (see InvertibleLayer.replay).
        """
        masked = self.partition == "checkerboard"
        a_out, b_out = (y, y) if masked else self._halves(y)
        return self._replay_from(a_out, b_out, lambda a, y_b: y_b if masked else self._join(a, y_b))

    def _replay_from(
        self,
        a: torch.Tensor,
        b_out: torch.Tensor,
        output: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> Replay:
        """The replay given the passing part a of the input and the transformed part b_out of
        the output; output(a, y_b) assembles the layer's output under autograd."""
        masked = self.partition == "checkerboard"
        a = a.detach().requires_grad_()
        mask = self.mask if masked else None
        with torch.enable_grad():
            params = self._params(a * self.mask if masked else a, b_out)
        with torch.no_grad():
            x_b, _ = self._transform(b_out, [p.detach() for p in params], mask, reverse=True)
        x_b = x_b.detach().requires_grad_()
        with torch.enable_grad():
            y_b, logdet = self._transform(x_b, params, mask, reverse=False)
            out = output(a, y_b)
        if masked:  # x_b holds the whole input; the network saw its passing pixels
            return Replay(x_b.detach(), [a, x_b], lambda g: g[0] + g[1], out, logdet)
        return Replay(
            self._join(a.detach(), x_b.detach()), [a, x_b], lambda g: self._join(*g), out, logdet
        )


class AffineCoupling(_Coupling):
    """The affine coupling of RealNVP (Dinh et al., 2017, eq. 6-9) and Glow (sec. 3.3):
    y_b = x_b * s + t with (t, raw) = NN(x_a) and log s = scale_map(raw) — "softclamp" (default,
    log s = 3 tanh(raw / 3), bounded), "sigmoid" (Glow) or "exp" (RealNVP) — by the fused op
    `gdm_engine.ops.affine_coupling`, log-det included.

    Args:
        shape: an example's shape, (C, H, W) for images, (D,) for vectors.
        partition: "channel" (default) or "checkerboard" (images only); see the module's
            docstring.
        parity: 0 (default) or 1, which part is transformed.
        hidden: the width of the default conditioner's hidden layers; default 64.
        scale_map: "softclamp" (default), "sigmoid" or "exp", the map from raw to log s.
        dropout: the default conditioner's dropout rate, in [0, 1); default 0.
        net: the conditioner, from x_a to 2 outputs (t, raw) per element of x_b stacked along
            dimension 1; default: `conditioner` (Glow's NN() for images, an MLP for vectors).

    Raises:
        ValueError: `scale_map`, `partition` or `parity` is none of the values above, `hidden`
            < 1, `dropout` not in [0, 1), partition="checkerboard" with a shape that is not
            (C, H, W), or partition="channel" with fewer than 2 channels.
        TypeError: `hidden` is not an int.
    """

    def __init__(
        self,
        shape: Sequence[int],
        partition: str = "channel",
        parity: int = 0,
        hidden: int = 64,
        scale_map: str = "softclamp",
        dropout: float = 0.0,
        net: Optional[nn.Module] = None,
    ):
        check_choice("scale_map", scale_map, ("exp", "sigmoid", "softclamp"))
        super().__init__(shape, partition, parity, hidden, dropout, net)
        self.scale_map = scale_map

    def _transform(
        self,
        x: torch.Tensor,
        params: Sequence[torch.Tensor],
        mask: Optional[torch.Tensor],
        reverse: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        shift, raw = params
        return ops.affine_coupling(
            x, shift, raw, scale_map=self.scale_map, mask=mask, reverse=reverse
        )


class AdditiveCoupling(_Coupling):
    """NICE's additive coupling (Dinh et al., 2015, sec. 3.2): y_b = x_b + m(x_a); volume
    preserving, logdet 0.

    Args:
        shape: an example's shape, (C, H, W) for images, (D,) for vectors.
        partition: "channel" (default) or "checkerboard" (images only); see the module's
            docstring.
        parity: 0 (default) or 1, which part is transformed.
        hidden: the width of the default conditioner's hidden layers; default 64.
        dropout: the default conditioner's dropout rate, in [0, 1); default 0.
        net: the conditioner, from x_a to m(x_a), shaped like x_b; default: `conditioner`.

    Raises:
        ValueError: `partition` or `parity` is none of the values above, `hidden` < 1,
            `dropout` not in [0, 1), partition="checkerboard" with a shape that is not
            (C, H, W), or partition="channel" with fewer than 2 channels.
        TypeError: `hidden` is not an int.
    """

    params_per_element = 1

    def _transform(
        self,
        x: torch.Tensor,
        params: Sequence[torch.Tensor],
        mask: Optional[torch.Tensor],
        reverse: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        (shift,) = params
        if mask is not None:
            shift = shift * ~mask
        return (x - shift if reverse else x + shift), x.new_zeros(x.shape[0])


# softplus(DERIVATIVE_AT_IDENTITY) + 1e-3 = 1: inner derivatives of 1 make a fresh spline the
# identity (uniform bins, unit slopes).
MIN_DERIVATIVE = 1e-3
DERIVATIVE_AT_IDENTITY = math.log(math.expm1(1 - MIN_DERIVATIVE))


class SplineCoupling(_Coupling):
    """The rational-quadratic spline coupling of neural spline flows (Durkan et al., 2019, sec.
    3.1-3.2): each x_b element goes through its own monotonic spline of `bins` bins on
    [-tail_bound, tail_bound] (identity outside), whose widths, heights and inner derivatives
    the conditioner computes from x_a, by the fused op `gdm_engine.ops.rq_spline`. Channel
    partition only (vectors, or channels of images).

    Args:
        shape: an example's shape, (C, H, W) for images, (D,) for vectors; C (D) >= 2.
        parity: 0 (default) or 1, which half of the channels is transformed.
        hidden: the width of the conditioner's hidden layers; default 64.
        bins: the spline's bins, >= 2; default 8.
        tail_bound: the spline's interval is [-tail_bound, tail_bound]; default 3.
        dropout: the conditioner's dropout rate, in [0, 1); default 0.

    Raises:
        TypeError: `bins` or `hidden` is not an int, or `tail_bound` not a number.
        ValueError: `bins` < 2, `tail_bound` not finite and > 0, `parity` not 0 or 1, `hidden`
            < 1, `dropout` not in [0, 1), or fewer than 2 channels.
    """

    def __init__(
        self,
        shape: Sequence[int],
        parity: int = 0,
        hidden: int = 64,
        bins: int = 8,
        tail_bound: float = 3.0,
        dropout: float = 0.0,
    ):
        check_int("bins", bins, 2)
        check_positive("tail_bound", tail_bound)
        self.params_per_element = 3 * bins - 1
        super().__init__(shape, "channel", parity, hidden, dropout)
        self.bins, self.tail_bound = bins, tail_bound

    def extra_repr(self) -> str:
        """The shape, the partition and the spline's settings, for the module's repr."""
        return f"{super().extra_repr()}, bins={self.bins}, tail_bound={self.tail_bound}"

    def _params(self, conditioning: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.net(conditioning).to(like.dtype)
        out = out.unflatten(1, (like.shape[1], self.params_per_element)).movedim(2, -1)
        k = self.bins
        widths, heights, derivatives = out[..., :k], out[..., k : 2 * k], out[..., 2 * k :]
        return widths, heights, derivatives + DERIVATIVE_AT_IDENTITY

    def _transform(
        self,
        x: torch.Tensor,
        params: Sequence[torch.Tensor],
        mask: Optional[torch.Tensor],
        reverse: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        y, logabsdet = ops.rq_spline(x, *params, tail_bound=self.tail_bound, reverse=reverse)
        return y, logabsdet.flatten(1).sum(1)


class Split(AffineCoupling):
    """Glow's split with a learned prior (sec. 3.4 and its code's split2d): the second half z_2
    of the channels leaves the flow here, scored by a Gaussian whose mean and log-scale a
    zero-initialised 3x3 convolution (a linear map for vectors) computes from the first half
    z_1; the layers of `inner` (the next scale) then run on z_1 alone.

    Written as a bijection: z_2 -> (z_2 - mu(z_1)) / sigma(z_1) is an affine coupling, whose
    log-det -sum log sigma plus the standard normal density of the result is exactly
    log N(z_2; mu, sigma). The output keeps every element, so the model's prior is one standard
    normal over the whole output.

    Args:
        shape: the input example's shape, (C, H, W) for images, (D,) for vectors; C (D) >= 2.
        inner: the next scale, run on z_1 (the first C // 2 channels); default: none (an empty
            InvertibleSequential).
        scale_map: "softclamp" (default), "sigmoid" or "exp": the map from the prior's raw
            output to log sigma, as AffineCoupling's.

    Raises:
        ValueError: `scale_map` is not one of those, or fewer than 2 channels.
    """

    def __init__(
        self,
        shape: Sequence[int],
        inner: Optional[InvertibleLayer] = None,
        scale_map: str = "softclamp",
    ):
        shape = tuple(shape)
        passing, image = shape[0] // 2, len(shape) == 3
        net: Union[nn.Conv2d, nn.Linear] = (
            nn.Conv2d(passing, 2 * (shape[0] - passing), 3, padding=1)
            if image
            else nn.Linear(passing, 2 * (shape[0] - passing))
        )
        assert net.bias is not None
        nn.init.zeros_(net.weight)
        nn.init.zeros_(net.bias)
        super().__init__(shape, "channel", parity=0, scale_map=scale_map, net=net)
        self.inner: InvertibleLayer = inner if inner is not None else InvertibleSequential()

    def extra_repr(self) -> str:
        """The shape, for the module's repr."""
        return f"shape={self.shape}"

    # the coupling's shortcut would read z_1 from the output, which the next scale changed:
    # a Split replays by inverse and forward (backward_from_output below avoids it altogether)
    replay = InvertibleLayer.replay

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_2 standardised by the prior computed from z_1, then `inner` on z_1.

        Args:
            x: (N, *shape).

        Returns:
            (y, logdet): y shaped like x (inner's output, then the standardised z_2), logdet
            (N,), the prior's and inner's summed.
        """
        y, logdet = self._couple(x, reverse=False)
        z1, z2 = self._halves(y)
        z1, inner_logdet = self.inner(z1)
        return self._join(z1, z2), logdet + inner_logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inner's inverse on the first half, then z_2 = mu(z_1) + sigma(z_1) * e_2.

        Args:
            y: (N, *shape).

        Returns:
            (x, logdet): x shaped like y, logdet (N,), minus forward's.
        """
        z1, z2 = self._halves(y)
        z1, inner_logdet = self.inner.inverse(z1)
        x, logdet = self._couple(self._join(z1, z2), reverse=True)
        return x, logdet + inner_logdet

    def backward_from_output(
        self,
        y: torch.Tensor,
        grad_y: torch.Tensor,
        grad_logdet: torch.Tensor,
        restore_rng: Optional[Callable[[], None]] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[nn.Parameter, torch.Tensor]]:
        """The next scale first, by its own memory-saving backward, which also rebuilds z_1;
        then the prior's coupling, replayed from z_1 (no inverse of the next scale twice).

        Args:
            y: the layer's output, (N, *shape).
            grad_y: the gradient of the loss with respect to y, shaped like y.
            grad_logdet: the gradient with respect to the layer's logdet, (N,).
            restore_rng: unused (a nested sequence holds no dropout).

        Returns:
            (x, grad_x, {parameter: gradient}) as InvertibleLayer.backward_from_output.
        """
        z1_out, e2 = self._halves(y)
        grad_z1_out, grad_e2 = self._halves(grad_y)
        z1, grad_z1, param_grads = self.inner.backward_from_output(z1_out, grad_z1_out, grad_logdet)
        replay = self._replay_from(z1, e2, lambda z1, e2: e2)
        params = [p for p in self.net.parameters() if p.requires_grad]
        leaves = replay.leaves
        grads = torch.autograd.grad(
            (replay.output, replay.logdet), [*leaves, *params], (grad_e2, grad_logdet)
        )
        grad_x = self._join(grad_z1 + grads[0], grads[1])
        param_grads.update(zip(params, grads[len(leaves) :]))
        return replay.input, grad_x, param_grads
