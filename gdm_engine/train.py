"""One trainer for every family: AdamW with warm-up and cosine decay, gradient clipping, an EMA of
the weights, bf16 autocast on a GPU, periodic evaluation on the validation split with the best
checkpoint kept and early stopping, sample pictures, atomic checkpoints that resume exactly, and
data parallelism under torchrun.

    data = gdm_engine.data.load("digits")
    trainer = Trainer(build_model("vae", data), data, TrainConfig(steps=2000), out="runs/vae")
    trainer.fit()

Reproducibility: a run is a function of its seed. The global batch of step s is a slice of the
permutation of epoch s // (steps per epoch), drawn from (seed, epoch); the model's own randomness
in step s (reparameterisation noise, dequantisation, diffusion times) comes from a generator
seeded from (seed, s, shard). So a resumed run repeats the uninterrupted one exactly, and P
processes under torchrun, each taking its shard of the global batch, compute what one process
computes when it accumulates P shards (`accumulate=P`).
"""

import contextlib
import dataclasses
import json
import math
import os
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

from gdm_engine import metrics, models, pictures

CHECKPOINT_FORMAT = "gdm-engine checkpoint"
CHECKPOINT_VERSION = 2  # 2: the best-so-far record, early-stopping count and training time
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"  # the checkpoint of the evaluation with the best validation figure
METRICS_NAME = "metrics.jsonl"

# Every random stream of a run has its own tag, first in the seed's entropy (numpy's SeedSequence
# ignores trailing zeros, so a tag in last place could make two streams equal).
INIT, PERMUTATION, STEP_NOISE, EVALUATION, PICTURES = 1, 2, 3, 4, 5


