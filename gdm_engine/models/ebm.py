"""Energy-based model for vectors (the 2-D toys) and discrete images (the digits), trained by
contrastive divergence with short-run Langevin dynamics and a replay buffer (Du & Mordatch, 2019,
"Implicit Generation and Generalization in Energy-Based Models", sec. 3)."""

import math
from collections.abc import Sequence
from typing import Any, Optional

import torch

from gdm_engine import ops
from gdm_engine._random import draw, drawn_on
from gdm_engine._validation import check_int, check_tensor
from gdm_engine.data import Data
from gdm_engine.nn.mlp import mlp, spectrally_normalised

from .base import GenerativeModel, continuous_space, data_space


def _check_positive(name: str, value: float) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not value > 0
        or math.isinf(value)
    ):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _check_box(low: Sequence[float], high: Sequence[float], dims: int) -> None:
    """low, high: `dims` finite numbers each, low < high."""
    for name, bound in (("low", low), ("high", high)):
        if (
            not isinstance(bound, (list, tuple))
            or len(bound) != dims
            or not all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                for b in bound
            )
        ):
            raise ValueError(
                f"{name} must be a list of {dims} finite numbers (one per dimension), got {bound!r}"
            )
    if not all(a < b for a, b in zip(low, high)):
        raise ValueError(
            f"low must be below high in every dimension, got low {list(low)} and high {list(high)}"
        )


def energy_network(dims: int, hidden: Sequence[int], spectral_norm: bool) -> torch.nn.Sequential:
    """An MLP x (N, dims) -> (N, 1) with SiLU (Swish) activations, as Du & Mordatch's networks
    use; optional spectral normalisation of every linear layer (their sec. 3.3, for smoother
    energies).

    Args:
        dims: D, the input's dimensions.
        hidden: units of each hidden layer.
        spectral_norm: spectrally normalise every linear layer.

    Returns:
        The network.
    """
    network = mlp([dims, *hidden, 1], torch.nn.SiLU)
    return spectrally_normalised(network) if spectral_norm else network


