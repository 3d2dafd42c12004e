"""The kernel commands: info, validate, bench, compile."""

import datetime
import json
import math
import platform
import secrets
import sys

from gdm_engine.backend import installed_version as version

from ._common import (
    UsageError,
    chosen_specs,
    current_device,
    device_name,
    positive_int,
    write_json,
)


def cmd_info(args):
    import torch

    import gdm_engine
    from gdm_engine import backend, catalog

    device = current_device()
    print(f"gdm-engine {gdm_engine.__version__}")
    print(
        f"python {platform.python_version()}  torch {torch.__version__}  "
        f"triton {version('triton')}  numpy {version('numpy')}"
    )
    print(f"device: {device.type} ({device_name(device)})")
    print(
        f"backend: {backend.get_backend()}  interpreter: "
        f"{'on' if backend.interpreter_enabled() else 'off'}"
    )
    kernels = "triton" if backend.triton_installed() else "none (triton not installed)"
    for spec in catalog.CATALOG.values():
        print(f"op {spec.name:<20} family {spec.family:<16} kernel: {kernels}  reference: yes")
    _print_compile_record()
    return 0


def _print_compile_record():
    """Per kernel, the architectures `gdm-engine compile` last built it for."""
    from gdm_engine import compile as aot

    record = aot.load_record()
    if not record:
        print("kernels built for GPUs: none yet (run gdm-engine compile)")
        return
    print(f"kernels built for GPUs by gdm-engine compile ({aot.record_path()}):")
    for name, archs in sorted(record.items()):
        built = ", ".join(
            f"{arch} on {e['date']} ({e['builds']} builds, {e['failed']} failed)"
            for arch, e in sorted(archs.items())
        )
        print(f"  {name:<48} {built}")


VALIDATE_COLUMNS = ["op", "dtype", "case", "quantity", "error", "tolerance", "verdict"]
VALIDATE_SUMMARY_COLUMNS = ["op", "dtype", "checks", "failed", "worst error/tolerance"]


def cmd_validate(args):
    from tqdm import tqdm

    from gdm_engine import testing
    from gdm_engine._table import format_table

    device = current_device()
    if args.smoke:
        sizes, precisions, cases = ["tiny"], testing.check_precisions(device, smoke=True), 2
    else:
        sizes = ["tiny"] if device.type == "cpu" or args.quick else ["tiny", "medium"]
        precisions, cases = testing.check_precisions(device), None
    seed = args.seed if args.seed is not None else secrets.randbits(31)
    specs = chosen_specs(args.op)
    print(
        f"validating {', '.join(s.name for s in specs)} on {device} "
        f"({'Triton interpreter' if device.type == 'cpu' else 'compiled kernels'}), seed {seed}"
    )
    checks = []
    with tqdm(desc="cases", unit="case", disable=None, file=sys.stderr) as bar:
        for done, spec in enumerate(specs, 1):
            checks += testing.validate(
                [spec],
                sizes,
                device,
                seed,
                grads=not args.no_grad,
                progress=bar,
                precisions=precisions,
                cases_per_op=cases,
            )
            # after every op: a run cut short (a job's time limit) keeps the ops it checked
            _write_validate_report(args, seed, device, checks, specs[:done], done == len(specs))
    print(format_table([c.row() for c in checks], VALIDATE_COLUMNS))
    failed = [c for c in checks if not c.passed]
    print(f"{len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


def _write_validate_report(args, seed, device, checks, specs, complete):
    from gdm_engine._table import format_table

    summary = _validate_summary(checks)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "seed": seed,
                    "device": str(device),
                    "ops": [s.name for s in specs],
                    "complete": complete,
                    "summary": summary,
                    "checks": [c.row() for c in checks],
                },
                f,
                indent=1,
            )
    if args.markdown:
        failed = sum(row["failed"] for row in summary)
        with open(args.markdown, "w") as f:
            f.write(
                f"# gdm-engine validate{' --smoke' if args.smoke else ''}, "
                f"{device_name(device)}, {datetime.date.today().isoformat()}\n\n"
                f"seed {seed}; {len(checks) - failed} checks passed, {failed} failed"
                f"{'' if complete else f' (cut short after {specs[-1].name})'}\n\n"
                f"{format_table(summary, VALIDATE_SUMMARY_COLUMNS, markdown=True)}\n"
            )


def _validate_summary(checks):
    """One row per op and dtype: checks, failures and the worst error as a share of its
    tolerance."""
    groups = {}
    for c in checks:
        groups.setdefault((c.op, c.dtype), []).append(c)
    return [
        {
            "op": op,
            "dtype": dtype,
            "checks": len(group),
            "failed": sum(not c.passed for c in group),
            "worst error/tolerance": max(_share(c.error, c.tolerance) for c in group),
        }
        for (op, dtype), group in groups.items()
    ]


def _share(error, tolerance):
    """error / tolerance, where a tolerance of 0 allows nothing: any error is infinitely over."""
    return error / tolerance if tolerance else (math.inf if error else 0.0)


def cmd_bench(args):
    from gdm_engine import benchmark

    report = benchmark.report(
        current_device(),
        specs=chosen_specs(args.op),
        whole_engine=args.op is None,
        quick=args.quick,
        seed=args.seed,
        cases_per_op=args.cases,
        compiled=not args.no_compile,
        sections=_bench_sections(args),
    )
    if args.json:
        write_json(args.json, report)
    if args.markdown:
        benchmark.write_markdown(args.markdown, report)
    return 0


