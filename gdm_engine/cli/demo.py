"""`gdm-engine demo`: what a newcomer runs first (`make demo`). The kernel commands, then two
models trained with short budgets and two bundled checkpoints (pretrained/, made by the models'
recipes), each sampled and scored on the test split (the WaveNet also compresses it), all in one
process: the commands one would
type at a shell, without a Python start-up each. The budgets are short, said as such; the
recipes' figures are `gdm-engine results`'."""

import dataclasses
import os
import shlex
import time
from typing import Optional

from ._common import UsageError


@dataclasses.dataclass(frozen=True)
class DemoRun:
    """One model of the demo: trained with a short budget (or, with no `train`, the bundled
    checkpoint in pretrained/), then sampled from and scored on the test split."""

    model: str
    data: str
    picture: str  # what its samples.png shows
    train: Optional[str] = None  # the train command's options besides model, data and folder
    sample: str = ""
    eval: str = ""
    compress: bool = False  # also compress the test split with it, and decompress the file

    def folder(self, out):
        return os.path.join(out, f"{self.model}-{self.data}")

    def commands(self, out, pretrained):
        """(what it shows, the command line) of its steps; paths quoted as a shell would."""
        folder = self.folder(out)
        if self.train is None:
            best = os.path.join(pretrained, f"{self.model}-{self.data}.pt")
            steps = []
        else:
            best = os.path.join(folder, "best.pt")
            steps = [
                (
                    f"{self.model} on {self.data}, a short budget",
                    f"train {self.model} --data {self.data} {self.train} "
                    f"--out {shlex.quote(folder)}",
                )
            ]
        picture = shlex.quote(os.path.join(folder, "samples.png"))
        figures = shlex.quote(os.path.join(folder, "eval.json"))
        best = shlex.quote(best)
        steps += [
            (self.picture, f"sample --checkpoint {best} {self.sample} --out {picture}"),
            ("its test figures", f"eval --checkpoint {best} {self.eval} --json {figures}"),
        ]
        if self.compress:
            packed = shlex.quote(os.path.join(folder, "test.gdmz"))
            unpacked = shlex.quote(os.path.join(folder, "test.npy"))
            steps += [
                (
                    "the test split compressed with its likelihood: bits/dim of the file",
                    f"compress {self.data}:test --checkpoint {best} -o {packed}",
                ),
                (
                    "and decompressed, bit for bit",
                    f"decompress {packed} --checkpoint {best} -o {unpacked}",
                ),
            ]
        return steps


KERNEL_COMMANDS = [
    ("versions, device, backend", "info"),
    ("every kernel against its reference, two small cases each", "validate --smoke"),
    ("the ops' timings against PyTorch", "bench --quick --ops-only --no-compile"),
]

RUNS = [
    DemoRun(
        "vae",
        "digits",
        "64 digits decoded from the prior, each pixel drawn given z: speckled after so short a "
        "budget",
        train="--steps 1000 --eval-every 500",
    ),
    DemoRun(
        "nsf",
        "8gaussians",
        "2,000 points beside the data and the model's density: eight modes",
        train="--steps 400 --batch-size 256 --eval-every 400",
        sample="--n 2000",
    ),
    DemoRun(
        "wavenet",
        "digits",
        "64 digits drawn pixel by pixel with the cached sampler, from the bundled checkpoint",
        compress=True,
    ),
    DemoRun(
        "ddpm",
        "8gaussians",
        "2,000 points by DPM-Solver++(2M) in 20 steps beside the data, from the bundled "
        "checkpoint: eight modes",
        sample="--n 2000 --steps 20",
    ),
]


def add_commands(sub):
    p = sub.add_parser("demo", help="the kernel commands and a few short trainings, in one process")
    p.add_argument("--out", default="runs/demo", help="the demo's folder (default runs/demo)")
    p.add_argument(
        "--pretrained",
        default="pretrained",
        help="the folder of the bundled checkpoints (default pretrained, in the checkout)",
    )


def demo_commands(out, pretrained):
    """(what it shows, the command line) of each step of the demo, in order."""
    steps = list(KERNEL_COMMANDS)
    for run in RUNS:
        steps += run.commands(out, pretrained)
    return steps


def cmd_demo(args):
    from gdm_engine import cli

    if os.path.exists(args.out) and os.listdir(args.out):
        raise UsageError(f"--out {args.out} is not empty: the demo starts from nothing")
    bundled = [r for r in RUNS if r.train is None]
    missing = [
        name
        for name in (f"{r.model}-{r.data}.pt" for r in bundled)
        if not os.path.isfile(os.path.join(args.pretrained, name))
    ]
    if missing:
        raise UsageError(
            f"no {', '.join(missing)} in --pretrained {args.pretrained}: run the demo from the "
            f"checkout, or name the folder of its pretrained/"
        )
    for run in bundled:
        os.makedirs(run.folder(args.out), exist_ok=True)
    times = []
    for purpose, command in demo_commands(args.out, args.pretrained):
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
