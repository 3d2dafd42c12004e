"""causal_conv1d beyond the catalog's generic checks: its definition, causality, edge cases,
every activation in each kernel form, bad input, and the CausalConv1d module."""

import pytest
import torch
import torch.nn.functional as F
import triton

import gdm_engine
from gdm_engine import catalog, testing
from gdm_engine.nn import CausalConv1d
from gdm_engine.ops import causal_conv1d

SPEC = catalog.CATALOG["causal_conv1d"]
TOL = SPEC.tolerance[torch.float32]


def _case(generator, device, *shape, **kw):
    return catalog.causal_conv1d_case(*shape, dtype=torch.float32, device=device,
                                      generator=generator, **kw)


def _assert_matches_reference(case, generator):
    testing.assert_checks_pass(testing.check_case(SPEC, case, generator=generator))


@pytest.mark.parametrize("activation", [None, "tanh", "relu", "gated"])
@pytest.mark.parametrize("form", ["direct", "dot", "depthwise"])
def test_every_activation_in_every_kernel_form(form, activation, device, generator):
    channels, groups = {"direct": (6, 1), "dot": (16, 1), "depthwise": (6, 6)}[form]
    case = _case(generator, device, 2, channels, 2 * channels, 9, 3, 2, groups, activation)
    _assert_matches_reference(case, generator)


def test_is_the_padded_convolution_of_the_definition(device, generator):
    x, w, b = _case(generator, device, 3, 8, 12, 17, 3, 4, 2, None).args
    with gdm_engine.use_backend("triton"):
        y = causal_conv1d(x, w, b, dilation=4, groups=2)
    padded = F.conv1d(F.pad(x.double(), (2 * 4, 0)), w.double(), b.double(), dilation=4, groups=2)
    assert testing.relative_error(y, padded) < TOL


def test_output_never_sees_the_future(device, generator):
    x, w, b = _case(generator, device, 1, 4, 4, 20, 3, 3, 1, "gated").args
    t0 = 11
    later = x.clone()
    later[..., t0:] = torch.randn(later[..., t0:].shape, generator=generator).to(device)
    with gdm_engine.use_backend("triton"):
        y, y_later = (causal_conv1d(v, w, b, dilation=3, activation="gated") for v in (x, later))
    assert torch.equal(y[..., :t0], y_later[..., :t0])
    assert not torch.equal(y[..., t0:], y_later[..., t0:])


@pytest.mark.parametrize("length", [1, 2, 5])  # all shorter than the receptive field (K-1)·d = 9
def test_sequences_shorter_than_the_receptive_field(length, device, generator):
    _assert_matches_reference(_case(generator, device, 2, 3, 4, length, 4, 3, 1, "tanh"), generator)


def test_empty_batch(device):
    x = torch.randn(0, 4, 7, device=device, requires_grad=True)
    w = torch.randn(6, 4, 3, device=device, requires_grad=True)
    with gdm_engine.use_backend("triton"):
        y = causal_conv1d(x, w, activation="gated")
        assert y.shape == (0, 3, 7)
        y.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(w.grad, torch.zeros_like(w))


def test_float64_runs_the_reference_on_every_backend(device, generator):
    x, w, b = _case(generator, device, 2, 3, 4, 6, 2, 1, 1, None).args
    x, w, b = x.double(), w.double(), b.double()
    with gdm_engine.use_backend("triton"):
        assert torch.equal(causal_conv1d(x, w, b), gdm_engine.reference.causal_conv1d(x, w, b))


def _inputs():
    return torch.randn(2, 4, 8), torch.randn(6, 4, 3), torch.randn(6)


