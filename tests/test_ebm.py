"""The energy-based model: contrastive divergence with a replay buffer, no likelihood, judged and
chosen by the distance of its samples to the data."""

import json

import pytest
import torch

from gdm_engine import data, models, train

TINY = {"hidden": [8], "langevin_steps": 2, "sample_steps": 3, "buffer_size": 64}


@pytest.fixture(scope="module")
def toy():
    full = data.load("8gaussians")
    return data.Data(full.name, full.train[:256], full.valid[:64], full.test[:64], toy=full.toy)


def _ebm(toy, **options):
    return models.EBM.for_data(toy, **{**TINY, **options})


def test_loss_is_finite_and_reaches_every_parameter(toy):
    model = _ebm(toy)
    loss = model.loss(toy.train[:16], generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_negatives_go_back_into_the_buffer_which_the_state_dict_keeps(toy):
    model = _ebm(toy, reinit=0.0)
    before = model.replay.clone()
    model.loss(toy.train[:16], generator=torch.Generator().manual_seed(0))
    changed = (model.replay != before).any(1)
    assert 0 < changed.sum() <= 16  # the chains it ran, no others
    saved = model.state_dict()["replay"]
    assert torch.equal(saved, model.replay)
    rebuilt = models.EBM(**model.config)
    rebuilt.load_state_dict(model.state_dict())
    assert torch.equal(rebuilt.replay, model.replay)


def test_the_buffer_and_chains_stay_inside_the_data_box(toy):
    model = _ebm(toy, step_size=10.0)  # steps that would leave the box without the clamp
    low, high = toy.train.min(0).values, toy.train.max(0).values
    assert ((model.replay >= low) & (model.replay <= high)).all()
    start = model.sample(200, generator=torch.Generator().manual_seed(1), steps=0)
    assert ((start >= low) & (start <= high)).all() and start.std(0).min() > 1
    chains = model.sample(200, generator=torch.Generator().manual_seed(1), steps=2)
    assert ((chains >= low) & (chains <= high)).all()
    assert (chains == low).any() or (chains == high).any()


def test_energy_shape_and_log_prob_says_the_likelihood_is_unnormalised(toy):
    model = _ebm(toy)
    assert model.energy(toy.test[:5]).shape == (5,)
    assert model.likelihood is None
    with pytest.raises(NotImplementedError, match="unnormalised.*energy"):
        model.log_prob(toy.test[:5])
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        model.energy(torch.zeros(5, 3))


def test_sample_shape_and_reproducible_from_the_generator(toy):
    model = _ebm(toy)
    first = model.sample(7, generator=torch.Generator().manual_seed(3))
    again = model.sample(7, generator=torch.Generator().manual_seed(3))
    assert first.shape == (7, 2) and not first.requires_grad
    assert torch.equal(first, again)
    assert model.sample(0).shape == (0, 2)


@pytest.mark.parametrize("options, error, message", [
    ({"hidden": []}, ValueError, "hidden"),
    ({"langevin_steps": 0}, ValueError, "langevin_steps must be >= 1"),
    ({"step_size": -0.1}, ValueError, "step_size"),
    ({"buffer_size": 0}, ValueError, "buffer_size"),
    ({"reinit": 1.5}, ValueError, "reinit"),
    ({"alpha": -1.0}, ValueError, "alpha"),
    ({"spectral_norm": "yes"}, TypeError, "spectral_norm"),
    ({"low": [0.0, 0.0], "high": [0.0, 1.0]}, ValueError, "low must be below high"),
])
def test_bad_options_raise_naming_them(toy, options, error, message):
    with pytest.raises(error, match=message):
        _ebm(toy, **options)


def test_discrete_images_are_modelled_in_the_dequantised_space(generator):
    digits = data.load("digits")
    ebm = models.EBM.for_data(digits, hidden=[16], langevin_steps=2, buffer_size=32)
    assert ebm.dims == 64 and ebm.low.tolist() == [-1.0] * 64
    x = digits.train[:8]
    loss = ebm.loss(x, generator)
    loss.backward()
    assert loss.isfinite() and all(p.grad is not None for p in ebm.parameters())
    # the chains stay in [-1, 1]^64; samples come back as levels shaped like the digits
    assert ebm.replay.min() >= -1 and ebm.replay.max() <= 1
    samples = ebm.sample(5, generator=generator, steps=3)
    assert samples.shape == (5, 1, 8, 8) and samples.dtype == torch.long
    assert samples.min() >= 0 and samples.max() <= 16
    with pytest.raises(TypeError, match="integer levels"):
        ebm.loss(x.float(), generator)


def test_evaluate_reports_sample_distances_and_no_nll(toy):
    figures = train.evaluate(_ebm(toy), toy, "valid", samples=64)
    assert {"sliced_wasserstein", "mmd"} <= set(figures) and "nll_nats" not in figures
    assert figures["sliced_wasserstein"] > 0
    with pytest.raises(ValueError, match="no likelihood"):
        train.evaluate(_ebm(toy), toy, "valid", samples=0)


def test_trainer_chooses_by_sliced_wasserstein_and_its_ema_copies_the_buffer(toy, tmp_path):
    config = train.TrainConfig(steps=4, batch_size=16, eval_every=2, checkpoint_every=4,
                               warmup=1)
    trainer = train.Trainer(_ebm(toy, spectral_norm=True), toy, config, str(tmp_path))
    assert trainer.selection_metric == "sliced_wasserstein"
    result = trainer.fit()
    assert result["step"] == 4 and result["sliced_wasserstein"] > 0
    # the EMA averages weights but keeps the chains themselves, not an average of them
    assert torch.equal(trainer.ema.module.replay, trainer.model.replay)
    weight = trainer.model.network[-1].parametrizations.weight.original
    averaged = trainer.ema.module.network[-1].parametrizations.weight.original
    assert not torch.equal(weight, averaged)
    best = train.load_checkpoint(trainer.best_path)
    assert best["best"]["metric"] == "sliced_wasserstein"
    loaded = train.model_from_checkpoint(best)
    assert loaded.sample(5).shape == (5, 2)


def test_eval_command_and_results_table_report_distances_and_no_nll(monkeypatch, capsys,
                                                                      tmp_path):
    from gdm_engine import cli, recipes

    tiny = recipes.Recipe(settings={"steps": 2, "batch_size": 16, "eval_every": 2}, options=TINY)
    monkeypatch.setitem(recipes.RECIPES, ("ebm", "8gaussians"), tiny)
    assert cli.main(["results", "--models", "ebm", "--data", "8gaussians",
                     "--out", str(tmp_path)]) == 0
    truth, ebm = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert ebm["test nll nats"] is None and ebm["likelihood"] is None
    assert ebm["sliced wasserstein"] > truth["sliced wasserstein"] > 0 and ebm["mmd"] > 0
    assert "| ebm | — |" in (tmp_path / "results.md").read_text()
    best = str(tmp_path / "ebm-8gaussians" / train.BEST_NAME)
    assert cli.main(["eval", "--checkpoint", best, "--json", str(tmp_path / "eval.json")]) == 0
    figures = json.loads((tmp_path / "eval.json").read_text())
    assert "nll_nats" not in figures and figures["sliced_wasserstein"] > 0
    assert "sliced wasserstein" in capsys.readouterr().out
