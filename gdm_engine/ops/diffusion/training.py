"""The training pair: q_sample and the loss (differentiable). Each is a
`torch.library.custom_op` with a fake implementation and its autograd (the backward one more
registered op, one more kernel), its `<op>_library_inputs` and the public function, which
validates its inputs on the host and calls the registered op."""

from typing import Any, Optional, Union

import torch

from gdm_engine import backend
from gdm_engine._validation import check_choice, check_shape_of
from gdm_engine.reference import diffusion as ref
from gdm_engine.reference.diffusion import PREDICTIONS

from .._autocast import autocast_inputs
from .checks import _check_float, _check_pair, _check_schedule, _optional_float
from .coefficients import _merged, schedule_arguments
from .launch import _kernels, _reference_output, _rows, _shaped_like_input, _step


@torch.library.custom_op("gdm_engine::q_sample", mutates_args=())
def q_sample_library_op(
    x0: torch.Tensor,
    noise: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
) -> torch.Tensor:
    """The registered q_sample: ᾱ as `schedule_arguments`."""
    (alpha_bar,) = _merged(schedule, values)
    if backend.resolve(x0) != "triton":
        return _reference_output(ref.q_sample(x0, alpha_bar, noise), x0)
    return _step("q_sample", x0, noise, (alpha_bar,))


q_sample_library_op.register_fake(_shaped_like_input)


