"""The GAN (the implicit family) and the trainer's players: losses, shapes, the R1 penalty,
spectral normalisation, each player stepping only its own weights, and mode coverage on
8gaussians within a short budget."""

import json

import pytest
import torch

from gdm_engine import data, metrics, models, train
from gdm_engine.models import GAN, Player


def _digit_gan(**options):
    return GAN(shape=(1, 8, 8), levels=17, width=8, latent=16, **options)


def test_log_prob_raises_saying_a_gan_has_no_likelihood():
    with pytest.raises(NotImplementedError, match="implicit model.*no\\s+likelihood"):
        _digit_gan().log_prob(torch.zeros(2, 1, 8, 8, dtype=torch.long))
    assert GAN.likelihood is None


def test_samples_are_levels_for_discrete_data_and_vectors_for_toys(generator):
    levels = _digit_gan().sample(5, generator=generator)
    assert levels.shape == (5, 1, 8, 8) and levels.dtype == torch.long
    assert levels.min() >= 0 and levels.max() <= 16
    toy = GAN(shape=(2,), hidden=[16])
    assert toy.sample(7, generator=generator).shape == (7, 2)
    assert toy.sample(0).shape == (0, 2)
    # a seeded draw repeats
    first = toy.sample(3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, toy.sample(3, generator=torch.Generator().manual_seed(1)))


def test_32x32_images_work(generator):
    gan = GAN(shape=(3, 32, 32), levels=256, width=4)
    assert gan.sample(2, generator=generator).shape == (2, 3, 32, 32)
    x = torch.randint(0, 256, (2, 3, 32, 32), generator=generator)
    for player in ("discriminator", "generator"):
        assert gan.loss(x, generator, player=player).isfinite()


def test_the_discriminator_loss_adds_r1_on_real_data(generator):
    gan = GAN(shape=(2,), hidden=[16, 16], r1=0.0)
    x = torch.randn(32, 2, generator=generator)
    seed = 7

    def loss(r1):
        gan.config["r1"] = r1
        return gan.discriminator_loss(x, torch.Generator().manual_seed(seed))

    real = x.clone().requires_grad_()
    (gradient,) = torch.autograd.grad(gan.discriminator(real).sum(), real)
    penalty = gradient.square().sum(1).mean()
    assert penalty > 0
    # the loss is ~300 penalties, and its two fp32 evaluations round differently (a few ulp,
    # ~2e-7, by thread order and the autograd path's matmul blocking): at r1 = 2 that was 1.2e-4
    # of the difference (CI); r1 = 200 adds 100 penalties, so it is ~1e-6 of them
    assert (loss(200.0) - loss(0.0)).item() / 100 == pytest.approx(penalty.item(), rel=1e-4)
    # and it is differentiable for the discriminator's weights (the double backward)
    loss(2.0).backward()
    assert all(p.grad is not None for p in gan.discriminator.parameters())


