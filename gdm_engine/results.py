"""One results table for every model family: `gdm-engine results`.

Each model trains on the data set by its recipe (gdm_engine.recipes), the checkpoint is chosen on
the validation split (best.pt), and only that checkpoint is scored on the test split. The first
row is the independent-pixel baseline, fitted in closed form to the training split. Runs live in
`out/<model>-<data>/` and resume when interrupted; the table goes to `out/results.md` (and .json)
with a sample grid per model.
"""

import os
import platform
import time

import torch

from gdm_engine import data as datasets
from gdm_engine import metrics, models, pictures, recipes, train

COLUMNS = ["model", "test bits/dim", "likelihood", "parameters", "best step", "steps",
           "train seconds", "machine"]


def machine():
    """Where the figures were made: the GPU, or the CPU with its core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def baseline_row(data):
    """The independent-pixel baseline: maximum likelihood (add-one) on train, scored on test."""
    start = time.perf_counter()
    model = models.IndependentPixels.for_data(data).fit(data.train)
    bits = metrics.bits_per_dim(model, data.test)
    return {"model": "pixels (independent-pixel baseline)", "test bits/dim": bits,
            "likelihood": "exact", "parameters": _parameters(model), "best step": "closed form",
            "steps": 0, "train seconds": time.perf_counter() - start, "machine": machine()}


def _parameters(model):
    return sum(p.numel() for p in model.parameters())


def train_by_recipe(name, data, out):
    """Train (or resume) `name` on `data` by its recipe in `out`; returns the Trainer."""
    recipe = recipes.get(name, data.name)
    if recipe is None:
        raise ValueError(f"model {name!r} has no recipe for {data.name!r}")
    checkpoint = os.path.join(out, train.CHECKPOINT_NAME)
    saved = train.load_checkpoint(checkpoint) if os.path.exists(checkpoint) else None
    config = train.TrainConfig(**(saved["config"] if saved else recipe.settings))
    trainer = train.make_trainer(name, data, config, out, recipe.options, saved)
    trainer.fit()
    return trainer


def model_row(name, data, out):
    """Train `name` by its recipe, then score its best.pt (chosen on validation) on test."""
    trainer = train_by_recipe(name, data, out)
    best = train.load_checkpoint(trainer.best_path)
    model = train.model_from_checkpoint(best)
    for attribute, value in recipes.get(name, data.name).report.items():
        setattr(model, attribute, value)
    figures = train.evaluate(model, data, "test", seed=0)
    picture = os.path.join(os.path.dirname(out), f"{name}-{data.name}-samples.png")
    if pictures.can_draw(data):
        samples = model.sample(64, generator=torch.Generator().manual_seed(0))
        pictures.save_samples(samples, data, picture, f"{name}, best.pt (step {best['step']})")
    return {"model": name, "test bits/dim": figures["bits_per_dim"],
            "likelihood": model.likelihood, "parameters": _parameters(model),
            "best step": best["step"], "steps": trainer.step,
            "train seconds": trainer.seconds, "machine": machine()}


def results(model_names, data_name, out, progress=print):
    """The table's rows: the baseline first, then each model (trained in out/<model>-<data>)."""
    data = datasets.load(data_name)
    if not data.discrete:
        raise ValueError(f"the results table reports bits/dim, which needs discrete data; "
                         f"{data_name!r} is continuous")
    rows = [baseline_row(data)]
    progress(f"baseline: {rows[0]['test bits/dim']:.4f} bits/dim")
    for name in model_names:
        if name == models.IndependentPixels.name:
            continue  # the baseline row
        rows.append(model_row(name, data, os.path.join(out, f"{name}-{data.name}")))
        progress(f"{name}: {rows[-1]['test bits/dim']:.4f} bits/dim (best.pt, step "
                 f"{rows[-1]['best step']})")
    return rows