@torch.library.custom_op("gdm_engine::q_sample_backward", mutates_args=())
def _q_sample_backward(
    grad: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    implementation: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(√ᾱ·grad, √(1 − ᾱ)·grad): x_t is linear in x0 and ε. One kernel writes both, with the
    coefficients in float64 (a reduced-precision gradient would round ᾱ = 0.999 away)."""
    (alpha_bar,) = _merged(schedule, values)
    if implementation == "triton":
        return _step("q_sample_grad", grad, grad, (alpha_bar,), second_output=True)
    ones = torch.ones_like(grad)
    return (
        _reference_output(ref.q_sample(grad, alpha_bar, 0 * ones), grad),
        _reference_output(ref.q_sample(0 * ones, alpha_bar, grad), grad),
    )


@_q_sample_backward.register_fake
def _(grad, schedule, values, implementation):
    return (
        torch.empty_like(grad, memory_format=torch.contiguous_format),
        torch.empty_like(grad, memory_format=torch.contiguous_format),
    )


def _no_grads(schedule):
    """The schedule's (absent) gradients, in the structure autograd sees the list in: a list
    where it holds a tensor, one None where it holds none."""
    return [None] * len(schedule) if any(t is not None for t in schedule) else None


def _q_sample_setup(ctx, inputs, output):
    ctx.schedule, ctx.values = inputs[2], inputs[3]
    ctx.save_for_backward(*(t for t in inputs[2] if t is not None))
    ctx.implementation = backend.resolve(inputs[0])


def _q_sample_autograd(ctx, grad):
    saved = iter(ctx.saved_tensors)
    schedule = [next(saved) if t is not None else None for t in ctx.schedule]
    d_x0, d_noise = _q_sample_backward(grad, schedule, ctx.values, ctx.implementation)
    return d_x0, d_noise, _no_grads(ctx.schedule), None


q_sample_library_op.register_autograd(_q_sample_autograd, setup_context=_q_sample_setup)


def _loss_dtype(model_output):
    return torch.promote_types(model_output.dtype, torch.float32)


@torch.library.custom_op("gdm_engine::diffusion_loss", mutates_args=())
def diffusion_loss_library_op(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    *,
    prediction: str = "eps",
    min_snr_gamma: Optional[float] = None,
) -> torch.Tensor:
    """The registered diffusion_loss: ᾱ as `schedule_arguments`. Returns (N,) losses."""
    (alpha_bar,) = _merged(schedule, values)
    if backend.resolve(model_output) != "triton":
        return ref.diffusion_loss(
            model_output, x0, noise, alpha_bar, prediction=prediction, min_snr_gamma=min_snr_gamma
        )
    return _kernels().diffusion_loss(
        _rows(model_output),
        _rows(x0),
        _rows(noise),
        alpha_bar,
        _loss_dtype(model_output),
        prediction=prediction,
        min_snr_gamma=min_snr_gamma,
    )


@diffusion_loss_library_op.register_fake
def _(model_output, x0, noise, schedule, values, **kwargs):
    return model_output.new_empty(model_output.shape[:1], dtype=_loss_dtype(model_output))


@torch.library.custom_op("gdm_engine::diffusion_loss_backward", mutates_args=())
def _loss_backward(
    grad: torch.Tensor,
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    schedule: list[Optional[torch.Tensor]],
    values: list[float],
    prediction: str,
    min_snr_gamma: Optional[float],
    implementation: str,
    want_x0: bool,
    want_noise: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dmodel_output, dL/dx0, dL/dnoise) = (c_n·(m − target), −tx·…, −tz·…) with
    c_n = 2·grad_n·weight_n / D; unwanted gradients are empty."""
    (alpha_bar,) = _merged(schedule, values)
    if implementation == "triton":
        grads = _kernels().diffusion_loss_backward(
            grad,
            _rows(model_output),
            _rows(x0),
            _rows(noise),
            alpha_bar,
            prediction=prediction,
            min_snr_gamma=min_snr_gamma,
            want_x0=want_x0,
            want_eps=want_noise,
        )
        grads = [g.view(model_output.shape) if g is not None else None for g in grads]
    else:
        grads = _reference_loss_backward(
            grad, model_output, x0, noise, alpha_bar, prediction, min_snr_gamma
        )
    d_output, d_x0, d_noise = (
        g if g is not None and wanted else model_output.new_empty(0)
        for g, wanted in zip(grads, (True, want_x0, want_noise))
    )
    return d_output, d_x0, d_noise


def _reference_loss_backward(grad, model_output, x0, noise, alpha_bar, prediction, min_snr_gamma):
    # torch.func.vjp rather than torch.autograd: the body of a custom op runs below autograd
    def loss(m, x0, noise):
        return ref.diffusion_loss(
            m, x0, noise, alpha_bar, prediction=prediction, min_snr_gamma=min_snr_gamma
        )

    _, vjp = torch.func.vjp(loss, model_output, x0, noise)
    return [g.contiguous() for g in vjp(grad)]


@_loss_backward.register_fake
def _(
    grad,
    model_output,
    x0,
    noise,
    schedule,
    values,
    prediction,
    min_snr_gamma,
    implementation,
    want_x0,
    want_noise,
):
    return (
        torch.empty_like(model_output, memory_format=torch.contiguous_format),
        torch.empty_like(x0, memory_format=torch.contiguous_format)
        if want_x0
        else model_output.new_empty(0),
        torch.empty_like(noise, memory_format=torch.contiguous_format)
        if want_noise
        else model_output.new_empty(0),
    )


def _loss_setup(ctx, inputs, keyword_only_inputs, output):
    model_output, x0, noise, schedule, values = inputs
    ctx.save_for_backward(model_output, x0, noise, *(t for t in schedule if t is not None))
    ctx.schedule, ctx.values = schedule, values
    ctx.config = (
        keyword_only_inputs["prediction"],
        keyword_only_inputs["min_snr_gamma"],
        backend.resolve(model_output),
    )


def _loss_autograd(ctx, grad):
    model_output, x0, noise, *saved = ctx.saved_tensors
    saved = iter(saved)
    schedule = [next(saved) if t is not None else None for t in ctx.schedule]
    want_x0, want_noise = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
    d_output, d_x0, d_noise = _loss_backward(
        grad, model_output, x0, noise, schedule, ctx.values, *ctx.config, want_x0, want_noise
    )
    return (
        d_output,
        d_x0 if want_x0 else None,
        d_noise if want_noise else None,
        _no_grads(ctx.schedule),
        None,
    )


diffusion_loss_library_op.register_autograd(_loss_autograd, setup_context=_loss_setup)


# --------------------------------------------------------------------------------------------------
# public ops
# --------------------------------------------------------------------------------------------------


def q_sample_library_inputs(
    x0: torch.Tensor, alpha_bar: Union[float, torch.Tensor], noise: torch.Tensor
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `q_sample_library_op` for a checked call of `q_sample`."""
    return (x0, noise, *schedule_arguments(alpha_bar)), {}


def q_sample(
    x0: torch.Tensor, alpha_bar: Union[float, torch.Tensor], noise: torch.Tensor
) -> torch.Tensor:
    """x_t = sqrt(ᾱ) x0 + sqrt(1 − ᾱ) ε, a draw of q(x_t | x0) (Ho et al., 2020, eq. 4), in one
    pass. Differentiable in x0 and noise.

    Args:
        x0: (N, ...) clean data.
        alpha_bar: ᾱ in (0, 1]: a float or a per-example (N,) tensor (float32 or x0's dtype,
            on x0's device).
        noise: ε, shaped like x0, its dtype and device.

    Returns:
        x_t, shaped like x0, in its dtype.

    Raises:
        TypeError: x0 or noise not a floating tensor or of other dtypes, or alpha_bar neither
            a number nor a tensor (or of another dtype).
        ValueError: noise not shaped like x0 or on another device, x0 a 0-d tensor, or
            alpha_bar outside (0, 1].
    """
    _check_pair("x0", x0, "noise", noise, None, None)
    _check_schedule("alpha_bar", alpha_bar, x0, 0, 1)
    args, kwargs = q_sample_library_inputs(x0, alpha_bar, noise)
    return q_sample_library_op(*args, **kwargs)


def diffusion_loss_library_inputs(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: Union[float, torch.Tensor],
    *,
    prediction: str = "eps",
    min_snr_gamma: Optional[float] = None,
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """(args, kwargs) of `diffusion_loss_library_op` for a checked call of `diffusion_loss`."""
    return (model_output, x0, noise, *schedule_arguments(alpha_bar)), dict(
        prediction=prediction, min_snr_gamma=_optional_float(min_snr_gamma)
    )


def diffusion_loss(
    model_output: torch.Tensor,
    x0: torch.Tensor,
    noise: torch.Tensor,
    alpha_bar: Union[float, torch.Tensor],
    *,
    prediction: str = "eps",
    min_snr_gamma: Optional[float] = None,
) -> torch.Tensor:
    """The simple loss of Ho et al. (2020, eq. 14) per example, fused: the mean over an example's
    elements of (model_output − target)², target = noise ("eps"), x0 ("x0") or
    sqrt(ᾱ) noise − sqrt(1 − ᾱ) x0 ("v", Salimans & Ho, 2022), weighted by min-SNR-γ (Hang et
    al., 2023: min(SNR, γ)/SNR for eps, min(SNR, γ) for x0, min(SNR, γ)/(SNR + 1) for v, with
    SNR = ᾱ/(1 − ᾱ)) when min_snr_gamma is given. x_t = q_sample(x0, alpha_bar, noise) is what
    the model saw. Differentiable: the backward is one more fused pass for model_output (x0 and
    noise, usually data, get a scaling of it).

    Args:
        model_output: (N, ...) the model's prediction at x_t.
        x0: the clean data, shaped like model_output, its dtype and device.
        noise: the ε that made x_t, the same.
        alpha_bar: ᾱ in (0, 1): a float or a per-example (N,) tensor (float32 or x0's dtype,
            on its device).
        prediction: what the model predicts: "eps", "x0" or "v".
        min_snr_gamma: γ > 0 of the min-SNR-γ weighting; None: unweighted.

    Returns:
        (N,) losses, in at least fp32.

    Raises:
        TypeError: a tensor argument not a floating tensor or of another dtype, alpha_bar
            neither a number nor a tensor, or min_snr_gamma not a number.
        ValueError: tensors of other shapes or devices, alpha_bar outside (0, 1), an unknown
            prediction, or min_snr_gamma ≤ 0.
    """
    model_output, x0, noise = autocast_inputs("diffusion_loss", model_output, x0, noise)
    _check_pair("model_output", model_output, "x0", x0, noise, None)
    check_shape_of("noise", noise, "model_output", model_output)
    _check_schedule("alpha_bar", alpha_bar, x0, 0, 1, high_open=True)
    check_choice("prediction", prediction, PREDICTIONS)
    if min_snr_gamma is not None:
        _check_float("min_snr_gamma", min_snr_gamma, 0.0, "a positive float or None")
        if min_snr_gamma == 0:
            raise ValueError("min_snr_gamma must be > 0 (Hang et al. use 5)")
    args, kwargs = diffusion_loss_library_inputs(
        model_output, x0, noise, alpha_bar, prediction=prediction, min_snr_gamma=min_snr_gamma
    )
    return diffusion_loss_library_op(*args, **kwargs)
