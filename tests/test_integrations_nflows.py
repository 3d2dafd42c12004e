"""gdm_engine.integrations.nflows against nflows (and normflows where installed): the spline
functions over bins, bounds, minimum values, inputs inside, outside and at the interval's edges,
both directions, dtypes and backends, with gradients; a coupling flow's log_prob, gradients and
samples under patch(); the fallbacks; no read-backs and only the op's kernel per call."""

import pytest
import torch

import gdm_engine
from gdm_engine import testing

pytest.importorskip("nflows")
from nflows.transforms.splines import rational_quadratic as upstream  # noqa: E402

from gdm_engine.integrations import nflows as fast  # noqa: E402

BACKENDS = ["reference", "triton"]
TOLERANCE = {torch.float16: 3e-3, torch.bfloat16: 2e-2}


def _case(generator, shape, K, bound, dtype=torch.float64):
    x = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * 1.3 * bound
    x.view(-1)[:3] = torch.tensor([-bound, bound, 0.0])
    params = [torch.randn(*shape, k, generator=generator, dtype=torch.float64)
              for k in (K, K, K - 1)]
    return [t.to(dtype) for t in (x, *params)]


def _box_case(generator, shape, K, box, inverse):
    """Inputs on the input's side of the box (its two ends among them) and K + 1 derivatives,
    float64. Parameters N(0, 0.5²), as the catalog's: with N(0, 1) an inverse next to a knot
    between a flat and a steep bin of the (3 x 1) box amplifies fp32's rounding of the knots
    past 1e-4 in the gradients (1.1e-4 seen), in any fp32 implementation."""
    low, high = box[2:] if inverse else box[:2]
    x = low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)
    x.view(-1)[:2] = torch.tensor([low, high])
    params = [0.5 * torch.randn(*shape, k, generator=generator, dtype=torch.float64)
              for k in (K, K, K + 1)]
    return [x, *params]


def _grads(outputs, inputs):
    weights = [torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).view(o.shape) for o in outputs]
    return torch.autograd.grad(outputs, inputs, weights)


@pytest.mark.parametrize("K,bound,mins", [(2, 1.0, {}), (5, 3.0, {}), (8, 5.0, {}),
                                          (4, 2.0, {"min_bin_width": 0.1,
                                                    "min_bin_height": 0.05,
                                                    "min_derivative": 0.3})])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_unconstrained_spline_equals_nflows(K, bound, mins, inverse, backend, generator):
    truth_args = [t.requires_grad_() for t in _case(generator, (3, 11), K, bound)]
    args = [t.detach().float().requires_grad_() for t in truth_args]
    want = upstream.unconstrained_rational_quadratic_spline(
        *truth_args, inverse=inverse, tails="linear", tail_bound=bound, **mins)
    with gdm_engine.use_backend(backend):
        got = fast.unconstrained_rational_quadratic_spline(
            *args, inverse=inverse, tails="linear", tail_bound=bound, **mins)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == torch.float32
        assert testing.relative_error(g, w) < 1e-5
    for g, w in zip(_grads(got, args), _grads(want, truth_args)):
        assert testing.relative_error(g, w) < 1e-4


@pytest.mark.parametrize("K,box,mins", [(2, (0.0, 1.0, 0.0, 1.0), {}),
                                        (8, (-1.0, 2.0, 0.5, 1.5), {}),
                                        (5, (0.0, 1.0, 0.0, 1.0), {"min_bin_width": 0.1,
                                                                   "min_bin_height": 0.05,
                                                                   "min_derivative": 0.3})])
@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_spline_on_a_box_equals_nflows(K, box, mins, inverse, backend, generator):
    # nflows' tails=None spline: a box, every knot derivative learned
    truth_args = [t.requires_grad_() for t in _box_case(generator, (3, 11), K, box, inverse)]
    args = [t.detach().float().requires_grad_() for t in truth_args]
    left, right, bottom, top = box
    bounds = {"left": left, "right": right, "bottom": bottom, "top": top}
    # (nflows checks the inverse's y against [left, right] too: these boxes hold [bottom, top])
    want = upstream.rational_quadratic_spline(*truth_args, inverse=inverse, **bounds, **mins)
    with gdm_engine.use_backend(backend):
        got = fast.rational_quadratic_spline(*args, inverse=inverse, **bounds, **mins)
    for g, w in zip(got, want):
        assert g.shape == w.shape and g.dtype == torch.float32
        # the catalog's fp32 tolerance (the steep bins of the (3 x 1) box's inverse: 1.1e-5 seen)
        assert testing.relative_error(g, w) < 1e-4
    for g, w in zip(_grads(got, args), _grads(want, truth_args)):
        assert testing.relative_error(g, w) < 1e-4


