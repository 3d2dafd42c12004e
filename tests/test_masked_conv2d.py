"""masked_conv2d beyond the catalog's generic checks: its masks and colour groups, causality in
raster order, the exact zero gradient of inactive taps, dilation, edge cases, bad input, and the
MaskedConv2d module."""

import pytest
import torch
import torch.nn.functional as F

import gdm_engine
from gdm_engine import catalog, testing
from gdm_engine.nn import MaskedConv2d
from gdm_engine.ops import masked_conv2d
from gdm_engine.reference.masked_conv2d import full_mask

from test_causal_conv1d import assert_empty_shapes_work, assert_relu_keeps_nan

SPEC = catalog.CATALOG["masked_conv2d"]
TOL = SPEC.tolerance[torch.float32]


def _case(generator, device, *shape, **kw):
    return catalog.masked_conv2d_case(*shape, dtype=torch.float32, device=device,
                                      generator=generator, **kw)


def test_masks_a_and_b_are_the_raster_order_masks():
    a = full_mask((1, 1, 3, 3), "A")[0, 0]
    b = full_mask((1, 1, 3, 3), "B")[0, 0]
    assert a.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
    assert b.tolist() == [[True, True, True], [True, True, False], [False, False, False]]
    assert int(full_mask((1, 1, 7, 7), "A").sum()) == 24


def test_colour_groups_connect_the_centre_to_earlier_groups():
    # R, G, B with one channel each: at the centre, "A" lets G see R and B see R, G; "B" adds
    # each group itself. Other active taps connect every group.
    centre_a = full_mask((3, 3, 3, 3), "A", color_groups=3)[:, :, 1, 1]
    centre_b = full_mask((3, 3, 3, 3), "B", color_groups=3)[:, :, 1, 1]
    assert torch.equal(centre_a, torch.ones(3, 3, dtype=torch.bool).tril(-1))
    assert torch.equal(centre_b, torch.ones(3, 3, dtype=torch.bool).tril())
    assert full_mask((3, 3, 3, 3), "A", color_groups=3)[:, :, 0, 2].all()
    # gated: each half (tanh, sigmoid) is split into the groups, so channel c and c + C/2 agree
    gated = full_mask((6, 3, 1, 1), "A", color_groups=3, gated=True)[:, :, 0, 0]
    assert torch.equal(gated[:3], gated[3:]) and torch.equal(gated[:3], centre_a)


@pytest.mark.parametrize("mask, groups", [("A", 3), ("B", 3), ("A", 1)])
def test_outputs_never_see_later_pixels_or_later_colours(mask, groups, device, generator):
    x, w, b, _ = _case(generator, device, 1, 3, 6, (4, 5), 3, mask, groups, 1, None).args
    x.requires_grad_()
    h, wpos = 2, 3
    with gdm_engine.use_backend("triton"):
        y = masked_conv2d(x, w, b, mask=mask, color_groups=groups)
    for out_channel in range(6):
        (grad,) = torch.autograd.grad(y[0, out_channel, h, wpos], x, retain_graph=True)
        later = torch.zeros(4, 5, dtype=torch.bool)
        later.view(-1)[h * 5 + wpos + 1:] = True
        assert not grad[0][:, later].any()  # nothing after the pixel in raster order
        group = out_channel // (6 // groups)
        sees_centre = grad[0, :, h, wpos] != 0
        allowed = torch.arange(3) // (3 // groups) < group + (mask == "B")
        assert not (sees_centre & ~allowed).any()
        assert grad[0][:, h - 1, wpos].abs().sum() > 0  # the pixel above is seen


def test_inactive_taps_get_exactly_zero_gradient(device, generator):
    case = _case(generator, device, 2, 3, 6, (5, 5), 5, "A", 3, 1, None)
    x, w, b, _ = case.args
    w.requires_grad_()
    with gdm_engine.use_backend("triton"):
        y = masked_conv2d(x, w, b, mask="A", color_groups=3)
    (grad,) = torch.autograd.grad(y.square().sum(), w)
    off = ~full_mask(w.shape, "A", 3)
    assert torch.count_nonzero(grad[off]) == 0 and grad[~off].abs().sum() > 0


