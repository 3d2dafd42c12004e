"""The `gdm-engine` command: info, validate, bench, compile; train, sample, eval, results."""

import argparse
import dataclasses
import datetime
import json
import os
import platform
import secrets
import sys


def _prepare_interpreter():
    """Without a GPU, run the kernels through Triton's interpreter: it must be switched on before
    the kernels are first imported."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _specs(name):
    from gdm_engine import catalog

    return [catalog.get(name)] if name else list(catalog.CATALOG.values())


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def cmd_info(args):
    import torch

    import gdm_engine
    from gdm_engine import backend, catalog

    device = _device()
    print(f"gdm-engine {gdm_engine.__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  "
          f"triton {_version('triton')}  numpy {_version('numpy')}")
    print(f"device: {device.type} ({_device_name(device)})")
    print(f"backend: {backend.get_backend()}  interpreter: "
          f"{'on' if backend.interpreter_enabled() else 'off'}")
    kernels = "triton" if backend.triton_installed() else "none (triton not installed)"
    for spec in catalog.CATALOG.values():
        print(f"op {spec.name:<20} family {spec.family:<16} kernel: {kernels}  "
              f"reference: yes")
    _print_compile_record()
    return 0


def _print_compile_record():
    """Per kernel, the architectures `gdm-engine compile` last built it for."""
    from gdm_engine import compile as aot

    record = aot.load_record()
    if not record:
        print("kernels built for GPUs: none yet (run gdm-engine compile)")
        return
    print(f"kernels built for GPUs by gdm-engine compile ({aot.record_path()}):")
    for name, archs in sorted(record.items()):
        built = ", ".join(f"{arch} on {e['date']} ({e['builds']} builds, {e['failed']} failed)"
                          for arch, e in sorted(archs.items()))
        print(f"  {name:<48} {built}")


def cmd_validate(args):
    from tqdm import tqdm

    from gdm_engine import testing
    from gdm_engine._table import format_table

    device = _device()
    sizes = ["tiny"] if device.type == "cpu" or args.quick else ["tiny", "medium"]
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    specs = _specs(args.op)
    print(f"validating {', '.join(s.name for s in specs)} on {device} "
          f"({'Triton interpreter' if device.type == 'cpu' else 'compiled kernels'}), seed {seed}")
    with tqdm(desc="cases", unit="case", disable=None, file=sys.stderr) as bar:
        checks = testing.validate(specs, sizes, device, seed, grads=not args.no_grad, progress=bar)
    rows = [c.row() for c in checks]
    print(format_table(rows, ["op", "dtype", "case", "quantity", "error", "tolerance", "verdict"]))
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        _write_json(args.json, {"seed": seed, "device": str(device), "checks": rows})
    return 1 if failed else 0


def cmd_bench(args):
    import torch
    from tqdm import tqdm

    from gdm_engine import benchmark
    from gdm_engine._table import format_table

    device = _device()
    on_gpu = device.type == "cuda"
    if on_gpu:
        size = "medium" if args.quick else "bench"
        dtypes = None
    else:
        size = "tiny" if args.quick else "medium"
        dtypes = [torch.float32]
        print("no GPU: timing the reference providers (eager, torch.compile) on the CPU in float32."
              " Kernel timings need a GPU: the interpreter's speed says nothing of the kernels'.")
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    with tqdm(desc="cases", unit="case", disable=None, file=sys.stderr) as bar:
        rows = benchmark.bench(_specs(args.op), size, device, seed, dtypes, progress=bar)
    table = format_table(rows, benchmark.COLUMNS)
    print(table)
    report = {"date": datetime.date.today().isoformat(), "device": _device_name(device),
              "torch": torch.__version__, "triton": _version("triton"), "size": size,
              "copy_bandwidth_gbs": benchmark.copy_bandwidth_gbs(str(device)), "rows": rows}
    if args.json:
        _write_json(args.json, report)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"# gdm-engine bench, {report['device']}, {report['date']}\n\n"
                    f"torch {report['torch']}, triton {report['triton']}, measured copy bandwidth "
                    f"{report['copy_bandwidth_gbs']:.0f} GB/s\n\n"
                    f"{format_table(rows, benchmark.COLUMNS, markdown=True)}\n")
    return 0


def cmd_compile(args):
    from tqdm import tqdm

    from gdm_engine import compile as aot
    from gdm_engine._table import format_table
    from gdm_engine.kernels import INTERPRETED

    if INTERPRETED:
        raise UsageError("compile builds for real GPUs, which Triton's interpreter cannot: unset "
                         "TRITON_INTERPRET and run it again")
    archs = _architectures(args.arch)
    specs = _specs(args.op)
    print(f"recording the launches of {', '.join(s.name for s in specs)} (medium and bench "
          f"cases, forward and backward) for {', '.join(args.arch.split(','))}")
    jobs = aot.plan(specs, archs, seed=args.seed)
    with tqdm(total=len(jobs), desc="builds", unit="build", disable=None, file=sys.stderr) as bar:
        builds = aot.build_all(jobs, args.workers, progress=bar)
    rows = [b.row() for b in builds]
    failed = [row for row, b in zip(rows, builds) if b.problems()]
    if args.all:
        print(format_table(rows, aot.COLUMNS))
    elif failed:
        print(format_table(failed, aot.COLUMNS))
    print(format_table(aot.summary(builds), aot.SUMMARY_COLUMNS))
    print(f"compile: {len(builds)} builds, {len(failed)} failed "
          f"(a failure: a build error, a spill, shared memory or a grid over the limit)")
    aot.save_record(builds)
    if args.json:
        _write_json(args.json, {"date": datetime.date.today().isoformat(),
                                "triton": _version("triton"), "builds": rows,
                                "summary": aot.summary(builds)})
    return 1 if failed else 0


def _architectures(text):
    from gdm_engine import compile as aot

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in aot.ARCHITECTURES]
    if unknown or not names:
        raise UsageError(f"--arch takes a comma-separated list of {', '.join(aot.ARCHITECTURES)}; "
                         f"got {text!r}")
    return tuple(aot.ARCHITECTURES[name] for name in names)


class UsageError(Exception):
    """A request the command cannot carry out as given: exit status 2, nothing written."""


def _model_options(pairs):
    """--set KEY=VALUE options: the value parsed as JSON (numbers, true/false, strings)."""
    options = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set takes KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _load_data(name):
    from gdm_engine import data

    try:
        return data.load(name)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None


def _load_checkpoint(path):
    from gdm_engine import train

    try:
        return train.load_checkpoint(path)  # on the CPU: RNG states must stay there
    except train.CheckpointError as error:
        raise UsageError(str(error)) from None


TRAIN_SETTINGS = ("batch_size", "lr", "accumulate", "eval_every", "checkpoint_every", "seed",
                  "weight_decay", "warmup", "ema_decay", "grad_clip", "early_stop", "eval_test")


def _train_config(args, saved, recipe):
    """The run's settings: the given ones over the recipe's over TrainConfig's defaults; the
    checkpoint's when resuming (--steps may extend the run), where given settings that
    contradict the checkpoint are an error."""
    from gdm_engine import train

    given = {k: getattr(args, k) for k in ("steps", *TRAIN_SETTINGS)
             if getattr(args, k) is not None}
    if saved is None:
        return train.TrainConfig(**{**(recipe.settings if recipe else {}), **given})
    config = train.TrainConfig(**saved["config"])
    for key, value in given.items():
        if key != "steps" and value != getattr(config, key):
            raise UsageError(f"the checkpoint was trained with {key}={getattr(config, key)}; "
                             f"resume with the same value or leave --{key.replace('_', '-')} out")
    options = _model_options(args.set)
    changed = {k: v for k, v in options.items() if saved["model_config"].get(k) != v}
    if changed:
        raise UsageError(f"the checkpoint's model has {saved['model_config']}; --set cannot "
                         f"change {', '.join(changed)} on --resume")
    steps = given.get("steps", config.steps)
    if steps <= saved["step"]:
        raise UsageError(f"the checkpoint is at step {saved['step']} of {config.steps}: pass "
                         f"--steps above {saved['step']} to train on")
    if steps > config.steps >= saved["step"] and saved["step"] > config.warmup:
        print(f"extending the run from {config.steps} to {steps} steps: the cosine schedule "
              f"stretches to the new end, so the learning rate rises from "
              f"{config.learning_rate(saved['step']):.2g} to "
              f"{dataclasses.replace(config, steps=steps).learning_rate(saved['step']):.2g}")
    return dataclasses.replace(config, steps=steps)


def cmd_train(args):
    from gdm_engine import models, recipes, train

    try:
        models.get(args.model)
    except ValueError as error:
        raise UsageError(str(error)) from None
    data = _load_data(args.data)
    data_name = os.path.basename(os.path.normpath(args.data))  # "pngs/" names the run too
    out = args.out or os.path.join("runs", f"{args.model}-{data_name}")
    checkpoint = os.path.join(out, train.CHECKPOINT_NAME)
    saved = None
    if os.path.exists(checkpoint):
        if not args.resume:
            raise UsageError(f"{checkpoint} exists: pass --resume to continue that run, or "
                             f"choose another --out")
        saved = _load_checkpoint(checkpoint)
        try:
            train.check_same_run(saved, args.model, data.name)
        except train.CheckpointError as error:
            raise UsageError(str(error)) from None
    elif args.resume:
        print(f"no checkpoint in {out}: starting from step 0")
    recipe = recipes.get(args.model, data.name)
    if recipe is not None and saved is None:
        print(f"recipe for {args.model} on {data.name}: {recipe.settings} {recipe.options} "
              f"(given settings override it)")
    try:
        config = _train_config(args, saved, recipe)
        if saved is not None:  # restore() loads the weights
            model = models.get(saved["model"])(**saved["model_config"])
        else:
            options = {**(recipe.options if recipe else {}), **_model_options(args.set)}
            model = train.build_model(args.model, data, config.seed, **options)
        trainer = train.Trainer(model, data, config, out, args.model)
        if saved is not None:
            trainer.restore(saved)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if trainer.stopped_early:
        raise UsageError(f"the run stopped early at step {trainer.step}, after "
                         f"{trainer.evaluations_since_best} evaluations without improvement; "
                         f"its best checkpoint is {trainer.best_path}")
    results = trainer.fit()
    if trainer.is_main:
        print(f"{args.model} on {data.name}, step {trainer.step}, validation split: "
              f"{_figures(results)}")
        best = trainer.best
        print(f"best: step {best['step']}, {best['metric'].replace('_', ' ')} "
              f"{best['value']:.4f} on validation")
        _print_baseline(data, "valid")
        print(f"checkpoints: {trainer.checkpoint_path} (last), {trainer.best_path} (best)")
    return 0


def _figures(results):
    """The evaluation's figures (not the step, training loss or picture) in words."""
    from gdm_engine import train

    return train.describe({k: v for k, v in results.items()
                           if k not in ("step", "loss", "samples", "split", "best")}, ", ")


