"""The protocol every model of the engine implements."""

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any, ClassVar, Optional, TypeVar

import torch

from gdm_engine._validation import check_int, host_values
from gdm_engine.data import Data, dequantize, quantize

_Model = TypeVar("_Model", bound="GenerativeModel")


def check_range(name: str, t: torch.Tensor, count: int) -> None:
    """t's values lie in 0 .. count − 1 (levels of discrete data, class labels). They are checked
    where reading them is free, on CPU tensors (`host_values`); a GPU would stall to read them,
    so data on a GPU are checked once on the host where they are loaded (the trainer checks its
    training split before it moves it to the device) and no training step reads them.

    Args:
        name: the argument's name, for the error message.
        t: the integer values to check.
        count: how many values there are (levels, classes).

    Raises:
        ValueError: a value of t (read on the host) lies outside 0 .. count − 1.
    """
    values = host_values(t)
    if values is not None and values.size and not 0 <= values.min() <= values.max() < count:
        raise ValueError(
            f"{name} must lie in 0 .. {count - 1}, got values from "
            f"{values.min():g} to {values.max():g}"
        )


def check_levels(name: str, t: torch.Tensor, levels: int) -> None:
    """t holds levels of discrete data: an integer tensor, its values in 0 .. levels − 1 (checked
    where that is free: see `check_range`).

    Args:
        name: the argument's name, for the error message.
        t: the levels to check.
        levels: how many levels there are.

    Raises:
        TypeError: t is not a tensor, or holds floats, complex numbers or bools.
        ValueError: a value of t (read on the host) lies outside 0 .. levels − 1.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a tensor of integer levels, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer levels, got {t.dtype}")
    check_range(name, t, levels)


def continuous_space(
    x: torch.Tensor, levels: Optional[int], generator: Optional[torch.Generator]
) -> torch.Tensor:
    """Examples as a model of continuous values sees them: discrete levels dequantised into
    [−1, 1) as 2 (x + u) / levels − 1 (the convention of gdm_engine.data.dequantize), continuous
    data as floats.

    Args:
        x: examples (N, *shape): integer levels, or continuous values.
        levels: the number of levels of discrete data; None for continuous data.
        generator: draws the dequantisation noise u (None: torch's global generator).

    Returns:
        Floats of x's shape, in [−1, 1) for discrete data.
    """
    if levels is None:
        return x.float()
    return 2 * dequantize(x, levels, generator) - 1


def data_space(y: torch.Tensor, levels: Optional[int]) -> torch.Tensor:
    """The inverse of continuous_space: values in [−1, 1) rounded down to their level for
    discrete data, continuous values as they are.

    Args:
        y: values in the continuous space.
        levels: the number of levels of discrete data; None for continuous data.

    Returns:
        Integer levels of y's shape for discrete data; y itself for continuous data.
    """
    return y if levels is None else quantize((y + 1) / 2, levels)


@dataclasses.dataclass(frozen=True)
class Player:
    """A named group of a model's weights with its own loss and optimiser (a GAN's generator and
    discriminator). The trainer runs `steps` optimiser steps of each player in turn per training
    step, each on its own batch, with ``model.loss(x, generator, player=name)`` as the loss.

    `modules` names the model's submodules whose parameters the player owns (empty: all of
    them); `lr` overrides the run's peak learning rate and `betas` Adam's; `samples` says its
    weights draw samples, so the trainer keeps their EMA (the others' EMA copy is their current
    weights).

    Args:
        name: the player's name, passed to ``model.loss`` as ``player=``.
        modules: names of the model's submodules whose parameters it owns (empty: all).
        steps: optimiser steps per training step.
        lr: peak learning rate (None: the run's).
        betas: Adam's (β1, β2).
        samples: whether its weights draw samples (the trainer keeps their EMA).
    """

    name: str
    modules: tuple[str, ...] = ()
    steps: int = 1
    lr: Optional[float] = None
    betas: tuple[float, float] = (0.9, 0.999)
    samples: bool = True


def _plain(value: Any) -> Any:
    """value as a checkpoint's config holds it: tuples and lists as lists, recursively (dict
    values too); anything else as it is.

    Args:
        value: a constructor argument.

    Returns:
        The plain value.
    """
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    """`init` (a model class's own __init__), wrapped to record its arguments in
    ``self.config`` before its body runs: bound to its signature, defaults applied, ``**options``
    flattened, as plain values. The outermost call (the model's own class) records first; each
    parent's __init__ then adds what it takes that the outer ones did not name (a subclass that
    passes ``**options`` through still gets its parents' defaults), and never overwrites."""
    signature = inspect.signature(init)
    if any(p.kind is p.VAR_POSITIONAL for p in signature.parameters.values()):
        raise TypeError(
            f"{init.__qualname__} takes *args, which a config of keyword arguments cannot rebuild"
        )

    @functools.wraps(init)
    def recording_init(self: "GenerativeModel", *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
        except TypeError:  # a call that does not fit: Python's own error, from init
            init(self, *args, **kwargs)
            raise
        bound.apply_defaults()
        if "config" not in vars(self):
            # set on the instance's __dict__ directly: torch.nn.Module.__init__ has not run yet
            # (it keeps the attributes it finds there)
            object.__setattr__(self, "config", {})
        config = vars(self)["config"]
        for name, value in list(bound.arguments.items())[1:]:  # less self
            if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                for key, option in value.items():
                    config.setdefault(key, _plain(option))
            else:
                config.setdefault(name, _plain(value))
        init(self, *args, **kwargs)

    return recording_init


class GenerativeModel(torch.nn.Module):
    """A generative model: `log_prob`, `loss` and `sample`, plus what a checkpoint needs.

    * ``log_prob(x)`` -> (N,) nats per example: exact where the family allows, otherwise a lower
      bound whose docstring says so. For discrete data (integer levels) it is the log-probability
      mass of the levels, or a bound on it (see `gdm_engine.data` for the dequantisation
      convention of continuous densities).
    * ``loss(x, generator=None)`` -> scalar training objective; `forward` is the loss, so that
      DistributedDataParallel and torch.compile, which wrap `forward`, wrap the objective.
    * ``sample(n, generator=None)`` -> n examples shaped like the data; a model whose ``sample``
      takes more keywords names them in ``sample_options``.
    * ``players()`` -> the Players that train it: one, "model", owning every weight, unless the
      model has several losses (a GAN), whose ``loss`` then takes ``player=`` (the name).

    A model is rebuilt from ``name`` and ``config``, which is how checkpoints store it:
    ``type(model)(**model.config)`` builds the same model. ``config`` is derived here, once, from
    the arguments of the outermost constructor call (the model's own class), so a constructor
    never lists its arguments a second time: `__init_subclass__` wraps each subclass's
    ``__init__`` so that this call records them, bound to its signature with its defaults applied,
    a ``**options`` argument flattened into the dict, tuples made lists (plain values). It does
    so before the constructor's body runs, so the body may read ``self.config`` while it builds
    its layers. A subclass passes to ``super().__init__`` what its parents use, plus the values
    it resolved for arguments whose default is None (``hidden=None`` meaning 2 x channels),
    which replace the None in ``config``: a checkpoint states what the model was built with.

    Every model has ``shape`` (of one example) and ``levels`` (of discrete data, >= 2; None for
    continuous data), against which ``check_data`` checks what ``log_prob`` and ``loss`` are
    given. ``bound_settings`` names the attributes that set a bound's estimate
    (``iwae_samples``, ``bound_timesteps``).

    Args:
        **resolved: values to record in ``config`` over the constructor's arguments (defaults the
            subclass resolved, such as ``hidden=None`` -> 2 x channels).

    Raises:
        ValueError: config's ``levels`` is given and not an integer >= 2.
    """

    name: ClassVar[Optional[str]] = None  # a concrete model's registered name
    # what log_prob gives, in words: "exact", or the bound it is; None for a model without one
    likelihood: Optional[str] = "exact"
    # what a caller may ask of the model beyond the protocol, declared rather than inspected:
    # the keywords `sample` takes besides n and generator, and the settings of log_prob's
    # estimate that may change after training (an attribute each)
    sample_options: ClassVar[frozenset[str]] = frozenset()
    bound_settings: ClassVar[frozenset[str]] = frozenset()
    shape: tuple[int, ...]  # of one example (set by the subclass's constructor)
    levels: Optional[int]  # of discrete data; None for continuous data
    config: dict[str, Any]  # the constructor's arguments, plain values (see the class docstring)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in vars(cls):
            # type.__setattr__: mypy forbids assigning to a method, which is the point here
            type.__setattr__(cls, "__init__", _recording(vars(cls)["__init__"]))

    def __init__(self, **resolved: Any):
        # recorded by the outermost constructor (see _recording); a GenerativeModel built
        # directly has only what it is given
        config = vars(self).get("config", {})
        config.update(_plain(resolved))
        if config.get("levels") is not None:
            check_int("levels", config["levels"], 2)
        super().__init__()
        self.config = config

    def check_shape(self, x: torch.Tensor, name: str = "x") -> None:
        """x is a tensor of examples (N, *shape).

        Args:
            x: the examples to check.
            name: x's name, for the error message.

        Raises:
            TypeError: x is not a tensor.
            ValueError: x is not shaped (N, *shape).
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of examples, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.shape or x.ndim == 0:
            raise ValueError(
                f"{name} must have shape (N, {', '.join(map(str, self.shape))}), "
                f"got {tuple(x.shape)}"
            )

    def check_data(self, x: torch.Tensor) -> None:
        """Raise TypeError/ValueError naming x unless it holds examples as the model takes them:
        (N, *shape), and for discrete data integer levels in 0 .. levels − 1 (their values checked
        where that is free: see `check_range`).

        Args:
            x: the examples to check.

        Raises:
            TypeError: x is not a tensor, or holds floats (complex, bools) for discrete data.
            ValueError: x is not shaped (N, *shape), or a level lies outside 0 .. levels − 1.
        """
        self.check_shape(x)
        if self.levels is not None:
            check_levels("x", x, self.levels)

    @classmethod
    def for_data(cls: type[_Model], data: Data, **options: Any) -> _Model:
        """A model shaped for `data` (a gdm_engine.data.Data): cls(**settings_for(data, ...)).

        Args:
            data: the data set whose example shape and levels the model takes.
            **options: further constructor arguments, or what settings_for resolves into them.

        Returns:
            The model.
        """
        return cls(**cls.settings_for(data, **options))

    @classmethod
    def settings_for(cls, data: Data, **options: Any) -> dict[str, Any]:
        """The constructor arguments of a model shaped for `data` with `options`: what its
        `config` will hold, so that a resumed run can be checked against its checkpoint's.

        Args:
            data: the data set whose example shape and levels the model takes.
            **options: further constructor arguments.

        Returns:
            {argument: value}.
        """
        return {"shape": list(data.shape), "levels": data.levels, **options}

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x), nats per example: exact, or a lower bound (see `likelihood`).

        Args:
            x: examples (N, *shape).

        Returns:
            (N,) log-likelihoods.

        Raises:
            NotImplementedError: always, here; the subclasses implement it.
        """
        raise NotImplementedError

    def loss(self, x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The scalar training objective on the batch x.

        Args:
            x: examples (N, *shape).
            generator: draws the loss's randomness (None: torch's global generator).

        Returns:
            The loss, a scalar.

        Raises:
            NotImplementedError: always, here; the subclasses implement it.
        """
        raise NotImplementedError

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n examples shaped like the data.

        Args:
            n: how many examples.
            generator: draws the samples' randomness (None: torch's global generator).

        Returns:
            (n, *shape) examples: integer levels for discrete data.

        Raises:
            NotImplementedError: always, here; the subclasses implement it.
        """
        raise NotImplementedError

    def players(self) -> tuple[Player, ...]:
        """The Players that train the model.

        Returns:
            One player, "model", owning every weight (a model with several losses overrides it).
        """
        return (Player("model"),)

    def forward(
        self, x: torch.Tensor, generator: Optional[torch.Generator] = None, **options: Any
    ) -> torch.Tensor:
        """The loss (see `loss`), so that wrappers of `forward` (DDP, torch.compile) wrap it.

        Args:
            x: examples (N, *shape).
            generator: draws the loss's randomness (None: torch's global generator).
            **options: further keyword arguments of the model's `loss` (a GAN's ``player``).

        Returns:
            The loss, a scalar.
        """
        return self.loss(x, generator, **options)

    @property
    def device(self) -> torch.device:
        """The device of the model's parameters."""
        return next(self.parameters()).device
