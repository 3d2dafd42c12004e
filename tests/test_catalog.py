"""Every catalog op, generated: kernel against reference in every dtype (contiguous and strided
inputs, outputs poisoned with NaN), gradients of every input, opcheck, gradcheck and compile."""

import pytest
import torch

from gdm_engine import catalog, testing, use_backend

SPECS = list(catalog.CATALOG.values())
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _cases(spec, dtype, device, generator):
    return spec.make_inputs("tiny", dtype, device, generator)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_kernel_matches_reference(spec, dtype, device, generator):
    checks = []
    for case in _cases(spec, dtype, device, generator):
        checks += testing.check_case(spec, case, generator=generator)
    testing.assert_checks_pass(checks)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_fp32_kernel_with_tf32_products_matches_reference(spec, device, generator):
    # PyTorch's default for convolutions: TF32 tensor-core products, held to the "tf32" tolerance.
    checks = []
    for case in _cases(spec, torch.float32, device, generator):
        checks += testing.check_case(spec, case, generator=generator, tf32=True)
    assert checks and all(c.dtype == "float32 tf32" for c in checks)
    assert all(c.tolerance == spec.tolerance["tf32"] for c in checks)
    testing.assert_checks_pass(checks)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_kernel_matches_reference_on_strided_inputs(spec, device, generator):
    checks = []
    for case in _cases(spec, torch.float32, device, generator):
        strided = testing.with_tensors(case, testing.noncontiguous)
        assert all(t.stride() != torch.empty(t.shape).stride() for t in strided.tensors())
        checks += testing.check_case(spec, strided, generator=generator)
    testing.assert_checks_pass(checks)


@pytest.mark.parametrize("spec", [s for s in SPECS if not s.differentiable], ids=lambda s: s.name)
def test_forward_only_ops_check_no_gradients(spec, device, generator):
    case = _cases(spec, torch.float32, device, generator)[0]
    checks = testing.check_case(spec, case, generator=generator)
    want = ["forward"] if len(spec.outputs) == 1 else [f"forward {o}" for o in spec.outputs]
    assert [c.quantity for c in checks] == want


def test_poisoned_buffers_catch_unwritten_outputs():
    from gdm_engine.kernels import poisoned_outputs
    from gdm_engine.kernels._runtime import empty

    with poisoned_outputs():
        assert torch.isnan(empty((3, 4), torch.float32, "cpu")).all()
    assert testing.relative_error(torch.full((2,), float("nan")), torch.ones(2)) == float("inf")


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_opcheck(spec, backend, device, generator):
    case = _cases(spec, torch.float32, device, generator)[1]
    # forward-only ops have no autograd registration to test: their inputs need no gradient
    inputs = testing.with_tensors(case, lambda t: t.detach().requires_grad_(spec.differentiable))
    args, kwargs = spec.library_inputs(inputs)
    with use_backend(backend):
        torch.library.opcheck(spec.library_op, args, kwargs)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_reference_gradcheck(spec, device, generator):
    if not spec.differentiable:
        pytest.skip(f"{spec.name} is forward-only")
    case = _cases(spec, torch.float64, device, generator)[1]
    inputs = testing.with_grads(spec, case)  # schedule values (constant inputs) stay fixed
    assert torch.autograd.gradcheck(lambda *a: spec.reference(*a, **inputs.kwargs), inputs.args)
    # the op's registered backward on float64 (which always runs the reference) agrees too
    assert torch.autograd.gradcheck(lambda *a: spec.op(*a, **inputs.kwargs), inputs.args)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_op_under_torch_compile(spec, device, generator):
    case = _cases(spec, torch.float32, device, generator)[1]
    # one code object (the lambda below) for every spec: start each spec from a fresh cache, or
    # the specs together pass Dynamo's recompile limit (8) and fullgraph fails
    torch._dynamo.reset()
    backend = "triton" if device.type == "cuda" else "reference"
    doubled = lambda *a: [2 * t for t in testing.as_tuple(spec.op(*a, **case.kwargs))]  # noqa: E731
    compiled = torch.compile(doubled, fullgraph=True)
    with use_backend(backend):
        got = compiled(*case.args)
    want = spec.reference(*[t.double() if isinstance(t, torch.Tensor) else t for t in case.args],
                          **case.kwargs)
    for g, w in zip(got, testing.as_tuple(want), strict=True):
        assert testing.relative_error(g, 2 * w) < spec.tolerance[torch.float32]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_op_under_torch_export(spec, device, generator):
    case = _cases(spec, torch.float32, device, generator)[1]

    class Wrapper(torch.nn.Module):
        def forward(self, *args):
            return spec.op(*args, **case.kwargs)

    exported = torch.export.export(Wrapper(), case.args)
    assert any(node.target == spec.library_op._opoverload for node in exported.graph.nodes)
    got, want = exported.module()(*case.args), Wrapper()(*case.args)
    assert all(map(torch.equal, testing.as_tuple(got), testing.as_tuple(want)))