def _print_baseline(data, split="test"):
    """Print (and return) the independent-pixel bits/dim of discrete data; None otherwise."""
    from gdm_engine import metrics

    if not data.discrete:
        return None
    bits = metrics.independent_pixel_bits_per_dim(data, split)
    print(f"independent-pixel baseline: {bits:.4f} bits/dim ({split} split)")
    return bits


def cmd_sample(args):
    import numpy as np
    import torch

    from gdm_engine import pictures, train

    out = args.out or os.path.join(os.path.dirname(args.checkpoint) or ".", "samples.png")
    if not out.endswith((".png", ".npz")):
        raise UsageError(f"--out must end in .png (a picture) or .npz (the samples), got {out}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise UsageError(f"the folder of --out {out} does not exist")
    saved = _load_checkpoint(args.checkpoint)
    data = _load_data(saved["data"]) if out.endswith(".png") else None
    if data is not None and not pictures.can_draw(data):
        raise UsageError(f"examples of shape {data.shape} have no picture: use --out FILE.npz")
    model = train.model_from_checkpoint(saved).to(_device())
    samples = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed))
    if out.endswith(".npz"):
        np.savez(out, samples=samples.cpu().numpy())
    else:
        pictures.save_samples(samples, data, out, f"{saved['model']}, step {saved['step']}")
    print(f"wrote {args.n} samples of {saved['model']} (step {saved['step']}) to {out}")
    return 0


