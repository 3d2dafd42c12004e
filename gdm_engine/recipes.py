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
        settings={
            "steps": 5000,
            "batch_size": 128,
            "lr": 1e-3,
            "eval_every": 250,
            "checkpoint_every": 500,
            "early_stop": 8,
        },
        report={"iwae_samples": 1000},
    ),
    # Gated PixelCNN, 6 layers of 64 channels, kernel 5. Small data overfits it within 1,000
    # steps at dropout 0.2 (validation 1.750 bits/dim at step 750, then worse); dropout 0.3 on
    # both stacks and weight decay 0.1 reached 1.706 at step 2,000 before it overfit too.
    ("pixelcnn", "digits"): Recipe(
        settings={
            "steps": 6000,
            "batch_size": 64,
            "lr": 1e-3,
            "weight_decay": 0.1,
            "eval_every": 250,
            "checkpoint_every": 500,
            "early_stop": 6,
        },
        options={"channels": 64, "layers": 6, "kernel_size": 5, "dropout": 0.3},
    ),
    # WaveNet over the digits as 64-step raster sequences: 6 layers (dilations 1 .. 32, a
    # receptive field of every earlier pixel), 64 channels; dropout 0.4 beat 0.2 on validation
    # (1.728 against 1.745 bits/dim).
    ("wavenet", "digits"): Recipe(
        settings={
            "steps": 6000,
            "batch_size": 64,
            "lr": 1e-3,
            "eval_every": 250,
            "checkpoint_every": 500,
            "early_stop": 8,
        },
        options={"channels": 64, "layers": 6, "dropout": 0.4},
    ),
    # WaveNet on the 1,024-step mu-law sines: one stack of 10 layers (dilations 1 .. 512).
    ("wavenet", "sines"): Recipe(
        settings={
            "steps": 4000,
            "batch_size": 32,
            "lr": 1e-3,
            "eval_every": 250,
            "checkpoint_every": 500,
            "early_stop": 6,
        },
        options={"channels": 32, "layers": 10},
    ),
    # Glow, 3 levels of 8 steps, 64 hidden channels. Without regularisation it overfits after
    # 1,250 steps (2.033 bits/dim on validation); dropout 0.3 in the couplings' networks and
    # weight decay 0.05 reached 1.996 at step 2,000. The reported figure is the importance-
    # weighted dequantisation bound with K = 1,000 draws of the noise (training and selection
    # use K = 1).
    ("glow", "digits"): Recipe(
        settings={
            "steps": 6000,
            "batch_size": 64,
            "lr": 1e-3,
            "weight_decay": 0.05,
            "eval_every": 250,
            "checkpoint_every": 500,
            "early_stop": 6,
        },
        options={"dropout": 0.3},
        report={"iwae_samples": 1000},
    ),
    # RealNVP, 2 scales of 3 checkerboard and 3 channel couplings, 64 hidden channels, the same
    # regularisers as Glow's (2.054 bits/dim on validation at step 1,250 with K = 1).
    ("realnvp", "digits"): Recipe(
        settings={
            "steps": 6000,
            "batch_size": 64,
            "lr": 1e-3,
            "weight_decay": 0.05,
            "eval_every": 250,
            "checkpoint_every": 500,
            "early_stop": 6,
        },
        options={"dropout": 0.3},
        report={"iwae_samples": 1000},
    ),
    # Neural spline flow over the digits as 64-vectors, sized as zuko's NSF that the flows'
    # issue quotes (5 transforms, 256-unit MLPs): it overfits after 1,250 steps even with
    # dropout 0.3 and weight decay 0.05 (2.166 bits/dim on validation with K = 1).
    ("nsf", "digits"): Recipe(
        settings={
            "steps": 4000,
            "batch_size": 64,
            "lr": 1e-3,
            "weight_decay": 0.05,
            "eval_every": 250,
            "checkpoint_every": 500,
            "early_stop": 6,
        },
        options={"transforms": 5, "hidden": 256, "dropout": 0.3},
        report={"iwae_samples": 1000},
    ),
    # Neural spline flow on the 2-D toys: 4 blocks of ActNorm, LU linear map and an 8-bin spline
    # coupling with a 128-unit MLP; 20,000 training points, batch 256.
    ("nsf", "8gaussians"): Recipe(
        settings={
            "steps": 5000,
            "batch_size": 256,
            "lr": 1e-3,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
        }
    ),
    ("nsf", "checkerboard"): Recipe(
        settings={
            "steps": 8000,
            "batch_size": 256,
            "lr": 1e-3,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
        }
    ),
    # DDPM, class-conditional with label dropout 0.1 (classifier-free guidance): a U-Net of
    # width 64, two resolutions (8x8, 4x4), one residual block each, dropout 0.1; linear schedule
    # over 1,000 steps, eps prediction. Selection uses a 100-step stratified estimate of the
    # bound (noisy by about ±0.05 bits/dim); the reported figure sums all 1,000 steps. Without
    # the level-offset input, validation was 2.967 bits/dim at step 1,500, 1.45 of it in the 10
    # steps of least noise; with it, 2.035 at step 1,500 and the best, 1.866, at step 4,500
    # (24 minutes on 1 CPU thread), whose full bound on the test split is 2.020 bits/dim.
    ("ddpm", "digits"): Recipe(
        settings={
            "steps": 6000,
            "batch_size": 128,
            "lr": 5e-4,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
        },
        options={
            "conditional": True,
            "width": 64,
            "blocks": 1,
            "dropout": 0.1,
            "bound_timesteps": 100,
        },
        report={"bound_timesteps": None},
    ),
    # DDPM on the 2-D toys: a residual MLP (width 128, 3 blocks), the digits' schedule, v
    # prediction. With ε prediction (validation SW 0.062, MMD 0.0011 at step 2,500 with the
    # ancestral sampler) the deterministic samplers threw 0.35% of their points to |x| ~ 70: the
    # starts beyond |x_T| = 3.6, where the network underestimates ε at t = 999 by ~10%, an error
    # that D = x − σ ε̂ multiplies by σ = 157; with v the error is not amplified (DPM-Solver++(2M)
    # in 20 steps: test SW 0.51 -> 0.066). The bound is loose on a toy (the full sum on 300
    # validation points was 2.94 nats against the true density's 1.58); a 50-step estimate of it
    # swung by ±0.5 nats on 300 points, so selection uses 200.
    ("ddpm", "8gaussians"): Recipe(
        settings={
            "steps": 5000,
            "batch_size": 256,
            "lr": 1e-3,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
        },
        options={"width": 128, "blocks": 3, "bound_timesteps": 200, "prediction": "v"},
        report={"bound_timesteps": None},
    ),
    ("ddpm", "checkerboard"): Recipe(
        settings={
            "steps": 5000,
            "batch_size": 256,
            "lr": 1e-3,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
        },
        options={"width": 128, "blocks": 3, "bound_timesteps": 200, "prediction": "v"},
        report={"bound_timesteps": None},
    ),
    # Energy-based model (contrastive divergence, 40 Langevin steps of size 0.01 per batch from a
    # 10,000-chain replay buffer, alpha 0.1; samples: 400 steps from uniform noise), chosen on
    # validation by sliced Wasserstein. Two 128-unit layers learnt only a ring on 8gaussians in
    # 4,000 steps (validation SW 0.12, MMD 0.040; alpha 0.01: 0.11, 0.024); three 256-unit
    # layers split it into the 8 modes (step 4,000: SW 0.088, MMD 0.0039).
    ("ebm", "8gaussians"): Recipe(
        settings={
            "steps": 4000,
            "batch_size": 256,
            "lr": 1e-3,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
        },
        options={"hidden": [256, 256, 256]},
    ),
    # The same network on checkerboard: validation chose step 4,000 of 5,000 (SW 0.057, MMD
    # 0.0016; the true density's row, on test: 0.061 and 0.0007). Both distances are near their
    # floor from step 1,000 on, while the samples' squares are still blurred at the edges.
    ("ebm", "checkerboard"): Recipe(
        settings={
            "steps": 5000,
            "batch_size": 256,
            "lr": 1e-3,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
        },
        options={"hidden": [256, 256, 256]},
    ),
    # GAN on the digits: DCGAN-style networks of width 64 (8x8 <- 4x4), R1 0.5, Adam with
    # betas (0, 0.99), chosen on validation by the Fréchet digit distance of 1,000 samples. In
    # 4,000 steps at a constant 5e-4 (validation FDD; the floor, 1,000 training digits, is 1.57,
    # the independent-pixel model's samples 30.5): width 32 with R1 1 reached 4.42, width 32 with
    # R1 0.1 at 2e-4 6.50, width 64 with R1 0.5 3.47 at step 3,500 and still falling.
    ("gan", "digits"): Recipe(
        settings={
            "steps": 8000,
            "batch_size": 64,
            "lr": 5e-4,
            "grad_clip": 10.0,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 6,
            "select": "frechet_digit_distance",
        },
        options={"width": 64, "r1": 0.5},
    ),
    # GAN on 8gaussians: MLPs of three 256-unit layers, an 8-d latent, R1 1. At a constant 2e-4
    # every mode held >= 10% of the samples from step 1,000, and the share within 3 sigma of a
    # centre rose from 0.85 (step 1,000) to 0.94 (step 4,000). Chosen by MMD: sliced
    # Wasserstein, which the spread of each mode barely moves, chose step 1,500 of this recipe
    # (validation: 0.88 within 3 sigma; MMD 0.0116 against 0.0105 at step 3,500, 0.93 within).
    ("gan", "8gaussians"): Recipe(
        settings={
            "steps": 4000,
            "batch_size": 256,
            "lr": 2e-4,
            "grad_clip": 10.0,
            "eval_every": 500,
            "checkpoint_every": 500,
            "early_stop": 4,
            "select": "mmd",
        }
    ),
    # EBM on the digits as 64-vectors in the dequantised space [-1, 1): three 256-unit layers,
    # Langevin steps of 2 at temperature 5e-5 (gradient step 1, noise 0.01 a step). At
    # temperature 1 (noise 0.1 a step) the samples stayed noise (validation FDD 33 after 2,000
    # steps, the independent-pixel model's samples 30.5); at 5e-5, 4.6 at step 250, then between
    # 7 and 10: training is unstable, and selection on validation keeps the best.
    ("ebm", "digits"): Recipe(
        settings={
            "steps": 3000,
            "batch_size": 128,
            "lr": 1e-3,
            "eval_every": 250,
            "checkpoint_every": 250,
            "early_stop": 6,
        },
        options={"hidden": [256, 256, 256], "step_size": 2.0, "temperature": 5e-5},
    ),
}


def get(model, data_name):
    """The recipe of `model` on `data_name`, or None (TrainConfig's defaults then apply)."""
    return RECIPES.get((model, data_name))
