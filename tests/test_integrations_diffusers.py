"""gdm_engine.integrations.diffusers: the drop-in schedulers give upstream's results (step by
step and over whole loops, both backends, every dtype), run upstream's step where they do not
cover a configuration, launch one kernel per step without a read-back, and keep diffusers'
config, pipeline and save/load machinery working."""

import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from gdm_engine import use_backend  # noqa: E402
from gdm_engine.catalog import CATALOG  # noqa: E402
from gdm_engine.integrations import diffusers as ours  # noqa: E402
from gdm_engine.testing import device_ops, no_read_backs, relative_error  # noqa: E402

SHAPE = (2, 3, 8, 8)
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SPACINGS = ("linspace", "leading", "trailing")
# (scheduler, config, step keywords): the covered configuration space
CASES = [
    *[("DDPMScheduler", {"prediction_type": p, "clip_sample": c}, {})
      for p in PREDICTION_TYPES for c in (False, True)],
    *[("DDPMScheduler", {"variance_type": v, "timestep_spacing": "trailing"}, {})
      for v in ("fixed_small_log", "fixed_large")],
    *[("DDIMScheduler", {"prediction_type": p, "clip_sample": c}, {"eta": e})
      for p in PREDICTION_TYPES for c in (False, True) for e in (0.0, 0.7)],
    ("DDIMScheduler", {"clip_sample": True}, {"eta": 0.5, "use_clipped_model_output": True}),
    ("DDIMScheduler", {"set_alpha_to_one": False, "clip_sample": False}, {}),
    *[("EulerDiscreteScheduler", {"prediction_type": p}, {}) for p in PREDICTION_TYPES],
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}, {}),
    *[("EulerAncestralDiscreteScheduler", {"prediction_type": p}, {})
      for p in ("epsilon", "v_prediction")],
    *[("HeunDiscreteScheduler", {"prediction_type": p}, {}) for p in PREDICTION_TYPES],
    *[("DPMSolverMultistepScheduler", {"prediction_type": p}, {}) for p in PREDICTION_TYPES],
    ("DPMSolverMultistepScheduler", {"final_sigmas_type": "sigma_min", "lower_order_final": False,
                                     "use_karras_sigmas": True}, {}),
    ("DPMSolverMultistepScheduler", {"euler_at_final": True, "final_sigmas_type": "sigma_min"},
     {}),
    ("FlowMatchEulerDiscreteScheduler", {}, {}),
    ("FlowMatchEulerDiscreteScheduler", {"shift": 3.0}, {}),
]
# every timestep_spacing, for each scheduler that has the option
CASES += [(name, {"timestep_spacing": s}, {}) for s in SPACINGS for name in (
    "DDPMScheduler", "DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler", "DPMSolverMultistepScheduler")]


def _label(case):
    name, config, keywords = case
    return f"{name}-{config}-{keywords}"


def _pair(name, config, steps):
    upstream = getattr(diffusers, name)(**config)
    drop_in = getattr(ours, name).from_config(upstream.config)
    for scheduler in (upstream, drop_in):
        scheduler.set_timesteps(steps)
        scheduler.is_scale_input_called = True
    return upstream, drop_in


def _step(scheduler, model_output, t, sample, seed, keywords):
    """scheduler.step with a seeded generator where its step takes one (DDIM's eta > 0 with
    variance_noise given instead)."""
    kwargs = dict(keywords)
    if "variance_noise" in kwargs:
        pass
    elif "generator" in inspect.signature(scheduler.step).parameters:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return scheduler.step(model_output, t, sample, **kwargs)


def _outputs(result):
    return [v for v in result.values() if v is not None]


