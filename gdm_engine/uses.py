"""The uses table: what each model trained by `gdm-engine results` does beyond samples and
bits/dim, measured on the digits' test split with the checkpoint chosen on validation.

* compression: the size of a file of the whole test split (header included) in bits/dim, beside
  the model's own test bits/dim and the general-purpose codecs on the same images; encode and
  decode images per second, the cached decoder against the naive one.
* anomaly scores: AUROC of the test digits against each corruption and a foreign set, the raw
  score and, for likelihood models, typicality and the likelihood ratio to the independent-pixel
  model.
* inpainting: the digit classifier's accuracy on completions of the test digits' bottom halves.
* representations: a linear probe on the model's codes against one on raw pixels.

Each model's figures are kept in its run folder (uses.json, keyed by the sha256 of best.pt), so
a rerun measures only the models whose checkpoint changed.
"""

import bz2
import gzip
import io
import json
import lzma
import os
import time
from collections.abc import Callable
from typing import Any, Optional

import numpy as np
import torch

from gdm_engine import (
    anomaly,
    compression,
    digit_features,
    inpainting,
    metrics,
    representations,
    train,
)
from gdm_engine._table import format_table
from gdm_engine.compression import bits_back, container
from gdm_engine.data import Data
from gdm_engine.models import DDPM, VAE, GenerativeModel

SEED = 0
# cost settings for 2 CPU cores: the DDPM's bound is scored on a stratified 20 of its 1,000
# terms (noisy per example, fine for a ranking), RePaint runs 50 steps with 3 resamplings
DDPM_SCORE_TIMESTEPS = 20
REPAINT_OPTIONS = {"steps": 50, "resamplings": 3}


def general_purpose_codecs(x: torch.Tensor) -> dict[str, float]:
    """Bits per dimension of the general-purpose lossless codecs on the examples x, all in one
    file each (the strongest way to use them): gzip, bz2 and xz at their highest settings on the
    raw bytes, PNG (Pillow, optimised) and WebP lossless on one picture of all the images.

    Args:
        x: levels (N, 1, H, W), below 256.

    Returns:
        {codec: bits per dimension}.
    """
    array = x.numpy().astype(np.uint8)
    raw = array.tobytes()
    strip = array.reshape(-1, array.shape[-1])  # the images one above the other
    sizes = {
        "gzip -9": len(gzip.compress(raw, 9)),
        "bz2 -9": len(bz2.compress(raw, 9)),
        "xz -9e": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
        "PNG (optimised)": _picture_bytes(strip, "PNG", optimize=True),
        "WebP lossless": _picture_bytes(strip, "WEBP", lossless=True, quality=100, method=6),
    }
    return {name: 8 * size / array.size for name, size in sizes.items()}


def _picture_bytes(image: np.ndarray, kind: str, **options: Any) -> int:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, kind, **options)
    return len(buffer.getvalue())


def compression_figures(model: GenerativeModel, x: torch.Tensor, digest: bytes) -> dict[str, Any]:
    """The file of x by the model: its bits/dim and speed, the round trip checked.

    Args:
        model: a model with a codec (compression.codec).
        x: levels (N, *shape).
        digest: the sha256 of the model's checkpoint.

    Returns:
        {"file bits/dim", "header bits/dim", "encode images/s", "decode images/s"}; for
        autoregressive models "naive decode images/s", for the VAE "initial bits/dim" (the
        bits-back coder's initial bits, paid once per file).

    Raises:
        RuntimeError: a round trip was not exact (it never should be).
    """
    figures: dict[str, Any] = {}
    for cached in (True, False) if compression.codec(model) != "bits-back" else (True,):
        start = time.perf_counter()
        blob = compression.compress(model, x, digest, cached=cached)
        encoded = time.perf_counter()
        back = compression.decompress(model, blob, digest)
        decoded = time.perf_counter()
        if not np.array_equal(back, x.cpu().numpy()):
            raise RuntimeError(f"the {compression.codec(model, cached)} round trip was not exact")
        if cached:
            figures["file bits/dim"] = 8 * len(blob) / x.numel()
            words = len(container.unpack(blob)[1])
            figures["header bits/dim"] = 8 * (len(blob) - 4 * words) / x.numel()
            figures["encode images/s"] = len(x) / (encoded - start)
            figures["decode images/s"] = len(x) / (decoded - encoded)
        else:
            figures["naive decode images/s"] = len(x) / (decoded - encoded)
    if isinstance(model, VAE):
        figures["initial bits/dim"] = 32 * len(bits_back.seed_words(model)) / x.numel()
    return figures


