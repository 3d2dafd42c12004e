"""The training commands: train, sample, eval, results."""

import datetime
import json
import os

from ._common import (
    INPUT_HELP,
    UsageError,
    as_examples,
    current_device,
    load_data,
    positive_float,
    positive_int,
    read_examples,
    write_json,
)


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


def _load_checkpoint(path):
    from gdm_engine import train

    try:
        return train.load_checkpoint(path)  # on the CPU: RNG states must stay there
    except train.CheckpointError as error:
        raise UsageError(str(error)) from None


TRAIN_SETTINGS = (
    "batch_size",
    "lr",
    "accumulate",
    "eval_every",
    "checkpoint_every",
    "seed",
    "weight_decay",
    "warmup",
    "ema_decay",
    "grad_clip",
    "early_stop",
    "eval_test",
    "select",
)


def _train_config(args, saved, recipe):
    """The run's settings: the given ones over the recipe's over TrainConfig's defaults; the
    checkpoint's when resuming (--steps may extend the run), where given settings that
    contradict the checkpoint are an error."""
    from gdm_engine import train

    given = {
        k: getattr(args, k) for k in ("steps", *TRAIN_SETTINGS) if getattr(args, k) is not None
    }
    if saved is None:
        return train.TrainConfig(**{**(recipe.settings if recipe else {}), **given})
    config = train.TrainConfig.resumed(saved, given)  # (its ValueError: a usage error)
    if config.steps <= saved["step"]:
        raise UsageError(
            f"the checkpoint is at step {saved['step']} of {config.steps}: pass "
            f"--steps above {saved['step']} to train on"
        )
    before = train.TrainConfig(**saved["config"])
    if config.steps > before.steps >= saved["step"] and saved["step"] > before.warmup:
        print(
            f"extending the run from {before.steps} to {config.steps} steps: the cosine "
            f"schedule stretches to the new end, so the learning rate rises from "
            f"{before.learning_rate(saved['step']):.2g} to "
            f"{config.learning_rate(saved['step']):.2g}"
        )
    return config


def cmd_train(args):
    from gdm_engine import models, recipes, train

    try:
        models.get(args.model)
    except ValueError as error:
        raise UsageError(str(error)) from None
    data = load_data(args.data)
    data_name = os.path.basename(os.path.normpath(args.data))  # "pngs/" names the run too
    out = args.out or os.path.join("runs", f"{args.model}-{data_name}")
    checkpoint = os.path.join(out, train.CHECKPOINT_NAME)
    saved = None
    if os.path.exists(checkpoint):
        if not args.resume:
            raise UsageError(
                f"{checkpoint} exists: pass --resume to continue that run, or choose another --out"
            )
        saved = _load_checkpoint(checkpoint)
        try:
            train.check_same_run(saved, args.model, data.name)
        except train.CheckpointError as error:
            raise UsageError(str(error)) from None
    elif args.resume:
        print(f"no checkpoint in {out}: starting from step 0")
    recipe = recipes.get(args.model, data.name)
    if recipe is not None and saved is None:
        print(
            f"recipe for {args.model} on {data.name}: {recipe.settings} {recipe.options} "
            f"(given settings override it)"
        )
    try:
        config = _train_config(args, saved, recipe)
        options = _model_options(args.set)
        if saved is None:  # (resuming, the checkpoint's model settings hold)
            options = {**(recipe.options if recipe else {}), **options}
        trainer = train.make_trainer(args.model, data, config, out, options, saved)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if trainer.stopped_early:
        raise UsageError(
            f"the run stopped early at step {trainer.step}, after "
            f"{trainer.evaluations_since_best} evaluations without improvement; "
            f"its best checkpoint is {trainer.best_path}"
        )
    results = trainer.fit()
    if trainer.is_main:
        print(
            f"{args.model} on {data.name}, step {trainer.step}, validation split: "
            f"{_figures(results)}"
        )
        best = trainer.best
        print(
            f"best: step {best['step']}, {best['metric'].replace('_', ' ')} "
            f"{best['value']:.4f} on validation"
        )
        _print_baseline(data, "valid")
        print(f"checkpoints: {trainer.checkpoint_path} (last), {trainer.best_path} (best)")
    return 0


