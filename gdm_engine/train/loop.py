"""The training loop: the Trainer, and building a model or a trainer for a run."""

import contextlib
import dataclasses
import json
import os
import time

import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from gdm_engine import models, pictures

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


def _ema_rate(decay, n):
    """The weight the EMA keeps at its n-th update (n = 1, 2, ...; the 0th copies the weights):
    min(decay, (1 + n) / (10 + n)), so that early on the average follows the weights instead of
    remembering their random start (the schedule of TensorFlow's ExponentialMovingAverage with
    num_updates)."""
    return min(decay, (1 + n) / (10 + n))


def build_model(name, data, seed=0, **options):
    """The model registered as `name`, shaped for `data`, its initial weights drawn from `seed`
    (torch's global random state is left as it was)."""
    with _fork_rng(torch.device("cpu")):
        torch.manual_seed(_seed(INIT, seed))
        return models.get(name).for_data(data, **options)


def make_trainer(name, data, config, out, options=None, saved=None):
    """A Trainer of model `name` on `data`: fresh (initial weights from config.seed and the model
    `options`), or continuing the checkpoint `saved` (its model settings, weights and state):
    then `config` may differ from the checkpoint's in `steps` only (TrainConfig.resumed) and
    `options` may only repeat its model settings; anything else raises ValueError."""
    if saved is not None:
        config = TrainConfig.resumed(saved, dataclasses.asdict(config))
        changed = sorted(k for k, v in (options or {}).items() if saved["model_config"].get(k) != v)
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


def player_parameters(model, player):
    """{name: parameter} of the weights `player` owns: its modules' (all, for no modules)."""
    if not player.modules:
        return dict(model.named_parameters())
    owned = {}
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


