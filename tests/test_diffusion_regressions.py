"""Regression tests of the defects a differential fuzz of the diffusion ops found (issue 19,
item 7), each on both backends: the Triton kernel through the interpreter and the reference."""

import math

import pytest
import torch

from gdm_engine import ops, reference, use_backend
from gdm_engine.testing import relative_error

BACKENDS = ["triton", "reference"]


def _randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("step", [ops.ddpm_step, ops.ddim_step])
def test_clip_and_threshold_together_clamp_to_both(backend, step):
    # the threshold's scale used to overwrite the clip on the kernel path
    x_t, m, z = (3 * _randn(4, 50, seed=s) for s in range(3))
    with use_backend(backend):
        out = step(x_t, m, 0.5, 0.7, prediction="x0", clip=0.5, threshold=0.6, noise=z)
    ref_step = reference.ddpm_step if step is ops.ddpm_step else reference.ddim_step
    want = ref_step(x_t.double(), m.double(), 0.5, 0.7, z.double(), prediction="x0", clip=0.5,
                    threshold=0.6)
    assert relative_error(out, want) < 1e-5
    # x0 clipped to ±0.5 first: the quantile of |x0| is below 1, so s = 1 and x0 stays clipped
    clipped_only = ref_step(x_t.double(), m.double(), 0.5, 0.7, z.double(), prediction="x0",
                            clip=0.5)
    assert relative_error(want, clipped_only) < 1e-12


