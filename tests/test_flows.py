"""The invertible layers of gdm_engine.nn and the flows built from them: log-dets against the
autograd Jacobian, inverses, memory-saving gradients against plain autograd, extreme inputs, the
models' densities and samples, and bad settings."""

import copy
import math

import pytest
import torch

from gdm_engine import data, models
from gdm_engine import nn as gnn
from gdm_engine.testing import relative_error


def _randomize(module, generator, std=0.3):
    """Random parameters instead of the identity start (zero-initialised conditioners)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def _image_inner(shape):
    """A small next scale for a Split, on the channels it keeps."""
    kept = (shape[0] // 2, *shape[1:])
    return gnn.InvertibleSequential(gnn.AffineCoupling(kept, "checkerboard", hidden=4),
                                    gnn.ActNorm(kept[0]))


# (name, layer factory, example shape); every layer is checked in float64 with random weights
LAYERS = [
    ("affine channel softclamp", lambda: gnn.AffineCoupling((3, 2, 2), hidden=4), (3, 2, 2)),
    ("affine channel sigmoid parity 1",
     lambda: gnn.AffineCoupling((4, 2, 1), parity=1, hidden=4, scale_map="sigmoid"), (4, 2, 1)),
    ("affine checkerboard exp",
     lambda: gnn.AffineCoupling((2, 3, 2), "checkerboard", 1, hidden=4, scale_map="exp"),
     (2, 3, 2)),
    ("affine vector", lambda: gnn.AffineCoupling((5,), hidden=8), (5,)),
    ("additive channel", lambda: gnn.AdditiveCoupling((2, 2, 2), hidden=4), (2, 2, 2)),
    ("additive checkerboard",
     lambda: gnn.AdditiveCoupling((1, 3, 3), "checkerboard", hidden=4), (1, 3, 3)),
    ("spline vector", lambda: gnn.SplineCoupling((4,), hidden=8, bins=5, tail_bound=2.0), (4,)),
    ("spline image parity 1",
     lambda: gnn.SplineCoupling((3, 2, 1), parity=1, hidden=4, bins=3), (3, 2, 1)),
    ("actnorm image", lambda: gnn.ActNorm(3), (3, 2, 2)),
    ("actnorm vector", lambda: gnn.ActNorm(4), (4,)),
    ("invconv image", lambda: gnn.InvConv1x1(3), (3, 2, 2)),
    ("invconv vector", lambda: gnn.InvConv1x1(5), (5,)),
    ("squeeze", gnn.Squeeze, (1, 4, 2)),
    ("unsqueeze", gnn.Unsqueeze, (4, 1, 2)),
    ("reshape", lambda: gnn.Reshape((2, 3), (6,)), (2, 3)),
    ("logit", lambda: gnn.Logit(0.05), (2, 3)),
    ("split", lambda: gnn.Split((4, 2, 2), _image_inner((4, 2, 2))), (4, 2, 2)),
    ("sequence", lambda: gnn.InvertibleSequential(gnn.ActNorm(2), gnn.InvConv1x1(2),
                                                  gnn.AffineCoupling((2, 2, 2), hidden=4)),
     (2, 2, 2)),
]
IDS = [name for name, _, _ in LAYERS]


def _layer_and_input(factory, shape, generator, n=3, dtype=torch.float64):
    layer = _randomize(factory(), generator).to(dtype)
    x = torch.randn(n, *shape, generator=generator, dtype=dtype)
    if isinstance(layer, gnn.Logit):
        x = torch.rand(n, *shape, generator=generator, dtype=dtype)
    return layer, x


@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=IDS)
def test_logdet_is_the_log_determinant_of_the_jacobian(name, factory, shape, generator):
    layer, x = _layer_and_input(factory, shape, generator)
    layer.eval()
    _, logdet = layer(x)
    for i in range(len(x)):
        def f(v):
            return layer(v.reshape(1, *shape))[0].reshape(-1)

        jacobian = torch.autograd.functional.jacobian(f, x[i].reshape(-1))
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        assert sign != 0
        assert abs(logdet[i].item() - logabsdet.item()) < 1e-8 * max(1.0, abs(logabsdet.item()))


@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=IDS)
def _amplification(function, points):
    """max over the points of ‖∂function/∂point‖∞ in float64 (at least 1): how far `function`
    carries an error of its input, the fp32 rounding of a flow's output into its inverse."""
    worst = 1.0
    for point in points.double():
        jacobian = torch.autograd.functional.jacobian(
            lambda v: function(v.reshape(1, *point.shape))[0].reshape(-1), point.reshape(-1))
        worst = max(worst, jacobian.abs().sum(dim=1).max().item())
    return worst