class EBM(GenerativeModel):
    """p(x) ∝ exp(−E(x)) with E an MLP (`hidden` units per layer, SiLU) on vectors of
    D = prod(shape) dimensions: examples are flattened.

    Discrete data (the digits) are modelled in the dequantised continuous space, as the GAN does:
    levels x become 2 (x + u) / levels − 1 in [−1, 1) with u ~ U[0, 1) (the box is [−1, 1]^D),
    and samples are mapped back and rounded down to their level.

    Training (Du & Mordatch, 2019, sec. 3): negatives x− come from a replay buffer of
    `buffer_size` earlier chains, except a `reinit` fraction restarted from uniform noise over the
    data's box [low, high] (sec. 3.1: 5%); each runs `langevin_steps` steps of unadjusted
    Langevin dynamics x ← x − step_size/2 · ∇E(x) + sqrt(step_size · temperature) · z
    (`ops.langevin_step`; temperature 1 samples exp(−E) itself, a lower one exp(−E/T) with the
    gradient step unchanged, as Du & Mordatch's smaller noise does in high dimensions) and
    goes back into the buffer. The loss is contrastive divergence plus their regulariser,
    E(x+) − E(x−) + alpha (E(x+)² + E(x−)²), averaged over the batch, with no gradient through
    the chains. The buffer is a registered buffer, so checkpoints keep it and a resumed run
    continues its chains; the trainer's EMA copy averages the weights and copies the buffer.

    The normaliser of exp(−E) is unknown, so there is no likelihood: `likelihood` is None,
    `log_prob` raises, and the model is judged by the distance of its samples to the data
    (`gdm_engine.train.evaluate`). `sample` runs `sample_steps` Langevin steps from uniform noise
    over the box.

    Args:
        shape: the shape of one example (flattened to D = prod(shape) dimensions).
        levels: the number of levels of discrete data (>= 2); None for continuous data.
        low: the box's lower corner, D numbers (None: −1 everywhere).
        high: the box's upper corner, D numbers (None: 1 everywhere).
        hidden: units of each hidden layer of E.
        langevin_steps: Langevin steps per training step's negatives.
        step_size: the Langevin step size.
        sample_steps: Langevin steps of `sample`.
        buffer_size: chains in the replay buffer.
        reinit: the fraction of negatives restarted from noise.
        alpha: the weight of the energy regulariser.
        spectral_norm: spectrally normalise E's linear layers.
        temperature: T, the chains sample exp(−E/T).

    Raises:
        TypeError: a hidden size, langevin_steps, sample_steps or buffer_size is not an int;
            spectral_norm is not a bool.
        ValueError: low or high is not D finite numbers, or low is not below high; hidden is
            empty; a hidden size, langevin_steps, sample_steps or buffer_size is below 1;
            step_size or temperature is not a finite number > 0; reinit is not in [0, 1];
            alpha is not a finite number >= 0.
    """

    name = "ebm"
    likelihood = None  # unnormalised: no log_prob (the trainer scores samples instead)
    sample_options = frozenset({"steps"})
    low: torch.Tensor  # the box's corners (buffers, not in checkpoints), (D,)
    high: torch.Tensor
    replay: torch.Tensor  # the replay buffer of chains (buffer_size, D)

    def __init__(
        self,
        shape: Sequence[int],
        levels: Optional[int] = None,
        low: Optional[Sequence[float]] = None,
        high: Optional[Sequence[float]] = None,
        hidden: Sequence[int] = (128, 128),
        langevin_steps: int = 40,
        step_size: float = 0.01,
        sample_steps: int = 400,
        buffer_size: int = 10000,
        reinit: float = 0.05,
        alpha: float = 0.1,
        spectral_norm: bool = False,
        temperature: float = 1.0,
    ):
        dims = math.prod(shape)
        low = [-1.0] * dims if low is None else low
        high = [1.0] * dims if high is None else high
        _check_box(low, high, dims)
        if not isinstance(hidden, (list, tuple)) or not hidden:
            raise ValueError(f"hidden must be a non-empty list of layer sizes, got {hidden!r}")
        for size in hidden:
            check_int("hidden", size, 1)
        for name, value in (
            ("langevin_steps", langevin_steps),
            ("sample_steps", sample_steps),
            ("buffer_size", buffer_size),
        ):
            check_int(name, value, 1)
        _check_positive("step_size", step_size)
        _check_positive("temperature", temperature)
        if isinstance(reinit, bool) or not isinstance(reinit, (int, float)) or not 0 <= reinit <= 1:
            raise ValueError(f"reinit must be a fraction in [0, 1], got {reinit!r}")
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0 <= alpha
            or math.isinf(alpha)
        ):
            raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
        if not isinstance(spectral_norm, bool):
            raise TypeError(f"spectral_norm must be a bool, got {type(spectral_norm).__name__}")
        super().__init__(low=low, high=high)  # the box: resolved from None
        self.shape, self.levels, self.dims = tuple(shape), levels, dims
        self.network = energy_network(dims, hidden, spectral_norm)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32), persistent=False)
        self.register_buffer("replay", self._uniform(buffer_size, None, torch.device("cpu")))

    @classmethod
    def settings_for(cls, data: Data, **options: Any) -> dict[str, Any]:
        """The settings of an EBM for `data`; its box is the smallest one holding the training
        split ([−1, 1] for discrete data).

        Args:
            data: the data set.
            **options: further constructor arguments (low and high among them override the box).

        Returns:
            {argument: value}.
        """
        if data.discrete:
            return super().settings_for(data, **options)
        flat = data.train.flatten(1)
        box = {"low": flat.min(0).values.tolist(), "high": flat.max(0).values.tolist()}
        return {"shape": list(data.shape), **box, **options}

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        """E(x) for x (N, D) in the model's space (flattened examples; for discrete data in
        [−1, 1]): (N,), lower where the model puts more mass.

        Args:
            x: (N, D) floats.

        Returns:
            (N,) energies.

        Raises:
            TypeError: x is not a floating-point tensor.
            ValueError: x is not shaped (N, D).
        """
        check_tensor("x", x, ndim=2)
        if x.shape[1] != self.dims:
            raise ValueError(f"x must have shape (N, {self.dims}), got {tuple(x.shape)}")
        return self.network(x).squeeze(1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """An EBM has no likelihood (its normaliser is unknown).

        Args:
            x: examples (unused).

        Raises:
            NotImplementedError: always; use `energy` for relative scores.
        """
        raise NotImplementedError(
            "ebm's likelihood is unnormalised (exp(-E(x)) / Z with Z unknown), so it has no "
            "log_prob: use energy(x) for relative scores, or the distance of samples to the data "
            "(gdm_engine.metrics.sliced_wasserstein, mmd)"
        )

    def _uniform(
        self, n: int, generator: Optional[torch.Generator], device: torch.device
    ) -> torch.Tensor:
        """n points uniform over the box [low, high]."""
        low, high = self.low.to(device), self.high.to(device)
        return low + (high - low) * draw((n, self.dims), generator, device, uniform=True)

    def langevin(
        self, x: torch.Tensor, steps: int, generator: Optional[torch.Generator] = None
    ) -> torch.Tensor:
        """`steps` unadjusted Langevin steps on exp(−E) from x: the score −∇E(x) by autograd,
        each step a fresh graph (nothing flows back through the chain). Chains are clamped to the
        box, as Du & Mordatch clamp images to their range: outside the data the network's energy
        is an extrapolation that can fall for ever and carry chains away.

        Args:
            x: the chains' starts (N, D).
            steps: how many steps.
            generator: draws the steps' noise (None: torch's global generator).

        Returns:
            The chains' ends (N, D), detached.
        """
        # the op's step s' = step_size·T on the score −∇E/T: x − step_size/2 ∇E + sqrt(s') z
        temperature = self.config["temperature"]
        step_size = self.config["step_size"] * temperature
        for _ in range(steps):
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                score = -torch.autograd.grad(self.energy(x).sum(), x)[0]
            x = ops.langevin_step(x.detach(), score / temperature, step_size, generator=generator)
            x = torch.clamp(x, self.low, self.high)
        return x.detach()

    def _negatives(self, n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
        """n negatives: chains from the replay buffer (a `reinit` fraction restarted from noise)
        run for `langevin_steps` steps; they replace the entries they started from."""
        device = self.replay.device
        index = torch.randint(
            len(self.replay), (n,), generator=generator, device=drawn_on(generator, device)
        ).to(device)
        fresh = draw((n, 1), generator, device, uniform=True) < self.config["reinit"]
        start = torch.where(fresh, self._uniform(n, generator, device), self.replay[index])
        negatives = self.langevin(start, self.config["langevin_steps"], generator)
        self.replay[index] = negatives.to(self.replay.dtype)
        return negatives

    def loss(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Contrastive divergence with the energy regulariser (Du & Mordatch, 2019, sec. 3).

        Runs the negatives' chains and writes them back into the replay buffer.

        Args:
            x: the positives (N, *shape): integer levels for discrete data.
            generator: draws the dequantisation noise and the chains' randomness (None: torch's
                global generator).

        Returns:
            The loss, a scalar.

        Raises:
            TypeError: x is not a tensor, or not integer levels for discrete data.
            ValueError: x is not shaped (N, *shape), or holds a level outside 0 .. levels − 1.
        """
        self.check_data(x)
        x = continuous_space(x, self.levels, generator).flatten(1)
        negatives = self._negatives(len(x), generator)
        positive, negative = self.energy(x), self.energy(negatives)
        regulariser = self.config["alpha"] * (positive.square() + negative.square())
        return (positive - negative + regulariser).float().mean()

    def sample(
        self, n: int, generator: Optional[torch.Generator] = None, steps: Optional[int] = None
    ) -> torch.Tensor:
        """n examples: `steps` (default `sample_steps`) Langevin steps from uniform noise over the
        box, rounded to levels for discrete data.

        Args:
            n: how many examples.
            generator: draws the starts and the steps' noise (None: torch's global generator).
            steps: Langevin steps (None: sample_steps).

        Returns:
            (n, *shape) examples: integer levels for discrete data.

        Raises:
            TypeError: n or steps is not an int.
            ValueError: n or steps is below 0.
        """
        check_int("n", n, 0)
        steps = self.config["sample_steps"] if steps is None else steps
        check_int("steps", steps, 0)
        chains = self.langevin(self._uniform(n, generator, self.device), steps, generator)
        return data_space(chains.reshape(n, *self.shape), self.levels)