def _loop(name, config, keywords, steps, dtype=torch.float32, backend="reference", seed=0):
    """Step-by-step errors of the drop-in against upstream on the same inputs: upstream in fp32
    for fp32 (its noise the same draw), in float64 on the upcast inputs for fp16 and bf16."""
    upstream, drop_in = _pair(name, config, steps)
    generator = torch.Generator().manual_seed(seed)
    sample = torch.randn(SHAPE, generator=generator).to(dtype)
    wide = torch.float32 if dtype == torch.float32 else torch.float64
    errors = []
    for i, t in enumerate(upstream.timesteps):
        model_output = torch.randn(SHAPE, generator=generator).to(dtype)
        given = dict(keywords)
        if given.get("eta", 0) > 0:  # DDIM's noise given
            given["variance_noise"] = torch.randn(SHAPE, generator=generator).to(dtype)
        up_given = {k: v.to(wide) if isinstance(v, torch.Tensor) else v for k, v in given.items()}
        want = _step(upstream, model_output.to(wide), t, sample.to(wide), i, up_given)
        with use_backend(backend):
            got = _step(drop_in, model_output, t, sample, i, given)
        errors += [relative_error(g, w) for g, w in zip(_outputs(got), _outputs(want))]
        sample = want.prev_sample.to(dtype)
    return errors


@pytest.mark.parametrize("case", CASES, ids=_label)
def test_steps_equal_upstream_reference_backend(case):
    name, config, keywords = case
    errors = _loop(name, config, keywords, steps=6)
    tolerance = CATALOG["euler_step"].tolerance[torch.float32]
    assert max(errors) <= tolerance, errors


TRITON_CASES = [
    ("DDPMScheduler", {"clip_sample": False, "prediction_type": "v_prediction"}, {}),
    ("DDPMScheduler", {"clip_sample": True}, {}),
    ("DDIMScheduler", {"clip_sample": False}, {"eta": 0.5}),
    ("EulerDiscreteScheduler", {}, {}),
    ("EulerAncestralDiscreteScheduler", {}, {}),
    ("HeunDiscreteScheduler", {"prediction_type": "v_prediction"}, {}),
    ("DPMSolverMultistepScheduler", {}, {}),
    ("FlowMatchEulerDiscreteScheduler", {}, {}),
]


@pytest.mark.parametrize("case", TRITON_CASES, ids=_label)
def test_steps_equal_upstream_triton_backend(case):
    name, config, keywords = case
    errors = _loop(name, config, keywords, steps=3, backend="triton")
    assert max(errors) <= CATALOG["euler_step"].tolerance[torch.float32], errors


# deterministic steps in reduced precision: the drop-in in the dtype, upstream in float64
DTYPE_CASES = [("DDIMScheduler", {"clip_sample": False}, {}), ("EulerDiscreteScheduler", {}, {}),
               ("DPMSolverMultistepScheduler", {}, {}), ("FlowMatchEulerDiscreteScheduler", {}, {}),
               ("HeunDiscreteScheduler", {}, {})]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("case", DTYPE_CASES, ids=_label)
def test_reduced_precision_steps(case, backend, dtype):
    name, config, keywords = case
    errors = _loop(name, config, keywords, steps=2 if backend == "triton" else 4,
                         dtype=dtype, backend=backend)
    assert max(errors) <= CATALOG["euler_step"].tolerance[dtype], errors


@pytest.mark.parametrize("name", ["DDPMScheduler", "EulerAncestralDiscreteScheduler"])
def test_whole_loops_with_a_generator_equal_upstream(name):
    """The noise is upstream's draw: one seed, the same loop."""
    upstream, drop_in = _pair(name, {"clip_sample": False} if name == "DDPMScheduler" else {}, 8)
    model = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    samples = []
    for scheduler in (upstream, drop_in):
        generator = torch.Generator().manual_seed(3)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
        for t in scheduler.timesteps:
            x = scheduler.step(model * (1 + t / 1000), t, x, generator=generator).prev_sample
        samples.append(x)
    assert relative_error(samples[1], samples[0]) <= 1e-5


# --------------------------------------------------------------------------------------------------
# fallbacks run upstream's step
# --------------------------------------------------------------------------------------------------

