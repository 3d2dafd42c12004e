"""The protocol every model of the engine implements."""

import dataclasses

import torch

from gdm_engine._validation import check_int, host_values
from gdm_engine.data import dequantize, quantize


def check_range(name, t, count):
    """t's values lie in 0 .. count − 1 (levels of discrete data, class labels). They are checked
    where reading them is free, on CPU tensors (`host_values`); a GPU would stall to read them,
    so data on a GPU are checked once on the host where they are loaded (the trainer checks its
    training split before it moves it to the device) and no training step reads them."""
    values = host_values(t)
    if values is not None and values.size and not 0 <= values.min() <= values.max() < count:
        raise ValueError(
            f"{name} must lie in 0 .. {count - 1}, got values from "
            f"{values.min():g} to {values.max():g}"
        )


def continuous_space(x, levels, generator):
    """Examples as a model of continuous values sees them: discrete levels dequantised into
    [−1, 1) as 2 (x + u) / levels − 1 (the convention of gdm_engine.data.dequantize), continuous
    data as floats."""
    if levels is None:
        return x.float()
    return 2 * dequantize(x, levels, generator) - 1


def data_space(y, levels):
    """The inverse of continuous_space: values in [−1, 1) rounded down to their level for
    discrete data, continuous values as they are."""
    return y if levels is None else quantize((y + 1) / 2, levels)


@dataclasses.dataclass(frozen=True)
class Player:
    """A named group of a model's weights with its own loss and optimiser (a GAN's generator and
    discriminator). The trainer runs `steps` optimiser steps of each player in turn per training
    step, each on its own batch, with ``model.loss(x, generator, player=name)`` as the loss.

    `modules` names the model's submodules whose parameters the player owns (empty: all of
    them); `lr` overrides the run's peak learning rate and `betas` Adam's; `samples` says its
    weights draw samples, so the trainer keeps their EMA (the others' EMA copy is their current
    weights)."""

    name: str
    modules: tuple = ()
    steps: int = 1
    lr: float = None
    betas: tuple = (0.9, 0.999)
    samples: bool = True


class GenerativeModel(torch.nn.Module):
    """A generative model: `log_prob`, `loss` and `sample`, plus what a checkpoint needs.

    * ``log_prob(x)`` -> (N,) nats per example: exact where the family allows, otherwise a lower
      bound whose docstring says so. For discrete data (integer levels) it is the log-probability
      mass of the levels, or a bound on it (see `gdm_engine.data` for the dequantisation
      convention of continuous densities).
    * ``loss(x, generator=None)`` -> scalar training objective; `forward` is the loss, so that
      DistributedDataParallel and torch.compile, which wrap `forward`, wrap the objective.
    * ``sample(n, generator=None)`` -> n examples shaped like the data.
    * ``players()`` -> the Players that train it: one, "model", owning every weight, unless the
      model has several losses (a GAN), whose ``loss`` then takes ``player=`` (the name).

    A model is rebuilt from ``name`` and ``config`` (the keyword arguments of its constructor, all
    plain Python values), which is how checkpoints store it. Every model has ``shape`` (of one
    example) and ``levels`` (of discrete data, >= 2; None for continuous data), against which
    ``check_data`` checks what ``log_prob`` and ``loss`` are given.
    """

    name = None
    likelihood = "exact"  # what log_prob gives, in words: "exact", or the bound it is

    def __init__(self, **config):
        if config.get("levels") is not None:
            check_int("levels", config["levels"], 2)
        super().__init__()
        self.config = config

    def check_shape(self, x):
        """x is a tensor of examples (N, *shape)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of examples, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.shape or x.ndim == 0:
            raise ValueError(
                f"x must have shape (N, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}"
            )

    def check_data(self, x):
        """Raise TypeError/ValueError naming x unless it holds examples as the model takes them:
        (N, *shape), and for discrete data integer levels in 0 .. levels − 1 (their values checked
        where that is free: see `check_range`)."""
        self.check_shape(x)
        if self.levels is None:
            return
        if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"{self.name} on discrete data takes integer levels x, got {x.dtype}")
        check_range("x", x, self.levels)

    @classmethod
    def for_data(cls, data, **options):
        """A model shaped for `data` (a gdm_engine.data.Data)."""
        return cls(shape=list(data.shape), levels=data.levels, **options)

    def log_prob(self, x):
        raise NotImplementedError

    def loss(self, x, generator=None):
        raise NotImplementedError

    def sample(self, n, generator=None):
        raise NotImplementedError

    def players(self):
        return (Player("model"),)

    def forward(self, x, generator=None, **options):
        return self.loss(x, generator, **options)

    @property
    def device(self):
        return next(self.parameters()).device
