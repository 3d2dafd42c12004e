"""The commands for what a trained checkpoint is for: compress and decompress, score, encode,
and sample --condition --mask (inpainting), in-process on tiny runs."""

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
                         "--eval-every", "2", "--out", str(folder / model), *sets]) == 0
    return {model: str(folder / model / "best.pt") for model in ("pixelcnn", "vae")}


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
