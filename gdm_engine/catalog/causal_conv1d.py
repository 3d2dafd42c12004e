"""The catalog entry of causal_conv1d: random calls, the cost model, the causal-conv1d peer."""

import torch

from gdm_engine import ops, reference

from .peers import _dao_causal_conv1d
from .spec import Case, OpSpec, _bytes_of, _randint


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
