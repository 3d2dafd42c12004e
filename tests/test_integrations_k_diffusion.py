"""gdm_engine.integrations.k_diffusion against k-diffusion's own samplers (k-diffusion
0.1.1.post1, loaded by `upstream_sampling()` without its package __init__).

The truth is upstream's sampler run in float64 on the same inputs upcast (x, the denoiser; the
schedule stays as given) and the same noise: drawn where the run in its dtype draws it, then
upcast. The drop-in, in fp32, fp16 or bf16 on the reference and the Triton backend, must match
it step by step (the callback dictionaries) and over the whole loop within the catalog's
tolerance of the step op; in fp32 it must also give upstream's own fp32 numbers for the same
global seed. Per step: one step kernel per model evaluation, no other device op but the noise
that upstream draws, and no read-back.
"""

import pytest
import torch

from gdm_engine import use_backend
from gdm_engine.catalog import CATALOG
from gdm_engine.integrations import k_diffusion as K
from gdm_engine.testing import device_ops, no_read_backs, relative_error

UPSTREAM = K.upstream_sampling()
needs_upstream = pytest.mark.skipif(UPSTREAM is None, reason="k-diffusion is not installed")

SHAPE = (2, 3, 4, 4)
OP_OF = {"sample_euler": "euler_step", "sample_euler_ancestral": "euler_step",
         "sample_heun": "heun_step", "sample_dpmpp_2m": "dpmpp_2m_step"}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
GIVEN = "given noise_sampler"
HEUN_SLACK = 10  # see _allowance
CONFIGS = [  # (sampler, keyword arguments): GIVEN stands for a noise sampler of fixed draws
    ("sample_euler", {}),
    ("sample_euler", {"s_churn": 1.0}),  # every step churned, the first before the loop
    ("sample_euler", {"s_churn": 4.0, "s_tmin": 0.2, "s_tmax": 2.0, "s_noise": 1.007}),
    ("sample_heun", {}),
    ("sample_heun", {"s_churn": 4.0, "s_tmin": 0.2, "s_tmax": 2.0, "s_noise": 0.99}),
    ("sample_euler_ancestral", {}),
    ("sample_euler_ancestral", {"eta": 0.5, "s_noise": 1.1}),
    ("sample_euler_ancestral", {"eta": 3.0}),  # σ_up capped at σ_next: σ_down = 0
    ("sample_euler_ancestral", {"eta": 0.0}),
    ("sample_euler_ancestral", {"noise_sampler": GIVEN, "s_noise": 0.95}),
    ("sample_dpmpp_2m", {}),
]


def _label(config):
    name, kwargs = config
    return name[len("sample_"):] + "".join(f"-{k}={v}" for k, v in kwargs.items())


def denoiser(x, sigma, scale=1.0):
    """A smooth, nonlinear stand-in for a network's D(x; σ), in x's dtype."""
    s = sigma.reshape(-1, *([1] * (x.ndim - 1)))
    return scale * (x + s * s * torch.tanh(x.flip(-1))) / (1 + s * s)


class FixedNoise:
    """A given noise_sampler: fixed draws in call order, rounded to `dtype` then returned in
    `out_dtype`; it records the (sigma, sigma_next) it is called with."""

    def __init__(self, draws, dtype, out_dtype):
        self.draws, self.dtype, self.out_dtype = iter(draws), dtype, out_dtype
        self.calls = []

    def __call__(self, sigma, sigma_next):
        self.calls.append((sigma, sigma_next))
        return next(self.draws).to(self.dtype).to(self.out_dtype)


def _schedule(kind, steps):
    make = UPSTREAM.get_sigmas_karras if kind == "karras" else UPSTREAM.get_sigmas_exponential
    return make(steps, 0.02, 8.0)


def _run(sampler, x, sigmas, kwargs, seed):
    """(output, callback dictionaries) of one sampler loop from the global seed `seed`."""
    steps = []
    torch.manual_seed(seed)
    out = sampler(denoiser, x, sigmas, extra_args={"scale": 0.9}, callback=steps.append,
                  disable=True, **kwargs)
    return out, steps


def _with_noise(kwargs, draws, dtype, out_dtype):
    if kwargs.get("noise_sampler") != GIVEN:
        return dict(kwargs)
    return {**kwargs, "noise_sampler": FixedNoise(draws, dtype, out_dtype)}


