"""One results table for every model family: `gdm-engine results`.

Each model trains on the data set by its recipe (gdm_engine.recipes), the checkpoint is chosen on
the validation split (best.pt), and only that checkpoint is scored on the test split. The table
judges likelihood and samples side by side:

* digits: test bits/dim (exact or a bound, said; "—" for a model without a likelihood), and the
  Fréchet digit distance, precision and recall of 1,000 samples against the test split. The first
  rows are the independent-pixel baseline, fitted in closed form to the training split, and the
  floor of the sample columns: 1,000 training digits against the test split.
* other continuous data: the NLL in nats, and for 2-D toys the sliced Wasserstein distance and
  MMD of 2,000 samples to the test split (8gaussians: also mode coverage); the first row is the
  true density where the toy has one (its NLL on the test points, and the figures of a fresh
  sample of the toy: the floor of each column).

Runs live in `out/<model>-<data>/` and resume when interrupted; the table goes to
`out/results.md` (and .json) with a sample picture per model.
"""

import os
import platform
import time

import torch

from gdm_engine import data as datasets
from gdm_engine import metrics, models, pictures, recipes, train

RUN_COLUMNS = ["likelihood", "parameters", "best step", "steps", "train seconds", "machine"]
TOY_FLOOR_SEED = 3  # the stream of the true density's fresh draw, one no split uses


def figure_column(data):
    """The reported figure's column: test bits/dim for discrete data, else test NLL in nats."""
    return "test bits/dim" if data.discrete else "test nll nats"


def sample_figures(data):
    """The sample figures `data` is judged by (the keys of train.evaluate's results): the digits'
    and the 2-D toys'."""
    if not data.discrete and data.toy is None:
        return []
    return train.evaluation.sample_figure_names(data)


def _column(figure):
    return figure.replace("_", " ")


def columns(data):
    """The table's columns for `data`."""
    return ["model", figure_column(data), *map(_column, sample_figures(data)), *RUN_COLUMNS]


def _sample_cells(figures, data):
    """The sample columns of a row from evaluation figures."""
    return {_column(figure): figures[figure] for figure in sample_figures(data)}


def machine():
    """Where the figures were made: the GPU, or the CPU with its core count."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()} CPU, {os.cpu_count()} cores"


def baseline_row(data, folder):
    """The independent-pixel baseline: maximum likelihood (add-one) on train, scored on test,
    its samples too (their picture goes to `folder`)."""
    start = time.perf_counter()
    model = models.IndependentPixels.for_data(data).fit(data.train)
    seconds = time.perf_counter() - start
    _save_picture(model, model.name, data, folder, "fitted in closed form")
    figures = train.evaluate(model, data, "test", seed=0, sample_quality=True)
    return {
        "model": "pixels (independent-pixel baseline)",
        "test bits/dim": figures["bits_per_dim"],
        **_sample_cells(figures, data),
        "likelihood": "exact",
        "parameters": _parameters(model),
        "best step": "closed form",
        "steps": 0,
        "train seconds": seconds,
        "machine": machine(),
    }


def floor_row(data):
    """The floor of the sample columns: 1,000 real training digits against the test split."""
    figures = metrics.digit_quality_floor(data, "test", n=train.evaluation.IMAGE_SAMPLES)
    return {
        "model": "training digits (the floor of the sample columns)",
        "test bits/dim": None,
        **_sample_cells(figures, data),
        "likelihood": "-",
        "parameters": 0,
        "best step": "-",
        "steps": 0,
        "train seconds": 0.0,
        "machine": machine(),
    }


def true_density_row(data, samples=2000):
    """A toy's own density: its NLL on the test points, and the sample distances of a fresh
    draw of `samples` toy points (seed 3, a stream no split uses) to them."""
    toy = data.toy
    drawn = toy.sample(samples, torch.Generator().manual_seed(TOY_FLOOR_SEED))
    figures = train.evaluation.figures_of_samples(
        drawn, data, data.test, torch.Generator().manual_seed(0)
    )
    return {
        "model": f"true density of {data.name}",
        "test nll nats": -toy.log_prob(data.test).double().mean().item(),
        **_sample_cells(figures, data),
        "likelihood": "exact",
        "parameters": 0,
        "best step": "-",
        "steps": 0,
        "train seconds": 0.0,
        "machine": machine(),
    }


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


def picture_path(name, data, folder):
    return os.path.join(folder, f"{name}-{data.name}-samples.png")


def _save_picture(model, name, data, folder, source):
    """A picture of the model's samples (seed 0) in `folder`, where the data has one."""
    if not pictures.can_draw(data):
        return
    samples = model.sample(
        64 if data.discrete else 2000, generator=torch.Generator().manual_seed(0)
    )
    exact_2d = data.shape == (2,) and model.likelihood == "exact"
    pictures.save_samples(
        samples,
        data,
        picture_path(name, data, folder),
        f"{name}, {source}",
        log_density=model.eval().log_prob if exact_2d else None,
    )


