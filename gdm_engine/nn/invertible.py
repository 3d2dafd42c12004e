"""Invertible layers and the container that trains them without storing activations.

Every layer maps x to (y, logdet) with `forward` and y back to (x, logdet) with `inverse`, where
logdet (N,) is log|det| of the Jacobian of the direction taken, per example: inverse's logdet is
the negative of forward's at the same point. A flow's log-density is then
log p(x) = log N(f(x); 0, I) + sum of the forward logdets (Dinh et al., 2017, eq. 3).

`InvertibleSequential(..., memory_saving=True)` keeps only its output for backward: the backward
pass rebuilds each layer's input from its output with the layer's inverse, runs that one layer
forward again under autograd and back-propagates through it, log-det included (the reversible
backprop of Gomez et al., 2017, sec. 4, applied to whole flows). Memory then stays flat in
depth, at the price of one forward pass without autograd and a replay per layer: its inverse
and its forward under autograd, which a coupling shares by running its network once.
"""

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Optional, cast

import torch
from torch import nn

from gdm_engine._validation import check_int

# the CPU generator's state and, on a GPU, the device's
_RngState = tuple[torch.Tensor, Optional[torch.Tensor]]


@dataclasses.dataclass
class Replay:
    """A layer's input rebuilt from its output, and the layer's pass recorded by autograd:
    `output` and `logdet` as functions of the `leaves`, tensors that stand for the input
    (`input_grad` turns their gradients into the input's)."""

    input: torch.Tensor
    leaves: list[torch.Tensor]
    input_grad: Callable[[Sequence[torch.Tensor]], torch.Tensor]
    output: torch.Tensor
    logdet: torch.Tensor


def _nothing() -> None:
    pass


