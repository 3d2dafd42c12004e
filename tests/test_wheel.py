"""The package as a user installs it: a wheel built from the tree, installed into a fresh
virtual environment outside the checkout, whose `gdm-engine` runs `info`, a quick `validate`
and a 5-step training. An editable install (what `make` does) would hide a package missing from
setup.py; this does not.

The fresh environment borrows the project environment's third-party packages (torch, triton,
...) through a .pth line naming its site-packages: Python appends that folder to sys.path
without running the .pth files inside it, so the checkout's editable install stays out."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("setup.py", "README.md", "LICENSE", "gdm_engine", "kernels")


def _run(command, cwd, timeout=600, env=None):
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _packages_in_tree():
    """The import names of every package folder of the tree, as the wheel must hold them."""
    names = {"gdm_engine.kernels"} | {
        ".".join(p.parent.relative_to(ROOT).parts)
        for p in (ROOT / "gdm_engine").rglob("__init__.py") if "__pycache__" not in p.parts}
    return names


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the tree's sources (the build writes build/ and egg-info
    where it runs)."""
    source = tmp_path_factory.mktemp("source")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    dist = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--no-index", "--wheel-dir", str(dist), str(source)], cwd=dist)
    (built,) = dist.glob("gdm_engine-*.whl")
    return built


@pytest.fixture(scope="module")
def environment(wheel, tmp_path_factory):
    """A fresh virtual environment with the wheel installed and the project's third-party
    packages borrowed; returns its bin folder."""
    env = tmp_path_factory.mktemp("env")
    _run([sys.executable, "-m", "venv", "--without-pip", str(env)], cwd=env)
    _run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"), "install",
          "--quiet", "--no-deps", "--no-index", str(wheel)], cwd=env)
    site_packages = Path(_run([str(env / "bin" / "python"), "-c",
                               "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              cwd=env).strip())
    (site_packages / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env / "bin"


def test_the_wheel_holds_every_package_of_the_tree_and_its_type_marker(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    folders = {".".join(Path(name).parent.parts) for name in names if name.endswith("__init__.py")}
    assert _packages_in_tree() - folders == set()
    assert "gdm_engine/py.typed" in names  # PEP 561: type checkers read the installed hints
    assert any(name.endswith("licenses/LICENSE") or name.endswith("/LICENSE") for name in names)


def test_installed_outside_the_checkout_the_cli_runs(environment, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    env.pop("TRITON_INTERPRET", None)  # the CLI sets it for itself without a GPU
    where = _run([str(environment / "python"), "-c",
                  "import gdm_engine; print(gdm_engine.__file__)"], cwd=tmp_path, env=env)
    assert Path(where.strip()).is_relative_to(environment.parent), where
    gdm_engine = str(environment / "gdm-engine")
    assert "gdm-engine" in _run([gdm_engine, "info"], cwd=tmp_path, env=env)
    _run([gdm_engine, "validate", "--quick", "--op", "causal_conv1d"], cwd=tmp_path, env=env)
    _run([gdm_engine, "train", "vae", "--data", "digits", "--steps", "5", "--eval-every", "5",
          "--out", str(tmp_path / "run")], cwd=tmp_path, env=env)
    assert (tmp_path / "run" / "best.pt").exists()
