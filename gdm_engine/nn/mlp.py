"""Plain multilayer perceptrons, and spectral normalisation of a network's layers: the networks of
the energy-based model and of the GAN on vectors."""

from collections.abc import Callable, Sequence
from typing import TypeVar

from torch import nn

_Network = TypeVar("_Network", bound=nn.Module)


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module]) -> nn.Sequential:
    """Linear layers of `sizes` with a fresh `activation()` between each two (none after the
    last).

    Args:
        sizes: the widths, input first, output last: len(sizes) - 1 linear layers.
        activation: makes an activation module, e.g. nn.ReLU or nn.SiLU.

    Returns:
        The nn.Sequential of the linear layers and activations.
    """
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return nn.Sequential(*layers[:-1])


def spectrally_normalised(network: _Network) -> _Network:
    """Every linear and convolutional layer of `network` (a Sequential) divided by its largest
    singular value (Miyato et al., 2018), estimated by one power iteration per training
    forward.

    Args:
        network: its direct children nn.Linear and nn.Conv2d are normalised, in place.

    Returns:
        `network` itself, its layers replaced by their spectrally normalised versions.
    """
    for name, layer in network.named_children():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            setattr(network, name, nn.utils.parametrizations.spectral_norm(layer))
    return network
