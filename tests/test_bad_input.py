"""Bad input to every catalog op raises a ValueError or TypeError that names the argument, before
anything runs, on both backends (the Triton one with its launches recorded: a check it lacks
shows as no error at all): None for a required tensor, a 0-d tensor or an extra dimension, an
integer or a lone float64 tensor, a mismatched shape, a tensor on another device, out-of-range
schedule values (as floats and as per-example tensors) and parameters. And input that is valid
however odd is accepted: an empty batch, ᾱ just below 1, a tiny σ.

Each op starts from the catalog's tiny fp32 case with the most tensors (bias, residual, noise,
guidance's unconditional outputs), and changes one thing."""

import contextlib
import inspect
import math
import re

import pytest
import torch
from test_differential import CPU, cut_batch

from gdm_engine import catalog, ops, testing, use_backend

SPECS = list(catalog.CATALOG.values())


def _base_case(spec):
    cases = spec.make_inputs("tiny", torch.float32, CPU, torch.Generator().manual_seed(0))
    return max(cases, key=lambda case: len(case.tensors()))


def _names(spec):
    """The names of the op's positional arguments, and those it requires (no default)."""
    parameters = inspect.signature(spec.op).parameters.values()
    positional = [p for p in parameters if p.kind == p.POSITIONAL_OR_KEYWORD]
    return [p.name for p in positional], {p.name for p in positional if p.default is p.empty}


def _with(spec, case, **changes):
    """The case with some arguments, positional or keyword, replaced by name."""
    names, _ = _names(spec)
    args, kwargs = list(case.args), dict(case.kwargs)
    for name, value in changes.items():
        if name in names[:len(args)]:
            args[names.index(name)] = value
        else:
            kwargs[name] = value
    return catalog.Case(case.label, tuple(args), kwargs)


def _grown(t):
    """One more entry in the channel dimension (dimension 1, or 0 of a vector)."""
    dim = 1 if t.ndim >= 2 else 0
    return torch.cat([t, t.narrow(dim, 0, 1)], dim)


# a tensor argument made bad: (label, change), each applied to every tensor the case passes
TENSOR_CHANGES = [("0-d", lambda t: t.reshape(-1)[0].clone()),
                  ("int64", lambda t: t.long()),
                  ("float64", lambda t: t.double()),
                  ("grown", _grown),
                  ("on meta", lambda t: t.to("meta"))]


def _tensor_mutations(spec):
    names, required = _names(spec)
    case = _base_case(spec)
    for i, (name, value) in enumerate(zip(names, case.args)):
        if not isinstance(value, torch.Tensor):
            continue
        if name in required:
            yield f"{name} None", name, _with(spec, case, **{name: None})
        changes = TENSOR_CHANGES + ([("extra dim", lambda t: t.unsqueeze(-1))] if i else [])
        for label, change in changes:
            yield f"{name} {label}", name, _with(spec, case, **{name: change(value)})


# out-of-range values and parameters per op: (argument, bad values); schedule values are tried as
# floats and as per-example tensors
NAN, INF = math.nan, math.inf
_DENOISING = [("alpha_bar_t", [0.0, 1.0, 1.5, -0.5, NAN]),
              ("alpha_bar_prev", [0.0, 1e-3, 1.5, NAN]),  # 1e-3: below alpha_bar_t
              ("prediction", ["epsilon", None]), ("clip", [0.0, -1.0, INF, "1"]),
              ("threshold", [0.0, 1.0, 1.5]), ("guidance_scale", [NAN, INF])]
_SIGMA_FORM = [("sigma", [0.0, -1.0, INF, NAN]),
               ("sigma_next", [-1.0, 100.0, NAN]),  # 100: above sigma
               ("prediction", ["epsilon"]), ("guidance_scale", [NAN])]
