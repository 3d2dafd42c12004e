"""The generative adversarial network (Goodfellow et al., 2014) with the non-saturating loss and
the R1 gradient penalty (Mescheder et al., 2018): the engine's implicit model."""

import math
from collections.abc import Sequence
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from gdm_engine._random import draw
from gdm_engine._validation import check_choice, check_int
from gdm_engine.nn.mlp import mlp, spectrally_normalised

from .base import GenerativeModel, Player, continuous_space, data_space

PLAYERS = ("discriminator", "generator")


def _upsamplings(shape: Sequence[int]) -> int:
    """How many times the generator doubles 4x4 to reach an image of `shape` (C, S, S)."""
    size = shape[-1]
    if len(shape) != 3 or shape[1] != size or size < 8 or size & (size - 1):
        raise ValueError(
            f"gan images must be (C, S, S) with S a power of 2 >= 8, or vectors "
            f"(D,); got examples of shape {tuple(shape)}"
        )
    return int(math.log2(size)) - 2


def _leaky_relu() -> nn.Module:
    return nn.LeakyReLU(0.2)


def image_generator(latent: int, channels: int, width: int, upsamplings: int) -> nn.Sequential:
    """DCGAN's generator (Radford et al., 2016): z -> 4x4 features, then strided transposed
    convolutions that double the size and halve the channels, then a 3x3 convolution to the
    image, tanh into [-1, 1]. No batch normalisation (see GAN).

    Args:
        latent: dimensions of z.
        channels: C of the images.
        width: channels of the last (largest) feature maps; each smaller size has twice as many.
        upsamplings: how many times 4x4 doubles (S = 4 · 2^upsamplings).

    Returns:
        The network z (N, latent) -> images (N, C, S, S) in [-1, 1].
    """
    start = width << upsamplings
    layers: list[nn.Module] = [
        nn.Linear(latent, start * 16),
        nn.Unflatten(1, (start, 4, 4)),
        _leaky_relu(),
    ]
    for i in range(upsamplings):
        fan_in = start >> i
        layers += [nn.ConvTranspose2d(fan_in, fan_in // 2, 4, stride=2, padding=1), _leaky_relu()]
    layers += [nn.Conv2d(width, channels, 3, padding=1), nn.Tanh()]
    return nn.Sequential(*layers)


def image_discriminator(channels: int, width: int, downsamplings: int) -> nn.Sequential:
    """DCGAN's discriminator: a 3x3 convolution, then strided 4x4 convolutions that halve the
    size and double the channels down to 4x4, then a linear logit.

    Args:
        channels: C of the images.
        width: channels of the first (largest) feature maps; each halving doubles them.
        downsamplings: how many times the size halves down to 4x4.

    Returns:
        The network images (N, C, S, S) -> logits (N, 1).
    """
    layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), _leaky_relu()]
    for i in range(downsamplings):
        fan_in = width << i
        layers += [nn.Conv2d(fan_in, fan_in * 2, 4, stride=2, padding=1), _leaky_relu()]
    layers += [nn.Flatten(), nn.Linear((width << downsamplings) * 16, 1)]
    return nn.Sequential(*layers)


