"""The op catalog: one OpSpec per op. Tests, `gdm-engine validate`, `gdm-engine bench` and the
suites in bench/ all iterate CATALOG, so a new op is validated and benchmarked once listed here."""

import dataclasses
from collections.abc import Callable
from typing import Optional

import torch

from gdm_engine import ops, reference
from gdm_engine.backend import use_backend
from gdm_engine.reference.masked_conv2d import full_mask

SIZES = ("tiny", "medium", "bench")
# ‖out − ref‖ / ‖ref‖ in float64, per input dtype; "tf32": fp32 inputs whose products run as
# TF32 (10-bit mantissa, like fp16) on the tensor cores.
DEFAULT_TOLERANCE = {torch.float32: 1e-5, "tf32": 3e-3, torch.float16: 3e-3, torch.bfloat16: 2e-2}


@dataclasses.dataclass
class Case:
    """One call of an op: its label (for tables), positional tensors and keyword arguments."""

    label: str
    args: tuple
    kwargs: dict

    def tensors(self):
        return [a for a in self.args if isinstance(a, torch.Tensor)]


@dataclasses.dataclass
class OpSpec:
    """An op with everything needed to check and time it.

    make_inputs(size, dtype, device, generator) returns a list of Case: "tiny" shapes run through
    Triton's interpreter in the tests, "medium" ones are random shapes for validation on a GPU (and
    CPU timings), "bench" ones fill a GPU. bytes_moved and flops give the least memory traffic
    and arithmetic of a case (the cost model behind GB/s, TFLOP/s and % of roofline).
    """

    name: str
    family: str
    op: Callable
    library_op: Callable  # the torch.library registration of `op`, for opcheck
    reference: Callable
    make_inputs: Callable
    bytes_moved: Callable
    flops: Callable
    tolerance: dict = dataclasses.field(default_factory=lambda: dict(DEFAULT_TOLERANCE))
    # name -> (case -> callable, or None where the peer cannot run the case, e.g. on this device)
    peers: dict = dataclasses.field(default_factory=dict)
    outputs: tuple = ("out",)  # names of the returned tensors, for ops that return several
    # (args, kwargs) of `library_op` for a case, where the public op prepares its arguments
    library_inputs: Callable = lambda case: (case.args, case.kwargs)  # noqa: E731
    # False for forward-only ops (the samplers' steps): no gradients to check, no autograd
    differentiable: bool = True
    # inputs of a differentiable op that take no gradient (schedule values): not checked
    constant_inputs: tuple = ()
    # device ops a steady-state call may dispatch besides its own kernels, forward and backward:
    # a count, or a function of the case (tests/test_device_ops.py holds every op to it); and
    # why, where it is not 0
    device_op_budget: dict = dataclasses.field(
        default_factory=lambda: {"forward": 0, "backward": 0}
    )
    budget_reason: str = ""
    # the sampler loops' calls of the op's kernel, replayed steps included: (dtype, device) ->
    # None, run by `gdm-engine compile` while it records launches
    loop_calls: Optional[Callable] = None

    def budget(self, direction, case):
        """The device ops a call of `case` may dispatch besides its kernels ("forward" or
        "backward")."""
        budget = self.device_op_budget[direction]
        return budget(case) if callable(budget) else budget

    def kernel(self, *args, **kwargs):
        """The op with its Triton kernel, whatever the global backend."""
        with use_backend("triton"):
            return self.op(*args, **kwargs)


