"""Helpers for torch modules that every layer of the engine uses."""

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def evaluating(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Evaluation mode (dropout off, batch norm on its running statistics) for the duration of
    a block, then the mode the module was in, whatever the block raised.

    Args:
        module: the module.

    Yields:
        The module, in evaluation mode.
    """
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)