def _round_trip_error(got, want, amplification):
    """|got − want| against fp32's rounding of `want`'s scale carried `amplification` times."""
    return ((got.double() - want.double()).abs().max()
            / (amplification * (1 + want.double().abs().max()))).item()


@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=IDS)
def test_inverse_undoes_forward_and_negates_the_logdet_in_fp32(name, factory, shape, generator):
    # The round trip's error is fp32's rounding of y carried through the inverse: where a spline
    # bin is near its minimum slope (1e-3) the inverse amplifies it up to 1000x, so the bound
    # scales with the inverse's amplification (its Jacobian's norm, in float64)
    layer, x = _layer_and_input(factory, shape, generator, n=4, dtype=torch.float32)
    layer.eval()
    y, logdet = layer(x)
    back, inverse_logdet = layer.inverse(y)
    exact = copy.deepcopy(layer).double()
    assert _round_trip_error(back, x, _amplification(exact.inverse, y)) < 1e-5
    assert (logdet + inverse_logdet).abs().max() < 1e-4 * (1 + logdet.abs().max())
    # and the converse: forward(inverse(z)) = z for any z shaped like an output
    z = torch.randn(y.shape, generator=generator)
    inverse_z = layer.inverse(z)[0]
    again, _ = layer(inverse_z)
    assert _round_trip_error(again, z, _amplification(exact, inverse_z)) < 1e-5


@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=IDS)
def test_replay_rebuilds_the_input_and_records_the_output(name, factory, shape, generator):
    layer, x = _layer_and_input(factory, shape, generator)
    y, logdet = layer(x)
    replay = layer.replay(y)
    assert relative_error(replay.input, x) < 1e-10
    assert relative_error(replay.output, y) < 1e-10
    assert relative_error(replay.logdet, logdet) < 1e-10
    assert all(leaf.requires_grad for leaf in replay.leaves)


def _grads(layer, x, weights):
    x = x.clone().requires_grad_()
    y, logdet = layer(x)
    total = (y * weights[0]).sum() + (logdet * weights[1]).sum()
    params = [p for p in layer.parameters() if p.requires_grad]
    return torch.autograd.grad(total, [x, *params], allow_unused=True)


@pytest.mark.parametrize("name, factory, shape", LAYERS, ids=IDS)
def test_memory_saving_gradients_equal_plain_autograd(name, factory, shape, generator):
    layer, x = _layer_and_input(factory, shape, generator)
    y, logdet = layer(x)
    weights = (torch.randn(y.shape, generator=generator, dtype=y.dtype),
               torch.randn(logdet.shape, generator=generator, dtype=logdet.dtype))
    plain = _grads(gnn.InvertibleSequential(layer), x, weights)
    saving = _grads(gnn.InvertibleSequential(layer, memory_saving=True), x, weights)
    for got, want in zip(saving, plain, strict=True):
        if want is None:
            assert got is None or got.abs().max() == 0
        else:
            assert relative_error(got, want) < 1e-8


