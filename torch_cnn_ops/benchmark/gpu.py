"""The device benchmark of ``scripts/gpu_check.sh``: each family (conv, local, pool, norm)
against torch's built-ins, or the pure-PyTorch workaround where torch has no twin, on a few
realistic shapes, forward and forward + backward, in one bounded run.

    python -m torch_cnn_ops.benchmark.gpu                      # CUDA where visible, else CPU
    python -m torch_cnn_ops.benchmark.gpu --device cpu         # wall clock, tiny shapes
    python -m torch_cnn_ops.benchmark.gpu --json out.json --budget 60

On CUDA each implementation is timed with CUDA events: warm-up calls, then rounds in which
every implementation runs in turn (interleaved, as ``compare_times`` does on the CPU), each
as a batch of calls long enough (about a millisecond) to hide the launch cost, between two
recorded events; the time is the median over rounds, and "ours/baseline" the median over
rounds of our time over the baseline's in the same round. On the CPU ``compare_times``
(wall clock) does the timing, by default with tiny shapes on one thread, so that the same
code runs on a machine without a GPU (the test suite does).

Baselines: ``F.conv2d`` (cuDNN on CUDA, with torch's default TF32 setting; the notes give our
other algorithms and cuDNN with TF32 off, as ratios to the baseline), the unfold + einsum
workarounds of ``benchmark/local.py`` for locally connected and tiled convolution, and
torch's pooling and norms.

GB/s (pooling and norms) is the compulsory traffic over the time: every tensor operand read
once and every result written once (forward: input and output; forward + backward: also
the output's gradient read and the input's gradient written; parameters, statistics and
indices not counted). "% copy" compares it with the device-to-device copy bandwidth measured
at the start of the same run (a large ``copy_``, which moves twice its size).

Every case has a time budget (``--case-budget``) and the run has one (``--budget``): cases
left when it is spent are listed as skipped. The JSON (``--json``) is rewritten after each
case, so a run cut short still leaves the rows it measured.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time
from functools import partial
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as torch_F

from .. import functional as F
from . import compare_times, format_table, machine
from .local import tiled_grouped, unshared_einsum

FAMILIES = ("conv", "local", "pool", "norm")
PASSES = ("fwd", "fwd+bwd")


# ---- timing ------------------------------------------------------------------------------------
def cuda_compare_times(fns: Dict[str, Callable[[], object]], baseline: str, budget_s: float = 0.5,
                       min_rounds: int = 3, max_rounds: int = 30,
                       target_ms: float = 1.0) -> Tuple[Dict[str, float], Dict[str, float]]:
    """``compare_times`` for CUDA: the same interleaved rounds, timed with CUDA events.

    Each function is warmed up twice, then its call count per timing (``inner``) is set so
    that a batch lasts about ``target_ms``. Each round records, for every function in turn,
    an event, ``inner`` calls and another event, then synchronizes. Returns the median time
    of one call of each function in seconds and the median over rounds of its time divided
    by the baseline's in the same round.
    """
    for fn in fns.values():
        fn()
        fn()
    torch.cuda.synchronize()
    inner = {}
    for name, fn in fns.items():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        inner[name] = max(1, min(50, math.ceil(target_ms / max(start.elapsed_time(end), 1e-3))))
    times: Dict[str, List[float]] = {name: [] for name in fns}
    began = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - began < budget_s):
        events = {}
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner[name]):
                fn()
            end.record()
            events[name] = (start, end)
        torch.cuda.synchronize()
        for name, (start, end) in events.items():
            times[name].append(start.elapsed_time(end) / 1e3 / inner[name])
        rounds += 1
    medians = {name: statistics.median(t) for name, t in times.items()}
    ratios = {name: statistics.median(a / b for a, b in zip(t, times[baseline])) for name, t in times.items()}
    return medians, ratios


def time_impls(fns: Dict[str, Callable[[], object]], baseline: str, device: str,
               budget_s: float) -> Tuple[Dict[str, float], Dict[str, float]]:
    """Median seconds and ratios to ``baseline``: CUDA events on CUDA, the wall clock elsewhere."""
    if device == "cuda":
        return cuda_compare_times(fns, baseline, budget_s=budget_s)
    return compare_times(fns, baseline, min_rounds=5, max_rounds=40, budget_s=budget_s)


def copy_bandwidth(device: str, nbytes: int, budget_s: float = 0.5) -> Dict[str, float]:
    """Device-to-device copy bandwidth: a ``copy_`` of ``nbytes`` moves 2 * nbytes."""
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    seconds = time_impls({"copy": lambda: dst.copy_(src)}, "copy", device, budget_s)[0]["copy"]
    return {"bytes": float(nbytes), "ms": 1e3 * seconds, "GB/s": 2 * nbytes / seconds / 1e9}


# ---- cases ---------------------------------------------------------------------------------
def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _label(name: str, dtype: torch.dtype) -> str:
    return f"{name} {_dtype_name(dtype)}"


def _error(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:200]}" if text else type(e).__name__


class Case:
    """One benchmark case: implementations of one computation on the same inputs.

    impls: name -> function returning the output (the baseline and ``ours`` among them);
    grads: the tensors whose gradients the forward + backward pass computes; traffic: the
    compulsory bytes of the forward pass and of forward + backward, or None (convolutions).
    """

    def __init__(self, family: str, name: str, shape: Sequence[int], dtype: torch.dtype, baseline: str,
                 impls: Dict[str, Callable[[], torch.Tensor]], grads: List[torch.Tensor],
                 traffic: Optional[Tuple[float, float]] = None, flops: Optional[float] = None):
        self.family, self.name, self.shape, self.dtype = family, name, tuple(shape), dtype
        self.baseline, self.impls, self.grads, self.traffic, self.flops = baseline, impls, grads, traffic, flops


def _rand(shape, dtype, device, grad=True, scale=1.0, fmt=torch.contiguous_format):
    t = (scale * torch.randn(shape, device=device)).to(dtype=dtype, memory_format=fmt)
    return t.requires_grad_(grad)


class _NoTF32:
    """cuDNN with TF32 off during a call (torch's default has it on for convolutions)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self):
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            return self.fn()
        finally:
            torch.backends.cudnn.allow_tf32 = saved


# (name, full shape, tiny shape, out channels, kernel, stride, padding, groups, dtype)
CONV_CASES = [
    ("resnet 64->64 k3", (32, 64, 56, 56), (2, 8, 12, 12), 64, 3, 1, 1, 1, torch.float32),
    ("resnet 128->128 k3", (32, 128, 28, 28), (2, 16, 8, 8), 128, 3, 1, 1, 1, torch.float32),
    ("resnet 256->256 k3", (32, 256, 14, 14), (2, 16, 6, 6), 256, 3, 1, 1, 1, torch.float32),
    ("1x1 64->256", (32, 64, 56, 56), (2, 8, 12, 12), 256, 1, 1, 0, 1, torch.float32),
    ("depthwise 128 k3", (32, 128, 56, 56), (2, 8, 12, 12), 128, 3, 1, 1, 128, torch.float32),
    ("resnet 64->64 k3", (32, 64, 56, 56), (2, 8, 12, 12), 64, 3, 1, 1, 1, torch.bfloat16),
]
# our algorithms besides 'auto' (which runs cuDNN on CUDA), timed for the notes of the row
CONV_ALGORITHMS = ("im2col", "direct", "winograd")


def conv_cases(device: str, tiny: bool, low_precision: bool) -> Iterator[Tuple[str, Callable[[], Case]]]:
    for name, full, small, out_channels, k, stride, padding, groups, dtype in CONV_CASES:
        if dtype != torch.float32 and not low_precision:
            continue
        shape = small if tiny else full
        if tiny:
            out_channels = shape[1] if groups > 1 else max(4, out_channels // 16)
            groups = shape[1] if groups > 1 else 1
        yield _label(name, dtype), partial(_conv_case, device, name, shape, out_channels, k, stride, padding,
                                           groups, dtype)


def _conv_case(device, name, shape, out_channels, k, stride, padding, groups, dtype) -> Case:
    x = _rand(shape, dtype, device)
    w = _rand((out_channels, shape[1] // groups, k, k), dtype, device, scale=0.1)
    b = _rand((out_channels,), dtype, device)
    baseline = "cudnn" if device == "cuda" else "torch"
    impls = {
        baseline: lambda: torch_F.conv2d(x, w, b, stride, padding, 1, groups),
        "ours": lambda: F.conv2d(x, w, b, stride, padding, 1, groups),
    }
    if device == "cuda" and dtype == torch.float32:
        impls["cudnn no-tf32"] = _NoTF32(impls[baseline])

    def algorithm(a):
        return lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm=a)

    for a in CONV_ALGORITHMS:
        if a != "winograd" or (k == 3 and stride == 1):
            impls[a] = algorithm(a)
    oh = (shape[2] + 2 * padding - k) // stride + 1
    ow = (shape[3] + 2 * padding - k) // stride + 1
    flops = 2.0 * shape[0] * out_channels * oh * ow * (shape[1] // groups) * k * k
    return Case("conv", name, shape, dtype, baseline, impls, [x, w, b], flops=flops)


# (layer, name, full shape, tiny shape, out channels, kernel, padding); baselines: the
# workarounds of benchmark/local.py (for tiled, the faster of its two)
LOCAL_CASES = [
    ("unshared", "unshared 64->64 k3", (32, 64, 28, 28), (2, 4, 8, 8), 64, 3, 1),
    ("tiled", "tiled 2x2 64->64 k3", (32, 64, 56, 56), (2, 4, 8, 8), 64, 3, 1),
]


def local_cases(device: str, tiny: bool, low_precision: bool) -> Iterator[Tuple[str, Callable[[], Case]]]:
    for layer, name, full, small, out_channels, k, p in LOCAL_CASES:
        yield _label(name, torch.float32), partial(_local_case, device, layer, name, small if tiny else full,
                                                   4 if tiny else out_channels, k, p)


def _local_case(device, layer, name, shape, out_channels, k, p) -> Case:
    x = _rand(shape, torch.float32, device)
    oh, ow = shape[2] + 2 * p - k + 1, shape[3] + 2 * p - k + 1
    c = shape[1]
    if layer == "unshared":
        w = _rand((oh, ow, out_channels, c, k, k), torch.float32, device, scale=0.1)
        b = _rand((out_channels, oh, ow), torch.float32, device)
        impls = {"unfold+einsum": lambda: unshared_einsum(x, w, b, k, p),
                 "ours": lambda: F.unshared_conv2d(x, w, b, padding=p)}
    else:
        w = _rand((2, 2, out_channels, c, k, k), torch.float32, device, scale=0.1)
        b = _rand((out_channels,), torch.float32, device)
        impls = {"grouped einsum": lambda: tiled_grouped(x, w, b, k, p),
                 "ours": lambda: F.tiled_conv2d(x, w, b, padding=p)}
    flops = 2.0 * shape[0] * out_channels * oh * ow * c * k * k
    return Case("local", name, shape, torch.float32, next(iter(impls)), impls, [x, w, b], flops=flops)


POOL_SHAPE, POOL_TINY = (32, 64, 112, 112), (2, 8, 16, 16)
# (name, kernel, stride, padding, kind, dtype)
POOL_CASES = [
    ("max k3 s2 p1", 3, 2, 1, "max", torch.float32),
    ("avg k2 s2", 2, 2, 0, "avg", torch.float32),
    ("max k3 s2 p1", 3, 2, 1, "max", torch.bfloat16),
]


def _traffic(x: torch.Tensor, out_numel: int) -> Tuple[float, float]:
    """Compulsory bytes: forward reads x and writes y; the backward also reads dy and writes dx."""
    forward = (x.numel() + out_numel) * x.element_size()
    return float(forward), float(2 * forward)


def pool_cases(device: str, tiny: bool, low_precision: bool) -> Iterator[Tuple[str, Callable[[], Case]]]:
    for name, k, s, p, kind, dtype in POOL_CASES:
        if dtype == torch.float32 or low_precision:
            yield _label(name, dtype), partial(_pool_case, device, name, POOL_TINY if tiny else POOL_SHAPE,
                                               k, s, p, kind, dtype)


def _pool_case(device, name, shape, k, s, p, kind, dtype) -> Case:
    x = _rand(shape, dtype, device)
    if kind == "max":
        impls = {"torch": lambda: torch_F.max_pool2d(x, k, s, p), "ours": lambda: F.max_pool2d(x, k, s, p)}
    else:
        impls = {"torch": lambda: torch_F.avg_pool2d(x, k, s, p), "ours": lambda: F.avg_pool2d(x, k, s, p)}
    with torch.no_grad():
        out_numel = impls["torch"]().numel()
    return Case("pool", name, shape, dtype, "torch", impls, [x], traffic=_traffic(x, out_numel))


NORM_SHAPE, NORM_TINY = (32, 256, 56, 56), (2, 16, 8, 8)
# (name, kind, dtype)
NORM_CASES = [
    ("batch_norm train", "batch", torch.float32),
    ("group_norm 32", "group", torch.float32),
    ("layer_norm C (NHWC)", "layer", torch.float32),
    ("batch_norm train", "batch", torch.bfloat16),
]


def norm_cases(device: str, tiny: bool, low_precision: bool) -> Iterator[Tuple[str, Callable[[], Case]]]:
    for name, kind, dtype in NORM_CASES:
        if dtype == torch.float32 or low_precision:
            yield _label(name, dtype), partial(_norm_case, device, name, NORM_TINY if tiny else NORM_SHAPE,
                                               kind, dtype)


def _norm_case(device, name, shape, kind, dtype) -> Case:
    c = shape[1]
    # float32 parameters (and statistics) with a low-precision input, as under autocast
    w = _rand((c,), torch.float32, device, scale=0.1)
    b = _rand((c,), torch.float32, device)
    if kind == "batch":
        x = _rand(shape, dtype, device)
        rm, rv = torch.zeros(c, device=device), torch.ones(c, device=device)
        impls = {"torch": lambda: torch_F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5),
                 "ours": lambda: F.batch_norm(x, rm, rv, w, b, True, 0.1, 1e-5)}
    elif kind == "group":
        x = _rand(shape, dtype, device)
        groups = min(32, c)
        impls = {"torch": lambda: torch_F.group_norm(x, groups, w, b, 1e-5),
                 "ours": lambda: F.group_norm(x, groups, w, b, 1e-5)}
    else:  # ConvNeXt's: over the channels of an (N, H, W, C) tensor
        x = _rand((shape[0], shape[2], shape[3], c), dtype, device)
        impls = {"torch": lambda: torch_F.layer_norm(x, (c,), w, b, 1e-5),
                 "ours": lambda: F.layer_norm(x, (c,), w, b, 1e-5)}
    return Case("norm", name, tuple(x.shape), dtype, "torch", impls, [x, w, b], traffic=_traffic(x, x.numel()))


# family -> its cases, each as (label, a function that allocates the inputs and returns the Case)
CASE_BUILDERS = {"conv": conv_cases, "local": local_cases, "pool": pool_cases, "norm": norm_cases}


# ---- the run ---------------------------------------------------------------------------------
def _steps(case: Case, mode: str) -> Dict[str, Callable[[], object]]:
    """The functions timed for ``mode``: the forward without autograd, or the forward and the
    backward of a dense random output gradient (as a layer above hands down)."""
    if mode == "fwd":
        def forward(fn):
            def step():
                with torch.no_grad():
                    return fn()
            return step

        return {name: forward(fn) for name, fn in case.impls.items()}
    with torch.no_grad():
        out = case.impls[case.baseline]()
    dy = torch.randn(out.shape, device=out.device).to(out.dtype)

    def train(fn):
        def step():
            torch.autograd.grad(fn(), case.grads, dy)
        return step

    return {name: train(fn) for name, fn in case.impls.items()}




def measure(case: Case, device: str, budget_s: float, copy_gbs: Optional[float]) -> List[Dict[str, object]]:
    """The rows of one case: one per pass, each with the baseline's and our median times, the
    ratio and, where the case has a traffic model, GB/s. Implementations other than the
    baseline and ours that fail are left out with a note; if ours or the baseline fails the
    row carries the error instead of times."""
    rows = []
    for mode in PASSES:
        row: Dict[str, object] = {"family": case.family, "case": case.name, "shape": "x".join(map(str, case.shape)),
                                  "dtype": _dtype_name(case.dtype), "pass": mode, "baseline": case.baseline}
        rows.append(row)
        try:
            steps = _steps(case, mode)
            notes = []
            for name in [n for n in steps if n not in (case.baseline, "ours")]:
                try:  # an algorithm that refuses the case (dtype, shape) is left out
                    steps[name]()
                except Exception as e:  # noqa: BLE001
                    notes.append(f"{name}: {type(e).__name__}")
                    del steps[name]
            times, ratios = time_impls(steps, case.baseline, device, budget_s)
        except Exception as e:  # noqa: BLE001
            row["error"] = _error(e)
            continue
        base, ours = times[case.baseline], times["ours"]
        row.update({"baseline ms": 1e3 * base, "ours ms": 1e3 * ours, "ours/baseline": ratios["ours"]})
        others = {name: ratios[name] for name in steps if name not in (case.baseline, "ours")}
        if others:
            row["others/baseline"] = others
            notes = [f"{name} {r:.2f}" for name, r in others.items()] + notes
        if case.traffic is not None:
            nbytes = case.traffic[0 if mode == "fwd" else 1]
            row["ours GB/s"] = nbytes / ours / 1e9
            row["baseline GB/s"] = nbytes / base / 1e9
            if copy_gbs:
                row["ours % copy"] = 100 * row["ours GB/s"] / copy_gbs
                row["baseline % copy"] = 100 * row["baseline GB/s"] / copy_gbs
        if case.flops is not None:
            work = case.flops * (1 if mode == "fwd" else 3)
            row["ours TF/s"] = work / ours / 1e12
            row["baseline TF/s"] = work / base / 1e12
        if notes:
            row["notes"] = ", ".join(notes)
    return rows


def summary_table(rows: List[Dict[str, object]]) -> str:
    """One line per case, both passes side by side: the baseline's ms and our time over it;
    notes: for pooling and norms our GB/s in the forward / forward + backward pass (and its
    share of the copy bandwidth), for convolutions our other algorithms' forward + backward
    time over the baseline's."""
    merged: Dict[Tuple, Dict[str, object]] = {}
    for r in rows:
        key = (r["family"], r["case"], r["dtype"])
        line = merged.setdefault(key, {"family": r["family"], "case": r["case"], "dtype": r["dtype"],
                                       "baseline": r["baseline"], "notes": []})
        p = "fwd" if r["pass"] == "fwd" else "f+b"
        if "error" in r:
            line[f"{p} ms"] = "error"
            line["notes"].append(f"{r['pass']}: {r['error']}"[:70])
            continue
        line[f"{p} ms"] = r["baseline ms"]
        line[f"{p} ours/base"] = r["ours/baseline"]
        if "ours GB/s" in r:
            share = f" ({r['ours % copy']:.0f}%)" if "ours % copy" in r else ""
            line["notes"].append(f"{r['ours GB/s']:.3g}{share}")
        if p == "f+b" and r.get("notes"):
            line["notes"].append(str(r["notes"]))
    for line in merged.values():
        gbs = line["family"] in ("pool", "norm") and "error" not in (line.get("fwd ms"), line.get("f+b ms"))
        line["notes"] = ("GB/s " + " / ".join(line["notes"])) if gbs and line["notes"] else ", ".join(line["notes"])
    columns = ["family", "case", "dtype", "baseline", "fwd ms", "fwd ours/base", "f+b ms", "f+b ours/base", "notes"]
    return "\n".join(line.rstrip() for line in format_table(list(merged.values()), columns).splitlines())


def _write_json(path: Optional[str], result: Dict[str, object]) -> None:
    if not path:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, path)


def run(device: str = "cuda", tiny: bool = False, families: Sequence[str] = FAMILIES, case_budget_s: float = 0.5,
        budget_s: float = 120.0, low_precision: bool = True, json_path: Optional[str] = None,
        verbose: bool = True) -> Dict[str, object]:
    """Runs the benchmark and returns its results (also written to ``json_path``, after every case)."""
    began = time.perf_counter()
    torch.manual_seed(0)
    info = machine()
    if device == "cuda":
        info["cudnn.allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul.allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    result: Dict[str, object] = {
        "machine": info, "device": device, "sizes": "tiny" if tiny else "full",
        "timer": "cuda events" if device == "cuda" else "wall clock",
        "case_budget_s": case_budget_s, "budget_s": budget_s, "rows": [], "skipped": [],
    }
    copy_bytes = (64 if tiny else 1024) * 2**20
    try:
        result["copy"] = copy_bandwidth(device, copy_bytes, budget_s=min(case_budget_s, 0.5))
    except Exception as e:  # noqa: BLE001  (e.g. out of memory: the run goes on without it)
        result["copy"] = {"error": _error(e)}
    copy_gbs = result["copy"].get("GB/s")
    if verbose and copy_gbs:
        print(f"copy bandwidth ({device}, {copy_bytes >> 20} MiB): {copy_gbs:.4g} GB/s", flush=True)
    rows: List[Dict[str, object]] = result["rows"]
    for family in families:
        for label, make in CASE_BUILDERS[family](device, tiny, low_precision):
            if time.perf_counter() - began > budget_s:
                result["skipped"].append(f"{family} {label}: the run's budget was spent")
                continue
            try:
                case = make()
            except Exception as e:  # noqa: BLE001  (e.g. out of memory)
                case = None
                new = [{"family": family, "case": label, "dtype": "", "pass": "setup", "baseline": "",
                        "error": _error(e)}]
            else:
                new = measure(case, device, case_budget_s, copy_gbs)
            rows += new
            if verbose:
                for r in new:
                    head = f"{family:5s} {r['case']:22s} {r['dtype']:8s} {r['pass']:7s}"
                    if "error" in r:
                        print(f"{head} ERROR {r['error']}", flush=True)
                    else:
                        print(f"{head} {r['baseline']} {r['baseline ms']:.4g} ms, ours {r['ours ms']:.4g} ms, "
                              f"ours/baseline {r['ours/baseline']:.3f}", flush=True)
            del case
            if device == "cuda":
                torch.cuda.empty_cache()
            result["seconds"] = time.perf_counter() - began
            result["table"] = summary_table(rows)
            _write_json(json_path, result)
    result["seconds"] = time.perf_counter() - began
    result["table"] = summary_table(rows)
    _write_json(json_path, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m torch_cnn_ops.benchmark.gpu",
        description="Times each family (conv, local, pool, norm) against torch's built-ins on CUDA (CUDA events) "
                    "or on the CPU (wall clock, tiny shapes by default), forward and forward + backward.")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="where to run: cuda, cpu, or auto (cuda when visible; default)")
    parser.add_argument("--sizes", choices=("full", "tiny"),
                        help="full (realistic shapes) or tiny; default: full on CUDA, tiny on the CPU")
    parser.add_argument("--families", default=",".join(FAMILIES),
                        help=f"comma-separated families (default: {','.join(FAMILIES)})")
    parser.add_argument("--case-budget", type=float, help="seconds of timing rounds per case and pass "
                        "(default: 0.5 on CUDA, 0.05 with tiny shapes)")
    parser.add_argument("--budget", type=float, default=120.0,
                        help="seconds for the whole run; cases left after it are skipped (default: 120)")
    parser.add_argument("--no-low-precision", action="store_true", help="leave out the bfloat16 rows")
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: 1 for tiny shapes on the CPU, "
                        "where waking threads would dominate and vary with the machine's load; else torch's)")
    parser.add_argument("--json", help="write the results to this file (rewritten after every case)")
    args = parser.parse_args(argv)

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if unknown or not families:
        parser.error(f"unknown family {unknown[0]!r}; choose from {', '.join(FAMILIES)}" if unknown
                     else "--families: none given")
    tiny = (args.sizes or ("full" if device == "cuda" else "tiny")) == "tiny"
    case_budget = args.case_budget if args.case_budget is not None else (0.05 if tiny else 0.5)
    if case_budget <= 0 or args.budget <= 0:
        parser.error("--case-budget and --budget must be positive")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be positive")
    threads = args.threads if args.threads is not None else (1 if tiny and device == "cpu" else None)
    if threads is not None:
        torch.set_num_threads(threads)

    result = run(device, tiny, families, case_budget, args.budget, not args.no_low_precision, args.json)
    copy = result["copy"]
    print(f"\n== benchmark: {device} ({result['timer']}, {result['sizes']} shapes, {result['machine']}), "
          f"{result['seconds']:.0f} s")
    if "GB/s" in copy:
        print(f"copy bandwidth: {copy['GB/s']:.4g} GB/s ({copy['bytes'] / 2**20:.0f} MiB copy_ in {copy['ms']:.3g} ms)")
    print(result["table"])
    for s in result["skipped"]:
        print("skipped:", s)
    if args.json:
        print(f"wrote {args.json}")
    errors = [r for r in result["rows"] if "error" in r]
    return 1 if errors or not result["rows"] else 0


if __name__ == "__main__":
    sys.exit(main())
