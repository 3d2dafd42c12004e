"""gaussian_reparam_kl beyond the catalog's generic checks: its definition, the noise the kernel
draws itself (statistics, reproducibility, and the backward pass that draws it again), shapes
beyond 2-D, empty batches and bad input."""

import os
import subprocess
import sys

import pytest
import torch

import gdm_engine
from gdm_engine import catalog, reference, testing
from gdm_engine.ops import gaussian_reparam_kl

SPEC = catalog.CATALOG["gaussian_reparam_kl"]
TOL = SPEC.tolerance[torch.float32]


def _posterior(generator, device, *shape):
    mean = torch.randn(*shape, generator=generator).to(device)
    log_var = (torch.randn(*shape, generator=generator) - 1).to(device)
    return mean, log_var


def test_kl_is_the_closed_form_of_torch_distributions(device, generator):
    mean, log_var = _posterior(generator, device, 6, 13)
    with gdm_engine.use_backend("triton"):
        _, kl = gaussian_reparam_kl(mean, log_var, generator=generator)
    posterior = torch.distributions.Normal(mean.double(), (0.5 * log_var.double()).exp())
    prior = torch.distributions.Normal(torch.zeros_like(posterior.loc), 1.0)
    want = torch.distributions.kl_divergence(posterior, prior).sum(1)
    assert testing.relative_error(kl, want) < TOL


def _drawn(mean, log_var, generator):
    """z and the noise the kernel drew for it, recovered as (z - mean) / std."""
    with gdm_engine.use_backend("triton"):
        z, kl = gaussian_reparam_kl(mean, log_var, generator=generator)
    return z, kl, (z.double() - mean.double()) / (0.5 * log_var.double()).exp()


def test_drawn_noise_is_standard_normal_and_reproducible(device):
    mean, log_var = torch.zeros(64, 64, device=device), torch.zeros(64, 64, device=device)
    _, _, eps = _drawn(mean, log_var, torch.Generator().manual_seed(1))
    _, _, again = _drawn(mean, log_var, torch.Generator().manual_seed(1))
    _, _, other = _drawn(mean, log_var, torch.Generator().manual_seed(2))
    assert torch.equal(eps, again) and not torch.equal(eps, other)
    # 4096 draws: the mean is within 4 standard errors of 0, the variance within 10% of 1
    assert abs(eps.mean().item()) < 4 / 64 and abs(eps.var().item() - 1) < 0.1
    # no element repeats another: every element has its own random stream
    assert eps.flatten().unique().numel() == eps.numel()


def test_split_rows_give_the_same_noise_and_kl(monkeypatch, device, generator):
    # On a GPU few long rows are cut into partial KL sums along D; force that here. Every element
    # must draw the same noise however the row is cut, and the partial sums must add up.
    from gdm_engine.kernels import gaussian_reparam_kl as kernels

    mean, log_var = _posterior(generator, device, 3, 70)
    whole = _drawn(mean, log_var, torch.Generator().manual_seed(5))
    monkeypatch.setattr(kernels, "num_programs_target", lambda device: 1 << 10)
    split = _drawn(mean, log_var, torch.Generator().manual_seed(5))
    assert torch.equal(whole[0], split[0])
    assert testing.relative_error(split[1], whole[1]) < TOL


def test_large_log_var_does_not_overflow(device):
    # exp(log_var / 2), not sqrt(exp(log_var)): exp(100) overflows fp32, exp(50) does not.
    mean, log_var, noise = (torch.full((2, 8), v, device=device) for v in (0.0, 100.0, 1.0))
    with gdm_engine.use_backend("triton"):
        z, _ = gaussian_reparam_kl(mean, log_var, noise)
    assert testing.relative_error(z, torch.full((2, 8), 50.0, dtype=torch.float64).exp()) < TOL


def test_backward_draws_the_same_noise_again(device, generator):
    mean, log_var = _posterior(generator, device, 5, 11)
    mean.requires_grad_(), log_var.requires_grad_()
    z, kl, eps = _drawn(mean, log_var, generator)
    grad_z, grad_kl = torch.randn(z.shape, generator=generator), torch.randn(5, generator=generator)
    got = torch.autograd.grad((z, kl), (mean, log_var), (grad_z.to(device), grad_kl.to(device)))
    inputs = [t.detach().double().requires_grad_() for t in (mean, log_var)]
    ref = reference.gaussian_reparam_kl(*inputs, eps.detach())
    want = torch.autograd.grad(ref, inputs, (grad_z.double(), grad_kl.double()))
    for g, w in zip(got, want):
        assert testing.relative_error(g, w) < 1e-4  # eps recovered from fp32 z: not exact


