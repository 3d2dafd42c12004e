"""Lossless coding with an autoregressive model (PixelCNN, WaveNet): every position's categorical
conditional drives an ANS coder (constriction's), so a file costs the model's exact
−log2 p(x) bits plus a few words.

The decoder is the model's sampler with the coder in place of the random draw
(``AutoregressiveModel.generate``). ANS is a stack, so the encoder pushes the positions in
reverse of the order the decoder pops them. Both sides must compute every conditional bit for bit
alike: the encoder takes the logits from the path the decoder runs, the chosen sampler with x's
values as its draws (``AutoregressiveModel.conditionals``), on the same batches.
"""

import constriction
import numpy as np
import torch

from gdm_engine.models import AutoregressiveModel

from .container import CompressionError

# float probabilities quantised to the coder's fixed-point ones, every level given at least the
# smallest representable mass (so an unlikely input still codes); perfect=False is constriction's
# fast, deterministic quantisation, the same on both sides
CATEGORICAL = constriction.stream.model.Categorical(perfect=False)


def probabilities(logits: torch.Tensor) -> np.ndarray:
    """The coder's float64 probability rows for logits (n, levels): the softmax in float64, so
    both sides round alike.

    Args:
        logits: (n, levels).

    Returns:
        (n, levels) float64 probabilities on the host.
    """
    return torch.softmax(logits.double(), -1).cpu().numpy()


def encode(model: AutoregressiveModel, x: torch.Tensor, chunk: int, cached: bool) -> np.ndarray:
    """The coder's words for x, coded `chunk` examples at a time.

    Args:
        model: the autoregressive model.
        x: levels (N, *model.shape), int64.
        chunk: examples per coding batch (the decoder batches alike).
        cached: code for the cached decoder (else the naive one).

    Returns:
        The compressed words (uint32).
    """
    coder = constriction.stream.stack.AnsCoder()
    order = model.draw_order().to(x.device)
    for batch in reversed(x.split(chunk)):  # the decoder pops the first batch first
        logits = model.conditionals(batch, cached).flatten(2)[:, :, order]  # (n, levels, T)
        # the decoder pops position by position, n examples at each: (T, n) order
        symbols = batch.flatten(1)[:, order].T.reshape(-1)
        rows = logits.permute(2, 0, 1).reshape(-1, model.levels)
        coder.encode_reverse(
            symbols.cpu().numpy().astype(np.int32), CATEGORICAL, probabilities(rows)
        )
    return coder.get_compressed()


def decode(
    model: AutoregressiveModel, words: np.ndarray, count: int, chunk: int, cached: bool
) -> torch.Tensor:
    """The examples that `encode` coded into `words`.

    Args:
        model: the autoregressive model that encoded.
        words: the compressed words.
        count: how many examples.
        chunk: examples per coding batch, as encoded.
        cached: decode with the cached sampler (else the naive one), as encoded.

    Returns:
        Levels (count, *model.shape), int64, on the model's device.

    Raises:
        CompressionError: words are left over (the file is corrupted).
    """
    coder = constriction.stream.stack.AnsCoder(words)

    def pop(logits: torch.Tensor) -> torch.Tensor:
        levels = coder.decode(CATEGORICAL, probabilities(logits))
        return torch.from_numpy(levels.astype(np.int64)).to(logits.device)

    batches = []
    for start in range(0, count, chunk):  # the batches of x.split(chunk)
        x = torch.zeros(min(chunk, count - start), *model.shape, dtype=torch.long)
        x = x.to(model.device)
        model.generate(x, pop, cached)
        batches.append(x)
    if not coder.is_empty():
        raise CompressionError("the code has words left over: the file is corrupted")
    return torch.cat(batches) if batches else torch.zeros(0, *model.shape, dtype=torch.long)
