"""Recipes: the settings and budget each model trains with on each data set when the user gives
none. `gdm-engine train vae --data digits` alone runs the recipe, and `gdm-engine results` trains
every model by its recipe. Flags and `--set` options given on the command line override it.

A recipe's budget is an upper bound: the run keeps the checkpoint with the best validation figure
and stops early once validation stops improving (small data overfits fast).
"""

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recipe:
    settings: dict  # TrainConfig fields
    options: dict = dataclasses.field(default_factory=dict)  # model options
    report: dict = dataclasses.field(default_factory=dict)  # model attributes for the test figure


RECIPES = {
    # 5,000 steps of batch 128 (about 470 epochs of the 1,350 training digits); validation picked
    # step 4,000 of such a run. The reported figure is the IWAE bound with K = 1,000.
    ("vae", "digits"): Recipe(
        settings={"steps": 5000, "batch_size": 128, "lr": 1e-3, "eval_every": 250,
                  "checkpoint_every": 500, "early_stop": 8},
        report={"iwae_samples": 1000}),
}


def get(model, data_name):
    """The recipe of `model` on `data_name`, or None (TrainConfig's defaults then apply)."""
    return RECIPES.get((model, data_name))
