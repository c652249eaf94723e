"""Locally connected convolution benchmark: ours against the pure-PyTorch workarounds.

* unshared: ``F.unfold`` the input for every position and sample, then one einsum with the
  per-position weight (the usual locally connected layer in PyTorch).
* tiled (tile t x t): the "gathered weight" workaround (unfold, index the t*t kernels into
  one kernel per position, einsum as for unshared) and the best pure-PyTorch way we know
  (unfold once, view the positions as (i // t, i % t, j // t, j % t) and run one einsum with
  the t x t kernels, which never materialises a per-position weight).

Peak extra memory: the growth of the process's peak resident set size (VmHWM, reset through
/proc/self/clear_refs before each measured call) over its resident size before the call, so
it counts every byte touched: ATen tensors, our per-thread slabs, BLAS buffers, and the
results (outputs and gradients, allocated afresh). glibc's malloc is told (when this module is imported)
to serve every block of 64 KiB or more by mmap (mallopt M_MMAP_THRESHOLD), and free memory
is handed back before each measurement (malloc_trim), so that a call cannot hide its memory
in blocks an earlier one left behind.
"workspace" is that peak minus the bytes of the results (output, and in fwd+bwd the input,
weight and bias gradients): the memory an implementation needs beyond what it returns.
Linux only; elsewhere the memory columns are left empty.
"""

import ctypes
import gc
import os
from typing import Callable, Dict, List, Optional, Tuple  # noqa: F401

import torch
import torch.nn.functional as torch_F

from .. import functional as F
from . import median_time

# (name, input shape, out channels, kernel, padding)
CASES = [
    ("16x16x32x32->32 k3 p1", (16, 16, 32, 32), 32, 3, 1),
    ("8x64x28x28->64 k3 p1", (8, 64, 28, 28), 64, 3, 1),
]
QUICK_CASES = [("2x4x8x8->4 k3 p1", (2, 4, 8, 8), 4, 3, 1)]
TILE = 2


# ---- memory -----------------------------------------------------------------------------
def _setup_memory():
    """glibc handle with large blocks served by mmap, or None where peak RSS cannot be reset."""
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        M_MMAP_THRESHOLD = -3
        libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = None  # set up by the first measurement, not at import (mallopt changes the whole process)
_LIBC_READY = False


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_extra_bytes(fn: Callable[[], object]) -> Optional[float]:
    """Growth of the peak resident set size during one call of ``fn`` (None where unsupported)."""
    global _LIBC, _LIBC_READY
    if not _LIBC_READY:
        _LIBC, _LIBC_READY = _setup_memory(), True
    if _LIBC is None:
        return None
    gc.collect()
    _LIBC.malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # peak RSS := current RSS
    before = _status_kb("VmRSS")
    fn()
    return 1024.0 * (_status_kb("VmHWM") - before)


# ---- the workarounds ------------------------------------------------------------------------
def _out_hw(x, k, p):
    return x.shape[2] + 2 * p - k + 1, x.shape[3] + 2 * p - k + 1


def unshared_einsum(x, w, b, k, p):
    """w: (oH, oW, O, C, k, k), b: (O, oH, oW)."""
    oh, ow = _out_hw(x, k, p)
    cols = torch_F.unfold(x, k, padding=p)  # (N, C*k*k, oH*oW): every position, every sample
    y = torch.einsum("nkl,lok->nol", cols, w.reshape(oh * ow, w.shape[2], -1))
    return y.reshape(x.shape[0], -1, oh, ow) + b


def tiled_gather(x, w, b, k, p):
    """w: (t, t, O, C, k, k): one kernel per position gathered from the tile, then as unshared."""
    t = w.shape[0]
    oh, ow = _out_hw(x, k, p)
    cols = torch_F.unfold(x, k, padding=p)
    i = torch.arange(oh).view(-1, 1) % t
    j = torch.arange(ow).view(1, -1) % t
    index = (i * t + j).reshape(-1)
    per_position = w.reshape(t * t, w.shape[2], -1)[index]  # (oH*oW, O, C*k*k)
    y = torch.einsum("nkl,lok->nol", cols, per_position)
    return y.reshape(x.shape[0], -1, oh, ow) + b.view(1, -1, 1, 1)


