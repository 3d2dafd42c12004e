"""The settings of a training run, and the seeds of its random streams."""

import dataclasses
import math
from typing import Any, Optional

import numpy as np

# Every random stream of a run has its own tag, first in the seed's entropy (numpy's SeedSequence
# ignores trailing zeros, so a tag in last place could make two streams equal).
INIT, PERMUTATION, STEP_NOISE, EVALUATION, PICTURES = 1, 2, 3, 4, 5
LOG_EVERY_ON_GPU = 50
# validation figures that can choose best.pt: lower is better ("": the model's default)
SELECTABLE = ("", "bits_per_dim", "nll_nats", "frechet_digit_distance", "sliced_wasserstein", "mmd")


def _seed(*entropy: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence: nearby inputs, unrelated seeds)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(2, np.uint64)[0] >> 1)


@dataclasses.dataclass
class TrainConfig:
    """The settings of a training run: `check` validates them against the data and the
    processes, `resumed` continues a checkpoint's, `learning_rate` is the schedule.

    Args:
        steps: training steps.
        batch_size: the global batch, over all processes and accumulated shards.
        lr: peak learning rate (a player may set its own, gdm_engine.models.Player.lr).
        weight_decay: AdamW's decoupled weight decay.
        warmup: steps of linear warm-up, then cosine decay to final_lr.
        final_lr: the learning rate at the last step, as a fraction of lr.
        grad_clip: max global gradient norm (of each player's weights).
        ema_decay: the EMA's decay per step (its warm-up: Trainer).
        accumulate: shards of the global batch each process runs one after another.
        eval_every: steps between evaluations on the validation split.
        checkpoint_every: steps between checkpoints.
        early_stop: stop after this many evaluations without improvement (0: off).
        eval_test: also evaluate the test split, for curves only (it never chooses).
        samples: examples in each sample picture.
        log_every: steps between reads of the loss for the progress bar (0: every step on a
            CPU, every LOG_EVERY_ON_GPU steps on a GPU).
        select: the validation figure that chooses best.pt ("": the model's default).
        seed: the seed of every random stream of the run.
    """

    steps: int = 2000
    batch_size: int = 128  # the global batch, over all processes and accumulated shards
    lr: float = 1e-3  # a player may set its own (gdm_engine.models.Player.lr)
    weight_decay: float = 0.0
    warmup: int = 100  # steps of linear warm-up, then cosine decay to final_lr
    final_lr: float = 0.1  # as a fraction of lr
    grad_clip: float = 1.0  # max global gradient norm (of each player's weights)
    ema_decay: float = 0.999
    accumulate: int = 1  # shards of the global batch each process runs one after another
    eval_every: int = 500
    checkpoint_every: int = 500
    early_stop: int = 0  # stop after this many evaluations without improvement (0: off)
    eval_test: bool = False  # also evaluate the test split, for curves only (never chooses)
    samples: int = 64  # examples in each sample picture
    # steps between reads of the loss for the progress bar; 0: every step on a CPU, where reading
    # it is free, every LOG_EVERY_ON_GPU steps on a GPU, where a read waits for the device
    log_every: int = 0
    select: str = ""  # the validation figure that chooses best.pt ("": the default)
    seed: int = 0

    def check(self, train_size: int, world_size: int = 1) -> None:
        """Raise ValueError naming the setting that cannot work.

        Args:
            train_size: examples in the training split.
            world_size: processes that share each global batch.

        Raises:
            ValueError: a setting out of its range (naming it), a batch_size that does not divide
                into world_size x accumulate equal shards or exceeds train_size.
        """
        for name in (
            "steps",
            "batch_size",
            "accumulate",
            "eval_every",
            "checkpoint_every",
            "samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "early_stop", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.final_lr <= 1:
            raise ValueError(f"final_lr (a fraction of lr) must be in [0, 1], got {self.final_lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.select not in SELECTABLE:
            raise ValueError(
                f"select must be one of {', '.join(map(repr, SELECTABLE))}, got {self.select!r}"
            )
        shards = world_size * self.accumulate
        if self.batch_size % shards:
            raise ValueError(
                f"batch_size {self.batch_size} must divide into {shards} equal shards "
                f"({world_size} processes x accumulate {self.accumulate})"
            )
        if self.batch_size > train_size:
            raise ValueError(
                f"batch_size {self.batch_size} exceeds the {train_size} training examples"
            )

    @classmethod
    def resumed(cls, saved: dict[str, Any], given: dict[str, Any]) -> "TrainConfig":
        """The settings to continue the checkpoint `saved` with: its own, `steps` extended where
        `given` (a dict of settings) asks. A given setting that differs from the checkpoint's
        raises ValueError (a resumed run keeps its settings: else its schedule, batches and
        selection would not be one run's), as does a step count below the checkpoint's step
        (equal: a finished run, as `gdm-engine results` reopens to score it).

        Args:
            saved: a checkpoint (load_checkpoint's dict: its "config" and "step").
            given: the settings asked for, by name.

        Returns:
            The checkpoint's settings with `steps` from `given` where it is there.

        Raises:
            ValueError: a setting of `given` other than steps differs from the checkpoint's, or
                steps is below the checkpoint's step.
        """
        config = cls(**saved["config"])
        for key, value in given.items():
            if key != "steps" and value != getattr(config, key):
                raise ValueError(
                    f"the checkpoint was trained with {key}={getattr(config, key)}; "
                    f"resume with the same value or leave {key} out"
                )
        steps = given.get("steps", config.steps)
        if steps < saved["step"]:
            raise ValueError(
                f"the checkpoint is at step {saved['step']} of {config.steps}: "
                f"steps must be at least {saved['step']}"
            )
        return dataclasses.replace(config, steps=steps)

    def learning_rate(self, step: int, lr: Optional[float] = None) -> float:
        """Linear warm-up over `warmup` steps, then cosine decay to final_lr * lr at `steps`
        (SGDR's cosine annealing, Loshchilov & Hutter, 2017, without restarts); `lr` is the peak
        (a player's own, or the run's).

        Args:
            step: the training step (0-based).
            lr: the peak learning rate; None: the run's `lr`.

        Returns:
            The learning rate at `step`.
        """
        lr = self.lr if lr is None else lr
        if step < self.warmup:
            return lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return lr * (self.final_lr + (1 - self.final_lr) * cosine)