def _figures(results):
    """The evaluation's figures (not the step, training loss or picture) in words."""
    from gdm_engine import train

    return train.describe(
        {
            k: v
            for k, v in results.items()
            if k not in ("step", "samples", "split", "best") and not k.startswith("loss")
        },
        ", ",
    )


def _print_baseline(data, split="test"):
    """Print (and return) the independent-pixel bits/dim of discrete data; None otherwise."""
    from gdm_engine import metrics

    if not data.discrete:
        return None
    bits = metrics.independent_pixel_bits_per_dim(data, split)
    print(f"independent-pixel baseline: {bits:.4f} bits/dim ({split} split)")
    return bits


def _print_floor(data, split, n):
    """Print (and return) the sample figures of n real training digits against the split: the
    floor beside a model's."""
    from gdm_engine import metrics, train

    n = n or train.evaluation.IMAGE_SAMPLES
    floor = metrics.digit_quality_floor(data, split, n=n)
    print(f"floor ({n} training digits against the {split} split): {train.describe(floor, ', ')}")
    return floor


def cmd_export(args):
    from gdm_engine import train

    if os.path.exists(args.out):
        raise UsageError(f"--out {args.out} exists: export writes a new file")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UsageError(f"the folder of --out {args.out} does not exist")
    saved = _load_checkpoint(args.checkpoint)
    train.save_checkpoint(train.weights_only(saved), args.out)
    print(
        f"wrote the EMA weights of {saved['model']} on {saved['data']} (step {saved['step']}) "
        f"to {args.out}: it samples and evaluates, it does not resume"
    )
    return 0


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
    data = load_data(saved["data"]) if out.endswith(".png") else None
    if data is not None and not pictures.can_draw(data):
        raise UsageError(f"examples of shape {data.shape} have no picture: use --out FILE.npz")
    model = train.model_from_checkpoint(saved).to(current_device())
    options = _sampling_options(args, model, saved["model"])
    generator = torch.Generator().manual_seed(args.seed)
    try:
        if args.condition is None:
            samples = model.sample(args.n, generator=generator, **options)
        else:
            samples = _completions(args, model, generator, options)
    except (ValueError, TypeError) as error:
        raise UsageError(str(error)) from None
    if out.endswith(".npz"):
        np.savez(out, samples=samples.cpu().numpy())
    else:
        exact_2d = data.shape == (2,) and model.likelihood == "exact"
        pictures.save_samples(
            samples,
            data,
            out,
            f"{saved['model']}, step {saved['step']}",
            log_density=model.eval().log_prob if exact_2d else None,
        )
    print(f"wrote {args.n} samples of {saved['model']} (step {saved['step']}) to {out}")
    return 0


def _completions(args, model, generator, options):
    """sample --condition --mask: the first --n examples of the condition, their masked pixels
    filled in by the model (gdm_engine.inpainting)."""
    import numpy as np
    import torch

    from gdm_engine import inpainting

    if args.mask is None:
        raise UsageError("--condition needs --mask: bottom, right, or a .npy of booleans")
    unused = [f"--{flag}" for flag in ("temperature", "guidance", "sampler") if getattr(args, flag)]
    if unused:
        raise UsageError(f"--condition fills pixels by the model's own method: no {unused[0]}")
    condition = as_examples(read_examples(args.condition)[: args.n], model.device)
    halves = {"bottom": inpainting.bottom_half_mask, "right": inpainting.right_half_mask}
    if args.mask in halves:
        mask = halves[args.mask](model.shape)
    elif args.mask.endswith(".npy") and os.path.isfile(args.mask):
        mask = torch.from_numpy(np.load(args.mask))
        if mask.ndim == condition.ndim:  # one mask per example: those of the first --n
            mask = mask[: args.n]
    else:
        raise UsageError(
            f"--mask must be one of {' or '.join(halves)} or a .npy file, got {args.mask}"
        )
    if "labels" in options:  # --label: every example of that class
        options["labels"] = torch.full((len(condition),), options["labels"], device=model.device)
    return inpainting.complete(model, condition, mask, generator, **options)


