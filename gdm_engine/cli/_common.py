"""What every command shares: the device, the catalog's ops, usage errors, JSON reports and
argparse types."""

import argparse
import json
import os


def prepare_interpreter():
    """Without a GPU, run the kernels through Triton's interpreter: it must be switched on before
    the kernels are first imported."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def current_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def chosen_specs(name):
    from gdm_engine import catalog

    return [catalog.get(name)] if name else list(catalog.CATALOG.values())


class UsageError(Exception):
    """A request the command cannot carry out as given: exit status 2, nothing written."""


def device_name(device):
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {path}")


def positive(kind):
    """An argparse type: a number of `kind` (int or float) above zero."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
        return value

    return parse


positive_int, positive_float = positive(int), positive(float)


def load_data(name):
    from gdm_engine import data

    try:
        return data.load(name)
    except (ValueError, OSError) as error:
        raise UsageError(str(error)) from None


INPUT_HELP = (
    "examples of integer levels: a .npy file, an .npz file (its array x, or its only array), "
    "or DATA:SPLIT such as digits:test"
)


def read_examples(spec):
    """The examples a command's INPUT names (see INPUT_HELP), as a numpy array."""
    import numpy as np

    name, sep, split = spec.partition(":")
    if sep and not os.path.exists(spec):
        if split not in ("train", "valid", "test"):
            raise UsageError(f"{spec}: the split must be train, valid or test")
        return getattr(load_data(name), split).numpy()
    if not os.path.isfile(spec):
        raise UsageError(f"{spec}: no such file (or DATA:SPLIT)")
    if spec.endswith(".npy"):
        return np.load(spec)
    if spec.endswith(".npz"):
        with np.load(spec) as archive:
            names = ["x"] if "x" in archive.files else archive.files
            if len(names) != 1:
                raise UsageError(f"{spec}: name its array x; it holds {sorted(archive.files)}")
            return archive[names[0]]
    raise UsageError(f"{spec}: INPUT must be a .npy or .npz file, or DATA:SPLIT")


def as_examples(array, device):
    """An INPUT's array as a model takes it, on `device`: integer levels as int64, anything else
    as float32 (the model's checks then say what it needs)."""
    import numpy as np
    import torch

    kind = np.int64 if np.issubdtype(array.dtype, np.integer) else np.float32
    return torch.from_numpy(array.astype(kind)).to(device)
