"""DDPM: its loss trains, its log_prob is the variational bound of Ho et al. (every term checked
against torch.distributions), the Monte-Carlo bound estimates the same sum, samples are data,
class labels, label dropout and classifier-free guidance reach the network, and checkpoints and
`gdm-engine sample --label` work. Tiny networks and few steps keep it fast."""

import json
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, kl_divergence

from gdm_engine import cli, data, models, train
from gdm_engine.models import DDPM

TINY = {"width": 8, "blocks": 1, "timesteps": 12}


@pytest.fixture(scope="module")
def digits():
    return data.load("digits")


def tiny_images(levels=17, **options):
    """A DDPM of 1x2x2 images: small enough to compute every bound term by hand."""
    return DDPM(shape=(1, 2, 2), levels=levels, **{**TINY, **options}).eval()


def randomise_output_layer(model, generator):
    """The output layer starts at zero; random weights there make the network depend on x_t."""
    layer = model.network.last[-1]
    with torch.no_grad():
        layer.weight.copy_(0.3 * torch.randn(layer.weight.shape, generator=generator))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("min_snr_gamma", [None, 5.0])
def test_loss_is_finite_and_trains_every_weight(digits, prediction, min_snr_gamma, generator):
    model = DDPM.for_data(digits, prediction=prediction, min_snr_gamma=min_snr_gamma, **TINY)
    loss = model(digits.train[:8], generator=generator)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in model.network.last.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_untrained_eps_loss_is_the_noise_variance(digits):
    # the zero-initialised output predicts eps = 0, so the loss is E[eps²] = 1
    model = DDPM.for_data(digits, **TINY)
    loss = model.loss(digits.train[:256], generator=torch.Generator().manual_seed(0))
    assert loss.item() == pytest.approx(1.0, abs=0.05)


def test_mlp_for_vectors():
    toy = data.load("8gaussians")
    model = DDPM.for_data(toy, **TINY)
    assert model.network.__class__.__name__ == "ResidualMLP"
    assert torch.isfinite(model.loss(toy.train[:16]))
    assert model.log_prob(toy.test[:5]).shape == (5,)
    assert model.sample(3, sampler="ddim", steps=3).shape == (3, 2)


def test_level_offsets_are_the_noise_at_low_noise(digits, generator):
    model = DDPM.for_data(digits, **TINY)
    inputs = []
    model.network.first.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    x0 = digits.test[:4].float() / 8 - 1
    noise = torch.randn(x0.shape, generator=generator).clamp(-3, 3)
    t = torch.zeros(4, dtype=torch.long)  # σ = 0.01: the noise moves no pixel half a level
    a = model.alpha_bars[0].float()
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
    model.denoiser()(x_t, t)
    assert inputs[0].shape == (4, 2, 8, 8) and torch.equal(inputs[0][:, :1], x_t)
    assert torch.allclose(inputs[0][:, 1:], noise, atol=1e-3)
    plain = DDPM.for_data(digits, level_offsets=False, **TINY)
    assert plain.network.first.in_channels == 1


def _posterior(x0, x_t, a_t, a_prev):
    """q(x_{t−1} | x_t, x0) of Ho et al. (2020, eq. 6-7), as a torch Normal."""
    beta = 1 - a_t / a_prev
    mean = (math.sqrt(a_prev) * beta / (1 - a_t) * x0
            + math.sqrt(1 - beta) * (1 - a_prev) / (1 - a_t) * x_t)
    return Normal(mean, math.sqrt((1 - a_prev) / (1 - a_t) * beta))


def test_every_bound_term_is_the_formula_of_ho_et_al():
    # prediction "x0" with the zero-initialised output: x̂0 = 0 whatever x_t, so each term is a
    # number that torch.distributions computes from the definitions
    model = tiny_images(prediction="x0")
    x = torch.tensor([[[[7, 8], [9, 8]]], [[[8, 8], [8, 7]]]])  # x0 in {−1/8, 0, 1/8}
    x0 = (x.double() / 8 - 1).flatten(1)
    terms = model.bound_terms(x)
    assert terms.shape == (2, 13) and terms.dtype == torch.float64
    a = model.alpha_bars.tolist()
    x_t = torch.randn(x0.shape, dtype=torch.float64)  # any x_t: the means differ by c_t x0
    for i in range(1, 12):  # L_i: the KL at t = i + 1
        q = _posterior(x0, x_t, a[i], a[i - 1])
        p = _posterior(torch.zeros_like(x0), x_t, a[i], a[i - 1])
        assert torch.allclose(terms[:, i], kl_divergence(q, p).sum(1), rtol=1e-6)
    prior = kl_divergence(Normal(math.sqrt(a[-1]) * x0, math.sqrt(1 - a[-1])), Normal(0.0, 1.0))
    assert torch.allclose(terms[:, -1], prior.sum(1), rtol=1e-6)
    decoder = Normal(0.0, math.sqrt(1 - a[0]))  # N(x̂0, β_1), bins 1/8 wide around each level
    mass = decoder.cdf(x0 + 1 / 16) - decoder.cdf(x0 - 1 / 16)
    assert torch.allclose(terms[:, 0], -mass.log().sum(1), rtol=1e-6)
    assert torch.allclose(model.log_prob(x), -terms.sum(1))


