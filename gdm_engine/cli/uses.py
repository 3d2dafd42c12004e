"""What a trained checkpoint is for beyond samples: compress, decompress, score, encode.
(Inpainting is `sample --condition --mask`, in training.py.)"""

import os
import time

from ._common import INPUT_HELP, UsageError, as_examples, current_device, read_examples
from .training import _load_checkpoint


def _model(checkpoint):
    from gdm_engine import train

    saved = _load_checkpoint(checkpoint)
    return saved, train.model_from_checkpoint(saved).to(current_device())


def _writable(path, suffixes=None):
    if suffixes and not path.endswith(suffixes):
        raise UsageError(f"-o {path} must end in {' or '.join(suffixes)}")
    if not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise UsageError(f"the folder of -o {path} does not exist")


def cmd_compress(args):
    from gdm_engine import compression

    _writable(args.out)
    saved, model = _model(args.checkpoint)
    array = read_examples(args.input)
    if array.size == 0:
        raise UsageError(f"{args.input} holds no examples")
    start = time.perf_counter()
    try:
        blob = compression.compress(
            model, array, compression.checkpoint_digest(args.checkpoint), cached=not args.naive
        )
    except (TypeError, ValueError) as error:
        raise UsageError(str(error)) from None
    seconds = time.perf_counter() - start
    with open(args.out, "wb") as f:
        f.write(blob)
    print(
        f"wrote {args.out}: {array.size} values in {len(blob)} bytes, "
        f"{8 * len(blob) / array.size:.4f} bits/dim ({compression.codec(model, not args.naive)} "
        f"with {saved['model']}, step {saved['step']}), in {seconds:.2f} s"
    )
    return 0


def cmd_decompress(args):
    import numpy as np

    from gdm_engine import compression

    _writable(args.out, (".npy",))
    _, model = _model(args.checkpoint)
    with open(args.file, "rb") as f:
        blob = f.read()
    start = time.perf_counter()
    try:
        array = compression.decompress(model, blob, compression.checkpoint_digest(args.checkpoint))
    except compression.CompressionError as error:
        raise UsageError(str(error)) from None
    np.save(args.out, array)
    print(
        f"wrote {args.out}: {array.dtype} {array.shape}, checksum verified, in "
        f"{time.perf_counter() - start:.2f} s"
    )
    return 0


def cmd_score(args):
    from gdm_engine import anomaly

    if args.out:
        _writable(args.out, (".npy",))
    name, model, scores = _per_example(args, anomaly.scores)
    print(
        f"{name}: {anomaly.score_kind(model)} of {len(scores)} examples (higher is more "
        f"anomalous): mean {scores.mean():.4f}, min {scores.min():.4f}, max {scores.max():.4f}"
    )
    _save(args.out, scores)
    return 0


def cmd_encode(args):
    from gdm_engine import representations

    _writable(args.out, (".npy",))
    name, model, codes = _per_example(args, representations.encode)
    print(f"{codes.shape} codes of {name} ({representations.encoding_kind(model)})")
    _save(args.out, codes)
    return 0


def _per_example(args, compute):
    """(model name, model, compute(model, x) as numpy) for the checkpoint and INPUT of args; the
    engine's errors as usage errors."""
    saved, model = _model(args.checkpoint)
    x = as_examples(read_examples(args.input), model.device)
    try:
        return saved["model"], model, compute(model, x).cpu().numpy()
    except (TypeError, ValueError, NotImplementedError) as error:
        raise UsageError(str(error)) from None


def _save(path, array):
    import numpy as np

    if path:
        np.save(path, array)
        print(f"wrote {path}")


def _command(sub, name, help, out, out_required=True):
    """A command of INPUT, --checkpoint and -o."""
    p = sub.add_parser(name, help=help)
    p.add_argument("input", help=INPUT_HELP)
    p.add_argument("--checkpoint", required=True, help="a run's best.pt (or an export)")
    p.add_argument("-o", "--out", required=out_required, help=out)
    return p


def add_commands(sub):
    p = _command(
        sub,
        "compress",
        "lossless compression with a checkpoint's likelihood (PixelCNN, WaveNet: exact "
        "conditionals; VAE: bits back)",
        "the compressed file to write",
    )
    p.add_argument(
        "--naive",
        action="store_true",
        help="code for the naive decoder (the network recomputed at every position; slower)",
    )
    p = sub.add_parser("decompress", help="the exact array a compressed file holds")
    p.add_argument("file", help="a file written by gdm-engine compress")
    p.add_argument("--checkpoint", required=True, help="the checkpoint that compressed it")
    p.add_argument("-o", "--out", required=True, help="the .npy file to write")
    _command(
        sub,
        "score",
        "per-example anomaly scores: bits/dim (exact or a bound), an EBM's energy or a "
        "GAN's discriminator score; higher is more anomalous",
        "a .npy file for the scores",
        out_required=False,
    )
    _command(
        sub,
        "encode",
        "per-example representations (latents or features, said per model)",
        "the .npy file for the codes",
    )


COMMANDS = {
    "compress": cmd_compress,
    "decompress": cmd_decompress,
    "score": cmd_score,
    "encode": cmd_encode,
}
