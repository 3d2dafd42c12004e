"""rq_spline beyond the catalog's generic checks: the formulas of Durkan et al. (2019) on a spline
worked by hand, the properties of a monotonic spline with identity tails, inverse and
log-derivative through the kernel, ±B and extreme inputs, empty input, broadcast parameters,
nflows as a peer, and bad input."""

import math

import pytest
import torch

import gdm_engine
from gdm_engine import catalog, reference, testing
from gdm_engine.ops import rq_spline
from gdm_engine.ops.rq_spline import MAX_KERNEL_BINS

SPEC = catalog.CATALOG["rq_spline"]
TOL = SPEC.tolerance[torch.float32]
BACKENDS = ["reference", "triton"]


def _params(generator, device, shape, K, scale=0.5, dtype=torch.float32):
    """Random unnormalised widths, heights and derivatives for elements of `shape`."""
    def draw(*s):
        return (scale * torch.randn(*s, generator=generator)).to(device=device, dtype=dtype)

    return draw(*shape, K), draw(*shape, K), draw(*shape, K - 1)


def _shared(params, n):
    """One element's parameters broadcast (expanded, stride 0) to n elements."""
    return [p[0].expand(n, p.shape[-1]) for p in params]


def _run(backend, *args, **kwargs):
    with gdm_engine.use_backend(backend):
        return rq_spline(*args, **kwargs)


def _float64(*tensors):
    return [t.double() for t in tensors]


