"""A training step of every registered model, and the forward and backward pass of every layer of
gdm_engine.nn, read nothing back from the device: no `.item()`, `bool(t)`, `nonzero`, no tensor
built from host values (each would stall a GPU until it caught up).

They run on CPU tensors with the backend "triton" and the kernel launches recorded, not run (as
`gdm-engine compile` records them): the ops then take the branch that CUDA tensors take, down to
the launchers, and the test stays quick without running the kernels through the interpreter (their
outputs are left unwritten: only what the host does is checked here, not the numbers). Each is
checked after one warm-up call, which fills what is built once (ActNorm's data-dependent
initialisation, a coupling's compact mask, a convolution's tap table), under
`gdm_engine.testing.no_read_backs`, which fails on the first op that reads device memory back.

The one branch that CPU tensors take and CUDA tensors do not is the check of data values where
it is free (models.base.check_range over _validation.host_values: a CPU tensor's values read
from host memory, no op dispatched); on a GPU the trainer checks them once, on the host, before
it moves its training split to the device.
"""

import pytest
import torch

from gdm_engine import data, models, train, use_backend
from gdm_engine import nn as gnn
from gdm_engine.kernels import recording_launches
from gdm_engine.testing import no_read_backs

# case -> (model, data, tiny options): every registered model, on discrete digits and, where it
# models them, on continuous vectors
MODEL_CASES = {
    "vae digits": ("vae", "digits", {"latent": 2, "hidden": 8, "iwae_samples": 1}),
    "vae vectors": ("vae", "8gaussians", {"latent": 2, "hidden": 8, "iwae_samples": 1}),
    "pixels": ("pixels", "digits", {}),
    "pixelcnn": ("pixelcnn", "digits", {"channels": 4, "layers": 2, "kernel_size": 3}),
    "wavenet": ("wavenet", "digits", {"channels": 4, "layers": 2}),
    "realnvp": ("realnvp", "digits", {"scales": 2, "couplings": 1, "hidden": 4}),
    "glow": ("glow", "digits", {"scales": 2, "depth": 1, "hidden": 4}),
    "glow memory_saving": ("glow", "digits", {"scales": 1, "depth": 1, "hidden": 4,
                                              "memory_saving": True}),
    "nsf digits": ("nsf", "digits", {"transforms": 1, "hidden": 8, "bins": 3}),
    "nsf vectors": ("nsf", "8gaussians", {"transforms": 2, "hidden": 8, "bins": 3}),
    "ebm digits": ("ebm", "digits", {"hidden": [8], "langevin_steps": 2, "buffer_size": 16}),
    "ebm vectors spectral_norm": ("ebm", "8gaussians", {"hidden": [8], "langevin_steps": 2,
                                                        "buffer_size": 16, "spectral_norm": True}),
    "ddpm digits conditional": ("ddpm", "digits", {"timesteps": 10, "width": 8,
                                                   "multipliers": (1, 2), "blocks": 1,
                                                   "conditional": True}),
    "ddpm vectors min_snr": ("ddpm", "8gaussians", {"timesteps": 10, "width": 8, "blocks": 1,
                                                    "min_snr_gamma": 5.0}),
    "gan digits": ("gan", "digits", {"width": 4, "latent": 4}),
    "gan vectors spectral_norm": ("gan", "8gaussians", {"hidden": [8], "latent": 2,
                                                        "spectral_norm": True}),
}
WITHOUT_KERNELS = {"pixels", "gan"}  # models none of whose ops has a kernel


@pytest.fixture(scope="module")
def datasets():
    return {name: data.load(name) for name in ("digits", "8gaussians")}


def test_every_registered_model_is_checked():
    assert {name for name, _, _ in MODEL_CASES.values()} == set(models.MODELS)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_a_training_step_reads_nothing_back(case, datasets, tmp_path):
    """The trainer's own step: every player's forward and backward pass, its clipped optimiser
    step and the EMA update, on the training split the trainer keeps on its device."""
    name, data_name, options = MODEL_CASES[case]
    loaded = datasets[data_name]
    model = train.build_model(name, loaded, **options)
    trainer = train.Trainer(model, loaded, train.TrainConfig(steps=2, batch_size=8),
                            out=str(tmp_path))
    with use_backend("triton"), recording_launches() as launches:
        trainer.train_step()
        with no_read_backs():
            trainer.train_step()
    assert trainer.step == 2
    assert bool(launches) != (name in WITHOUT_KERNELS), "the kernels' path was not taken"


