"""What every launcher shares (kernels/_runtime.py): launches on the tensors' own device, and
autotuned choices kept across processes."""

import contextlib
import os
import subprocess
import sys

import pytest
import torch
import triton
from torch._subclasses.fake_tensor import FakeTensorMode

from gdm_engine.kernels import _runtime


class _Kernel:
    """Stands in for a Triton kernel: notes the CUDA device that is current at each launch."""

    def __init__(self, current):
        self.current, self.launched_on = current, []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launched_on.append(self.current["index"])


def test_a_launch_runs_on_the_device_of_its_tensors(monkeypatch):
    # Triton launches on the current device: cuda:1 tensors while cuda:0 is current would be
    # read by a kernel on the wrong GPU. A fake current device (no GPU here) and fake tensors.
    current = {"index": 0, "switches": 0}

    @contextlib.contextmanager
    def device(index):
        previous = current["index"]
        current["index"], current["switches"] = index, current["switches"] + 1
        try:
            yield
        finally:
            current["index"] = previous

    monkeypatch.setattr(torch.cuda, "current_device", lambda: current["index"])
    monkeypatch.setattr(torch.cuda, "device", device)
    with FakeTensorMode():
        on_1, on_0 = torch.empty(4, device="cuda:1"), torch.empty(4, device="cuda:0")
    kernel = _Kernel(current)
    for x in (on_1, on_0, torch.empty(4)):
        _runtime.launch(kernel, (1,), x, x.numel(), BLOCK=4)
    assert kernel.launched_on == [1, 0, 0]
    # only the cuda:1 launch switched, and it switched back
    assert current["switches"] == 1 and current["index"] == 0


@triton.jit
def _copy_kernel(x, y, N, BLOCK: triton.language.constexpr):
    offsets = triton.language.program_id(0) * BLOCK + triton.language.arange(0, BLOCK)
    triton.language.store(y + offsets, triton.language.load(x + offsets, mask=offsets < N),
                          mask=offsets < N)


def test_gpu_tuners_keep_their_choices_on_disk(monkeypatch):
    # Under the interpreter the tuner has one configuration and nothing to keep; built as for a
    # GPU, every configuration is tried once and the choice is cached across processes.
    from triton import knobs

    configs = [triton.Config({"BLOCK": b}) for b in (128, 256)]
    monkeypatch.setattr(_runtime, "INTERPRETED", False)
    with knobs.runtime.scope():
        knobs.runtime.interpret = False
        tuner = _runtime.autotune(configs, ["N"], triton.Config({"BLOCK": 16}))(_copy_kernel)
    assert tuner.configs == configs and tuner.cache_results


TUNE = """
import torch
from gdm_engine import ops
x, w = torch.randn(2, 8, 64, device="cuda"), torch.randn(8, 8, 3, device="cuda")
ops.causal_conv1d(x, w)
torch.cuda.synchronize()
"""


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_a_tuned_choice_outlives_its_process(tmp_path):
    env = {**os.environ, "TRITON_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", TUNE], capture_output=True, text=True, env=env,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert list(tmp_path.rglob("*.autotune.json"))