def test_decoder_bins_at_the_ends_are_open():
    model = tiny_images(prediction="x0")
    x = torch.tensor([[[[0, 0], [16, 16]]]])  # x0 = −1 and 1: bins (−inf, −15/16], [15/16, inf)
    got = model.bound_terms(x)[0, 0]
    edge = torch.special.log_ndtr(-(15 / 16) / (1 - model.alpha_bars[0]).sqrt())
    assert torch.isfinite(got) and got.item() == pytest.approx(-4 * edge.item(), rel=1e-9)


def repeated_log_prob(model, x, times, generator):
    """(times, N) independent draws of log_prob(x): the examples repeated in one batch."""
    return model.log_prob(x.repeat(times, 1, 1, 1), generator=generator).view(times, len(x))


def test_stratified_estimate_is_unbiased(generator):
    model = tiny_images(prediction="x0")  # deterministic terms: only the strata draw varies
    x = torch.randint(0, 17, (3, 1, 2, 2), generator=generator)
    exact = model.log_prob(x)
    model.bound_timesteps = 11  # one step per stratum: every KL term once
    assert torch.allclose(model.log_prob(x, generator=generator), exact)
    model.bound_timesteps = 3
    draws = repeated_log_prob(model, x, 600, generator)
    error = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - exact).abs() < 4 * error + 1e-9).all()
    assert (draws.std(0) > 0).all()  # it is an estimate, not the sum again


def test_monte_carlo_bound_agrees_with_the_full_sum_of_a_random_network(generator):
    model = tiny_images()
    randomise_output_layer(model, generator)
    x = torch.randint(0, 17, (4, 1, 2, 2), generator=generator)
    full = repeated_log_prob(model, x, 100, generator)
    model.bound_timesteps = 4
    estimate = repeated_log_prob(model, x, 400, generator)
    error = (full.var(0) / len(full) + estimate.var(0) / len(estimate)).sqrt()
    assert ((full.mean(0) - estimate.mean(0)).abs() < 4 * error).all()
    assert model.likelihood.startswith("bound (variational")


def test_log_prob_of_digits_is_a_finite_bound_in_nats(digits):
    model = DDPM.for_data(digits, bound_timesteps=4, **TINY)
    log_prob = model.log_prob(digits.test[:5])
    assert log_prob.shape == (5,) and torch.isfinite(log_prob).all()
    assert (log_prob <= 0).all()  # a probability mass: log P <= 0, and the bound lies below


@pytest.mark.parametrize("sampler,steps", [("ddpm", None), ("ddim", 4), ("dpmpp_2m", 3)])
def test_samples_are_images_of_levels(digits, sampler, steps, generator):
    model = DDPM.for_data(digits, **TINY).eval()
    randomise_output_layer(model, generator)
    samples = model.sample(5, generator=torch.Generator().manual_seed(1), sampler=sampler,
                           steps=steps)
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.int64
    assert samples.min() >= 0 and samples.max() <= 16
    again = model.sample(5, generator=torch.Generator().manual_seed(1), sampler=sampler,
                         steps=steps)
    assert torch.equal(samples, again)


def _record_labels(model):
    """The labels each network call receives, in order."""
    seen = []
    model.network.embedding.register_forward_hook(lambda module, args, out: seen.append(args[1]))
    return seen


