"""The training loop: the Trainer, and building a model or a trainer for a run."""

import contextlib
import dataclasses
import json
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union, cast

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from gdm_engine import models, pictures
from gdm_engine.data import Data
from gdm_engine.models import GenerativeModel, Player

from .checkpoint import (
    BEST_NAME,
    CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    METRICS_NAME,
    check_same_run,
    save_checkpoint,
)
from .config import (
    EVALUATION,
    INIT,
    LOG_EVERY_ON_GPU,
    PERMUTATION,
    PICTURES,
    STEP_NOISE,
    TrainConfig,
    _seed,
)
from .distributed import distributed_setup
from .evaluation import (
    LIKELIHOOD_FIGURES,
    _fork_rng,
    default_selection,
    describe,
    evaluate,
    selectable_figures,
)


def _ema_rate(decay: float, n: int) -> float:
    """The weight the EMA keeps at its n-th update (n = 1, 2, ...; the 0th copies the weights):
    min(decay, (1 + n) / (10 + n)), so that early on the average follows the weights instead of
    remembering their random start (the schedule of TensorFlow's ExponentialMovingAverage with
    num_updates)."""
    return min(decay, (1 + n) / (10 + n))


def build_model(name: str, data: Data, seed: int = 0, **options: Any) -> GenerativeModel:
    """The model registered as `name`, shaped for `data`, its initial weights drawn from `seed`
    (torch's global random state is left as it was).

    Args:
        name: a registered model name (gdm_engine.models.MODELS).
        data: the data set it is shaped for.
        seed: the run's seed; the initial weights come from its INIT stream.
        **options: the model's own settings (its constructor's keyword arguments).

    Returns:
        The model, on the CPU.

    Raises:
        ValueError: an unknown `name`, or options the model refuses.
    """
    with _fork_rng(torch.device("cpu")):
        torch.manual_seed(_seed(INIT, seed))
        return models.get(name).for_data(data, **options)


def make_trainer(
    name: str,
    data: Data,
    config: TrainConfig,
    out: Union[str, "os.PathLike[str]"],
    options: Optional[dict[str, Any]] = None,
    saved: Optional[dict[str, Any]] = None,
) -> "Trainer":
    """A Trainer of model `name` on `data`: fresh (initial weights from config.seed and the model
    `options`), or continuing the checkpoint `saved` (its model settings, weights and state):
    then `config` may differ from the checkpoint's in `steps` only (TrainConfig.resumed) and
    `data` and `options` may only repeat its model settings (as settings_for resolves them: a
    DDPM's conditional=True is classes=data.classes); anything else raises ValueError.

    Args:
        name: a registered model name (for a fresh run; a checkpoint's model is its own).
        data: the data set.
        config: the run's settings.
        out: the run folder (rank 0 writes there).
        options: the model's own settings (None: its defaults).
        saved: a loaded checkpoint to continue (None: a fresh run).

    Returns:
        The Trainer, restored to the checkpoint where `saved` is given.

    Raises:
        ValueError: a setting or model option that differs from the checkpoint's, or a setting
            that cannot work (TrainConfig.check).
    """
    if saved is not None:
        config = TrainConfig.resumed(saved, dataclasses.asdict(config))
        settings = models.get(saved["model"]).settings_for(data, **(options or {}))
        changed = sorted(k for k, v in settings.items() if saved["model_config"].get(k) != v)
        if changed:
            raise ValueError(
                f"the checkpoint's model has {saved['model_config']}; its "
                f"settings cannot change on resume ({', '.join(changed)} given)"
            )
        model = models.get(saved["model"])(**saved["model_config"])
    else:
        model = build_model(name, data, config.seed, **(options or {}))
    trainer = Trainer(model, data, config, out, name)
    if saved is not None:
        trainer.restore(saved)
    return trainer


