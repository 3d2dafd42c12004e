"""Sampling with the autoregressive models' caches against recomputing the network at every
step: the cases of `gdm_engine.benchmark.sampling_cases` (WaveNet 1,024 steps, PixelCNN 16 x 16,
and 28 x 28 on a GPU). The naive sampler takes tens of seconds on a CPU: one round each."""

import pytest
import torch

from gdm_engine.benchmark import sampling_cases

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CASES = sampling_cases(DEVICE)


@pytest.mark.parametrize("cached", [True, False], ids=["cached", "naive"])
@pytest.mark.parametrize("case", CASES, ids=[f"{c.model} {c.label}" for c in CASES])
def bench_sampling(benchmark, case, cached):
    model = case.build(DEVICE)

    def draw():
        model.sample(case.batch, torch.Generator(DEVICE).manual_seed(0), cached=cached)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    warm_up = cached or DEVICE.type == "cuda"  # the naive sampler takes tens of seconds on a CPU
    benchmark.pedantic(draw, rounds=3 if cached else 1, warmup_rounds=int(warm_up))
