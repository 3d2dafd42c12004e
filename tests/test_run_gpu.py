"""The GPU check, bench/run_gpu.sh, on a machine without a GPU: a python3 with no CUDA (or no
torch) is refused at once, before anything is installed or written; with a stand-in python3
that claims a GPU, every stage runs and is reported even when one fails, its files copied out as
it ends. And the smoke validate it starts with."""

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gdm_engine import cli

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "run_gpu.sh"


def _tree(tmp_path):
    """A copy of the script in a tree of its own: whatever it does stays in tmp_path."""
    (tmp_path / "tree" / "bench").mkdir(parents=True)
    shutil.copy(SCRIPT, tmp_path / "tree" / "bench")
    (tmp_path / "out").mkdir()
    return tmp_path / "tree"


def _run(tmp_path, python3):
    """bash run_gpu.sh with `python3` (a shell script's body) first on PATH; every call of it
    is logged to calls.log."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "python3").write_text(f'#!/bin/sh\necho "$*" >> "{tmp_path}/calls.log"\n{python3}\n')
    (stub / "python3").chmod(stat.S_IRWXU)
    env = {**os.environ, "PATH": f"{stub}{os.pathsep}{os.environ['PATH']}",
           "OUT": str(tmp_path / "out")}
    start = time.perf_counter()
    run = subprocess.run(["bash", str(_tree(tmp_path) / "bench" / "run_gpu.sh")], env=env,
                         capture_output=True, text=True, timeout=300)
    return run, time.perf_counter() - start, (tmp_path / "calls.log").read_text().splitlines()


@pytest.mark.parametrize("python3, reason", [
    # the real interpreter, its GPUs hidden (on this machine it has none anyway)
    (f'CUDA_VISIBLE_DEVICES= exec "{sys.executable}" "$@"', "sees no CUDA device"),
    # the real interpreter without its site-packages: no torch
    (f'exec "{sys.executable}" -S "$@"', "cannot import torch"),
], ids=["no CUDA", "no torch"])
def test_a_python3_without_cuda_is_refused_at_once(tmp_path, python3, reason):
    run, seconds, calls = _run(tmp_path, python3)
    assert run.returncode == 1
    assert reason in run.stderr and "nothing was installed or written" in run.stderr
    assert seconds < 60  # an import of torch, then the refusal (2 shared cores here)
    assert calls == ["-"]  # the probe only: no pip, no stage
    assert not (tmp_path / "tree" / "bench" / "results").exists()
    assert not list((tmp_path / "out").iterdir())


# Claims an H200 (the probe's answer); pip and every stage succeed at once, but the GPU tests fail.
PRETEND_GPU = """case "$*" in
  -) cat > /dev/null; echo h200 ;;
  *gpu-tests*) echo "2 failed"; exit 3 ;;
esac"""


def test_every_stage_runs_and_is_reported_when_one_fails(tmp_path):
    run, _, calls = _run(tmp_path, PRETEND_GPU)
    assert run.returncode == 1, run.stdout + run.stderr
    assert calls[1].startswith("-m pip install --quiet --no-deps --no-build-isolation --no-index")
    stages = json.loads(next((tmp_path / "out").glob("*-h200-stages.json")).read_text())
    verdicts = {s["stage"]: s["verdict"] for s in stages}
    assert verdicts == {"versions": "ok", "build": "ok", "smoke": "ok",
                        "gpu-tests": "failed (exit status 3)", "bench": "ok", "ddim": "ok",
                        "validate": "ok"}
    # the full validate takes what is left until 525 s after the start: the check ends in 9 min
    assert sum(s["seconds"] for s in stages[:-1]) + stages[-1]["timeout_s"] <= 525 + 1
    copied = {p.name.split("-h200-")[1] for p in (tmp_path / "out").iterdir()}
    assert {f"{s}.log" for s in verdicts} | {"stages.json", "stages.md"} <= copied
    assert "1 of 7 stages did not pass" in run.stdout
    # the smoke validates the inputs the build stage built for
    build, smoke = (next(c for c in calls if name in c) for name in (" build ", "--smoke"))
    assert build.split()[-1] == smoke.split("--seed ")[1].split()[0]


def test_smoke_validate_checks_two_cases_in_three_precisions(tmp_path):
    report, table = tmp_path / "smoke.json", tmp_path / "smoke.md"
    assert cli.main(["validate", "--smoke", "--op", "gaussian_reparam_kl", "--json", str(report),
                     "--markdown", str(table)]) == 0
    data = json.loads(report.read_text())
    assert data["complete"] and data["ops"] == ["gaussian_reparam_kl"]
    assert {c["dtype"] for c in data["checks"]} == {"float32", "float32 tf32", "bfloat16"}
    for dtype in ("float32", "float32 tf32", "bfloat16"):  # two cases, contiguous and strided
        assert len({c["case"] for c in data["checks"] if c["dtype"] == dtype}) == 4
    assert {c["quantity"] for c in data["checks"]} >= {"forward z", "grad mean"}
    assert "| gaussian_reparam_kl | bfloat16 | 20 | 0 |" in table.read_text()


def test_a_validate_cut_short_keeps_the_ops_it_checked(tmp_path, monkeypatch):
    # the job's time limit may stop the full validate between two ops: the report, rewritten
    # after each op, keeps what was checked
    from gdm_engine import catalog, testing

    checked = testing.validate

    def out_of_time(specs, *args, **kwargs):
        if specs[0].name == "rq_spline":
            raise TimeoutError("the job's time is up")
        return checked(specs, *args, **kwargs)

    monkeypatch.setattr(testing, "validate", out_of_time)
    monkeypatch.setattr(cli.kernels, "chosen_specs", lambda name: [
        catalog.CATALOG["gaussian_reparam_kl"], catalog.CATALOG["rq_spline"]])
    report, table = tmp_path / "validate.json", tmp_path / "validate.md"
    with pytest.raises(TimeoutError):
        cli.main(["validate", "--smoke", "--no-grad", "--json", str(report), "--markdown",
                  str(table)])
    data = json.loads(report.read_text())
    assert data["ops"] == ["gaussian_reparam_kl"] and not data["complete"]
    assert "cut short after gaussian_reparam_kl" in table.read_text()