def _truth(name, x, sigmas, kwargs, draws, dtype, seed, monkeypatch):
    """Upstream in float64 with the noise of a run in `dtype`: its torch.randn_like draws in
    `dtype` (the same numbers, from the same generator state), then upcasts."""
    original = torch.randn_like
    with monkeypatch.context() as patch:
        patch.setattr(torch, "randn_like", lambda t, **kw: original(t.to(dtype)).to(t.dtype))
        return _run(getattr(UPSTREAM, name), x.double(), sigmas,
                    _with_noise(kwargs, draws, dtype, torch.float64), seed)


def _allowance(name, dtype, upstream_errors):
    """The catalog's tolerance of the step op; for Heun in fp16 and bf16, HEUN_SLACK times
    upstream's own error in that dtype where that is more. The engine's Heun kernel recomputes
    the Euler point in fp32 where upstream's correction reads the point as the model saw it,
    rounded: its rounding, divided by σ_next, enters the step (a few steps down to a small σ
    lose digits, upstream too but fewer)."""
    tolerance = CATALOG[OP_OF[name]].tolerance[dtype]
    if name != "sample_heun" or dtype == torch.float32:
        return lambda key: tolerance
    return lambda key: max(tolerance, HEUN_SLACK * upstream_errors[key])


def _assert_matches(name, dtype, ours, truth, upstream=None):
    """ours against the truth, step by step and at the end; `upstream`: upstream's own run in
    `dtype`, whose errors set Heun's allowance."""
    (out, steps), (want, want_steps) = ours, truth
    errors = {}
    if upstream is not None:
        errors = {(s["i"], key): relative_error(s[key], t[key])
                  for s, t in zip(upstream[1], want_steps) for key in ("x", "denoised")}
        errors["output"] = relative_error(upstream[0], want)
    allowed = _allowance(name, dtype, errors)
    assert len(steps) == len(want_steps)
    for got, expected in zip(steps, want_steps):
        assert set(got) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert got["i"] == expected["i"]
        assert torch.equal(got["sigma"], expected["sigma"]), (got["sigma"], expected["sigma"])
        assert torch.equal(got["sigma_hat"], expected["sigma_hat"]), (
            got["sigma_hat"], expected["sigma_hat"])
        for key in ("x", "denoised"):
            assert got[key].dtype == dtype
            error, bound = relative_error(got[key], expected[key]), allowed((got["i"], key))
            assert error <= bound, f"step {got['i']} {key}: {error:.3g} > {bound:.3g}"
    assert out.dtype == dtype and out.shape == want.shape
    error, bound = relative_error(out, want), allowed("output")
    assert error <= bound, f"output: {error:.3g} > {bound:.3g}"


def _differential(config, schedule, steps, dtype, backend, monkeypatch):
    name, kwargs = config
    seed = int(torch.randint(0, 2**31 - 1, ()))
    sigmas = _schedule(schedule, steps)
    x = (sigmas[0] * torch.randn(SHAPE)).to(dtype)
    draws = [torch.randn(SHAPE) for _ in range(steps)]
    truth = _truth(name, x, sigmas, kwargs, draws, dtype, seed, monkeypatch)
    upstream = _run(getattr(UPSTREAM, name), x, sigmas, _with_noise(kwargs, draws, dtype, dtype),
                    seed)
    with use_backend(backend):
        ours = _run(K.SAMPLERS[name], x, sigmas, _with_noise(kwargs, draws, dtype, dtype), seed)
    _assert_matches(name, dtype, ours, truth, upstream)


@needs_upstream
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("schedule,steps", [("karras", 3), ("karras", 10), ("exponential", 3),
                                            ("exponential", 10)])
@pytest.mark.parametrize("config", CONFIGS, ids=_label)
def test_reference_backend_matches_upstream(config, schedule, steps, dtype, monkeypatch):
    _differential(config, schedule, steps, dtype, "reference", monkeypatch)


@needs_upstream
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=_label)
def test_triton_backend_matches_upstream(config, dtype, monkeypatch):
    _differential(config, "karras", 3, dtype, "triton", monkeypatch)


@needs_upstream
@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("config", [c for c in CONFIGS if c[1].get("noise_sampler") != GIVEN],
                         ids=_label)