def _randint(generator, low, high):
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def _bytes_of(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


# --------------------------------------------------------------------------------------------------
# causal_conv1d
# --------------------------------------------------------------------------------------------------


def causal_conv1d_case(
    n, c_in, c_out, length, k, dilation, groups, activation, dtype, device, generator, bias=True
):
    """A random causal_conv1d call: x (n, c_in, length), weight (c_out, c_in/groups, k)."""
    x = torch.randn(n, c_in, length, generator=generator)
    fan_in = c_in // groups * k
    w = torch.randn(c_out, c_in // groups, k, generator=generator) / max(fan_in, 1) ** 0.5
    b = torch.randn(c_out, generator=generator) if bias else None
    tensors = [t.to(device=device, dtype=dtype) if t is not None else None for t in (x, w, b)]
    kind = "depthwise" if groups == c_in else ("dense" if groups == 1 else f"groups={groups}")
    label = (
        f"{kind} N={n} C={c_in}->{c_out} L={length} K={k} d={dilation}"
        f"{'' if activation is None else ' ' + activation}{'' if bias else ' no-bias'}"
    )
    return Case(
        label, tuple(tensors), {"dilation": dilation, "groups": groups, "activation": activation}
    )


def _causal_conv1d_inputs(size, dtype, device, generator):
    def case(*shape, **kw):
        return causal_conv1d_case(*shape, dtype=dtype, device=device, generator=generator, **kw)

    if size == "bench":  # the shapes of the performance targets
        return [
            case(8, 1024, 1024, 8192, 4, 1, 1024, None),
            case(8, 256, 256, 16384, 2, 64, 1, None),
            case(8, 256, 512, 16384, 2, 64, 1, "gated"),
        ]
    scale = 1 if size == "tiny" else 16
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    c = r(2, 5) * scale
    return [
        # direct form: few channels, every activation, sequence shorter than the receptive field
        case(r(1, 3), 3, 5, r(1, 4) * scale, 3, 2, 1, None, bias=False),
        case(r(1, 3), c, 2 * c, r(5, 13) * scale, r(2, 4), r(1, 3), 1, "gated"),
        case(2, 6, 12, 7 * scale, 4, 3, 6, "tanh"),  # depthwise, multiplier 2
        case(r(1, 3), c, 2 * c, r(5, 31) * scale, 4, r(1, 5), c, "gated"),  # depthwise gated
        case(1, 1, 1, 1, 1, 1, 1, "relu"),  # K=1, L=1
        # long depthwise kernels: the weight gradient's (channel, tap, time) tiles must still fit
        case(1, 3, 3, r(4, 9) * scale, 7, 1, 3, None),
        case(1, 2, 4, r(4, 9) * scale, 9, 2, 2, "relu"),
        # dot form: >= 16 channels per group
        case(2, 32, 32, r(7, 29) * scale, 3, 2, 1, "gated"),
        case(r(1, 2), 32, 48, 11 * scale, 2, 5, 2, "relu"),
        case(2, 48, 48, 13 * scale, 3, 1, 3, "gated"),  # odd groups, gated: direct form
    ]


def _causal_conv1d_bytes(case):
    x, w, b = case.args
    c_out = w.shape[0] // (2 if case.kwargs["activation"] == "gated" else 1)
    y_bytes = x.shape[0] * c_out * x.shape[2] * x.element_size()
    return _bytes_of(x, w, b) + y_bytes


def _causal_conv1d_flops(case):
    x, w, _ = case.args
    return 2 * x.shape[0] * x.shape[2] * w.numel()


def _dao_causal_conv1d(case):
    """The CUDA kernel of the `causal-conv1d` package (depthwise, K <= 4), where installed."""
    try:
        from causal_conv1d import causal_conv1d_fn
    except ImportError:
        return None
    x, w, b = case.args
    kw = case.kwargs
    depthwise = kw["groups"] == x.shape[1] == w.shape[0]
    if (
        x.device.type != "cuda"
        or not depthwise
        or kw["dilation"] != 1
        or w.shape[2] > 4
        or kw["activation"] is not None
    ):
        return None
    return lambda: causal_conv1d_fn(x, w[:, 0], b)


CAUSAL_CONV1D = OpSpec(
    name="causal_conv1d",
    family="causal_conv1d",
    op=ops.causal_conv1d,
    library_op=ops.library.causal_conv1d_library_op,
    reference=reference.causal_conv1d,
    make_inputs=_causal_conv1d_inputs,
    bytes_moved=_causal_conv1d_bytes,
    flops=_causal_conv1d_flops,
    peers={"causal-conv1d": _dao_causal_conv1d},
)

# --------------------------------------------------------------------------------------------------
# gaussian_reparam_kl
# --------------------------------------------------------------------------------------------------


def _gaussian_reparam_kl_inputs(size, dtype, device, generator):
    def case(n, d, drawn=False):
        mean = torch.randn(n, d, generator=generator)
        log_var = torch.randn(n, d, generator=generator) - 1.0
        eps = torch.randn(n, d, generator=generator)
        mean, log_var, eps = (t.to(device=device, dtype=dtype) for t in (mean, log_var, eps))
        if drawn:  # the noise drawn inside: kernel and reference draw different streams
            return Case(f"N={n} D={d} drawn noise", (mean, log_var, None), {})
        return Case(f"N={n} D={d}", (mean, log_var, eps), {})

    if size == "bench":  # a large latent batch: one read of three inputs (or two), one write;
        # bench cases are timed and built, never compared with the reference
        return [case(65536, 512), case(4096, 8192), case(65536, 512, drawn=True)]
    scale = 1 if size == "tiny" else 64
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    return [case(1, 1), case(r(2, 9), r(2, 40)), case(r(1, 7) * scale, 17 * scale), case(3, 1)]


def _gaussian_reparam_kl_bytes(case):
    mean, log_var, noise = case.args
    return _bytes_of(mean, log_var, noise, mean) + mean.shape[0] * mean.element_size()


def _gaussian_reparam_kl_flops(case):
    return 8 * case.args[0].numel()


GAUSSIAN_REPARAM_KL = OpSpec(
    name="gaussian_reparam_kl",
    family="gaussian_reparam_kl",
    op=ops.gaussian_reparam_kl,
    library_op=ops.library.gaussian_reparam_kl_library_op,
    reference=reference.gaussian_reparam_kl,
    make_inputs=_gaussian_reparam_kl_inputs,
    bytes_moved=_gaussian_reparam_kl_bytes,
    flops=_gaussian_reparam_kl_flops,
    outputs=("z", "kl"),
)

# --------------------------------------------------------------------------------------------------
# masked_conv2d
# --------------------------------------------------------------------------------------------------


def masked_conv2d_case(
    n,
    c_in,
    c_out,
    size,
    k,
    mask,
    color_groups,
    dilation,
    activation,
    dtype,
    device,
    generator,
    bias=True,
    residual=False,
):
    """A random masked_conv2d call on (n, c_in, *size) images with a k x k kernel."""
    height, width = size
    x = torch.randn(n, c_in, height, width, generator=generator)
    w = torch.randn(c_out, c_in, k, k, generator=generator) / (c_in * k * k / 2) ** 0.5
    b = torch.randn(c_out, generator=generator) if bias else None
    c_y = c_out // 2 if activation == "gated" else c_out
    r = torch.randn(n, c_y, height, width, generator=generator) if residual else None
    tensors = [t.to(device=device, dtype=dtype) if t is not None else None for t in (x, w, b, r)]
    kind = mask if isinstance(mask, str) else "custom"
    label = (
        f"{kind} N={n} C={c_in}->{c_out} {height}x{width} k={k} d={dilation}"
        f"{f' groups={color_groups}' if color_groups > 1 else ''}"
        f"{'' if activation is None else ' ' + activation}{' +residual' if residual else ''}"
        f"{'' if bias else ' no-bias'}"
    )
    return Case(
        label,
        tuple(tensors),
        {
            "mask": mask,
            "color_groups": color_groups,
            "dilation": dilation,
            "activation": activation,
        },
    )


def _vertical_stack_mask(k):
    """The taps of a Gated PixelCNN's vertical stack: the rows above and the centre row."""
    mask = torch.zeros(k, k, dtype=torch.bool)
    mask[: k // 2 + 1] = True
    return mask


def _masked_conv2d_inputs(size, dtype, device, generator):
    def case(*shape, **kw):
        return masked_conv2d_case(*shape, dtype=dtype, device=device, generator=generator, **kw)

    if size == "bench":  # the target shape: 7x7 type A, and a gated residual block
        return [
            case(64, 128, 128, (32, 32), 7, "A", 1, 1, None),
            case(64, 128, 256, (32, 32), 3, "B", 1, 1, "gated", residual=True),
        ]
    scale = 1 if size == "tiny" else 4
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    hw = (r(3, 6) * scale, r(3, 7) * scale)
    return [
        case(r(1, 2), 3, 6, hw, 3, "A", 3, 1, None),  # RGB first layer
        case(2, 6, 12, (5, 6), 5, "B", 3, 2, "gated", residual=True),  # dilated gated block
        case(r(1, 2), 16, 32, hw, 3, _vertical_stack_mask(3), 1, 1, "tanh", bias=False),
        case(1, 5, 7, (1, 1), 1, "B", 1, 1, "relu"),  # 1x1, one pixel
        case(2, 4 * scale, 8 * scale, hw, 7, "A", 1, 1, None),  # 24 of 49 taps
    ]


def _masked_conv2d_library_inputs(case):
    """The registered op takes the full bool mask, the tap table and channel_mask that the
    public op builds."""
    from gdm_engine.ops.masked_conv2d import mask_and_taps

    kw = case.kwargs
    full, taps, channel_mask = mask_and_taps(
        case.args[1].shape,
        kw["mask"],
        kw["color_groups"],
        kw["activation"] == "gated",
        kw["dilation"],
        case.args[0].device,
    )
    return (*case.args, full, taps), {
        "dilation": kw["dilation"],
        "activation": kw["activation"],
        "channel_mask": channel_mask,
    }


def _masked_conv2d_bytes(case):
    x, w, b, residual = case.args
    c_y = w.shape[0] // (2 if case.kwargs["activation"] == "gated" else 1)
    y_bytes = x.shape[0] * c_y * x.shape[2] * x.shape[3] * x.element_size()
    return _bytes_of(x, w, b, residual) + y_bytes


def _masked_conv2d_flops(case):
    """The products of the active taps only (what a dense convolution wastes is not counted)."""
    x, w, _, _ = case.args
    mask = full_mask(
        w.shape,
        case.kwargs["mask"],
        case.kwargs["color_groups"],
        case.kwargs["activation"] == "gated",
    )
    return 2 * x.shape[0] * x.shape[2] * x.shape[3] * int(mask.sum())


MASKED_CONV2D = OpSpec(
    name="masked_conv2d",
    family="masked_conv2d",
    op=ops.masked_conv2d,
    library_op=ops.library.masked_conv2d_library_op,
    reference=reference.masked_conv2d,
    make_inputs=_masked_conv2d_inputs,
    bytes_moved=_masked_conv2d_bytes,
    flops=_masked_conv2d_flops,
    library_inputs=_masked_conv2d_library_inputs,
)

# --------------------------------------------------------------------------------------------------
# rq_spline
# --------------------------------------------------------------------------------------------------


def rq_spline_case(
    shape,
    K,
    dtype,
    device,
    generator,
    tail_bound=3.0,
    reverse=False,
    at_bounds=False,
    box=None,
    ends=False,
    **form,
):
    """A random rq_spline call: inputs uniform on [-1.3 B, 1.3 B] (about a quarter of them in the
    identity tails), parameters N(0, 0.5²) (bins from about a third to three times the mean
    width); `at_bounds` puts inputs exactly at ±B. `form`: the op's parameterisation keywords
    (parameterisation="zuko", slope; or nflows' minimum shares and derivative). nflows'
    tails=None spline: `box` (left, right, bottom, top) instead of [-B, B]², inputs uniform on
    the input's side of the box (at_bounds: exactly at its ends), and `ends`: K + 1 derivatives.

    The spread of the parameters is what keeps the fp32 comparison well-conditioned: with
    N(0, 1) parameters about 1 case in 200 puts an inverse input next to a knot between a flat
    and a steep bin, where the gradient of log|dx/dy| moves by thousands per unit of y and the
    fp32 knots' ~1e-7 B rounding alone gives relative gradient errors of 1e-4 (the fp32
    reference errs as much). tests/test_rq_spline.py takes extreme parameters separately."""
    B = tail_bound
    if box is None:
        low, high = -B, B
        x = (torch.rand(shape, generator=generator) * 2 - 1) * 1.3 * B
    else:
        low, high = box[2:] if reverse else box[:2]
        x = low + (high - low) * torch.rand(shape, generator=generator)
    if at_bounds and x.numel() >= 2:
        x.view(-1)[:2] = torch.tensor([low, high])
    widths = 0.5 * torch.randn(*shape, K, generator=generator)
    heights = 0.5 * torch.randn(*shape, K, generator=generator)
    derivatives = 0.5 * torch.randn(*shape, K + 1 if ends else K - 1, generator=generator)
    tensors = tuple(t.to(device=device, dtype=dtype) for t in (x, widths, heights, derivatives))
    domain = f"B={B:g}" if box is None else f"box={tuple(box)}"
    label = (
        f"{'inverse' if reverse else 'forward'} shape={tuple(shape)} K={K} {domain}"
        f"{' ends learned' if ends else ''}{' at the ends' if at_bounds else ''}"
        + "".join(f" {name}={value}" for name, value in form.items())
    )
    where = {"tail_bound": tail_bound} if box is None else {"box": box}
    return Case(label, tensors, {**where, "reverse": reverse, **form})


def _rq_spline_inputs(size, dtype, device, generator):
    def case(shape, K, **kw):
        return rq_spline_case(shape, K, dtype, device, generator, **kw)

    if size == "bench":  # a flow layer's batch: 2^20 elements, 8 bins, both directions
        return [case((4096, 256), 8), case((4096, 256), 8, reverse=True)]
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    if size == "medium":  # tiles of 4 to 64 bins (with "bench", 8): up to the kernels' largest K
        return [
            case((r(64, 512), 37), K, reverse=bool(i % 2), tail_bound=[3.0, 5.0][i % 2])
            for i, K in enumerate((13, 3, 64, 32))
        ] + [
            case((r(64, 512), 37), 8, reverse=True, tail_bound=5.0, parameterisation="zuko"),
            # nflows' tails=None spline: a box and all K + 1 knot derivatives
            case((r(64, 512), 37), 64, reverse=True, box=(0.0, 1.0, -1.0, 2.0), ends=True),
            case((r(64, 512), 37), 16, box=(0.0, 1.0, 0.0, 1.0), ends=True),
        ]
    return [
        case((1, r(5, 9)), 2),  # K = 2, size-1 dim
        case((r(2, 4), 1, r(2, 5)), 3, reverse=True),  # size-1 dim, odd K (the gradcheck case)
        case((r(9, 23),), 8, tail_bound=1.5, at_bounds=True),
        case((2, r(3, 6)), 8, reverse=True, tail_bound=5.0, at_bounds=True),
        case((r(5, 11),), 5),  # odd K
        # zuko's parameterisation (soft clip, exp derivatives), both directions, at ±B
        case((r(9, 23),), 8, tail_bound=5.0, at_bounds=True, parameterisation="zuko"),
        case((2, r(3, 6)), 5, reverse=True, parameterisation="zuko", slope=0.05),
        # nflows' with other minimum shares and derivative
        case(
            (r(5, 11),), 4, reverse=True, min_bin_width=0.1, min_bin_height=0.02, min_derivative=0.3
        ),
        # nflows' tails=None spline: a box, all K + 1 derivatives learned (K = 8 fills the
        # tile: the last knot's derivative is read alone)
        case((r(9, 23),), 8, box=(0.0, 1.0, 0.0, 1.0), ends=True, at_bounds=True),
        case((2, r(3, 6)), 5, reverse=True, box=(-1.0, 2.0, 0.5, 1.5), ends=True, at_bounds=True),
        case((r(5, 11),), 4, tail_bound=2.0, ends=True),  # learned ends on [-B, B]
    ]


def _rq_spline_bytes(case):
    x, widths, heights, derivatives = case.args
    return _bytes_of(x, widths, heights, derivatives) + 2 * _bytes_of(x)  # y and logabsdet


def _rq_spline_flops(case):
    """Per element ~40 for the transform and its log-derivative, and ~12 per bin for each of
    widths and heights (softmax, minimum share, cumulative sum, knots, bin search, selection)."""
    x, widths = case.args[:2]
    return x.numel() * (40 + 24 * widths.shape[-1])


def _nflows_rq_spline(case):
    """nflows' `unconstrained_rational_quadratic_spline` (tails="linear"), where installed and
    the case is in nflows' parameterisation: the same function, with boundary derivatives 1 up
    to rounding of its softplus constant."""
    kw = dict(case.kwargs)
    if kw.pop("parameterisation", "nflows") != "nflows":
        return None
    try:
        from nflows.transforms.splines import rational_quadratic as nflows_splines
    except ImportError:
        return None
    x, widths, heights, derivatives = case.args
    reverse, box = kw.pop("reverse"), kw.pop("box", None)
    ends = derivatives.shape[-1] == widths.shape[-1] + 1
    if box is not None and ends:  # tails=None
        left, right, bottom, top = box
        return lambda: nflows_splines.rational_quadratic_spline(
            x,
            widths,
            heights,
            derivatives,
            inverse=reverse,
            left=left,
            right=right,
            bottom=bottom,
            top=top,
            **kw,
        )
    if box is not None or ends:
        return None
    return lambda: nflows_splines.unconstrained_rational_quadratic_spline(
        x, widths, heights, derivatives, inverse=reverse, tails="linear", **kw
    )


def _zuko_rq_spline(case):
    """zuko's `MonotonicRQSTransform` (forward: call_and_ladj; inverse: inv, then its ladj),
    where installed and the case is in zuko's parameterisation."""
    kw = case.kwargs
    if kw.get("parameterisation") != "zuko":
        return None
    try:
        from zuko.transforms import MonotonicRQSTransform
    except ImportError:
        return None
    x, widths, heights, derivatives = case.args

    def run():
        spline = MonotonicRQSTransform(
            widths, heights, derivatives, bound=kw["tail_bound"], slope=kw.get("slope", 1e-3)
        )
        return spline.inv.call_and_ladj(x) if kw["reverse"] else spline.call_and_ladj(x)

    return run


RQ_SPLINE = OpSpec(
    name="rq_spline",
    family="rq_spline",
    op=ops.rq_spline,
    library_op=ops.library.rq_spline_library_op,
    reference=reference.rq_spline,
    make_inputs=_rq_spline_inputs,
    bytes_moved=_rq_spline_bytes,
    flops=_rq_spline_flops,
    peers={"nflows": _nflows_rq_spline, "zuko": _zuko_rq_spline},
    outputs=("y", "logabsdet"),
    # fp32: the fp32 knots sit within ~1e-7 B of the float64 reference's, an error relative to
    # the bins' width (2B / K) that grows with K, and the inverse amplifies it near knots where
    # the slope changes fast. Worst relative errors seen: 9e-6 over 500 tiny cases (K <= 8),
    # 3e-5 at K = 64 (the fp32 reference: 1.7e-4 there). No products run as TF32.
    tolerance={**DEFAULT_TOLERANCE, torch.float32: 1e-4, "tf32": 1e-4},
)

# --------------------------------------------------------------------------------------------------
# affine_coupling
# --------------------------------------------------------------------------------------------------


def checkerboard_mask(channels, height, width):
    """RealNVP's checkerboard mask, (1, C, H, W) bool: True where (h + w) is even."""
    grid = (torch.arange(height)[:, None] + torch.arange(width)[None, :]) % 2 == 0
    return grid.expand(1, channels, height, width)


def channel_mask(channels):
    """RealNVP's channel mask, (1, C, 1, 1) as 0./1. floats: the first half of the channels."""
    return (torch.arange(channels) < channels // 2).float().reshape(1, channels, 1, 1)


def affine_coupling_case(
    shape,
    scale_map,
    dtype,
    device,
    generator,
    mask=None,
    reverse=False,
    clamp=3.0,
    mask_label="no mask",
):
    """A random affine_coupling call on x, shift, scale_raw of `shape`; the mask (if any) goes
    in kwargs, since the harness differentiates every positional tensor."""
    x, shift, scale_raw = (torch.randn(shape, generator=generator) for _ in range(3))
    x, shift, scale_raw = (t.to(device=device, dtype=dtype) for t in (x, shift, scale_raw))
    if mask is not None:
        mask = mask.to(device=device, dtype=dtype if mask.dtype.is_floating_point else None)
    label = (
        f"{'reverse' if reverse else 'forward'} {scale_map}"
        f"{f' clamp={clamp:g}' if scale_map == 'softclamp' else ''} shape={tuple(shape)} "
        f"{mask_label}"
    )
    return Case(
        label,
        (x, shift, scale_raw),
        {"scale_map": scale_map, "mask": mask, "reverse": reverse, "clamp": clamp},
    )


def _affine_coupling_inputs(size, dtype, device, generator):
    def case(shape, scale_map, **kw):
        return affine_coupling_case(shape, scale_map, dtype, device, generator, **kw)

    def board(c, h, w):
        return {"mask": checkerboard_mask(c, h, w), "mask_label": "checkerboard mask"}

    def channels(c):
        return {"mask": channel_mask(c), "mask_label": "channel mask"}

    if size == "bench":  # a Glow/RealNVP step on 64x64 images with 48 channels: 12.6M elements
        n, c, h, w = 64, 48, 64, 64
        return [
            case((n, c, h, w), "exp"),
            case((n, c, h, w), "sigmoid", **board(c, h, w)),
            case((n, c, h, w), "softclamp", reverse=True, **channels(c)),
        ]
    scale = 1 if size == "tiny" else 8
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    c, h, w = r(2, 5), r(3, 6) * scale, r(3, 7) * scale
    per_example = torch.rand(3, 2, 7 * scale, generator=generator) < 0.5
    return [
        case((r(1, 3), c, h, w), "exp", **board(c, h, w)),
        case((2, 4, 2 * scale, 3), "sigmoid", reverse=True, **channels(4)),  # opcheck
        case((r(2, 7), 17 * scale), "softclamp", clamp=2.0),  # 2-D, prime D, no mask
        case((1, 1, 1, 1), "exp", reverse=True),  # one element
        case(
            (3, 2, 7 * scale),
            "softclamp",
            reverse=True,
            mask=per_example,
            mask_label="per-example mask",
        ),
        case((r(2, 5), c, h, w), "sigmoid", **board(c, h, w)),
        case(
            (5, 1),
            "exp",
            reverse=True,
            mask=torch.zeros(1, 1),  # nothing masked
            mask_label="all-zero mask",
        ),
    ]


def _affine_coupling_library_inputs(case):
    """The registered op takes the mask compacted to bool (1 or N, *x.shape[1:])."""
    from gdm_engine.ops.affine_coupling import compact_mask

    kw = dict(case.kwargs)
    mask = compact_mask(kw.pop("mask"), case.args[0])
    return (*case.args, mask), {**kw, "clamp": float(kw["clamp"])}


def _affine_coupling_bytes(case):
    """Read x, shift, scale_raw and the compact bool mask; write y and logdet."""
    x = case.args[0]
    mask = case.kwargs["mask"]
    mask_bytes = 0
    if mask is not None:
        per_example = mask.ndim == x.ndim and mask.shape[0] != 1
        mask_bytes = (x.shape[0] if per_example else 1) * x[0].numel()
    return _bytes_of(*case.args, x) + x.shape[0] * x.element_size() + mask_bytes


def _affine_coupling_flops(case):
    """About 4 per element: the product, the sum, the logdet sum and the scale map's few."""
    return 4 * case.args[0].numel()


AFFINE_COUPLING = OpSpec(
    name="affine_coupling",
    family="coupling",
    op=ops.affine_coupling,
    library_op=ops.library.affine_coupling_library_op,
    reference=reference.affine_coupling,
    make_inputs=_affine_coupling_inputs,
    bytes_moved=_affine_coupling_bytes,
    flops=_affine_coupling_flops,
    outputs=("y", "logdet"),
    library_inputs=_affine_coupling_library_inputs,
)

# --------------------------------------------------------------------------------------------------
# actnorm
# --------------------------------------------------------------------------------------------------


def actnorm_case(shape, dtype, device, generator, reverse=False):
    """A random actnorm call: x (N, C, ...), loc and log_scale (C,)."""
    x = torch.randn(shape, generator=generator)
    loc = torch.randn(shape[1], generator=generator)
    log_scale = 0.5 * torch.randn(shape[1], generator=generator)
    tensors = tuple(t.to(device=device, dtype=dtype) for t in (x, loc, log_scale))
    label = f"{'reverse' if reverse else 'forward'} shape={tuple(shape)}"
    return Case(label, tensors, {"reverse": reverse})


def _actnorm_inputs(size, dtype, device, generator):
    def case(shape, **kw):
        return actnorm_case(shape, dtype, device, generator, **kw)

    if size == "bench":  # Glow's 64x64 level with 64 channels (16.8M elements), and a flat batch
        return [case((64, 64, 64, 64)), case((64, 64, 64, 64), reverse=True), case((65536, 256))]
    scale = 1 if size == "tiny" else 16
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    return [
        case((r(2, 9), r(2, 13) * scale)),  # (N, C)
        case((2, 3, r(3, 6) * scale, r(3, 7)), reverse=True),  # (opcheck, compile)
        case((r(1, 3), 5, 4, 3 * scale)),
        case((1, 1, 1, 1)),
        case((3, r(2, 7), 17 * scale), reverse=True),  # 1-D positions, prime
        case((r(5, 40) * scale, 3), reverse=True),  # (N, C), many examples
    ]


def _actnorm_bytes(case):
    x = case.args[0]
    return _bytes_of(*case.args, x) + x.shape[0] * x.element_size()


def _actnorm_flops(case):
    return 3 * case.args[0].numel()


ACTNORM = OpSpec(
    name="actnorm",
    family="actnorm",
    op=ops.actnorm,
    library_op=ops.library.actnorm_library_op,
    reference=reference.actnorm,
    make_inputs=_actnorm_inputs,
    bytes_moved=_actnorm_bytes,
    flops=_actnorm_flops,
    outputs=("y", "logdet"),
)

# --------------------------------------------------------------------------------------------------
# diffusion: the sampler steps (forward-only, explicit noise so kernel and reference agree; the
# in-kernel noise is tested statistically in tests/test_diffusion.py), q_sample and the loss.
# The catalog's callables take every tensor positionally (the harness converts positional
# tensors for the float64 reference) and pass them to the public ops by name.
# --------------------------------------------------------------------------------------------------


def _ddpm_op(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, uncond=None, **kwargs):
    return ops.ddpm_step(
        x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=noise, uncond=uncond, **kwargs
    )


def _ddim_op(x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=None, uncond=None, **kwargs):
    return ops.ddim_step(
        x_t, model_output, alpha_bar_t, alpha_bar_prev, noise=noise, uncond=uncond, **kwargs
    )


def _euler_op(x, model_output, sigma, sigma_next, noise=None, uncond=None, **kwargs):
    return ops.euler_step(x, model_output, sigma, sigma_next, noise=noise, uncond=uncond, **kwargs)


def _heun_op(
    x,
    model_output,
    model_output_next,
    sigma,
    sigma_next,
    noise=None,
    uncond=None,
    uncond_next=None,
    **kwargs,
):
    return ops.heun_step(
        x,
        model_output,
        model_output_next,
        sigma,
        sigma_next,
        noise=noise,
        uncond=uncond,
        uncond_next=uncond_next,
        **kwargs,
    )


def _dpmpp_op(x, model_output, sigma, sigma_next, previous_denoised=None, uncond=None, **kwargs):
    return ops.dpmpp_2m_step(
        x,
        model_output,
        sigma,
        sigma_next,
        previous_denoised=previous_denoised,
        uncond=uncond,
        **kwargs,
    )


def _langevin_op(x, score, step_size, noise=None, **kwargs):
    return ops.langevin_step(x, score, step_size, noise=noise, **kwargs)


def _diffusion_tensors(shape, dtype, device, generator, noise=True, count=3):
    """x, model output (or score), `count` − 3 more outputs, and explicit noise z (None: drawn
    in the kernel), last."""
    drawn = [
        torch.randn(shape, generator=generator).to(device=device, dtype=dtype) for _ in range(count)
    ]
    return (*drawn[:-1], drawn[-1] if noise else None)


def _alpha_bars(n, per_example, dtype, device, generator, last=False):
    """(ᾱ_t, ᾱ_prev): floats, or (N,) tensors in x's dtype; ᾱ_prev = 1 where `last`."""
    a = 0.05 + 0.85 * torch.rand(n, generator=generator)
    gap = 0.1 * torch.rand(n, generator=generator)
    a_prev = torch.ones(n) if last else torch.minimum(a + gap, torch.ones(n))
    if per_example:
        if last and n > 1:  # a batch that mixes the last step with others
            a_prev[::2] = torch.minimum(a[::2] + gap[::2], torch.ones(1))
        return a.to(device=device, dtype=dtype), a_prev.to(device=device, dtype=dtype)
    return float(a[0]), float(a_prev[0])


def _label(shape, schedule, kwargs, z):
    return (
        f"{tuple(shape)} {schedule}"
        + "".join(f" {k}={v}" for k, v in kwargs.items())
        + (" drawn noise" if z is None else "")
    )


def _denoising_inputs(size, dtype, device, generator, settings):
    """One Case per (shape, per-example schedule?, last step?, kwargs) in `settings`; a
    guidance_scale in kwargs adds an unconditional output."""
    cases = []
    for shape, per_example, last, kwargs in settings:
        x, m, u, z = _diffusion_tensors(
            shape, dtype, device, generator, noise=kwargs.pop("noise", True), count=4
        )
        a, a_prev = _alpha_bars(shape[0], per_example, dtype, device, generator, last)
        schedule = (
            ("per-example" if per_example else "float")
            + " schedule"
            + (" last step" if last else "")
        )
        uncond = u if "guidance_scale" in kwargs else None
        cases.append(Case(_label(shape, schedule, kwargs, z), (x, m, a, a_prev, z, uncond), kwargs))
    return cases


_DIFFUSERS_PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}


def _diffusers_step(scheduler_name, steps=None):
    """A peer running diffusers' `<scheduler_name>.step` on a case of the same size, where
    diffusers is installed (a benchmark-only peer): at t = 500 of its own linear schedule, so the
    values differ while the work is the same. Classifier-free guidance is the separate
    u + w·(c − u) that diffusers' pipelines compute before the step. Cases with per-example
    schedule values, clipping or thresholding have no diffusers counterpart (None)."""

    def peer(case):
        try:
            import diffusers
        except ImportError:
            return None
        x, m, a, _, _, uncond = case.args
        kw = dict(case.kwargs)
        w = kw.pop("guidance_scale", 1.0)
        if isinstance(a, torch.Tensor) or {"clip", "threshold"} & set(kw):
            return None
        options = {
            "prediction_type": _DIFFUSERS_PREDICTIONS[kw.pop("prediction", "eps")],
            "clip_sample": False,
        }
        if "variance" in kw:
            options["variance_type"] = kw.pop("variance")
        scheduler = getattr(diffusers, scheduler_name)(num_train_timesteps=1000, **options)
        if steps:
            scheduler.set_timesteps(steps)
        step_options = {"eta": kw.pop("eta")} if "eta" in kw else {}

        def run():
            output = m if uncond is None else uncond + w * (m - uncond)
            return scheduler.step(output, 500, x, **step_options).prev_sample

        return run

    return peer


def _denoising_shapes(size, generator):
    r = lambda low, high: _randint(generator, low, high)  # noqa: E731
    if size == "tiny":
        return [(1, 1), (r(2, 5), r(1, 3), r(2, 7), r(2, 7)), (3, 17), (r(2, 6), 2)]
    return [(r(2, 16), 4, r(8, 40), r(8, 40)), (r(30, 200), 2), (7, 3, 31, 29), (5, 1)]


def _ddpm_inputs(size, dtype, device, generator):
    if size == "bench":  # the latent batch: (64, 4, 64, 64), given and drawn noise
        shape = (64, 4, 64, 64)
        return _denoising_inputs(
            size,
            dtype,
            device,
            generator,
            [
                (shape, True, False, {}),
                (shape, False, False, {"noise": False}),
                (shape, False, False, {"guidance_scale": 3.0, "noise": False}),
                (shape, True, False, {"threshold": 0.995}),
            ],
        )
    s = _denoising_shapes(size, generator)
    return _denoising_inputs(
        size,
        dtype,
        device,
        generator,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "variance": "fixed_large"}),
            (s[2], True, False, {"prediction": "x0", "clip": 1.0}),
            (s[1], False, False, {"threshold": 0.9}),
            (s[3], True, True, {"prediction": "eps", "clip": 1.5, "threshold": 0.8}),
            (s[2], False, True, {"variance": "fixed_large"}),
            (s[1], True, False, {"guidance_scale": 2.5, "prediction": "v"}),
            (s[2], False, False, {"guidance_scale": 4.0, "threshold": 0.95}),
        ],
    )