FALLBACKS = [
    ("DDPMScheduler", {"variance_type": "learned_range"}),
    ("DDPMScheduler", {"thresholding": True}),
    ("DDIMScheduler", {"thresholding": True}),
    ("DPMSolverMultistepScheduler", {"solver_order": 3}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("DPMSolverMultistepScheduler", {"solver_type": "heun"}),
    ("HeunDiscreteScheduler", {"clip_sample": True}),
    ("FlowMatchEulerDiscreteScheduler", {"stochastic_sampling": True}),
]


@pytest.mark.parametrize("name, config", FALLBACKS, ids=lambda v: str(v))
def test_fallbacks_call_upstream(name, config, monkeypatch):
    upstream, drop_in = _pair(name, config, 4)
    assert drop_in.fallback_reason() is not None
    calls = []
    base = getattr(diffusers, name)
    original = base.step

    def spy(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **kwargs)

    sample = torch.randn(SHAPE)
    channels = 2 * SHAPE[1] if config.get("variance_type") == "learned_range" else SHAPE[1]
    model_output = torch.randn(SHAPE[0], channels, *SHAPE[2:])
    t = upstream.timesteps[0]
    want = _step(upstream, model_output, t, sample, 0, {})
    monkeypatch.setattr(base, "step", spy)
    got = _step(drop_in, model_output, t, sample, 0, {})
    assert calls == [name]
    assert torch.equal(got.prev_sample, want.prev_sample)


def test_euler_churn_steps_call_upstream():
    upstream, drop_in = _pair("EulerDiscreteScheduler", {}, 4)
    sample, model_output = torch.randn(SHAPE), torch.randn(SHAPE)
    t = upstream.timesteps[0]
    kwargs = {"s_churn": 1.0}
    want = upstream.step(model_output, t, sample, generator=torch.Generator().manual_seed(0),
                         **kwargs)
    got = drop_in.step(model_output, t, sample, generator=torch.Generator().manual_seed(0),
                       **kwargs)
    assert torch.equal(got.prev_sample, want.prev_sample)


def test_coverage_lists_every_drop_in():
    rows = ours.coverage()
    assert [r["scheduler"] for r in rows] == list(ours.SCHEDULERS)
    assert all(r["fused"] and r["upstream step"] for r in rows)


# --------------------------------------------------------------------------------------------------
# one kernel per step, nothing read back
# --------------------------------------------------------------------------------------------------

COUNTED = [
    ("DDPMScheduler", {"clip_sample": False}, {"generator": True}),
    ("DDIMScheduler", {"clip_sample": False}, {"eta": 0.5}),
    ("EulerDiscreteScheduler", {}, {}),
    ("EulerAncestralDiscreteScheduler", {}, {"generator": True}),
    ("HeunDiscreteScheduler", {}, {}),
    ("DPMSolverMultistepScheduler", {}, {}),
    ("FlowMatchEulerDiscreteScheduler", {}, {}),
]


@pytest.mark.parametrize("case", COUNTED, ids=_label)
def test_a_step_launches_one_kernel_and_reads_nothing_back(case):
    name, config, keywords = case
    _, drop_in = _pair(name, config, 4)
    sample, model_output = torch.randn(SHAPE), torch.randn(SHAPE)
    # the first step builds the host plan (once per set_timesteps); then the steady state:
    # Heun's first call, DPM-Solver's second-order step
    for i, t in enumerate(drop_in.timesteps[:2]):
        kwargs = dict(keywords)
        if kwargs.pop("generator", False):
            kwargs["generator"] = torch.Generator().manual_seed(i)
        if "eta" in kwargs:
            kwargs["variance_noise"] = torch.randn(SHAPE)
        if name == "HeunDiscreteScheduler":
            drop_in.dt = None
        if i == 0:
            drop_in.step(model_output, t, sample, **kwargs)
            continue
        with no_read_backs():
            _, counted = device_ops(drop_in.step, model_output, t, sample, **kwargs)
        assert len(counted.launches) == 1, counted.launches
        assert counted.count == 0, dict(counted.ops)
        assert not counted.read_backs


# --------------------------------------------------------------------------------------------------
# guidance, add_noise, configs, pipelines, bad input
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["DDIMScheduler", "EulerDiscreteScheduler",
                                  "DPMSolverMultistepScheduler"])