def model_bits_per_dim(model: GenerativeModel, x: torch.Tensor, draws: int = 20) -> float:
    """The code length the model promises for x, bits/dim: the exact −log2 p(x) of an
    autoregressive model, the negative ELBO (averaged over `draws` draws of z) of the VAE,
    which is what bits-back coding costs.

    Args:
        model: a model with a codec.
        x: levels (N, *shape).
        draws: the VAE's draws of z per example.

    Returns:
        Mean bits per dimension.
    """
    if not isinstance(model, VAE):
        return metrics.bits_per_dim(model, x)
    generator = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        nats = -torch.stack(
            [model.log_prob(x, samples=1, generator=generator) for _ in range(draws)]
        ).mean(0)
    return nats.double().mean().item() / (x[0].numel() * np.log(2))


def model_row(model: GenerativeModel, data: Data, digest: bytes) -> dict[str, Any]:
    """Every use of one trained model that it has (None where it has none).

    Args:
        model: the model, as loaded from best.pt.
        data: the data set it was trained on (the digits).
        digest: the sha256 of best.pt.

    Returns:
        The row's figures.
    """
    row: dict[str, Any] = {}
    if _has(compression.codec, model):
        row.update(compression_figures(model, data.test, digest))
        row["model bits/dim"] = model_bits_per_dim(model, data.test)
    if isinstance(model, DDPM):
        model.bound_timesteps = DDPM_SCORE_TIMESTEPS
    row["score"] = anomaly.score_kind(model)
    row["anomalies"] = anomaly.anomaly_table(model, data, torch.Generator().manual_seed(SEED))
    if _has(inpainting.completion_method, model):
        options = REPAINT_OPTIONS if isinstance(model, DDPM) else {}
        row["completion"] = inpainting.completion_accuracy(
            model,
            data,
            digit_features.feature_network(),
            inpainting.bottom_half_mask(data.shape),
            torch.Generator().manual_seed(SEED),
            **options,
        )
    if _has(representations.encoding_kind, model):
        row["probe"] = representations.probe_table(model, data)
    return row


def _has(use: Callable[[GenerativeModel], Any], model: GenerativeModel) -> bool:
    """Whether `use` accepts the model (it raises ValueError for a model it has no use for)."""
    try:
        use(model)
    except ValueError:
        return False
    return True


def measure(name: str, data: Data, folder: str) -> tuple[Optional[dict[str, Any]], bool]:
    """The uses of the run in `folder` (its best.pt), measured once per checkpoint: kept in
    folder/uses.json with the checkpoint's sha256.

    Args:
        name: the model's name.
        data: the data set.
        folder: the run folder that `gdm-engine results` trained.

    Returns:
        (the row's figures, or None where the folder has no best.pt; whether they were measured
        now, rather than kept from an earlier measurement of the same checkpoint).
    """
    path = os.path.join(folder, "best.pt")
    if not os.path.exists(path):
        return None, False
    digest = compression.checkpoint_digest(path)
    kept = os.path.join(folder, "uses.json")
    if os.path.exists(kept):
        with open(kept) as f:
            saved = json.load(f)
        if saved["sha256"] == digest.hex():
            return saved["figures"], False
    torch.manual_seed(SEED)
    model = train.model_from_checkpoint(train.load_checkpoint(path))
    start = time.perf_counter()
    figures = model_row(model, data, digest)
    figures["seconds"] = time.perf_counter() - start
    with open(kept, "w") as f:
        json.dump({"model": name, "sha256": digest.hex(), "figures": figures}, f, indent=1)
    return figures, True


def _auroc_cells(anomalies: list[dict[str, Any]], key: str) -> Optional[float]:
    """The mean AUROC over the anomaly sets of one kind of score (None where it has none)."""
    values = [row[key] for row in anomalies if row[key] is not None]
    return float(np.mean(values)) if values else None


def table_rows(measured: dict[str, dict[str, Any]], best_codec: float) -> list[dict[str, Any]]:
    """The rows of the uses table and of the compression table, one per measured model.

    Args:
        measured: {model name: its figures (``measure``)}.
        best_codec: the bits/dim of the best general-purpose codec on the same images.

    Returns:
        Rows of USES_COLUMNS and COMPRESSION_COLUMNS; None where a model has no such use.
    """
    rows = []
    for name, figures in measured.items():
        anomalies, file_bits = figures["anomalies"], figures.get("file bits/dim")
        rows.append(
            {
                **{key: figures.get(key) for key in COMPRESSION_COLUMNS[1:]},
                "model": name,
                "overhead %": None
                if file_bits is None
                else 100 * (file_bits / figures["model bits/dim"] - 1),
                "file / best codec": None if file_bits is None else file_bits / best_codec,
                "score": figures["score"],
                "AUROC": _auroc_cells(anomalies, "auroc"),
                "AUROC typicality": _auroc_cells(anomalies, anomaly.TYPICALITY),
                "AUROC likelihood ratio": _auroc_cells(anomalies, anomaly.LIKELIHOOD_RATIO),
                "completion accuracy": figures.get("completion", {}).get("completed"),
                "probe accuracy": figures.get("probe", {}).get("test_accuracy"),
            }
        )
    return rows