def test_same_seed_same_numbers_as_upstream(config, backend):
    """fp32, upstream's own draws: the same global seed gives upstream's samples, and where
    noise is drawn the generator ends where upstream's does (the same draws, in order)."""
    name, kwargs = config
    sigmas = _schedule("karras", 4)
    x = sigmas[0] * torch.randn(SHAPE)
    want, _ = _run(getattr(UPSTREAM, name), x, sigmas, kwargs, seed=11)
    state = torch.get_rng_state()
    with use_backend(backend):
        got, _ = _run(K.SAMPLERS[name], x, sigmas, kwargs, seed=11)
    assert relative_error(got, want) <= CATALOG[OP_OF[name]].tolerance[torch.float32]
    if name == "sample_euler_ancestral" or kwargs.get("s_churn"):
        assert torch.equal(torch.get_rng_state(), state)


@needs_upstream
def test_brownian_tree_noise_sampler():
    """upstream's BrownianTreeNoiseSampler, called with the same sigmas, gives the same noise."""
    sigmas = _schedule("karras", 4)
    x = sigmas[0] * torch.randn(SHAPE)
    outputs = []
    for sampler in (UPSTREAM.sample_euler_ancestral, K.sample_euler_ancestral):
        noise = UPSTREAM.BrownianTreeNoiseSampler(x, 0.02, 8.0, seed=5)
        outputs.append(sampler(denoiser, x, sigmas, noise_sampler=noise, disable=True))
    assert relative_error(outputs[1], outputs[0]) <= 1e-5


@needs_upstream
def test_noise_sampler_is_called_as_upstream_calls_it():
    """With the same sigmas as upstream, where σ_next > 0: not on the last step to 0."""
    sigmas = _schedule("karras", 4)
    x = sigmas[0] * torch.randn(SHAPE)
    draws = [torch.randn(SHAPE) for _ in range(4)]
    calls = []
    for sampler in (UPSTREAM.sample_euler_ancestral, K.sample_euler_ancestral):
        noise = FixedNoise(draws, torch.float32, torch.float32)
        sampler(denoiser, x, sigmas, noise_sampler=noise, disable=True)
        calls.append([(float(a), float(b)) for a, b in noise.calls])
    assert calls[0] == calls[1] and len(calls[1]) == 3


@needs_upstream
def test_no_steps_and_a_schedule_not_ending_in_zero():
    x = torch.randn(SHAPE)
    for name, sampler in K.SAMPLERS.items():
        assert torch.equal(sampler(denoiser, x, torch.tensor([2.0]), disable=True), x)
        sigmas = torch.tensor([3.0, 1.0, 0.5])  # a partial schedule (img2img, split sampling)
        torch.manual_seed(0)
        want = getattr(UPSTREAM, name)(denoiser, x, sigmas, disable=True)
        torch.manual_seed(0)
        got = sampler(denoiser, x, sigmas, disable=True)
        assert relative_error(got, want) <= 1e-5, name


# --------------------------------------------------------------------------------------------------
# per step: the model and one step kernel per evaluation, nothing else, nothing read back
# --------------------------------------------------------------------------------------------------

KERNELS_PER_STEP = {"sample_euler": 1, "sample_euler_ancestral": 1, "sample_heun": 2,
                    "sample_dpmpp_2m": 1}
OP_CONFIGS = [("sample_euler", {"s_churn": 1.0}), ("sample_euler", {}),
              ("sample_heun", {"s_churn": 1.0}), ("sample_euler_ancestral", {}),
              ("sample_dpmpp_2m", {})]


def _counted_loop(name, kwargs, steps):
    sigmas = torch.linspace(4.0, 0.5, steps)  # no final 0: Heun corrects every step
    output = torch.randn(SHAPE)
    model = lambda x, sigma: output  # noqa: E731  (no device op of its own)
    x = torch.randn(SHAPE)
    with no_read_backs():
        _, counted = device_ops(K.SAMPLERS[name], model, x, sigmas, disable=True, **kwargs)
    return counted


@pytest.mark.parametrize("config", OP_CONFIGS, ids=_label)
def test_a_step_is_the_model_its_noise_and_one_kernel(config):
    """The difference between loops of 3 and 5 steps is 2 steps: one step kernel per model
    evaluation, and no device op but the noise upstream draws (aten.randn_like)."""
    name, kwargs = config
    short, long = _counted_loop(name, kwargs, 4), _counted_loop(name, kwargs, 6)
    assert len(long.launches) - len(short.launches) == 2 * KERNELS_PER_STEP[name]
    extra = long.ops - short.ops
    draws = 2 if name == "sample_euler_ancestral" or kwargs.get("s_churn") else 0
    assert dict(extra) == ({"randn_like": draws} if draws else {}), (short.ops, long.ops)
    assert not long.read_backs