def test_guidance_runs_the_network_once_on_labels_and_null_labels(digits, generator):
    model = DDPM.for_data(digits, conditional=True, **TINY).eval()
    randomise_output_layer(model, generator)
    seen = _record_labels(model)
    labels = torch.tensor([3, 5])
    guided = model.sample(2, sampler="ddim", steps=2, labels=labels, guidance_scale=2.0,
                          generator=torch.Generator().manual_seed(0))
    assert len(seen) == 2  # one network call per step, on the doubled batch
    assert seen[0].tolist() == [3, 5, 10, 10]  # 10 = the null label
    plain = model.sample(2, sampler="ddim", steps=2, labels=labels,
                         generator=torch.Generator().manual_seed(0))
    assert seen[-1].tolist() == [3, 5] and guided.shape == plain.shape == (2, 1, 8, 8)
    model.sample(2, sampler="ddim", steps=2, labels=7)  # an int: every sample of class 7
    assert seen[-1].tolist() == [7, 7]
    model.sample(2, sampler="ddim", steps=2)  # unconditional: None, the network's null label
    assert seen[-1] is None


def test_guidance_scale_one_is_the_conditional_model(digits, generator):
    model = DDPM.for_data(digits, conditional=True, **TINY).eval()
    randomise_output_layer(model, generator)
    with torch.no_grad():  # make the label matter
        model.network.embedding.label.weight.normal_(generator=generator)
    common = dict(sampler="ddim", steps=3, labels=torch.tensor([1, 2]))
    one = model.sample(2, guidance_scale=1.0, generator=torch.Generator().manual_seed(2),
                       **common)
    plain = model.sample(2, generator=torch.Generator().manual_seed(2), **common)
    assert torch.equal(one, plain)


def test_label_dropout_replaces_labels_by_the_null_label(digits):
    labels = torch.arange(10).repeat(40)
    for rate, low, high in [(0.0, 0, 0), (0.5, 0.4, 0.6)]:
        model = DDPM.for_data(digits, conditional=True, label_dropout=rate, **TINY)
        seen = _record_labels(model)
        model.loss(digits.train[:400], labels=labels, generator=torch.Generator().manual_seed(0))
        null = seen[0] == 10
        assert low <= null.float().mean() <= high
        assert torch.equal(seen[0][~null], labels[~null])  # the others are kept


@pytest.mark.parametrize("options,message", [
    ({"schedule": "quadratic"}, "schedule"), ({"prediction": "score"}, "prediction"),
    ({"timesteps": 0}, "timesteps"), ({"min_snr_gamma": -1.0}, "min_snr_gamma"),
    ({"label_dropout": 1.0}, "label_dropout"), ({"classes": -1}, "classes"),
    ({"bound_timesteps": 13}, "bound_timesteps"), ({"width": 0}, "width"),
    ({"multipliers": []}, "multipliers"), ({"dropout": 1.5}, "dropout"),
    ({"shape": (1, 8)}, "shape")])
def test_bad_options_raise_naming_them(options, message):
    with pytest.raises((ValueError, TypeError), match=message):
        DDPM(**{"shape": (1, 8, 8), "levels": 17, **TINY, **options})


def test_bad_labels_and_guidance_raise(digits):
    model = DDPM.for_data(digits, conditional=True, **TINY)
    with pytest.raises(ValueError, match="labels must lie in 0 .. 9"):
        model.log_prob(digits.test[:2], labels=torch.tensor([1, 10]))
    with pytest.raises(TypeError, match="labels must be an int64 tensor"):
        model.loss(digits.train[:2], labels=torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="guidance_scale needs labels"):
        model.sample(2, sampler="ddim", steps=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="unconditional"):
        DDPM.for_data(digits, **TINY).sample(2, labels=3)
    with pytest.raises(ValueError, match="has no labels|needs class labels"):
        DDPM.for_data(data.load("8gaussians"), conditional=True, **TINY)


def test_trainer_feeds_labels_and_checkpoints_round_trip(digits, tmp_path):
    model = train.build_model("ddpm", digits, conditional=True, bound_timesteps=2, **TINY)
    seen = _record_labels(model)
    config = train.TrainConfig(steps=2, batch_size=8, eval_every=2, samples=20)
    trainer = train.Trainer(model, digits, config, out=str(tmp_path))
    trainer.fit()
    indices = trainer.global_batch(0)
    kept = seen[0] != 10
    assert torch.equal(seen[0][kept], digits.labels["train"][indices][kept])
    state = train.load_checkpoint(trainer.best_path)
    assert state["model"] == "ddpm" and state["model_config"]["classes"] == 10
    loaded = train.model_from_checkpoint(state)
    assert isinstance(loaded, models.get("ddpm"))
    x = digits.test[:3]
    want = trainer.ema.module.eval().log_prob(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.log_prob(x, generator=torch.Generator().manual_seed(0)), want)
    assert (tmp_path / "samples-0000002.png").exists()  # one row of 2 per digit


