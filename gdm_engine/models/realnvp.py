"""RealNVP (Dinh et al., 2017): multi-scale affine coupling flow for images."""

from collections.abc import Sequence
from typing import Optional

from gdm_engine import nn as gnn
from gdm_engine._validation import check_fraction, check_int

from .flow import FlowModel, check_image_shape


def _squeezable(shape: Sequence[int]) -> bool:
    return shape[1] % 2 == 0 and shape[2] % 2 == 0


class RealNVP(FlowModel):
    """The multi-scale architecture of sec. 3.6: each scale has `couplings` checkerboard affine
    couplings of alternating parity, a squeeze, `couplings` channel couplings, then a split that
    factors out half the channels under a learned prior (Glow's split, gdm_engine.nn.Split) and
    hands the other half to the next scale; the last scale has couplings + 1 checkerboard
    couplings. Every coupling is followed by an ActNorm (in place of RealNVP's batch
    normalisation), and its conditioner is a 3-layer convolutional network of `hidden` channels.
    Images (C, H, W) only.

    Args:
        shape: (C, H, W) of one image.
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        scales: how many scales.
        couplings: the couplings of each kind per scale.
        hidden: channels of the couplings' conditioners.
        dropout: dropout probability in the conditioners while training.
        scale_map: how the couplings bound their log-scales (gdm_engine.nn.AffineCoupling).
        memory_saving: train without storing the flow's activations.
        iwae_samples: K, the draws of u in log_prob's bound for discrete data.
        alpha: the Logit layer's margin for discrete data (gdm_engine.nn.Logit).

    Raises:
        TypeError: scales, couplings or iwae_samples is not an int, memory_saving not a bool.
        ValueError: shape is not (C, H, W); scales, couplings or iwae_samples is below 1;
            dropout is not in [0, 1).
    """

    name = "realnvp"

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        scales: int = 2,
        couplings: int = 3,
        hidden: int = 64,
        dropout: float = 0.0,
        scale_map: str = "softclamp",
        memory_saving: bool = False,
        iwae_samples: int = 1,
        alpha: float = 0.05,
    ):
        check_image_shape(self.name, shape)
        check_int("scales", scales, 1)
        check_int("couplings", couplings, 1)
        check_fraction("dropout", dropout)
        super().__init__(shape, levels, memory_saving, iwae_samples, alpha)

    def layers(self, memory_saving: bool) -> list[gnn.InvertibleLayer]:
        """The scales of sec. 3.6, data side first.

        Args:
            memory_saving: whether the nested scales train without stored activations.

        Returns:
            The layers.
        """
        return self._scale(self.shape, self.config["scales"], memory_saving)

    def _couplings(
        self, shape: Sequence[int], partition: str, count: int
    ) -> list[gnn.InvertibleLayer]:
        layers: list[gnn.InvertibleLayer] = []
        for i in range(count):
            layers += [
                gnn.AffineCoupling(
                    shape,
                    partition,
                    i % 2,
                    self.config["hidden"],
                    self.config["scale_map"],
                    self.config["dropout"],
                ),
                gnn.ActNorm(shape[0]),
            ]
        return layers

    def _scale(
        self, shape: Sequence[int], scales_left: int, memory_saving: bool
    ) -> list[gnn.InvertibleLayer]:
        couplings = self.config["couplings"]
        if scales_left == 1 or not _squeezable(shape):
            return self._couplings(shape, "checkerboard", couplings + 1)
        c, h, w = shape
        squeezed = (4 * c, h // 2, w // 2)
        kept = (squeezed[0] // 2, *squeezed[1:])
        inner = gnn.InvertibleSequential(
            *self._scale(kept, scales_left - 1, memory_saving), memory_saving=memory_saving
        )
        return [
            *self._couplings(shape, "checkerboard", couplings),
            gnn.Squeeze(),
            *self._couplings(squeezed, "channel", couplings),
            gnn.Split(squeezed, inner),
            gnn.Unsqueeze(),
        ]