# the sample command's flags: model.sample's keyword, and what a model without it lacks
SAMPLING_FLAGS = {
    "temperature": ("temperature", "sampling temperature"),
    "label": ("labels", "class labels"),
    "guidance": ("guidance_scale", "classifier-free guidance"),
    "sampler": ("sampler", "choice of sampler"),
    "steps": ("steps", "number of sampling steps"),
}


def _sampling_options(args, model, name):
    """model.sample's keyword arguments from the flags given, each one checked against the
    model: a flag the model has no use for is an error, not silently ignored."""
    options = {}
    for flag, (keyword, what) in SAMPLING_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if keyword not in model.sample_options:
            raise UsageError(f"model {name!r} has no {what} (--{flag})")
        options[keyword] = value
    classes = getattr(model, "classes", 0)
    if args.label is not None and not classes:
        raise UsageError(
            f"--label needs a class-conditional model; this {name!r} was trained without labels"
        )
    if args.label is not None and not 0 <= args.label < classes:
        raise UsageError(f"--label must be a class in 0 .. {classes - 1}, got {args.label}")
    if args.guidance is not None and args.label is None:
        raise UsageError("--guidance needs --label: it guides the samples towards that class")
    return options


def _steps_or_all(text):
    return "all" if text == "all" else positive_int(text)


def cmd_eval(args):
    from gdm_engine import train

    saved = _load_checkpoint(args.checkpoint)
    data = load_data(saved["data"])
    model = train.model_from_checkpoint(saved).to(current_device())
    if args.iwae_samples is not None:
        if "iwae_samples" not in model.bound_settings:
            raise UsageError(f"model {saved['model']!r} has no importance-weighted bound")
        model.iwae_samples = args.iwae_samples
    if args.bound_timesteps is not None:
        if "bound_timesteps" not in model.bound_settings:
            raise UsageError(f"model {saved['model']!r} has no diffusion bound")
        model.bound_timesteps = None if args.bound_timesteps == "all" else args.bound_timesteps
    if args.samples is not None and not train.has_sample_figures(data):
        raise UsageError(
            f"samples of {data.name} have no figure: --samples scores the digits "
            f"and continuous vectors"
        )
    try:
        results = train.evaluate(
            model,
            data,
            args.split,
            seed=args.seed,
            samples=args.samples,
            sample_quality=args.samples is not None,
        )
    except ValueError as error:
        raise UsageError(str(error)) from None
    print(
        f"{saved['model']} on {data.name} ({args.split} split), step {saved['step']}, "
        f"EMA weights: {_figures(results)}"
    )
    baseline = _print_baseline(data, args.split)
    if baseline is not None:
        results["independent_pixel_bits_per_dim"] = baseline
    if "frechet_digit_distance" in results:
        results["floor"] = _print_floor(data, args.split, args.samples)
    if args.json:
        write_json(
            args.json,
            {
                "checkpoint": args.checkpoint,
                "model": saved["model"],
                "data": data.name,
                "split": args.split,
                "step": saved["step"],
                **results,
            },
        )
    return 0


