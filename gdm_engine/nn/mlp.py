"""Plain multilayer perceptrons, and spectral normalisation of a network's layers: the networks of
the energy-based model and of the GAN on vectors."""

from torch import nn


def mlp(sizes, activation):
    """Linear layers of `sizes` with a fresh `activation()` between each two (none after the
    last)."""
    layers = []
    for fan_in, fan_out in zip(sizes, sizes[1:]):
        layers += [nn.Linear(fan_in, fan_out), activation()]
    return nn.Sequential(*layers[:-1])


def spectrally_normalised(network):
    """Every linear and convolutional layer of `network` (a Sequential) divided by its largest
    singular value (Miyato et al., 2018), estimated by one power iteration per training
    forward."""
    for name, layer in network.named_children():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            setattr(network, name, nn.utils.parametrizations.spectral_norm(layer))
    return network
