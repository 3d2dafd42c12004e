"""The catalog entry of rq_spline: random calls, the cost model, the nflows and zuko peers."""

import torch

from gdm_engine import ops, reference

from .peers import _nflows_rq_spline, _zuko_rq_spline
from .spec import DEFAULT_TOLERANCE, Case, OpSpec, _bytes_of, _randint


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