def test_backward_reads_an_expanded_kl_gradient_in_place(device, generator):
    # kl.sum() hands back a stride-0 gradient: the kernel reads it through its stride, so the
    # backward needs no copy (no device op besides its kernel) and still gets it right.
    mean, log_var, noise = (t.requires_grad_() for t in (*_posterior(generator, device, 4, 9),
                                                         torch.randn(4, 9, device=device)))
    with gdm_engine.use_backend("triton"):
        z, kl = gaussian_reparam_kl(mean, log_var, noise)
    grad_z, grad_kl = torch.randn(z.shape, generator=generator).to(device), torch.ones(()).to(device)
    grads = (z, kl), (mean, log_var, noise), (grad_z, grad_kl.expand(4))
    _, counted = testing.device_ops(torch.autograd.grad, *grads, retain_graph=True)
    assert counted.count == 0, dict(counted.ops)
    with gdm_engine.use_backend("triton"):
        got = torch.autograd.grad(*grads)
    inputs = [t.detach().double().requires_grad_() for t in (mean, log_var, noise)]
    want = torch.autograd.grad(reference.gaussian_reparam_kl(*inputs), inputs,
                               (grad_z.double(), grad_kl.double().expand(4)))
    for g, w in zip(got, want):
        assert testing.relative_error(g, w) < TOL


SEEDS_SHARE_ONE_BUILD = """
import torch
from gdm_engine import compile as aot, use_backend
from gdm_engine.kernels import recording_launches
from gdm_engine.ops.gaussian_reparam_kl import library_op

mean, log_var = (torch.randn(4, 64, requires_grad=True) for _ in range(2))
builds = set()
for seed in (1, 16, 7):
    with recording_launches() as launches, use_backend("triton"):
        z, kl = library_op(mean, log_var, None, seed=seed)
        torch.autograd.grad((z, kl), (mean, log_var), (torch.ones_like(z), torch.ones_like(kl)))
    builds.add(tuple(aot._key(job) for launch in launches for job in aot.specialise("op", launch, 90)))
print(len(launches), len(builds))
"""


def test_seeds_share_one_compiled_variant():
    # Triton specialises an int argument equal to 1 or divisible by 16 (a new build for each);
    # a seed must not be, or a sampling loop would compile in its middle. Triton's own binder, as
    # `gdm-engine compile` drives it, must give seeds 1, 16 and 7 the same builds, forward and
    # backward. It builds for GPUs, so it runs without the interpreter, in a process of its own.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", SEEDS_SHARE_ONE_BUILD], capture_output=True,
                         text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["2", "1"]  # a forward and a backward launch, one set of builds


def test_reference_noise_is_reproducible_from_the_generator():
    mean, log_var = torch.zeros(3, 4), torch.zeros(3, 4)
    draws = [gaussian_reparam_kl(mean, log_var, generator=torch.Generator().manual_seed(5))[0]
             for _ in range(2)]
    assert torch.equal(*draws) and draws[0].abs().sum() > 0


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_examples_of_any_shape_sum_kl_over_all_but_the_first_dimension(backend, device, generator):
    mean, log_var = _posterior(generator, device, 3, 2, 4, 5)
    noise = torch.randn(mean.shape, generator=generator).to(device)
    with gdm_engine.use_backend(backend):
        z, kl = gaussian_reparam_kl(mean, log_var, noise)
    z_flat, kl_flat = reference.gaussian_reparam_kl(mean.flatten(1).double(),
                                                    log_var.flatten(1).double(),
                                                    noise.flatten(1).double())
    assert z.shape == mean.shape and kl.shape == (3,)
    assert testing.relative_error(z.flatten(1), z_flat) < TOL
    assert testing.relative_error(kl, kl_flat) < TOL


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_batch(backend, device):
    mean = torch.zeros(0, 8, device=device, requires_grad=True)
    log_var = torch.zeros(0, 8, device=device, requires_grad=True)
    with gdm_engine.use_backend(backend):
        z, kl = gaussian_reparam_kl(mean, log_var)
        (z.sum() + kl.sum()).backward()
    assert z.shape == (0, 8) and kl.shape == (0,) and mean.grad.shape == (0, 8)


BAD_INPUTS = {
    "mean rank": (lambda m, v, e: (m[0], v[0], None, None), ValueError, "mean must have shape (N"),
    "mean type": (lambda m, v, e: (m.tolist(), v, None, None), TypeError, "mean must be a torch"),
    "log_var shape": (lambda m, v, e: (m, v[:, :3], None, None), ValueError, "log_var must have"),
    "log_var dtype": (lambda m, v, e: (m, v.half(), None, None), TypeError, "log_var has dtype"),
    "integer mean": (lambda m, v, e: (m.long(), v, None, None), TypeError, "mean must be float32"),
    "noise shape": (lambda m, v, e: (m, v, e[:1], None), ValueError, "noise must have the shape"),
    "noise device": (lambda m, v, e: (m, v, e.to("meta"), None), ValueError, "noise is on meta"),
    "generator type": (lambda m, v, e: (m, v, None, 3), TypeError, "generator must be"),
    "noise and generator": (lambda m, v, e: (m, v, e, torch.Generator()), ValueError,
                            "noise or generator"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_raises_naming_the_argument(name):
    make, error, message = BAD_INPUTS[name]
    mean, log_var, noise, generator = make(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4))
    with pytest.raises(error, match=message.replace("(", r"\(")):
        gaussian_reparam_kl(mean, log_var, noise, generator=generator)
