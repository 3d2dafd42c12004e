"""The gdm-engine command, in-process (the interpreter is on): info, validate and bench; train,
sample and eval, and their usage errors (exit status 2, nothing written)."""

import json
import os

import numpy as np
import pytest
import torch

from gdm_engine import catalog, cli, data, metrics


def test_info_lists_versions_and_ops(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "backend: auto" in out and "causal_conv1d" in out


def test_validate_lists_every_dtype_and_passes(capsys, tmp_path):
    report = tmp_path / "validate.json"
    assert cli.main(["validate", "--op", "causal_conv1d", "--no-grad", "--json", str(report)]) == 0
    out = capsys.readouterr().out
    for dtype in ("float32", "float16", "bfloat16"):
        assert f"causal_conv1d  {dtype}" in out
    checks = json.loads(report.read_text())["checks"]
    assert checks and all(c["verdict"] == "ok" for c in checks)


def test_validate_fails_with_exit_1_when_a_check_fails(capsys, monkeypatch):
    spec = catalog.CATALOG["causal_conv1d"]
    monkeypatch.setattr(spec, "tolerance", {dtype: 0.0 for dtype in spec.tolerance})
    assert cli.main(["validate", "--op", "causal_conv1d", "--no-grad", "--smoke"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unknown_op_is_a_usage_error(capsys):
    assert cli.main(["validate", "--op", "nope"]) == 2
    assert "unknown op 'nope'" in capsys.readouterr().err


def test_bench_on_cpu_times_references_and_says_kernels_need_a_gpu(capsys, tmp_path):
    report, table = tmp_path / "bench.json", tmp_path / "bench.md"
    assert cli.main(["bench", "--quick", "--cases", "1", "--json", str(report), "--markdown",
                     str(table)]) == 0
    assert "Kernel timings need a GPU" in capsys.readouterr().out
    rows = json.loads(report.read_text())["rows"]
    peers = {name for spec in catalog.CATALOG.values() for name in spec.peers}
    assert {"eager", "compile"} <= {r["provider"] for r in rows} <= {"eager", "compile", *peers}
    assert {r["pass"] for r in rows} == {"forward", "forward+backward"}
    assert all(r["median_ms"] > 0 for r in rows)
    assert all(r["GB/s"] > 0 for r in rows if r["pass"] == "forward")
    assert "| op | case | dtype | pass | provider |" in table.read_text()
    sampling = json.loads(report.read_text())["sampling"]
    assert {(r["model"], r["sampler"]) for r in sampling} == {
        (m, s) for m in ("wavenet", "pixelcnn") for s in ("cached", "naive")}
    assert all(r["seconds"] > 0 and r["vs_naive"] > 0 for r in sampling)
    assert "## Sampling" in table.read_text()
    flows = json.loads(report.read_text())["flow_memory"]
    assert [r["training"] for r in flows] == ["plain autograd", "memory saving"]
    assert flows[1]["saved_vs_plain"] < 1 / 8 and all(r["step_ms"] > 0 for r in flows)
    assert "## Flow training memory" in table.read_text()
    loops = json.loads(report.read_text())["diffusion_loops"]
    assert {r["loop"] for r in loops} == {"ddim", "ddim + guidance 7.5", "dpmpp_2m"}
    assert "gdm_engine" in {r["provider"] for r in loops} and all(r["seconds"] > 0 for r in loops)
    assert "## Diffusion sampler loops" in table.read_text()


def test_bench_without_compile_times_every_provider_but_torch_compile(tmp_path):
    report = tmp_path / "bench.json"
    assert cli.main(["bench", "--op", "q_sample", "--cases", "1", "--no-compile", "--json",
                     str(report)]) == 0
    saved = json.loads(report.read_text())
    assert {r["provider"] for r in saved["rows"]} == {"eager"}
    assert {r["op"] for r in saved["host"]["ops"]} == {"q_sample"}  # the first case only
    assert len(saved["host"]["ops"]) == 1


@pytest.mark.parametrize("argv", [["train"], ["bench", "--seed", "x"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


def _train(out, *extra):
    return cli.main(["train", "vae", "--data", "digits", "--steps", "6", "--batch-size", "16",
                     "--eval-every", "3", "--set", "hidden=16", "--out", str(out), *extra])


def test_train_sample_eval_on_digits(capsys, tmp_path):
    assert _train(tmp_path / "run") == 0
    out = capsys.readouterr().out
    assert "bits per dim" in out and "independent-pixel baseline" in out
    assert "validation split" in out and "best: step" in out
    assert sorted(os.listdir(tmp_path / "run")) == [
        "best.pt", "checkpoint.pt", "metrics.jsonl", "samples-0000003.png", "samples-0000006.png"]
    lines = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [line["split"] for line in lines] == ["valid", "valid"]
    assert "test_bits_per_dim" not in lines[0]
    checkpoint = str(tmp_path / "run" / "checkpoint.pt")
    assert cli.main(["sample", "--checkpoint", checkpoint, "--n", "9",
                     "--out", str(tmp_path / "s.npz")]) == 0
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == (9, 1, 8, 8) and samples.min() >= 0 and samples.max() <= 16
    assert cli.main(["sample", "--checkpoint", checkpoint, "--out", str(tmp_path / "s.png")]) == 0
    from PIL import Image

    # large enough to see, whatever the number of samples
    assert min(Image.open(tmp_path / "s.png").size) >= 256
    report = tmp_path / "eval.json"
    assert cli.main(["eval", "--checkpoint", checkpoint, "--iwae-samples", "4",
                     "--json", str(report)]) == 0
    figures = json.loads(report.read_text())
    assert 0 < figures["bits_per_dim"] < 10 and figures["step"] == 6
    # the best checkpoint (chosen on validation) is evaluated on the test split by default
    best = str(tmp_path / "run" / "best.pt")
    assert cli.main(["eval", "--checkpoint", best, "--iwae-samples", "4",
                     "--json", str(report)]) == 0
    figures = json.loads(report.read_text())
    assert figures["split"] == "test" and figures["step"] in (3, 6)
    assert cli.main(["sample", "--checkpoint", best, "--out", str(tmp_path / "b.npz")]) == 0
    # --resume continues a finished run further
    assert _train(tmp_path / "run", "--resume", "--steps", "8") == 0
    assert "step 8" in capsys.readouterr().out


def test_train_on_a_toy_draws_a_scatter_plot(capsys, tmp_path):
    assert cli.main(["train", "vae", "--data", "rings", "--steps", "2", "--eval-every", "2",
                     "--set", "hidden=8", "--out", str(tmp_path)]) == 0
    assert "nll nats" in capsys.readouterr().out and (tmp_path / "samples-0000002.png").exists()


def test_train_on_sequences_draws_line_plots(capsys, tmp_path):
    from PIL import Image

    assert cli.main(["train", "vae", "--data", "sines", "--steps", "2", "--batch-size", "8",
                     "--eval-every", "2", "--set", "hidden=8", "--set", "iwae_samples=1",
                     "--out", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "samples-0000002.png").size[0] > 500


@pytest.mark.parametrize("model, data, options", [
    ("pixelcnn", "digits", ["channels=8", "layers=2", "dropout=0.1"]),
    ("wavenet", "sines", ["channels=4", "layers=3"]),
])
def test_autoregressive_models_train_resume_sample_and_eval(model, data, options, capsys,
                                                            tmp_path):
    sets = [arg for option in options for arg in ("--set", option)]
    common = ["train", model, "--data", data, "--batch-size", "8", "--eval-every", "2",
              "--out", str(tmp_path), *sets]
    assert cli.main([*common, "--steps", "2"]) == 0
    assert cli.main([*common, "--steps", "4", "--resume"]) == 0  # the EMA keeps the masks
    assert "step 4" in capsys.readouterr().out
    best = str(tmp_path / "best.pt")
    assert cli.main(["sample", "--checkpoint", best, "--n", "3",
                     "--out", str(tmp_path / "s.npz")]) == 0
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == ((3, 1, 8, 8) if data == "digits" else (3, 1, 1024))
    report = tmp_path / "eval.json"
    assert cli.main(["eval", "--checkpoint", best, "--json", str(report)]) == 0
    assert 0 < json.loads(report.read_text())["bits_per_dim"] < 10


@pytest.mark.parametrize("model, data, options", [
    ("realnvp", "digits", ["scales=2", "couplings=1", "hidden=4", "dropout=0.1"]),
    ("glow", "digits", ["scales=2", "depth=1", "hidden=4", "dropout=0", "memory_saving=true"]),
    ("nsf", "8gaussians", ["transforms=1", "hidden=4"]),
])
def test_flows_train_resume_sample_and_eval(model, data, options, capsys, tmp_path):
    sets = [arg for option in options for arg in ("--set", option)]
    common = ["train", model, "--data", data, "--batch-size", "8", "--eval-every", "2",
              "--out", str(tmp_path), *sets]
    assert cli.main([*common, "--steps", "2"]) == 0
    assert cli.main([*common, "--steps", "4", "--resume"]) == 0
    assert "step 4" in capsys.readouterr().out
    best = str(tmp_path / "best.pt")
    assert cli.main(["sample", "--checkpoint", best, "--n", "3", "--temperature", "0.8",
                     "--out", str(tmp_path / "s.npz")]) == 0
    samples = np.load(tmp_path / "s.npz")["samples"]
    assert samples.shape == ((3, 1, 8, 8) if data == "digits" else (3, 2))
    report = tmp_path / "eval.json"
    assert cli.main(["eval", "--checkpoint", best, "--iwae-samples", "3", "--json",
                     str(report)]) == 0
    figures = json.loads(report.read_text())
    assert 0 < figures["bits_per_dim"] < 10 if data == "digits" else figures["nll_nats"] > 0


def test_sampling_temperature_needs_a_model_that_has_one(capsys, tmp_path):
    assert cli.main(["train", "vae", "--data", "digits", "--steps", "1", "--eval-every", "1",
                     "--set", "hidden=8", "--out", str(tmp_path)]) == 0
    _usage_error(["sample", "--checkpoint", str(tmp_path / "best.pt"), "--temperature", "0.5"],
                 "no sampling temperature", capsys)


def test_data_without_a_picture_trains_and_samples_to_npz(capsys, tmp_path):
    np.savez(tmp_path / "codes.npz", x=np.random.default_rng(0).integers(0, 4, (60, 5)))
    run = tmp_path / "run"
    assert cli.main(["train", "vae", "--data", str(tmp_path / "codes.npz"), "--steps", "2",
                     "--batch-size", "8", "--eval-every", "2", "--out", str(run)]) == 0
    assert sorted(os.listdir(run)) == ["best.pt", "checkpoint.pt", "metrics.jsonl"]
    checkpoint = str(run / "checkpoint.pt")
    _usage_error(["sample", "--checkpoint", checkpoint, "--out", str(tmp_path / "s.png")],
                 "have no picture", capsys)
    assert cli.main(["sample", "--checkpoint", checkpoint, "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (64, 5)


def _usage_error(argv, message, capsys):
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err, err


@pytest.mark.parametrize("argv, message", [
    (["train", "nade", "--data", "digits"], "unknown model 'nade'"),
    (["train", "vae", "--data", "mnist"], "unknown data 'mnist'"),
    (["train", "pixels", "--data", "moons"], "needs discrete data"),
    (["train", "vae", "--data", "digits", "--batch-size", "9", "--accumulate", "2"], "equal shards"),
    (["train", "vae", "--data", "digits", "--set", "latent=0"], "latent must be >= 1"),
    (["train", "vae", "--data", "digits", "--set", "depth=3"], "depth"),
    (["train", "vae", "--data", "digits", "--set", "latent"], "KEY=VALUE"),
])
def test_train_usage_errors_write_nothing(argv, message, capsys, tmp_path):
    _usage_error([*argv, "--out", str(tmp_path / "run")], message, capsys)
    assert not (tmp_path / "run").exists()


def test_checkpoint_usage_errors(capsys, tmp_path):
    torch.save({"weights": torch.ones(2)}, tmp_path / "foreign.pt")
    (tmp_path / "damaged.pt").write_bytes(b"\x00garbage")
    for command in (["eval"], ["sample", "--out", str(tmp_path / "x.png")]):
        _usage_error([*command, "--checkpoint", str(tmp_path / "foreign.pt")],
                     "not a gdm-engine checkpoint", capsys)
        _usage_error([*command, "--checkpoint", str(tmp_path / "damaged.pt")],
                     "not a readable checkpoint", capsys)
        _usage_error([*command, "--checkpoint", str(tmp_path / "none.pt")], "no checkpoint",
                     capsys)
    assert sorted(os.listdir(tmp_path)) == ["damaged.pt", "foreign.pt"]


def test_runs_are_not_overwritten_or_resumed_with_other_settings(capsys, tmp_path):
    assert _train(tmp_path) == 0
    before = (tmp_path / "checkpoint.pt").read_bytes()
    _usage_error(["train", "vae", "--data", "digits", "--out", str(tmp_path)], "pass --resume",
                 capsys)
    _usage_error(["train", "vae", "--data", "digits", "--resume", "--lr", "0.5", "--out",
                  str(tmp_path)], "trained with lr=0.001", capsys)
    _usage_error(["train", "vae", "--data", "rings", "--resume", "--out", str(tmp_path)],
                 "not 'vae' on 'rings'", capsys)
    _usage_error(["train", "vae", "--data", "digits", "--resume", "--steps", "8", "--set",
                  "hidden=32", "--out", str(tmp_path)], "cannot change on resume (hidden", capsys)
    # the run ended at step 6: nothing to train up to 6, and no going back before it
    for steps, message in (("6", "pass --steps above 6"), ("4", "steps must be at least 6")):
        _usage_error(["train", "vae", "--data", "digits", "--resume", "--steps", steps, "--out",
                      str(tmp_path)], message, capsys)
    _usage_error(["sample", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--out",
                  str(tmp_path / "x.jpg")], "must end in .png", capsys)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before


def test_regularisation_and_selection_settings_reach_the_run(capsys, tmp_path):
    assert _train(tmp_path, "--weight-decay", "0.01", "--warmup", "2", "--ema-decay", "0.9",
                  "--grad-clip", "0.5", "--early-stop", "4", "--eval-test",
                  "--set", "dropout=0.1") == 0
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    settings = {k: state["config"][k] for k in ("weight_decay", "warmup", "ema_decay",
                                                "grad_clip", "early_stop", "eval_test")}
    assert settings == {"weight_decay": 0.01, "warmup": 2, "ema_decay": 0.9, "grad_clip": 0.5,
                        "early_stop": 4, "eval_test": True}
    assert state["model_config"]["dropout"] == 0.1
    lines = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert all(line["split"] == "valid" and "test_bits_per_dim" in line for line in lines)


@pytest.mark.parametrize("flag, value, message", [
    ("--warmup", "-1", "warmup must be >= 0"), ("--weight-decay", "-1", "weight_decay"),
    ("--early-stop", "-2", "early_stop must be >= 0"), ("--ema-decay", "1", "ema_decay"),
])
def test_bad_settings_are_usage_errors(flag, value, message, capsys, tmp_path):
    _usage_error(["train", "vae", "--data", "digits", flag, value, "--out", str(tmp_path / "r")],
                 message, capsys)


def test_a_folder_with_a_trailing_slash_names_the_run(capsys, tmp_path, monkeypatch):
    from PIL import Image

    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(np.random.default_rng(0).integers(0, 256, (10, 4, 4), np.uint8)):
        Image.fromarray(image).save(folder / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "vae", "--data", "pngs/", "--steps", "1", "--batch-size", "4",
                     "--set", "hidden=8"]) == 0
    assert (tmp_path / "runs" / "vae-pngs" / "checkpoint.pt").exists()


@pytest.mark.parametrize("argv", [
    ["train", "vae"], ["train", "vae", "--data", "digits", "--steps", "0"],
    ["train", "vae", "--data", "digits", "--lr", "-1"], ["sample"],
    ["sample", "--checkpoint", "c.pt", "--n", "x"], ["eval", "--checkpoint", "c.pt", "--split", "x"],
])
def test_bad_training_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2


@pytest.fixture
def tiny_vae_recipe(monkeypatch):
    from gdm_engine import recipes

    tiny = recipes.Recipe(settings={"steps": 4, "batch_size": 16, "eval_every": 2,
                                    "checkpoint_every": 2, "early_stop": 5},
                          options={"hidden": 8}, report={"iwae_samples": 2})
    monkeypatch.setitem(recipes.RECIPES, ("vae", "digits"), tiny)
    return tiny


def test_train_without_settings_runs_the_recipe(tiny_vae_recipe, capsys, tmp_path):
    assert cli.main(["train", "vae", "--data", "digits", "--out", str(tmp_path)]) == 0
    assert "recipe for vae on digits" in capsys.readouterr().out
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 4 and state["config"]["eval_every"] == 2
    assert state["model_config"]["hidden"] == 8
    # given settings override the recipe
    assert cli.main(["train", "vae", "--data", "digits", "--steps", "2", "--set", "hidden=4",
                     "--out", str(tmp_path / "given")]) == 0
    state = torch.load(tmp_path / "given" / "checkpoint.pt", weights_only=True)
    assert state["step"] == 2 and state["model_config"]["hidden"] == 4


def test_results_table_scores_best_checkpoints_on_test(tiny_vae_recipe, capsys, tmp_path):
    assert cli.main(["results", "--models", "pixels", "vae", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert [row["model"] for row in rows] == ["pixels (independent-pixel baseline)",
                                              "training digits (the floor of the sample columns)",
                                              "vae"]
    baseline, floor, vae = rows
    assert floor["test bits/dim"] is None and vae["frechet digit distance"] > 0
    assert baseline["likelihood"] == "exact" and baseline["test bits/dim"] == pytest.approx(
        metrics.independent_pixel_bits_per_dim(data.load("digits"), "test"))
    best = torch.load(tmp_path / "vae-digits" / "best.pt", weights_only=True)
    assert vae["best step"] == best["step"] and vae["steps"] == 4
    assert vae["likelihood"] == "bound (IWAE, K=2)" and vae["parameters"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| pixels (independent-pixel baseline) |" in table and "gdm-engine results" in table
    assert (tmp_path / "vae-digits-samples.png").exists()
    # a second call resumes the finished runs instead of training again
    assert cli.main(["results", "--models", "vae", "--out", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["rows"][2] == vae


def test_results_on_a_toy_report_nll_and_sample_distances_beside_the_true_density(
        monkeypatch, capsys, tmp_path):
    from gdm_engine import recipes

    tiny = recipes.Recipe(settings={"steps": 2, "batch_size": 16, "eval_every": 2},
                          options={"transforms": 1, "hidden": 4})
    monkeypatch.setitem(recipes.RECIPES, ("nsf", "8gaussians"), tiny)
    assert cli.main(["results", "--models", "nsf", "--data", "8gaussians",
                     "--out", str(tmp_path)]) == 0
    truth, nsf = json.loads((tmp_path / "results.json").read_text())["rows"]
    toy = data.load("8gaussians")
    assert truth["test nll nats"] == pytest.approx(-toy.toy.log_prob(toy.test).mean().item())
    assert nsf["test nll nats"] > truth["test nll nats"] and nsf["likelihood"] == "exact"
    assert nsf["sliced wasserstein"] > truth["sliced wasserstein"] > 0
    table = (tmp_path / "results.md").read_text()
    assert "| model | test nll nats | sliced wasserstein | mmd |" in table
    assert (tmp_path / "nsf-8gaussians-samples.png").exists()


def test_results_refuse_unknown_models_and_the_pixel_baseline_on_continuous_data(capsys, tmp_path):
    _usage_error(["results", "--models", "nade", "--out", str(tmp_path)], "unknown model 'nade'",
                 capsys)
    _usage_error(["results", "--data", "moons", "--models", "pixels", "--out", str(tmp_path)],
                 "baseline needs discrete data", capsys)


def test_extending_a_finished_run_says_the_learning_rate_rises(capsys, tmp_path):
    assert _train(tmp_path, "--warmup", "2") == 0
    capsys.readouterr()
    assert _train(tmp_path, "--resume", "--steps", "12") == 0
    out = capsys.readouterr().out
    assert "extending the run from 6 to 12 steps" in out and "learning rate rises" in out


def test_every_demo_command_parses():
    import shlex

    from gdm_engine.cli import demo

    commands = [command for _, command in demo.demo_commands("runs/demo", "pretrained")]
    trained = [run for run in demo.RUNS if run.train is not None]
    compressing = [run for run in demo.RUNS if run.compress]
    assert len(commands) == len(demo.KERNEL_COMMANDS) + 3 * len(trained) + 2 * (
        len(demo.RUNS) - len(trained)) + 2 * len(compressing)
    for command in commands:
        cli.build_parser().parse_args(shlex.split(command))


def test_the_bundled_checkpoints_load_and_sample_as_the_demo_asks(capsys):
    import shlex

    from gdm_engine import train
    from gdm_engine.cli import demo
    from gdm_engine.cli.training import _sampling_options

    for run in demo.RUNS:
        if run.train is None:
            saved = train.load_checkpoint(f"pretrained/{run.model}-{run.data}.pt")
            assert (saved["model"], saved["data"]) == (run.model, run.data)
            assert "optimizers" not in saved  # exported: weights only
            model = train.model_from_checkpoint(saved)  # the model's code still takes them
            args = cli.build_parser().parse_args(
                ["sample", "--checkpoint", "x.pt", *shlex.split(run.sample), "--n", "2"])
            if "steps" in model.sample_options:
                args.steps = 2  # enough to run
            samples = model.sample(2, **_sampling_options(args, model, run.model))
            assert samples.shape == (2, *model.shape)


def test_demo_runs_its_commands_in_one_process_and_times_them(capsys, tmp_path, monkeypatch):
    import shlex

    from gdm_engine.cli import demo

    pretrained = tmp_path / "pretrained"
    pretrained.mkdir()
    assert cli.main(["train", "vae", "--data", "digits", "--steps", "2", "--eval-every", "2",
                     "--out", str(tmp_path / "run")]) == 0
    assert cli.main(["export", "--checkpoint", str(tmp_path / "run" / "best.pt"),
                     "--out", str(pretrained / "vae-sines.pt")]) == 0
    monkeypatch.setattr(demo, "KERNEL_COMMANDS", [("versions", "info")])
    trained = demo.DemoRun("vae", "digits", "digits", train="--steps 2 --eval-every 2",
                           eval="--samples 8", compress=True)
    # any exported checkpoint serves, under the name the demo looks it up by
    bundled = demo.DemoRun("vae", "sines", "bundled", eval="--iwae-samples 2")
    monkeypatch.setattr(demo, "RUNS", [trained, bundled])
    out = tmp_path / "demo run"  # paths with spaces reach the commands whole
    argv = ["demo", "--out", str(out), "--pretrained", str(pretrained)]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    folder = shlex.quote(str(out / "vae-digits"))
    assert f"$ gdm-engine train vae --data digits --steps 2 --eval-every 2 --out {folder}" in printed
    assert f"$ gdm-engine sample --checkpoint {pretrained / 'vae-sines.pt'}" in printed
    assert "gdm-engine eval" in printed.split("seconds per command")[1]
    assert {"best.pt", "samples.png", "eval.json", "test.gdmz"} <= set(
        os.listdir(out / "vae-digits"))
    assert np.array_equal(np.load(out / "vae-digits" / "test.npy"), data.load("digits").test)
    assert {"samples.png", "eval.json"} == set(os.listdir(out / "vae-sines"))
    # a second run would mix its files with the first's
    assert cli.main(argv) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["demo", "--out", str(tmp_path / "other"), "--pretrained", str(tmp_path)]) == 2
    assert "no vae-sines.pt" in capsys.readouterr().err


def test_an_exported_checkpoint_samples_and_evaluates_as_the_run_but_does_not_resume(
    capsys, tmp_path
):
    from gdm_engine import train

    run = tmp_path / "run"
    assert cli.main(["train", "vae", "--data", "digits", "--steps", "2", "--eval-every", "2",
                     "--out", str(run)]) == 0
    shared = tmp_path / "vae.pt"
    assert cli.main(["export", "--checkpoint", str(run / "best.pt"), "--out", str(shared)]) == 0
    assert shared.stat().st_size < (run / "best.pt").stat().st_size / 2
    for name in ("best.pt", "shared"):
        path = shared if name == "shared" else run / name
        assert cli.main(["sample", "--checkpoint", str(path), "--n", "5",
                         "--out", str(tmp_path / f"{name}.npz")]) == 0
    assert np.array_equal(np.load(tmp_path / "best.pt.npz")["samples"],
                          np.load(tmp_path / "shared.npz")["samples"])
    assert cli.main(["eval", "--checkpoint", str(shared), "--iwae-samples", "2"]) == 0
    saved = train.load_checkpoint(shared)
    with pytest.raises(train.CheckpointError, match="weights only"):
        train.model_from_checkpoint(saved, ema=False)
    capsys.readouterr()
    assert cli.main(["train", "vae", "--data", "digits", "--steps", "4", "--resume",
                     "--out", str(run)]) == 0  # the run's own checkpoint resumes
    (run / "checkpoint.pt").write_bytes(shared.read_bytes())
    assert cli.main(["train", "vae", "--data", "digits", "--steps", "6", "--resume",
                     "--out", str(run)]) == 2
    assert "does not resume" in capsys.readouterr().err
    # export never overwrites
    assert cli.main(["export", "--checkpoint", str(run / "best.pt"), "--out", str(shared)]) == 2