def test_the_generator_loss_is_the_non_saturating_one(generator):
    gan = GAN(shape=(2,), hidden=[16])
    fakes = gan.generator(torch.randn(64, gan.latent, generator=torch.Generator().manual_seed(3)))
    want = torch.nn.functional.softplus(-gan.discriminator(fakes)).mean()
    got = gan.generator_loss(64, torch.Generator().manual_seed(3))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_spectral_norm_bounds_each_discriminator_layer(generator):
    gan = _digit_gan(spectral_norm=True)
    x = torch.randint(0, 17, (16, 1, 8, 8), generator=generator)
    for _ in range(30):  # power iterations run in training forwards
        gan.loss(x, generator, player="discriminator")
    weights = [m.weight for m in gan.discriminator.modules()
               if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert len(weights) == 3
    for weight in weights:
        largest = torch.linalg.matrix_norm(weight.flatten(1), ord=2).item()
        assert largest == pytest.approx(1, rel=0.05)


@pytest.mark.parametrize("options, message", [
    ({"shape": (1, 6, 6), "levels": 17}, "power of 2"),
    ({"shape": (1, 8, 4), "levels": 17}, "shape"),
    ({"shape": (2,), "r1": -1.0}, "r1"),
    ({"shape": (2,), "betas": (0.5,)}, "betas"),
    ({"shape": (2,), "hidden": []}, "hidden"),
    ({"shape": (2,), "discriminator_steps": 0}, "discriminator_steps"),
])
def test_bad_settings_raise_naming_them(options, message):
    with pytest.raises(ValueError, match=message):
        GAN(**options)


def test_the_loss_needs_a_player(generator):
    with pytest.raises(ValueError, match="player"):
        _digit_gan().loss(torch.zeros(2, 1, 8, 8, dtype=torch.long), generator)


# --------------------------------------------------------------------------------------------------
# Players in the trainer
# --------------------------------------------------------------------------------------------------


def _toy_trainer(tmp_path, **settings):
    toy = data.load("8gaussians")
    model = train.build_model("gan", toy, hidden=[32, 32])
    config = train.TrainConfig(**{"steps": 4, "batch_size": 64, "eval_every": 100, **settings})
    return train.Trainer(model, toy, config, out=str(tmp_path))


def _weights(module):
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def test_each_player_steps_only_its_own_weights(tmp_path):
    trainer = _toy_trainer(tmp_path)
    gan = trainer.model
    assert [p.name for p in trainer.players] == ["discriminator", "generator"]
    assert trainer.batches_per_step == 2
    for player in trainer.players:
        before = {"generator": _weights(gan.generator),
                  "discriminator": _weights(gan.discriminator)}
        trainer._player_step(player, 0)
        for owner, weights in before.items():
            changed = [not torch.equal(w, dict(getattr(gan, owner).named_parameters())[n])
                       for n, w in weights.items()]
            assert all(changed) if owner == player.name else not any(changed), (player, owner)


def test_the_ema_averages_the_sampling_player_and_copies_the_other(tmp_path):
    trainer = _toy_trainer(tmp_path, ema_decay=0.9)
    for _ in range(20):
        trainer.train_step()
    ema, live = trainer.ema.module, trainer.model
    for name, p in live.discriminator.named_parameters():
        assert torch.equal(dict(ema.discriminator.named_parameters())[name], p)
    assert not all(torch.equal(dict(ema.generator.named_parameters())[name], p)
                   for name, p in live.generator.named_parameters())
    state = trainer.state()
    assert set(state["optimizers"]) == {"discriminator", "generator"}
    assert set(state["running_loss"] or {}) <= {"discriminator", "generator"}


def test_players_that_share_weights_or_name_no_module_are_refused(tmp_path):
    class Overlapping(GAN):
        def players(self):
            return (Player("a", ("generator",)), Player("b", ("generator", "discriminator")))

    class Unknown(GAN):
        def players(self):
            return (Player("a", ("generator",)), Player("b", ("critic",)))

    toy = data.load("8gaussians")
    config = train.TrainConfig(steps=1, batch_size=64)
    with pytest.raises(ValueError, match="belongs to players 'a' and 'b'"):
        train.Trainer(Overlapping(shape=(2,), hidden=[8]), toy, config, str(tmp_path))
    with pytest.raises(ValueError, match="'critic'"):
        train.Trainer(Unknown(shape=(2,), hidden=[8]), toy, config, str(tmp_path))


def test_a_model_without_likelihood_needs_data_whose_samples_have_a_figure(tmp_path):
    assert train.has_sample_figures(data.load("digits"))
    assert train.has_sample_figures(data.load("8gaussians"))
    sines = data.load("sines")
    assert not train.has_sample_figures(sines)
    ebm = train.build_model("ebm", sines, hidden=[8], buffer_size=16)
    with pytest.raises(ValueError, match="no likelihood and the samples of 'sines' have no"):
        train.Trainer(ebm, sines, train.TrainConfig(steps=1, batch_size=16), str(tmp_path))
    # and a selection figure the model lacks is refused by name
    toy = data.load("8gaussians")
    with pytest.raises(ValueError, match="select='nll_nats'"):
        train.Trainer(GAN(shape=(2,), hidden=[8]), toy,
                      train.TrainConfig(steps=1, batch_size=16, select="nll_nats"), str(tmp_path))


def test_a_version_2_checkpoint_reads_as_the_single_player_model(tmp_path):
    digits = data.load("digits")
    model = train.build_model("vae", digits, latent=4, hidden=16)
    trainer = train.Trainer(model, digits, train.TrainConfig(steps=2, batch_size=32),
                            out=str(tmp_path))
    trainer.train_step()
    state = trainer.state()
    # written before the optimisers were fused: Adam's settings without it, its count on the host
    optimizer = state["optimizers"]["model"]
    optimizer["param_groups"] = [dict(g, fused=None) for g in optimizer["param_groups"]]
    optimizer["state"][0]["step"] = torch.tensor(1.0, device="cpu")
    old = dict(state, version=2, optimizer=optimizer, running_loss=1.5)
    del old["optimizers"]
    train.save_checkpoint(old, str(tmp_path / "old.pt"))
    loaded = train.load_checkpoint(str(tmp_path / "old.pt"))
    assert loaded["version"] == train.CHECKPOINT_VERSION
    assert loaded["running_loss"] == {"model": 1.5}
    resumed = train.Trainer(train.build_model("vae", digits, latent=4, hidden=16), digits,
                            train.TrainConfig(steps=2, batch_size=32), out=str(tmp_path))
    resumed.restore(loaded)
    resumed_optimizer = resumed.optimizers["model"].state_dict()
    assert resumed_optimizer["state"][0]["step"] == 1
    assert all(group["fused"] for group in resumed_optimizer["param_groups"])


def test_a_gan_covers_the_eight_modes_within_a_short_budget(tmp_path):
    """The recipe's networks and optimiser for 1,000 steps (the recipe runs 4,000): every mode
    already holds >= 5% of the samples; the recipe's run reaches >= 90% within 3 sigma."""
    toy = data.load("8gaussians")
    model = train.build_model("gan", toy, seed=0)
    config = train.TrainConfig(steps=1000, batch_size=256, lr=2e-4, warmup=0, final_lr=1.0,
                               grad_clip=100.0, ema_decay=0.99, eval_every=1000,
                               checkpoint_every=1000)
    train.Trainer(model, toy, config, out=str(tmp_path)).fit()
    trained = train.model_from_checkpoint(train.load_checkpoint(str(tmp_path / train.BEST_NAME)))
    coverage = metrics.eight_gaussians_coverage(
        trained.sample(5000, generator=torch.Generator().manual_seed(0)))
    assert coverage["modes_covered"] == 8
    assert min(coverage["mode_shares"]) >= 0.05
    assert coverage["within_3_sigma"] >= 0.75


def test_the_gan_is_registered():
    assert models.get("gan") is GAN


# --------------------------------------------------------------------------------------------------
# Sample quality in eval and in the results table
# --------------------------------------------------------------------------------------------------


def _tiny_digit_run(name, out, *options):
    from gdm_engine import cli

    assert cli.main(["train", name, "--data", "digits", "--steps", "4", "--batch-size", "32",
                     "--eval-every", "4", *options, "--out", str(out)]) == 0
    return str(out / train.BEST_NAME)


def test_eval_scores_samples_beside_their_floor(tmp_path, capsys):
    from gdm_engine import cli

    gan = _tiny_digit_run("gan", tmp_path / "gan", "--set", "width=8")
    assert train.load_checkpoint(gan)["best"]["metric"] == "frechet_digit_distance"
    assert cli.main(["eval", "--checkpoint", gan, "--json", str(tmp_path / "gan.json")]) == 0
    figures = json.loads((tmp_path / "gan.json").read_text())
    assert "bits_per_dim" not in figures
    assert figures["frechet_digit_distance"] > figures["floor"]["frechet_digit_distance"] > 0
    assert 0 <= figures["precision"] <= 1 and 0 <= figures["recall"] <= 1
    assert "floor (1000 training digits against the test split)" in capsys.readouterr().out
    # a model with a likelihood reports both when asked for samples
    vae = _tiny_digit_run("vae", tmp_path / "vae", "--set", "hidden=16")
    assert cli.main(["eval", "--checkpoint", vae, "--samples", "200",
                     "--json", str(tmp_path / "vae.json")]) == 0
    figures = json.loads((tmp_path / "vae.json").read_text())
    assert {"bits_per_dim", "frechet_digit_distance", "precision", "recall"} <= set(figures)


def test_the_results_table_judges_likelihood_and_samples(monkeypatch, tmp_path):
    from gdm_engine import cli, recipes

    tiny = {"steps": 2, "batch_size": 32, "eval_every": 2}
    monkeypatch.setitem(recipes.RECIPES, ("gan", "digits"),
                        recipes.Recipe(settings=tiny, options={"width": 8}))
    monkeypatch.setitem(recipes.RECIPES, ("vae", "digits"),
                        recipes.Recipe(settings=tiny, options={"hidden": 16}))
    assert cli.main(["results", "--models", "pixels", "vae", "gan", "--data", "digits",
                     "--out", str(tmp_path)]) == 0
    pixels, floor, vae, gan = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert floor["test bits/dim"] is None and gan["test bits/dim"] is None
    assert pixels["test bits/dim"] > 2 and vae["test bits/dim"] > 0
    for row in (pixels, vae, gan):
        assert row["frechet digit distance"] > floor["frechet digit distance"] > 0
        assert 0 <= row["precision"] <= 1 and 0 <= row["recall"] <= 1
    table = (tmp_path / "results.md").read_text()
    assert "| model | test bits/dim | frechet digit distance | precision | recall |" in table
    assert "| gan | — |" in table
    for name in ("pixels", "vae", "gan"):
        assert (tmp_path / f"{name}-digits-samples.png").exists()
    assert (tmp_path / "samples.png").exists()  # the sheet of them all