USES_COLUMNS = [
    "model",
    "file bits/dim",
    "model bits/dim",
    "file / best codec",
    "score",
    "AUROC",
    "AUROC typicality",
    "AUROC likelihood ratio",
    "completion accuracy",
    "probe accuracy",
]
COMPRESSION_COLUMNS = [
    "model",
    "file bits/dim",
    "model bits/dim",
    "overhead %",
    "header bits/dim",
    "initial bits/dim",
    "encode images/s",
    "decode images/s",
    "naive decode images/s",
]


def anomaly_rows(measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The AUROC of every model and score on every anomaly set: one row per model and score.

    Args:
        measured: {model name: its figures (``measure``)}.

    Returns:
        Rows {"model", "score", <anomaly set>: AUROC, ...}.
    """
    rows = []
    for name, figures in measured.items():
        anomalies = figures["anomalies"]
        for key, label in [
            ("auroc", figures["score"]),
            (anomaly.TYPICALITY, anomaly.TYPICALITY),
            (anomaly.LIKELIHOOD_RATIO, anomaly.LIKELIHOOD_RATIO),
        ]:
            if anomalies[0][key] is not None:
                cells = {row["anomaly"]: row[key] for row in anomalies}
                rows.append({"model": name, "score": label, **cells})
    return rows


def baselines(data: Data) -> dict[str, Any]:
    """What the uses are measured against: the general-purpose codecs on the test split, and
    the linear probe on raw pixels.

    Args:
        data: the digits.

    Returns:
        {"codecs": {codec: bits/dim}, "pixel probe": the probe's figures}.
    """
    return {
        "codecs": general_purpose_codecs(data.test),
        "pixel probe": representations.pixel_probe(data),
    }


def _shown(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells as the report shows them: speeds to one decimal, percentages to two, other figures
    to four, "—" for a use a model does not have."""
    return [
        {
            key: "—"
            if value is None
            else f"{value:.1f}"
            if key.endswith("images/s")
            else f"{value:.2f}"
            if key.endswith("%")
            else f"{value:.4f}"
            if isinstance(value, float)
            else value
            for key, value in row.items()
        }
        for row in rows
    ]


def report(measured: dict[str, dict[str, Any]], against: dict[str, Any], command: str) -> str:
    """The uses report in markdown: the table, the codecs beside the files, the AUROC of every
    anomaly set, and the baselines of completion and probe accuracy.

    Args:
        measured: {model name: its figures (``measure``)}.
        against: ``baselines(data)``.
        command: the command that reproduces it.

    Returns:
        The markdown.
    """
    codecs = [{"codec": name, "bits/dim": bits} for name, bits in against["codecs"].items()]
    first = next(iter(measured.values()))
    sets = [row["anomaly"] for row in first["anomalies"]]
    completion = next((f["completion"] for f in measured.values() if "completion" in f), None)
    probe = against["pixel probe"]
    rows = _shown(table_rows(measured, min(against["codecs"].values())))
    compressing = [row for row in rows if row["file bits/dim"] != "—"]
    sections = [
        format_table(rows, USES_COLUMNS, markdown=True),
        "Compression of the test split, one file per model (the header included; the VAE's "
        "initial bits too), and its speed: the cached decoder against the naive one:",
        format_table(compressing, COMPRESSION_COLUMNS, markdown=True),
        "General-purpose codecs on the same test images (one file each):",
        format_table(_shown(codecs), ["codec", "bits/dim"], markdown=True),
        "AUROC of the test digits against each anomaly set:",
        format_table(_shown(anomaly_rows(measured)), ["model", "score", *sets], markdown=True),
        f"The linear probe on raw pixels: test accuracy {probe['test_accuracy']:.4f} "
        f"(C = {probe['C']}, chosen on validation).",
    ]
    if completion is not None:
        sections.append(
            f"The digit classifier on the test images that the completions start from: "
            f"{completion['given_half_only']:.4f} on the top halves alone (the bottom blank), "
            f"{completion['original']:.4f} on the full originals."
        )
    sections.append(f"Reproduce: `{command}`")
    return "\n\n".join(sections) + "\n"
