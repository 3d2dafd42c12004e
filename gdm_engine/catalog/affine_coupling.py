"""The catalog entry of affine_coupling: RealNVP's masks, random calls, the registered op's
inputs, the cost model."""

import torch

from gdm_engine import ops, reference

from .spec import Case, OpSpec, _bytes_of, _randint


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