def _bench_sections(args):
    """The bench report's sections that the flags ask for."""
    from gdm_engine import benchmark

    if args.integrations:
        return {"integrations"}
    if args.host:
        return {"host"}
    if args.ops_only or args.op is not None:
        return {"ops", "host"}
    return set(benchmark.REPORT_SECTIONS)


def cmd_compile(args):
    from tqdm import tqdm

    from gdm_engine import compile as aot
    from gdm_engine._table import format_table
    from gdm_engine.kernels import INTERPRETED

    if INTERPRETED:
        raise UsageError(
            "compile builds for real GPUs, which Triton's interpreter cannot: unset "
            "TRITON_INTERPRET and run it again"
        )
    archs = _architectures(args.arch)  # a bad request is an error even where compile skips
    missing = aot.missing_triton_internals()
    if missing:
        # a skip, not a failure: the kernels may run fine on this Triton; only the offline
        # builds need what moved
        print(
            f"compile: skipped: it specialises kernels through Triton's JIT internals, which "
            f"this Triton ({version('triton')}) lacks: {', '.join(missing)} (Triton 3.6 to "
            f"3.9 have them); validate and bench do not need them",
            file=sys.stderr,
        )
        return 0
    specs = chosen_specs(args.op)
    print(
        f"recording the launches of {', '.join(s.name for s in specs)} (medium and bench "
        f"cases, forward and backward) for {', '.join(args.arch.split(','))}"
    )
    jobs = aot.plan(specs, archs, seed=args.seed)
    with tqdm(total=len(jobs), desc="builds", unit="build", disable=None, file=sys.stderr) as bar:
        builds = aot.build_all(jobs, args.workers, progress=bar)
    rows = [b.row() for b in builds]
    failed = [row for row, b in zip(rows, builds) if b.problems()]
    if args.all:
        print(format_table(rows, aot.COLUMNS))
    elif failed:
        print(format_table(failed, aot.COLUMNS))
    print(format_table(aot.summary(builds), aot.SUMMARY_COLUMNS))
    print(
        f"compile: {len(builds)} builds, {len(failed)} failed "
        f"(a failure: a build error, a spill, shared memory or a grid over the limit)"
    )
    aot.save_record(builds)
    if args.json:
        write_json(
            args.json,
            {
                "date": datetime.date.today().isoformat(),
                "triton": version("triton"),
                "builds": rows,
                "summary": aot.summary(builds),
            },
        )
    return 1 if failed else 0


def _architectures(text):
    from gdm_engine import compile as aot

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in aot.ARCHITECTURES]
    if unknown or not names:
        raise UsageError(
            f"--arch takes a comma-separated list of {', '.join(aot.ARCHITECTURES)}; got {text!r}"
        )
    return tuple(aot.ARCHITECTURES[name] for name in names)


def add_commands(sub):
    sub.add_parser("info", help="versions, device, backend and the ops with kernels")
    for name, help_text in [
        ("validate", "check every kernel against its reference"),
        ("bench", "time kernels, references and peer libraries"),
    ]:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--op", help="only this catalog op")
        p.add_argument(
            "--quick",
            action="store_true",
            help="smaller shapes" + (", two cases per op" if name == "bench" else ""),
        )
        p.add_argument("--seed", type=int, help="random seed (default: fresh each run)")
        p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
        p.add_argument("--markdown", metavar="PATH", help="also write a markdown table")
        if name == "validate":
            p.add_argument("--no-grad", action="store_true", help="forward outputs only")
            p.add_argument(
                "--smoke",
                action="store_true",
                help="the first two tiny cases of each op in fp32 (IEEE and TF32) "
                "and bf16: minutes on a GPU with no kernel built yet",
            )
        else:
            p.add_argument(
                "--cases", type=positive_int, metavar="N", help="only the first N cases of each op"
            )
            p.add_argument(
                "--no-compile",
                action="store_true",
                help="without the torch.compile provider (its graphs take minutes)",
            )
            p.add_argument(
                "--ops-only",
                action="store_true",
                help="the ops' timings and host table alone: no sampling, flow "
                "memory or sampler-loop section",
            )
            p.add_argument(
                "--integrations",
                action="store_true",
                help="only the integrations table: each drop-in (diffusers, "
                "k-diffusion, zuko, nflows) against its upstream call",
            )
            p.add_argument(
                "--host",
                action="store_true",
                help="only the host table: the CPU time of each op call and sampler "
                "step, kernels not run",
            )
    p = sub.add_parser(
        "compile",
        help="build every kernel for GPUs (no GPU needed): registers, "
        "spills, shared memory, tensor cores",
    )
    p.add_argument("--op", help="only this catalog op")
    p.add_argument(
        "--arch",
        default="sm_80,sm_90",
        help="comma-separated, of sm_80, sm_86, sm_89, sm_90 (default sm_80,sm_90)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the medium cases' shapes")
    p.add_argument("--workers", type=positive_int, help="build processes (default: one per core)")
    p.add_argument("--all", action="store_true", help="print every build, not only failures")
    p.add_argument("--json", metavar="PATH", help="also write every build as JSON")


COMMANDS = {"info": cmd_info, "validate": cmd_validate, "bench": cmd_bench, "compile": cmd_compile}
