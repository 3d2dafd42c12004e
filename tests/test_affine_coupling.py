"""affine_coupling beyond the catalog's generic checks: the definition of each scale map, the
inverse in both directions, the log-det against the autograd Jacobian, masks, extreme inputs,
partial logdet sums, empty batches and bad input."""

import re

import pytest
import torch

import gdm_engine
from gdm_engine import catalog, reference, testing
from gdm_engine.catalog import channel_mask, checkerboard_mask
from gdm_engine.kernels import poisoned_outputs
from gdm_engine.ops import affine_coupling
from gdm_engine.ops.affine_coupling import compact_mask

SPEC = catalog.CATALOG["affine_coupling"]
TOL = SPEC.tolerance[torch.float32]
SCALE_MAPS = ["exp", "sigmoid", "softclamp"]


def _inputs(generator, device, *shape, dtype=torch.float32):
    return [torch.randn(*shape, generator=generator).to(device, dtype) for _ in range(3)]


def _log_s_by_hand(r, scale_map, clamp):
    """log s written from the papers' definitions, independently of the reference module."""
    if scale_map == "exp":
        return r  # RealNVP: s = exp(r)
    if scale_map == "sigmoid":
        return torch.log(torch.sigmoid(r + 2))  # Glow's code: s = sigmoid(h + 2)
    return clamp * torch.tanh(r / clamp)


@pytest.mark.parametrize("scale_map", SCALE_MAPS)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_definition(scale_map, backend, device, generator):
    x, t, r = _inputs(generator, device, 3, 2, 5)
    with gdm_engine.use_backend(backend):
        y, logdet = affine_coupling(x, t, r, scale_map=scale_map, clamp=1.5)
        back, back_logdet = affine_coupling(x, t, r, scale_map=scale_map, clamp=1.5,
                                            reverse=True)
    x, t, r = (v.double() for v in (x, t, r))
    log_s = _log_s_by_hand(r, scale_map, 1.5)
    assert testing.relative_error(y, x * log_s.exp() + t) < TOL
    assert testing.relative_error(logdet, log_s.sum((1, 2))) < TOL
    assert testing.relative_error(back, (x - t) / log_s.exp()) < TOL
    assert testing.relative_error(back_logdet, -log_s.sum((1, 2))) < TOL


def test_softclamp_bounds_the_log_scale(device):
    r = torch.linspace(-50, 50, 101, device=device).reshape(1, 101)
    with gdm_engine.use_backend("triton"):
        _, logdet = affine_coupling(torch.zeros_like(r), torch.zeros_like(r), r,
                                    scale_map="softclamp", clamp=2.0, mask=torch.eye(101)[:1] == 0)
    # every element but the first is masked: logdet is log s of r = -50, just above -clamp
    assert -2.0 <= logdet.item() < -1.99


MASKS = {
    "none": lambda c, h, w: None,
    "checkerboard": checkerboard_mask,
    "channel": lambda c, h, w: channel_mask(c),
}


@pytest.mark.parametrize("mask_name", MASKS)
@pytest.mark.parametrize("scale_map", SCALE_MAPS)
def test_reverse_inverts_forward_both_ways(scale_map, mask_name, device, generator):
    x, t, r = _inputs(generator, device, 2, 4, 3, 5)
    mask = MASKS[mask_name](4, 3, 5)
    mask = mask.to(device) if mask is not None else None
    kw = dict(scale_map=scale_map, mask=mask)
    with gdm_engine.use_backend("triton"):
        y, logdet = affine_coupling(x, t, r, **kw)
        x_again, inverse_logdet = affine_coupling(y, t, r, reverse=True, **kw)
        z, z_logdet = affine_coupling(x, t, r, reverse=True, **kw)
        x_back, back_logdet = affine_coupling(z, t, r, **kw)
    assert testing.relative_error(x_again, x) < 1e-5
    assert testing.relative_error(x_back, x) < 1e-5
    assert torch.allclose(logdet, -inverse_logdet) and torch.allclose(z_logdet, -back_logdet)


