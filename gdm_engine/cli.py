"""The `gdm-engine` command: info, validate, bench."""

import argparse
import datetime
import json
import os
import platform
import secrets
import sys


def _prepare_interpreter():
    """Without a GPU, run the kernels through Triton's interpreter: it must be switched on before
    the kernels are first imported."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _specs(name):
    from gdm_engine import catalog

    return [catalog.get(name)] if name else list(catalog.CATALOG.values())


def _version(module):
    try:
        return __import__(module).__version__
    except ImportError:
        return "not installed"


def cmd_info(args):
    import torch

    import gdm_engine
    from gdm_engine import backend, catalog

    device = _device()
    print(f"gdm-engine {gdm_engine.__version__}")
    print(f"python {platform.python_version()}  torch {torch.__version__}  "
          f"triton {_version('triton')}  numpy {_version('numpy')}")
    print(f"device: {device.type} ({_device_name(device)})")
    print(f"backend: {backend.get_backend()}  interpreter: "
          f"{'on' if backend.interpreter_enabled() else 'off'}")
    kernels = "triton" if backend.triton_installed() else "none (triton not installed)"
    for spec in catalog.CATALOG.values():
        print(f"op {spec.name:<20} family {spec.family:<16} kernel: {kernels}  "
              f"reference: yes")
    return 0


def cmd_validate(args):
    from tqdm import tqdm

    from gdm_engine import testing
    from gdm_engine._table import format_table

    device = _device()
    sizes = ["tiny"] if device.type == "cpu" or args.quick else ["tiny", "medium"]
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    specs = _specs(args.op)
    print(f"validating {', '.join(s.name for s in specs)} on {device} "
          f"({'Triton interpreter' if device.type == 'cpu' else 'compiled kernels'}), seed {seed}")
    with tqdm(desc="cases", unit="case", disable=None, file=sys.stderr) as bar:
        checks = testing.validate(specs, sizes, device, seed, grads=not args.no_grad, progress=bar)
    rows = [c.row() for c in checks]
    print(format_table(rows, ["op", "dtype", "case", "quantity", "error", "tolerance", "verdict"]))
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        _write_json(args.json, {"seed": seed, "device": str(device), "checks": rows})
    return 1 if failed else 0


def cmd_bench(args):
    import torch
    from tqdm import tqdm

    from gdm_engine import benchmark
    from gdm_engine._table import format_table

    device = _device()
    on_gpu = device.type == "cuda"
    if on_gpu:
        size = "medium" if args.quick else "bench"
        dtypes = None
    else:
        size = "tiny" if args.quick else "medium"
        dtypes = [torch.float32]
        print("no GPU: timing the reference providers (eager, torch.compile) on the CPU in float32."
              " Kernel timings need a GPU: the interpreter's speed says nothing of the kernels'.")
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    with tqdm(desc="cases", unit="case", disable=None, file=sys.stderr) as bar:
        rows = benchmark.bench(_specs(args.op), size, device, seed, dtypes, progress=bar)
    table = format_table(rows, benchmark.COLUMNS)
    print(table)
    report = {"date": datetime.date.today().isoformat(), "device": _device_name(device),
              "torch": torch.__version__, "triton": _version("triton"), "size": size,
              "copy_bandwidth_gbs": benchmark.copy_bandwidth_gbs(str(device)), "rows": rows}
    if args.json:
        _write_json(args.json, report)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(f"# gdm-engine bench, {report['device']}, {report['date']}\n\n"
                    f"torch {report['torch']}, triton {report['triton']}, measured copy bandwidth "
                    f"{report['copy_bandwidth_gbs']:.0f} GB/s\n\n"
                    f"{format_table(rows, benchmark.COLUMNS, markdown=True)}\n")
    return 0


def _device_name(device):
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def _write_json(path, data):
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {path}")


def build_parser():
    parser = argparse.ArgumentParser(prog="gdm-engine", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, device, backend and the ops with kernels")
    for name, help_text in [("validate", "check every kernel against its reference"),
                            ("bench", "time kernels, references and peer libraries")]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--op", help="only this catalog op")
        p.add_argument("--quick", action="store_true", help="smaller shapes")
        p.add_argument("--seed", type=int, help="random seed (default: fresh each run)")
        p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
        if name == "validate":
            p.add_argument("--no-grad", action="store_true", help="forward outputs only")
        else:
            p.add_argument("--markdown", metavar="PATH", help="also write a markdown table")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    _prepare_interpreter()
    if args.command != "info" and args.op:
        from gdm_engine import catalog

        if args.op not in catalog.CATALOG:
            print(f"gdm-engine: unknown op {args.op!r}; the catalog has "
                  f"{', '.join(catalog.CATALOG)}", file=sys.stderr)
            return 2
    return {"info": cmd_info, "validate": cmd_validate, "bench": cmd_bench}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
