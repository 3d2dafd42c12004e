"""What only a GPU can show: the sampler loops and a training step of every model never
synchronise with the host, and a loop captured in a CUDA graph replays fresh noise every step,
equal to the eager loop for the same generator. Skipped without CUDA; bench/run_gpu.sh runs them
(pytest -m gpu)."""

import contextlib

import pytest
import torch

from gdm_engine import data, sampling, train
from test_read_backs import MODEL_CASES

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SHAPE = (64, 4, 16, 16)
NOISY = {  # every loop, with noise wherever it takes any
    "ddpm": lambda model, schedule, **kw: sampling.ddpm_sample(model, SHAPE, schedule[:20], **kw),
    "ddim": lambda model, schedule, **kw: sampling.ddim_sample(model, SHAPE, schedule, 20,
                                                                eta=1.0, **kw),
    "euler": lambda model, schedule, **kw: sampling.euler_sample(model, SHAPE, schedule, 20,
                                                                  churn=0.3, **kw),
    "heun": lambda model, schedule, **kw: sampling.heun_sample(model, SHAPE, schedule, 20,
                                                                churn=0.3, **kw),
    "dpmpp_2m": lambda model, schedule, **kw: sampling.dpmpp_2m_sample(model, SHAPE, schedule,
                                                                        20, **kw),
    "langevin": lambda model, schedule, **kw: sampling.annealed_langevin_sample(
        model, SHAPE, torch.tensor([1.0, 0.5]), steps_per_level=10, **kw),
}


def _model():
    """A stand-in model that depends on x and t, capturable: no host work per call."""
    weight = torch.linspace(0.5, 1.5, SHAPE[1], device="cuda").reshape(1, -1, 1, 1)

    def model(x, t):
        return 0.1 * x * weight + 1e-3 * t.reshape(-1, 1, 1, 1)

    return model


@contextlib.contextmanager
def _no_synchronisation():
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def _run(name, seed, **kw):
    schedule = sampling.linear_alpha_bars(1000)  # handed over on the CPU, read once
    return NOISY[name](_model(), schedule, device="cuda",
                       generator=torch.Generator().manual_seed(seed), **kw)


@pytest.mark.parametrize("name", list(NOISY))
def test_twenty_steps_of_every_loop_never_synchronise(name):
    _run(name, 0)  # the first launch of each kernel builds it, which synchronises
    with _no_synchronisation():
        _run(name, 1)


@pytest.mark.parametrize("name", list(NOISY))
def test_a_replayed_step_draws_fresh_noise_and_equals_the_eager_loop(name):
    eager = _run(name, 3)
    graphed = _run(name, 3, cuda_graph=True)
    torch.testing.assert_close(graphed, eager, rtol=1e-4, atol=1e-4)
    # another generator: other noise at every step, so another result
    assert (_run(name, 4, cuda_graph=True) - graphed).abs().max() > 1e-2


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_a_training_step_of_every_model_never_synchronises(case, tmp_path):
    """The trainer's own step (every player's forward and backward, the optimiser step, the EMA)
    on the device: the model cases of tests/test_read_backs.py, on CUDA."""
    name, data_name, options = MODEL_CASES[case]
    loaded = data.load(data_name)
    model = train.build_model(name, loaded, **options)
    trainer = train.Trainer(model, loaded, train.TrainConfig(steps=3, batch_size=8),
                            out=str(tmp_path))
    assert trainer.device.type == "cuda"
    trainer.train_step()  # builds and tunes the kernels, initialises data-dependent layers
    with _no_synchronisation():
        trainer.train_step()