def _image(shape=(4, 4, 4)):
    return lambda: torch.randn(3, *shape)


def _vectors(features=4):
    return lambda: torch.randn(3, features)


def _with_step(network):
    """A denoising network called as the DDPM calls it, with step indices and class labels."""
    def call(x):
        return network(x, torch.randint(10, (len(x),)), torch.randint(3, (len(x),)))
    return call


# name -> (layer factory, input factory): every layer of gdm_engine.nn
LAYERS = {
    "ActNorm image": (lambda: gnn.ActNorm(4), _image()),
    "ActNorm vector": (lambda: gnn.ActNorm(4), _vectors()),
    "AffineCoupling channel": (lambda: gnn.AffineCoupling((4, 4, 4), hidden=4), _image()),
    "AffineCoupling checkerboard":
        (lambda: gnn.AffineCoupling((4, 4, 4), "checkerboard", 1, hidden=4, scale_map="exp"),
         _image()),
    "AdditiveCoupling checkerboard":
        (lambda: gnn.AdditiveCoupling((4, 4, 4), "checkerboard", hidden=4), _image()),
    "SplineCoupling": (lambda: gnn.SplineCoupling((4,), hidden=8, bins=3), _vectors()),
    "Split": (lambda: gnn.Split((4, 4, 4), gnn.InvertibleSequential(gnn.ActNorm(2))), _image()),
    "InvConv1x1": (lambda: gnn.InvConv1x1(4), _image()),
    "InvertibleSequential memory_saving":
        (lambda: gnn.InvertibleSequential(gnn.ActNorm(4), gnn.InvConv1x1(4),
                                          gnn.AffineCoupling((4, 4, 4), hidden=4),
                                          memory_saving=True), _image()),
    "Logit": (lambda: gnn.Logit(0.05), lambda: torch.rand(3, 4)),
    "Reshape": (lambda: gnn.Reshape((4, 4, 4), (64,)), _image()),
    "Squeeze": (gnn.Squeeze, _image()),
    "Unsqueeze": (gnn.Unsqueeze, _image()),
    "MaskedConv2d": (lambda: gnn.MaskedConv2d(4, 8, 3, mask="A", color_groups=2,
                                              activation="gated"), _image()),
    "CausalConv1d": (lambda: gnn.CausalConv1d(4, 8, 2, dilation=2, activation="gated"),
                     lambda: torch.randn(3, 4, 8)),
    "UNet": (lambda: _with_step(gnn.UNet(4, 8, (1, 2), 1, classes=3)), _image()),
    "ResidualMLP": (lambda: _with_step(gnn.ResidualMLP(4, 8, 1, classes=3)), _vectors()),
    "ConditionEmbedding": (lambda: gnn.ConditionEmbedding(8, classes=3),
                           lambda: torch.randint(10, (3,))),
    "mlp": (lambda: gnn.mlp([4, 8, 1], torch.nn.SiLU), _vectors()),
    "spectrally_normalised": (lambda: gnn.spectrally_normalised(
        gnn.mlp([4, 8, 1], torch.nn.SiLU)), _vectors()),
}


def test_every_layer_is_checked():
    exported = {name for name in gnn.__all__ if name != "InvertibleLayer"}
    assert exported == {name.split()[0] for name in LAYERS}


def _forward_and_backward(layer, x):
    """The layer's outputs (a tensor, or y and the log-det) summed and differentiated."""
    out = layer(x)
    sum(t.float().sum() for t in (out if isinstance(out, tuple) else (out,))).backward()


@pytest.mark.parametrize("name", LAYERS)
def test_a_layer_forward_and_backward_read_nothing_back(name):
    make_layer, make_input = LAYERS[name]
    layer, x = make_layer(), make_input()
    x.requires_grad_(x.is_floating_point())
    with use_backend("triton"), recording_launches():
        _forward_and_backward(layer, x)  # the warm-up
        with no_read_backs():
            _forward_and_backward(layer, x)
