"""The trainer: its schedule and settings, atomic checkpoints, an exact resume after SIGKILL, and
data parallelism under torchrun matching one process."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from gdm_engine import data, train

CLI = [sys.executable, "-m", "gdm_engine.cli"]


def test_learning_rate_warms_up_then_decays_to_the_final_fraction():
    config = train.TrainConfig(steps=1000, lr=2e-3, warmup=100, final_lr=0.1)
    assert config.learning_rate(0) == pytest.approx(2e-5)
    assert config.learning_rate(99) == pytest.approx(2e-3)
    rates = [config.learning_rate(s) for s in range(100, 1001)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))
    assert rates[-1] == pytest.approx(2e-4)


@pytest.mark.parametrize("setting, message", [
    ({"steps": 0}, "steps must be >= 1"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"batch_size": 30, "accumulate": 4}, "equal shards"),
    ({"batch_size": 2000}, "exceeds the 1500"),
    ({"warmup": -1}, "warmup must be >= 0"),
    ({"early_stop": -1}, "early_stop must be >= 0"),
    ({"weight_decay": -0.1}, "weight_decay must be >= 0"),
    ({"final_lr": -0.5}, "final_lr"),
    ({"final_lr": 1.5}, "final_lr"),
    ({"select": "precision"}, "select must be one of"),
    ({"log_every": -1}, "log_every must be >= 0"),
])
def test_bad_settings_raise_naming_them(setting, message):
    with pytest.raises(ValueError, match=message):
        train.TrainConfig(**setting).check(train_size=1500)


def _small_trainer(out, **settings):
    digits = data.load("digits")
    model = train.build_model("vae", digits, latent=4, hidden=32)
    config = train.TrainConfig(**{"eval_every": 1000, "checkpoint_every": 1000, **settings})
    return train.Trainer(model, digits, config, out=str(out))


def test_the_trainer_checks_its_training_split_once_when_it_loads_it(tmp_path):
    """A step reads nothing back from the device (tests/test_read_backs.py), so the training
    split and its labels are checked on the host before they move there."""
    digits = data.load("digits")
    model = train.build_model("vae", digits, latent=4, hidden=8)
    config = train.TrainConfig(steps=1, batch_size=8)
    bad = dataclasses.replace(digits, train=digits.train.clone())
    bad.train[5, 0, 3, 3] = digits.levels
    with pytest.raises(ValueError, match="x must lie in 0 .. 16, got values from 0 to 17"):
        train.Trainer(model, bad, config, out=str(tmp_path))
    ddpm = train.build_model("ddpm", digits, conditional=True, timesteps=4, width=8,
                             multipliers=(1,), blocks=1)
    labels = dict(digits.labels, train=digits.labels["train"] + 1)
    with pytest.raises(ValueError, match="labels must lie in 0 .. 9, got values from 1 to 10"):
        train.Trainer(ddpm, dataclasses.replace(digits, labels=labels), config,
                      out=str(tmp_path))
    trainer = train.Trainer(model, digits, config, out=str(tmp_path))
    assert trainer.train_examples.device == trainer.device


def test_the_loss_is_read_back_only_when_it_is_shown(tmp_path, monkeypatch):
    """Every log_every steps for the bar, and at evaluations and checkpoints; the running loss
    is the same as when it is read at every step."""
    reads = []
    read_losses = train.Trainer._read_losses

    def recording(self):
        if self._unread_losses:
            reads.append(self.step)
        read_losses(self)

    every_step = _small_trainer(tmp_path / "every", steps=7, log_every=1, batch_size=32)
    every_step.fit()
    monkeypatch.setattr(train.Trainer, "_read_losses", recording)
    sparse = _small_trainer(tmp_path / "sparse", steps=7, log_every=3, eval_every=5,
                            batch_size=32)
    sparse.fit()
    assert reads == [3, 5, 6, 7]  # the bar at 3 and 6, the evaluation at 5, the end at 7
    assert sparse.running_loss == every_step.running_loss


def test_every_random_stream_of_a_run_has_its_own_seed():
    # numpy's SeedSequence ignores trailing zeros: (seed, 4) once equalled (seed, epoch 4, 0)
    tags = (train.INIT, train.PERMUTATION, train.STEP_NOISE, train.EVALUATION, train.PICTURES)
    seeds = [train._seed(tag, 7, *rest) for tag in tags for rest in [(), (0,), (0, 0), (4,)]]
    per_tag = 4
    for i, tag_seeds in enumerate(zip(*[iter(seeds)] * per_tag)):
        others = seeds[:i * per_tag] + seeds[(i + 1) * per_tag:]
        assert not set(tag_seeds) & set(others)


class _SealedTest(data.Data):
    """Digits whose test split fails the moment anything reads it."""

    @property
    def test(self):
        raise AssertionError("training read the test split")

    @test.setter
    def test(self, value):
        pass


def test_training_and_selection_never_read_the_test_split(tmp_path):
    digits = data.load("digits")
    sealed = _SealedTest(digits.name, digits.train, digits.valid, None, levels=digits.levels)
    model = train.build_model("vae", sealed, latent=4, hidden=32)
    config = train.TrainConfig(steps=6, eval_every=2, checkpoint_every=3, batch_size=32)
    results = train.Trainer(model, sealed, config, out=str(tmp_path)).fit()
    assert results["split"] == "valid" and "bits_per_dim" in results
    assert os.path.exists(tmp_path / train.BEST_NAME)


def test_best_checkpoint_is_the_lowest_validation_figure_and_early_stopping_stops(tmp_path,
                                                                                  monkeypatch):
    figures = iter([3.0, 2.0, 2.5, 2.4, 2.6, 1.0])  # best at the 2nd evaluation, then 3 worse

    def scripted(self, split="valid"):
        return {"bits_per_dim": next(figures)}

    monkeypatch.setattr(train.Trainer, "evaluate", scripted)
    trainer = _small_trainer(tmp_path, steps=12, eval_every=2, early_stop=3, batch_size=32)
    trainer.fit()
    assert trainer.step == 10 and trainer.stopped_early  # evaluations at 2, 4, 6, 8, 10
    best = train.load_checkpoint(trainer.best_path)
    assert best["step"] == 4 and best["best"] == {"step": 4, "metric": "bits_per_dim",
                                                  "value": 2.0}
    lines = [json.loads(line) for line in open(trainer.metrics_path)]
    assert [line["best"] for line in lines] == [True, True, False, False, False]
    assert train.load_checkpoint(trainer.checkpoint_path)["step"] == 10
    # resuming a run that stopped early trains no further
    resumed = _small_trainer(tmp_path, steps=12, eval_every=2, early_stop=3, batch_size=32)
    resumed.restore(train.load_checkpoint(trainer.checkpoint_path))
    resumed.fit()
    assert resumed.step == 10


def test_a_fresh_run_starts_its_own_metrics_file(tmp_path):
    (tmp_path / train.METRICS_NAME).write_text('{"step": 999, "stale": true}\n')
    (tmp_path / train.BEST_NAME).write_bytes(b"stale")
    trainer = _small_trainer(tmp_path, steps=2, eval_every=2)
    trainer.fit()
    lines = [json.loads(line) for line in open(trainer.metrics_path)]
    assert [line["step"] for line in lines] == [2]
    assert train.load_checkpoint(trainer.best_path)["step"] == 2


def test_a_failed_save_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    trainer = _small_trainer(tmp_path, steps=3)
    trainer.fit()
    before = open(trainer.checkpoint_path, "rb").read()
    real_save = torch.save

    def crash_half_way(state, f):
        real_save(state, f)
        f.truncate(f.tell() // 2)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        trainer.save()
    assert open(trainer.checkpoint_path, "rb").read() == before
    assert not any(f.endswith(".tmp") for f in os.listdir(tmp_path))
    assert train.load_checkpoint(trainer.checkpoint_path)["step"] == 3


def test_foreign_and_damaged_files_are_refused(tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    (tmp_path / "damaged.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(train.CheckpointError, match="not a gdm-engine checkpoint"):
        train.load_checkpoint(str(tmp_path / "foreign.pt"))
    with pytest.raises(train.CheckpointError, match="not a readable checkpoint"):
        train.load_checkpoint(str(tmp_path / "damaged.pt"))
    with pytest.raises(train.CheckpointError, match="no checkpoint"):
        train.load_checkpoint(str(tmp_path / "missing.pt"))


def test_checkpoints_load_with_weights_only_and_rebuild_the_model(tmp_path):
    trainer = _small_trainer(tmp_path, steps=2)
    trainer.fit()
    state = train.load_checkpoint(trainer.checkpoint_path)
    assert {"model_state", "ema", "optimizers", "rng", "step", "config"} <= set(state)
    model = train.model_from_checkpoint(state)
    for name, weight in model.state_dict().items():
        assert torch.equal(weight, trainer.ema.module.state_dict()[name])


# small models of a one-loss family and of the two-player one
SMALL = {"vae": ["--set", "hidden=64"],
         "gan": ["--set", "width=8", "--set", "latent=16", "--lr", "1e-3"]}


def _train_command(out, model, *extra):
    return [*CLI, "train", model, "--data", "digits", "--steps", "400", "--batch-size", "32",
            "--checkpoint-every", "50", "--eval-every", "100", *SMALL[model],
            "--out", str(out), *extra]


def _final_state(out):
    return train.load_checkpoint(os.path.join(out, train.CHECKPOINT_NAME))


@pytest.mark.parametrize("model", SMALL)
def test_a_run_killed_mid_way_resumes_to_the_uninterrupted_result(tmp_path, model):
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    process = subprocess.Popen(_train_command(killed, model), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = killed / train.CHECKPOINT_NAME
    # after the first evaluation (step 100) and a checkpoint: the resume must rewrite
    # metrics.jsonl and carry the best-so-far record
    while process.poll() is None and not (
            checkpoint.exists() and (killed / train.METRICS_NAME).exists()
            and train.load_checkpoint(str(checkpoint))["step"] >= 100):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    step_at_kill = train.load_checkpoint(str(checkpoint))["step"]
    assert 0 < step_at_kill < 400
    subprocess.run(_train_command(killed, model, "--resume"), check=True, capture_output=True)
    subprocess.run(_train_command(whole, model), check=True, capture_output=True)
    resumed, uninterrupted = _final_state(killed), _final_state(whole)
    assert resumed["step"] == uninterrupted["step"] == 400
    best_resumed, best_whole = (train.load_checkpoint(str(run / train.BEST_NAME))
                                for run in (killed, whole))
    assert resumed["best"] == uninterrupted["best"] and best_resumed["step"] == best_whole["step"]
    for part in ("model_state", "ema"):
        for name, value in uninterrupted[part].items():
            assert torch.equal(resumed[part][name], value), f"{part} {name}"
            assert torch.equal(best_resumed[part][name], best_whole[part][name]), f"{part} {name}"
    # every player's optimiser state (Adam's moments and step count) resumed exactly
    assert resumed["optimizers"].keys() == uninterrupted["optimizers"].keys()
    for player, optimizer in uninterrupted["optimizers"].items():
        for index, moments in optimizer["state"].items():
            for key, value in moments.items():
                assert torch.equal(resumed["optimizers"][player]["state"][index][key], value)
    # evaluations after the last checkpoint are written once, with the same figures
    assert (killed / "metrics.jsonl").read_text() == (whole / "metrics.jsonl").read_text()


@pytest.mark.parametrize("model", SMALL)
def test_torchrun_with_two_processes_matches_one_process(tmp_path, model):
    common = ["train", model, "--data", "digits", "--steps", "20", "--batch-size", "64",
              "--eval-every", "20", "--checkpoint-every", "20", *SMALL[model]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=2", "-m", "gdm_engine.cli", *common,
                    "--out", str(tmp_path / "two")], check=True, capture_output=True, env=env)
    subprocess.run([*CLI, *common, "--accumulate", "2", "--out", str(tmp_path / "one")],
                   check=True, capture_output=True, env=env)
    two, one = _final_state(tmp_path / "two"), _final_state(tmp_path / "one")
    assert two["world_size"] == 2 and one["world_size"] == 1
    for part in ("model_state", "ema"):
        for name, value in one[part].items():
            if value.is_floating_point():
                error = (two[part][name] - value).norm() / value.norm().clamp_min(1e-12)
                assert error < 1e-4, f"{part} {name}"
    # the logged loss is the global batch's mean on both, for every player
    assert two["running_loss"].keys() == one["running_loss"].keys()
    for player, loss in one["running_loss"].items():
        assert two["running_loss"][player] == pytest.approx(loss, rel=1e-4), player
    # only rank 0 wrote: one evaluation line, one picture, the checkpoint and the best one
    assert sorted(os.listdir(tmp_path / "two")) == ["best.pt", "checkpoint.pt", "metrics.jsonl",
                                                    "samples-0000020.png"]
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == 1


def test_every_recipe_builds_its_model_and_its_settings_hold():
    from gdm_engine import models, recipes

    for (name, data_name), recipe in recipes.RECIPES.items():
        loaded = data.load(data_name)
        train.TrainConfig(**recipe.settings).check(len(loaded.train))
        model = models.get(name).for_data(loaded, **recipe.options)
        assert all(hasattr(model, attribute) for attribute in recipe.report), (name, data_name)


def test_what_may_change_on_resume_is_the_engine_s_rule(tmp_path):
    # TrainConfig.resumed: the checkpoint's settings, steps extended; make_trainer applies it,
    # so a Python caller is held to it as the CLI is
    saved = {"config": dataclasses.asdict(train.TrainConfig(steps=6, lr=1e-3)), "step": 6}
    assert train.TrainConfig.resumed(saved, {"steps": 10}).steps == 10
    assert train.TrainConfig.resumed(saved, {"lr": 1e-3, "steps": 7}).lr == 1e-3
    with pytest.raises(ValueError, match="trained with lr=0.001"):
        train.TrainConfig.resumed(saved, {"lr": 0.5, "steps": 10})
    assert train.TrainConfig.resumed(saved, {"steps": 6}).steps == 6  # a finished run, to score
    with pytest.raises(ValueError, match="steps must be at least 6"):
        train.TrainConfig.resumed(saved, {"steps": 5})
    trainer = _small_trainer(tmp_path, steps=4, eval_every=2, batch_size=32)
    trainer.fit()
    checkpoint = train.load_checkpoint(trainer.checkpoint_path)
    data = trainer.data
    config = train.TrainConfig(**checkpoint["config"])
    with pytest.raises(ValueError, match="trained with batch_size=32"):
        train.make_trainer("vae", data, dataclasses.replace(config, steps=8, batch_size=16),
                           tmp_path, saved=checkpoint)
    with pytest.raises(ValueError, match=r"cannot change on resume \(hidden"):
        train.make_trainer("vae", data, dataclasses.replace(config, steps=8), tmp_path,
                           options={"hidden": 7}, saved=checkpoint)
    resumed = train.make_trainer("vae", data, dataclasses.replace(config, steps=8), tmp_path,
                                 saved=checkpoint)
    assert resumed.config.steps == 8 and resumed.step == 4
