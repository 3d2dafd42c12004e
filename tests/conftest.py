"""Shared fixtures. Without a GPU the kernels run through Triton's interpreter, which must be
switched on before triton compiles anything: hence the environment is set here, first."""

import os
import secrets

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# Fresh random inputs every run; GDM_TEST_SEED=<n> replays a run.
SEED = int(os.environ.get("GDM_TEST_SEED", secrets.randbits(31)))


def pytest_report_header(config):
    return f"gdm-engine: device {DEVICE}, random seed {SEED} (replay with GDM_TEST_SEED={SEED})"


@pytest.fixture(autouse=True)
def ieee_fp32_products():
    """fp32 kernels follow torch.backends.cudnn.allow_tf32 (on by default) and would run TF32
    products on a GPU; tests hold them to fp32 tolerances, so TF32 is off unless a test (or
    testing.check_case(tf32=True)) turns it on."""
    from gdm_engine.testing import allow_tf32

    with allow_tf32(False):
        yield


@pytest.fixture(autouse=True, scope="session")
def feature_cache(tmp_path_factory):
    """Caches (the digit feature network) go to a directory of the session, never the user's
    home; the network then trains at most once per session and every test shares it."""
    previous = os.environ.get("GDM_ENGINE_CACHE")
    os.environ["GDM_ENGINE_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield os.environ["GDM_ENGINE_CACHE"]
    if previous is None:
        del os.environ["GDM_ENGINE_CACHE"]
    else:
        os.environ["GDM_ENGINE_CACHE"] = previous


@pytest.fixture
def generator(request):
    """A generator seeded from the run's seed and the test's name: fresh per run, replayable."""
    return torch.Generator().manual_seed(SEED + sum(map(ord, request.node.nodeid)))


@pytest.fixture
def device():
    return DEVICE