def test_guided_step_is_the_step_of_the_guided_output(name):
    upstream, drop_in = _pair(name, {}, 4)
    sample, cond, uncond = torch.randn(SHAPE), torch.randn(SHAPE), torch.randn(SHAPE)
    t = upstream.timesteps[0]
    want = upstream.step(uncond + 7.5 * (cond - uncond), t, sample).prev_sample
    got = ours.guided_step(drop_in, cond, uncond, 7.5, t, sample).prev_sample
    assert relative_error(got, want) <= 1e-5


@pytest.mark.parametrize("name", ["DDPMScheduler", "DDIMScheduler"])
def test_add_noise_through_q_sample(name):
    upstream, drop_in = _pair(name, {}, 4)
    x0, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    timesteps = torch.tensor([10, 900])
    want = upstream.add_noise(x0, noise, timesteps)
    assert relative_error(drop_in.add_noise(x0, noise, timesteps), want) <= 1e-6


@pytest.mark.parametrize("name", list(ours.SCHEDULERS))
def test_configs_round_trip_with_upstream(name, tmp_path):
    upstream = getattr(diffusers, name)()
    drop_in = ours.SCHEDULERS[name].from_config(upstream.config)
    def public(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(drop_in.config) == public(upstream.config)
    drop_in.save_pretrained(tmp_path)
    loaded = getattr(diffusers, name).from_pretrained(tmp_path)
    assert type(loaded) is getattr(diffusers, name)
    assert public(loaded.config) == public(upstream.config)


def _unet():
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3,
                                 block_out_channels=(8, 16), layers_per_block=1,
                                 norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D")).eval()


@pytest.mark.parametrize("pipeline, scheduler", [("DDPMPipeline", "DDPMScheduler"),
                                                 ("DDIMPipeline", "DDIMScheduler")])
def test_pipelines_give_the_same_images_accelerated(pipeline, scheduler, tmp_path):
    pipe = getattr(diffusers, pipeline)(unet=_unet(),
                                        scheduler=getattr(diffusers, scheduler)(
                                            num_train_timesteps=50))
    kwargs = {"num_inference_steps": 4, "output_type": "np"}
    with torch.no_grad():
        want = pipe(generator=torch.Generator().manual_seed(0), **kwargs).images
        fused = ours.accelerate(pipe)
        assert type(fused.scheduler) is ours.SCHEDULERS[scheduler]
        got = fused(generator=torch.Generator().manual_seed(0), **kwargs).images
        assert abs(got - want).max() < 1e-4
        # the pipeline saved after accelerate() and loaded with DiffusionPipeline
        fused.save_pretrained(tmp_path)
        loaded = diffusers.DiffusionPipeline.from_pretrained(tmp_path)
        if pipeline == "DDPMPipeline":  # (DDIMPipeline's __init__ rebuilds diffusers' own)
            assert type(loaded.scheduler) is ours.SCHEDULERS[scheduler]
        loaded = ours.accelerate(loaded)
        assert type(loaded.scheduler) is ours.SCHEDULERS[scheduler]
        again = loaded(generator=torch.Generator().manual_seed(0), **kwargs).images
        assert abs(again - want).max() < 1e-4

def test_accelerate_refuses_an_unsupported_scheduler_by_name():
    pipe = diffusers.DDPMPipeline(unet=_unet(), scheduler=diffusers.LMSDiscreteScheduler())
    with pytest.raises(ValueError, match="LMSDiscreteScheduler"):
        ours.accelerate(pipe)


def test_guided_step_refuses_an_upstream_scheduler():
    with pytest.raises(TypeError, match="scheduler"):
        ours.guided_step(diffusers.DDIMScheduler(), torch.randn(SHAPE), torch.randn(SHAPE), 2.0,
                         1, torch.randn(SHAPE))


def test_benchmark_pairs_run():
    pairs = ours.benchmark_pairs("tiny")
    assert [p[0] for p in pairs] == list(ours.SCHEDULERS)
    for name, case, upstream, drop_in in pairs:
        for _ in range(2):  # repeated calls stay valid
            assert relative_error(drop_in().prev_sample, upstream().prev_sample) <= 1e-5, name
