"""The speed table "integrations" (`gdm-engine bench --integrations`): each drop-in against the
upstream call it replaces — a scheduler's step, a k-diffusion sampler loop, a spline call — on
the same tensors, per library that is installed. Each integration module names its pairs
(`benchmark_pairs(size)`: (name, case, upstream, drop-in) zero-argument calls on tensors built
once); the calls take turns (host_time.median_us), medians of `repeats` after a warm-up.

Target: every drop-in at least as fast as its upstream (speedup >= 1.0). On a CPU both run
PyTorch code (the drop-in the references, in one call where upstream makes many small ones); on
a GPU the drop-in is one fused kernel launch.
"""

import contextlib
import importlib
from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any, Optional, Union

from gdm_engine import host_time

LIBRARIES = ("diffusers", "k_diffusion", "zuko", "nflows")
SIZES = ("tiny", "medium")
TARGET = 1.0
COLUMNS = ["library", "drop-in", "case", "upstream_us", "drop-in_us", "speedup", f">={TARGET:g}x"]


def _module(library: str) -> Optional[ModuleType]:
    """The integration module, or None where its library is not installed."""
    try:
        return importlib.import_module(f"gdm_engine.integrations.{library}")
    except ImportError:
        return None


def pairs(
    libraries: Sequence[str] = LIBRARIES, sizes: Sequence[str] = SIZES
) -> Iterator[tuple[str, str, str, Callable[[], object], Callable[[], object]]]:
    """(library, name, case, upstream, drop-in) of every installed library, at every size.

    Args:
        libraries: integration module names (LIBRARIES); those not installed are skipped.
        sizes: "tiny" and/or "medium".

    Yields:
        (library, name, case, upstream, drop-in): the library's benchmark_pairs, its name first.
    """
    for library in libraries:
        module = _module(library)
        if module is None:
            continue
        for size in sizes:
            for name, case, upstream, dropin in module.benchmark_pairs(size):
                yield library, name, case, upstream, dropin


def integration_rows(
    libraries: Sequence[str] = LIBRARIES,
    sizes: Sequence[str] = SIZES,
    repeats: int = 200,
    progress: Optional[Any] = None,
) -> list[dict[str, Union[str, float]]]:
    """One row per drop-in and case: upstream's µs, the drop-in's µs and the speedup.

    Args:
        libraries: integration module names (LIBRARIES); those not installed are skipped.
        sizes: "tiny" and/or "medium".
        repeats: timed calls of each (host_time.median_us).
        progress: a tqdm-like bar whose update(1) is called per row, or None.

    Returns:
        Rows keyed by COLUMNS.
    """
    rows: list[dict[str, Union[str, float]]] = []
    for library, name, case, upstream, dropin in pairs(libraries, sizes):
        calls = [(upstream, contextlib.nullcontext), (dropin, contextlib.nullcontext)]
        theirs, ours = host_time.median_us(calls, repeats)
        speedup = theirs / ours
        rows.append(
            {
                "library": library,
                "drop-in": name,
                "case": case,
                "upstream_us": theirs,
                "drop-in_us": ours,
                "speedup": speedup,
                f">={TARGET:g}x": "yes" if speedup >= TARGET else "no",
            }
        )
        if progress is not None:
            progress.update(1)
    return rows


def missing_libraries(libraries: Sequence[str] = LIBRARIES) -> list[str]:
    """The libraries whose integration cannot be imported here (not installed).

    Args:
        libraries: integration module names (LIBRARIES).

    Returns:
        Those of `libraries` that cannot be imported.
    """
    return [library for library in libraries if _module(library) is None]