def _jacobian_logdets(fn, x):
    """log|det| of the Jacobian of each example's output with respect to its input, by autograd."""
    out = []
    for n in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], x[n])
        d = x[n].numel()
        sign, logabsdet = torch.linalg.slogdet(jac.reshape(d, d))
        assert sign != 0
        out.append(logabsdet)
    return torch.stack(out)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("scale_map", SCALE_MAPS)
def test_logdet_is_the_log_determinant_of_the_jacobian(scale_map, reverse, device, generator):
    x, t, r = (v.double() for v in _inputs(generator, device, 3, 2, 2, 3))
    mask = checkerboard_mask(2, 2, 3).to(device)
    kw = dict(scale_map=scale_map, mask=mask, reverse=reverse, clamp=2.5)
    want = torch.cat([_jacobian_logdets(
        lambda v, n=n: reference.affine_coupling(v, t[n:n + 1], r[n:n + 1], **kw), x[n:n + 1])
        for n in range(3)])
    _, ref_logdet = reference.affine_coupling(x, t, r, **kw)
    assert testing.relative_error(ref_logdet, want) < 1e-12
    with gdm_engine.use_backend("triton"):
        _, logdet = affine_coupling(x.float(), t.float(), r.float(), **kw)
    assert testing.relative_error(logdet, want) < TOL


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("mask_name", ["checkerboard", "channel", "per-example"])
def test_masked_entries_pass_through_and_add_nothing(mask_name, reverse, device, generator):
    x, t, r = _inputs(generator, device, 3, 4, 3, 5)
    if mask_name == "per-example":
        mask = torch.rand(3, 4, 3, 5, generator=generator) < 0.5
    else:
        mask = MASKS[mask_name](4, 3, 5)
    mask = mask.to(device)
    keep = (mask != 0).expand_as(x)
    for leaf in (x, t, r):
        leaf.requires_grad_()
    with gdm_engine.use_backend("triton"):
        y, logdet = affine_coupling(x, t, r, scale_map="sigmoid", mask=mask, reverse=reverse)
        grad_y = torch.randn(y.shape, generator=generator).to(device)
        dx, dt, dr = torch.autograd.grad((y, logdet), (x, t, r),
                                         (grad_y, torch.ones_like(logdet)))
    assert torch.equal(y[keep], x[keep]) and not torch.equal(y[~keep], x[~keep])
    log_s = torch.nn.functional.logsigmoid(r.detach().double() + 2)
    want = torch.where(keep, 0.0, log_s).sum((1, 2, 3))
    assert testing.relative_error(logdet, -want if reverse else want) < TOL
    assert torch.equal(dx[keep], grad_y[keep])
    assert not dt[keep].any() and not dr[keep].any()
    assert dt[~keep].abs().min() > 0


def test_mask_kinds_agree_and_a_shared_mask_is_not_copied_per_example(device, generator):
    x, t, r = _inputs(generator, device, 4, 3, 2, 5)
    board = checkerboard_mask(3, 2, 5).to(device)
    assert compact_mask(board.float(), x).shape == (1, 3, 2, 5)  # batch dim kept at 1
    assert compact_mask(channel_mask(3).to(device)[0], x).shape == (1, 3, 2, 5)
    with gdm_engine.use_backend("triton"):
        results = [affine_coupling(x, t, r, mask=m)
                   for m in (board, board.float(), board.to(torch.int64),
                             board.expand(4, 3, 2, 5).contiguous(), board[0])]
    for y, logdet in results[1:]:
        assert torch.equal(y, results[0][0]) and torch.equal(logdet, results[0][1])


