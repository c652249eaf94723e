"""Normalization benchmark: ours against torch's built-ins in the same run.

Cases (the issue's): batch_norm training forward+backward and eval forward, group_norm with
8 groups forward+backward, on (32, 64, 56, 56) float32 (NCHW, and channels_last as a second
table for batch norm), and batch_norm training forward+backward on (256, 256).

Training steps run the forward and the backward with a dense random grad_output, as a
network above the norm hands down (``.sum().backward()`` would hand an expanded scalar and
accumulate into ``.grad``, both foreign to training).

GB/s is the least memory traffic of the computation over the median time: eval reads x and
writes y (2 tensor sizes); training reads x for the statistics, reads x and writes y, reads
dy and x for the gradient sums, reads dy and x and writes dx (8 tensor sizes). Compare it
with the machine's copy bandwidth (a copy moves 2 tensor sizes).
"""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as torch_F

from .. import functional as F
from . import compare_times

SHAPE = (32, 64, 56, 56)
QUICK_SHAPE = (4, 8, 12, 12)
FLAT_SHAPE = (256, 256)


def _bn_train(fn, x, w, b):
    rm, rv = torch.zeros(x.shape[1]), torch.ones(x.shape[1])
    dy = torch.randn_like(x)

    def step():
        torch.autograd.grad(fn(x, rm, rv, w, b, True, 0.1, 1e-5), (x, w, b), dy)

    return step


def _bn_eval(fn, x, w, b):
    rm, rv = torch.rand(x.shape[1]), torch.rand(x.shape[1]) + 0.5

    def step():
        with torch.no_grad():
            fn(x, rm, rv, w, b, False, 0.1, 1e-5)

    return step


def _gn(fn, x, w, b):
    dy = torch.randn_like(x)

    def step():
        torch.autograd.grad(fn(x, 8, w, b, 1e-5), (x, w, b), dy)

    return step


def run(quick: bool = False) -> Tuple[List[Dict[str, object]], List[str]]:
    torch.manual_seed(0)
    shape = QUICK_SHAPE if quick else SHAPE
    budget = 0.3 if quick else 3.0
    rows = []

    def add(case, layout, x, ref, ours):
        times, ratios = compare_times({"torch": ref, "ours": ours}, "torch", budget_s=budget)
        gbytes = (2 if "eval" in case else 8) * x.numel() * x.element_size() / 1e9
        rows.append({
            "case": case, "layout": layout, "shape": "x".join(map(str, x.shape)),
            "torch ms": 1e3 * times["torch"], "ours ms": 1e3 * times["ours"], "ours/torch": ratios["ours"],
            "ours GB/s": gbytes / times["ours"], "torch GB/s": gbytes / times["torch"],
        })

    for layout in ("NCHW", "channels_last"):
        x = torch.randn(shape)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        c = x.shape[1]
        w, b = torch.randn(c, requires_grad=True), torch.randn(c, requires_grad=True)
        add("batch_norm train fwd+bwd", layout, x, _bn_train(torch_F.batch_norm, x, w, b),
            _bn_train(F.batch_norm, x, w, b))
        add("batch_norm eval fwd", layout, x, _bn_eval(torch_F.batch_norm, x, w, b), _bn_eval(F.batch_norm, x, w, b))
        if layout == "NCHW":
            add("group_norm 8 fwd+bwd", layout, x, _gn(torch_F.group_norm, x, w, b), _gn(F.group_norm, x, w, b))
    x = torch.randn(QUICK_SHAPE[:2] if quick else FLAT_SHAPE, requires_grad=True)
    w, b = torch.randn(x.shape[1], requires_grad=True), torch.randn(x.shape[1], requires_grad=True)
    add("batch_norm train fwd+bwd", "(N, C)", x, _bn_train(torch_F.batch_norm, x, w, b),
        _bn_train(F.batch_norm, x, w, b))
    columns = ["case", "layout", "shape", "torch ms", "ours ms", "ours/torch", "ours GB/s", "torch GB/s"]
    return rows, columns
