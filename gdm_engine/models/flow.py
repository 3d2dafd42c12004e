"""What the normalizing flows share: the change-of-variables likelihood, the dequantisation of
discrete data, and sampling by the inverse."""

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch

from gdm_engine import nn as gnn
from gdm_engine._validation import check_int
from gdm_engine.data import dequantize, quantize

from .base import GenerativeModel


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) per example, summed over every dimension but the first.

    Args:
        z: (N, ...).

    Returns:
        (N,) float32 log-densities.
    """
    return -0.5 * (z.float().square() + math.log(2 * math.pi)).flatten(1).sum(1)


def check_image_shape(model: str, shape: Sequence[int]) -> None:
    """The multi-scale flows model images (C, H, W) only.

    Args:
        model: the model's name, for the message.
        shape: the shape of one example.

    Raises:
        ValueError: shape is not (C, H, W).
    """
    if len(shape) != 3:
        raise ValueError(
            f"{model} models images (C, H, W), got shape {tuple(shape)}: use nsf for vectors"
        )


class FlowModel(GenerativeModel):
    """A flow f from data to a standard normal z of the data's shape:
    log p(x) = log N(f(x); 0, I) + log|det df/dx| (Dinh et al., 2017, eq. 3), exact for
    continuous data.

    Discrete data (integer levels) are dequantised by the engine's convention (x + u) / levels,
    u ~ U[0, 1) (gdm_engine.data.dequantize), then mapped to the real line by a Logit layer whose
    Jacobian is counted, so log_prob is a lower bound on log P(x) (Theis et al., 2016, sec. 3.1).
    With `iwae_samples` = K > 1 it is the importance-weighted bound over K draws of u,
    log 1/K sum_k p((x + u_k) / levels) levels^-D, which tightens towards log P(x) as K grows
    (Ho et al., 2019, sec. 3.1); training uses K = 1.

    Subclasses build their layers in `layers(memory_saving)`; `memory_saving=True` trains them
    without storing activations (gdm_engine.nn.InvertibleSequential).

    Args:
        shape: the shape of one example.
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        memory_saving: train without storing the flow's activations.
        iwae_samples: K, the draws of u in log_prob's bound for discrete data.
        alpha: the Logit layer's margin for discrete data (gdm_engine.nn.Logit).
        **options: further values to record in ``config`` (a subclass's own arguments are
            recorded from its signature: see GenerativeModel).

    Raises:
        TypeError: iwae_samples is not an int, memory_saving not a bool.
        ValueError: iwae_samples is below 1, levels below 2.
    """

    sample_options = frozenset({"temperature"})
    bound_settings = frozenset({"iwae_samples"})

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        memory_saving: bool = False,
        iwae_samples: int = 1,
        alpha: float = 0.05,
        **options: Any,
    ):
        check_int("iwae_samples", iwae_samples, 1)
        if not isinstance(memory_saving, bool):
            raise TypeError(f"memory_saving must be a bool, got {type(memory_saving).__name__}")
        super().__init__(**options)
        self.shape, self.levels, self.iwae_samples = tuple(shape), levels, iwae_samples
        self.dims = math.prod(self.shape)
        first = [gnn.Logit(alpha)] if levels is not None else []
        self.flow = gnn.InvertibleSequential(
            *first, *self.layers(memory_saving), memory_saving=memory_saving
        )

    def layers(self, memory_saving: bool) -> list[gnn.InvertibleLayer]:
        """The flow's layers, data side first (the subclasses build them).

        Args:
            memory_saving: whether the layers' nested sequences train without stored
                activations.

        Returns:
            The layers.

        Raises:
            NotImplementedError: always, here; the subclasses implement it.
        """
        raise NotImplementedError

    # read-only, computed from the configuration, where the base class's default is a plain
    # class attribute: the override is deliberate (no model sets `likelihood` on an instance)
    @property
    def likelihood(self) -> str:  # type: ignore[override]
        """What log_prob gives: "exact" for continuous data, else the dequantisation bound."""
        if self.levels is None:
            return "exact"
        return f"bound (uniform dequantisation, K={self.iwae_samples})"

    def log_density(self, y: torch.Tensor) -> torch.Tensor:
        """log p(y) of continuous y (N, *shape), nats per example: exact.

        Args:
            y: continuous values (N, *shape), in the dtype of the flow.

        Returns:
            (N,) log-densities.
        """
        z, logdet = self.flow(y)
        return standard_normal_log_prob(z) + logdet

    def log_prob(
        self,
        x: torch.Tensor,
        samples: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """Exact log-density for continuous x; for discrete x the (importance-weighted, K =
        `samples`, default `iwae_samples`) dequantisation bound on log P(x). Nats per example.

        Args:
            x: examples (N, *shape): integer levels for discrete data.
            samples: K, the draws of u for discrete data (None: iwae_samples).
            generator: draws u (None: torch's global generator).

        Returns:
            (N,) log-likelihoods, or their lower bounds for discrete data.

        Raises:
            TypeError: x is not a tensor (integer levels for discrete data), samples not an int.
            ValueError: x is not shaped (N, *shape), holds a level outside 0 .. levels − 1, or
                samples is below 1.
        """
        self.check_data(x)
        if self.levels is None:
            return self.log_density(x.to(self.flow_dtype))
        k = self.iwae_samples if samples is None else samples
        check_int("samples", k, 1)
        log_weights = torch.stack(
            [self.log_density(dequantize(x, self.levels, generator)) for _ in range(k)]
        )
        return torch.logsumexp(log_weights, 0) - math.log(k) - self.dims * math.log(self.levels)

    @property
    def flow_dtype(self) -> torch.dtype:
        """The dtype of the flow's parameters, in which it maps continuous data."""
        return next(self.parameters()).dtype

    def loss(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Negative log-likelihood (the K = 1 bound for discrete data), nats per example.

        Args:
            x: examples (N, *shape).
            generator: draws the dequantisation noise (None: torch's global generator).

        Returns:
            The loss, averaged over the batch.
        """
        return -self.log_prob(x, samples=1, generator=generator).mean()

    @torch.no_grad()
    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, temperature: float = 1.0
    ) -> torch.Tensor:
        """n examples: z ~ N(0, temperature² I) through the inverse flow (temperature < 1 draws
        from the typical middle of the density, Kingma & Dhariwal, 2018, sec. 5); discrete data
        come back as integer levels (floor of levels * y).

        Args:
            n: how many examples.
            generator: draws z, on its own device (None: torch's global generator).
            temperature: the standard deviation of z.

        Returns:
            (n, *shape) examples: integer levels for discrete data.

        Raises:
            ValueError: temperature is not a number >= 0.
        """
        if (
            not isinstance(temperature, (int, float))
            or isinstance(temperature, bool)
            or temperature < 0
        ):
            raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
        device = generator.device if generator is not None else self.device
        z = torch.randn(n, *self.shape, generator=generator, device=device)
        y, _ = self.flow.inverse((temperature * z).to(self.device, self.flow_dtype))
        if self.levels is None:
            return y
        return quantize(y, self.levels)