def _saved_bytes(fn):
    """Bytes of the tensors autograd saves for backward while fn runs."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total[0]


def test_memory_saving_keeps_no_activations_and_matches_a_whole_glow(generator):
    torch.manual_seed(0)
    model = models.Glow((1, 8, 8), levels=17, scales=2, depth=3, hidden=8)
    saving = models.Glow((1, 8, 8), levels=17, scales=2, depth=3, hidden=8, memory_saving=True)
    _randomize(model, generator, std=0.05)
    saving.load_state_dict(model.state_dict())
    x = torch.randint(0, 17, (6, 1, 8, 8), generator=generator)
    seeds = [torch.Generator().manual_seed(3) for _ in range(2)]
    losses = []
    plain_bytes = _saved_bytes(lambda: losses.append(model.loss(x, seeds[0])))
    saving_bytes = _saved_bytes(lambda: losses.append(saving.loss(x, seeds[1])))
    assert saving_bytes * 8 < plain_bytes
    for loss in losses:
        loss.backward()
    for p, q in zip(model.parameters(), saving.parameters(), strict=True):
        assert relative_error(q.grad, p.grad) < 1e-4


def test_memory_saving_refuses_dropout_inside_a_nested_sequence():
    with pytest.raises(ValueError, match="dropout"):
        models.RealNVP((1, 4, 4), levels=17, dropout=0.1, memory_saving=True)
    models.NSF((4,), dropout=0.1, memory_saving=True)  # flat: rebuilt with the same masks


def test_memory_saving_rebuilds_dropout_masks_of_a_flat_flow(generator):
    torch.manual_seed(0)
    plain = _randomize(models.NSF((4,), transforms=2, hidden=8, dropout=0.3), generator)
    saving = models.NSF((4,), transforms=2, hidden=8, dropout=0.3, memory_saving=True)
    saving.load_state_dict(plain.state_dict())
    plain, saving = plain.double(), saving.double()  # float64: masks, not round-off, are tested
    x = torch.randn(5, 4, generator=generator, dtype=torch.float64)
    for model in (plain, saving):
        torch.manual_seed(7)
        model.loss(x).backward()
    for p, q in zip(plain.parameters(), saving.parameters(), strict=True):
        assert relative_error(q.grad, p.grad) < 1e-8


@pytest.mark.parametrize("scale_map", ["softclamp", "sigmoid"])
def test_extreme_inputs_give_finite_outputs(scale_map, generator):
    coupling = _randomize(gnn.AffineCoupling((4,), hidden=8, scale_map=scale_map), generator,
                          std=100.0)
    spline = _randomize(gnn.SplineCoupling((4,), hidden=8), generator, std=100.0)
    x = torch.tensor([[1e4, -1e4, 1e4, -1e4], [-1e4, 1e4, 0.5, -0.5]])
    for layer in (coupling, spline):
        y, logdet = layer(x)
        assert torch.isfinite(y).all() and torch.isfinite(logdet).all()
    if scale_map == "softclamp":  # bounded log s: the inverse stays finite too (with "sigmoid"
        # an s that underflowed to 0 in the forward pass cannot be undone)
        back, logdet = coupling.inverse(coupling(x)[0])
        assert torch.isfinite(back).all() and torch.isfinite(logdet).all()


def test_actnorm_initialises_from_the_first_training_batch(generator):
    layer = gnn.ActNorm(3)
    x = 5 + 2 * torch.randn(64, 3, 4, 4, generator=generator)
    y, logdet = layer(x)
    assert layer.is_initialized and bool(layer.initialized)
    assert y.mean((0, 2, 3)).abs().max() < 1e-4
    assert (y.std((0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    assert torch.allclose(logdet, 16 * layer.log_scale.sum().expand(64))
    before = layer.loc.detach().clone()
    layer(x + 10)  # initialised once only
    assert torch.equal(layer.loc.detach(), before)


def test_actnorm_resumes_initialised_from_a_state_dict(generator):
    """Whether the layer is initialised is a Python bool, so that forward reads nothing back
    (tests/test_read_backs.py); loading a state dict restores it exactly: a resumed layer does
    not initialise again, a fresh one's state keeps it waiting for data."""
    trained = gnn.ActNorm(3)
    x = torch.randn(8, 3, generator=generator)
    trained(x)
    for source, initialised in ((trained, True), (gnn.ActNorm(3), False)):
        resumed = gnn.InvertibleSequential(gnn.ActNorm(3))
        resumed.layers[0].is_initialized = not initialised
        resumed.load_state_dict({f"layers.0.{k}": v for k, v in source.state_dict().items()})
        assert resumed.layers[0].is_initialized == initialised
        resumed(x + 10)
        moved = not torch.equal(resumed.layers[0].loc, source.loc)
        assert moved != initialised


def test_a_2d_flow_density_integrates_to_one(generator):
    model = _randomize(models.NSF((2,), transforms=3, hidden=16, tail_bound=3.0), generator,
                       std=0.15)
    model = model.double().eval()
    grid = torch.linspace(-15, 15, 901, dtype=torch.float64)
    cell = (grid[1] - grid[0]) ** 2
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        mass = sum(model.log_prob(chunk).exp().sum() for chunk in points.split(60_000)) * cell
    assert abs(mass.item() - 1) < 0.01


