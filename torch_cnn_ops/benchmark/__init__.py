"""Benchmark harness: medians of repeated runs, ratio against the built-in in the same run.

Each family has a module here (``conv``...) with a ``cases()`` list and a ``run()`` that
returns rows; ``benchmarks/bench_<family>.py`` and ``python -m torch_cnn_ops bench`` print them.
``gpu`` is the device benchmark of ``scripts/gpu_check.sh`` (each family on CUDA, timed with
CUDA events; ``python -m torch_cnn_ops.benchmark.gpu --device cpu`` runs it on the CPU).
"""

import json
import os
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

FAMILIES = ("conv", "local", "pool", "norm", "layers", "models")


def median_time(fn: Callable[[], object], min_repeat: int = 5, max_repeat: int = 50, budget_s: float = 1.0) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call.

    Repeats at least ``min_repeat`` times and stops after ``max_repeat`` runs or once
    ``budget_s`` seconds have been spent, whichever comes first.
    """
    fn()
    times: List[float] = []
    start = time.perf_counter()
    while len(times) < max_repeat and (len(times) < min_repeat or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def with_backward(fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    """A step that runs ``fn`` and backpropagates the sum of its result (forward + backward timed together)."""
    def step():
        fn().sum().backward()

    return step


def compare_times(fns: Dict[str, Callable[[], object]], baseline: str, min_rounds: int = 5,
                  max_rounds: int = 40, budget_s: float = 2.0) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Times several implementations of one thing, interleaved, against ``baseline``.

    Each round runs every function once, in turn, so that a slow phase of the machine
    (another process, frequency changes) hits all of them alike; each round starts one
    function later than the last, so that none always follows the same one (with glibc's
    default malloc, a function paid for the memory its predecessor had freed: the second of
    two runs of the same convolution took up to 1.4x the first's time). Returns the median
    time of each function in seconds and the median over rounds of its time divided by the
    baseline's time in the same round.
    """
    for fn in fns.values():
        fn()
    times: Dict[str, List[float]] = {name: [] for name in fns}
    order = list(fns.items())
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        shift = rounds % len(order)
        for name, fn in order[shift:] + order[:shift]:
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {
        name: statistics.median(a / b for a, b in zip(t, times[baseline])) for name, t in times.items()
    }
    return medians, ratios


def format_table(rows: List[Dict[str, object]], columns: List[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    body = [[cell(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(b[i]) for b in body)) if body else len(c) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(b, widths)) for b in body]
    return "\n".join(lines)


# glibc's malloc returns large freed blocks to the kernel (munmap, heap trimming), so every
# new tensor of tens of MB is page-faulted in again on first touch: a cost of about 0.2 ms per
# MB that both implementations pay, that varies from run to run with the heap's history
# (x1-4 on the same case), and that a caching allocator (CUDA's, or jemalloc) does not have.
# The benchmark entry points re-run themselves with freed memory kept in the process, so
# that the tables compare the kernels; set GLIBC_TUNABLES yourself to choose otherwise.
STEADY_ALLOCATOR = "glibc.malloc.mmap_threshold=2147483647:glibc.malloc.trim_threshold=17179869184"


def use_steady_allocator() -> None:
    """Re-executes the running command with STEADY_ALLOCATOR (Linux; no-op where
    GLIBC_TUNABLES is already set). Call it first thing in a benchmark's entry point."""
    if sys.platform != "linux" or "GLIBC_TUNABLES" in os.environ:
        return
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
              dict(os.environ, GLIBC_TUNABLES=STEADY_ALLOCATOR))


def machine() -> Dict[str, object]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "allocator": "steady" if os.environ.get("GLIBC_TUNABLES") == STEADY_ALLOCATOR else "default",
    }


def run_families(names: List[str], json_path: Optional[str] = None, quick: bool = False,
                 isolate: bool = False) -> Dict[str, object]:
    """Runs the benchmarks of the families `names`, prints their tables and returns the rows
    (also written to `json_path` as JSON when given).

    isolate: run each family in a fresh Python process. One family's tensors leave the heap
    in a state that slowed the next family's cases by up to 10x in one process (norm after
    conv, local and pool), so ``bench all`` isolates them.
    """
    import importlib
    import subprocess
    import tempfile

    results: Dict[str, object] = {"machine": machine()}
    for name in names:
        if isolate and len(names) > 1:
            with tempfile.TemporaryDirectory() as tmp:
                part = os.path.join(tmp, f"{name}.json")
                cmd = [sys.executable, "-m", "torch_cnn_ops", "bench", name, "--json", part]
                subprocess.run(cmd + (["--quick"] if quick else []), check=True)
                with open(part) as f:
                    results[name] = json.load(f)[name]
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        rows, columns = module.run(quick=quick)
        print(f"\n== {name} ({results['machine']}) ==")
        print(format_table(rows, columns))
        results[name] = rows
    if json_path:
        with open(json_path, "w") as f:
            json.dump(results, f, indent=2)
        print(f"\nwrote {json_path}")
    return results