def test_a_masks_values_are_checked_once_until_it_changes(device, generator):
    """Regression: a mask of numbers was checked to be all 0 or 1 at every call, reading it back
    from the device. Its values are checked, and its compact form built, at the first call; later
    calls read nothing back and dispatch nothing for it, until the mask changes in place."""
    x, t, r = _inputs(generator, device, 2, 4, 3, 3)
    mask = channel_mask(4).to(device)
    first = affine_coupling(x, t, r, mask=mask)
    _, counted = testing.device_ops(affine_coupling, x, t, r, mask=mask)  # launches recorded
    assert not counted.read_backs and not counted.ops.get("ne")
    for a, b in zip(affine_coupling(x, t, r, mask=mask), first):
        assert torch.equal(a, b)
    mask.fill_(0.5)  # an in-place change: checked again
    with pytest.raises(ValueError, match="mask must be binary"):
        affine_coupling(x, t, r, mask=mask)
    mask.fill_(0.0)
    y, _ = affine_coupling(x, t, r, mask=mask)
    assert not torch.equal(y, first[0])  # the new mask, not the cached one


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("scale_map", ["sigmoid", "softclamp"])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_extreme_inputs_give_no_nan(scale_map, reverse, backend, device):
    # |x| = 1e4 and scale_raw = ±1e4 (x − shift never 0: (x − shift) / s would be 0 / 0)
    values = torch.tensor([-1e4, 1e4], device=device)
    x, t, r = torch.meshgrid(values, values * 3e-4, values, indexing="ij")
    x, t, r = (v.reshape(1, 8).clone().requires_grad_() for v in (x, t, r))
    with gdm_engine.use_backend(backend):
        y, logdet = affine_coupling(x, t, r, scale_map=scale_map, reverse=reverse)
        grads = torch.autograd.grad((y, logdet), (x, t, r),
                                    (torch.ones_like(y), torch.ones_like(logdet)))
    assert not torch.isnan(y).any() and not torch.isnan(logdet).any()
    assert not any(torch.isnan(g).any() for g in grads)
    if scale_map == "softclamp" or not reverse:  # the math is finite: so is every output
        assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
        assert all(torch.isfinite(g).all() for g in grads)
    else:  # s = sigmoid(-1e4 + 2) underflows: dividing by it overflows, correctly, to ±inf
        assert torch.isinf(y[r < 0]).all() and torch.isfinite(y[r > 0]).all()
    if scale_map == "sigmoid" and not reverse:  # log s = logsigmoid(r + 2): -1e4 + 2 or ≈ 0
        assert logdet.item() == pytest.approx(4 * (-1e4 + 2), rel=1e-6)


@pytest.mark.parametrize("shape", [(2, 70), (1, 37)], ids=str)
def test_few_long_rows_split_into_partial_logdet_sums(shape, monkeypatch, device, generator):
    # one split: the forward kernel writes the logdet itself; several (forced here, as a GPU
    # would cut a few long rows): a second kernel adds the partial sums in a fixed order
    from gdm_engine.kernels import affine_coupling as kernels

    x, t, r = _inputs(generator, device, *shape)
    with gdm_engine.use_backend("triton"), poisoned_outputs():
        whole = affine_coupling(x, t, r, scale_map="softclamp")
        monkeypatch.setattr(kernels, "num_programs_target", lambda device: 1 << 10)
        split = affine_coupling(x, t, r, scale_map="softclamp")
        again = affine_coupling(x, t, r, scale_map="softclamp")
    assert torch.equal(whole[0], split[0])
    # an fp32 sum of terms of both signs is good to a few ulps of Σ|terms|, not of its result
    # (37 terms once summed to 0.0118 from terms of ~1: 1.1e-5 of it, 1e-7 of Σ|terms|)
    terms = _log_s_by_hand(r.double(), "softclamp", 3.0)
    want, scale = terms.sum(1), terms.abs().sum(1)
    assert ((whole[1] - want).abs() <= TOL * scale).all()
    assert ((split[1] - want).abs() <= TOL * scale).all()
    assert torch.equal(split[1], again[1])  # no atomics: the same sums every run