@pytest.mark.parametrize("name", ["realnvp", "glow", "nsf"])
def test_image_flows_bound_the_log_probability_of_levels(name, generator):
    torch.manual_seed(0)
    model = models.get(name)((1, 4, 4), levels=5, **({"scales": 2} if name != "nsf" else {}))
    _randomize(model, generator, std=0.05).eval()
    x = torch.randint(0, 5, (3, 1, 4, 4), generator=generator)
    draws = torch.Generator().manual_seed(1)
    ones = torch.stack([model.log_prob(x, samples=1, generator=draws) for _ in range(16)])
    many = model.log_prob(x, samples=16, generator=torch.Generator().manual_seed(1))
    assert ones.shape == (16, 3) and torch.isfinite(many).all()
    # on the same 16 draws of the noise the importance-weighted bound is at least their mean
    # (Jensen), and strictly tighter where the draws differ
    assert (many >= ones.mean(0) - 1e-4).all() and (many > ones.mean(0)).any()
    assert model.likelihood.startswith("bound")
    samples = model.sample(5, generator=torch.Generator().manual_seed(2), temperature=0.7)
    assert samples.shape == (5, 1, 4, 4) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() <= 4


def test_samples_are_reproducible_and_temperature_zero_is_the_mode():
    model = models.NSF((2,), transforms=2, hidden=8).eval()
    draw = [model.sample(4, generator=torch.Generator().manual_seed(0)) for _ in range(2)]
    assert torch.equal(*draw)
    centre = model.sample(3, temperature=0.0)
    assert torch.allclose(centre, model.flow.inverse(torch.zeros(3, 2))[0])


def test_continuous_log_prob_is_exact_change_of_variables():
    model = models.NSF((2,), transforms=1, hidden=8).eval()  # identity at initialisation
    x = torch.randn(4, 2)
    want = -0.5 * (x.square().sum(1) + 2 * math.log(2 * math.pi))
    assert torch.allclose(model.log_prob(x), want, atol=1e-5)
    assert model.likelihood == "exact"


BAD_SETTINGS = [
    (lambda: gnn.AffineCoupling((3, 2, 2), partition="stripes"), ValueError, "partition"),
    (lambda: gnn.AffineCoupling((3, 2, 2), scale_map="tanh"), ValueError, "scale_map"),
    (lambda: gnn.AffineCoupling((1, 2, 2)), ValueError, "at least 2 channels"),
    (lambda: gnn.AffineCoupling((4,), "checkerboard"), ValueError, "checkerboard"),
    (lambda: gnn.AffineCoupling((4,), parity=2), ValueError, "parity"),
    (lambda: gnn.SplineCoupling((4,), bins=1), ValueError, "bins"),
    # regression: NSF took tail_bound <= 0 and failed only at its first log_prob
    (lambda: models.NSF((2,), tail_bound=0.0), ValueError, "tail_bound must be a finite number"),
    (lambda: models.NSF((2,), tail_bound=-1), ValueError, "tail_bound must be a finite number"),
    (lambda: gnn.SplineCoupling((4,), tail_bound=math.inf), ValueError, "tail_bound"),
    (lambda: gnn.SplineCoupling((4,), tail_bound="3"), TypeError, "tail_bound must be a number"),
    (lambda: gnn.ActNorm(0), ValueError, "channels"),
    (lambda: gnn.Logit(0.5), ValueError, "alpha"),
    (lambda: gnn.Reshape((2, 3), (5,)), ValueError, "reshape"),
    (lambda: gnn.InvertibleSequential(torch.nn.Linear(2, 2)), TypeError, "InvertibleLayer"),
    (lambda: models.RealNVP((64,)), ValueError, "images"),
    (lambda: models.Glow((1, 6, 6), scales=2), ValueError, "multiples of 4"),
    (lambda: models.NSF((1,)), ValueError, "2 dimensions"),
    (lambda: models.NSF((2,), iwae_samples=0), ValueError, "iwae_samples"),
    (lambda: models.NSF((2,), memory_saving=1), TypeError, "memory_saving"),
    (lambda: models.NSF((2,)).sample(2, temperature=-1.0), ValueError, "temperature"),
    (lambda: gnn.Squeeze()(torch.zeros(1, 1, 3, 2)), ValueError, "even"),
]


@pytest.mark.parametrize("make, error, message", BAD_SETTINGS,
                         ids=[m for _, _, m in BAD_SETTINGS])
def test_bad_settings_raise_clear_errors(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_every_flow_is_registered_and_builds_for_its_data():
    digits, toy = data.load("digits"), data.load("8gaussians")
    for name in ("realnvp", "glow", "nsf"):
        assert models.get(name).name == name
        model = models.get(name).for_data(digits)
        assert model.log_prob(digits.test[:2]).shape == (2,)
    assert models.NSF.for_data(toy).sample(3).shape == (3, 2)
