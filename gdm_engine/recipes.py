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
    # Gated PixelCNN, 6 layers of 64 channels, kernel 5. Small data overfits it within 1,000
    # steps at dropout 0.2 (validation 1.750 bits/dim at step 750, then worse); dropout 0.3 on
    # both stacks and weight decay 0.1 reached 1.706 at step 2,000 before it overfit too.
    ("pixelcnn", "digits"): Recipe(
        settings={"steps": 6000, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.1,
                  "eval_every": 250, "checkpoint_every": 500, "early_stop": 6},
        options={"channels": 64, "layers": 6, "kernel_size": 5, "dropout": 0.3}),
    # WaveNet over the digits as 64-step raster sequences: 6 layers (dilations 1 .. 32, a
    # receptive field of every earlier pixel), 64 channels; dropout 0.4 beat 0.2 on validation
    # (1.728 against 1.745 bits/dim).
    ("wavenet", "digits"): Recipe(
        settings={"steps": 6000, "batch_size": 64, "lr": 1e-3, "eval_every": 250,
                  "checkpoint_every": 500, "early_stop": 8},
        options={"channels": 64, "layers": 6, "dropout": 0.4}),
    # WaveNet on the 1,024-step mu-law sines: one stack of 10 layers (dilations 1 .. 512).
    ("wavenet", "sines"): Recipe(
        settings={"steps": 4000, "batch_size": 32, "lr": 1e-3, "eval_every": 250,
                  "checkpoint_every": 500, "early_stop": 6},
        options={"channels": 32, "layers": 10}),
}


def get(model, data_name):
    """The recipe of `model` on `data_name`, or None (TrainConfig's defaults then apply)."""
    return RECIPES.get((model, data_name))
