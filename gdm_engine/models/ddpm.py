"""Denoising diffusion probabilistic models (Ho et al., 2020), optionally class-conditional with
classifier-free guidance (Ho & Salimans, 2022)."""

import math
from collections.abc import Callable, Sequence
from typing import Any, Optional, Union, cast

import torch

from gdm_engine import ops, sampling
from gdm_engine._random import draw, drawn_on
from gdm_engine._validation import check_choice, check_fraction, check_int
from gdm_engine.data import Data
from gdm_engine.nn.unet import ResidualMLP, UNet
from gdm_engine.reference.diffusion import PREDICTIONS

from .base import GenerativeModel, check_range

SCHEDULES = {"linear": sampling.linear_alpha_bars, "cosine": sampling.cosine_alpha_bars}
BOUND_ROWS = 2048  # (example, step) pairs the bound sends through the network at once

# denoiser(x_t, t) -> the network's prediction, or with guidance the pair (conditional,
# unconditional)
Denoiser = Callable[
    [torch.Tensor, torch.Tensor], Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]
]


class DDPM(GenerativeModel):
    """x_t = sqrt(ᾱ_t) x_0 + sqrt(1 − ᾱ_t) ε over `timesteps` steps of the `schedule` ("linear"
    of Ho et al., or "cosine" of Nichol & Dhariwal), reversed by a network that predicts
    `prediction` ("eps", "x0" or "v") from (x_t, t): a U-Net for images (C, H, W), a residual
    MLP for vectors (D,) (gdm_engine.nn.unet; `width`, `multipliers` (U-Net only), `blocks`,
    `dropout` size them). Discrete data (integer levels 0 .. L−1) are mapped to [−1, 1], levels
    k -> 2k / (L − 1) − 1; continuous data are used as they are.

    level_offsets (discrete data): the network also sees, per pixel, the noise x_t would carry if
    x_0 were the level nearest to x_t / sqrt(ᾱ_t), (x_t − sqrt(ᾱ_t) level) / sqrt(1 − ᾱ_t). At
    low noise that is the ε to predict, a sawtooth of x_t that a smooth network fits badly; the
    steps of low noise dominate the bound of discrete data, and this input takes most of their
    cost away (see the digits recipe). It is a function of x_t, so the bound stays a bound.

    loss = the simple loss of Ho et al. (eq. 14) at a uniform step, optionally min-SNR-γ weighted
    (Hang et al., 2023), through the fused op `ops.diffusion_loss`.

    With `classes` > 0 the network also takes a class label, which training replaces by a
    learned null label with probability `label_dropout`: the one network is then conditional and
    unconditional, and sampling can mix the two by classifier-free guidance.

    log_prob is the variational lower bound of Ho et al. (eq. 5); see `log_prob`.

    Args:
        shape: (C, H, W) of one image, or (D,) of one vector.
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        schedule: "linear" or "cosine".
        timesteps: T, the diffusion's steps.
        prediction: what the network predicts: "eps", "x0" or "v".
        min_snr_gamma: γ of the min-SNR-γ loss weight (None: unweighted).
        width: the network's base width.
        multipliers: the U-Net's width multiplier per resolution.
        blocks: residual blocks per resolution (U-Net) or in all (MLP).
        dropout: dropout probability in the network while training.
        classes: the number of class labels (0: unconditional).
        label_dropout: the probability that training replaces a label by the null label.
        bound_timesteps: the KL terms log_prob estimates from (None: all of them).
        level_offsets: give the network the level offsets of x_t (discrete data only).

    Raises:
        TypeError: timesteps, classes or bound_timesteps is not an int; level_offsets is not a
            bool.
        ValueError: shape is neither (C, H, W) nor (D,); schedule or prediction is not one of
            its choices; timesteps or bound_timesteps is below 1, classes below 0;
            bound_timesteps is above timesteps − 1; min_snr_gamma is not None or a number > 0;
            label_dropout is not in [0, 1).
    """

    name = "ddpm"
    sample_options = frozenset({"sampler", "steps", "labels", "guidance_scale", "progress"})
    bound_settings = frozenset({"bound_timesteps"})
    alpha_bars: torch.Tensor  # ᾱ_t of the schedule, float64 (T,) (a buffer, not in checkpoints)

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        schedule: str = "linear",
        timesteps: int = 1000,
        prediction: str = "eps",
        min_snr_gamma: Optional[float] = None,
        width: int = 64,
        multipliers: Sequence[int] = (1, 2),
        blocks: int = 2,
        dropout: float = 0.0,
        classes: int = 0,
        label_dropout: float = 0.1,
        bound_timesteps: Optional[int] = None,
        level_offsets: bool = True,
    ):
        check_choice("schedule", schedule, tuple(SCHEDULES))
        check_int("timesteps", timesteps, 1)
        check_choice("prediction", prediction, PREDICTIONS)
        if min_snr_gamma is not None and (
            isinstance(min_snr_gamma, bool)
            or not isinstance(min_snr_gamma, (int, float))
            or not min_snr_gamma > 0
        ):
            raise ValueError(f"min_snr_gamma must be None or a number > 0, got {min_snr_gamma!r}")
        check_int("classes", classes, 0)
        check_fraction("label_dropout", label_dropout)
        if not isinstance(level_offsets, bool):
            raise TypeError(f"level_offsets must be a bool, got {type(level_offsets).__name__}")
        super().__init__()
        self.shape, self.levels, self.timesteps = tuple(shape), levels, timesteps
        self.prediction, self.min_snr_gamma = prediction, min_snr_gamma
        self.classes, self.label_dropout = classes, label_dropout
        self.bound_timesteps = bound_timesteps
        self.level_offsets = level_offsets and levels is not None
        inputs = self.shape[0] * (2 if self.level_offsets else 1)
        self.network: Union[UNet, ResidualMLP]
        if len(self.shape) == 3:
            self.network = UNet(
                self.shape[0], width, tuple(multipliers), blocks, classes, dropout, inputs
            )
        elif len(self.shape) == 1:
            self.network = ResidualMLP(self.shape[0], width, blocks, classes, dropout, inputs)
        else:
            raise ValueError(
                f"ddpm models images (C, H, W) or vectors (D,), got shape {tuple(shape)}"
            )
        # float64: the bound's weights divide by 1 − ᾱ, which is 1e-4 at the first step
        alpha_bars = SCHEDULES[schedule](timesteps, dtype=torch.float64)
        self.register_buffer("alpha_bars", alpha_bars, persistent=False)

    @classmethod
    def settings_for(cls, data: Data, conditional: bool = False, **options: Any) -> dict[str, Any]:
        """The settings of a model shaped for `data`; conditional=True makes it class-conditional
        on the data's labels (classes = data.classes).

        Args:
            data: the data set.
            conditional: condition the model on the data's class labels.
            **options: further constructor arguments.

        Returns:
            {argument: value}.

        Raises:
            TypeError: conditional is not a bool.
            ValueError: conditional is True and the data have no class labels.
        """
        if not isinstance(conditional, bool):
            raise TypeError(f"conditional must be a bool, got {type(conditional).__name__}")
        if conditional:
            if not data.classes:
                raise ValueError(f"conditional=True needs class labels; {data.name} has none")
            options["classes"] = data.classes
        return super().settings_for(data, **options)

    @property
    def bound_timesteps(self) -> Optional[int]:
        """None: log_prob sums the bound's terms at every step; k: a stratified Monte-Carlo
        estimate of the KL terms from k of them. Setting it checks k (TypeError: not an int;
        ValueError: outside 1 .. timesteps − 1)."""
        return self._bound_timesteps

    @bound_timesteps.setter
    def bound_timesteps(self, k: Optional[int]) -> None:
        if k is not None:
            check_int("bound_timesteps", k, 1)
            if k > self.timesteps - 1:
                raise ValueError(
                    f"bound_timesteps must be <= timesteps - 1 "
                    f"({self.timesteps - 1}, the KL terms), got {k}"
                )
        self._bound_timesteps = k

    # read-only, computed from the configuration, where the base class's default is a plain
    # class attribute: the override is deliberate (no model sets `likelihood` on an instance)
    @property
    def likelihood(self) -> str:  # type: ignore[override]
        """What log_prob gives: the variational bound, over all steps or how many KL terms."""
        steps = (
            "all steps"
            if self.bound_timesteps is None
            else f"{self.bound_timesteps} of {self.timesteps - 1} KL terms, stratified"
        )
        return f"bound (variational, Ho et al. eq. 5, {steps})"

    # ---- data, labels and the network --------------------------------------------------------

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Levels scaled to [−1, 1]; continuous values as they are."""
        if self.levels is None:
            return x.float()
        return x.float() * (2 / (self.levels - 1)) - 1

    def _outputs(self, x0: torch.Tensor) -> torch.Tensor:
        """The inverse of _inputs: discrete data rounded back to levels."""
        return x0 if self.levels is None else self._nearest_level(x0).long()

    def _nearest_level(self, y: torch.Tensor) -> torch.Tensor:
        """The level (0 .. L − 1, as a float) nearest to y on the [−1, 1] scale."""
        assert self.levels is not None  # discrete data only: its callers check
        return ((y + 1) * ((self.levels - 1) / 2)).round().clamp(0, self.levels - 1)

    # also returns the checked labels, which a caller of the base class's check (that returns
    # None) does not read: the wider result is deliberate
    def check_data(  # type: ignore[override]
        self, x: torch.Tensor, labels: Optional[torch.Tensor] = None
    ) -> Optional[torch.Tensor]:
        """x as every model checks it (GenerativeModel.check_data), and the labels given with it
        (see `_check_labels`); returns the labels on the model's device.

        Args:
            x: examples (N, *shape): integer levels for discrete data.
            labels: None, or (N,) int64 class labels of a conditional model.

        Returns:
            The labels on the model's device, or None.

        Raises:
            TypeError: x is not a tensor (integer levels for discrete data); labels are not an
                int64 tensor of shape (N,).
            ValueError: x is not shaped (N, *shape) or holds a level outside 0 .. levels − 1;
                labels are given to an unconditional model or lie outside 0 .. classes − 1.
        """
        super().check_data(x)
        return self._check_labels(labels, len(x))

    def _check_labels(self, labels: object, n: int) -> Optional[torch.Tensor]:
        """None, or (n,) int64 class labels in 0 .. classes − 1 of a conditional model (their
        values checked where that is free: see models.base.check_range); returns them on the
        model's device."""
        if labels is None:
            return None
        if not self.classes:
            raise ValueError("labels were given to an unconditional model (classes=0)")
        if (
            not isinstance(labels, torch.Tensor)
            or labels.dtype != torch.long
            or labels.shape != (n,)
        ):
            got = (
                f"{labels.dtype} of shape {tuple(labels.shape)}"
                if isinstance(labels, torch.Tensor)
                else type(labels).__name__
            )
            raise TypeError(f"labels must be an int64 tensor of shape ({n},), got {got}")
        check_range("labels", labels, self.classes)
        return labels.to(self.alpha_bars.device)

    def denoiser(
        self, labels: Optional[torch.Tensor] = None, guidance_scale: Optional[float] = None
    ) -> Denoiser:
        """The network as the samplers call it, denoiser(x, t) -> its prediction for labels
        (None: the null label). With guidance_scale, the pair (conditional, unconditional) from
        one pass over the doubled batch [labels, null labels], which the sampler's step combines
        as u + g (c − u) (Ho & Salimans, 2022, eq. 6).

        Args:
            labels: (N,) int64 class labels, or None.
            guidance_scale: None for the plain prediction; else the guided pair is returned
                (labels then must be given).

        Returns:
            denoiser(x_t, t), t the (N,) step indices.
        """
        if guidance_scale is None:
            return lambda x, t: self._predict(x, t, labels)

        def guided(x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            assert labels is not None  # sample() refuses guidance without labels
            null = self.network.embedding.null_labels(len(x), x.device)
            both = self._predict(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, null]))
            conditional, unconditional = both.chunk(2)
            return conditional, unconditional

        return guided

    def _predict(
        self, x_t: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The network's prediction at x_t, step indices t (N,), with the level offsets as
        further input channels where the model uses them."""
        if not self.level_offsets:
            return self.network(x_t, t, labels)
        a = self.alpha_bars[t].float().view(-1, *[1] * (x_t.ndim - 1))
        nearest = self._inputs(self._nearest_level(x_t / a.sqrt()))
        offsets = (x_t - a.sqrt() * nearest) / (1 - a).sqrt()
        return self.network(torch.cat([x_t, offsets], dim=1), t, labels)

    def _predicted_x0(
        self, x_t: torch.Tensor, output: torch.Tensor, alpha_bar: torch.Tensor
    ) -> torch.Tensor:
        """x̂0 from the network's output (in float64), clipped to [−1, 1] for discrete data
        (which lie there), as Ho et al.'s sampler and bound do."""
        a = alpha_bar.view(-1, *[1] * (x_t.ndim - 1))
        x_t, output = x_t.double(), output.double()
        if self.prediction == "eps":
            x0 = (x_t - (1 - a).sqrt() * output) / a.sqrt()
        elif self.prediction == "x0":
            x0 = output
        else:  # v = sqrt(ᾱ) ε − sqrt(1 − ᾱ) x0 (Salimans & Ho, 2022)
            x0 = a.sqrt() * x_t - (1 - a).sqrt() * output
        return x0.clamp(-1, 1) if self.levels is not None else x0

    # ---- training -----------------------------------------------------------------------------

    def loss(
        self,
        x: torch.Tensor,
        generator: Optional[torch.Generator] = None,
        labels: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The simple loss (Ho et al., 2020, eq. 14; min-SNR-γ weighted when min_snr_gamma is
        set), averaged over the batch: one uniform step t per example, x_t from `ops.q_sample`,
        labels replaced by the null label with probability label_dropout.

        Args:
            x: examples (N, *shape): integer levels for discrete data.
            generator: draws t, the noise and the label dropout (None: torch's global
                generator).
            labels: (N,) int64 class labels of a conditional model, or None.

        Returns:
            The loss, a scalar.

        Raises:
            TypeError: as `check_data`, for x and labels.
            ValueError: as `check_data`, for x and labels.
        """
        labels = self.check_data(x, labels)
        x0 = self._inputs(x)
        n, device = len(x0), x0.device
        t = torch.randint(
            self.timesteps, (n,), generator=generator, device=drawn_on(generator, device)
        ).to(device)
        noise = draw(x0.shape, generator, device)
        if labels is not None and self.label_dropout > 0:
            dropped = draw((n,), generator, device, uniform=True)
            labels = torch.where(dropped < self.label_dropout, self.classes, labels)
        alpha_bar = self.alpha_bars[t].float()
        x_t = ops.q_sample(x0, alpha_bar, noise)
        output = self._predict(x_t, t, labels).float()
        return ops.diffusion_loss(
            output,
            x0,
            noise,
            alpha_bar,
            prediction=self.prediction,
            min_snr_gamma=self.min_snr_gamma,
        ).mean()

    # ---- the variational bound ----------------------------------------------------------------

    @torch.no_grad()
    def log_prob(
        self,
        x: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """A LOWER bound on log p(x) in nats per example: minus the variational bound of Ho et
        al. (2020, eq. 5),

            L = L_T + sum_{t=2..T} L_{t−1} + L_0,
            L_T     = KL(q(x_T | x_0) ‖ N(0, I)),
            L_{t−1} = KL(q(x_{t−1} | x_t, x_0) ‖ p(x_{t−1} | x_t)),  x_t ~ q(x_t | x_0),
            L_0     = −log p(x_0 | x_1),

        with p(x_{t−1} | x_t) = N(μ̃_t(x_t, x̂0), β̃_t I), the posterior mean of eq. 7 at the
        network's x̂0 and the fixed_small variance β̃_t = (1 − ᾱ_{t−1}) / (1 − ᾱ_t) β_t. L_0 is
        the discretised Gaussian decoder of eq. 13 for discrete data (bins 2 / (L − 1) wide on
        [−1, 1], the outer ones open to ±inf: a probability mass, so the bound is on log P(x)),
        or the Gaussian density for continuous data, both N(x̂0, β_1 I) (β̃_1 = 0). Each L_{t−1}
        takes one draw of x_t (from `generator`, or torch's global one).

        bound_timesteps None (default): every term is summed. k: L_0 and L_T plus an unbiased
        stratified Monte-Carlo estimate of the sum of the KL terms, from one step drawn in each
        of k near-equal ranges of steps (cheap enough to select checkpoints on validation). L_0
        is always computed: it is unlike its neighbours (negative for continuous data), and
        drawn with the weight of its range it made the estimate far noisier.
        labels=None: the unconditional model (the null label).

        Args:
            x: examples (N, *shape): integer levels for discrete data.
            labels: (N,) int64 class labels of a conditional model, or None.
            generator: draws x_t and the stratified steps (None: torch's global generator).

        Returns:
            (N,) lower bounds on log p(x) (log P(x) for discrete data), float64.

        Raises:
            TypeError: as `check_data`, for x and labels.
            ValueError: as `check_data`, for x and labels.
        """
        if self.bound_timesteps is None:
            return -self.bound_terms(x, labels, generator).sum(1)
        labels = self.check_data(x, labels)
        x0 = self._inputs(x)
        steps, sizes = self._stratified_steps(len(x0), generator, x0.device)
        first = steps.new_zeros(len(x0), 1)
        terms = self._step_terms(x0, torch.cat([first, steps], dim=1), labels, generator)
        return -(self._prior_term(x0) + terms[:, 0] + (sizes * terms[:, 1:]).sum(1))

    @torch.no_grad()
    def bound_terms(
        self,
        x: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> torch.Tensor:
        """The bound's terms in nats, (N, T + 1): column 0 is L_0, column i (1 .. T − 1) is
        L_i = KL(q(x_i | x_{i+1}, x_0) ‖ p(x_i | x_{i+1})), column T is L_T. Their sum is
        −log_prob with bound_timesteps=None.

        Args:
            x: examples (N, *shape): integer levels for discrete data.
            labels: (N,) int64 class labels of a conditional model, or None.
            generator: draws x_t for each term (None: torch's global generator).

        Returns:
            (N, T + 1) float64 terms.

        Raises:
            TypeError: as `check_data`, for x and labels.
            ValueError: as `check_data`, for x and labels.
        """
        labels = self.check_data(x, labels)
        x0 = self._inputs(x)
        steps = torch.arange(self.timesteps, device=x0.device).expand(len(x0), -1)
        return torch.cat(
            [self._step_terms(x0, steps, labels, generator), self._prior_term(x0)[:, None]], dim=1
        )

    def _prior_term(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(N(sqrt(ᾱ_T) x0, (1 − ᾱ_T) I) ‖ N(0, I)), summed over the dimensions."""
        a = self.alpha_bars[-1]
        per_dim = 0.5 * (a * x0.double().square() - a - torch.log1p(-a))
        return per_dim.flatten(1).sum(1)

    def _stratified_steps(
        self, n: int, generator: Optional[torch.Generator], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step index drawn uniformly in each of bound_timesteps near-equal ranges of the KL
        terms' indices 1 .. T − 1, per example: (n, k) indices and the (k,) range sizes that
        weight them."""
        k = self.bound_timesteps
        assert k is not None  # log_prob stratifies only where bound_timesteps is set
        edges = torch.linspace(1, self.timesteps, k + 1, dtype=torch.float64).round().long()
        edges = edges.to(device)
        sizes = edges[1:] - edges[:-1]
        u = draw((n, k), generator, device, uniform=True)
        offsets = (u.double() * sizes).long().minimum(sizes - 1)
        return edges[:-1] + offsets, sizes.double()

    def _kl_weights(self) -> torch.Tensor:
        """c_t² / (2 β̃_t) per step index, c_t = sqrt(ᾱ_{t−1}) β_t / (1 − ᾱ_t) the weight of x0 in
        the posterior mean (eq. 7), so that L_{t−1} = c_t² ‖x0 − x̂0‖² / (2 β̃_t): two Gaussians
        of equal variance β̃_t. It equals (SNR_{t−1} − SNR_t) / 2 with SNR = ᾱ / (1 − ᾱ)
        (Kingma et al., 2021). Index 0 (L_0, the decoder) gets 0."""
        a = self.alpha_bars
        a_prev = a[:-1]
        weights = a_prev * (1 - a[1:] / a_prev) / (2 * (1 - a[1:]) * (1 - a_prev))
        return torch.cat([a.new_zeros(1), weights])

    def _step_terms(
        self,
        x0: torch.Tensor,
        steps: torch.Tensor,
        labels: Optional[torch.Tensor],
        generator: Optional[torch.Generator],
    ) -> torch.Tensor:
        """The bound's terms at step indices `steps` (N, K) (0: L_0, i >= 1: L_i), (N, K) nats,
        sent through the network BOUND_ROWS (example, step) pairs at a time."""
        n, k = steps.shape
        examples = torch.arange(n, device=x0.device).repeat_interleave(k)
        flat = steps.reshape(-1)
        weights = self._kl_weights()
        terms = torch.empty(n * k, dtype=torch.float64, device=x0.device)
        for start in range(0, n * k, BOUND_ROWS):
            rows = slice(start, start + BOUND_ROWS)
            which, t = examples[rows], flat[rows]
            target = x0[which]
            x0_hat = self._denoised(target, t, None if labels is None else labels[which], generator)
            errors = (target.double() - x0_hat).square().flatten(1).sum(1)
            chunk = weights[t] * errors
            first = (t == 0).nonzero().squeeze(1)
            chunk[first] = -self._decoder_log_prob(target[first], x0_hat[first])
            terms[rows] = chunk
        return terms.view(n, k)

    def _denoised(
        self,
        x0: torch.Tensor,
        t: torch.Tensor,
        labels: Optional[torch.Tensor],
        generator: Optional[torch.Generator],
    ) -> torch.Tensor:
        """x̂0 of the network at x_t ~ q(x_t | x0), t (N,) step indices."""
        noise = draw(x0.shape, generator, x0.device)
        alpha_bar = self.alpha_bars[t]
        x_t = ops.q_sample(x0, alpha_bar.float(), noise)
        output = cast(torch.Tensor, self.denoiser(labels)(x_t, t))  # unguided: one tensor
        return self._predicted_x0(x_t, output, alpha_bar)

    def _decoder_log_prob(self, x0: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """log p(x0 | x1) per example under N(mean, β_1 I): discretised into the levels' bins
        (Ho et al., eq. 13) for discrete data, a density for continuous data."""
        std = math.sqrt(1 - self.alpha_bars[0].item())  # β_1 = 1 − ᾱ_1
        x0 = x0.double()
        if self.levels is None:
            z = (x0 - mean) / std
            return (
                (-0.5 * z.square() - math.log(std) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
            )
        half_bin = 1 / (self.levels - 1)
        upper = torch.where(x0 > 1 - half_bin, math.inf, (x0 + half_bin - mean) / std)
        lower = torch.where(x0 < -1 + half_bin, -math.inf, (x0 - half_bin - mean) / std)
        return _log_normal_mass(lower, upper).flatten(1).sum(1)

    # ---- sampling -----------------------------------------------------------------------------

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        sampler: str = "dpmpp_2m",
        steps: Optional[int] = None,
        labels: Union[int, torch.Tensor, None] = None,
        guidance_scale: Optional[float] = None,
        progress: bool = False,
    ) -> torch.Tensor:
        """n examples shaped like the data (discrete data: levels) by `sampler` (one of
        gdm_engine.sampling.SAMPLERS; `steps` for those that skip steps, default 50): by default
        DPM-Solver++(2M) in 50 model evaluations, "ddpm" for Ho et al.'s ancestral sampler over
        all `timesteps` (20 times the work; bench/sampling_efficiency.py compares them). The
        schedule goes to the sampler on the CPU, so a GPU loop reads nothing back to the host.
        labels: an int or an
        (n,) int64 tensor of classes (conditional models; None: unconditional). guidance_scale:
        classifier-free guidance towards the labels (1 is the conditional model itself).

        Args:
            n: how many examples.
            generator: draws the sampler's noise (None: torch's global generator).
            sampler: a key of gdm_engine.sampling.SAMPLERS.
            steps: the sampler's steps (None: its default).
            labels: an int class for all n, (n,) int64 classes, or None (unconditional).
            guidance_scale: classifier-free guidance's g (None: none).
            progress: show a progress bar.

        Returns:
            (n, *shape) examples: integer levels for discrete data.

        Raises:
            TypeError: n is not an int; labels are neither an int nor an int64 (n,) tensor.
            ValueError: n is below 0; labels are given to an unconditional model or lie outside
                0 .. classes − 1; guidance_scale is given without labels; sampler or steps is
                not one the samplers take.
        """
        check_int("n", n, 0)
        if isinstance(labels, int) and not isinstance(labels, bool):
            labels = torch.full((n,), labels, dtype=torch.long)
        labels = self._check_labels(labels, n)
        if guidance_scale is not None and labels is None:
            raise ValueError("guidance_scale needs labels: it guides towards a class")
        x0 = sampling.sample(
            self.denoiser(labels, guidance_scale),
            (n, *self.shape),
            SCHEDULES[self.config["schedule"]](self.timesteps),
            sampler=sampler,
            steps=steps,
            generator=generator,
            device=self.alpha_bars.device,
            prediction=self.prediction,
            guidance_scale=guidance_scale,
            progress=progress,
            **self._clip(sampler),
        )
        return self._outputs(x0)

    def _clip(self, sampler: str) -> dict[str, float]:
        """Discrete data lie in [−1, 1]: the samplers that can clip x̂0 (the ancestral ones)
        clip it there, as the bound does. The σ-form samplers take no clip."""
        if self.levels is None or sampler not in sampling.CLIPPING_SAMPLERS:
            return {}
        return {"clip": 1.0}


def _log_normal_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Φ(upper) − Φ(lower)) for standardised bin edges (±inf allowed), in float64. On the
    side of the bin away from the mean both Φ are near 1 and their difference cancels; there the
    mirrored bin (−upper, −lower), with the same mass, is taken instead, so that
    log(Φ(b) − Φ(a)) = log Φ(b) + log(1 − exp(log Φ(a) − log Φ(b))) uses lower-tail values."""
    mirror = (lower + upper) > 0
    a = torch.where(mirror, -upper, lower)
    b = torch.where(mirror, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    return log_b + torch.log1p(-torch.exp(torch.special.log_ndtr(a) - log_b))
