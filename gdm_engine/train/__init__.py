"""One trainer for every family: AdamW with warm-up and cosine decay, gradient clipping, an EMA of
the weights, bf16 autocast on a GPU, periodic evaluation on the validation split with the best
checkpoint kept and early stopping, sample pictures, atomic checkpoints that resume exactly, and
data parallelism under torchrun. A model with several losses (a GAN) trains its players in turn,
each with its own optimiser.

    data = gdm_engine.data.load("digits")
    trainer = Trainer(build_model("vae", data), data, TrainConfig(steps=2000), out="runs/vae")
    trainer.fit()

Reproducibility: a run is a function of its seed. The global batch at position p of the data
stream (step s of a one-loss model; a GAN's player steps take consecutive positions) is a slice of
the permutation of epoch p // (batches per epoch), drawn from (seed, epoch); the model's own
randomness at p (reparameterisation noise, dequantisation, diffusion times, a GAN's latents) comes
from a generator seeded from (seed, p, shard). So a resumed run repeats the uninterrupted one
exactly, and P processes under torchrun, each taking its shard of the global batch, compute what
one process computes when it accumulates P shards (`accumulate=P`).

The parts: config.py (the settings, the seeds), loop.py (the Trainer), evaluation.py (held-out
figures: likelihood and sample quality), checkpoint.py (atomic save, verified load), distributed.py
(torchrun's process group).
"""

from .checkpoint import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    METRICS_NAME,
    CheckpointError,
    check_same_run,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    weights_only,
)
from .config import (
    EVALUATION,
    INIT,
    PERMUTATION,
    PICTURES,
    STEP_NOISE,
    TrainConfig,
    _seed,  # noqa: F401 (the stream seeds, checked by the tests)
)
from .distributed import distributed_setup
from .evaluation import (
    default_selection,
    describe,
    evaluate,
    has_sample_figures,
    selectable_figures,
)
from .loop import Trainer, build_model, make_trainer, player_parameters

__all__ = [
    "BEST_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CheckpointError",
    "EVALUATION",
    "INIT",
    "METRICS_NAME",
    "PERMUTATION",
    "PICTURES",
    "STEP_NOISE",
    "TrainConfig",
    "Trainer",
    "build_model",
    "check_same_run",
    "weights_only",
    "default_selection",
    "describe",
    "distributed_setup",
    "evaluate",
    "has_sample_figures",
    "load_checkpoint",
    "make_trainer",
    "model_from_checkpoint",
    "player_parameters",
    "save_checkpoint",
    "selectable_figures",
]