def _ddim_inputs(size, dtype, device, generator):
    if size == "bench":
        shape = (64, 4, 64, 64)
        return _denoising_inputs(
            size,
            dtype,
            device,
            generator,
            [
                (shape, True, False, {}),
                (shape, False, False, {}),
                (shape, False, False, {"eta": 1.0, "noise": False}),
                (shape, False, False, {"guidance_scale": 3.0}),
            ],
        )
    s = _denoising_shapes(size, generator)
    return _denoising_inputs(
        size,
        dtype,
        device,
        generator,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "eta": 0.5}),
            (s[2], True, False, {"prediction": "x0", "clip": 1.0, "eta": 1.0}),
            (s[1], False, False, {"threshold": 0.9, "eta": 0.3}),
            (s[3], True, True, {"eta": 1.0}),
            (s[0], True, False, {"guidance_scale": 2.0, "clip": 1.0}),
        ],
    )


# the σ-form steps: Euler, Heun (Karras et al., 2022) and DPM-Solver++(2M)


def _sigmas(n, per_example, dtype, device, generator, last=False):
    """(σ, σ_next, σ_prev) with σ_prev > σ >= σ_next >= 0; σ_next = 0 where `last`."""
    sigma = 0.05 + 10 * torch.rand(n, generator=generator)
    sigma_next = torch.zeros(n) if last else sigma * torch.rand(n, generator=generator)
    sigma_prev = sigma * (1.1 + torch.rand(n, generator=generator))
    if last and per_example and n > 1:  # a batch that mixes the last step with others
        sigma_next[::2] = sigma[::2] / 2
    values = (sigma, sigma_next, sigma_prev)
    if per_example:
        return tuple(v.to(device=device, dtype=dtype) for v in values)
    return tuple(float(v[0]) for v in values)


