"""The host table (`gdm-engine bench --host`): a row of positive times for every catalog op and
every sampler loop, diffusers' column filled exactly where diffusers runs, and the CLI printing
and saving it. Structure only: timings are never asserted."""

import contextlib
import importlib.util
import json

import pytest
import torch

from gdm_engine import catalog, cli, host_time

HAS_DIFFUSERS = importlib.util.find_spec("diffusers") is not None


def test_every_op_has_a_row_of_positive_times():
    rows = host_time.host_ops(catalog.CATALOG.values(), cases_per_op=1, repeats=3)
    assert [r["op"] for r in rows] == list(catalog.CATALOG)
    for r in rows:
        assert set(r) == set(host_time.OP_COLUMNS)
        assert r["host_us"] > 0 and r["custom_op_us"] > 0
        assert r["host/custom_op"] == pytest.approx(r["host_us"] / r["custom_op_us"])
        assert r["<=3x"] == ("yes" if r["host/custom_op"] <= 3 else "no")
        # the first tiny case of a step takes float schedule values, which diffusers' steps take
        has_peer = HAS_DIFFUSERS and "diffusers" in catalog.get(r["op"]).peers
        assert (r["diffusers_us"] is not None) == has_peer, r
        if has_peer:
            assert r["diffusers_us"] > 0
            assert r["host/diffusers"] == pytest.approx(r["host_us"] / r["diffusers_us"])


def test_every_sampler_loop_has_a_row_of_positive_step_times():
    rows = host_time.host_sampler_steps(intervals=5)
    assert [r["sampler"] for r in rows] == list(host_time.SAMPLERS)
    for r in rows:
        assert set(r) == set(host_time.STEP_COLUMNS)
        assert r["host_us"] > 0
        has_peer = HAS_DIFFUSERS and r["sampler"] != "langevin"
        assert (r["diffusers_us"] is not None) == has_peer, r
        if has_peer:
            assert r["diffusers_us"] > 0 and r["<=diffusers"] in ("yes", "no")
            assert r["diffusers"].endswith("Scheduler")


def test_a_step_spans_its_evaluations_after_a_warm_up_run():
    runs = []

    def make_loop(model):  # 4 steps of 2 evaluations: 3 intervals between steps per run
        def loop():
            runs.append(len(runs))
            for _ in range(8):
                model(torch.zeros(1), None)

        return loop

    no_peer = (lambda model: None, contextlib.nullcontext)  # a library that is not installed
    step, none = host_time.step_us([(make_loop, contextlib.nullcontext), no_peer], 2, 6)
    assert step > 0 and none is None
    assert runs == [0, 1, 2]  # a warm-up run, then two runs of 3 intervals


def test_bench_host_prints_and_saves_only_the_host_table(capsys, tmp_path):
    report, table = tmp_path / "host.json", tmp_path / "host.md"
    assert cli.main(["bench", "--host", "--quick", "--op", "q_sample", "--json", str(report),
                     "--markdown", str(table)]) == 0
    out = capsys.readouterr().out
    assert "host/custom_op" in out and "Kernel timings need a GPU" not in out
    saved = json.loads(report.read_text())
    assert "rows" not in saved  # no provider timings with --host
    assert {r["op"] for r in saved["host"]["ops"]} == {"q_sample"}
    assert saved["host"]["sampler_steps"] == []  # loops only for the whole catalog
    assert "## Host time per op call (µs)" in table.read_text()
