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
from collections.abc import Callable

import torch
from torch import nn

from gdm_engine._validation import check_int


@dataclasses.dataclass
class Replay:
    """A layer's input rebuilt from its output, and the layer's pass recorded by autograd:
    `output` and `logdet` as functions of the `leaves`, tensors that stand for the input
    (`input_grad` turns their gradients into the input's)."""

    input: torch.Tensor
    leaves: list
    input_grad: Callable
    output: torch.Tensor
    logdet: torch.Tensor


def _nothing():
    pass


class InvertibleLayer(nn.Module):
    """The protocol: forward(x) -> (y, logdet), inverse(y) -> (x, logdet), and replay(y) for
    memory-saving backward."""

    def forward(self, x):
        raise NotImplementedError

    def inverse(self, y):
        raise NotImplementedError

    def replay(self, y, restore_rng=_nothing):
        """The input x that gave y, and self(x) recorded by autograd (a Replay). This one inverts,
        then runs forward again; a layer that can share work between the two (a coupling's
        network, whose input passes through unchanged) overrides it. `restore_rng()` puts back
        the random state the forward pass saw, before each part that draws random numbers."""
        with torch.no_grad():
            x, _ = self.inverse(y)
        restore_rng()
        x = x.detach().requires_grad_()
        with torch.enable_grad():
            out, logdet = self(x)
        return Replay(x.detach(), [x], lambda grads: grads[0], out, logdet)

    def backward_from_output(self, y, grad_y, grad_logdet, restore_rng=_nothing):
        """Memory-saving backward through this layer from its output y: (x, the gradient of x,
        {parameter: gradient}) for the incoming gradients of y and of the logdet."""
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


def logdet_dtype(x):
    """Log-dets are summed in at least fp32 (fp16 inputs), in float64 for float64 inputs."""
    return torch.promote_types(x.dtype, torch.float32)


def _no_logdet(x):
    return x.new_zeros(x.shape[0], dtype=logdet_dtype(x))


class InvertibleSequential(InvertibleLayer):
    """Layers applied in order; logdets add up. inverse runs them backwards.

    memory_saving=True keeps no intermediate activation for backward (see the module's
    docstring): gradients of the input, of every parameter and of the summed logdet equal plain
    autograd's up to the round-off of the inverse. Layers that draw random numbers (dropout in a
    conditioner) see the same random state when they are run again, as in torch.utils.checkpoint;
    not so inside a nested sequence (multi-scale Split), where dropout raises a ValueError.
    """

    def __init__(self, *layers, memory_saving=False):
        super().__init__()
        if not all(isinstance(layer, InvertibleLayer) for layer in layers):
            raise TypeError("InvertibleSequential takes InvertibleLayer instances")
        if memory_saving:
            _check_rebuildable(layers)
        self.layers = nn.ModuleList(layers)
        self.memory_saving = memory_saving

    def extra_repr(self):
        return f"memory_saving={self.memory_saving}"

    def forward(self, x):
        params = [p for p in self.parameters() if p.requires_grad]
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.memory_saving and needs_grad:
            return _RebuiltFromOutputs.apply(self, x, *params)
        return _run(self.layers, x)

    def backward_from_output(self, y, grad_y, grad_logdet, restore_rng=None, *, rng_states=None):
        """Memory-saving backward through every layer, from the last (see
        InvertibleLayer.backward_from_output); `rng_states`, one per layer, are the random states
        their forward passes saw (a nested sequence has none: it holds no dropout)."""
        rng_states = rng_states or [None] * len(self.layers)
        device = y.device
        param_grads = {}
        for layer, state in zip(reversed(self.layers), reversed(rng_states)):

            def restore_rng(state=state):
                if state is not None:
                    _set_rng_state(state, device)

            restore_rng()
            y, grad_y, grads = layer.backward_from_output(y, grad_y, grad_logdet, restore_rng)
            for p, g in grads.items():
                param_grads[p] = param_grads[p] + g if p in param_grads else g
        return y, grad_y, param_grads

    def inverse(self, y):
        logdet = _no_logdet(y)
        for layer in reversed(self.layers):
            y, step = layer.inverse(y)
            logdet = logdet + step
        return y, logdet


def _check_rebuildable(layers):
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


def _run(layers, x, rng_states=None):
    logdet = _no_logdet(x)
    for layer in layers:
        if rng_states is not None:
            rng_states.append(_rng_state(x.device))
        x, step = layer(x)
        logdet = logdet + step
    return x, logdet