class InvertibleLayer(nn.Module):
    """The protocol: forward(x) -> (y, logdet), inverse(y) -> (x, logdet), and replay(y) for
    memory-saving backward."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's map x -> y and its log-det.

        Args:
            x: the input, (N, ...).

        Returns:
            (y, logdet): the output and log|det dy/dx| per example, (N,).

        Raises:
            NotImplementedError: here; each layer defines it.
        """
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The inverse map y -> x and its log-det, the negative of forward's at that x.

        Args:
            y: the output, (N, ...).

        Returns:
            (x, logdet): the input that gives y and log|det dx/dy| per example, (N,).

        Raises:
            NotImplementedError: here; each layer defines it.
        """
        raise NotImplementedError

    def replay(
        self, y: torch.Tensor, restore_rng: Optional[Callable[[], None]] = _nothing
    ) -> Replay:
        """The input x that gave y, and self(x) recorded by autograd (a Replay). This one inverts,
        then runs forward again; a layer that can share work between the two (a coupling's
        network, whose input passes through unchanged) overrides it. `restore_rng()` puts back
        the random state the forward pass saw, before each part that draws random numbers.

        Args:
            y: the layer's output, (N, ...).
            restore_rng: called before each part that draws random numbers; default (or None):
                nothing.

        Returns:
            The Replay: x, the leaves standing for it, and the output and logdet under autograd.
        """
        with torch.no_grad():
            x, _ = self.inverse(y)
        if restore_rng is not None:
            restore_rng()
        x = x.detach().requires_grad_()
        with torch.enable_grad():
            out, logdet = self(x)
        return Replay(x.detach(), [x], lambda grads: grads[0], out, logdet)

    def backward_from_output(
        self,
        y: torch.Tensor,
        grad_y: torch.Tensor,
        grad_logdet: torch.Tensor,
        restore_rng: Callable[[], None] = _nothing,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[nn.Parameter, torch.Tensor]]:
        """Memory-saving backward through this layer from its output y: (x, the gradient of x,
        {parameter: gradient}) for the incoming gradients of y and of the logdet.

        Args:
            y: the layer's output, (N, ...).
            grad_y: the gradient of the loss with respect to y, shaped like y.
            grad_logdet: the gradient with respect to the layer's logdet, (N,).
            restore_rng: puts back the forward pass's random state (see replay).

        Returns:
            (x, grad_x, {parameter: gradient}): the rebuilt input, its gradient, and the
            gradients of the parameters that require them (none for those autograd left unused).
        """
        replay = self.replay(y, restore_rng)
        params = [p for p in self.parameters() if p.requires_grad]
        pairs = [
            (t, g)
            for t, g in ((replay.output, grad_y), (replay.logdet, grad_logdet))
            if t.requires_grad
        ]  # a permutation's logdet is a constant
        outputs, grad_outputs = zip(*pairs)
        leaves = replay.leaves
        grads = torch.autograd.grad(outputs, [*leaves, *params], grad_outputs, allow_unused=True)
        grad_x = replay.input_grad(
            [g if g is not None else torch.zeros_like(leaf) for g, leaf in zip(grads, leaves)]
        )
        return (
            replay.input,
            grad_x,
            {p: g for p, g in zip(params, grads[len(leaves) :]) if g is not None},
        )


def logdet_dtype(x: torch.Tensor) -> torch.dtype:
    """Log-dets are summed in at least fp32 (fp16 inputs), in float64 for float64 inputs.

    Args:
        x: the layer's input.

    Returns:
        The dtype of the logdet for x: x's dtype promoted with float32.
    """
    return torch.promote_types(x.dtype, torch.float32)


def _no_logdet(x: torch.Tensor) -> torch.Tensor:
    return x.new_zeros(x.shape[0], dtype=logdet_dtype(x))


class InvertibleSequential(InvertibleLayer):
    """Layers applied in order; logdets add up. inverse runs them backwards.

    memory_saving=True keeps no intermediate activation for backward (see the module's
    docstring): gradients of the input, of every parameter and of the summed logdet equal plain
    autograd's up to the round-off of the inverse. Layers that draw random numbers (dropout in a
    conditioner) see the same random state when they are run again, as in torch.utils.checkpoint;
    not so inside a nested sequence (multi-scale Split), where dropout raises a ValueError.

    Args:
        *layers: the InvertibleLayer instances, in the order forward applies them.
        memory_saving: keep no intermediate activation for backward; default False (autograd's
            usual backward).

    Raises:
        TypeError: a layer in `layers` is not an InvertibleLayer.
        ValueError: memory_saving=True with dropout inside a nested InvertibleSequential.
    """

    def __init__(self, *layers: InvertibleLayer, memory_saving: bool = False):
        super().__init__()
        if not all(isinstance(layer, InvertibleLayer) for layer in layers):
            raise TypeError("InvertibleSequential takes InvertibleLayer instances")
        if memory_saving:
            _check_rebuildable(layers)
        self.layers = nn.ModuleList(layers)
        self.memory_saving = memory_saving

    def extra_repr(self) -> str:
        """The memory_saving setting, for the module's repr."""
        return f"memory_saving={self.memory_saving}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers in order, their logdets summed.

        Args:
            x: the input, (N, ...).

        Returns:
            (y, logdet): the last layer's output and the summed log-det per example, (N,).
        """
        params = [p for p in self.parameters() if p.requires_grad]
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.memory_saving and needs_grad:
            return _RebuiltFromOutputs.apply(self, x, *params)
        return _run(self.layers, x)

    def backward_from_output(
        self,
        y: torch.Tensor,
        grad_y: torch.Tensor,
        grad_logdet: torch.Tensor,
        restore_rng: Optional[Callable[[], None]] = None,
        *,
        rng_states: Optional[Sequence[Optional[_RngState]]] = None,
    ) -> tuple[torch.Tensor, torch.Tensor, dict[nn.Parameter, torch.Tensor]]:
        """Memory-saving backward through every layer, from the last (see
        InvertibleLayer.backward_from_output); `rng_states`, one per layer, are the random states
        their forward passes saw (a nested sequence has none: it holds no dropout).

        Args:
            y: the sequence's output, (N, ...).
            grad_y: the gradient of the loss with respect to y, shaped like y.
            grad_logdet: the gradient with respect to the summed logdet, (N,).
            restore_rng: unused: each layer's random state comes from `rng_states`.
            rng_states: the random state before each layer's forward pass, one per layer; None:
                the random state is left as it is.

        Returns:
            (x, grad_x, {parameter: gradient}) as InvertibleLayer.backward_from_output, the
            gradients of a parameter shared by several layers summed.
        """
        states = rng_states or [None] * len(self.layers)
        device = y.device
        param_grads: dict[nn.Parameter, torch.Tensor] = {}
        for layer, state in zip(reversed(self.layers), reversed(states)):

            def restore(state: Optional[_RngState] = state) -> None:
                if state is not None:
                    _set_rng_state(state, device)

            restore()
            y, grad_y, grads = cast(InvertibleLayer, layer).backward_from_output(
                y, grad_y, grad_logdet, restore
            )
            for p, g in grads.items():
                param_grads[p] = param_grads[p] + g if p in param_grads else g
        return y, grad_y, param_grads

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The layers' inverses, from the last, their logdets summed.

        Args:
            y: the sequence's output, (N, ...).

        Returns:
            (x, logdet): the sequence's input and the summed log-det per example, (N,).
        """
        logdet = _no_logdet(y)
        for layer in reversed(self.layers):
            y, step = cast(InvertibleLayer, layer).inverse(y)
            logdet = logdet + step
        return y, logdet