@pytest.mark.parametrize("bias, residual", [(False, False), (True, False), (False, True)])
def test_reference_backend_gradients_without_bias_or_residual(bias, residual):
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True) if bias else None
    r = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True) if residual else None
    inputs = [t for t in (x, w, b, r) if t is not None]
    with gdm_engine.use_backend("reference"):
        got = torch.autograd.grad(masked_conv2d(x, w, b, r).square().sum(), inputs)
    want = torch.autograd.grad(gdm_engine.reference.masked_conv2d(x, w, b, r).square().sum(),
                               inputs)
    for g, wanted in zip(got, want):
        assert testing.relative_error(g, wanted) < 1e-12


def test_is_the_dilated_convolution_of_the_masked_weight(device, generator):
    x, w, b, _ = _case(generator, device, 2, 4, 8, (7, 6), 3, "B", 1, 3, None).args
    with gdm_engine.use_backend("triton"):
        y = masked_conv2d(x, w, b, dilation=3)
    m = full_mask(w.shape, "B").to(device)
    want = F.conv2d(x.double(), w.double() * m, b.double(), padding=3, dilation=3)
    assert testing.relative_error(y, want) < TOL


def test_a_mask_without_active_taps_gives_the_bias(device, generator):
    x, w, b, r = _case(generator, device, 2, 3, 4, (3, 4), 1, "A", 1, 1, None,
                       residual=True).args
    with gdm_engine.use_backend("triton"):
        y = masked_conv2d(x, w, b, r, mask="A")
    assert testing.relative_error(y, b[None, :, None, None] + r) < TOL


def test_empty_batch_and_float64(device, generator):
    x = torch.randn(0, 3, 4, 4, device=device, requires_grad=True)
    w = torch.randn(6, 3, 3, 3, device=device, requires_grad=True)
    with gdm_engine.use_backend("triton"):
        y = masked_conv2d(x, w, activation="gated")
        assert y.shape == (0, 3, 4, 4)
        y.sum().backward()
        assert torch.equal(w.grad, torch.zeros_like(w))
        x64, w64 = torch.randn(1, 2, 3, 3).double(), torch.randn(2, 2, 3, 3).double()
        assert torch.equal(masked_conv2d(x64, w64),
                           gdm_engine.reference.masked_conv2d(x64, w64))


def _inputs():
    return torch.randn(2, 6, 5, 5), torch.randn(6, 6, 3, 3), torch.randn(6)


