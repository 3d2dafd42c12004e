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


@pytest.fixture
def generator(request):
    """A generator seeded from the run's seed and the test's name: fresh per run, replayable."""
    return torch.Generator().manual_seed(SEED + sum(map(ord, request.node.nodeid)))


@pytest.fixture
def device():
    return DEVICE