def _check_rebuildable(layers: Iterable[nn.Module]) -> None:
    """The rebuild gives each layer of the sequence the random state its forward pass saw; a
    layer that nests a sequence of its own (a multi-scale Split) runs that sequence's inverse in
    another order, so its dropout masks would differ and the gradients be wrong."""
    for layer in layers:
        nested = any(isinstance(m, InvertibleSequential) for m in layer.modules())
        if nested and any(isinstance(m, nn.Dropout) and m.p > 0 for m in layer.modules()):
            raise ValueError(
                "memory_saving=True cannot rebuild dropout inside a nested "
                "InvertibleSequential (a multi-scale Split): use dropout=0, or "
                "memory_saving=False"
            )


def _run(
    layers: Iterable[nn.Module], x: torch.Tensor, rng_states: Optional[list[_RngState]] = None
) -> tuple[torch.Tensor, torch.Tensor]:
    logdet = _no_logdet(x)
    for layer in layers:
        if rng_states is not None:
            rng_states.append(_rng_state(x.device))
        x, step = layer(x)
        logdet = logdet + step
    return x, logdet


def _rng_state(device: torch.device) -> _RngState:
    return torch.get_rng_state(), (
        torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    )


def _set_rng_state(state: _RngState, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


class _RebuiltFromOutputs(torch.autograd.Function):
    """forward: the layers without autograd, saving only the output. backward: the sequence's
    backward_from_output, layer by layer from the last."""

    @staticmethod
    def forward(ctx, sequence, x, *params):
        # the random states (5 KB each on a CPU) are kept only where a layer draws from them
        draws = any(isinstance(m, nn.Dropout) and m.p > 0 for m in sequence.modules())
        rng_states = [] if draws and sequence.training else None
        with torch.no_grad():
            y, logdet = _run(sequence.layers, x, rng_states)
        ctx.sequence, ctx.rng_states = sequence, rng_states
        ctx.save_for_backward(y)
        return y, logdet

    @staticmethod
    def backward(ctx, grad_y, grad_logdet):
        (y,) = ctx.saved_tensors
        devices = [y.device] if y.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            _, grad_x, param_grads = ctx.sequence.backward_from_output(
                y, grad_y, grad_logdet, rng_states=ctx.rng_states
            )
        params = [p for p in ctx.sequence.parameters() if p.requires_grad]
        return (None, grad_x, *[param_grads.get(p) for p in params])


class Squeeze(InvertibleLayer):
    """(C, H, W) -> (4C, H/2, W/2): each 2x2 block of pixels becomes four channels (Dinh et al.,
    2017, sec. 3.6). A permutation: logdet 0."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, C, H, W) -> (N, 4C, H/2, W/2), each 2x2 block of pixels to four channels.

        Args:
            x: images, (N, C, H, W), H and W even.

        Returns:
            (y, logdet): y (N, 4C, H/2, W/2), logdet zeros (N,).

        Raises:
            ValueError: x's height or width is odd.
        """
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs an even height and width, got {h}x{w}")
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(n, 4 * c, h // 2, w // 2), _no_logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 4C, H, W) -> (N, C, 2H, 2W), each four channels back to a 2x2 block of pixels.

        Args:
            y: (N, 4C, H, W), the channels a multiple of 4.

        Returns:
            (x, logdet): x (N, C, 2H, 2W), logdet zeros (N,).
        """
        n, c, h, w = y.shape
        x = y.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c // 4, 2 * h, 2 * w), _no_logdet(y)


class Unsqueeze(Squeeze):
    """The inverse of Squeeze: (4C, H, W) -> (C, 2H, 2W). A multi-scale flow ends each scale with
    it, so that every scale hands back a tensor of the shape it was given."""

    # the argument names swap with the methods (forward(y), inverse(x)): positional, as
    # nn.Module calls them, they are the protocol's
    forward, inverse = Squeeze.inverse, Squeeze.forward  # type: ignore[assignment]


class Reshape(InvertibleLayer):
    """Examples of shape `before` viewed as shape `after` (the same number of elements), e.g.
    images flattened for a flow over vectors. logdet 0.

    Args:
        before: the shape of an input example, without the batch dimension.
        after: the shape of an output example, of as many elements.

    Raises:
        ValueError: `before` and `after` have different numbers of elements.
    """

    def __init__(self, before: Sequence[int], after: Sequence[int]):
        super().__init__()
        self.before, self.after = tuple(before), tuple(after)
        if math.prod(self.before) != math.prod(self.after):
            raise ValueError(f"cannot reshape {self.before} to {self.after}: different sizes")

    def extra_repr(self) -> str:
        """The two shapes, for the module's repr."""
        return f"{self.before} -> {self.after}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each example reshaped from `before` to `after`.

        Args:
            x: (N, *before).

        Returns:
            (y, logdet): y (N, *after), logdet zeros (N,).
        """
        return x.reshape(len(x), *self.after), _no_logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each example reshaped from `after` back to `before`.

        Args:
            y: (N, *after).

        Returns:
            (x, logdet): x (N, *before), logdet zeros (N,).
        """
        return y.reshape(len(y), *self.before), _no_logdet(y)


class InvConv1x1(InvertibleLayer):
    """Glow's invertible 1x1 convolution in LU form (Kingma & Dhariwal, 2018, sec. 3.2):
    W = P L (U + diag(sign(s) exp(log|s|))), P a fixed permutation, L unit lower triangular, U
    strictly upper triangular, initialised from a random rotation. logdet = H W sum(log|s|) (eq.
    10), no determinant computed. Works on (N, C, ...) inputs: (N, C) vectors too.

    Args:
        channels: C, the number of channels mixed.
        generator: draws the initial random rotation; default: torch's global generator.

    Raises:
        TypeError: `channels` is not an int.
        ValueError: `channels` is below 1.
    """

    permutation: torch.Tensor
    sign_s: torch.Tensor

    def __init__(self, channels: int, generator: Optional[torch.Generator] = None):
        super().__init__()
        check_int("channels", channels, 1)
        rotation = torch.linalg.qr(torch.randn(channels, channels, generator=generator))[0]
        p, lower, upper = torch.linalg.lu(rotation)
        s = upper.diagonal()
        self.register_buffer("permutation", p)
        self.register_buffer("sign_s", s.sign())
        self.lower = nn.Parameter(lower.tril(-1))
        self.upper = nn.Parameter(upper.triu(1))
        self.log_s = nn.Parameter(s.abs().log())

    def extra_repr(self) -> str:
        """The channel count, for the module's repr."""
        return f"channels={len(self.log_s)}"

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(len(self.log_s), device=self.log_s.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def weight(self) -> torch.Tensor:
        """W = P L U, assembled from the current factors.

        Returns:
            The (C, C) matrix the layer applies to the channels.
        """
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def _logdet(self, x: torch.Tensor) -> torch.Tensor:
        positions = math.prod(x.shape[2:])
        return (positions * self.log_s.sum()).to(logdet_dtype(x)).expand(x.shape[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = W x at every position.

        Args:
            x: (N, C, ...).

        Returns:
            (y, logdet): y shaped like x, logdet = (positions) * sum(log|s|) per example, (N,).
        """
        return _mix_channels(self.weight(), x), self._logdet(x)

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = W^-1 y at every position, by triangular solves.

        Args:
            y: (N, C, ...).

        Returns:
            (x, logdet): x shaped like y, logdet = -(positions) * sum(log|s|) per example, (N,).
        """
        lower, upper = self._factors()
        # W^-1 = U^-1 L^-1 P^T, by two triangular solves instead of a general inverse
        eye = torch.eye(len(self.log_s), device=y.device, dtype=lower.dtype)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return _mix_channels(upper_inv @ lower_inv @ self.permutation.T, y), -self._logdet(y)


def _mix_channels(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """weight (C, C) applied to the channel dimension (1) of x (N, C, ...)."""
    return torch.einsum("dc,nc...->nd...", weight.to(x.dtype), x)


class Logit(InvertibleLayer):
    """Data in [0, 1) -> logit(alpha + (1 - 2 alpha) x) (Dinh et al., 2017, sec. 4.1), the
    Jacobian counted: logdet = sum log(1 - 2 alpha) - log(s) - log(1 - s), s = alpha + (1 - 2
    alpha) x. alpha keeps the logit finite at 0 and 1.

    Args:
        alpha: the margin kept from 0 and 1, in (0, 0.5); default 0.05 (RealNVP's, sec. 4.1).

    Raises:
        ValueError: `alpha` is not in (0, 0.5).
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
        self.alpha = alpha

    def extra_repr(self) -> str:
        """alpha, for the module's repr."""
        return f"alpha={self.alpha}"

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y = logit(alpha + (1 - 2 alpha) x).

        Args:
            x: data in [0, 1), (N, ...).

        Returns:
            (y, logdet): y shaped like x, logdet summed over each example, (N,).
        """
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        logdet = (math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return y, logdet

    def inverse(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x = (sigmoid(y) - alpha) / (1 - 2 alpha).

        Args:
            y: logits, (N, ...).

        Returns:
            (x, logdet): x shaped like y, logdet summed over each example, (N,).
        """
        s = torch.sigmoid(y)
        x = (s - self.alpha) / (1 - 2 * self.alpha)
        # log s + log(1 - s) = logsigmoid(y) + logsigmoid(-y)
        log_s_1ms = nn.functional.logsigmoid(y) + nn.functional.logsigmoid(-y)
        logdet = (log_s_1ms - math.log(1 - 2 * self.alpha)).flatten(1).sum(1)
        return x, logdet
