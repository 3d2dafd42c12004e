"""gdm_engine.integrations.zuko against zuko itself: the spline transform (forward, inverse,
log-derivatives, gradients, shapes) over bins, bounds, slopes, inputs inside, outside and at the
interval's edges, dtypes and both backends; an NSF's log_prob, gradients and samples with and
without the drop-in; no read-backs and only the op's kernel per call."""

import pytest
import torch

import gdm_engine
from gdm_engine import testing

zuko = pytest.importorskip("zuko")
from gdm_engine.integrations import zuko as fast  # noqa: E402

BACKENDS = ["reference", "triton"]
DTYPES = {torch.float32: 1e-4, torch.float16: 3e-3, torch.bfloat16: 2e-2}


def _case(generator, n, K, bound, scale=1.0, dtype=torch.float64):
    """Inputs on [-1.3 B, 1.3 B] with -B and 0 among them, and zuko-style parameters. Not +B:
    zuko's last knot is B (2 cumsum(softmax) - 1), which rounds to either side of B, so zuko
    takes x = B into the spline or the identity tail by the parameters' rounding (the same value
    and log-derivative, not the same gradient of it); test_identity_outside_and_at_the_bounds
    takes it."""
    x = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * 1.3 * bound
    x[:2] = torch.tensor([-bound, 0.0])
    params = [scale * torch.randn(n, k, generator=generator, dtype=torch.float64)
              for k in (K, K, K - 1)]
    return [t.to(dtype) for t in (x, *params)]


def _grads(outputs, inputs):
    weights = [torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).view(o.shape) for o in outputs]
    return torch.autograd.grad(outputs, inputs, weights, retain_graph=True)


def _transforms(args, bound, slope):
    x, *params = args
    return (zuko.transforms.MonotonicRQSTransform(*params, bound=bound, slope=slope),
            fast.MonotonicRQSTransform(*params, bound=bound, slope=slope))


