"""Neural spline flow (Durkan et al., 2019) for vectors: 2-D toys and tabular data."""

from gdm_engine import nn as gnn
from gdm_engine._validation import check_fraction, check_int

from .flow import FlowModel


class NSF(FlowModel):
    """`transforms` blocks of ActNorm, an LU-parameterised linear map (gdm_engine.nn.InvConv1x1
    on vectors) and a rational-quadratic spline coupling of `bins` bins on [-tail_bound,
    tail_bound] whose conditioner is an MLP of two `hidden`-unit layers (the coupling variant of
    sec. 3.2 and 5.1). Data of any shape are flattened to vectors of D = prod(shape), D >= 2."""

    name = "nsf"

    def __init__(
        self,
        shape,
        levels=None,
        transforms=4,
        hidden=128,
        bins=8,
        tail_bound=4.0,
        dropout=0.0,
        memory_saving=False,
        iwae_samples=1,
        alpha=0.05,
    ):
        check_int("transforms", transforms, 1)
        check_fraction("dropout", dropout)
        super().__init__(
            shape,
            levels,
            memory_saving,
            iwae_samples,
            alpha,
            transforms=transforms,
            hidden=hidden,
            bins=bins,
            tail_bound=tail_bound,
            dropout=dropout,
        )

    def layers(self, memory_saving):
        dims = self.dims
        if dims < 2:
            raise ValueError(f"nsf needs at least 2 dimensions to couple, got shape {self.shape}")
        c = self.config
        layers = [gnn.Reshape(self.shape, (dims,))]
        for i in range(c["transforms"]):
            layers += [
                gnn.ActNorm(dims),
                gnn.InvConv1x1(dims),
                gnn.SplineCoupling(
                    (dims,), i % 2, c["hidden"], c["bins"], c["tail_bound"], c["dropout"]
                ),
            ]
        return [*layers, gnn.Reshape((dims,), self.shape)]
