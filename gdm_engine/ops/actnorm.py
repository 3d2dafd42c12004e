"""actnorm: Glow's activation normalisation with its log-det, as a registered torch op.

A `torch.library.custom_op` with a fake implementation and a registered backward op; each
chooses the Triton kernel or the PyTorch reference when it runs (gdm_engine.backend).
"""

import math

import torch

from gdm_engine import backend, reference
from gdm_engine._validation import check_like, check_tensor

from ._autocast import autocast_inputs
from ._flow import logdet_dtype, reference_vjp
from .outputs import FlowOutput


def _kernels():
    from gdm_engine.kernels import actnorm as kernels

    return kernels


def _channels_view(t):
    """(N, C, S) view (or copy) of an (N, C, ...) tensor: S spatial positions (1 for (N, C))."""
    return t.reshape(t.shape[0], t.shape[1], math.prod(t.shape[2:]))


@torch.library.custom_op("gdm_engine::actnorm", mutates_args=())
def library_op(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, *, reverse: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered op, unchecked: call `actnorm`, which validates first."""
    if backend.resolve(x) == "triton":
        y, logdet = _kernels().actnorm_forward(_channels_view(x), loc, log_scale, reverse)
        return y.view(x.shape), logdet
    y, logdet = reference.actnorm(x, loc, log_scale, reverse=reverse)
    return y.contiguous(), logdet.contiguous()


@library_op.register_fake
def _(x, loc, log_scale, *, reverse=False):
    return x.new_empty(x.shape), x.new_empty(x.shape[:1], dtype=logdet_dtype(x))


@torch.library.custom_op("gdm_engine::actnorm_backward", mutates_args=())
def _backward(
    grad_y: torch.Tensor,
    grad_logdet: torch.Tensor,
    x: torch.Tensor,
    loc: torch.Tensor,
    log_scale: torch.Tensor,
    reverse: bool,
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dloc, dlog_scale) by the implementation that ran the forward pass."""
    if implementation == "triton":
        dx, dloc, dlog_scale = _kernels().actnorm_backward(
            _channels_view(grad_y), grad_logdet, _channels_view(x), loc, log_scale, reverse
        )
        return dx.view(x.shape), dloc, dlog_scale

    def forward(x, loc, log_scale):
        return reference.actnorm(x, loc, log_scale, reverse=reverse)

    return reference_vjp(forward, (x, loc, log_scale), (grad_y, grad_logdet))


@_backward.register_fake
def _(grad_y, grad_logdet, x, loc, log_scale, reverse, implementation):
    return torch.empty_like(x), torch.empty_like(loc), torch.empty_like(log_scale)


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    x, loc, log_scale = inputs
    ctx.save_for_backward(x, loc, log_scale)
    ctx.config = (keyword_only_inputs["reverse"], backend.resolve(x))


def _autograd_backward(ctx, grad_y, grad_logdet):
    x, loc, log_scale = ctx.saved_tensors
    return _backward(grad_y, grad_logdet, x, loc, log_scale, *ctx.config)


library_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def check_inputs(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, reverse: bool
) -> None:
    """Raise ValueError/TypeError, naming the argument, for anything the op cannot compute."""
    check_tensor("x", x)
    if x.ndim < 2:
        raise ValueError(
            f"x must have shape (N, C, ...): a batch of examples with channels, "
            f"got shape {tuple(x.shape)}"
        )
    for name, value in (("loc", loc), ("log_scale", log_scale)):
        check_tensor(name, value)
        check_like(name, value, "x", x)
        if value.shape != (x.shape[1],):
            raise ValueError(
                f"{name} must have shape (C,) = ({x.shape[1]},) for x of shape "
                f"{tuple(x.shape)}, got {tuple(value.shape)}"
            )
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")


def actnorm(
    x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor, *, reverse: bool = False
) -> FlowOutput:
    """ActNorm (Glow, Kingma & Dhariwal 2018, sec. 3.1): a per-channel affine map.

    Forward y = (x + loc) · exp(log_scale); reverse=True y = x · exp(−log_scale) − loc (its
    inverse). Gradients flow to x, loc and log_scale.

    Args:
        x: (N, C, ...) with any number of spatial dims (none: (N, C)).
        loc: (C,) per-channel shift, x's dtype and device.
        log_scale: (C,) per-channel log-scale, x's dtype and device.
        reverse: apply the inverse map (x is then the flow's output).

    Returns:
        FlowOutput(y, logdet): y shaped like x; logdet (N,) = (spatial positions) ·
        Σ_c log_scale, the same for every example, negated in reverse, in at least fp32.

    Raises:
        TypeError: x, loc or log_scale not a floating tensor, loc or log_scale not of x's
            dtype, or reverse not a bool.
        ValueError: x with fewer than 2 dims, or loc or log_scale not of shape (C,) or not on
            x's device.
    """
    x, loc, log_scale = autocast_inputs("actnorm", x, loc, log_scale)
    check_inputs(x, loc, log_scale, reverse)
    return FlowOutput(*library_op(x, loc, log_scale, reverse=reverse))
