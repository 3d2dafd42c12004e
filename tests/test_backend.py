"""Backend selection: auto, triton, reference; set/get/use_backend and GDM_BACKEND."""

import os
import subprocess
import sys

import pytest
import torch

import gdm_engine
from gdm_engine import backend


def test_default_is_auto_and_set_backend_switches():
    assert gdm_engine.get_backend() == "auto"
    gdm_engine.set_backend("reference")
    try:
        assert gdm_engine.get_backend() == "reference"
    finally:
        gdm_engine.set_backend("auto")


def test_use_backend_restores_even_after_an_error():
    with pytest.raises(KeyError):
        with gdm_engine.use_backend("triton"):
            assert gdm_engine.get_backend() == "triton"
            raise KeyError
    assert gdm_engine.get_backend() == "auto"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="backend must be one of auto, triton, reference"):
        gdm_engine.set_backend("cuda")


def test_resolution_by_device_and_dtype():
    cpu = torch.ones(1)
    with gdm_engine.use_backend("auto"):
        assert backend.resolve(cpu) == "reference"
    with gdm_engine.use_backend("triton"):  # the tests run with the interpreter on
        assert backend.resolve(cpu) == "triton"
        assert backend.resolve(cpu.double()) == "reference"
    with gdm_engine.use_backend("reference"):
        assert backend.resolve(cpu) == "reference"


def _run(code, **env):
    environment = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "GDM_BACKEND")}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True,
                          text=True)


def test_environment_variable_sets_the_backend():
    result = _run("import gdm_engine; print(gdm_engine.get_backend())", GDM_BACKEND="reference")
    assert result.stdout.strip() == "reference"
    result = _run("import gdm_engine", GDM_BACKEND="fast")
    assert "GDM_BACKEND must be one of" in result.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour")
def test_triton_on_cpu_without_interpreter_says_how_to_enable_it():
    code = ("import torch, gdm_engine\n"
            "gdm_engine.set_backend('triton')\n"
            "gdm_engine.ops.causal_conv1d(torch.randn(1, 2, 3), torch.randn(2, 2, 2))\n")
    result = _run(code)
    assert result.returncode != 0
    assert "TRITON_INTERPRET=1" in result.stderr and "RuntimeError" in result.stderr
