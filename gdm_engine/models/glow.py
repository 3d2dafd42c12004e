"""Glow (Kingma & Dhariwal, 2018): multi-scale flow of ActNorm, invertible 1x1 convolutions and
affine couplings, for images."""

from collections.abc import Sequence
from typing import Optional

from gdm_engine import nn as gnn
from gdm_engine._validation import check_fraction, check_int

from .flow import FlowModel, check_image_shape


class Glow(FlowModel):
    """The architecture of sec. 3 and fig. 2: `scales` levels, each a squeeze, `depth` steps of
    flow (ActNorm, invertible 1x1 convolution, affine coupling with Glow's sigmoid scale and a
    conditioner of `hidden` channels), then a split with a learned prior that hands half the
    channels to the next level (not after the last). Images (C, H, W) only.

    Args:
        shape: (C, H, W) of one image, H and W multiples of 2^scales.
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        scales: how many levels of the multi-scale architecture.
        depth: steps of flow per level.
        hidden: channels of the couplings' conditioners.
        dropout: dropout probability in the conditioners while training.
        scale_map: how the couplings bound their log-scales (gdm_engine.nn.AffineCoupling).
        memory_saving: train without storing the flow's activations.
        iwae_samples: K, the draws of u in log_prob's bound for discrete data.
        alpha: the Logit layer's margin for discrete data (gdm_engine.nn.Logit).

    Raises:
        TypeError: scales, depth or iwae_samples is not an int, memory_saving not a bool.
        ValueError: shape is not (C, H, W) or its height or width is not a multiple of
            2^scales; scales, depth or iwae_samples is below 1; dropout is not in [0, 1).
    """

    name = "glow"

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        scales: int = 3,
        depth: int = 8,
        hidden: int = 64,
        dropout: float = 0.0,
        scale_map: str = "sigmoid",
        memory_saving: bool = False,
        iwae_samples: int = 1,
        alpha: float = 0.05,
    ):
        check_image_shape(self.name, shape)
        check_int("scales", scales, 1)
        check_int("depth", depth, 1)
        check_fraction("dropout", dropout)
        c, h, w = shape
        if h % 2**scales or w % 2**scales:
            raise ValueError(
                f"scales={scales} squeezes the image {scales} times, so height and "
                f"width must be multiples of {2**scales}; got {h}x{w}"
            )
        super().__init__(shape, levels, memory_saving, iwae_samples, alpha)

    def layers(self, memory_saving: bool) -> list[gnn.InvertibleLayer]:
        """The levels of fig. 2, data side first.

        Args:
            memory_saving: whether the nested levels train without stored activations.

        Returns:
            The layers.
        """
        return self._level(self.shape, self.config["scales"], memory_saving)

    def _level(
        self, shape: Sequence[int], levels_left: int, memory_saving: bool
    ) -> list[gnn.InvertibleLayer]:
        c, h, w = shape
        squeezed = (4 * c, h // 2, w // 2)
        steps: list[gnn.InvertibleLayer] = []
        for _ in range(self.config["depth"]):
            steps += [
                gnn.ActNorm(squeezed[0]),
                gnn.InvConv1x1(squeezed[0]),
                gnn.AffineCoupling(
                    squeezed,
                    "channel",
                    0,
                    self.config["hidden"],
                    self.config["scale_map"],
                    self.config["dropout"],
                ),
            ]
        if levels_left > 1:
            kept = (squeezed[0] // 2, *squeezed[1:])
            inner = gnn.InvertibleSequential(
                *self._level(kept, levels_left - 1, memory_saving), memory_saving=memory_saving
            )
            steps.append(gnn.Split(squeezed, inner))
        return [gnn.Squeeze(), *steps, gnn.Unsqueeze()]
