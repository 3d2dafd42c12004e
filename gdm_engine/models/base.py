"""The protocol every model of the engine implements."""

import torch


class GenerativeModel(torch.nn.Module):
    """A generative model: `log_prob`, `loss` and `sample`, plus what a checkpoint needs.

    * ``log_prob(x)`` -> (N,) nats per example: exact where the family allows, otherwise a lower
      bound whose docstring says so. For discrete data (integer levels) it is the log-probability
      mass of the levels, or a bound on it (see `gdm_engine.data` for the dequantisation
      convention of continuous densities).
    * ``loss(x, generator=None)`` -> scalar training objective; `forward` is the loss, so that
      DistributedDataParallel and torch.compile, which wrap `forward`, wrap the objective.
    * ``sample(n, generator=None)`` -> n examples shaped like the data.

    A model is rebuilt from ``name`` and ``config`` (the keyword arguments of its constructor, all
    plain Python values), which is how checkpoints store it.
    """

    name = None
    likelihood = "exact"  # what log_prob gives, in words: "exact", or the bound it is

    def __init__(self, **config):
        super().__init__()
        self.config = config

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

    def forward(self, x, generator=None):
        return self.loss(x, generator)

    @property
    def device(self):
        return next(self.parameters()).device