@pytest.mark.parametrize("inverse", [False, True])
def test_inputs_outside_the_box_raise_as_in_nflows(inverse, generator):
    from nflows.transforms.base import InputOutsideDomain

    x = torch.tensor([0.2, 1.5])
    params = [torch.randn(2, k, generator=generator) for k in (4, 4, 5)]
    with pytest.raises(InputOutsideDomain):
        upstream.rational_quadratic_spline(x, *params, inverse=inverse)
    with pytest.raises(InputOutsideDomain):
        fast.rational_quadratic_spline(x, *params, inverse=inverse)
    # inside: no error; empty: nothing to check
    fast.rational_quadratic_spline(x.clamp(max=1.0), *params, inverse=inverse)
    fast.rational_quadratic_spline(x[:0], *[p[:0] for p in params], inverse=inverse)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precisions_match_nflows_to_their_tolerance(dtype, backend, generator):
    args = _case(generator, (41,), 8, 3.0)
    want = upstream.unconstrained_rational_quadratic_spline(*args, tail_bound=3.0)
    with gdm_engine.use_backend(backend):
        y, lad = fast.unconstrained_rational_quadratic_spline(*[t.to(dtype) for t in args],
                                                              tail_bound=3.0)
        back, _ = fast.unconstrained_rational_quadratic_spline(y, *[t.to(dtype) for t in args[1:]],
                                                               inverse=True, tail_bound=3.0)
    assert y.dtype == lad.dtype == dtype
    assert testing.relative_error(y, want[0]) < TOLERANCE[dtype]
    assert testing.relative_error(lad, want[1]) < 10 * TOLERANCE[dtype]
    # the inverse of the rounded y, against nflows' inverse of the same y (a round trip back to
    # x would measure how steep bins amplify y's rounding, not the op)
    want_back, _ = upstream.unconstrained_rational_quadratic_spline(
        y.double(), *[t.to(dtype).double() for t in args[1:]], inverse=True, tail_bound=3.0)
    assert testing.relative_error(back, want_back) < TOLERANCE[dtype]


def test_defaults_and_identity_tails_as_nflows(generator):
    # nflows' defaults: tail_bound=1, tails="linear"; outside [-1, 1] the identity, log-det 0
    x = torch.tensor([-5.0, -1.0, -0.3, 0.4, 1.0, 2.0])
    params = [torch.randn(6, k, generator=generator) for k in (4, 4, 3)]
    y, lad = fast.unconstrained_rational_quadratic_spline(x, *params)
    want_y, want_lad = upstream.unconstrained_rational_quadratic_spline(x, *params)
    assert torch.allclose(y, want_y, atol=1e-6) and torch.allclose(lad, want_lad, atol=1e-5)
    assert torch.equal(y[[0, 5]], x[[0, 5]]) and torch.equal(lad[[0, 5]], torch.zeros(2))


def test_what_the_op_cannot_express_falls_back_to_upstream(generator):
    x = torch.rand(7, generator=generator)
    params = [torch.randn(7, k, generator=generator) for k in (4, 4, 3)]
    with pytest.raises(RuntimeError, match="tails are not implemented"):  # as nflows
        fast.unconstrained_rational_quadratic_spline(x, *params, tails="quadratic")
    with pytest.raises(ValueError, match="min_bin_width"):  # K * minimum > 1
        fast.unconstrained_rational_quadratic_spline(x, *params, min_bin_width=0.3)
    # tensor bounds: upstream's own function, its very numbers
    all_derivatives = torch.randn(7, 5, generator=generator)
    want = upstream.rational_quadratic_spline(x, *params[:2], all_derivatives,
                                              right=torch.tensor(1.0))
    got = fast.rational_quadratic_spline(x, *params[:2], all_derivatives,
                                         right=torch.tensor(1.0))
    assert all(torch.equal(g, w) for g, w in zip(got, want))


def _coupling_flow(seed):
    from nflows import distributions, flows, nn as nflows_nn, transforms

    torch.manual_seed(seed)
    layers = []
    for i in range(2):
        mask = torch.tensor([1, 0, 1, 0]) if i % 2 == 0 else torch.tensor([0, 1, 0, 1])
        layers.append(transforms.PiecewiseRationalQuadraticCouplingTransform(
            mask, lambda c_in, c_out: nflows_nn.nets.ResidualNet(c_in, c_out, 16, num_blocks=1),
            num_bins=5, tails="linear", tail_bound=3.0))
        layers.append(transforms.MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
            4, 8, num_bins=4, tails="linear", tail_bound=2.5))
    return flows.Flow(transforms.CompositeTransform(layers), distributions.StandardNormal([4]))