def _sigma_form_inputs(size, dtype, device, generator, outputs, settings):
    """Cases of (x, `outputs` model outputs, σ, σ_next, z, `outputs` unconditional ones) per
    (shape, per-example?, last?, kwargs); guidance_scale in kwargs adds the unconditional ones,
    churn the noise."""
    cases = []
    for shape, per_example, last, kwargs in settings:
        tensors = _diffusion_tensors(
            shape, dtype, device, generator, noise=kwargs.pop("noise", True), count=2 + 2 * outputs
        )
        x, models, uncond, z = (
            tensors[0],
            tensors[1 : 1 + outputs],
            tensors[1 + outputs : -1],
            tensors[-1],
        )
        sigma, sigma_next, _ = _sigmas(shape[0], per_example, dtype, device, generator, last)
        z = z if kwargs.get("churn") else None
        uncond = uncond if "guidance_scale" in kwargs else (None,) * outputs
        schedule = (
            ("per-example" if per_example else "float") + " sigmas" + (" last step" if last else "")
        )
        cases.append(
            Case(
                _label(shape, schedule, kwargs, z),
                (x, *models, sigma, sigma_next, z, *uncond),
                kwargs,
            )
        )
    return cases


def _euler_inputs(size, dtype, device, generator):
    if size == "bench":
        shape = (64, 4, 64, 64)
        return _sigma_form_inputs(
            size,
            dtype,
            device,
            generator,
            1,
            [
                (shape, True, False, {}),
                (shape, True, False, {"guidance_scale": 3.0}),
                (shape, True, False, {"churn": 0.2, "noise": False}),
            ],
        )
    s = _denoising_shapes(size, generator)
    return _sigma_form_inputs(
        size,
        dtype,
        device,
        generator,
        1,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "churn": 0.3}),
            (s[2], True, True, {"prediction": "x0", "guidance_scale": 2.0}),
            (s[3], False, False, {"churn": 0.1, "s_noise": 1.007, "guidance_scale": 0.5}),
            (s[1], True, True, {}),
        ],
    )


