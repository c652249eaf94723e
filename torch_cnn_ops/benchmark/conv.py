"""Convolution benchmark: ours (each algorithm) against torch.nn.functional.conv2d.

Ratios are medians over interleaved rounds (see ``compare_times``); below 1 is faster than torch.
"""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as torch_F

from .. import functional as F
from . import compare_times, with_backward

# (name, input shape, out channels, kernel, stride, padding, groups); "CL": channels_last
# input and weight
CASES = [
    ("3->16 k5 p2", (32, 3, 32, 32), 16, 5, 1, 2, 1),
    ("64->64 k3 p1", (8, 64, 56, 56), 64, 3, 1, 1, 1),
    ("64->64 k3 p1 CL", (8, 64, 56, 56), 64, 3, 1, 1, 1),
    ("128->128 k3 p1", (8, 128, 28, 28), 128, 3, 1, 1, 1),
    ("256->256 k3 p1", (8, 256, 14, 14), 256, 3, 1, 1, 1),
    ("64->256 k1", (8, 64, 56, 56), 256, 1, 1, 0, 1),
    ("64->128 k1 s2", (8, 64, 56, 56), 128, 1, 2, 0, 1),
    ("depthwise 32 k3", (8, 32, 112, 112), 32, 3, 1, 1, 32),
    ("grouped 64 g8 k3", (8, 64, 56, 56), 64, 3, 1, 1, 8),
]
QUICK_CASES = [("3->8 k3 p1", (4, 3, 16, 16), 8, 3, 1, 1, 1), ("depthwise 8 k3", (2, 8, 32, 32), 8, 3, 1, 1, 8)]
IMPLS = ("auto", "direct", "im2col", "shifted", "aten", "winograd", "winograd_2x2", "winograd_4x4")


def _flops(shape, out_channels, kernel, stride, padding, groups) -> float:
    n, c, h, w = shape
    oh = (h + 2 * padding - kernel) // stride + 1
    ow = (w + 2 * padding - kernel) // stride + 1
    return 2.0 * n * out_channels * oh * ow * (c // groups) * kernel * kernel


def _no_grad(fn):
    def step():
        with torch.no_grad():
            fn()

    return step


def run(quick: bool = False) -> Tuple[List[Dict[str, object]], List[str]]:
    torch.manual_seed(0)
    rows = []
    for name, shape, out_channels, kernel, stride, padding, groups in QUICK_CASES if quick else CASES:
        fmt = torch.channels_last if name.endswith(" CL") else torch.contiguous_format
        x = torch.randn(shape).to(memory_format=fmt).requires_grad_()
        w = torch.randn(out_channels, shape[1] // groups, kernel, kernel).to(memory_format=fmt).requires_grad_()
        b = torch.randn(out_channels, requires_grad=True)
        flops = _flops(shape, out_channels, kernel, stride, padding, groups)
        impls = {
            "torch": lambda: torch_F.conv2d(x, w, b, stride, padding, 1, groups),
            "auto": lambda: F.conv2d(x, w, b, stride, padding, 1, groups),
            "direct": lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm="direct"),
            "im2col": lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm="im2col"),
            "aten": lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm="aten"),
        }
        if stride == 1:  # the shifted algorithm needs unit stride
            impls["shifted"] = lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm="shifted")
        if stride == 1 and kernel == 3:  # where Winograd applies
            impls["winograd"] = lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm="winograd")
            impls["winograd_2x2"] = lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm="winograd_2x2")
            impls["winograd_4x4"] = lambda: F.conv2d(x, w, b, stride, padding, 1, groups, algorithm="winograd_4x4")
        for mode in ("forward", "fwd+bwd"):
            if mode == "forward":
                steps = {impl: _no_grad(fn) for impl, fn in impls.items()}
                work = flops
            else:
                steps = {impl: with_backward(fn) for impl, fn in impls.items()}
                work = 3 * flops
            times, ratios = compare_times(steps, "torch", budget_s=0.3 if quick else 2.0)
            row = {"case": name, "pass": mode, "torch ms": 1e3 * times["torch"]}
            for impl in IMPLS:
                row[f"{impl} ms"] = 1e3 * times[impl] if impl in times else "-"
                row[f"{impl}/torch"] = ratios[impl] if impl in ratios else "-"
            row["torch GF/s"] = work / times["torch"] / 1e9
            row["auto GF/s"] = work / times["auto"] / 1e9
            rows.append(row)
    columns = ["case", "pass", "torch ms", "auto ms", "auto/torch", "direct/torch", "im2col/torch", "shifted/torch",
               "aten/torch", "winograd/torch", "winograd_2x2/torch", "winograd_4x4/torch", "torch GF/s", "auto GF/s"]
    return rows, columns