def player_parameters(model: torch.nn.Module, player: Player) -> dict[str, torch.nn.Parameter]:
    """{name: parameter} of the weights `player` owns: its modules' (all, for no modules).

    Args:
        model: the model.
        player: one of its players (model.players()).

    Returns:
        {qualified parameter name: parameter}, named as in model.named_parameters().

    Raises:
        ValueError: the player names something that is not a submodule of the model.
    """
    if not player.modules:
        return dict(model.named_parameters())
    owned: dict[str, torch.nn.Parameter] = {}
    for module in player.modules:
        if not isinstance(getattr(model, module, None), torch.nn.Module):
            raise ValueError(
                f"player {player.name!r} names {module!r}, which is not a submodule "
                f"of {type(model).__name__}"
            )
        owned.update(
            {f"{module}.{name}": p for name, p in getattr(model, module).named_parameters()}
        )
    return owned


def _check_players(model: torch.nn.Module, players: Sequence[Player]) -> None:
    """The players have distinct names, at least one optimiser step each, and no weight twice."""
    names = [player.name for player in players]
    if not players or len(set(names)) != len(names):
        raise ValueError(f"a model needs players with distinct names, got {names}")
    seen: dict[str, str] = {}
    for player in players:
        if player.steps < 1:
            raise ValueError(f"player {player.name!r} needs steps >= 1, got {player.steps}")
        for name in player_parameters(model, player):
            if name in seen:
                raise ValueError(
                    f"parameter {name} belongs to players {seen[name]!r} and {player.name!r}"
                )
            seen[name] = player.name


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


