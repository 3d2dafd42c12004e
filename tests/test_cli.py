"""The gdm-engine command: info, validate and bench, in-process (the interpreter is on)."""

import json

import pytest

from gdm_engine import catalog, cli


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
    assert cli.main(["validate", "--no-grad", "--quick"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unknown_op_is_a_usage_error(capsys):
    assert cli.main(["validate", "--op", "nope"]) == 2
    assert "unknown op 'nope'" in capsys.readouterr().err


def test_bench_on_cpu_times_references_and_says_kernels_need_a_gpu(capsys, tmp_path):
    report, table = tmp_path / "bench.json", tmp_path / "bench.md"
    assert cli.main(["bench", "--quick", "--json", str(report), "--markdown", str(table)]) == 0
    assert "Kernel timings need a GPU" in capsys.readouterr().out
    rows = json.loads(report.read_text())["rows"]
    assert {r["provider"] for r in rows} == {"eager", "compile"}
    assert all(r["median_ms"] > 0 and r["GB/s"] > 0 for r in rows)
    assert "| op | case | dtype | provider |" in table.read_text()


@pytest.mark.parametrize("argv", [["train"], ["bench", "--seed", "x"]])
def test_bad_arguments_exit_2(argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
