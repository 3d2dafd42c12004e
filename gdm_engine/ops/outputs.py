"""The named results of the ops that return two tensors: tuples, so `y, logdet = ...` keeps
working, with fields that say what each is."""

from typing import NamedTuple

import torch


class FlowOutput(NamedTuple):
    """A flow layer's output and the log-determinant of its Jacobian per example, (N,)
    (actnorm, affine_coupling)."""

    y: torch.Tensor
    logdet: torch.Tensor


class SplineOutput(NamedTuple):
    """rq_spline's output and log|dy/dx| per element (its Jacobian is diagonal), shaped like
    the input."""

    y: torch.Tensor
    logabsdet: torch.Tensor


class ReparamOutput(NamedTuple):
    """gaussian_reparam_kl's reparameterised sample and its KL to N(0, I) per example, (N,)."""

    z: torch.Tensor
    kl: torch.Tensor


class DPMSolverOutput(NamedTuple):
    """dpmpp_2m_step's next x and this step's denoised estimate D(x; σ), the next step's
    previous_denoised."""

    x: torch.Tensor
    denoised: torch.Tensor