def _flow_results(x):
    flow = _coupling_flow(0)
    log_prob = flow.log_prob(x)
    grads = torch.autograd.grad(log_prob.sum(), list(flow.parameters()))
    torch.manual_seed(1)
    return log_prob, grads, flow.sample(6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_flows_log_prob_gradients_and_samples_equal_under_patch(backend, generator):
    x = torch.randn(10, 4, generator=generator) * 1.5
    want_lp, want_grads, want_samples = _flow_results(x)
    calls = []
    op = fast.ops.rq_spline
    with gdm_engine.use_backend(backend), fast.patch():
        fast.ops.rq_spline = lambda *a, **k: calls.append(1) or op(*a, **k)
        try:
            lp, grads, samples = _flow_results(x)
        finally:
            fast.ops.rq_spline = op
    # every spline layer ran the op: 4 in log_prob; in sampling the 2 couplings and the 2 MADEs,
    # inverted in 4 passes each
    assert len(calls) == 4 + 2 + 2 * 4
    assert testing.relative_error(lp, want_lp) < 1e-5
    assert all(testing.relative_error(g, w) < 1e-4 for g, w in zip(grads, want_grads))
    assert testing.relative_error(samples, want_samples) < 1e-4
    # restored on exit
    from nflows.transforms import autoregressive, splines

    assert splines.unconstrained_rational_quadratic_spline is \
        upstream.unconstrained_rational_quadratic_spline
    assert autoregressive.unconstrained_rational_quadratic_spline is \
        upstream.unconstrained_rational_quadratic_spline
    assert splines.rational_quadratic_spline is upstream.rational_quadratic_spline


def _cdf_results(x, inverse):
    """nflows' tails=None transform (its rational_quadratic_spline on the unit box): outputs,
    log-det, and the gradients of both (weighted) for the input and the parameters."""
    from nflows import transforms

    torch.manual_seed(0)
    cdf = transforms.PiecewiseRationalQuadraticCDF([4], num_bins=6, tails=None)
    x = x.clone().requires_grad_()
    outputs = cdf.inverse(x) if inverse else cdf(x)
    return outputs, _grads(outputs, [x, *cdf.parameters()])


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_tails_none_transform_equals_nflows_under_patch(inverse, backend, generator):
    x = torch.rand(10, 4, generator=generator)
    x[0] = torch.tensor([0.0, 1.0, 0.5, 1.0])
    want, want_grads = _cdf_results(x, inverse)
    with gdm_engine.use_backend(backend), fast.patch():
        got, grads = _cdf_results(x, inverse)
    assert all(testing.relative_error(g, w) < 1e-5 for g, w in zip(got, want))
    assert all(testing.relative_error(g, w) < 1e-4 for g, w in zip(grads, want_grads))


def test_patch_covers_normflows_and_restores_after_an_exception(generator):
    normflows_splines = pytest.importorskip("normflows.utils.splines")
    original = normflows_splines.unconstrained_rational_quadratic_spline
    original_box = normflows_splines.rational_quadratic_spline
    args = _case(generator, (13,), 6, 2.0, dtype=torch.float32)
    want = original(*args, tail_bound=2.0)
    with pytest.raises(KeyError), fast.patch():
        assert normflows_splines.unconstrained_rational_quadratic_spline is not original
        got = normflows_splines.unconstrained_rational_quadratic_spline(*args, tail_bound=2.0)
        assert all(testing.relative_error(g, w) < 1e-5 for g, w in zip(got, want))
        # normflows' own tails: normflows' function around the fused tails=None spline
        circular_args = (*args[:3], torch.randn(13, 6, generator=generator))
        circular = normflows_splines.unconstrained_rational_quadratic_spline(
            *circular_args, tails="circular", tail_bound=2.0)
        want = original(*circular_args, tails="circular", tail_bound=2.0)
        assert all(testing.relative_error(g, w) < 1e-5 for g, w in zip(circular, want))
        assert normflows_splines.rational_quadratic_spline is not original_box
        raise KeyError
    assert normflows_splines.unconstrained_rational_quadratic_spline is original
    assert normflows_splines.rational_quadratic_spline is original_box


def test_a_call_reads_nothing_back_and_launches_only_the_spline_kernel(generator):
    args = _case(generator, (4, 9), 8, 3.0, dtype=torch.float32)
    with gdm_engine.use_backend("triton"), testing.no_read_backs():
        fast.unconstrained_rational_quadratic_spline(*args, tail_bound=3.0)
    for inverse in (False, True):
        _, counts = testing.device_ops(fast.unconstrained_rational_quadratic_spline, *args,
                                       inverse=inverse, tail_bound=3.0)
        assert counts.count == 0, dict(counts.ops)
        assert [launch.kernel.fn.__name__ for launch in counts.launches] == ["_forward_kernel"]
    box_args = [t.float() for t in _box_case(generator, (4, 9), 8, (0.0, 1.0, 0.0, 1.0), False)]
    _, counts = testing.device_ops(fast.rational_quadratic_spline, *box_args)
    assert counts.count == 0, dict(counts.ops)
    assert [launch.kernel.fn.__name__ for launch in counts.launches] == ["_forward_kernel"]
    # nflows itself reads back (its domain check and boolean masks): what the drop-in removes
    _, counts = testing.device_ops(upstream.unconstrained_rational_quadratic_spline, *args,
                                   tail_bound=3.0)
    assert counts.read_backs


def test_benchmark_pairs_run_and_agree():
    for name, case, theirs, ours in fast.benchmark_pairs("tiny"):
        assert all(testing.relative_error(g, w) < 1e-4 for g, w in zip(ours(), theirs())), name
    with pytest.raises(ValueError, match="size"):
        fast.benchmark_pairs("large")
