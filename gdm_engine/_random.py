"""Seeds and seeded draws that several layers share: the seed a kernel draws its noise from,
and torch's draws made on the generator's device so that one seed gives the same numbers
wherever the model runs."""

import torch


def noise_seed(noise, generator):
    """The seed a kernel draws its noise from, a Python int, taken from `generator` (torch's
    default CPU generator when None) without reading the device: a CPU generator draws it on the
    host; a CUDA generator's Philox state (seed, offset) is host state too, so the seed mixes
    the two and the offset advances, as torch's own draws advance it. 0, unused, when the noise
    is given."""
    if noise is not None:
        return 0
    generator = generator if generator is not None else torch.default_generator
    if generator.device.type != "cpu":
        offset = generator.get_offset()
        generator.set_offset(offset + 4)
        return (generator.initial_seed() * 0x9E3779B1 + offset // 4) % (2**31 - 1)
    return int(torch.randint(0, 2**31 - 1, (), generator=generator))


def drawn_on(generator, device):
    """Where a seeded draw happens: on the generator's device (torch's global generator:
    `device`), so that a seeded draw is the same wherever the model runs."""
    return generator.device if generator is not None else device


def draw(shape, generator, device, uniform=False):
    """torch.randn (torch.rand with uniform) drawn where `drawn_on` says, moved to `device`."""
    sample = torch.rand if uniform else torch.randn
    return sample(shape, generator=generator, device=drawn_on(generator, device)).to(device)