@dataclasses.dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128          # the global batch, over all processes and accumulated shards
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 100              # steps of linear warm-up, then cosine decay to final_lr
    final_lr: float = 0.1          # as a fraction of lr
    grad_clip: float = 1.0         # max global gradient norm
    ema_decay: float = 0.999
    accumulate: int = 1            # shards of the global batch each process runs one after another
    eval_every: int = 500
    checkpoint_every: int = 500
    early_stop: int = 0            # stop after this many evaluations without improvement (0: off)
    eval_test: bool = False        # also evaluate the test split, for curves only (never chooses)
    samples: int = 64              # examples in each sample picture
    seed: int = 0

    def check(self, train_size, world_size=1):
        """Raise ValueError naming the setting that cannot work."""
        for name in ("steps", "batch_size", "accumulate", "eval_every", "checkpoint_every",
                     "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "early_stop"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.final_lr <= 1:
            raise ValueError(f"final_lr (a fraction of lr) must be in [0, 1], got "
                             f"{self.final_lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        shards = world_size * self.accumulate
        if self.batch_size % shards:
            raise ValueError(f"batch_size {self.batch_size} must divide into {shards} equal shards "
                             f"({world_size} processes x accumulate {self.accumulate})")
        if self.batch_size > train_size:
            raise ValueError(f"batch_size {self.batch_size} exceeds the {train_size} training "
                             f"examples")

    def learning_rate(self, step):
        """Linear warm-up over `warmup` steps, then cosine decay to final_lr * lr at `steps`."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return self.lr * (self.final_lr + (1 - self.final_lr) * cosine)


def _seed(*entropy):
    """A 63-bit seed mixed from integers (numpy's SeedSequence: nearby inputs, unrelated seeds)."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(2, np.uint64)[0] >> 1)


def _ema_update(decay):
    """EMA with warm-up: the n-th update uses min(decay, (1 + n) / (10 + n)), so that early on the
    average follows the weights instead of remembering their random start (the schedule of
    TensorFlow's ExponentialMovingAverage with num_updates). It averages parameters only: the
    AveragedModel copies buffers (use_buffers=False), which are state, not weights (masks, flags,
    an EBM's replay buffer of Langevin chains, whose average would be no chain at all)."""

    @torch.no_grad()
    def update(averages, currents, num_averaged):
        n = float(num_averaged)
        rate = min(decay, (1 + n) / (10 + n))
        torch._foreach_lerp_(averages, currents, 1 - rate)

    return update


def build_model(name, data, seed=0, **options):
    """The model registered as `name`, shaped for `data`, its initial weights drawn from `seed`
    (torch's global random state is left as it was)."""
    with _fork_rng(torch.device("cpu")):
        torch.manual_seed(_seed(INIT, seed))
        return models.get(name).for_data(data, **options)


def make_trainer(name, data, config, out, options=None, saved=None):
    """A Trainer of model `name` on `data`: fresh (initial weights from config.seed and the model
    `options`), or continuing the checkpoint `saved` (its model settings, weights and state)."""
    if saved is not None:
        model = models.get(saved["model"])(**saved["model_config"])
    else:
        model = build_model(name, data, config.seed, **(options or {}))
    trainer = Trainer(model, data, config, out, name)
    if saved is not None:
        trainer.restore(saved)
    return trainer


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


class CheckpointError(ValueError):
    """A file that is not a readable gdm-engine checkpoint."""


def save_checkpoint(state, path):
    """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over
    `path`. A crash at any moment leaves the previous checkpoint or the new one, never a part."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def load_checkpoint(path, map_location="cpu"):
    """A checkpoint written by the trainer, loaded with weights_only=True (no code runs).
    Raises CheckpointError for a missing, unreadable or foreign file."""
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"{path} is not a readable checkpoint (torch.load failed with "
                              f"{type(error).__name__}: {error})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gdm-engine checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}; this "
                              f"gdm-engine reads version {CHECKPOINT_VERSION}")
    return state


def check_same_run(state, model_name, data_name):
    """Raise CheckpointError unless the checkpoint is of this model on this data."""
    if state["model"] != model_name or state["data"] != data_name:
        raise CheckpointError(f"the checkpoint is of model {state['model']!r} on data "
                              f"{state['data']!r}, not {model_name!r} on {data_name!r}")


def model_from_checkpoint(state, ema=True):
    """The checkpoint's model, with its EMA weights (or the raw weights with ema=False)."""
    model = models.get(state["model"])(**state["model_config"])
    if ema:
        prefix = "module."
        weights = {k[len(prefix):]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    else:
        weights = state["model_state"]
    model.load_state_dict(weights)
    return model.eval()  # for evaluation and sampling: dropout off


# --------------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------------


def distributed_setup():
    """(rank, world size, device). Under torchrun (WORLD_SIZE > 1) this joins the process group:
    NCCL with one GPU per process, gloo on CPUs."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if cuda else "gloo")
    return (dist.get_rank() if world > 1 else 0), world, device


# --------------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------------


class Trainer:
    """Trains `model` on `data` (gdm_engine.data.Data); only rank 0 writes to `out`."""

    def __init__(self, model, data, config, out, model_name=None):
        self.rank, self.world, self.device = distributed_setup()
        config.check(len(data.train), self.world)
        self.data, self.config, self.out = data, config, out
        self.model_name = model_name or model.name
        self.model = model.to(self.device)
        self.parallel = self.model
        if self.world > 1:
            self.parallel = torch.nn.parallel.DistributedDataParallel(self.model)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.ema = AveragedModel(self.model, multi_avg_fn=_ema_update(config.ema_decay),
                                 use_buffers=False)
        self.step, self.running_loss = 0, None  # running loss: the exponential average on the bar
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

    def global_batch(self, step):
        """Indices of step's global batch: consecutive slices of a per-epoch permutation."""
        n, batch = len(self.data.train), self.config.batch_size
        per_epoch = n // batch
        epoch, position = divmod(step, per_epoch)
        if self._permutation[0] != epoch:
            generator = torch.Generator().manual_seed(_seed(PERMUTATION, self.config.seed, epoch))
            self._permutation = (epoch, torch.randperm(n, generator=generator))
        return self._permutation[1][position * batch:(position + 1) * batch]

    def train_step(self):
        """One optimiser step; returns this process's mean loss."""
        config, step = self.config, self.step
        shard_size = config.batch_size // (self.world * config.accumulate)
        indices = self.global_batch(step)
        for group in self.optimizer.param_groups:
            group["lr"] = config.learning_rate(step)
        self.optimizer.zero_grad(set_to_none=True)
        losses = []
        for i in range(config.accumulate):
            shard = self.rank * config.accumulate + i
            rows = indices[shard * shard_size:(shard + 1) * shard_size]
            x = self.data.train[rows]
            generator = torch.Generator(self.device).manual_seed(
                _seed(STEP_NOISE, config.seed, step, shard))
            last = i == config.accumulate - 1
            sync = contextlib.nullcontext() if last or self.world == 1 else self.parallel.no_sync()
            with sync:
                with torch.autocast(self.device.type, torch.bfloat16,
                                    enabled=self.device.type == "cuda"):
                    loss = self.parallel(x.to(self.device), generator=generator,
                                         **self._conditioning(rows))
                (loss / config.accumulate).backward()
            losses.append(loss.detach().float())
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip)
        self.optimizer.step()
        self.ema.update_parameters(self.model)
        self.step += 1
        loss = torch.stack(losses).mean()
        if self.world > 1:  # the global batch's mean, not rank 0's shard alone
            dist.all_reduce(loss)
            loss /= self.world
        return loss.item()

    def _conditioning(self, rows):
        """{"labels": the class labels of training examples `rows`} for a class-conditional
        model (one with `classes` > 0); nothing for the others."""
        if not getattr(self.model, "classes", 0):
            return {}
        if self.data.labels is None:
            raise ValueError(f"the model is class-conditional but {self.data.name} has no labels")
        return {"labels": self.data.labels["train"][rows].to(self.device)}

    # ---- evaluation and pictures --------------------------------------------------------------

    def evaluate(self, split="valid"):
        """Held-out figures of the EMA model; the evaluation's randomness is seeded from the step
        and kept apart from training's."""
        seed = _seed(EVALUATION, self.config.seed, self.step)
        return evaluate(self.ema.module, self.data, split, seed=seed)

    @property
    def selection_metric(self):
        """The validation figure that chooses the best checkpoint: lower is better. A model with
        no likelihood (an EBM) is chosen by the distance of its samples to the split."""
        if self.model.likelihood is None:
            return "sliced_wasserstein"
        return "bits_per_dim" if self.data.discrete else "nll_nats"

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
        pictures.save_samples(samples, self.data, os.path.join(self.out, name),
                              f"{self.model_name}, step {self.step}", columns=columns)
        return name

    # ---- checkpoints --------------------------------------------------------------------------

    def state(self):
        cuda = self.device.type == "cuda"
        return {
            "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
            "model": self.model_name, "model_config": self.model.config,
            "data": self.data.name, "config": dataclasses.asdict(self.config),
            "step": self.step, "running_loss": self.running_loss, "world_size": self.world,
            "best": self.best, "evaluations_since_best": self.evaluations_since_best,
            "seconds": self.seconds,
            "model_state": self.model.state_dict(), "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state(self.device) if cuda else torch.empty(0)},
        }

    def restore(self, state):
        """Continue from a checkpoint of the same model and data."""
        check_same_run(state, self.model_name, self.data.name)
        self.model.load_state_dict(state["model_state"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda" and state["rng"]["cuda"].numel():
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        self.step, self.running_loss = state["step"], state["running_loss"]
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
        bar = tqdm(total=config.steps, initial=self.step, desc=f"train {self.model_name}",
                   disable=not self.is_main or None, dynamic_ncols=True)
        with bar:
            while self.step < config.steps and not self.stopped_early:
                start = time.perf_counter()
                loss = self.train_step()
                self.seconds += time.perf_counter() - start
                previous = self.running_loss
                self.running_loss = loss if previous is None else 0.98 * previous + 0.02 * loss
                bar.set_postfix(loss=f"{self.running_loss:.4g}",
                                lr=f"{config.learning_rate(self.step):.2g}")
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

    def _evaluation(self):
        """Evaluate on validation (and test for curves when asked), keep the best, write the
        metrics line and a sample picture. Every process evaluates, so that all of them agree on
        early stopping; only rank 0 writes."""
        figures = self.evaluate("valid")
        results = {"step": self.step, "loss": self.running_loss, "split": "valid", **figures}
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


@contextlib.contextmanager
def _fork_rng(device):
    """Leave torch's global random state as it was: seeding model building, evaluation or
    sampling must not disturb training."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        yield


def evaluate(model, data, split="valid", seed=0, samples=2000):
    """Figures of `model` on a split of `data`: bits/dim for discrete data, NLL in nats for
    continuous data, and for 2-D toys the sliced Wasserstein distance and MMD between `samples`
    model samples and the split (the toy's sample size). A model whose `likelihood` is None (an
    EBM: unnormalised) has no NLL; it gets the sample distances on any continuous data."""
    x = getattr(data, split)
    unnormalised = model.likelihood is None
    if unnormalised and not samples:
        raise ValueError(f"model {model.name!r} has no likelihood: evaluate needs samples >= 1 "
                         f"to score it by sample distances")
    with _fork_rng(model.device):
        torch.manual_seed(seed)
        if data.discrete:
            return {"bits_per_dim": metrics.bits_per_dim(model, x)}
        figures = {} if unnormalised else {"nll_nats": metrics.nll_nats(model, x)}
        if (data.toy is not None or unnormalised) and samples:
            generator = torch.Generator().manual_seed(seed)
            drawn = model.sample(samples, generator=generator)
            figures["sliced_wasserstein"] = metrics.sliced_wasserstein(drawn, x,
                                                                       generator=generator)
            figures["mmd"] = metrics.mmd(drawn, x, generator=generator)
        return figures


def describe(results, separator="  "):
    """A results dict in words: "bits per dim 1.9234  samples samples-0001000.png"."""
    return separator.join(f"{k.replace('_', ' ')} {v:.4f}" if isinstance(v, float)
                          else f"{k.replace('_', ' ')} {v}" for k, v in results.items())
