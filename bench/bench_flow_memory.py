"""Training a Glow with memory saving (activations rebuilt by the inverses) against plain
autograd: the case of `gdm_engine.benchmark.flow_memory_cases` (depth 32, 3 levels, 3 x 32 x 32,
batch 16). The bytes saved for backward are printed by `gdm-engine bench`; here the step time."""

import pytest
import torch

from gdm_engine.benchmark import flow_memory_cases

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = flow_memory_cases()


@pytest.mark.parametrize("memory_saving", [False, True], ids=["plain", "memory-saving"])
@pytest.mark.parametrize("case", CASES, ids=[c.label for c in CASES])
def bench_flow_training_step(benchmark, case, memory_saving):
    model = case.build(DEVICE, memory_saving=memory_saving)
    x = torch.randint(0, case.levels, (case.batch, *case.shape), device=DEVICE)
    model.loss(x)  # ActNorm's data-dependent initialisation

    def step():
        model.loss(x).backward()
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    benchmark.pedantic(step, rounds=3, warmup_rounds=1)