class Trainer:
    """Trains `model` on `data` (gdm_engine.data.Data); only rank 0 writes to `out`.

    Each training step runs every player of the model in turn (`model.players()`: one for a
    one-loss model, a generator and a discriminator for a GAN), each for its `steps` optimiser
    steps, and each optimiser step takes the next global batch of the data stream and its own
    noise. A one-loss model's stream is one batch per step, as it always was.

    Args:
        model: the model to train (moved to this process's device).
        data: the data set (gdm_engine.data.Data).
        config: the run's settings.
        out: the run folder: checkpoint.pt, best.pt, metrics.jsonl and sample pictures.
        model_name: the name checkpoints record (None: model.name).

    Raises:
        ValueError: a setting that cannot work (TrainConfig.check), players that share weights
            or repeat a name, a `select` figure the model on this data does not have, or a
            class-conditional model on data without labels.
    """

    def __init__(
        self,
        model: GenerativeModel,
        data: Data,
        config: TrainConfig,
        out: Union[str, "os.PathLike[str]"],
        model_name: Optional[str] = None,
    ):
        self.rank, self.world, self.device = distributed_setup()
        config.check(len(data.train), self.world)
        self.data, self.config, self.out = data, config, out
        self.model_name = model_name or model.name
        self.model = model.to(self.device)
        self.players = tuple(model.players())
        _check_players(self.model, self.players)
        self._check_selection()
        self.parallel: torch.nn.Module = self.model
        if self.world > 1:
            # a player's loss leaves the other players' weights out (a GAN's discriminator step
            # draws the fakes without gradient), which DDP must be told to expect
            self.parallel = torch.nn.parallel.DistributedDataParallel(
                self.model, find_unused_parameters=len(self.players) > 1
            )
        # The training split is checked on the host and moved to the training device once: a
        # step takes its batch there, copying nothing from the host and reading nothing back.
        conditioning = self._training_conditioning()
        self.model.check_data(data.train, **conditioning)
        self.train_examples = data.train.to(self.device)
        self.train_conditioning = {
            name: value.to(self.device) for name, value in conditioning.items()
        }
        # fused: Adam's step counts stay on the device (the other implementations read them
        # back at every step to form the bias corrections)
        self.optimizers = {
            player.name: torch.optim.AdamW(
                player_parameters(self.model, player).values(),
                lr=config.learning_rate(0, player.lr),
                betas=player.betas,
                weight_decay=config.weight_decay,
                fused=True,
            )
            for player in self.players
        }
        # the EMA's container and checkpoint format; _update_ema updates it
        self.ema = AveragedModel(self.model, use_buffers=False)
        # The weights of the players that sample are averaged (their EMA copies, and the
        # weights); the others' are copied, as (EMA copy, live tensor) pairs, and so are buffers,
        # which are state, not weights (masks, flags, an EBM's replay buffer of Langevin chains,
        # whose average would be no chain at all).
        copies = dict(self.ema.module.named_parameters())
        self._ema_copies: list[torch.Tensor] = []
        self._ema_weights: list[torch.Tensor] = []
        self._copied_to_ema: list[tuple[torch.Tensor, torch.Tensor]] = []
        for player in self.players:
            for name, p in player_parameters(self.model, player).items():
                if player.samples:
                    self._ema_copies.append(copies[name])
                    self._ema_weights.append(p)
                else:
                    self._copied_to_ema.append((copies[name], p))
        self._copied_to_ema += list(zip(self.ema.module.buffers(), self.model.buffers()))
        self.step = 0
        # {player: the exponential average of its loss, on the bar}
        self.running_loss: Optional[dict[str, float]] = None
        # {player: loss tensor} of each step since the running losses
        self._unread_losses: list[dict[str, torch.Tensor]] = []
        # the best validation evaluation so far ({"step", "metric", "value"})
        self.best: Optional[dict[str, Any]] = None
        self.evaluations_since_best = 0
        self.seconds = 0.0  # time spent training, over every resume
        # (epoch, permutation of the training set)
        self._permutation: tuple[Optional[int], Optional[torch.Tensor]] = (None, None)

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0, the process that writes the run folder."""
        return self.rank == 0

    @property
    def checkpoint_path(self) -> str:
        """The run's latest checkpoint: out/checkpoint.pt."""
        return os.path.join(self.out, CHECKPOINT_NAME)

    @property
    def best_path(self) -> str:
        """The checkpoint of the best validation evaluation: out/best.pt."""
        return os.path.join(self.out, BEST_NAME)

    @property
    def metrics_path(self) -> str:
        """The evaluation log, one JSON line per evaluation: out/metrics.jsonl."""
        return os.path.join(self.out, METRICS_NAME)

    # ---- one step ---------------------------------------------------------------------------

    @property
    def batches_per_step(self) -> int:
        """Global batches one training step takes: the players' optimiser steps summed."""
        return sum(player.steps for player in self.players)

    def global_batch(self, position: int) -> torch.Tensor:
        """Indices of the global batch at `position` of the data stream: consecutive slices of a
        per-epoch permutation.

        Args:
            position: the batch's position in the data stream (0-based).

        Returns:
            (batch_size,) int64 indices into the training split, on the training device.
        """
        n, batch = len(self.data.train), self.config.batch_size
        per_epoch = n // batch
        epoch, offset = divmod(position, per_epoch)
        if self._permutation[0] != epoch:
            # drawn on the training device, where the data are: nothing copied from the host
            generator = torch.Generator(self.device).manual_seed(
                _seed(PERMUTATION, self.config.seed, epoch)
            )
            self._permutation = (epoch, torch.randperm(n, generator=generator, device=self.device))
        permutation = self._permutation[1]
        assert permutation is not None  # drawn above for this epoch
        return permutation[offset * batch : (offset + 1) * batch]

    def train_step(self) -> dict[str, torch.Tensor]:
        """One training step: every player's optimiser steps; returns {player: this process's
        mean loss over its steps}, as a tensor on the device (reading it would wait for the
        step: the trainer reads losses only where it shows them, see _read_losses).

        Returns:
            {player name: its mean loss over its optimiser steps}, 0-d tensors on the device.
        """
        position = self.step * self.batches_per_step
        losses = {}
        for player in self.players:
            mean: Union[float, torch.Tensor] = 0.0
            for _ in range(player.steps):
                mean = mean + self._player_step(player, position) / player.steps
                position += 1
            losses[player.name] = cast(torch.Tensor, mean)  # steps >= 1 (_check_players)
        self._update_ema()
        self.step += 1
        return losses

    def _player_step(self, player: Player, position: int) -> torch.Tensor:
        """One optimiser step of `player` on the global batch at `position`; returns the global
        batch's mean loss (a tensor on the device)."""
        config = self.config
        shard_size = config.batch_size // (self.world * config.accumulate)
        indices = self.global_batch(position)
        optimizer = self.optimizers[player.name]
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate(self.step, player.lr)
        # every weight's gradient, not only this player's: its loss may reach the others'
        self.model.zero_grad(set_to_none=True)
        options = {"player": player.name} if len(self.players) > 1 else {}
        losses = []
        for i in range(config.accumulate):
            shard = self.rank * config.accumulate + i
            rows = indices[shard * shard_size : (shard + 1) * shard_size]
            conditioning = {name: value[rows] for name, value in self.train_conditioning.items()}
            generator = torch.Generator(self.device).manual_seed(
                _seed(STEP_NOISE, config.seed, position, shard)
            )
            last = i == config.accumulate - 1
            # with several processes, self.parallel is the DistributedDataParallel wrapper
            parallel = cast(torch.nn.parallel.DistributedDataParallel, self.parallel)
            sync = contextlib.nullcontext() if last or self.world == 1 else parallel.no_sync()
            with sync:
                with torch.autocast(
                    self.device.type, torch.bfloat16, enabled=self.device.type == "cuda"
                ):
                    loss = self.parallel(
                        self.train_examples[rows], generator=generator, **options, **conditioning
                    )
                (loss / config.accumulate).backward()
            losses.append(loss.detach().float())
        torch.nn.utils.clip_grad_norm_(optimizer.param_groups[0]["params"], config.grad_clip)
        optimizer.step()
        loss = torch.stack(losses).mean()
        if self.world > 1:  # the global batch's mean, not rank 0's shard alone
            dist.all_reduce(loss)
            loss /= self.world
        return loss

    @torch.no_grad()
    def _update_ema(self) -> None:
        """The EMA of the players that sample (see _ema_rate); the others' copy is their current
        weights. The n-th update is that of step n, so its rate comes from the step count on the
        host: nothing is read back (AveragedModel.update_parameters reads its count from a
        tensor)."""
        if self.step == 0:
            torch._foreach_copy_(self._ema_copies, self._ema_weights)
        else:
            rate = _ema_rate(self.config.ema_decay, self.step)
            torch._foreach_lerp_(self._ema_copies, self._ema_weights, 1 - rate)
        for copy, live in self._copied_to_ema:
            copy.copy_(live)
        self.ema.n_averaged += 1

    def _training_conditioning(self) -> dict[str, torch.Tensor]:
        """{"labels": the class labels of the training split} for a class-conditional model (one
        with `classes` > 0); nothing for the others."""
        if not getattr(self.model, "classes", 0):
            return {}
        if self.data.labels is None:
            raise ValueError(f"the model is class-conditional but {self.data.name} has no labels")
        return {"labels": self.data.labels["train"]}

    # ---- evaluation and pictures --------------------------------------------------------------

    def evaluate(self, split: str = "valid") -> dict[str, float]:
        """Held-out figures of the EMA model; the evaluation's randomness is seeded from the step
        and kept apart from training's.

        Args:
            split: "valid" or "test" (or "train").

        Returns:
            {figure: value}, as gdm_engine.train.evaluate gives them.
        """
        seed = _seed(EVALUATION, self.config.seed, self.step)
        return evaluate(
            self._ema_model,
            self.data,
            split,
            seed=seed,
            sample_quality=self.selection_metric not in LIKELIHOOD_FIGURES,
        )

    @property
    def _ema_model(self) -> GenerativeModel:
        """The EMA copy of the model (AveragedModel's `module`)."""
        return cast(GenerativeModel, self.ema.module)

    @property
    def selection_metric(self) -> str:
        """The validation figure that chooses the best checkpoint (lower is better): the run's
        `select`, else the likelihood figure, else for a model without one (an EBM, a GAN) a
        distance of its samples to the split."""
        return self.config.select or default_selection(self.model, self.data)

    def _check_selection(self) -> None:
        """The chosen validation figure is one this model on this data has."""
        figures = selectable_figures(self.model, self.data)
        if self.selection_metric not in figures:
            raise ValueError(
                f"select={self.selection_metric!r}: model {self.model_name!r} on "
                f"{self.data.name!r} is chosen by one of {figures}"
            )

    def record_evaluation(self, figures: Mapping[str, float]) -> bool:
        """Keep the best evaluation so far (rank 0 writes best.pt when this one is it) and count
        the evaluations since; returns whether this one is the best.

        Args:
            figures: a validation evaluation ({figure: value}, with the selection metric).

        Returns:
            Whether it improves on every earlier evaluation (lower is better).
        """
        value = figures[self.selection_metric]
        improved = self.best is None or value < self.best["value"]
        if improved:
            self.best = {"step": self.step, "metric": self.selection_metric, "value": value}
            self.evaluations_since_best = 0
            if self.is_main:
                save_checkpoint(self.state(), self.best_path)
        else:
            self.evaluations_since_best += 1
        return improved

    @property
    def stopped_early(self) -> bool:
        """Whether `early_stop` evaluations in a row have not improved (never with early_stop 0)."""
        return 0 < self.config.early_stop <= self.evaluations_since_best

    def write_samples(self) -> Optional[str]:
        """A picture of EMA samples in the run folder, where the data has one; returns its file
        name or None. A class-conditional model of images draws one row per class.

        Returns:
            The picture's file name in the run folder, or None where the data has no picture.
        """
        if not pictures.can_draw(self.data):
            return None
        generator = torch.Generator().manual_seed(_seed(PICTURES, self.config.seed, self.step))
        model = self._ema_model
        n = self.config.samples if self.data.discrete else 2000
        options: dict[str, torch.Tensor] = {}
        columns: Optional[int] = None
        classes = getattr(model, "classes", 0)
        if classes and self.data.discrete:
            columns = max(1, n // classes)
            options["labels"] = torch.arange(classes).repeat_interleave(columns)
            n = len(options["labels"])
        with _fork_rng(self.device):
            model.eval()
            samples = model.sample(n, generator=generator, **options)
            model.train()
        name = f"samples-{self.step:07d}.png"
        pictures.save_samples(
            samples,
            self.data,
            os.path.join(self.out, name),
            f"{self.model_name}, step {self.step}",
            columns=columns,
        )
        return name

    # ---- checkpoints --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The checkpoint of this step: the run's identity and settings, the weights, the EMA,
        the optimisers, the training state and torch's random states (load_checkpoint reads it).

        Returns:
            The checkpoint's dict (format CHECKPOINT_FORMAT, version CHECKPOINT_VERSION).
        """
        self._read_losses()  # the running losses as of this step
        cuda = self.device.type == "cuda"
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model": self.model_name,
            "model_config": self.model.config,
            "data": self.data.name,
            "config": dataclasses.asdict(self.config),
            "step": self.step,
            "running_loss": self.running_loss,
            "world_size": self.world,
            "best": self.best,
            "evaluations_since_best": self.evaluations_since_best,
            "seconds": self.seconds,
            "model_state": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizers": {
                name: optimizer.state_dict() for name, optimizer in self.optimizers.items()
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if cuda else torch.empty(0),
            },
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint of the same model and data.

        Args:
            state: a loaded checkpoint (load_checkpoint).

        Raises:
            CheckpointError: the checkpoint is of another model or data set.
        """
        check_same_run(state, self.model_name, self.data.name)
        self.model.load_state_dict(state["model_state"])
        self.ema.load_state_dict(state["ema"])
        for name, optimizer in self.optimizers.items():
            saved = state["optimizers"][name]
            # a checkpoint's settings override the optimiser's: one written before the optimisers
            # were fused resumes fused too (its step counts then move to the device)
            optimizer.load_state_dict(
                dict(
                    saved, param_groups=[dict(group, fused=True) for group in saved["param_groups"]]
                )
            )
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and state["rng"]["cuda"].numel():
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.step, self.running_loss = state["step"], state["running_loss"]
        self._unread_losses.clear()
        self.best, self.evaluations_since_best = state["best"], state["evaluations_since_best"]
        self.seconds = state["seconds"]
        if self.is_main:
            self._keep_metrics_until(self.step)

    def _keep_metrics_until(self, step: int) -> None:
        """Drop evaluation lines written after `step` (the resumed run writes them again; a fresh
        run, step 0, starts an empty file), atomically like a checkpoint."""
        kept = []
        if os.path.exists(self.metrics_path):
            with open(self.metrics_path) as f:
                kept = [line for line in f if json.loads(line)["step"] <= step]
        temporary = self.metrics_path + ".tmp"
        with open(temporary, "w") as f:
            f.writelines(kept)
        os.replace(temporary, self.metrics_path)

    def save(self) -> None:
        """Write this step's checkpoint atomically to `checkpoint_path`."""
        save_checkpoint(self.state(), self.checkpoint_path)

    # ---- the loop -----------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to config.steps, or until `early_stop` evaluations in a row bring no
        improvement; returns the last evaluation (on rank 0; {} elsewhere).

        Returns:
            The last evaluation's metrics line: step, running losses, split, figures, whether it
            was the best, the sample picture ({} on other ranks, or where none ran).
        """
        config = self.config
        if self.is_main:
            os.makedirs(self.out, exist_ok=True)
            if self.step == 0:  # a fresh run: nothing of an earlier one in this folder counts
                self._keep_metrics_until(-1)
                if os.path.exists(self.best_path):
                    os.remove(self.best_path)
        results: dict[str, Any] = {}
        log_every = config.log_every or (1 if self.device.type == "cpu" else LOG_EVERY_ON_GPU)
        bar = tqdm(
            total=config.steps,
            initial=self.step,
            desc=f"train {self.model_name}",
            disable=not self.is_main or None,
            dynamic_ncols=True,
        )
        with bar:
            while self.step < config.steps and not self.stopped_early:
                start = time.perf_counter()
                self._unread_losses.append(self.train_step())
                self.seconds += time.perf_counter() - start
                if self.step % log_every == 0:
                    bar.set_postfix(
                        **{name: f"{value:.4g}" for name, value in self._loss_fields().items()},
                        lr=f"{config.learning_rate(self.step):.2g}",
                    )
                bar.update()
                done = self.step == config.steps
                if done or self.step % config.eval_every == 0:
                    results = self._evaluation()
                    done = done or self.stopped_early
                if self.is_main and (done or self.step % config.checkpoint_every == 0):
                    self.save()
        if self.world > 1:
            dist.barrier()
        return results

    def _read_losses(self) -> None:
        """Fold the losses of the steps since the last read into the running losses (their
        exponential average, 0.98 per step), reading them back in one go: what the bar, the
        metrics file and a checkpoint show, read only when they show it (on a GPU the read waits
        for the device to finish the steps)."""
        if not self._unread_losses:
            return
        names = list(self._unread_losses[0])
        read = torch.stack(
            [torch.stack([losses[name] for name in names]) for losses in self._unread_losses]
        ).tolist()
        self._unread_losses.clear()
        for values in read:
            previous = self.running_loss or dict(zip(names, values))
            self.running_loss = {
                name: 0.98 * previous[name] + 0.02 * value for name, value in zip(names, values)
            }

    def _loss_fields(self) -> dict[str, float]:
        """The running losses for the bar and the metrics file: "loss" for a one-loss model,
        "loss_<player>" for each player of the others."""
        self._read_losses()
        if self.running_loss is None:
            return {}
        if len(self.players) == 1:
            return {"loss": next(iter(self.running_loss.values()))}
        return {f"loss_{name}": value for name, value in self.running_loss.items()}

    def _evaluation(self) -> dict[str, Any]:
        """Evaluate on validation (and test for curves when asked), keep the best, write the
        metrics line and a sample picture. Every process evaluates, so that all of them agree on
        early stopping; only rank 0 writes."""
        figures = self.evaluate("valid")
        results: dict[str, Any] = {
            "step": self.step,
            **self._loss_fields(),
            "split": "valid",
            **figures,
        }
        if self.config.eval_test:
            results.update({f"test_{k}": v for k, v in self.evaluate("test").items()})
        results["best"] = self.record_evaluation(figures)
        if not self.is_main:
            return {}
        results["samples"] = self.write_samples()
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(results) + "\n")
        tqdm.write(describe(results))
        return results
