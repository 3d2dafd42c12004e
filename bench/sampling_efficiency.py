"""Sampling efficiency of the diffusion samplers on one trained model: sample distance to the
test split (sliced Wasserstein and MMD, gdm_engine.metrics) against the number of model
evaluations, DDPM's 1,000 ancestral steps against DDIM, Euler, Heun and DPM-Solver++(2M) with
few. Each figure is the mean over `--repeats` draws of `--samples` points (the distances of a
finite sample have a floor: the test split against the validation split is printed beside).

    python bench/sampling_efficiency.py runs/ddpm-8gaussians/best.pt --json bench/results/x.json

The issue's target: DPM-Solver++(2M) with 20 evaluations within 10% of DDPM with 1,000 on both
distances.
"""

import argparse
import json
import time

import torch

from gdm_engine import data as datasets
from gdm_engine import metrics, train

SAMPLERS = [("ddpm", None), ("ddim", 20), ("ddim", 50), ("euler", 20), ("heun", 10),
            ("dpmpp_2m", 10), ("dpmpp_2m", 20)]


def evaluations(sampler, steps, total):
    """Model evaluations of a run: Heun corrects every step but the last."""
    if sampler == "ddpm":
        return total
    return 2 * steps - 1 if sampler == "heun" else steps


def distances(drawn, reference, seed):
    generator = torch.Generator().manual_seed(seed)
    return (metrics.sliced_wasserstein(drawn, reference, generator=generator),
            metrics.mmd(drawn, reference, generator=generator))


def measure(model, test, sampler, steps, samples, repeats):
    rows = []
    for repeat in range(repeats):
        generator = torch.Generator().manual_seed(1000 + repeat)
        start = time.perf_counter()
        drawn = model.sample(samples, generator=generator, sampler=sampler, steps=steps)
        seconds = time.perf_counter() - start
        rows.append((*distances(drawn, test, repeat), seconds))
    sw, mmd, seconds = (sum(r[i] for r in rows) / repeats for i in range(3))
    return {"sampler": sampler, "steps": steps or model.timesteps,
            "evaluations": evaluations(sampler, steps, model.timesteps),
            "sliced_wasserstein": sw, "mmd": mmd, "seconds": seconds}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="best.pt of a ddpm trained on a 2-D toy")
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows as JSON")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    state = train.load_checkpoint(args.checkpoint)
    model = train.model_from_checkpoint(state).eval()
    data = datasets.load(state["data"])
    floor = distances(data.valid, data.test, 0)
    print(f"{state['data']}: validation split against test: sliced W {floor[0]:.4f}, "
          f"MMD {floor[1]:.5f}")
    rows = []
    for sampler, steps in SAMPLERS:
        rows.append(measure(model, data.test, sampler, steps, args.samples, args.repeats))
        r = rows[-1]
        print(f"{r['sampler']:>9} {r['steps']:>5} steps {r['evaluations']:>5} evaluations  "
              f"sliced W {r['sliced_wasserstein']:.4f}  MMD {r['mmd']:.5f}  "
              f"{r['seconds']:.2f} s", flush=True)
    ddpm = rows[0]
    target = next(r for r in rows if r["sampler"] == "dpmpp_2m" and r["evaluations"] == 20)
    for name in ("sliced_wasserstein", "mmd"):
        ratio = target[name] / ddpm[name]
        print(f"DPM-Solver++(2M) 20 / DDPM 1000, {name}: {ratio:.3f} "
              f"({'within' if ratio <= 1.1 else 'NOT within'} 10%)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"data": state["data"], "floor": floor, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