def cmd_results(args):
    from gdm_engine import models, recipes, results
    from gdm_engine._table import format_table

    if args.models is None:
        args.models = [name for name in models.MODELS if (name, args.data) in recipes.RECIPES]
    unknown = [name for name in args.models if name not in models.MODELS]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r}; the models are {', '.join(models.MODELS)}")
    data = load_data(args.data)
    if args.uses:
        return _uses(args, data)
    try:
        rows = results.results(args.models, args.data, args.out)
    except ValueError as error:
        raise UsageError(str(error)) from None
    os.makedirs(args.out, exist_ok=True)
    command = (
        f"gdm-engine results --models {' '.join(args.models)} --data {args.data} --out {args.out}"
    )
    shown = [
        {
            k: f"{v:.1f}"
            if k == "train seconds"
            else f"{v:.4f}"
            if isinstance(v, float)
            else "—"
            if v is None
            else v
            for k, v in row.items()
        }
        for row in rows
    ]
    table = format_table(shown, results.columns(data), markdown=True)
    print(table)
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write(
            f"# Results on {args.data}, {datetime.date.today().isoformat()}\n\n{table}\n\n"
            f"Test split of the checkpoint chosen on validation (best.pt), each model "
            f"trained by its recipe. Reproduce: `{command}`\n"
        )
    write_json(os.path.join(args.out, "results.json"), {"command": command, "rows": rows})
    return 0