_CHURN = [("churn", [-0.1, NAN]), ("s_noise", [-1.0, INF])]
_CONVOLUTION = [("dilation", [0, 1.5, "2"]), ("activation", ["gelu"])]
BAD_VALUES = {
    "ddpm_step": _DENOISING + [("variance", ["learned"])],
    "ddim_step": _DENOISING + [("eta", [-0.1, NAN, INF])],
    "euler_step": _SIGMA_FORM + _CHURN,
    "heun_step": _SIGMA_FORM + _CHURN + [("sigma_next", [0.0])],
    "dpmpp_2m_step": _SIGMA_FORM + [("sigma_prev", [0.0, 1e-3])],  # 1e-3: below sigma
    "langevin_step": [("step_size", [-0.1, INF, NAN])],
    "q_sample": [("alpha_bar", [0.0, 1.5, -1.0, NAN])],
    "diffusion_loss": [("alpha_bar", [0.0, 1.0, NAN]), ("prediction", ["epsilon"]),
                       ("min_snr_gamma", [0.0, -1.0, NAN])],
    "causal_conv1d": _CONVOLUTION + [("groups", [0, 7])],
    "masked_conv2d": _CONVOLUTION + [("mask", ["C", torch.ones(2, 2, dtype=torch.bool),
                                               torch.ones(3, 3)]),
                                     ("color_groups", [0, 5])],
    "rq_spline": [("tail_bound", [0.0, -1.0, INF, NAN]), ("reverse", ["yes"]),
                  ("min_bin_width", [-0.1, 0.6, NAN]), ("min_bin_height", [0.6]),
                  ("min_derivative", [-1.0, INF]), ("slope", [0.1]),  # slope: zuko's only
                  ("parameterisation", ["nsf"]), ("box", [(0.0, 1.0, 0.0, 1.0)])],
    "affine_coupling": [("scale_map", ["tanh"]), ("clamp", [0.0, -1.0, INF]),
                        ("reverse", [1]), ("mask", [torch.ones(7, 1, 1, 1)])],
    "actnorm": [("reverse", ["yes"])],
    "gaussian_reparam_kl": [("generator", ["seed"])],
}
SCHEDULE_VALUES = {"alpha_bar_t", "alpha_bar_prev", "sigma", "sigma_next", "sigma_prev",
                   "step_size", "alpha_bar"}


def _value_mutations(spec):
    case = _base_case(spec)
    n = case.args[0].shape[0]
    for name, values in BAD_VALUES[spec.name]:
        for value in values:
            yield f"{name}={value!r}", name, _with(spec, case, **{name: value})
            if name in SCHEDULE_VALUES:
                per_example = torch.full((n,), value)
                yield f"{name}=[{value!r}] * N", name, _with(spec, case, **{name: per_example})


def _mutations():
    return [pytest.param(spec, name, case, id=f"{spec.name}: {label}")
            for spec in SPECS for mutations in (_tensor_mutations, _value_mutations)
            for label, name, case in mutations(spec)]


@contextlib.contextmanager
def _backend(name):
    """The reference backend, or the Triton one with its launches recorded (nothing runs)."""
    from gdm_engine.kernels import recording_launches

    with use_backend(name), (recording_launches() if name == "triton"
                             else contextlib.nullcontext()):
        yield


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("spec, name, case", _mutations())
def test_bad_input_raises_naming_the_argument(spec, name, case, backend):
    with _backend(backend), pytest.raises((ValueError, TypeError),
                                          match=rf"(?<![\w.]){re.escape(name)}(?!\w)"):
        spec.op(*case.args, **case.kwargs)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_an_empty_batch_gives_empty_outputs(spec, backend):
    case = cut_batch(spec, _base_case(spec), 0)
    with _backend(backend):
        outs = testing.as_tuple(spec.op(*case.args, **case.kwargs))
    assert outs and all(o.shape[0] == 0 for o in outs)


# valid schedule values at the edge of their range, which a check rounding Python floats to fp32
# would refuse: (op, arguments after x and the model's output)
EDGE_VALUES = [(ops.ddpm_step, (1 - 1e-8, 1.0)), (ops.ddim_step, (1 - 1e-8, 1.0)),
               (ops.ddpm_step, (1e-300, 0.5)), (ops.euler_step, (1e-300, 0.0)),
               (ops.euler_step, (1e300, 1.0)), (ops.dpmpp_2m_step, (1e-300, 0.0))]


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("op, values", EDGE_VALUES,
                         ids=[f"{op.__name__}{values}" for op, values in EDGE_VALUES])
def test_schedule_values_at_the_edge_of_their_range_are_accepted(op, values, backend):
    x, m = torch.randn(2, 3), torch.randn(2, 3)
    with _backend(backend):
        out = testing.as_tuple(op(x, m, *values))
    assert out[0].shape == x.shape
