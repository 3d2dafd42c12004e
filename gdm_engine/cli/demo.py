"""`gdm-engine demo`: what a newcomer runs first (`make demo`). The kernel commands, then models
of four families trained with short budgets, each sampled and scored on the test split, all in
one process: the commands one would type at a shell, without a Python start-up each. The
budgets are short, said as such; the recipes' figures are `gdm-engine results`'."""

import dataclasses
import os
import shlex
import time

from ._common import UsageError


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """One model of the demo: trained, sampled from its best.pt, scored on the test split."""

    model: str
    data: str
    train: str  # the train command's options besides the model, data and folder
    picture: str  # what its samples.png shows
    sample: str = ""
    eval: str = ""

    def commands(self, out):
        folder = os.path.join(out, f"{self.model}-{self.data}")
        best = os.path.join(folder, "best.pt")
        picture = os.path.join(folder, "samples.png")
        return [
            (
                f"{self.model} on {self.data}, a short budget",
                f"train {self.model} --data {self.data} {self.train} --out {folder}",
            ),
            (self.picture, f"sample --checkpoint {best} {self.sample} --out {picture}"),
            ("its test figures", f"eval --checkpoint {best} {self.eval} --json {folder}/eval.json"),
        ]


KERNEL_COMMANDS = [
    ("versions, device, backend", "info"),
    ("every kernel against its reference, two small cases each", "validate --smoke"),
    ("the ops' timings against PyTorch", "bench --quick --ops-only --no-compile"),
]

RUNS = [
    DemoRun(
        "vae",
        "digits",
        "--steps 1000 --eval-every 500",
        "64 digits decoded from the prior",
    ),
    DemoRun(
        "pixelcnn",
        "digits",
        "--steps 150 --eval-every 150 --set channels=32",
        "64 digits drawn pixel by pixel",
    ),
    DemoRun(
        "nsf",
        "8gaussians",
        "--steps 400 --batch-size 256 --eval-every 400",
        "2,000 points beside the data and the model's density",
        sample="--n 2000",
    ),
    DemoRun(
        "ddpm",
        "8gaussians",
        "--steps 1500 --batch-size 256 --eval-every 1500 --set width=128 --set blocks=3 "
        "--set prediction=v --set bound_timesteps=50",
        "2,000 points by DPM-Solver++(2M) in 20 steps, beside the data",
        sample="--n 2000 --steps 20",
    ),
    DemoRun(
        "gan",
        "digits",
        "--steps 400 --eval-every 400 --set width=32",
        "64 digits from the generator",
    ),
]


def add_commands(sub):
    p = sub.add_parser("demo", help="the kernel commands and a few short trainings, in one process")
    p.add_argument("--out", default="runs/demo", help="the demo's folder (default runs/demo)")


def demo_commands(out):
    """(what it shows, the command line) of each step of the demo, in order."""
    steps = list(KERNEL_COMMANDS)
    for run in RUNS:
        steps += run.commands(out)
    return steps


def cmd_demo(args):
    from gdm_engine import cli

    if os.path.exists(args.out) and os.listdir(args.out):
        raise UsageError(f"--out {args.out} is not empty: the demo starts from nothing")
    times = []
    for purpose, command in demo_commands(args.out):
        print(f"\n$ gdm-engine {command}\n# {purpose}", flush=True)
        start = time.perf_counter()
        status = cli.main(shlex.split(command))
        times.append((command.split(" --")[0], time.perf_counter() - start))
        if status:
            return status
    print("\ndemo: seconds per command")
    for command, seconds in times:
        print(f"  {seconds:6.1f}  gdm-engine {command}")
    print(f"  {sum(s for _, s in times):6.1f}  in all; the pictures and figures are in {args.out}/")
    return 0


COMMANDS = {"demo": cmd_demo}
