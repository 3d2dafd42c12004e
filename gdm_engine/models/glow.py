"""Glow (Kingma & Dhariwal, 2018): multi-scale flow of ActNorm, invertible 1x1 convolutions and
affine couplings, for images."""

from gdm_engine import nn as gnn
from gdm_engine._validation import check_fraction, check_int

from .flow import FlowModel, check_image_shape


class Glow(FlowModel):
    """The architecture of sec. 3 and fig. 2: `scales` levels, each a squeeze, `depth` steps of
    flow (ActNorm, invertible 1x1 convolution, affine coupling with Glow's sigmoid scale and a
    conditioner of `hidden` channels), then a split with a learned prior that hands half the
    channels to the next level (not after the last). Images (C, H, W) only."""

    name = "glow"

    def __init__(
        self,
        shape,
        levels=None,
        scales=3,
        depth=8,
        hidden=64,
        dropout=0.0,
        scale_map="sigmoid",
        memory_saving=False,
        iwae_samples=1,
        alpha=0.05,
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
        super().__init__(
            shape,
            levels,
            memory_saving,
            iwae_samples,
            alpha,
            scales=scales,
            depth=depth,
            hidden=hidden,
            dropout=dropout,
            scale_map=scale_map,
        )

    def layers(self, memory_saving):
        return self._level(self.shape, self.config["scales"], memory_saving)

    def _level(self, shape, levels_left, memory_saving):
        c, h, w = shape
        squeezed = (4 * c, h // 2, w // 2)
        steps = []
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
