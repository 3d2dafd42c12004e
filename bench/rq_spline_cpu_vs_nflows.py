"""The PyTorch reference of rq_spline against nflows' `unconstrained_rational_quadratic_spline`
on a CPU, at the catalog's "bench" cases (K = 8, 2^20 elements, forward and inverse), forward
alone and forward plus backward. On a CPU `gdm-engine bench --op rq_spline` times the peer at the
smaller "medium" cases; this script is the CPU comparison at the benchmark's size.
Usage: .venv/bin/python bench/rq_spline_cpu_vs_nflows.py [--threads N]
"""

import argparse

import torch

from gdm_engine import benchmark, catalog
from gdm_engine.testing import with_tensors


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = catalog.get("rq_spline")
    device = torch.device("cpu")
    generator = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'case':<40} {'pass':<17} {'reference ms':>12} {'nflows ms':>10} {'nflows/ref':>10}")
    for case in spec.make_inputs("bench", torch.float32, device, generator):
        nflows = spec.peers["nflows"](case)
        if nflows is None:
            raise SystemExit("nflows is not installed: pip install nflows")
        grad_case = with_tensors(case, lambda t: t.detach().requires_grad_())
        nflows_grad = spec.peers["nflows"](grad_case)
        calls = {
            "forward": (benchmark._without_grad(lambda: spec.reference(*case.args, **case.kwargs)),
                        benchmark._without_grad(nflows)),
            "forward+backward": (
                benchmark._with_backward(lambda: spec.reference(*grad_case.args,
                                                                **grad_case.kwargs),
                                         grad_case.tensors()),
                benchmark._with_backward(nflows_grad, grad_case.tensors())),
        }
        for pass_, (ours, theirs) in calls.items():
            ref_ms = benchmark.time_ms(ours, device)
            peer_ms = benchmark.time_ms(theirs, device)
            print(f"{case.label:<40} {pass_:<17} {ref_ms:>12.1f} {peer_ms:>10.1f} "
                  f"{peer_ms / ref_ms:>10.2f}")


if __name__ == "__main__":
    main()