def _diffusers_ddim_step(x_t, m, t, prev_t, alpha_bars, use_clipped):
    diffusers = pytest.importorskip("diffusers")
    scheduler = diffusers.DDIMScheduler(num_train_timesteps=len(alpha_bars), clip_sample=True,
                                        clip_sample_range=1.0, set_alpha_to_one=True)
    scheduler.alphas_cumprod = alpha_bars
    scheduler.set_timesteps(len(alpha_bars) // (t - prev_t))
    return scheduler.step(m, t, x_t, eta=0.0, use_clipped_model_output=use_clipped).prev_sample


@pytest.mark.parametrize("use_clipped", [False, True])
def test_ddim_clip_follows_the_published_convention(use_clipped):
    # x0 is clipped; eps stays the model's unless use_clipped_model_output (DDIM's code,
    # diffusers' DDIMScheduler): the direction term used to come from the clipped x0 always
    x_t, m = 2 * _randn(3, 40, dtype=torch.float64), _randn(3, 40, seed=1, dtype=torch.float64)
    a, a_prev = 0.3, 0.6
    with use_backend("triton"):
        kernel = ops.ddim_step(x_t.float(), m.float(), a, a_prev, clip=1.0,
                               use_clipped_model_output=use_clipped)
    ref = reference.ddim_step(x_t, m, a, a_prev, clip=1.0, use_clipped_model_output=use_clipped)
    assert relative_error(kernel, ref) < 1e-5
    x0 = ((x_t - math.sqrt(1 - a) * m) / math.sqrt(a)).clamp(-1, 1)
    eps = (x_t - math.sqrt(a) * x0) / math.sqrt(1 - a) if use_clipped else m
    assert relative_error(ref, math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps) < 1e-12


def test_ddim_clip_matches_diffusers():
    alpha_bars = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    x_t, m = 2 * _randn(2, 3, 8, 8), _randn(2, 3, 8, 8, seed=1)
    for use_clipped in (False, True):
        want = _diffusers_ddim_step(x_t, m, 520, 500, alpha_bars.float(), use_clipped)
        with use_backend("triton"):
            got = ops.ddim_step(x_t, m, float(alpha_bars[520]), float(alpha_bars[500]), clip=1.0,
                                use_clipped_model_output=use_clipped)
        assert relative_error(got, want) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_dpmpp_with_an_x0_model_returns_fresh_tensors(backend):
    # the reference returned model_output itself as D, which a custom op may not
    x, m = _randn(2, 5), _randn(2, 5, seed=1)
    with use_backend(backend):
        out, d = ops.dpmpp_2m_step(x, m, 1.0, 0.5, prediction="x0")
    assert torch.equal(d, m) and d.data_ptr() != m.data_ptr()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_every_step_returns_x_dtype_and_the_loss_at_least_fp32(backend, dtype):
    x, m, z = (_randn(3, 4, dtype=dtype, seed=s) for s in range(3))
    with use_backend(backend):
        assert ops.ddpm_step(x, m, 0.5, 0.6, noise=z).dtype == dtype
        assert ops.euler_step(x, m, 1.0, 0.5).dtype == dtype
        assert ops.langevin_step(x, m, 0.1, noise=z).dtype == dtype
        assert ops.q_sample(x, 0.5, z).dtype == dtype
        loss = ops.diffusion_loss(300 * m, x, z, 0.5)
    assert loss.dtype == torch.float32 and torch.isfinite(loss).all()  # 300² overflows fp16


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype, a", [(torch.bfloat16, 0.999), (torch.float16, 0.9999)])
def test_q_sample_gradient_keeps_the_noise_coefficient(backend, dtype, a):
    # ᾱ rounded to the gradient's dtype first made √(1 − ᾱ) exactly 0
    x0 = _randn(2, 8, dtype=dtype).requires_grad_()
    noise = _randn(2, 8, dtype=dtype, seed=1).requires_grad_()
    with use_backend(backend):
        ops.q_sample(x0, a, noise).sum().backward()
    assert torch.allclose(noise.grad.double(), torch.full((2, 8), math.sqrt(1 - a),
                                                          dtype=torch.float64), rtol=1e-2)


@pytest.mark.parametrize("call, name", [
    (lambda x: ops.ddpm_step(x, None, 0.5, 0.6), "model_output"),
    (lambda x: ops.heun_step(x, x, None, 1.0, 0.5), "model_output_next"),
    (lambda x: ops.langevin_step(x, None, 0.1), "score"),
    (lambda x: ops.q_sample(x, 0.5, None), "noise"),
    (lambda x: ops.diffusion_loss(x, x, None, 0.5), "noise"),
    (lambda x: ops.diffusion_loss(x, None, x, 0.5), "x0"),
])
def test_required_tensors_are_refused_when_none(call, name):
    with pytest.raises(TypeError, match=name):
        call(_randn(2, 3))


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_shapes(backend):
    with use_backend(backend):
        assert ops.diffusion_loss(*(torch.zeros(0, 5) for _ in range(3)), 0.5).shape == (0,)
        loss = ops.diffusion_loss(*(torch.zeros(3, 0) for _ in range(3)), 0.5)
        assert torch.equal(loss, torch.zeros(3))  # no elements lose nothing (not NaN)
        empty = torch.zeros(3, 0)
        assert ops.ddpm_step(empty, empty, 0.5, 0.6, threshold=0.9).shape == (3, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_float_schedule_values_are_checked_and_used_exactly(backend):
    # checks in float64 (fp32 rounds 1 − 1e-8 to 1 and 1e-300 to 0, which are refused)
    x, m, z = (_randn(2, 3, seed=s) for s in range(3))
    with use_backend(backend):
        out = ops.ddpm_step(x, m, 1 - 1e-8, 1.0, noise=z)
        assert torch.isfinite(out).all()
        assert torch.isfinite(ops.euler_step(x, m, 1e-300, 0.0, prediction="x0")).all()
    with pytest.raises(ValueError, match="alpha_bar_t"):
        ops.ddpm_step(x, m, 1.0, 1.0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_v_prediction_at_large_sigma_in_fp16(backend):
    # σ² = 90,000 overflows fp16: the reference now forms its coefficients in fp32
    x, m = (_randn(4, 64, dtype=torch.float16, seed=s) for s in range(2))
    with use_backend(backend):
        out = ops.euler_step(300 * x, m, 300.0, 200.0, prediction="v")
    want = reference.euler_step(300 * x.double(), m.double(), 300.0, 200.0, prediction="v")
    assert relative_error(out, want) < 3e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("options", [{"clip": 1.0}, {"threshold": 0.9}])
def test_nan_model_output_stays_nan_through_the_clamp(backend, options):
    # tl.maximum / tl.minimum drop NaN; the reference (torch.clamp) keeps it
    x, m = _randn(2, 6), _randn(2, 6, seed=1)
    m[0, 2] = float("nan")
    with use_backend(backend):
        out = ops.ddim_step(x, m, 0.5, 0.7, prediction="x0", **options)
    assert out[0, 2].isnan() and torch.isfinite(out[1]).all()