def _heun_inputs(size, dtype, device, generator):
    if size == "bench":
        shape = (64, 4, 64, 64)
        return _sigma_form_inputs(
            size,
            dtype,
            device,
            generator,
            2,
            [(shape, True, False, {}), (shape, True, False, {"guidance_scale": 3.0})],
        )
    s = _denoising_shapes(size, generator)
    return _sigma_form_inputs(
        size,
        dtype,
        device,
        generator,
        2,
        [
            (s[0], False, False, {}),
            (s[1], True, False, {"prediction": "v", "churn": 0.3}),
            (s[2], True, False, {"prediction": "x0", "guidance_scale": 2.0}),
            (s[3], False, False, {"churn": 0.1, "guidance_scale": 1.5}),
        ],
    )


def _dpmpp_inputs(size, dtype, device, generator):
    def case(shape, per_example, last, second_order, **kwargs):
        x, m, previous, u = _diffusion_tensors(shape, dtype, device, generator, count=4)
        sigma, sigma_next, sigma_prev = _sigmas(
            shape[0], per_example, dtype, device, generator, last
        )
        if second_order:
            kwargs["sigma_prev"] = sigma_prev
        uncond = u if "guidance_scale" in kwargs else None
        schedule = (
            ("per-example" if per_example else "float")
            + " sigmas"
            + (" last step" if last else "")
            + (" second order" if second_order else "")
        )
        label = _label(
            shape, schedule, {k: v for k, v in kwargs.items() if k != "sigma_prev"}, True
        )
        return Case(
            label, (x, m, sigma, sigma_next, previous if second_order else None, uncond), kwargs
        )

    if size == "bench":
        shape = (64, 4, 64, 64)
        return [case(shape, True, False, True), case(shape, True, False, True, guidance_scale=3.0)]
    s = _denoising_shapes(size, generator)
    return [
        case(s[0], False, False, False),
        case(s[1], True, False, True, prediction="v"),
        case(s[2], True, True, True, prediction="x0", guidance_scale=2.0),
        case(s[3], False, False, True, guidance_scale=1.5),
        case(s[1], True, True, False),
    ]


