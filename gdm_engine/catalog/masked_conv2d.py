"""The catalog entry of masked_conv2d: random calls, the registered op's inputs, the cost model."""

import torch

from gdm_engine import ops, reference
from gdm_engine.reference.masked_conv2d import full_mask

from .spec import Case, OpSpec, _bytes_of, _randint


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
