"""The op catalog: one OpSpec per op. Tests, `gdm-engine validate`, `gdm-engine bench` and the
suites in bench/ all iterate CATALOG, so a new op is validated and benchmarked once listed here."""

from .actnorm import ACTNORM, actnorm_case
from .affine_coupling import (
    AFFINE_COUPLING,
    affine_coupling_case,
    channel_mask,
    checkerboard_mask,
)
from .causal_conv1d import CAUSAL_CONV1D, causal_conv1d_case
from .diffusion import (
    DDIM_STEP,
    DDPM_STEP,
    DIFFUSION_LOSS,
    DPMPP_2M_STEP,
    EULER_STEP,
    HEUN_STEP,
    LANGEVIN_STEP,
    Q_SAMPLE,
)
from .gaussian_reparam_kl import GAUSSIAN_REPARAM_KL
from .masked_conv2d import MASKED_CONV2D, masked_conv2d_case
from .rq_spline import RQ_SPLINE, rq_spline_case
from .spec import DEFAULT_TOLERANCE, SIZES, Case, OpSpec

CATALOG = {
    spec.name: spec
    for spec in [
        ACTNORM,
        AFFINE_COUPLING,
        CAUSAL_CONV1D,
        DDIM_STEP,
        DDPM_STEP,
        DIFFUSION_LOSS,
        DPMPP_2M_STEP,
        EULER_STEP,
        GAUSSIAN_REPARAM_KL,
        HEUN_STEP,
        LANGEVIN_STEP,
        MASKED_CONV2D,
        Q_SAMPLE,
        RQ_SPLINE,
    ]
}


def get(name):
    if name not in CATALOG:
        raise ValueError(f"unknown op {name!r}; the catalog has {', '.join(CATALOG)}")
    return CATALOG[name]


__all__ = [
    "ACTNORM",
    "AFFINE_COUPLING",
    "CATALOG",
    "CAUSAL_CONV1D",
    "DDIM_STEP",
    "DDPM_STEP",
    "DEFAULT_TOLERANCE",
    "DIFFUSION_LOSS",
    "DPMPP_2M_STEP",
    "EULER_STEP",
    "GAUSSIAN_REPARAM_KL",
    "HEUN_STEP",
    "LANGEVIN_STEP",
    "MASKED_CONV2D",
    "Q_SAMPLE",
    "RQ_SPLINE",
    "SIZES",
    "Case",
    "OpSpec",
    "actnorm_case",
    "affine_coupling_case",
    "causal_conv1d_case",
    "channel_mask",
    "checkerboard_mask",
    "get",
    "masked_conv2d_case",
    "rq_spline_case",
]