@pytest.mark.parametrize("reverse", [False, True])
def test_backward_reads_an_expanded_logdet_gradient_in_place(reverse, device, generator):
    # logdet.sum() hands back a stride-0 gradient: the kernel reads it through its stride, so
    # the backward needs no copy (no device op besides its kernel) and still gets it right
    x, t, r = (v.requires_grad_() for v in _inputs(generator, device, 3, 2, 5))
    mask = checkerboard_mask(1, 2, 5)[0].to(device)
    kw = dict(scale_map="sigmoid", mask=mask, reverse=reverse)
    with gdm_engine.use_backend("triton"):
        y, logdet = affine_coupling(x, t, r, **kw)
    grad_y = torch.randn(y.shape, generator=generator).to(device)
    grads = (y, logdet), (x, t, r), (grad_y, torch.full((), 0.7, device=device).expand(3))
    _, counted = testing.device_ops(torch.autograd.grad, *grads, retain_graph=True)
    assert counted.count == 0, dict(counted.ops)
    with gdm_engine.use_backend("triton"):
        got = torch.autograd.grad(*grads)
    inputs = [v.detach().double().requires_grad_() for v in (x, t, r)]
    want = torch.autograd.grad(reference.affine_coupling(*inputs, **kw), inputs,
                               (grad_y.double(), torch.full((3,), 0.7, dtype=torch.float64)))
    for g, w in zip(got, want):
        assert testing.relative_error(g, w) < TOL


@pytest.mark.parametrize("shape", [(0, 3, 4), (3, 0)])
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_batch_and_empty_examples(shape, backend, device):
    x, t, r = (torch.zeros(shape, device=device, requires_grad=True) for _ in range(3))
    with gdm_engine.use_backend(backend):
        y, logdet = affine_coupling(x, t, r, scale_map="sigmoid", mask=torch.ones(shape[1:]) > 0)
        (y.sum() + logdet.sum()).backward()
    assert y.shape == shape and logdet.shape == shape[:1] and x.grad.shape == shape
    assert not logdet.any()  # an example with no elements has log-det 0


BAD_INPUTS = {
    "x type": (lambda x, t, r: ((x.tolist(), t, r), {}), TypeError, "x must be a torch"),
    "x integer": (lambda x, t, r: ((x.long(), t, r), {}), TypeError, "x must be float32"),
    "x 0-d": (lambda x, t, r: ((x[0, 0], t[0, 0], r[0, 0]), {}), ValueError, "x must have shape"),
    "shift shape": (lambda x, t, r: ((x, t[:, :2], r), {}), ValueError, "shift must have the"),
    "shift device": (lambda x, t, r: ((x, t.to("meta"), r), {}), ValueError, "shift is on meta"),
    "scale_raw dtype": (lambda x, t, r: ((x, t, r.half()), {}), TypeError, "scale_raw has dtype"),
    "scale_raw type": (lambda x, t, r: ((x, t, 1.0), {}), TypeError, "scale_raw must be a torch"),
    "scale_map": (lambda x, t, r: ((x, t, r), {"scale_map": "tanh"}), ValueError,
                  "scale_map must be one of"),
    "clamp zero": (lambda x, t, r: ((x, t, r), {"clamp": 0.0}), ValueError, "clamp must be"),
    "clamp type": (lambda x, t, r: ((x, t, r), {"clamp": "3"}), TypeError, "clamp must be"),
    "reverse type": (lambda x, t, r: ((x, t, r), {"reverse": 1}), TypeError, "reverse must be"),
    "mask type": (lambda x, t, r: ((x, t, r), {"mask": [1, 0]}), TypeError, "mask must be"),
    "mask shape": (lambda x, t, r: ((x, t, r), {"mask": torch.ones(2)}), ValueError,
                   "mask must be broadcastable"),
    "mask rank": (lambda x, t, r: ((x, t, r), {"mask": torch.ones(1, 1, 3, 4)}), ValueError,
                  "mask must be broadcastable"),
    "mask values": (lambda x, t, r: ((x, t, r), {"mask": torch.full((4,), 0.5)}), ValueError,
                    "mask must be binary"),
    "mask integers": (lambda x, t, r: ((x, t, r), {"mask": torch.arange(4)}), ValueError,
                      "mask must be binary"),
    "mask device": (lambda x, t, r: ((x, t, r), {"mask": torch.ones(4, device="meta")}),
                    ValueError, "mask is on meta"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(name):
    make, error, message = BAD_INPUTS[name]
    args, kwargs = make(torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4))
    with pytest.raises(error, match=re.escape(message)):
        affine_coupling(*args, **kwargs)
