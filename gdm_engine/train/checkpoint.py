"""Checkpoints: written atomically, loaded with weights_only=True, checked to be of this run."""

import os
from typing import Any, Optional, Union

import torch

from gdm_engine import models
from gdm_engine.models import GenerativeModel

CHECKPOINT_FORMAT = "gdm-engine checkpoint"
# 2: the best-so-far record, early-stopping count and training time; 3: one optimiser and one
# running loss per player ({"model": ...} for a one-loss model)
CHECKPOINT_VERSION = 3
CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"  # the checkpoint of the evaluation with the best validation figure
METRICS_NAME = "metrics.jsonl"


# what only resuming reads: a checkpoint without them samples and evaluates (its EMA weights)
RESUME_ONLY = ("model_state", "optimizers", "rng")


class CheckpointError(ValueError):
    """A file that is not a readable gdm-engine checkpoint."""


def save_checkpoint(state: dict[str, Any], path: Union[str, os.PathLike[str]]) -> None:
    """Write atomically: a temporary file in the same folder, flushed to disk, then renamed over
    `path`. A crash at any moment leaves the previous checkpoint or the new one, never a part.

    Args:
        state: the checkpoint (Trainer.state()).
        path: the file to write.
    """
    folder = os.path.dirname(os.path.abspath(path))
    temporary = os.path.join(folder, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def _from_version_2(state: dict[str, Any]) -> dict[str, Any]:
    """A version-2 checkpoint (one optimiser, one running loss) as version 3: both belong to the
    one-loss model's single player, "model"."""
    state = dict(state, version=3, optimizers={"model": state.pop("optimizer")})
    loss = state["running_loss"]
    state["running_loss"] = None if loss is None else {"model": loss}
    return state


def load_checkpoint(
    path: Union[str, os.PathLike[str]], map_location: Union[str, torch.device] = "cpu"
) -> dict[str, Any]:
    """A checkpoint written by the trainer, loaded with weights_only=True (no code runs); a
    version-2 checkpoint is read as version 3.

    Args:
        path: the checkpoint file.
        map_location: where its tensors are loaded (torch.load's map_location).

    Returns:
        The checkpoint's dict (Trainer.state()'s keys).

    Raises:
        CheckpointError: a missing, unreadable or foreign file, or one of another version.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(
            f"{path} is not a readable checkpoint (torch.load failed with "
            f"{type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a gdm-engine checkpoint")
    if state.get("version") == 2:
        state = _from_version_2(state)
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')}; this "
            f"gdm-engine reads versions 2 and {CHECKPOINT_VERSION}"
        )
    return state


def weights_only(state: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint without what only resuming needs (the trained weights beside the EMA ones,
    the optimisers, the random states): the EMA weights, the model's config and the run's record,
    for `sample` and `eval` (model_from_checkpoint), about a third of the file.

    Args:
        state: a loaded checkpoint.

    Returns:
        The same format, without RESUME_ONLY's entries.
    """
    return {key: value for key, value in state.items() if key not in RESUME_ONLY}


def check_same_run(state: dict[str, Any], model_name: Optional[str], data_name: str) -> None:
    """Raise CheckpointError unless the checkpoint is of this model on this data.

    Args:
        state: a loaded checkpoint.
        model_name: the run's model name (Trainer.model_name).
        data_name: the run's data set name.

    Raises:
        CheckpointError: the checkpoint's model or data differ, or it holds weights only.
    """
    if any(key not in state for key in RESUME_ONLY):
        raise CheckpointError("a checkpoint of weights only (weights_only) does not resume")
    if state["model"] != model_name or state["data"] != data_name:
        raise CheckpointError(
            f"the checkpoint is of model {state['model']!r} on data "
            f"{state['data']!r}, not {model_name!r} on {data_name!r}"
        )


def model_from_checkpoint(state: dict[str, Any], ema: bool = True) -> GenerativeModel:
    """The checkpoint's model, with its EMA weights (or the raw weights with ema=False).

    Args:
        state: a loaded checkpoint.
        ema: load the EMA weights (True) or the trained weights (False).

    Returns:
        The model, on the CPU, in eval mode (dropout off).

    Raises:
        CheckpointError: ema=False on a checkpoint of weights only.
    """
    model = models.get(state["model"])(**state["model_config"])
    if not ema and "model_state" not in state:
        raise CheckpointError(
            "a checkpoint of weights only (weights_only) has the EMA weights alone"
        )
    if ema:
        prefix = "module."
        weights = {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    else:
        weights = state["model_state"]
    model.load_state_dict(weights)
    return model.eval()  # for evaluation and sampling: dropout off
