"""Autocast rules of the gdm_engine:: ops (gdm_engine/ops/_autocast.py): under torch.autocast the
convolutions compute in the region's dtype, the ops that return log-dets, a KL or a loss in
float32, the others in their inputs' dtype; on both backends, as if called outside autocast with
inputs cast so."""

import pytest
import torch

import gdm_engine
from gdm_engine import catalog, ops
from gdm_engine.ops import _autocast, causal_conv1d, gaussian_reparam_kl
from gdm_engine.testing import as_tuple

SPECS = list(catalog.CATALOG.values())


def test_every_op_has_a_rule_for_cpu_and_cuda():
    names = [n for n in torch._C._dispatch_get_all_op_names() if n.startswith("gdm_engine::")]
    assert len(names) >= 2 * len(SPECS) - 8  # every op and the backward ops of the trainable
    for name in names:
        for key in ("AutocastCPU", "AutocastCUDA"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(name, key), (name, key)


def _first_case(spec, dtype):
    return spec.make_inputs("tiny", dtype, torch.device("cpu"), torch.Generator().manual_seed(3))[0]


def _call(spec, args, kwargs):
    torch.manual_seed(0)  # the same seed for the noise an op draws itself
    return as_tuple(spec.op(*args, **kwargs))


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_each_op_computes_in_its_rules_dtype(spec, dtype, backend):
    case = _first_case(spec, dtype)
    want_dtype = _autocast.rule_dtype(spec.name, "cpu") or dtype
    cast = [a.to(want_dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
            for a in case.args]
    with gdm_engine.use_backend(backend):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = _call(spec, case.args, case.kwargs)
        want = _call(spec, cast, case.kwargs)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype == want_dtype
        assert torch.equal(g, w)


def test_the_convolutions_take_the_regions_dtype_and_train_fp32_weights(generator):
    x = torch.randn(2, 4, 9, generator=generator)
    weight = torch.randn(6, 4, 3, generator=generator).requires_grad_()
    with gdm_engine.use_backend("triton"):
        for dtype in (torch.bfloat16, torch.float16):
            with torch.autocast("cpu", dtype=dtype):
                y = causal_conv1d(x, weight, dilation=2)
            assert y.dtype == dtype
            (grad,) = torch.autograd.grad(y.float().square().sum(), weight)
            assert grad.dtype == torch.float32 and torch.isfinite(grad).all()


def test_a_kl_of_mixed_precision_inputs_comes_back_in_fp32(generator):
    # an encoder under autocast hands bf16 means beside fp32 log-variances: the op casts both
    # to fp32 before it checks that they agree
    mean = torch.randn(3, 8, generator=generator).bfloat16().requires_grad_()
    log_var = torch.randn(3, 8, generator=generator).requires_grad_()
    noise = torch.randn(3, 8, generator=generator)
    with gdm_engine.use_backend("triton"), torch.autocast("cpu", dtype=torch.bfloat16):
        z, kl = gaussian_reparam_kl(mean, log_var, noise)
    assert z.dtype == kl.dtype == torch.float32
    with gdm_engine.use_backend("triton"):
        _, want = gaussian_reparam_kl(mean.float(), log_var, noise)
    assert torch.equal(kl, want)
    kl.sum().backward()
    assert mean.grad.dtype == torch.bfloat16 and log_var.grad.dtype == torch.float32


def test_outside_autocast_inputs_pass_unchanged():
    x, w = torch.randn(2, 3), torch.randn(2, 3).bfloat16()
    got = _autocast.autocast_inputs("masked_conv2d", x, w, None)
    assert got[0] is x and got[1] is w and got[2] is None


def test_a_network_output_meets_fp32_data_under_autocast():
    # a layer's bf16 output beside fp32 data: the public ops cast by their rule before checking
    x, out = torch.randn(4, 6), torch.randn(4, 6, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, logdet = ops.affine_coupling(x, out, out)
        loss = ops.diffusion_loss(out, x, x, 0.5)
        _, actnorm_logdet = ops.actnorm(x, out[0], out[1])
        z, spline_logdet = ops.rq_spline(x[:, :1], *(torch.randn(4, 1, 3, dtype=torch.bfloat16)
                                                     for _ in range(2)),
                                         torch.randn(4, 1, 2, dtype=torch.bfloat16))
    assert {t.dtype for t in (logdet, loss, actnorm_logdet, spline_logdet)} == {torch.float32}


def test_stacked_convolutions_under_autocast():
    # the second layer meets the first's bf16 output with its fp32 weight: both run in bf16
    layers = torch.nn.Sequential(gdm_engine.nn.MaskedConv2d(2, 4, 3, mask="A"),
                                 gdm_engine.nn.MaskedConv2d(4, 4, 3),
                                 torch.nn.Flatten(2), gdm_engine.nn.CausalConv1d(4, 4, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layers(torch.randn(2, 2, 4, 4))
    assert out.dtype == torch.bfloat16