def tiled_grouped(x, w, b, k, p):
    """One einsum over positions viewed as (i // t, i % t, j // t, j % t); needs t | output size."""
    t = w.shape[0]
    oh, ow = _out_hw(x, k, p)
    n = x.shape[0]
    cols = torch_F.unfold(x, k, padding=p).view(n, -1, oh // t, t, ow // t, t)
    y = torch.einsum("nkaibj,ijok->noaibj", cols, w.reshape(t, t, w.shape[2], -1))
    return y.reshape(n, -1, oh, ow) + b.view(1, -1, 1, 1)


# ---- the run ---------------------------------------------------------------------------------
def _measure(fn: Callable[[], torch.Tensor], params: List[torch.Tensor], mode: str, budget_s: float):
    def clear():
        for t in params:
            t.grad = None

    if mode == "forward":
        def step():
            with torch.no_grad():
                return fn()
    else:
        def step():
            clear()
            fn().sum().backward()

    seconds = median_time(step, budget_s=budget_s)
    clear()
    peak = peak_extra_bytes(step)
    results = fn().detach().numel() * 4  # float32 output
    if mode != "forward":
        results += sum(t.numel() * 4 for t in params)  # their gradients
    clear()
    return seconds, peak, results


def run(quick: bool = False) -> Tuple[List[Dict[str, object]], List[str]]:
    torch.manual_seed(0)
    rows = []
    for name, shape, out_channels, k, p in QUICK_CASES if quick else CASES:
        x = torch.randn(shape, requires_grad=True)
        oh, ow = _out_hw(x, k, p)
        c = shape[1]
        w_unshared = (0.1 * torch.randn(oh, ow, out_channels, c, k, k)).requires_grad_()
        b_unshared = torch.randn(out_channels, oh, ow, requires_grad=True)
        w_tiled = (0.1 * torch.randn(TILE, TILE, out_channels, c, k, k)).requires_grad_()
        b_tiled = torch.randn(out_channels, requires_grad=True)
        layers = {
            "unshared": ([x, w_unshared, b_unshared], {
                "ours": lambda: F.unshared_conv2d(x, w_unshared, b_unshared, padding=p),
                "unfold+einsum": lambda: unshared_einsum(x, w_unshared, b_unshared, k, p),
            }),
            f"tiled {TILE}x{TILE}": ([x, w_tiled, b_tiled], {
                "ours": lambda: F.tiled_conv2d(x, w_tiled, b_tiled, padding=p),
                "gathered einsum": lambda: tiled_gather(x, w_tiled, b_tiled, k, p),
                "grouped einsum": lambda: tiled_grouped(x, w_tiled, b_tiled, k, p),
            }),
        }
        for layer, (params, impls) in layers.items():
            reference = impls["ours"]().detach()
            for impl, fn in impls.items():
                torch.testing.assert_close(fn().detach(), reference, rtol=1e-4, atol=1e-4)
            for mode in ("forward", "fwd+bwd"):
                measured = {impl: _measure(fn, params, mode, 0.3 if quick else 2.0) for impl, fn in impls.items()}
                ours = measured["ours"][0]
                for impl, (seconds, peak, results) in measured.items():
                    row = {"case": name, "layer": layer, "pass": mode, "impl": impl, "ms": 1e3 * seconds,
                           "ours speedup": seconds / ours}
                    if peak is not None:
                        row["peak extra MB"] = peak / 1e6
                        row["workspace MB"] = max(peak - results, 0) / 1e6
                    rows.append(row)
    columns = ["case", "layer", "pass", "impl", "ms", "ours speedup", "peak extra MB", "workspace MB"]
    return rows, columns
