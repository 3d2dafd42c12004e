"""The `gdm-engine` command: info, validate, bench and compile for the kernels; train, sample, eval
and results for the models; compress, decompress, score and encode with a trained one; demo, the
newcomer's tour."""
# Each command is a short function in kernels.py, training.py, uses.py or demo.py that calls
# into the engine.

import argparse
import sys

from . import demo, kernels, training, uses
from ._common import UsageError, prepare_interpreter


def build_parser():
    parser = argparse.ArgumentParser(prog="gdm-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    kernels.add_commands(sub)
    training.add_commands(sub)
    uses.add_commands(sub)
    demo.add_commands(sub)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.command != "compile":  # compile builds for GPUs, never for the interpreter
        prepare_interpreter()
    if getattr(args, "op", None):
        from gdm_engine import catalog

        if args.op not in catalog.CATALOG:
            print(
                f"gdm-engine: unknown op {args.op!r}; the catalog has {', '.join(catalog.CATALOG)}",
                file=sys.stderr,
            )
            return 2
    try:
        return {**kernels.COMMANDS, **training.COMMANDS, **uses.COMMANDS, **demo.COMMANDS}[
            args.command
        ](args)
    except UsageError as error:
        print(f"gdm-engine {args.command}: error: {error}", file=sys.stderr)
        return 2