@pytest.mark.parametrize("K,bound,slope", [(2, 5.0, 1e-3), (5, 1.5, 1e-3), (8, 3.0, 0.05),
                                           (13, 5.0, 1e-4)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_inverse_and_gradients_equal_zukos(K, bound, slope, backend, generator):
    # zuko in float64 is the truth; the drop-in in float32 against it, values and gradients of
    # the input and of every parameter
    truth_args = [t.requires_grad_() for t in _case(generator, 29, K, bound)]
    args = [t.detach().float().requires_grad_() for t in truth_args]
    theirs, ours = _transforms(truth_args, bound, slope)[0], _transforms(args, bound, slope)[1]
    with gdm_engine.use_backend(backend):
        for direction in ("forward", "inverse"):
            if direction == "forward":
                want, got = theirs.call_and_ladj(truth_args[0]), ours.call_and_ladj(args[0])
            else:
                want = theirs.inv.call_and_ladj(truth_args[0])
                got = ours.inv.call_and_ladj(args[0])
            # the inverse solves a quadratic per element in fp32: at slope 1e-4 its conditioning
            # costs a few ulps more than the forward's (CI seed 1747161412, K=13: 1.5e-5)
            tolerance = 1e-5 if direction == "forward" else 3e-5
            for g, w in zip(got, want):
                assert g.shape == w.shape and g.dtype == torch.float32
                assert testing.relative_error(g, w) < tolerance, direction
            for g, w in zip(_grads(got, args), _grads(want, truth_args)):
                assert testing.relative_error(g, w) < 1e-4, direction


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precisions_match_zuko_to_their_tolerance(dtype, backend, generator):
    args = _case(generator, 37, 8, 5.0, scale=0.5)
    theirs = _transforms(args, 5.0, 1e-3)[0]
    ours = _transforms([t.to(dtype) for t in args], 5.0, 1e-3)[1]
    with gdm_engine.use_backend(backend):
        y, ladj = ours.call_and_ladj(args[0].to(dtype))
        x_back = ours.inv(y)
    want_y, want_ladj = theirs.call_and_ladj(args[0])
    # the inverse of the rounded y against zuko's of the same y (float64 parameters rounded as
    # ours were): a round trip to x would measure how steep bins amplify y's rounding
    rounded = [t.to(dtype).double() for t in args[1:]]
    want_back = zuko.transforms.MonotonicRQSTransform(*rounded, bound=5.0).inv(y.double())
    assert y.dtype == ladj.dtype == dtype
    assert testing.relative_error(y, want_y) < DTYPES[dtype]
    assert testing.relative_error(ladj, want_ladj) < 10 * DTYPES[dtype]
    assert testing.relative_error(x_back, want_back) < DTYPES[dtype]


def test_identity_outside_and_at_the_bounds_as_zuko(generator):
    B = 2.0
    x = torch.tensor([-1e3, -2.5, -B, B, 2.5, 7.0])
    params = [torch.randn(6, k, generator=generator) for k in (6, 6, 5)]
    theirs, ours = _transforms([x, *params], B, 1e-3)
    with gdm_engine.use_backend("triton"):
        y, ladj = ours.call_and_ladj(x)
        back = ours.inv(x)
    assert torch.equal(y, x) and torch.equal(back, x)
    # zuko's last knot rounds to either side of B: at x = B it may take the last bin, whose
    # slope there is 1 up to that rounding (a log-derivative of ~1e-5 was seen)
    assert torch.allclose(ladj, theirs.call_and_ladj(x)[1], atol=1e-4)
    assert (ladj.abs() < 1e-6).all()


def test_broadcast_shapes_repr_and_knots_as_zuko(generator):
    # parameters (3, K) for x (4, 3): zuko broadcasts them; its knots and repr read the same
    K = 6
    params = [torch.randn(3, k, generator=generator) for k in (K, K, K - 1)]
    x = torch.randn(4, 3, generator=generator) * 3
    theirs, ours = _transforms([x, *params], 5.0, 1e-3)
    y, ladj = ours.call_and_ladj(x)
    want_y, want_ladj = theirs.call_and_ladj(x)
    assert y.shape == ladj.shape == want_y.shape == (4, 3)
    assert torch.allclose(y, want_y, atol=1e-5) and torch.allclose(ladj, want_ladj, atol=1e-4)
    assert repr(ours) == repr(theirs) == f"MonotonicRQSTransform(bins={K})"
    for name in ("horizontal", "vertical", "derivatives"):
        assert torch.allclose(getattr(ours, name), getattr(theirs, name), atol=1e-5), name
    assert torch.allclose(ours.log_abs_det_jacobian(x, y), want_ladj, atol=1e-4)


def test_ladj_reuses_the_call_and_is_not_fooled_by_in_place_changes(generator):
    args = _case(generator, 11, 5, 3.0, dtype=torch.float32)
    ours = _transforms(args, 3.0, 1e-3)[1]
    y = args[0]
    x = ours.inv(y)
    _, counts = testing.device_ops(ours.inv.log_abs_det_jacobian, y, x)
    assert not counts.launches  # the inverse's kernel computed it already
    want = -ours.call_and_ladj(x)[1]
    assert torch.allclose(ours.inv.log_abs_det_jacobian(y, x), want, atol=1e-5)
    assert torch.allclose(ours.log_abs_det_jacobian(x, y), -want, atol=1e-5)
    y2 = ours(x)
    _, counts = testing.device_ops(ours.log_abs_det_jacobian, x, y2)
    assert not counts.launches
    x.add_(0.1)  # in place: the remembered value no longer belongs to x
    assert torch.allclose(ours.log_abs_det_jacobian(x, y2), ours.call_and_ladj(x)[1])


def _nsf_results(cls, x, seed=0):
    torch.manual_seed(seed)
    flow = cls(3, context=2, bins=6, transforms=2, hidden_features=(16, 16))
    context = torch.linspace(-1, 1, 2 * x.shape[0]).view(x.shape[0], 2)
    log_prob = flow(context).log_prob(x)
    grads = torch.autograd.grad(log_prob.sum(), list(flow.parameters()))
    torch.manual_seed(seed + 1)
    samples = flow(context).sample()
    return flow, log_prob, grads, samples


@pytest.mark.parametrize("backend", BACKENDS)
def test_nsf_log_prob_gradients_and_samples_equal_zukos(backend, generator):
    x = torch.randn(9, 3, generator=generator) * 2
    _, want_lp, want_grads, want_samples = _nsf_results(zuko.flows.NSF, x)
    with gdm_engine.use_backend(backend):
        flow, lp, grads, samples = _nsf_results(fast.NSF, x)
    assert isinstance(flow, zuko.flows.NSF)
    assert testing.relative_error(lp, want_lp) < 1e-5
    assert all(testing.relative_error(g, w) < 1e-4 for g, w in zip(grads, want_grads))
    # sampling inverts the autoregressive transforms pass by pass (3 passes): the same draws
    assert testing.relative_error(samples, want_samples) < 1e-4
    # and the drop-in is what ran
    transform = flow(torch.zeros(2)).transform.transforms[0]
    assert isinstance(transform.meta(torch.zeros(3)).base, fast.MonotonicRQSTransform)


def test_accelerate_swaps_an_existing_flow_in_place():
    torch.manual_seed(0)
    flow = zuko.flows.NSF(2, bins=4, transforms=1)
    assert fast.accelerate(flow) is flow
    base = flow().transform.transforms[0].meta(torch.zeros(2)).base
    assert isinstance(base, fast.MonotonicRQSTransform) and base.slope == 1e-3


def test_a_call_reads_nothing_back_and_launches_only_the_spline_kernel(generator):
    args = _case(generator, 16, 8, 5.0, dtype=torch.float32)
    ours = _transforms(args, 5.0, 1e-3)[1]
    with gdm_engine.use_backend("triton"), testing.no_read_backs():
        ours.call_and_ladj(args[0])
        ours.inv.call_and_ladj(args[0])
    for call in (ours.call_and_ladj, ours.inv.call_and_ladj):
        _, counts = testing.device_ops(call, args[0])
        assert counts.count == 0, dict(counts.ops)
        assert [launch.kernel.fn.__name__ for launch in counts.launches] == ["_forward_kernel"]


def test_benchmark_pairs_run_and_agree():
    for name, case, upstream, dropin in fast.benchmark_pairs("tiny"):
        want, got = upstream(), dropin()
        want, got = (want if isinstance(want, tuple) else (want,)), (
            got if isinstance(got, tuple) else (got,))
        assert all(testing.relative_error(g, w) < 1e-4 for g, w in zip(got, want)), name
    with pytest.raises(ValueError, match="size"):
        fast.benchmark_pairs("huge")


def test_bad_slope_raises_naming_it():
    params = [torch.randn(2, k) for k in (4, 4, 3)]
    with pytest.raises(ValueError, match="slope"):
        fast.MonotonicRQSTransform(*params, slope=1.5).call_and_ladj(torch.zeros(2))