def _rng_state(device):
    return torch.get_rng_state(), (
        torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    )


def _set_rng_state(state, device):
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

    def forward(self, x):
        n, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(f"Squeeze needs an even height and width, got {h}x{w}")
        y = x.reshape(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
        return y.reshape(n, 4 * c, h // 2, w // 2), _no_logdet(x)

    def inverse(self, y):
        n, c, h, w = y.shape
        x = y.reshape(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(n, c // 4, 2 * h, 2 * w), _no_logdet(y)


class Unsqueeze(Squeeze):
    """The inverse of Squeeze: (4C, H, W) -> (C, 2H, 2W). A multi-scale flow ends each scale with
    it, so that every scale hands back a tensor of the shape it was given."""

    forward, inverse = Squeeze.inverse, Squeeze.forward


class Reshape(InvertibleLayer):
    """Examples of shape `before` viewed as shape `after` (the same number of elements), e.g.
    images flattened for a flow over vectors. logdet 0."""

    def __init__(self, before, after):
        super().__init__()
        self.before, self.after = tuple(before), tuple(after)
        if math.prod(self.before) != math.prod(self.after):
            raise ValueError(f"cannot reshape {self.before} to {self.after}: different sizes")

    def extra_repr(self):
        return f"{self.before} -> {self.after}"

    def forward(self, x):
        return x.reshape(len(x), *self.after), _no_logdet(x)

    def inverse(self, y):
        return y.reshape(len(y), *self.before), _no_logdet(y)


class InvConv1x1(InvertibleLayer):
    """Glow's invertible 1x1 convolution in LU form (Kingma & Dhariwal, 2018, sec. 3.2):
    W = P L (U + diag(sign(s) exp(log|s|))), P a fixed permutation, L unit lower triangular, U
    strictly upper triangular, initialised from a random rotation. logdet = H W sum(log|s|) (eq.
    10), no determinant computed. Works on (N, C, ...) inputs: (N, C) vectors too."""

    def __init__(self, channels, generator=None):
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

    def extra_repr(self):
        return f"channels={len(self.log_s)}"

    def _factors(self):
        eye = torch.eye(len(self.log_s), device=self.log_s.device)
        lower = self.lower.tril(-1) + eye
        upper = self.upper.triu(1) + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def weight(self):
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def _logdet(self, x):
        positions = math.prod(x.shape[2:])
        return (positions * self.log_s.sum()).to(logdet_dtype(x)).expand(x.shape[0])

    def forward(self, x):
        return _mix_channels(self.weight(), x), self._logdet(x)

    def inverse(self, y):
        lower, upper = self._factors()
        # W^-1 = U^-1 L^-1 P^T, by two triangular solves instead of a general inverse
        eye = torch.eye(len(self.log_s), device=y.device, dtype=lower.dtype)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return _mix_channels(upper_inv @ lower_inv @ self.permutation.T, y), -self._logdet(y)


def _mix_channels(weight, x):
    """weight (C, C) applied to the channel dimension (1) of x (N, C, ...)."""
    return torch.einsum("dc,nc...->nd...", weight.to(x.dtype), x)


class Logit(InvertibleLayer):
    """Data in [0, 1) -> logit(alpha + (1 - 2 alpha) x) (Dinh et al., 2017, sec. 4.1), the
    Jacobian counted: logdet = sum log(1 - 2 alpha) - log(s) - log(1 - s), s = alpha + (1 - 2
    alpha) x. alpha keeps the logit finite at 0 and 1."""

    def __init__(self, alpha=0.05):
        super().__init__()
        if not 0 < alpha < 0.5:
            raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
        self.alpha = alpha

    def extra_repr(self):
        return f"alpha={self.alpha}"

    def forward(self, x):
        s = self.alpha + (1 - 2 * self.alpha) * x
        y = torch.log(s) - torch.log1p(-s)
        logdet = (math.log(1 - 2 * self.alpha) - torch.log(s) - torch.log1p(-s)).flatten(1).sum(1)
        return y, logdet

    def inverse(self, y):
        s = torch.sigmoid(y)
        x = (s - self.alpha) / (1 - 2 * self.alpha)
        # log s + log(1 - s) = logsigmoid(y) + logsigmoid(-y)
        log_s_1ms = nn.functional.logsigmoid(y) + nn.functional.logsigmoid(-y)
        logdet = (log_s_1ms - math.log(1 - 2 * self.alpha)).flatten(1).sum(1)
        return x, logdet
