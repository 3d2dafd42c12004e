"""Neural spline flow (Durkan et al., 2019) for vectors: 2-D toys and tabular data."""

from collections.abc import Sequence
from typing import Optional

from gdm_engine import nn as gnn
from gdm_engine._validation import check_fraction, check_int

from .flow import FlowModel


class NSF(FlowModel):
    """`transforms` blocks of ActNorm, an LU-parameterised linear map (gdm_engine.nn.InvConv1x1
    on vectors) and a rational-quadratic spline coupling of `bins` bins on [-tail_bound,
    tail_bound] whose conditioner is an MLP of two `hidden`-unit layers (the coupling variant of
    sec. 3.2 and 5.1). Data of any shape are flattened to vectors of D = prod(shape), D >= 2.

    Args:
        shape: the shape of one example (prod(shape) >= 2).
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        transforms: how many blocks.
        hidden: units of the conditioners' hidden layers.
        bins: bins of each spline.
        tail_bound: B, the splines act on [-B, B] (the identity outside).
        dropout: dropout probability in the conditioners while training.
        memory_saving: train without storing the flow's activations.
        iwae_samples: K, the draws of u in log_prob's bound for discrete data.
        alpha: the Logit layer's margin for discrete data (gdm_engine.nn.Logit).

    Raises:
        TypeError: transforms or iwae_samples is not an int, memory_saving not a bool.
        ValueError: transforms or iwae_samples is below 1; dropout is not in [0, 1);
            prod(shape) is below 2.
    """

    name = "nsf"

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        transforms: int = 4,
        hidden: int = 128,
        bins: int = 8,
        tail_bound: float = 4.0,
        dropout: float = 0.0,
        memory_saving: bool = False,
        iwae_samples: int = 1,
        alpha: float = 0.05,
    ):
        check_int("transforms", transforms, 1)
        check_fraction("dropout", dropout)
        super().__init__(shape, levels, memory_saving, iwae_samples, alpha)

    def layers(self, memory_saving: bool) -> list[gnn.InvertibleLayer]:
        """The blocks between a flattening Reshape and its inverse, data side first.

        Args:
            memory_saving: unused (NSF nests no sequences).

        Returns:
            The layers.

        Raises:
            ValueError: the data have fewer than 2 dimensions to couple.
        """
        dims = self.dims
        if dims < 2:
            raise ValueError(f"nsf needs at least 2 dimensions to couple, got shape {self.shape}")
        c = self.config
        layers: list[gnn.InvertibleLayer] = [gnn.Reshape(self.shape, (dims,))]
        for i in range(c["transforms"]):
            layers += [
                gnn.ActNorm(dims),
                gnn.InvConv1x1(dims),
                gnn.SplineCoupling(
                    (dims,), i % 2, c["hidden"], c["bins"], c["tail_bound"], c["dropout"]
                ),
            ]
        return [*layers, gnn.Reshape((dims,), self.shape)]
