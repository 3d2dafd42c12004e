"""gaussian_reparam_kl: a VAE posterior's reparameterised sample and KL to the prior, fused.

Registered as `torch.library.custom_op`s (forward and backward), like every op: each chooses the
Triton kernel or the PyTorch reference when it runs (gdm_engine.backend).
"""

from typing import Optional

import torch

from gdm_engine import backend, reference
from gdm_engine._random import noise_seed
from gdm_engine._validation import check_noise_source, check_shape_of, check_tensor
from gdm_engine.reference.gaussian_reparam_kl import standard_normal_like

from ._autocast import autocast_inputs
from .outputs import ReparamOutput


def _kernels():
    from gdm_engine.kernels import gaussian_reparam_kl as kernels

    return kernels


def _rows(t):
    """(N, D) view of an (N, ...) tensor; None and (N, D) tensors stay as they are (a reshape
    costs a dispatch on every call)."""
    if t is None or t.ndim == 2:
        return t
    return t.reshape(t.shape[0], t.shape[1:].numel())


@torch.library.custom_op("gdm_engine::gaussian_reparam_kl", mutates_args=())
def library_op(
    mean: torch.Tensor,
    log_var: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    *,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The registered op, unchecked: call `gaussian_reparam_kl`, which validates first."""
    if backend.resolve(mean) == "triton":
        z, kl = _kernels().gaussian_reparam_kl_forward(
            _rows(mean), _rows(log_var), _rows(noise), seed
        )
        return z.view(mean.shape), kl
    z, kl = reference.gaussian_reparam_kl(mean, log_var, noise, seed)
    return z.contiguous(), kl


@library_op.register_fake
def _(mean, log_var, noise=None, *, seed=0):
    return mean.new_empty(mean.shape), mean.new_empty(mean.shape[:1])


@torch.library.custom_op("gdm_engine::gaussian_reparam_kl_backward", mutates_args=())
def _backward(
    grad_z: torch.Tensor,
    grad_kl: torch.Tensor,
    mean: torch.Tensor,
    log_var: torch.Tensor,
    noise: Optional[torch.Tensor],
    seed: int,
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dmean, dlog_var, dnoise) by the implementation that ran the forward pass; dnoise is empty
    when the noise was drawn from `seed`."""
    if implementation == "triton":
        grads = _kernels().gaussian_reparam_kl_backward(
            _rows(grad_z), grad_kl, _rows(mean), _rows(log_var), _rows(noise), seed
        )
        grads = [g.view(mean.shape) if g is not None else None for g in grads]
    else:
        grads = _reference_backward(grad_z, grad_kl, mean, log_var, noise, seed)
    d_mean, d_log_var, d_noise = grads
    return d_mean, d_log_var, d_noise if d_noise is not None else mean.new_empty(0)


def _reference_backward(grad_z, grad_kl, mean, log_var, noise, seed):
    # torch.func.vjp rather than torch.autograd: the body of a custom op runs below autograd.
    if noise is None:
        noise = standard_normal_like(mean, seed)
        _, vjp = torch.func.vjp(
            lambda m, v: reference.gaussian_reparam_kl(m, v, noise), mean, log_var
        )
        return (*vjp((grad_z, grad_kl)), None)
    _, vjp = torch.func.vjp(reference.gaussian_reparam_kl, mean, log_var, noise)
    return vjp((grad_z, grad_kl))


@_backward.register_fake
def _(grad_z, grad_kl, mean, log_var, noise, seed, implementation):
    d_noise = torch.empty_like(mean) if noise is not None else mean.new_empty(0)
    return torch.empty_like(mean), torch.empty_like(mean), d_noise


def _setup_context(ctx, inputs, keyword_only_inputs, output):
    mean, log_var, noise = inputs
    ctx.save_for_backward(mean, log_var, noise)
    ctx.config = (keyword_only_inputs["seed"], backend.resolve(mean))


def _autograd_backward(ctx, grad_z, grad_kl):
    mean, log_var, noise = ctx.saved_tensors
    d_mean, d_log_var, d_noise = _backward(grad_z, grad_kl, mean, log_var, noise, *ctx.config)
    return d_mean, d_log_var, d_noise if noise is not None else None


library_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def check_inputs(
    mean: torch.Tensor,
    log_var: torch.Tensor,
    noise: Optional[torch.Tensor],
    generator: Optional[torch.Generator],
) -> None:
    """Raise ValueError/TypeError, naming the argument, for anything the op cannot compute."""
    check_tensor("mean", mean)
    if mean.ndim < 2:
        raise ValueError(
            f"mean must have shape (N, D, ...): a batch of examples, got shape {tuple(mean.shape)}"
        )
    named = [("log_var", log_var)] + ([("noise", noise)] if noise is not None else [])
    for name, value in named:
        check_shape_of(name, value, "mean", mean)
    check_noise_source(noise, generator)


def gaussian_reparam_kl(
    mean: torch.Tensor,
    log_var: torch.Tensor,
    noise: Optional[torch.Tensor] = None,
    *,
    generator: Optional[torch.Generator] = None,
) -> ReparamOutput:
    """Reparameterised sample of N(mean, exp(log_var)) and its KL to N(0, I), per example
    (the VAE's reparameterisation trick and Gaussian KL, Kingma & Welling 2014, sec. 2.4 and
    appendix B).

    z = mean + exp(log_var / 2) * eps and KL(N(mean, exp(log_var)) || N(0, I)) =
    ½ Σ (mean² + exp(log_var) − 1 − log_var), summed over every dimension but the first.
    Reproducible per backend, not across them, when the noise is drawn. Gradients flow to mean,
    log_var and a given noise. Under autocast it computes in float32, like autocast's losses.

    Args:
        mean: (N, D, ...) posterior mean.
        log_var: the posterior log-variance, shaped like mean, its dtype and device.
        noise: eps, shaped like mean (then kernel and reference agree); None: standard normal
            noise drawn by the running implementation from a seed taken from `generator`.
        generator: the source of that seed; None: torch's global generator. Not with `noise`.

    Returns:
        ReparamOutput(z, kl): z shaped like mean, kl (N,).

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype than mean, or
            generator not a torch.Generator.
        ValueError: mean with fewer than 2 dims, log_var or noise not shaped like mean or on
            another device, or both noise and generator given.
    """
    mean, log_var, noise = autocast_inputs("gaussian_reparam_kl", mean, log_var, noise)
    check_inputs(mean, log_var, noise, generator)
    return ReparamOutput(*library_op(mean, log_var, noise, seed=noise_seed(noise, generator)))