# --------------------------------------------------------------------------------------------------
# bad input, the progress bar, the loader and the speed table
# --------------------------------------------------------------------------------------------------

BAD = [  # (keyword arguments over a good call, error, what the message names)
    ({"sigmas": torch.ones(2, 3)}, ValueError, "sigmas"),
    ({"sigmas": torch.tensor([3, 1, 0])}, TypeError, "sigmas"),
    ({"sigmas": [3.0, 1.0, 0.0]}, TypeError, "sigmas"),
    ({"sigmas": torch.zeros(0)}, ValueError, "sigmas"),
    ({"sigmas": torch.tensor([1.0, 3.0, 0.0])}, ValueError, "sigmas"),
    ({"sigmas": torch.tensor([3.0, 0.0, 0.0])}, ValueError, "sigmas"),
    ({"sigmas": torch.tensor([3.0, float("nan"), 0.0])}, ValueError, "sigmas"),
    ({"sigmas": torch.tensor([3.0, 1.0, -1.0])}, ValueError, "sigmas"),
    ({"x": torch.ones(2, 3, dtype=torch.int64)}, TypeError, "x"),
    ({"x": "x"}, TypeError, "x"),
    ({"x": torch.tensor(1.0)}, ValueError, "x"),
]
BAD_OPTIONS = [
    ("sample_euler", {"s_churn": -1.0}, ValueError, "s_churn"),
    ("sample_heun", {"s_noise": float("nan")}, ValueError, "s_noise"),
    ("sample_euler_ancestral", {"eta": -0.5}, ValueError, "eta"),
    ("sample_euler_ancestral", {"eta": "1"}, TypeError, "eta"),
    ("sample_euler_ancestral", {"noise_sampler": lambda s, t: torch.zeros(3)}, ValueError,
     "noise_sampler"),
]


@pytest.mark.parametrize("name", list(K.SAMPLERS))
@pytest.mark.parametrize("bad,error,named", BAD, ids=lambda v: str(v)[:30])
def test_bad_input_raises_naming_the_argument(name, bad, error, named):
    args = {"x": torch.randn(SHAPE), "sigmas": torch.tensor([3.0, 1.0, 0.0]), **bad}
    with pytest.raises(error, match=named):
        K.SAMPLERS[name](denoiser, args["x"], args["sigmas"], disable=True)


@pytest.mark.parametrize("name,options,error,named", BAD_OPTIONS,
                         ids=[f"{c[0]}-{list(c[1])[0]}" for c in BAD_OPTIONS])
def test_bad_options_raise_naming_them(name, options, error, named):
    with pytest.raises(error, match=named):
        K.SAMPLERS[name](denoiser, torch.randn(SHAPE), torch.tensor([3.0, 1.0, 0.0]),
                         disable=True, **options)


def test_progress_bar_as_upstream(capsys):
    sigmas = torch.tensor([3.0, 1.0, 0.5, 0.0])
    K.sample_euler(denoiser, torch.randn(SHAPE), sigmas, disable=False)
    assert "3/3" in capsys.readouterr().err
    K.sample_euler(denoiser, torch.randn(SHAPE), sigmas, disable=True)
    assert capsys.readouterr().err == ""


@needs_upstream
def test_upstream_loaded_without_its_package_init():
    import sys

    assert UPSTREAM.__name__.endswith(".sampling") and K.upstream_sampling() is UPSTREAM
    assert "k_diffusion" not in sys.modules  # a user's own import stays untouched
    placeholder = sys.modules.get("torchvision")
    assert placeholder is None or placeholder.__spec__ is not None


@needs_upstream
@pytest.mark.parametrize("size", ["tiny"])
def test_benchmark_pairs_run_the_same_loop(size):
    pairs = K.benchmark_pairs(size)
    assert {name.split(" ")[0] for name, *_ in pairs} == {f"k_diffusion.{n}" for n in K.SAMPLERS}
    with use_backend("reference"):
        for name, case, upstream, dropin in pairs:
            torch.manual_seed(0)
            want = upstream()
            torch.manual_seed(0)
            assert relative_error(dropin(), want) <= 1e-5, name


def test_benchmark_pairs_without_upstream(monkeypatch):
    monkeypatch.setattr(K, "upstream_sampling", lambda: None)
    assert K.benchmark_pairs("tiny") == []
    with pytest.raises(ValueError, match="size"):
        K.benchmark_pairs("huge")