def add_commands(sub):
    from gdm_engine import data, models, sampling

    p = sub.add_parser("train", help="train a model on a data set, with checkpoints and samples")
    p.add_argument("model", help=f"one of {', '.join(models.MODELS)}")
    p.add_argument(
        "--data",
        required=True,
        help=f"{', '.join(data.NAMES)}, an .npz file or a folder of .png images",
    )
    p.add_argument("--steps", type=positive_int, help="optimiser steps (default 2000)")
    p.add_argument("--out", help="run folder (default runs/MODEL-DATA)")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--batch-size", type=positive_int, help="global batch (default 128)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 1e-3)")
    p.add_argument(
        "--accumulate",
        type=positive_int,
        help="shards of the batch each process runs in turn (default 1)",
    )
    p.add_argument("--eval-every", type=positive_int, help="steps between evaluations")
    p.add_argument("--checkpoint-every", type=positive_int, help="steps between checkpoints")
    p.add_argument("--seed", type=int, help="the run's seed (default 0)")
    p.add_argument("--weight-decay", type=float, help="AdamW's decoupled weight decay (default 0)")
    p.add_argument("--warmup", type=int, help="steps of linear warm-up (default 100)")
    p.add_argument("--ema-decay", type=float, help="decay of the weights' EMA (default 0.999)")
    p.add_argument("--grad-clip", type=positive_float, help="max gradient norm (default 1)")
    p.add_argument(
        "--early-stop",
        type=int,
        metavar="N",
        help="stop after N evaluations without a better validation figure (0: off)",
    )
    p.add_argument(
        "--select",
        metavar="FIGURE",
        help="the validation figure that chooses best.pt, lower is better (default: "
        "bits_per_dim or nll_nats; frechet_digit_distance or sliced_wasserstein "
        "for a model without a likelihood)",
    )
    p.add_argument(
        "--eval-test",
        action="store_true",
        default=None,
        help="also evaluate the test split, for curves only: never used to choose",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="a model option, e.g. --set latent=32 or --set dropout=0.2 (repeatable)",
    )

    p = sub.add_parser("sample", help="draw samples from a checkpoint (its EMA weights)")
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt or best.pt")
    p.add_argument("--n", type=positive_int, default=64, help="how many (default 64)")
    p.add_argument(
        "--out",
        help="a .png picture or an .npz of the samples "
        "(default: samples.png beside the checkpoint)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--temperature",
        type=positive_float,
        help="flows: draw the latent from N(0, T^2 I) (default 1)",
    )
    p.add_argument(
        "--label", type=int, help="class-conditional models: the class to draw (a digit: 0 .. 9)"
    )
    p.add_argument(
        "--guidance",
        type=float,
        metavar="SCALE",
        help="classifier-free guidance towards --label (1: the conditional model, "
        "above 1: stronger; default none)",
    )
    p.add_argument(
        "--sampler",
        choices=list(sampling.SAMPLERS),
        help="diffusion models: the sampler (default dpmpp_2m; ddpm: every step)",
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        help="diffusion models: model evaluations of samplers that skip steps (default 50; "
        "with --condition, RePaint's steps, default 100)",
    )
    p.add_argument(
        "--condition",
        metavar="INPUT",
        help="inpainting: fill the --mask pixels of these examples (the first --n) given the "
        f"rest; {INPUT_HELP}",
    )
    p.add_argument(
        "--mask",
        help="with --condition: the pixels to fill, bottom or right (half), or a .npy of "
        "booleans, True where missing (autoregressive models: a suffix of their order)",
    )

    p = sub.add_parser(
        "eval",
        help="bits/dim (discrete data) or NLL (continuous) of a "
        "checkpoint, and the quality of its samples",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="a run's checkpoint.pt or best.pt (the one chosen on validation)",
    )
    p.add_argument("--split", choices=["test", "valid", "train"], default="test")
    p.add_argument(
        "--iwae-samples",
        type=positive_int,
        help="K of the importance-weighted bound: draws of z (VAE) or of the "
        "dequantisation noise (flows)",
    )
    p.add_argument(
        "--bound-timesteps",
        type=_steps_or_all,
        metavar="K|all",
        help="diffusion models: estimate the bound from K steps, or sum all of them "
        "(default: the checkpoint's setting)",
    )
    p.add_argument(
        "--samples",
        type=positive_int,
        metavar="N",
        help="also score N samples against the split: Fréchet digit distance, "
        "precision and recall (digits), sliced Wasserstein, MMD and mode "
        "coverage (2-D toys); a model without a likelihood is always scored so "
        "(default N: 1,000 digits, 2,000 points)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="also write the figures as JSON")

    p = sub.add_parser(
        "export",
        help="a checkpoint's EMA weights and config alone, to share: it samples and "
        "evaluates, a third of the size (no optimiser or random states: it does not resume)",
    )
    p.add_argument("--checkpoint", required=True, help="a run's checkpoint.pt or best.pt")
    p.add_argument("--out", required=True, help="the file to write")

    p = sub.add_parser(
        "results",
        help="train every model by its recipe, choose on validation, "
        "score test: one markdown table",
    )
    p.add_argument(
        "--models",
        nargs="+",
        help="default: every model with a recipe for --data; pixels is the baseline "
        f"row (models: {' '.join(models.MODELS)})",
    )
    p.add_argument("--data", default="digits", help="a discrete data set (default digits)")
    p.add_argument(
        "--out",
        default=os.path.join("runs", "results"),
        help="folder of the runs, the table and the sample grids "
        "(default runs/results; runs there resume)",
    )
    p.add_argument(
        "--uses",
        action="store_true",
        help="instead of training: the uses table of the runs already in --out (compression, "
        "anomaly AUROC, inpainting and linear-probe accuracy), to uses.md",
    )


def _uses(args, data):
    """results --uses: the uses table of the runs that `results` trained in --out, each
    measured once per checkpoint."""
    from gdm_engine import uses

    if data.name != "digits":
        raise UsageError("--uses measures the digits' runs (its figures need their labels)")
    measured = {}
    for name in args.models:
        if name == "pixels":
            continue  # the baseline has no run: its codec and probe figures are the baselines
        figures, fresh = uses.measure(name, data, os.path.join(args.out, f"{name}-{data.name}"))
        if figures is None:
            print(f"{name}: no best.pt in {args.out}: train it with gdm-engine results first")
            continue
        how = "measured" if fresh else "kept from its uses.json (the same best.pt)"
        print(f"{name}: {how}, {figures['seconds']:.0f} s of measurement")
        measured[name] = figures
    if not measured:
        raise UsageError(f"no run in {args.out} has a best.pt: run gdm-engine results first")
    command = f"gdm-engine results --uses --models {' '.join(measured)} --out {args.out}"
    text = uses.report(measured, uses.baselines(data), command)
    print(text)
    with open(os.path.join(args.out, "uses.md"), "w") as f:
        f.write(f"# Uses on {data.name}, {datetime.date.today().isoformat()}\n\n{text}")
    return 0


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "eval": cmd_eval,
    "results": cmd_results,
    "export": cmd_export,
}
