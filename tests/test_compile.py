"""`gdm-engine compile`: every kernel of the catalog builds for sm_80 and sm_90 without a GPU, with
no spills, within shared memory and grid limits; its readings of PTX and resources; and the
64-bit offsets at shapes past 2^31 elements."""

import json
import os
import subprocess
import sys

import pytest
import torch

from gdm_engine import catalog, compile as aot, testing, use_backend
from gdm_engine.kernels import recording_launches
from gdm_engine.ops import causal_conv1d, gaussian_reparam_kl


def _environment(tmp_path):
    """The environment of a fresh shell: no interpreter (compile builds for GPUs), and the record
    of builds kept in tmp_path."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    return {**env, "XDG_CACHE_HOME": str(tmp_path), "TRITON_DEFAULT_FP_FUSION": "1"}


def _gdm_engine(tmp_path, *argv):
    return subprocess.run([sys.executable, "-m", "gdm_engine.cli", *argv], capture_output=True,
                          text=True, env=_environment(tmp_path), timeout=1200)


@pytest.fixture(scope="module")
def whole_catalog(tmp_path_factory):
    """One run of `gdm-engine compile` over the whole catalog, for sm_80 and sm_90."""
    tmp_path = tmp_path_factory.mktemp("compile")
    report = tmp_path / "compile.json"
    run = _gdm_engine(tmp_path, "compile", "--json", str(report))
    return run, json.loads(report.read_text()) if report.exists() else None, tmp_path


def test_every_kernel_builds_for_sm80_and_sm90_without_spills(whole_catalog):
    run, report, _ = whole_catalog
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    builds = report["builds"]
    assert {b["arch"] for b in builds} == {"sm_80", "sm_90"}
    assert {b["op"] for b in builds} == set(catalog.CATALOG)
    assert all(b["verdict"] == "ok" and b["spill_bytes"] == 0 for b in builds)
    assert "0 failed" in run.stdout


def test_16_bit_dot_kernels_use_the_tensor_cores(whole_catalog):
    _, report, _ = whole_catalog
    dots = [b for b in report["builds"] if b["tensor_cores"] != "-"]
    sixteen_bit = [b for b in dots if b["dtype"] in ("fp16", "bf16")]
    assert sixteen_bit
    assert {b["tensor_cores"] for b in sixteen_bit if b["arch"] == "sm_90"} == {"wgmma"}
    assert {b["tensor_cores"] for b in sixteen_bit if b["arch"] == "sm_80"} == {"mma"}
    assert {b["tensor_cores"] for b in dots if b["dtype"] == "fp32 tf32"} <= {"wgmma", "mma"}
    assert {b["tensor_cores"] for b in dots if b["dtype"] == "fp32 ieee"} == {"none"}


def test_the_depthwise_kernel_loads_and_stores_in_vectors(whole_catalog):
    _, report, _ = whole_catalog
    # the bench shape: N=8, C=1024, L=8192, K=4, d=1, bf16; its x tiles are 16-byte aligned
    depthwise = [b for b in report["builds"] if b["kernel"] == "_conv_direct_kernel"
                 and b["dtype"] == "bf16" and "K=4" in b["variant"] and "x1x1" in b["grid"]
                 and int(b["grid"].split("x")[0]) >= 1024]
    assert depthwise
    for b in depthwise:  # the widest load and every store: 16-byte vectors
        assert b["load_bytes"].split("..")[-1] == "16" and b["store_bytes"] == "16", b


def test_info_lists_the_architectures_each_kernel_was_built_for(whole_catalog):
    _, _, tmp_path = whole_catalog
    run = _gdm_engine(tmp_path, "info")
    assert run.returncode == 0, run.stderr
    assert "causal_conv1d/_conv_dot_kernel" in run.stdout
    assert "sm_80 on" in run.stdout and "sm_90 on" in run.stdout


def test_compile_refuses_the_interpreter_and_unknown_architectures(tmp_path):
    env = _environment(tmp_path)
    for argv, message in [(["compile"], "unset TRITON_INTERPRET"),
                          (["compile", "--arch", "sm_75"], "--arch takes")]:
        run = subprocess.run([sys.executable, "-m", "gdm_engine.cli", *argv], text=True,
                             capture_output=True, timeout=300,
                             env={**env, "TRITON_INTERPRET": "1"} if argv == ["compile"] else env)
        assert run.returncode == 2 and message in run.stderr, run.stderr


def test_compile_names_the_triton_internals_it_lacks(monkeypatch):
    # compile drives Triton's JIT from inside; where a Triton lacks a piece of it, the command
    # names the piece and refuses instead of failing in the middle of a build
    from triton.runtime.jit import JITFunction

    assert aot.missing_triton_internals() == []
    monkeypatch.delattr(JITFunction, "_pack_args")
    assert aot.missing_triton_internals() == ["triton.runtime.jit.JITFunction._pack_args"]


def test_compile_on_a_triton_without_its_internals_says_so_and_skips(monkeypatch, capsys):
    import gdm_engine.kernels
    from gdm_engine import cli
    from triton.runtime.jit import JITFunction

    monkeypatch.setattr(gdm_engine.kernels, "INTERPRETED", False)  # as on a GPU machine
    monkeypatch.delattr(JITFunction, "_pack_args")
    assert cli.main(["compile", "--op", "actnorm"]) == 0
    out, err = capsys.readouterr()
    assert "skipped" in err and "JITFunction._pack_args" in err and not out


PTX = """
    @%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];
    ld.global.L1::evict_last.b16 { %rs1 }, [ %rd2 + 0 ];
    cp.async.cg.shared.global [ %r9 + 0 ], [ %rd3 + 0 ], 0x10, %r10;
    @%p2 st.global.v2.b32 [ %rd4 + 0 ], { %r5, %r6 };