class GAN(GenerativeModel):
    """A generator G(z), z ~ N(0, I) of `latent` dimensions, and a discriminator D(x) -> logit,
    trained as two players: the discriminator first (`discriminator_steps` optimiser steps per
    training step), then the generator, both with Adam at the run's learning rate and `betas`
    (β1 = 0: momentum lags a moving opponent).

    Losses, averaged over the batch (Goodfellow et al., 2014, sec. 3, the non-saturating form;
    Mescheder et al., 2018, eq. 9 for R1):
      discriminator: softplus(D(G(z))) + softplus(−D(x)) + r1/2 · |∇ₓD(x)|²
      generator:     softplus(−D(G(z)))
    R1 penalises the discriminator's gradient on real data only, which makes the game converge
    locally where the unregularised one circles; `spectral_norm` also normalises D's layers.

    Images (C, S, S), S a power of 2 >= 8 (the 8x8 digits, 32x32): DCGAN-style convolutional
    networks of base `width` channels. Vectors (the 2-D toys): MLPs of `hidden` units. Neither
    network uses batch normalisation: it couples a batch's examples, so a batch split over
    processes or accumulated shards would train a different model, and R1 keeps training stable
    without it.

    Discrete images are modelled in the dequantised continuous space: levels x become
    2 (x + u) / levels − 1 in [−1, 1) with u ~ U[0, 1) (`gdm_engine.data.dequantize`), and samples
    are mapped back and rounded down to their level. A GAN is an implicit model: it has no
    likelihood (`likelihood` is None and `log_prob` raises), and it is judged by its samples.

    Args:
        shape: the shape of one example: (C, S, S), S a power of 2 >= 8, or (D,).
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        latent: dimensions of z (None: 64 for images, 8 for vectors).
        width: base channels of the image networks.
        hidden: units of each hidden layer of the vector networks.
        r1: the weight of the R1 penalty (0: none).
        spectral_norm: spectrally normalise the discriminator's layers.
        discriminator_steps: the discriminator's optimiser steps per training step.
        betas: Adam's (β1, β2) for both players.

    Raises:
        TypeError: latent, width, discriminator_steps or a hidden size is not an int;
            spectral_norm is not a bool.
        ValueError: shape is neither such images nor vectors; latent, width,
            discriminator_steps or a hidden size is below 1; hidden is empty; r1 is not a finite
            number >= 0; betas are not two numbers in [0, 1).
    """

    name = "gan"
    likelihood = None  # implicit: samples, no density

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        latent: Optional[int] = None,
        width: int = 32,
        hidden: Sequence[int] = (256, 256, 256),
        r1: float = 1.0,
        spectral_norm: bool = False,
        discriminator_steps: int = 1,
        betas: Sequence[float] = (0.0, 0.99),
    ):
        images = len(shape) > 1
        upsamplings = _upsamplings(shape) if images else 0
        latent = (64 if images else 8) if latent is None else latent
        check_int("latent", latent, 1)
        check_int("width", width, 1)
        check_int("discriminator_steps", discriminator_steps, 1)
        if not isinstance(hidden, (list, tuple)) or not hidden:
            raise ValueError(f"hidden must be a non-empty list of layer sizes, got {hidden!r}")
        for size in hidden:
            check_int("hidden", size, 1)
        if isinstance(r1, bool) or not isinstance(r1, (int, float)) or not 0 <= r1 < math.inf:
            raise ValueError(f"r1 must be a finite number >= 0, got {r1!r}")
        if (
            not isinstance(betas, (list, tuple))
            or len(betas) != 2
            or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in betas)
        ):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not isinstance(spectral_norm, bool):
            raise TypeError(f"spectral_norm must be a bool, got {type(spectral_norm).__name__}")
        super().__init__(latent=latent)  # resolved from None
        self.shape, self.levels, self.latent = tuple(shape), levels, latent
        if images:
            self.generator = image_generator(latent, shape[0], width, upsamplings)
            self.discriminator = image_discriminator(shape[0], width, upsamplings)
        else:
            self.generator = mlp([latent, *hidden, shape[0]], _leaky_relu)
            self.discriminator = mlp([shape[0], *hidden, 1], _leaky_relu)
        if spectral_norm:
            spectrally_normalised(self.discriminator)

    def players(self) -> tuple[Player, ...]:
        """The discriminator (`discriminator_steps` steps, no EMA of its weights) then the
        generator, each owning its own network, both with the model's `betas`.

        Returns:
            The two Players.
        """
        betas = tuple(self.config["betas"])
        return (
            Player(
                "discriminator",
                ("discriminator",),
                self.config["discriminator_steps"],
                betas=betas,
                samples=False,
            ),
            Player("generator", ("generator",), betas=betas),
        )

    # ---- the losses -----------------------------------------------------------------------------

    def _fakes(self, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        return self.generator(draw((n, self.latent), generator, self.device))

    def discriminator_loss(
        self, x: torch.Tensor, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """softplus(D(fake)) + softplus(−D(real)) + r1/2 · |∇ₓD(real)|², the batch mean; the
        fakes carry no gradient to the generator.

        Args:
            x: the real batch (N, *shape): integer levels for discrete data.
            generator: draws the dequantisation noise and the fakes' latents (None: torch's
                global generator).

        Returns:
            The loss, a scalar.

        Raises:
            TypeError: x is not a tensor, or not integer levels for discrete data.
            ValueError: x is not shaped (N, *shape), or holds a level outside 0 .. levels − 1.
        """
        self.check_data(x)
        real = continuous_space(x, self.levels, generator)
        real.requires_grad_(self.config["r1"] > 0)
        with torch.no_grad():
            fake = self._fakes(len(x), generator)
        real_logits = self.discriminator(real).squeeze(1)
        loss = F.softplus(self.discriminator(fake).squeeze(1)) + F.softplus(-real_logits)
        if self.config["r1"] > 0:
            # create_graph: the penalty is differentiated again, for the discriminator's weights
            (gradient,) = torch.autograd.grad(real_logits.sum(), real, create_graph=True)
            loss = loss + self.config["r1"] / 2 * gradient.flatten(1).square().sum(1)
        return loss.mean()

    def generator_loss(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """softplus(−D(G(z))), the mean over n latents: the non-saturating loss.

        Args:
            n: how many latents.
            generator: draws them (None: torch's global generator).

        Returns:
            The loss, a scalar.
        """
        return F.softplus(-self.discriminator(self._fakes(n, generator)).squeeze(1)).mean()

    def loss(
        self,
        x: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        player: Optional[str] = None,
    ) -> torch.Tensor:
        """The loss of `player` ("discriminator" or "generator") on the real batch x.

        Args:
            x: the real batch (N, *shape); the generator's loss uses only its length.
            generator: draws the loss's randomness (None: torch's global generator).
            player: "discriminator" or "generator".

        Returns:
            The player's loss, a scalar.

        Raises:
            ValueError: player is not one of the two (None included).
        """
        check_choice("player", player, PLAYERS)
        if player == "discriminator":
            return self.discriminator_loss(x, generator)
        return self.generator_loss(len(x), generator)

    # ---- likelihood and samples -----------------------------------------------------------------

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """A GAN has no likelihood.

        Args:
            x: examples (unused).

        Raises:
            NotImplementedError: always (an implicit model defines samples, not a density).
        """
        raise NotImplementedError(
            "gan is an implicit model: it defines samples G(z), not a density, so it has no "
            "likelihood and no log_prob; judge it by its samples (gdm_engine.metrics: "
            "digit_quality, sliced_wasserstein, mmd)"
        )

    @torch.no_grad()
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n examples: G(z) for fresh latents, rounded to levels for discrete data.

        Args:
            n: how many examples.
            generator: draws the latents (None: torch's global generator).

        Returns:
            (n, *shape) examples: integer levels for discrete data.

        Raises:
            TypeError: n is not an int.
            ValueError: n is below 0.
        """
        check_int("n", n, 0)
        return data_space(self._fakes(n, generator).float(), self.levels)