def _sigma_form_flops(case):
    return 10 * case.args[0].numel()


# training: q_sample and the loss


def _q_sample_op(x0, alpha_bar, noise):
    return ops.q_sample(x0, alpha_bar, noise)


def _loss_op(model_output, x0, noise, alpha_bar, **kwargs):
    return ops.diffusion_loss(model_output, x0, noise, alpha_bar, **kwargs)


def _training_inputs(size, dtype, device, generator, loss):
    """(model_output,) x0, noise and ᾱ (float or per-example) per setting."""
    if size == "bench":
        shapes = [(64, 4, 64, 64)] * 2
    else:
        shapes = _denoising_shapes(size, generator)
    settings = (
        [
            {},
            {"prediction": "v", "min_snr_gamma": 5.0},
            {"prediction": "x0"},
            {"min_snr_gamma": 1.0},
        ]
        if loss
        else [{}, {}, {}, {}]
    )
    cases = []
    for i, (shape, kwargs) in enumerate(zip(shapes, settings)):
        tensors = _diffusion_tensors(shape, dtype, device, generator, count=3 if loss else 2)
        a, _ = _alpha_bars(shape[0], i % 2 == 1, dtype, device, generator)
        schedule = "per-example" if i % 2 == 1 else "float"
        args = (tensors[0], *tensors[1:], a) if loss else (tensors[0], a, tensors[1])
        cases.append(Case(_label(shape, schedule + " alpha_bar", kwargs, True), args, kwargs))
    return cases