def model_row(name, data, out):
    """Train `name` by its recipe, then score its best.pt (chosen on validation) on test."""
    trainer = train_by_recipe(name, data, out)
    best = train.load_checkpoint(trainer.best_path)
    model = train.model_from_checkpoint(best)
    for attribute, value in recipes.get(name, data.name).report.items():
        setattr(model, attribute, value)
    figures = train.evaluate(
        model, data, "test", seed=0, sample_quality=train.has_sample_figures(data)
    )
    _save_picture(model, name, data, os.path.dirname(out), f"best.pt (step {best['step']})")
    # a model without a likelihood (an EBM) has no figure there: None, shown as "—"
    likelihood = figures.get("bits_per_dim" if data.discrete else "nll_nats")
    return {
        "model": name,
        figure_column(data): likelihood,
        **_sample_cells(figures, data),
        "likelihood": model.likelihood,
        "parameters": _parameters(model),
        "best step": best["step"],
        "steps": trainer.step,
        "train seconds": trainer.seconds,
        "machine": machine(),
    }


def _headline(row, data):
    """The row's figures in words: its likelihood figure (where it has one) and sample ones."""
    figure = figure_column(data)
    words = [] if row[figure] is None else [f"{row[figure]:.4f} ({figure})"]
    words += [f"{_column(name)} {row[_column(name)]:.4f}" for name in sample_figures(data)]
    return ", ".join(words)


def results(model_names, data_name, out, progress=print):
    """The table's rows: the baseline (discrete data) or the true density (toys that have one)
    first, then each model (trained in out/<model>-<data>)."""
    data = datasets.load(data_name)
    os.makedirs(out, exist_ok=True)
    if data.discrete:
        rows = [baseline_row(data, out)]
        if train.has_sample_figures(data):
            rows.append(floor_row(data))
    elif data.toy is not None and data.toy.log_prob is not None:
        rows = [true_density_row(data)]
    else:
        rows = []
    for row in rows:
        progress(f"{row['model']}: {_headline(row, data)}")
    for name in model_names:
        if name == models.IndependentPixels.name:
            if not data.discrete:
                raise ValueError(
                    f"the independent-pixel baseline needs discrete data; "
                    f"{data_name!r} is continuous"
                )
            continue  # the baseline row
        rows.append(model_row(name, data, os.path.join(out, f"{name}-{data.name}")))
        progress(f"{name}: {_headline(rows[-1], data)} (best.pt, step {rows[-1]['best step']})")
    drawn = [name for name in model_names if os.path.exists(picture_path(name, data, out))]
    if drawn:  # every model's picture on one sheet
        pictures.contact_sheet(
            [picture_path(name, data, out) for name in drawn],
            drawn,
            os.path.join(out, "samples.png"),
        )
    return rows