BAD_INPUTS = {
    "x rank": (lambda x, w, b: (x[0], w, b, {}), ValueError, "x must have 3 dimensions"),
    "weight rank": (lambda x, w, b: (x, w[0], b, {}), ValueError, "weight must have 3"),
    "x not a tensor": (lambda x, w, b: (x.tolist(), w, b, {}), TypeError, "x must be a torch.Tensor"),
    "channels": (lambda x, w, b: (x[:, :3], w, b, {}), ValueError, "weight must have shape"),
    "groups divide": (lambda x, w, b: (x, w, b, {"groups": 3}), ValueError, "groups=3"),
    "groups shape": (lambda x, w, b: (x, w, b, {"groups": 2}), ValueError, "weight must have shape"),
    "groups type": (lambda x, w, b: (x, w, b, {"groups": 1.0}), TypeError, "groups must be an int"),
    "K = 0": (lambda x, w, b: (x, w[..., :0], b, {}), ValueError, "kernel size K >= 1"),
    "dilation 0": (lambda x, w, b: (x, w, b, {"dilation": 0}), ValueError, "dilation must be >= 1"),
    "dilation bool": (lambda x, w, b: (x, w, b, {"dilation": True}), TypeError, "dilation must be"),
    "integer x": (lambda x, w, b: (x.long(), w, b, {}), TypeError, "x must be float32"),
    "integer weight": (lambda x, w, b: (x, w.int(), b, {}), TypeError, "weight must be float32"),
    "dtypes": (lambda x, w, b: (x, w.double(), b, {}), TypeError, "weight has dtype"),
    "bias dtype": (lambda x, w, b: (x, w, b.half(), {}), TypeError, "bias has dtype"),
    "bias shape": (lambda x, w, b: (x, w, b[:5], {}), ValueError, "bias must have shape (6,)"),
    "devices": (lambda x, w, b: (x, w.to("meta"), b, {}), ValueError, "weight is on meta"),
    "activation": (lambda x, w, b: (x, w, b, {"activation": "gelu"}), ValueError, "activation"),
    "odd gated": (lambda x, w, b: (x, w[:5], b[:5], {"activation": "gated"}), ValueError, "even"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(name):
    make, error, message = BAD_INPUTS[name]
    x, w, b, kwargs = make(*_inputs())
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        causal_conv1d(x, w, b, **kwargs)


def test_module_matches_padded_nn_conv1d(device):
    module = CausalConv1d(8, 12, 3, dilation=2, groups=4, device=device)
    conv = torch.nn.Conv1d(8, 12, 3, dilation=2, groups=4, device=device)
    conv.load_state_dict(module.state_dict())
    x = torch.randn(2, 8, 10, device=device)
    with gdm_engine.use_backend("triton"):
        y = module(x)
    assert testing.relative_error(y, conv(F.pad(x, (4, 0)))) < TOL
    y.square().sum().backward()
    assert module.weight.grad is not None and module.bias.grad is not None


def test_module_gated_halves_channels_and_repr():
    module = CausalConv1d(4, 8, 2, dilation=3, bias=False, activation="gated")
    assert module(torch.randn(1, 4, 5)).shape == (1, 4, 5)
    assert repr(module) == ("CausalConv1d(4, 8, kernel_size=2, dilation=3, bias=False, "
                            "activation='gated')")


@pytest.mark.parametrize("form", ["dot", "direct"])
def test_weight_gradient_split_into_partial_sums(form, monkeypatch, device, generator):
    # On a GPU the weight-gradient reduction is cut into partial sums to fill the chip; force
    # that path here, where one program would otherwise do it all.
    from gdm_engine.kernels import _conv as kernels

    monkeypatch.setattr(kernels, "num_programs_target", lambda device: 1 << 12)
    channels = 16 if form == "dot" else 4
    case = _case(generator, device, 3, channels, channels, 70, 3, 2, 1, "gated")
    _assert_matches_reference(case, generator)


def assert_empty_shapes_work(op, x, w, b, generator):
    """Where there is nothing to sum (no positions, input or output channels), both backends
    give tanh of the bias alone, shaped (N, C_out, *positions), and its gradients: zero for x and
    the weight, the summed output gradient (through tanh) for the bias."""
    want = (torch.zeros(x.shape[0], w.shape[0], *x.shape[2:]) + b.view(-1, *[1] * (x.ndim - 2))
            .cpu()).tanh()
    for backend in ("reference", "triton"):
        inputs = [t.detach().requires_grad_() for t in (x, w, b)]
        with gdm_engine.use_backend(backend):
            y = op(*inputs, activation="tanh")
            dy = torch.randn(y.shape, generator=generator).to(y.device)
            dx, dw, db = torch.autograd.grad(y, inputs, dy)
        assert y.shape == want.shape and torch.allclose(y.cpu(), want), backend
        assert torch.equal(dx, torch.zeros_like(x)) and torch.equal(dw, torch.zeros_like(w))
        dims = [0, *range(2, x.ndim)]
        assert torch.allclose(db, (dy * (1 - y.square())).sum(dims), atol=1e-6), backend


def assert_relu_keeps_nan(op, case):
    """ReLU of a NaN pre-activation (a NaN bias at channel 1) is NaN on both backends, as with
    torch.relu (tl.maximum would give 0), and the gradients, which pass through it as
    torch.relu's do, agree."""
    x, w, b = case.args[:3]
    b = b.clone()
    b[1] = float("nan")
    outs = {}
    for backend in ("reference", "triton"):
        inputs = [t.detach().requires_grad_() for t in (x, w, b)]
        with gdm_engine.use_backend(backend):
            y = op(*inputs, **case.kwargs)
            grads = torch.autograd.grad(y, inputs[:2], torch.ones_like(y))
        outs[backend] = y, grads
    (y, grads), (want, wanted) = outs["triton"], outs["reference"]
    assert torch.isnan(y[:, 1]).all() and torch.equal(torch.isnan(y), torch.isnan(want))
    finite = ~torch.isnan(want)
    assert testing.relative_error(y[finite], want[finite]) < TOL
    for got, expected in zip(grads, wanted):
        assert testing.relative_error(got, expected) < TOL


@pytest.mark.parametrize("x_shape, w_shape", [
    ((2, 3, 0), (4, 3, 2)),  # no positions
    ((2, 0, 5), (4, 0, 3)),  # no input channels
    ((2, 3, 5), (0, 3, 2)),  # no output channels
])
def test_empty_shapes_on_both_backends(x_shape, w_shape, device, generator):
    x, w = (torch.randn(s, generator=generator).to(device) for s in (x_shape, w_shape))
    b = torch.randn(w_shape[0], generator=generator).to(device)
    assert_empty_shapes_work(causal_conv1d, x, w, b, generator)


@pytest.mark.parametrize("form", ["direct", "dot"])
def test_relu_keeps_nan(form, device, generator):
    channels = 16 if form == "dot" else 4
    assert_relu_keeps_nan(causal_conv1d,
                          _case(generator, device, 2, channels, channels, 9, 3, 2, 1, "relu"))


def test_the_backward_pass_launches_only_kernels(device, generator):
    # the weight gradient's partial sums (several here, as on a GPU) are added by a kernel too
    x, w, b = (t.requires_grad_() for t in _case(generator, device, 2, 4, 8, 300, 3, 2, 2,
                                                  "tanh").args)
    y, forward = testing.device_ops(causal_conv1d, x, w, b, groups=2, activation="tanh")
    _, backward = testing.device_ops(torch.autograd.grad, y, [x, w, b], torch.ones_like(y))
    assert forward.count == backward.count == 0
    # forward; the activation's gradient, dx, the weight gradient's partial sums, and the sums
    # of the weight's and the bias's partials (kernels/_reduce.py)
    assert len(forward.launches) == 1 and len(backward.launches) == 5
    assert all(launch.args[3] > 1 for launch in backward.launches[-2:])  # splits added up


def test_long_kernels_keep_tiles_that_fit():
    # The direct kernels unroll their taps, each with its own x tile, and the weight gradient's
    # holds a (channel, tap, time) accumulator: long kernels keep narrower tiles, which build
    # without spills (`gdm-engine compile` builds those of the catalog's K = 7 and 9).
    from gdm_engine.kernels import _conv as kernels

    def fitting(configs, fits, **args):
        return [config for config in configs if fits(config, args)]

    for k in range(1, 65):
        assert fitting(kernels._WGRAD_DIRECT_CONFIGS, kernels._weight_grad_direct_fits,
                       K_POW2=triton.next_power_of_2(k)), k
        for activation, longest in ((kernels.NONE, 32), (kernels.GATED, 16)):
            kept = fitting(kernels._DIRECT_CONFIGS, kernels._direct_fits, K=k,
                           ACTIVATION=activation)
            assert bool(kept) == (k <= longest), (k, activation)
    # WaveNet's and Mamba's kernels keep the four wide tiles and none that loads narrow vectors
    short = fitting(kernels._DIRECT_CONFIGS, kernels._direct_fits, K=4, ACTIVATION=kernels.NONE)
    assert short[:4] == kernels._DIRECT_CONFIGS[:4]
    assert all(kernels._direct_values(c, {"ACTIVATION": kernels.NONE}) >= 8 for c in short)


def test_short_lengths_share_one_autotuning_key():
    # a naive WaveNet sampler grows its length by one a step: within a kernel's longest time
    # tile every length costs each configuration one tile, so all share one key (one tuning)
    from gdm_engine.kernels import _conv

    for floor in (_conv._DOT_TILE_T, _conv._DIRECT_TILE_T, _conv._WGRAD_TILE_T):
        assert {_conv._bucket(length, floor) for length in range(1, floor + 1)} == {floor}
        assert _conv._bucket(floor + 1, floor) == 2 * floor