def _training_flops(case):
    return 4 * case.args[0].numel()


def _elementwise_bytes(outputs=1):
    """bytes_moved of an elementwise step: every full-size tensor read once (the (N,) schedule
    values are negligible), `outputs` x-sized tensors written."""

    def moved(case):
        full = [a for a in case.args if isinstance(a, torch.Tensor) and a.ndim > 1]
        return _bytes_of(*full) + outputs * _bytes_of(case.args[0])

    return moved


def _denoising_flops(case):
    return 8 * case.args[0].numel()


def _langevin_inputs(size, dtype, device, generator):
    def case(shape, per_example, noise=True):
        x, score, z = _diffusion_tensors(shape, dtype, device, generator, noise)
        h = 0.2 * torch.rand(shape[0], generator=generator)
        step = h.to(device=device, dtype=dtype) if per_example else float(h[0])
        label = f"{tuple(shape)} {'per-example' if per_example else 'float'} step size"
        return Case(label + ("" if noise else " drawn noise"), (x, score, step, z), {})

    if size == "bench":
        return [case((64, 4, 64, 64), False), case((64, 4, 64, 64), True, noise=False)]
    s = _denoising_shapes(size, generator)
    return [case(s[0], False), case(s[1], True), case(s[2], True), case(s[3], False)]


