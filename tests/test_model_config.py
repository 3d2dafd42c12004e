"""A model's config is derived once, in GenerativeModel, from its constructor's arguments: the
arguments with the constructor's defaults, as plain values (tuples as lists), from which
``type(model)(**model.config)`` rebuilds it, and which equals what checkpoints have stored; no
constructor lists its arguments a second time."""

import ast
import inspect
import textwrap

import pytest
import torch

from gdm_engine import models

# every registered model with non-default arguments (tuples where the constructor takes
# sequences), small enough to build at once
ARGUMENTS = {
    "vae": dict(shape=(2,), latent=3, hidden=5, iwae_samples=2, dropout=0.25),
    "pixels": dict(shape=(1, 2, 2), levels=3),
    "pixelcnn": dict(shape=(3, 4, 4), levels=4, channels=6, layers=2, kernel_size=3, hidden=9,
                     dropout=0.5),
    "wavenet": dict(shape=(8,), levels=4, channels=4, skip_channels=5, layers=2, stacks=2,
                    kernel_size=3, hidden=7),
    "realnvp": dict(shape=(1, 4, 4), levels=4, scales=1, couplings=1, hidden=8, scale_map="exp",
                    memory_saving=True, iwae_samples=2),
    "glow": dict(shape=(1, 4, 4), levels=4, scales=1, depth=2, hidden=8, dropout=0.1),
    "nsf": dict(shape=(1, 2, 2), levels=4, transforms=1, hidden=8, bins=4, tail_bound=3.0,
                iwae_samples=3),
    "ebm": dict(shape=(2,), low=(-2.0, -3.0), high=(2.0, 3.0), hidden=(4,), langevin_steps=2,
                sample_steps=3, buffer_size=5, temperature=0.5),
    "ddpm": dict(shape=(1, 8, 8), levels=4, schedule="cosine", timesteps=10, prediction="v",
                 width=8, multipliers=(1,), blocks=1, classes=3, bound_timesteps=5),
    "gan": dict(shape=(2,), latent=3, width=4, hidden=(5, 6), r1=0.0, discriminator_steps=2,
                betas=(0.5, 0.9)),
}  # fmt: skip


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _defaults(cls):
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]  # less self
    return {p.name: p.default for p in parameters if p.default is not p.empty}


def test_every_model_is_covered():
    assert set(ARGUMENTS) == set(models.MODELS)


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_config_is_the_arguments_with_defaults_as_plain_values(name):
    cls = models.MODELS[name]
    model = cls(**ARGUMENTS[name])
    expected = {k: _plain(v) for k, v in {**_defaults(cls), **ARGUMENTS[name]}.items()}
    assert model.config == expected
    assert set(model.config) == set(inspect.signature(cls.__init__).parameters) - {"self"}
    rebuilt = type(model)(**model.config)
    assert rebuilt.config == model.config
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


# defaults of None that the constructor resolves are recorded resolved, as checkpoints have
# always stored them (these configs are those the previous code wrote)
RESOLVED = [
    (
        "pixelcnn",
        dict(shape=(1, 4, 4), levels=4),
        {"channels": 64, "dropout": 0.0, "hidden": 128, "kernel_size": 5, "layers": 6,
         "levels": 4, "shape": [1, 4, 4]},
    ),
    (
        "wavenet",
        dict(shape=(8,), levels=4),
        {"channels": 32, "dropout": 0.0, "hidden": 64, "kernel_size": 2, "layers": 10,
         "levels": 4, "shape": [8], "skip_channels": 32, "stacks": 1},
    ),
    (
        "ebm",
        dict(shape=(2,)),
        {"alpha": 0.1, "buffer_size": 10000, "hidden": [128, 128], "high": [1.0, 1.0],
         "langevin_steps": 40, "levels": None, "low": [-1.0, -1.0], "reinit": 0.05,
         "sample_steps": 400, "shape": [2], "spectral_norm": False, "step_size": 0.01,
         "temperature": 1.0},
    ),
    (
        "gan",
        dict(shape=(1, 8, 8)),
        {"betas": [0.0, 0.99], "discriminator_steps": 1, "hidden": [256, 256, 256], "latent": 64,
         "levels": None, "r1": 1.0, "shape": [1, 8, 8], "spectral_norm": False, "width": 32},
    ),
    (
        "realnvp",
        dict(shape=[1, 4, 4]),
        {"alpha": 0.05, "couplings": 3, "dropout": 0.0, "hidden": 64, "iwae_samples": 1,
         "levels": None, "memory_saving": False, "scale_map": "softclamp", "scales": 2,
         "shape": [1, 4, 4]},
    ),
]  # fmt: skip


@pytest.mark.parametrize("name, arguments, saved", RESOLVED, ids=[r[0] for r in RESOLVED])
def test_config_equals_what_checkpoints_stored(name, arguments, saved):
    model = models.MODELS[name](**arguments)
    assert model.config == saved
    assert models.MODELS[name](**saved).config == saved


def _constructors():
    """Each model class's own __init__ (the registered ones and their parents in models)."""
    classes = {
        parent
        for cls in models.MODELS.values()
        for parent in cls.__mro__
        if issubclass(parent, models.GenerativeModel) and parent is not models.GenerativeModel
    }
    return sorted((c for c in classes if "__init__" in vars(c)), key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _constructors(), ids=lambda c: c.__name__)
def test_a_constructor_does_not_repeat_its_arguments_to_super(cls):
    # super().__init__ gets what the parents use, positionally, and by keyword only the values
    # resolved for defaults of None (GenerativeModel records the arguments themselves)
    tree = ast.parse(textwrap.dedent(inspect.getsource(vars(cls)["__init__"])))
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "__init__"
        and isinstance(node.func.value, ast.Call)
        and getattr(node.func.value.func, "id", None) == "super"
    ]
    assert len(calls) == 1
    defaults = _defaults(cls)
    keywords = [k.arg for k in calls[0].keywords if k.arg is not None]  # None: **options
    assert all(k in defaults and defaults[k] is None for k in keywords), keywords


class _RealNVPWithOptions(models.RealNVP):
    """A user's subclass that passes its options through, naming none of its parents'."""

    def __init__(self, shape, levels=None, **options):
        super().__init__(shape, levels, **options)


class _NarrowGAN(models.GAN):
    """A user's subclass that fixes some of its parent's options and names one."""

    def __init__(self, shape, width=4):
        super().__init__(shape, width=width, hidden=[5])


def test_a_user_s_subclass_gets_its_parents_defaults_and_rebuilds(generator):
    flow = _RealNVPWithOptions([1, 4, 4], 4, hidden=8, couplings=1)
    expected = {**_defaults(models.RealNVP), "shape": [1, 4, 4], "levels": 4, "hidden": 8,
                "couplings": 1}
    assert flow.config == {k: _plain(v) for k, v in expected.items()}
    x = torch.randint(0, 4, (3, 1, 4, 4), generator=generator)
    assert flow.log_prob(x).shape == (3,)
    gan = _NarrowGAN([2])
    assert gan.config["width"] == 4 and gan.config["hidden"] == [5]
    assert gan.config["r1"] == _defaults(models.GAN)["r1"]
    assert gan.loss(torch.randn(4, 2, generator=generator), generator, player="generator").isfinite()
    # a checkpoint rebuilds a model by its registered name
    assert models.GAN(**gan.config).config == gan.config