"""


def test_memory_widths_read_from_ptx():
    assert aot.memory_widths(PTX) == ("2..16", "8")
    assert aot.memory_widths("") == ("-", "-")


def test_tensor_cores_read_from_ptx():
    assert aot.tensor_cores("tt.load", "mma.sync") == "-"  # no tl.dot: not a dot kernel
    assert aot.tensor_cores("tt.dot", "wgmma.mma_async.sync.aligned") == "wgmma"
    assert aot.tensor_cores("tt.dot", "mma.sync.aligned.m16n8k16") == "mma"
    assert aot.tensor_cores("tt.dot", "fma.rn.f32") == "none"


@pytest.mark.parametrize("field, value, message", [
    ("spill_bytes", 8, "spills 8 bytes"),
    ("shared_bytes", 300_000, "shared memory"),
    ("grid", "1x70000x1", "grid axis 1 is 70000"),
    ("error", "build failed: x", "build failed"),
])
def test_a_build_fails_the_check_for_each_limit(field, value, message):
    build = aot.Build("op", "k", "bf16", "", "", "sm_90", grid="1x1x1")
    assert build.problems() == []
    setattr(build, field, value)
    assert message in "; ".join(build.problems())


def _huge_depthwise(device, dtype=torch.bfloat16):
    """x of 2^31 + 2^16 elements (4 GiB in bf16): past every 32-bit offset."""
    channels, length = 1 << 16, (1 << 15) + 1
    x = torch.empty(1, channels, length, dtype=dtype, device=device)
    w = torch.randn(channels, 1, 4, device=device).to(dtype)
    return x, w


def test_launch_grids_stay_within_limits_past_2_to_the_31_elements():
    # Nothing runs and nothing is written: the launches are recorded and their grids evaluated
    # (here with the interpreter's small tiles, the largest grids). torch.empty leaves the 4 GiB
    # untouched.
    x, w = _huge_depthwise("cpu")
    dense_x = torch.empty(1, 2048, (1 << 20) + 1, dtype=torch.bfloat16)
    dense_w = torch.randn(2048, 2048, 2, dtype=torch.bfloat16)
    # long latent rows: 2^17 column blocks, which a (rows, columns) grid would put on axis 1
    mean, log_var = (torch.empty(2, 1 << 25) for _ in range(2))
    calls = [(causal_conv1d, (x, w), dict(groups=x.shape[1])),
             (causal_conv1d, (dense_x, dense_w), dict(activation="gated")),
             (gaussian_reparam_kl, (mean, log_var), {})]
    with recording_launches() as launches, use_backend("triton"):
        for op, args, kwargs in calls:
            args = [a.requires_grad_() for a in args]
            outs = testing.as_tuple(op(*args, **kwargs))
            torch.autograd.grad(outs, args, [torch.empty_like(o) for o in outs])
    assert len(launches) >= 8
    for launch in launches:
        for config in aot.launch_configs(launch)[1]:
            grid = aot.launch_grid(launch, config)
            assert all(size <= limit for size, limit in zip(grid, aot.GRID_LIMITS)), grid


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_offsets_past_2_to_the_31_elements_on_a_gpu():
    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs 24 GiB of GPU memory")
    x, w = _huge_depthwise("cuda")
    x.normal_()
    with use_backend("triton"):
        y = causal_conv1d(x, w, groups=x.shape[1])
    tail = slice(x.shape[1] - 4, None)  # the last channels sit past element 2^31
    want = torch.nn.functional.conv1d(torch.nn.functional.pad(x[:, tail].float(), (3, 0)),
                                      w[tail].float(), groups=4)
    assert torch.allclose(y[:, tail].float(), want, rtol=2e-2, atol=2e-2)