def _langevin_flops(case):
    return 4 * case.args[0].numel()


def _library_inputs(prepare):
    return lambda case: prepare(*case.args, **case.kwargs)


def _loop_calls(kind, **options):
    """The loops' calls of a step kernel (ops.diffusion.loop_step): an eager step and a step
    replayed from a CUDA graph, which reads its schedule row and seed on the device."""

    def calls(dtype, device):
        x = torch.zeros(4, 3, 8, 8, dtype=dtype, device=device)
        second = {"second": x} if kind in ("heun", "dpmpp_2m") else {}
        table = torch.zeros(5, 6, dtype=torch.float64, device=device)
        step = torch.zeros(1, dtype=torch.long, device=device)
        for noisy in (False, True):
            seed = 0 if noisy else None
            ops.diffusion.loop_step(kind, x, x, (0.5, 0.6, 0.7), seed=seed, **second, **options)
            ops.diffusion.loop_step(
                kind, x, x, (0.5, 0.6, 0.7), seed=seed, table=table, state=step, **second, **options
            )

    return calls


# Dynamic thresholding needs each example's quantile of |x0| before the step: the kernel writes
# x0, torch takes |x0|, two kthvalue passes and the interpolation between them (7 ops), then the
# step kernel runs. Every other case is its one kernel.
_THRESHOLD_BUDGET = {"forward": lambda case: 7 if "threshold" in case.kwargs else 0, "backward": 0}
_THRESHOLD_REASON = (
    "dynamic thresholding: the per-example quantile of |x0| in torch (abs, two "
    "kthvalue, interpolation: 7 ops) between the x0 kernel and the step kernel"
)

DDPM_STEP = OpSpec(
    name="ddpm_step",
    family="diffusion",
    op=_ddpm_op,
    library_op=ops.library.ddpm_library_op,
    reference=reference.ddpm_step,
    make_inputs=_ddpm_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_denoising_flops,
    library_inputs=_library_inputs(ops.diffusion.ddpm_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("ddpm"),
    device_op_budget=_THRESHOLD_BUDGET,
    budget_reason=_THRESHOLD_REASON,
    peers={"diffusers": _diffusers_step("DDPMScheduler")},
)

DDIM_STEP = OpSpec(
    name="ddim_step",
    family="diffusion",
    op=_ddim_op,
    library_op=ops.library.ddim_library_op,
    reference=reference.ddim_step,
    make_inputs=_ddim_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_denoising_flops,
    library_inputs=_library_inputs(ops.diffusion.ddim_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("ddim"),
    device_op_budget=_THRESHOLD_BUDGET,
    budget_reason=_THRESHOLD_REASON,
    peers={"diffusers": _diffusers_step("DDIMScheduler", steps=50)},
)

EULER_STEP = OpSpec(
    name="euler_step",
    family="diffusion",
    op=_euler_op,
    library_op=ops.library.euler_library_op,
    reference=reference.euler_step,
    make_inputs=_euler_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_sigma_form_flops,
    library_inputs=_library_inputs(ops.diffusion.euler_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("euler"),
)

HEUN_STEP = OpSpec(
    name="heun_step",
    family="diffusion",
    op=_heun_op,
    library_op=ops.library.heun_library_op,
    reference=reference.heun_step,
    make_inputs=_heun_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_sigma_form_flops,
    library_inputs=_library_inputs(ops.diffusion.heun_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("heun"),
)

DPMPP_2M_STEP = OpSpec(
    name="dpmpp_2m_step",
    family="diffusion",
    op=_dpmpp_op,
    library_op=ops.library.dpmpp_2m_library_op,
    reference=reference.dpmpp_2m_step,
    make_inputs=_dpmpp_inputs,
    bytes_moved=_elementwise_bytes(outputs=2),
    flops=_sigma_form_flops,
    library_inputs=_library_inputs(ops.diffusion.dpmpp_2m_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("dpmpp_2m"),
    outputs=("x_next", "denoised"),
)

Q_SAMPLE = OpSpec(
    name="q_sample",
    family="diffusion",
    op=_q_sample_op,
    library_op=ops.library.q_sample_library_op,
    reference=reference.q_sample,
    make_inputs=lambda size, dtype, device, generator: _training_inputs(
        size, dtype, device, generator, loss=False
    ),
    bytes_moved=_elementwise_bytes(),
    flops=_training_flops,
    library_inputs=_library_inputs(ops.diffusion.q_sample_library_inputs),
    constant_inputs=("alpha_bar",),
)

DIFFUSION_LOSS = OpSpec(
    name="diffusion_loss",
    family="diffusion",
    op=_loss_op,
    library_op=ops.library.diffusion_loss_library_op,
    reference=reference.diffusion_loss,
    make_inputs=lambda size, dtype, device, generator: _training_inputs(
        size, dtype, device, generator, loss=True
    ),
    bytes_moved=_elementwise_bytes(outputs=0),
    flops=_training_flops,
    library_inputs=_library_inputs(ops.diffusion.diffusion_loss_library_inputs),
    constant_inputs=("alpha_bar",),
)

LANGEVIN_STEP = OpSpec(
    name="langevin_step",
    family="diffusion",
    op=_langevin_op,
    library_op=ops.library.langevin_library_op,
    reference=reference.langevin_step,
    make_inputs=_langevin_inputs,
    bytes_moved=_elementwise_bytes(),
    flops=_langevin_flops,
    library_inputs=_library_inputs(ops.diffusion.langevin_library_inputs),
    differentiable=False,
    loop_calls=_loop_calls("langevin"),
)

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