# --------------------------------------------------------------------------------------------------
# the definition
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_eq_4_and_6_on_a_spline_worked_by_hand(backend, device):
    # K = 2, zero parameters: two bins of width and height B (shares 1/2), knots -B, 0, B, slope
    # s = 1, inner derivative d = 1e-3 + log 2. At x = B/2 (bin 1, xi = 1/2), eqs. (4) and (6):
    #   y      = 0 + B (s/4 + d/4) / (s + (1 + d - 2 s) / 4)
    #   dy/dx  = s² (1/4 + 2 s/4 + d/4) / (s + (1 + d - 2 s) / 4)²
    # and at x = -B/4 (bin 0, xi = 3/4, left derivative d_0 = 1, right d_1 = d):
    #   y      = -B + B (9/16 s + 3/16) / (s + (d + 1 - 2 s) 3/16)
    #   dy/dx  = s² (9/16 d + 2 s 3/16 + 1/16) / (s + (d + 1 - 2 s) 3/16)²
    B, d = 2.5, 1e-3 + math.log(2.0)
    x = torch.tensor([B / 2, -B / 4], device=device)
    zeros2, zeros1 = torch.zeros(2, 2, device=device), torch.zeros(2, 1, device=device)
    y, lad = _run(backend, x, zeros2, zeros2, zeros1, tail_bound=B)
    den1 = 1 + (d - 1) / 4
    den0 = 1 + (d - 1) * 3 / 16
    want_y = [B * (1 + d) / 4 / den1, -B + B * (9 / 16 + 3 / 16) / den0]
    want_lad = [math.log((3 / 4 + d / 4) / den1**2),
                math.log((9 / 16 * d + 6 / 16 + 1 / 16) / den0**2)]
    assert torch.allclose(y.double().cpu(), torch.tensor(want_y, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(lad.double().cpu(), torch.tensor(want_lad, dtype=torch.float64),
                          atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_monotone_identity_outside_and_pinned_at_the_bounds(backend, device, generator):
    B, K, n = 2.0, 7, 301
    params = _shared(_params(generator, device, (1,), K, scale=1.0), n)
    x = torch.cat([torch.linspace(-1.5 * B, 1.5 * B, n - 2, device=device) + 1e-3,
                   torch.tensor([-B, B], device=device)]).sort().values
    assert x.unique().numel() == n
    y, lad = _run(backend, x, *params, tail_bound=B)
    assert (y[1:] > y[:-1]).all(), "the spline must be strictly increasing"
    outside = x.abs() > B
    assert torch.equal(y[outside], x[outside]) and torch.equal(lad[outside],
                                                               torch.zeros_like(lad[outside]))
    at_bounds = x.abs() == B
    assert at_bounds.sum() == 2 and torch.equal(y[at_bounds], x[at_bounds])
    assert lad[at_bounds].abs().max() < 1e-6  # the boundary derivatives are exactly 1


def _knots(widths, B):
    """The inner knots x_1 .. x_{K-1} of one element, as the reference places them."""
    share = 1e-3 + (1 - 1e-3 * widths.shape[-1]) * torch.softmax(widths.double(), -1)
    return (2 * B * torch.cumsum(share, -1) - B)[:-1]


@pytest.mark.parametrize("reverse", [False, True])
def test_value_and_derivative_are_continuous_at_every_knot(reverse, device, generator):
    B, K = 3.0, 6
    params = _float64(*_params(generator, device, (1,), K, scale=1.0))
    knots = _knots(params[1 if reverse else 0][0], B)  # the inverse's knots are the y knots
    knots = torch.cat([knots, torch.tensor([-B, B], dtype=torch.float64, device=device)])
    h = 1e-9
    x = torch.stack([knots - h, knots, knots + h], -1).flatten()
    y, lad = reference.rq_spline(x, *_shared(params, x.numel()), B, reverse)
    y, lad = y.view(-1, 3), lad.view(-1, 3)
    # left and right limits agree with the value at the knot to O(h): C¹ at the knots (and at
    # ±B, where the spline meets the identity tails with derivative 1)
    slope = lad.exp()
    assert torch.allclose(y[:, 0] + h * slope[:, 1], y[:, 1], atol=1e-10)
    assert torch.allclose(y[:, 1] + h * slope[:, 1], y[:, 2], atol=1e-10)
    assert torch.allclose(lad[:, 0], lad[:, 1], atol=1e-4)
    assert torch.allclose(lad[:, 2], lad[:, 1], atol=1e-4)


# --------------------------------------------------------------------------------------------------
# the kernel: inverse, log-derivative, gradients at ±B
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [2, 5, 8])
def test_inverse_undoes_forward_through_the_kernel(K, device, generator):
    B = 4.0
    x = (torch.rand(3, 37, generator=generator) * 2 - 1).to(device) * 1.2 * B
    params = _params(generator, device, (3, 37), K)
    y, lad = _run("triton", x, *params, tail_bound=B)
    back, lad_back = _run("triton", y, *params, tail_bound=B, reverse=True)
    assert (back - x).abs().max() < 2e-5 * B
    assert (lad + lad_back).abs().max() < 1e-4
    assert not torch.equal(y, x)  # the spline moved the inside points


@pytest.mark.parametrize("reverse", [False, True])
def test_logabsdet_is_the_log_of_the_autograd_derivative(reverse, device, generator):
    # The Jacobian is diagonal: the gradient of sum(y) is dy/dx elementwise, and on a small input
    # the full autograd Jacobian has that diagonal and nothing else (slogdet = sum of logabsdet).
    B, K = 3.0, 8
    x = ((torch.rand(12, generator=generator) * 2 - 1) * 1.2 * B).to(device)
    params = _params(generator, device, (12,), K)
    x_grad = x.clone().requires_grad_()
    y, lad = _run("triton", x_grad, *params, tail_bound=B, reverse=reverse)
    (dydx,) = torch.autograd.grad(y.sum(), x_grad)
    assert torch.allclose(dydx.log(), lad, atol=2e-5)
    x64, params64 = x.double(), _float64(*params)
    jacobian = torch.autograd.functional.jacobian(
        lambda t: reference.rq_spline(t, *params64, B, reverse)[0], x64)
    _, lad64 = reference.rq_spline(x64, *params64, B, reverse)
    assert torch.equal(jacobian, torch.diag(torch.diagonal(jacobian)))
    assert torch.allclose(torch.linalg.slogdet(jacobian).logabsdet, lad64.sum())
    assert testing.relative_error(lad, lad64) < TOL


@pytest.mark.parametrize("reverse", [False, True])
def test_inputs_at_the_bounds_have_exact_values_and_no_parameter_gradient(reverse, device,
                                                                         generator):
    # y(±B) = ±B whatever the parameters, so their gradients vanish there; dx is the derivative
    # from inside the interval.
    B, K, n = 1.5, 8, 6
    x = torch.tensor([-B, B] * (n // 2), device=device)
    params = _params(generator, device, (n,), K, scale=1.0)
    args = [t.clone().requires_grad_() for t in (x, *params)]
    y, lad = _run("triton", *args, tail_bound=B, reverse=reverse)
    grads = torch.autograd.grad((y, lad), args, (torch.ones_like(y), torch.ones_like(lad)))
    assert torch.equal(y, x) and lad.abs().max() < 1e-6
    assert all(g.abs().max() < 1e-5 for g in grads[1:])
    ref_args = [t.detach().double().requires_grad_() for t in (x, *params)]
    ref = reference.rq_spline(*ref_args, B, reverse)
    (want,) = torch.autograd.grad(ref, ref_args[:1], (torch.ones_like(ref[0]),) * 2)
    assert testing.relative_error(grads[0], want) < TOL


def _extreme_case(device):
    """Inputs far outside, at ±B and inside, with parameters of ±1e4 in every pattern: one bin
    taking the whole interval and the rest at their minimum width, derivatives at their 1e-3
    floor or at 1e4."""
    B, K = 3.0, 5
    x = torch.tensor([-1e4, -B, -2.9, -1.0, 0.0, 0.5, 2.999, B, 1e4, 7.0] * 3, device=device)
    n = x.numel()
    big = torch.tensor([1e4, -1e4], device=device)

    def pattern(seed, k):
        return big[torch.randint(0, 2, (n, k), generator=torch.Generator().manual_seed(seed))]

    return B, (x, pattern(0, K), pattern(1, K), pattern(2, K - 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("reverse", [False, True])
def test_extreme_inputs_and_parameters_stay_finite(backend, dtype, reverse, device):
    B, inputs = _extreme_case(device)
    args = [t.to(dtype).requires_grad_() for t in inputs]
    y, lad = _run(backend, *args, tail_bound=B, reverse=reverse)
    grads = torch.autograd.grad((y, lad), args, (torch.ones_like(y), torch.ones_like(lad)))
    assert torch.isfinite(y).all() and torch.isfinite(lad).all()
    assert not any(torch.isnan(g).any() for g in grads)
    # every gradient is finite, but where its true value is beyond float16's range (6.5e4): then
    # float16 holds inf (dx reaches 3e6 here: a bin 1e-3 of the interval wide, rising by nearly
    # all of it)
    exact = [t.detach().double().requires_grad_() for t in args]
    ref = reference.rq_spline(*exact, B, reverse)
    want = torch.autograd.grad(ref, exact, (torch.ones_like(ref[0]),) * 2)
    for g, w in zip(grads, want):
        representable = w.abs() < torch.finfo(dtype).max
        assert torch.isfinite(g[representable]).all()
    x = args[0].detach()
    far = x.abs() > B
    assert torch.equal(y[far], x[far]) and torch.equal(grads[0][far], torch.ones_like(y[far]))
    assert (y[~far].abs() <= B).all()
    if dtype == torch.float32:  # and accurate: the kernel and the fp32 reference
        assert testing.relative_error(y, ref[0]) < TOL
        assert testing.relative_error(lad, ref[1]) < 1e-4
        assert testing.relative_error(grads[0], want[0]) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_input(backend, device):
    for shape in [(0,), (4, 0, 3)]:
        x = torch.zeros(shape, device=device, requires_grad=True)
        params = [torch.zeros(*shape, k, device=device, requires_grad=True) for k in (4, 4, 3)]
        y, lad = _run(backend, x, *params)
        (y.sum() + lad.sum()).backward()
        assert y.shape == lad.shape == shape and x.grad.shape == shape
        assert params[0].grad.shape == (*shape, 4) and params[2].grad.shape == (*shape, 3)


def test_broadcast_parameters_and_any_shape(device, generator):
    # One spline shared by every element of a (2, 3, 5) input: expanded (stride-0) parameters,
    # as a layer with per-feature parameters passes them. Gradients sum over the expansion.
    B, K = 3.0, 4
    x = ((torch.rand(2, 3, 5, generator=generator) * 2 - 1) * 1.2 * B).to(device)
    one = [p.requires_grad_() for p in _params(generator, device, (5,), K)]
    params = [p.expand(2, 3, 5, p.shape[-1]) for p in one]
    y, lad = _run("triton", x, *params, tail_bound=B)
    grads = torch.autograd.grad((y.sum() + lad.sum()), one)
    ref_one = [p.detach().double().requires_grad_() for p in one]
    ref = reference.rq_spline(x.double(), *[p.expand(2, 3, 5, p.shape[-1]) for p in ref_one], B)
    want = torch.autograd.grad(ref[0].sum() + ref[1].sum(), ref_one)
    assert y.shape == lad.shape == (2, 3, 5)
    assert testing.relative_error(y, ref[0]) < TOL and testing.relative_error(lad, ref[1]) < TOL
    assert all(testing.relative_error(g, w) < TOL for g, w in zip(grads, want))


@pytest.mark.parametrize("reverse", [False, True])
def test_reference_gradcheck_in_float64(reverse, device, generator):
    B, K = 2.0, 8
    x = ((torch.rand(9, generator=generator) * 2 - 1) * 1.2 * B).to(device).double()
    params = _float64(*_params(generator, device, (9,), K, scale=1.0))
    inputs = [t.requires_grad_() for t in (x, *params)]
    assert torch.autograd.gradcheck(lambda *a: reference.rq_spline(*a, B, reverse), inputs)


# --------------------------------------------------------------------------------------------------
# nflows, the peer
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
def test_agrees_with_nflows(reverse, device, generator):
    splines = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    B, K = 3.0, 8
    x = ((torch.rand(4, 25, generator=generator) * 2 - 1) * 1.3 * B).to(device)
    params = _params(generator, device, (4, 25), K)

    def nflows(*a):
        return splines.unconstrained_rational_quadratic_spline(
            *a, inverse=reverse, tails="linear", tail_bound=B)

    # float64: the same function (nflows' boundary derivatives are 1 up to rounding)
    want = nflows(*_float64(x, *params))
    got = reference.rq_spline(*_float64(x, *params), B, reverse)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-10)
    # fp32: the kernel against nflows in fp32
    theirs = nflows(x, *params)
    ours = _run("triton", x, *params, tail_bound=B, reverse=reverse)
    for g, w in zip(ours, theirs):
        assert testing.relative_error(g, w) < TOL


@pytest.mark.parametrize("reverse", [False, True])
def test_box_with_learned_ends_is_nflows_tails_none_spline(reverse, device, generator):
    # nflows' rational_quadratic_spline on an asymmetric box with all K + 1 derivatives learned:
    # the reference (float64) against nflows itself, the kernel against the reference with
    # the gradients of every input (K = 8 fills the tile: the last knot read alone)
    splines = pytest.importorskip("nflows.transforms.splines.rational_quadratic")
    K, box = 8, (-1.0, 2.0, 0.5, 1.5)
    low, high = box[2:] if reverse else box[:2]
    x = (low + (high - low) * torch.rand(40, generator=generator)).to(device)
    x[:2] = torch.tensor([low, high])
    widths, heights, _ = _params(generator, device, (40,), K, scale=1.0)
    derivatives = torch.randn(40, K + 1, generator=generator).to(device)
    params = (widths, heights, derivatives)
    left, right, bottom, top = box
    want = splines.rational_quadratic_spline(*_float64(x, *params), inverse=reverse, left=left,
                                             right=right, bottom=bottom, top=top)
    got = reference.rq_spline(*_float64(x, *params), reverse=reverse, box=box)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-10)
    args = [t.requires_grad_() for t in (x, *params)]
    ours = _run("triton", *args, box=box, reverse=reverse)
    exact = [t.detach().double().requires_grad_() for t in args]
    ref = reference.rq_spline(*exact, reverse=reverse, box=box)
    for g, w in zip(ours, ref):
        assert testing.relative_error(g, w) < TOL
    # A height bin of 1e-2 mapped onto a wide, curved width bin makes the inverse's gradients
    # ill-conditioned in fp32 (y - y_k cancels; the log-det's gradient divides by the slope
    # squared): there the reference itself, run in fp32, is as far from float64 as the kernel
    # (GDM_TEST_SEED=241, one seed in 400: both 5e-4). The kernel is held to TOL or to twice
    # that fp32 error.
    plain = [t.detach().requires_grad_() for t in args]
    fp32 = reference.rq_spline(*plain, reverse=reverse, box=box)
    ones = (torch.ones_like(ours[0]),) * 2
    grads = [torch.autograd.grad(outputs, inputs, ones)
             for outputs, inputs in ((ours, args), (ref, exact), (fp32, plain))]
    for g, w, plain_g in zip(*grads):
        assert testing.relative_error(g, w) < max(TOL, 2 * testing.relative_error(plain_g, w))


@pytest.mark.parametrize("reverse", [False, True])
def test_zuko_parameterisation_is_zukos_spline(reverse, device, generator):
    # the reference (float64) against zuko's MonotonicRQSTransform itself, and the kernel
    # against the reference, with the gradients of every input
    transforms = pytest.importorskip("zuko.transforms")
    B, K, slope = 4.0, 7, 0.01
    x = ((torch.rand(31, generator=generator) * 2 - 1) * 1.3 * B).to(device)
    params = _params(generator, device, (31,), K, scale=2.0)
    spline = transforms.MonotonicRQSTransform(*_float64(*params), bound=B, slope=slope)
    want = spline.inv.call_and_ladj(x.double()) if reverse else spline.call_and_ladj(x.double())
    form = {"parameterisation": "zuko", "slope": slope}
    got = reference.rq_spline(*_float64(x, *params), B, reverse, **form)
    for g, w in zip(got, want):
        assert testing.relative_error(g, w) < 1e-9
    args = [t.requires_grad_() for t in (x, *params)]
    ours = _run("triton", *args, tail_bound=B, reverse=reverse, **form)
    exact = [t.detach().double().requires_grad_() for t in args]
    ref = reference.rq_spline(*exact, B, reverse, **form)
    for g, w in zip(ours, ref):
        assert testing.relative_error(g, w) < TOL
    ones = (torch.ones_like(ours[0]),) * 2
    for g, w in zip(torch.autograd.grad(ours, args, ones), torch.autograd.grad(ref, exact, ones)):
        assert testing.relative_error(g, w) < TOL


# --------------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------------


def _good():
    return (torch.randn(2, 3), torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 3))


BAD_INPUTS = {
    "x type": (lambda x, w, h, d: (x.tolist(), w, h, d), {}, TypeError, "x must be a torch"),
    "integer x": (lambda x, w, h, d: (x.long(), w, h, d), {}, TypeError, "x must be float32"),
    "widths type": (lambda x, w, h, d: (x, None, h, d), {}, TypeError, "widths must be a torch"),
    "widths rank": (lambda x, w, h, d: (x, w[0], h, d), {}, ValueError, "widths must have shape"),
    "widths batch shape": (lambda x, w, h, d: (x, w[:1], h, d), {}, ValueError,
                           "widths must have shape"),
    "one bin": (lambda x, w, h, d: (x, w[..., :1], h[..., :1], d[..., :0]), {}, ValueError,
                "widths must have K >= 2"),
    "widths dtype": (lambda x, w, h, d: (x, w.double(), h, d), {}, TypeError, "widths has dtype"),
    "widths device": (lambda x, w, h, d: (x, w.to("meta"), h, d), {}, ValueError,
                      "widths is on meta"),
    "heights shape": (lambda x, w, h, d: (x, w, h[..., :3], d), {}, ValueError,
                      "heights must have the shape of widths"),
    "heights dtype": (lambda x, w, h, d: (x, w, h.half(), d), {}, TypeError, "heights has dtype"),
    "derivatives shape": (lambda x, w, h, d: (x, w, h, d[..., :2]), {}, ValueError,
                          "derivatives must have shape"),
    "derivatives K": (lambda x, w, h, d: (x, w, h, torch.randn(2, 3, 4)), {}, ValueError,
                      "derivatives must have shape"),
    "derivatives dtype": (lambda x, w, h, d: (x, w, h, d.bfloat16()), {}, TypeError,
                          "derivatives has dtype"),
    "tail_bound zero": (lambda *a: a, {"tail_bound": 0.0}, ValueError, "tail_bound must be a"),
    "tail_bound negative": (lambda *a: a, {"tail_bound": -1}, ValueError, "tail_bound must be a"),
    "tail_bound inf": (lambda *a: a, {"tail_bound": math.inf}, ValueError, "tail_bound must be"),
    "tail_bound nan": (lambda *a: a, {"tail_bound": math.nan}, ValueError, "tail_bound must be"),
    "tail_bound type": (lambda *a: a, {"tail_bound": "3"}, TypeError, "tail_bound must be a"),
    "reverse type": (lambda *a: a, {"reverse": 1}, TypeError, "reverse must be a bool"),
    "box and tail_bound": (lambda *a: a, {"box": (0, 1, 0, 1), "tail_bound": 3.0}, ValueError,
                           "give tail_bound or box, not both"),
    "box length": (lambda *a: a, {"box": (0, 1, 0)}, TypeError, "box must be a tuple"),
    "box type": (lambda *a: a, {"box": "0 1 0 1"}, TypeError, "box must be a tuple"),
    "box number": (lambda *a: a, {"box": (0, 1, None, 1)}, TypeError, "box must hold four"),
    "box empty": (lambda *a: a, {"box": (1.0, 1.0, 0, 1)}, ValueError, "left < right"),
    "box upside down": (lambda *a: a, {"box": (0, 1, 2.0, 1.0)}, ValueError, "bottom < top"),
    "box inf": (lambda *a: a, {"box": (0, math.inf, 0, 1)}, ValueError, "must be finite"),
    "parameterisation name": (lambda *a: a, {"parameterisation": "nsf"}, ValueError,
                              "parameterisation must be one of"),
    "parameterisation type": (lambda *a: a, {"parameterisation": 1}, TypeError,
                              "parameterisation must be a str"),
    "slope with nflows": (lambda *a: a, {"slope": 0.1}, ValueError, "slope applies to"),
    "minimum with zuko": (lambda *a: a, {"parameterisation": "zuko", "min_derivative": 0.1},
                          ValueError, "min_derivative applies to"),
    "slope one": (lambda *a: a, {"parameterisation": "zuko", "slope": 1.0}, ValueError,
                  "slope must be in"),
    "slope type": (lambda *a: a, {"parameterisation": "zuko", "slope": "0.1"}, TypeError,
                   "slope must be a number"),
    "min_bin_width * K > 1": (lambda *a: a, {"min_bin_width": 0.3}, ValueError,
                              "min_bin_width must be in"),
    "min_bin_height negative": (lambda *a: a, {"min_bin_height": -0.1}, ValueError,
                                "min_bin_height must be in"),
    "min_derivative nan": (lambda *a: a, {"min_derivative": float("nan")}, ValueError,
                           "min_derivative must be in"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(name):
    make, kwargs, error, message = BAD_INPUTS[name]
    with pytest.raises(error, match=message):
        rq_spline(*make(*_good()), **kwargs)


def test_too_many_bins_for_the_kernel_raises_naming_widths():
    K = MAX_KERNEL_BINS + 1
    x, w, d = torch.randn(3), torch.randn(3, K), torch.randn(3, K - 1)
    with gdm_engine.use_backend("triton"), pytest.raises(ValueError, match="widths has K"):
        rq_spline(x, w, w, d)
    y, _ = _run("reference", x, w, w, d)  # the reference takes any K
    assert torch.isfinite(y).all()