def cmd_eval(args):
    from gdm_engine import train

    saved = _load_checkpoint(args.checkpoint)
    data = _load_data(saved["data"])
    model = train.model_from_checkpoint(saved).to(_device())
    if args.iwae_samples is not None:
        if not hasattr(model, "iwae_samples"):
            raise UsageError(f"model {saved['model']!r} has no importance-weighted bound")
        model.iwae_samples = args.iwae_samples
    results = train.evaluate(model, data, args.split, seed=args.seed)
    print(f"{saved['model']} on {data.name} ({args.split} split), step {saved['step']}, "
          f"EMA weights: {_figures(results)}")
    baseline = _print_baseline(data, args.split)
    if baseline is not None:
        results["independent_pixel_bits_per_dim"] = baseline
    if args.json:
        _write_json(args.json, {"checkpoint": args.checkpoint, "model": saved["model"],
                                "data": data.name, "split": args.split, "step": saved["step"],
                                **results})
    return 0


def cmd_results(args):
    from gdm_engine import models, results
    from gdm_engine._table import format_table

    unknown = [name for name in args.models if name not in models.MODELS]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r}; the models are {', '.join(models.MODELS)}")
    try:
        rows = results.results(args.models, args.data, args.out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    os.makedirs(args.out, exist_ok=True)
    command = (f"gdm-engine results --models {' '.join(args.models)} --data {args.data} "
               f"--out {args.out}")
    shown = [{**row, "test bits/dim": f"{row['test bits/dim']:.4f}",
              "train seconds": f"{row['train seconds']:.1f}"} for row in rows]
    table = format_table(shown, results.COLUMNS, markdown=True)
    print(table)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(f"# Results on {args.data}, {datetime.date.today().isoformat()}\n\n{table}\n\n"
                f"Test split of the checkpoint chosen on validation (best.pt), each model "
                f"trained by its recipe. Reproduce: `{command}`\n")
    _write_json(os.path.join(args.out, "results.json"), {"command": command, "rows": rows})
    return 0


def _device_name(device):
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {path}")


def _positive(kind):
    """An argparse type: a number of `kind` (int or float) above zero."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return value

    return parse


_positive_int, _positive_float = _positive(int), _positive(float)


def _add_training_commands(sub):
    from gdm_engine import data, models

    p = sub.add_parser("train", help="train a model on a data set, with checkpoints and samples")
    p.add_argument("model", help=f"one of {', '.join(models.MODELS)}")
    p.add_argument("--data", required=True,
                   help=f"{', '.join(data.NAMES)}, an .npz file or a folder of .png images")
    p.add_argument("--steps", type=_positive_int, help="optimiser steps (default 2000)")
    p.add_argument("--out", help="run folder (default runs/MODEL-DATA)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--batch-size", type=_positive_int, help="global batch (default 128)")
    p.add_argument("--lr", type=_positive_float, help="peak learning rate (default 1e-3)")
    p.add_argument("--accumulate", type=_positive_int,
                   help="shards of the batch each process runs in turn (default 1)")
    p.add_argument("--eval-every", type=_positive_int, help="steps between evaluations")
    p.add_argument("--checkpoint-every", type=_positive_int, help="steps between checkpoints")
    p.add_argument("--seed", type=int, help="the run's seed (default 0)")
    p.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay (default 0)")
    p.add_argument("--warmup", type=int, help="steps of linear warm-up (default 100)")
    p.add_argument("--ema-decay", type=float, help="decay of the weights' EMA (default 0.999)")
    p.add_argument("--grad-clip", type=_positive_float, help="max gradient norm (default 1)")
    p.add_argument("--early-stop", type=int, metavar="N",
                   help="stop after N evaluations without a better validation figure (0: off)")
    p.add_argument("--eval-test", action="store_true", default=None,
                   help="also evaluate the test split, for curves only: never used to choose")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a model option, e.g. --set latent=32 or --set dropout=0.2 (repeatable)")

    p = sub.add_parser("sample", help="draw samples from a checkpoint (its EMA weights)")
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt or best.pt")
    p.add_argument("--n", type=_positive_int, default=64, help="how many (default 64)")
    p.add_argument("--out", help="a .png picture or an .npz of the samples "
                                 "(default: samples.png beside the checkpoint)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("eval", help="bits/dim (discrete data) or NLL (continuous) of a checkpoint")
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt or best.pt (the "
                                                       "one chosen on validation)")
    p.add_argument("--split", choices=["test", "valid", "train"], default="test")
    p.add_argument("--iwae-samples", type=_positive_int, help="K of the VAE's IWAE bound")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")


def _add_results_command(sub):
    from gdm_engine import models

    p = sub.add_parser("results", help="train every model by its recipe, choose on validation, "
                                       "score test: one markdown table")
    p.add_argument("--models", nargs="+", default=list(models.MODELS),
                   help=f"default: all ({' '.join(models.MODELS)}); pixels is the baseline row")
    p.add_argument("--data", default="digits", help="a discrete data set (default digits)")
    p.add_argument("--out", default=os.path.join("runs", "results"),
                   help="folder of the runs, the table and the sample grids "
                        "(default runs/results; runs there resume)")


def build_parser():
    parser = argparse.ArgumentParser(prog="gdm-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, backend and the ops with kernels")
    for name, help_text in [("validate", "check every kernel against its reference"),
                            ("bench", "time kernels, references and peer libraries")]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--op", help="only this catalog op")
        p.add_argument("--quick", action="store_true", help="smaller shapes")
        p.add_argument("--seed", type=int, help="random seed (default: fresh each run)")
        p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
        if name == "validate":
            p.add_argument("--no-grad", action="store_true", help="forward outputs only")
        else:
            p.add_argument("--markdown", metavar="PATH", help="also write a markdown table")
    p = sub.add_parser("compile", help="build every kernel for GPUs (no GPU needed): registers, "
                                       "spills, shared memory, tensor cores")
    p.add_argument("--op", help="only this catalog op")
    p.add_argument("--arch", default="sm_80,sm_90",
                   help="comma-separated, of sm_80, sm_86, sm_89, sm_90 (default sm_80,sm_90)")
    p.add_argument("--seed", type=int, default=0, help="seed of the medium cases' shapes")
    p.add_argument("--workers", type=_positive_int, help="build processes (default: one per core)")
    p.add_argument("--all", action="store_true", help="print every build, not only failures")
    p.add_argument("--json", metavar="PATH", help="also write every build as JSON")
    _add_training_commands(sub)
    _add_results_command(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command != "compile":  # compile builds for GPUs, never for the interpreter
        _prepare_interpreter()
    if getattr(args, "op", None):
        from gdm_engine import catalog

        if args.op not in catalog.CATALOG:
            print(f"gdm-engine: unknown op {args.op!r}; the catalog has "
                  f"{', '.join(catalog.CATALOG)}", file=sys.stderr)
            return 2
    commands = {"info": cmd_info, "validate": cmd_validate, "bench": cmd_bench,
                "compile": cmd_compile, "results": cmd_results,
                "train": cmd_train, "sample": cmd_sample, "eval": cmd_eval}
    try:
        return commands[args.command](args)
    except UsageError as error:
        print(f"gdm-engine {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
