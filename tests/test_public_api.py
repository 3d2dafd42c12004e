"""What `gdm_engine.ops` exports: the public ops only, their two-tensor results as named
tuples, and the registrations' old names for one release, with a warning."""

import warnings

import pytest
import torch

from gdm_engine import models, ops
from gdm_engine.ops import library, outputs


def test_ops_exports_the_public_ops_only():
    assert ops.__all__ and not [name for name in ops.__all__ if "library" in name]
    assert all(callable(getattr(ops, name)) for name in ops.__all__)
    assert set(library.__all__) == {name for name in dir(library) if name.endswith("_library_op")}


@pytest.mark.parametrize("name", library.__all__)
def test_old_registration_names_warn_and_still_work(name):
    with pytest.warns(DeprecationWarning, match=f"gdm_engine.ops.library.{name}"):
        assert getattr(ops, name) is getattr(library, name)


def test_unknown_names_raise_attribute_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError, match="no_such_op"):
            ops.no_such_op


def test_two_tensor_results_are_named_and_still_unpack(generator):
    x = torch.randn(2, 3, 4, generator=generator)
    zero = torch.zeros(3)
    flow = ops.actnorm(x, zero, zero)
    y, logdet = flow
    assert isinstance(flow, outputs.FlowOutput) and flow.y is y and flow.logdet is logdet
    coupling = ops.affine_coupling(x, x, x)
    assert isinstance(coupling, outputs.FlowOutput) and coupling.logdet.shape == (2,)
    spline = ops.rq_spline(x, *(torch.zeros(2, 3, 4, k) for k in (5, 5, 4)))
    assert isinstance(spline, outputs.SplineOutput) and spline.logabsdet.shape == x.shape
    sample = ops.gaussian_reparam_kl(x, x, torch.zeros_like(x))
    assert isinstance(sample, outputs.ReparamOutput) and torch.equal(sample.z, x)
    step = ops.dpmpp_2m_step(x, x, 2.0, 1.0, prediction="x0")
    assert isinstance(step, outputs.DPMSolverOutput) and torch.equal(step.denoised, x)


def test_the_sampler_package_s_old_name_warns_and_is_sampling(monkeypatch):
    import sys

    from gdm_engine import sampling

    for name in [n for n in sys.modules if n.startswith("gdm_engine.diffusion")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.warns(DeprecationWarning, match="gdm_engine.sampling"):
        import gdm_engine.diffusion as old
    assert old.sample is sampling.sample and old.SAMPLERS is sampling.SAMPLERS
    from gdm_engine.diffusion.schedules import linear_alpha_bars

    assert linear_alpha_bars is sampling.schedules.linear_alpha_bars


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_a_model_declares_what_its_sample_takes_and_its_bound_settings(name):
    # the CLI reads the declarations instead of inspecting: they must be what the code takes
    import inspect

    cls = models.MODELS[name]
    keywords = set(inspect.signature(cls.sample).parameters) - {"self", "n", "generator"}
    assert cls.sample_options == keywords
    constructor = inspect.signature(cls.__init__).parameters
    assert all(setting in constructor for setting in cls.bound_settings)


def test_the_clipping_samplers_are_those_that_take_clip():
    import inspect

    from gdm_engine import sampling

    takes_clip = {
        name for name, sampler in sampling.SAMPLERS.items()
        if "clip" in inspect.signature(sampler).parameters
    }
    assert sampling.CLIPPING_SAMPLERS == takes_clip