def _check_players(model, players):
    """The players have distinct names, at least one optimiser step each, and no weight twice."""
    names = [player.name for player in players]
    if not players or len(set(names)) != len(names):
        raise ValueError(f"a model needs players with distinct names, got {names}")
    seen = {}
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
    noise. A one-loss model's stream is one batch per step, as it always was."""

    def __init__(self, model, data, config, out, model_name=None):
        self.rank, self.world, self.device = distributed_setup()
        config.check(len(data.train), self.world)
        self.data, self.config, self.out = data, config, out
        self.model_name = model_name or model.name
        self.model = model.to(self.device)
        self.players = tuple(model.players())
        _check_players(self.model, self.players)
        self._check_selection()
        self.parallel = self.model
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
        self._ema_copies, self._ema_weights, self._copied_to_ema = [], [], []
        for player in self.players:
            for name, p in player_parameters(self.model, player).items():
                if player.samples:
                    self._ema_copies.append(copies[name])
                    self._ema_weights.append(p)
                else:
                    self._copied_to_ema.append((copies[name], p))
        self._copied_to_ema += list(zip(self.ema.module.buffers(), self.model.buffers()))
        self.step = 0
        self.running_loss = None  # {player: the exponential average of its loss, on the bar}
        self._unread_losses = []  # {player: loss tensor} of each step since the running losses
        self.best, self.evaluations_since_best = None, 0  # the best validation evaluation so far
        self.seconds = 0.0  # time spent training, over every resume
        self._permutation = (None, None)  # (epoch, permutation of the training set)

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def checkpoint_path(self):
        return os.path.join(self.out, CHECKPOINT_NAME)

    @property
    def best_path(self):
        return os.path.join(self.out, BEST_NAME)

    @property
    def metrics_path(self):
        return os.path.join(self.out, METRICS_NAME)

    # ---- one step ---------------------------------------------------------------------------

    @property
    def batches_per_step(self):
        return sum(player.steps for player in self.players)

    def global_batch(self, position):
        """Indices of the global batch at `position` of the data stream: consecutive slices of a
        per-epoch permutation."""
        n, batch = len(self.data.train), self.config.batch_size
        per_epoch = n // batch
        epoch, offset = divmod(position, per_epoch)
        if self._permutation[0] != epoch:
            # drawn on the training device, where the data are: nothing copied from the host
            generator = torch.Generator(self.device).manual_seed(
                _seed(PERMUTATION, self.config.seed, epoch)
            )
            self._permutation = (epoch, torch.randperm(n, generator=generator, device=self.device))
        return self._permutation[1][offset * batch : (offset + 1) * batch]

    def train_step(self):
        """One training step: every player's optimiser steps; returns {player: this process's
        mean loss over its steps}, as a tensor on the device (reading it would wait for the
        step: the trainer reads losses only where it shows them, see _read_losses)."""
        position = self.step * self.batches_per_step
        losses = {}
        for player in self.players:
            mean = 0.0
            for _ in range(player.steps):
                mean = mean + self._player_step(player, position) / player.steps
                position += 1
            losses[player.name] = mean
        self._update_ema()
        self.step += 1
        return losses

    def _player_step(self, player, position):
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
            sync = contextlib.nullcontext() if last or self.world == 1 else self.parallel.no_sync()
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
    def _update_ema(self):
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

    def _training_conditioning(self):
        """{"labels": the class labels of the training split} for a class-conditional model (one
        with `classes` > 0); nothing for the others."""
        if not getattr(self.model, "classes", 0):
            return {}
        if self.data.labels is None:
            raise ValueError(f"the model is class-conditional but {self.data.name} has no labels")
        return {"labels": self.data.labels["train"]}

    # ---- evaluation and pictures --------------------------------------------------------------

    def evaluate(self, split="valid"):
        """Held-out figures of the EMA model; the evaluation's randomness is seeded from the step
        and kept apart from training's."""
        seed = _seed(EVALUATION, self.config.seed, self.step)
        return evaluate(
            self.ema.module,
            self.data,
            split,
            seed=seed,
            sample_quality=self.selection_metric not in LIKELIHOOD_FIGURES,
        )

    @property
    def selection_metric(self):
        """The validation figure that chooses the best checkpoint (lower is better): the run's
        `select`, else the likelihood figure, else for a model without one (an EBM, a GAN) a
        distance of its samples to the split."""
        return self.config.select or default_selection(self.model, self.data)

    def _check_selection(self):
        """The chosen validation figure is one this model on this data has."""
        figures = selectable_figures(self.model, self.data)
        if self.selection_metric not in figures:
            raise ValueError(
                f"select={self.selection_metric!r}: model {self.model_name!r} on "
                f"{self.data.name!r} is chosen by one of {figures}"
            )

    def record_evaluation(self, figures):
        """Keep the best evaluation so far (rank 0 writes best.pt when this one is it) and count
        the evaluations since; returns whether this one is the best."""
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
    def stopped_early(self):
        return 0 < self.config.early_stop <= self.evaluations_since_best

    def write_samples(self):
        """A picture of EMA samples in the run folder, where the data has one; returns its file
        name or None. A class-conditional model of images draws one row per class."""
        if not pictures.can_draw(self.data):
            return None
        generator = torch.Generator().manual_seed(_seed(PICTURES, self.config.seed, self.step))
        model = self.ema.module
        n, options, columns = self.config.samples if self.data.discrete else 2000, {}, None
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

    def state(self):
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

    def restore(self, state):
        """Continue from a checkpoint of the same model and data."""
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

    def _keep_metrics_until(self, step):
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

    def save(self):
        save_checkpoint(self.state(), self.checkpoint_path)

    # ---- the loop -----------------------------------------------------------------------------

    def fit(self):
        """Train to config.steps, or until `early_stop` evaluations in a row bring no
        improvement; returns the last evaluation (on rank 0; {} elsewhere)."""
        config = self.config
        if self.is_main:
            os.makedirs(self.out, exist_ok=True)
            if self.step == 0:  # a fresh run: nothing of an earlier one in this folder counts
                self._keep_metrics_until(-1)
                if os.path.exists(self.best_path):
                    os.remove(self.best_path)
        results = {}
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

    def _read_losses(self):
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

    def _loss_fields(self):
        """The running losses for the bar and the metrics file: "loss" for a one-loss model,
        "loss_<player>" for each player of the others."""
        self._read_losses()
        if self.running_loss is None:
            return {}
        if len(self.players) == 1:
            return {"loss": next(iter(self.running_loss.values()))}
        return {f"loss_{name}": value for name, value in self.running_loss.items()}

    def _evaluation(self):
        """Evaluate on validation (and test for curves when asked), keep the best, write the
        metrics line and a sample picture. Every process evaluates, so that all of them agree on
        early stopping; only rank 0 writes."""
        figures = self.evaluate("valid")
        results = {"step": self.step, **self._loss_fields(), "split": "valid", **figures}
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
