"""The commands for what a trained checkpoint is for: compress and decompress, score, encode,
and sample --condition --mask (inpainting), in-process on tiny runs."""

import hashlib
import json
import os

import numpy as np
import pytest

from gdm_engine import cli, data


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny checkpoints: a PixelCNN and a VAE, two steps each on the digits."""
    folder = tmp_path_factory.mktemp("runs")
    for model, options in [("pixelcnn", ["channels=8", "layers=2"]), ("vae", ["hidden=16"])]:
        sets = [arg for option in options for arg in ("--set", option)]
        assert cli.main(["train", model, "--data", "digits", "--steps", "2", "--batch-size", "8",
                         "--eval-every", "2", "--out", str(folder / f"{model}-digits"), *sets]) == 0
    return {model: str(folder / f"{model}-digits" / "best.pt") for model in ("pixelcnn", "vae")}


def test_compress_and_decompress_the_test_split_exactly(runs, capsys, tmp_path):
    for model in ("pixelcnn", "vae"):
        packed, unpacked = tmp_path / f"{model}.gdmz", tmp_path / f"{model}.npy"
        assert cli.main(["compress", "digits:test", "--checkpoint", runs[model],
                         "-o", str(packed)]) == 0
        assert "bits/dim" in capsys.readouterr().out
        assert cli.main(["decompress", str(packed), "--checkpoint", runs[model],
                         "-o", str(unpacked)]) == 0
        assert np.array_equal(np.load(unpacked), data.load("digits").test.numpy())


def test_a_file_of_levels_round_trips_with_its_dtype_and_shape(runs, tmp_path):
    array = np.random.default_rng().integers(0, 17, (3, 1, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "x.npy", array)
    assert cli.main(["compress", str(tmp_path / "x.npy"), "--checkpoint", runs["pixelcnn"],
                     "--naive", "-o", str(tmp_path / "x.gdmz")]) == 0
    assert cli.main(["decompress", str(tmp_path / "x.gdmz"), "--checkpoint", runs["pixelcnn"],
                     "-o", str(tmp_path / "y.npy")]) == 0
    back = np.load(tmp_path / "y.npy")
    assert back.dtype == np.uint8 and np.array_equal(back, array)


def test_compression_usage_errors(runs, capsys, tmp_path):
    packed = tmp_path / "p.gdmz"
    assert cli.main(["compress", "digits:valid", "--checkpoint", runs["pixelcnn"],
                     "-o", str(packed)]) == 0
    for argv, message in [
        (["decompress", str(packed), "--checkpoint", runs["vae"], "-o", str(tmp_path / "o.npy")],
         "compressed with checkpoint sha256"),
        (["decompress", str(packed), "--checkpoint", runs["pixelcnn"], "-o", str(tmp_path / "o")],
         "must end in .npy"),
        (["compress", "digits:tests", "--checkpoint", runs["vae"], "-o", str(packed)],
         "the split must be"),
        (["compress", str(tmp_path / "none.npy"), "--checkpoint", runs["vae"], "-o", "x"],
         "no such file"),
    ]:
        assert cli.main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "o.npy").exists()
    packed.write_bytes(packed.read_bytes()[:-5])
    assert cli.main(["decompress", str(packed), "--checkpoint", runs["pixelcnn"],
                     "-o", str(tmp_path / "o.npy")]) == 2
    assert "truncated" in capsys.readouterr().err


def test_sample_with_a_condition_fills_the_mask_and_keeps_the_rest(runs, tmp_path):
    out = tmp_path / "completed.npz"
    assert cli.main(["sample", "--checkpoint", runs["pixelcnn"], "--condition", "digits:test",
                     "--mask", "bottom", "--n", "5", "--out", str(out)]) == 0
    completed, given = np.load(out)["samples"], data.load("digits").test[:5].numpy()
    assert completed.shape == given.shape
    assert np.array_equal(completed[..., :4, :], given[..., :4, :])
    assert cli.main(["sample", "--checkpoint", runs["pixelcnn"], "--condition", "digits:test",
                     "--out", str(out)]) == 2


def test_score_and_encode_write_one_row_per_example(runs, capsys, tmp_path):
    scores, codes = tmp_path / "scores.npy", tmp_path / "codes.npy"
    assert cli.main(["score", "digits:test", "--checkpoint", runs["pixelcnn"],
                     "-o", str(scores)]) == 0
    assert "bits/dim (exact)" in capsys.readouterr().out
    assert np.load(scores).shape == (297,) and np.load(scores).min() > 0
    assert cli.main(["encode", "digits:valid", "--checkpoint", runs["vae"],
                     "-o", str(codes)]) == 0
    assert "posterior mean" in capsys.readouterr().out
    assert np.load(codes).shape == (150, 16)
    assert cli.main(["encode", "digits:valid", "--checkpoint", runs["vae"], "-o", "c.txt"]) == 2


def test_results_uses_measures_each_run_once_and_writes_the_table(runs, capsys):
    folder = os.path.dirname(os.path.dirname(runs["vae"]))
    argv = ["results", "--uses", "--models", "pixels", "pixelcnn", "vae", "gan", "--out", folder]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "gan: no best.pt" in out and "pixelcnn: measured" in out
    report = open(os.path.join(folder, "uses.md")).read()
    header, _, *rows = report.split("\n\n")[1].splitlines()  # the uses table, first
    columns = header.strip("| ").split(" | ")
    figures = {cells[0]: dict(zip(columns, cells))
               for cells in (row.strip("| ").split(" | ") for row in rows)}
    assert set(figures) == {"pixelcnn", "vae"}
    # a file costs about what the model promises: the PixelCNN's exact −log2 p(x), the VAE's
    # negative ELBO (an estimate from 20 draws of z per image); the coder gives every level at
    # least 2^-24, so a 2-step model's near-impossible levels can cost less than they should
    for name in figures:
        promised = float(figures[name]["model bits/dim"])
        assert abs(float(figures[name]["file bits/dim"]) - promised) < 0.1
    assert figures["vae"]["completion accuracy"] == "—"
    assert 0 <= float(figures["pixelcnn"]["completion accuracy"]) <= 1
    assert "bz2 -9" in report and "Reproduce: `gdm-engine results --uses" in report
    kept = json.load(open(os.path.join(folder, "pixelcnn-digits", "uses.json")))
    assert kept["sha256"] == hashlib.sha256(open(runs["pixelcnn"], "rb").read()).hexdigest()
    assert cli.main(argv) == 0  # measured once per checkpoint: the second run reads uses.json
    assert "pixelcnn: kept from its uses.json" in capsys.readouterr().out
    assert open(os.path.join(folder, "uses.md")).read() == report


def test_sample_with_a_condition_refuses_what_it_cannot_use(runs, capsys, tmp_path):
    floats = tmp_path / "floats.npy"
    np.save(floats, np.full((2, 1, 8, 8), 0.5))
    common = ["sample", "--checkpoint", runs["pixelcnn"], "--mask", "bottom",
              "--out", str(tmp_path / "c.npz")]
    for extra, message in [(["--condition", str(floats)], "integer levels"),
                           (["--condition", "digits:test", "--temperature", "2"], "temperature")]:
        assert cli.main([*common, *extra]) == 2
        assert message in capsys.readouterr().err
