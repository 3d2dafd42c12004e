"""The catalog entry of actnorm: random calls and the cost model."""

import torch

from gdm_engine import ops, reference

from .spec import Case, OpSpec, _bytes_of, _randint


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