BAD_INPUTS = {
    "even kernel": (lambda x, w, b: (x, w[..., :2, :2], {}), ValueError, "odd kernel sizes"),
    "mask shape": (lambda x, w, b: (x, w, {"mask": torch.ones(5, 5, dtype=torch.bool)}),
                   ValueError, "mask must have the kernel's shape (3, 3)"),
    "mask not bool": (lambda x, w, b: (x, w, {"mask": torch.ones(3, 3)}), TypeError,
                      "bool tensor"),
    "mask name": (lambda x, w, b: (x, w, {"mask": "C"}), ValueError, "mask must be one of"),
    "colour groups": (lambda x, w, b: (x, w, {"color_groups": 4}), ValueError,
                      "color_groups=4 must divide"),
    "gated groups": (lambda x, w, b: (x, w, {"color_groups": 2, "activation": "gated"}),
                     ValueError, "per gated half"),
    "channels": (lambda x, w, b: (x[:, :4], w, {}), ValueError, "weight must have shape"),
    "x rank": (lambda x, w, b: (x[0], w, {}), ValueError, "x must have 4 dimensions"),
    "dilation": (lambda x, w, b: (x, w, {"dilation": 0}), ValueError, "dilation must be >= 1"),
    "activation": (lambda x, w, b: (x, w, {"activation": "gelu"}), ValueError, "activation"),
    "residual shape": (lambda x, w, b: (x, w, {"residual": torch.zeros(2, 6, 4, 4)}),
                       ValueError, "residual must have the output's shape"),
    "prepared type": (lambda x, w, b: (x, w, {"prepared": full_mask(w.shape)}), TypeError,
                      "prepared must be the (mask, taps, channel_mask) of mask_and_taps"),
    "prepared shape": (lambda x, w, b: (x, w, {"prepared": (full_mask(w[:3].shape),
                                                            torch.zeros(1, 3, dtype=torch.int32),
                                                            False)}),
                       ValueError, "prepared mask must be bool and shaped like weight"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(name):
    make, error, message = BAD_INPUTS[name]
    x, w, kwargs = make(*_inputs())
    residual = kwargs.pop("residual", None)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        masked_conv2d(x, w, None, residual, **kwargs)


def test_module_matches_the_functional_op_and_keeps_a_custom_mask(device):
    vertical = torch.zeros(3, 3, dtype=torch.bool)
    vertical[:2] = True
    module = MaskedConv2d(4, 8, 3, mask=vertical, activation="gated", device=device)
    assert torch.equal(module.state_dict()["mask"], vertical)
    x, residual = torch.randn(2, 4, 5, 5, device=device), torch.randn(2, 4, 5, 5, device=device)
    with gdm_engine.use_backend("triton"):
        y = module(x, residual)
    want = gdm_engine.reference.masked_conv2d(x.double(), module.weight.double(),
                                              module.bias.double(), residual.double(),
                                              mask=vertical, activation="gated")
    assert testing.relative_error(y, want) < TOL
    y.square().sum().backward()
    assert module.weight.grad[:, :, 2].abs().sum() == 0  # the row below is not a tap
    assert repr(MaskedConv2d(3, 6, 7, mask="A", color_groups=3, bias=False)) == (
        "MaskedConv2d(3, 6, kernel_size=7, mask='A', color_groups=3, bias=False)")


def test_the_module_reads_nothing_back_and_launches_only_kernels(device):
    module = MaskedConv2d(3, 6, 3, mask="A", color_groups=3, activation="relu", device=device)
    x = torch.randn(2, 3, 5, 4, device=device, requires_grad=True)
    with gdm_engine.use_backend("triton"):
        module(x).sum().backward()  # warm-up: kernels built and tuned
        with testing.no_read_backs():
            module(x).square().sum().backward()
    y, forward = testing.device_ops(module, x)
    _, backward = testing.device_ops(torch.autograd.grad, y, [x, *module.parameters()],
                                     torch.ones_like(y))
    assert forward.count == backward.count == 0
    # forward; the activation's gradient, dx, the weight gradient's partial sums, and the sums
    # of the weight's and the bias's partials (kernels/_reduce.py)
    assert len(forward.launches) == 1 and len(backward.launches) == 5


@pytest.mark.parametrize("mask, groups, loaded", [
    ("A", 3, True),    # the centre connects earlier colours only
    ("B", 1, False),   # every channel pair at every active tap: the taps say all
    ("A", 1, False),   # the centre is no tap at all
])
def test_the_kernels_load_the_mask_only_where_it_switches_off_channel_pairs(mask, groups, loaded,
                                                                           generator):
    x, w = (torch.randn(shape, generator=generator).requires_grad_()
            for shape in ((1, 3, 4, 4), (6, 3, 3, 3)))
    y, forward = testing.device_ops(masked_conv2d, x, w, mask=mask, color_groups=groups)
    _, backward = testing.device_ops(torch.autograd.grad, y, [x, w], torch.ones_like(y))
    convolutions = [launch for launch in forward.launches + backward.launches
                    if "HAS_MASK" in launch.kwargs]
    assert len(convolutions) == 2 and all(launch.kwargs["HAS_MASK"] == loaded
                                          for launch in convolutions)
    # the weight gradient is exactly zero off the mask whether or not the kernels loaded it
    with gdm_engine.use_backend("triton"):
        (grad,) = torch.autograd.grad(masked_conv2d(x, w, mask=mask, color_groups=groups).sum(),
                                      w)
    off = ~full_mask(w.shape, mask, groups)
    assert torch.count_nonzero(grad[off]) == 0 and torch.count_nonzero(grad[~off]) > 0


def test_the_module_rebuilds_its_mask_when_it_loads_another():
    above, left = torch.zeros(3, 3, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool)
    above[0], left[1, 0] = True, True
    module, other = MaskedConv2d(2, 2, 3, mask=above), MaskedConv2d(2, 2, 3, mask=left)
    module.load_state_dict(other.state_dict())
    assert torch.equal(module.full_mask, other.full_mask) and torch.equal(module.taps, other.taps)
    assert module.taps.tolist() == [[0, -1, 3]]  # (dh, dw, row·kw + column) of the one tap


def test_nan_and_inf_at_masked_weights_stay_out_of_the_result(device, generator):
    # The kernels never read a weight the mask switches off; the reference (the specification)
    # takes where(M, weight, 0), so that 0 · NaN does not make the output NaN.
    case = _case(generator, device, 2, 3, 6, (4, 5), 3, "A", 3, 1, "tanh")
    x, w, b, _ = case.args
    off = ~full_mask(w.shape, "A", 3).to(device)
    nan_and_inf = torch.full_like(w, float("nan"))
    nan_and_inf.view(-1)[::2] = float("inf")
    poisoned = torch.where(off, nan_and_inf, w)
    clean = torch.where(off, 0.0, w)
    for backend in ("reference", "triton"):
        inputs = [t.detach().requires_grad_() for t in (x, poisoned, b)]
        with gdm_engine.use_backend(backend):
            y = masked_conv2d(*inputs, mask="A", color_groups=3, activation="tanh")
            grads = torch.autograd.grad(y.square().sum(), inputs)
        clean_inputs = [t.detach().double().requires_grad_() for t in (x, clean, b)]
        want = gdm_engine.reference.masked_conv2d(*clean_inputs, mask="A", color_groups=3,
                                                  activation="tanh")
        wanted = torch.autograd.grad(want.square().sum(), clean_inputs)
        assert testing.relative_error(y, want) < TOL, backend
        for got, expected in zip(grads, wanted):
            assert testing.relative_error(got, expected) < TOL, backend
        assert torch.count_nonzero(grads[1][off]) == 0


@pytest.mark.parametrize("x_shape, w_shape", [
    ((2, 3, 0, 4), (4, 3, 3, 3)),  # no rows
    ((2, 3, 4, 0), (4, 3, 3, 3)),  # no columns
    ((2, 0, 4, 5), (4, 0, 3, 3)),  # no input channels
    ((2, 3, 4, 5), (0, 3, 3, 3)),  # no output channels
])
def test_empty_shapes_on_both_backends(x_shape, w_shape, device, generator):
    x, w = (torch.randn(s, generator=generator).to(device) for s in (x_shape, w_shape))
    b = torch.randn(w_shape[0], generator=generator).to(device)
    assert_empty_shapes_work(masked_conv2d, x, w, b, generator)


def test_relu_keeps_nan(device, generator):
    assert_relu_keeps_nan(masked_conv2d,
                          _case(generator, device, 2, 4, 6, (3, 4), 3, "B", 1, 1, "relu"))


def test_a_traced_call_leaves_the_cache_to_eager_calls(generator):
    # export traces with fake tensors: the mask and tap table it builds belong to its graph, and
    # an eager call after it (a layer no call built before) still builds and caches real ones
    x, w = (torch.randn(shape, generator=generator) for shape in ((1, 5, 4, 6), (10, 5, 3, 5)))

    class Layer(torch.nn.Module):
        def forward(self, x, w):
            return masked_conv2d(x, w, mask="A", color_groups=5, dilation=3)

    exported = torch.export.export(Layer(), (x, w))
    want = gdm_engine.reference.masked_conv2d(x, w, mask="A", color_groups=5, dilation=3)
    assert torch.equal(Layer()(x, w), want) and torch.equal(exported.module()(x, w), want)