def _checkpoint(name, digits, out, **options):
    trainer = train.Trainer(train.build_model(name, digits, **options), digits,
                            train.TrainConfig(steps=1, batch_size=8), out=str(out))
    out.mkdir()
    trainer.save()
    return trainer.checkpoint_path


def test_a_conditional_run_resumes_with_the_options_that_built_it(digits, tmp_path):
    # `gdm-engine results` resumes with its recipe's options, conditional=True among them: the
    # checkpoint holds what that resolved to (classes=10), and that is what is compared
    options = {"conditional": True, **TINY}
    saved = train.load_checkpoint(_checkpoint("ddpm", digits, tmp_path / "c", **options))
    config = train.TrainConfig(**saved["config"])
    resumed = train.make_trainer("ddpm", digits, config, tmp_path / "c", options, saved=saved)
    assert resumed.model.config["classes"] == 10
    with pytest.raises(ValueError, match=r"cannot change on resume \(classes"):
        train.make_trainer("ddpm", digits, config, tmp_path / "c", {**TINY, "classes": 3},
                           saved=saved)
    with pytest.raises(ValueError, match=r"cannot change on resume \(levels, shape"):
        train.make_trainer("ddpm", data.load("8gaussians"), config, tmp_path / "c", TINY,
                           saved=saved)


def test_cli_samples_a_chosen_digit_with_guidance(digits, tmp_path, capsys):
    checkpoint = _checkpoint("ddpm", digits, tmp_path / "c", conditional=True, **TINY)
    out = tmp_path / "threes.npz"
    assert cli.main(["sample", "--checkpoint", checkpoint, "--n", "4", "--label", "3",
                     "--guidance", "2.0", "--sampler", "dpmpp_2m", "--steps", "3",
                     "--out", str(out)]) == 0
    samples = np.load(out)["samples"]
    assert samples.shape == (4, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 16
    for flags, message in [(["--label", "10"], "--label must be a class in 0 .. 9"),
                           (["--guidance", "2"], "--guidance needs --label"),
                           (["--sampler", "ddpm", "--steps", "5"], "runs all 12 steps")]:
        assert cli.main(["sample", "--checkpoint", checkpoint, *flags,
                         "--out", str(tmp_path / "x.npz")]) == 2
        assert message in capsys.readouterr().err


def test_cli_rejects_labels_and_samplers_that_the_model_lacks(digits, tmp_path, capsys):
    unconditional = _checkpoint("ddpm", digits, tmp_path / "u", **TINY)
    assert cli.main(["sample", "--checkpoint", unconditional, "--label", "3",
                     "--out", str(tmp_path / "x.npz")]) == 2
    assert "--label needs a class-conditional model" in capsys.readouterr().err
    vae = _checkpoint("vae", digits, tmp_path / "v", latent=2, hidden=8)
    assert cli.main(["sample", "--checkpoint", vae, "--sampler", "ddim",
                     "--out", str(tmp_path / "x.npz")]) == 2
    assert "has no choice of sampler (--sampler)" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_cli_eval_sums_the_whole_bound_or_estimates_it(digits, tmp_path, capsys):
    checkpoint = _checkpoint("ddpm", digits, tmp_path / "c", bound_timesteps=2, **TINY)
    figures = {}
    for setting in ("all", "3"):
        out = tmp_path / f"{setting}.json"
        assert cli.main(["eval", "--checkpoint", checkpoint, "--bound-timesteps", setting,
                         "--json", str(out)]) == 0
        figures[setting] = json.loads(out.read_text())["bits_per_dim"]
    model = train.model_from_checkpoint(train.load_checkpoint(checkpoint))
    model.bound_timesteps = None
    want = train.evaluate(model, digits, "test", seed=0)["bits_per_dim"]
    assert figures["all"] == pytest.approx(want, rel=1e-9) and figures["3"] != figures["all"]
    vae = _checkpoint("vae", digits, tmp_path / "v", latent=2, hidden=8)
    assert cli.main(["eval", "--checkpoint", vae, "--bound-timesteps", "all"]) == 2
    assert "has no diffusion bound" in capsys.readouterr().err
