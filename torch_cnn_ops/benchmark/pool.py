"""Pooling benchmark: forward + backward of ours against torch's built-ins (or, where torch has
no twin, the pure-PyTorch workaround: ``-max_pool2d(-x)`` for min pooling, topk + sort +
gather for k-max pooling, unflatten + amax for maxout, the depthwise ``F.conv2d`` with the
normalised Gaussian kernel for Gaussian pooling, unfold + sums for eval-mode stochastic
pooling), NCHW and channels_last.

GB/s is the input read once (its size in bytes) over the median time of ours: a floor on
the memory traffic, to compare against the machine's copy bandwidth.
"""

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as torch_F

from .. import functional as F
from . import compare_times, with_backward

SHAPE = (32, 64, 56, 56)
QUICK_SHAPE = (4, 8, 24, 24)
# k-max pooling: forward + backward of (batch, channels, length) rows, k = length / 8
KMAX_SHAPE = (64, 256, 512)
QUICK_KMAX_SHAPE = (4, 8, 32)


def _cases(x):
    return [
        ("max k3 s2 p1", "torch", lambda: torch_F.max_pool2d(x, 3, 2, 1), lambda: F.max_pool2d(x, 3, 2, 1)),
        ("avg k2 s2", "torch", lambda: torch_F.avg_pool2d(x, 2, 2), lambda: F.avg_pool2d(x, 2, 2)),
        ("min k2", "-max_pool(-x)", lambda: -torch_F.max_pool2d(-x, 2), lambda: F.min_pool2d(x, 2)),
        ("lp p=2 k2", "torch", lambda: torch_F.lp_pool2d(x, 2, 2), lambda: F.lp_pool2d(x, 2, 2)),
    ]


def _stochastic_eval_unfold(x, k):
    """Eval-mode stochastic pooling in pure PyTorch: sum(x^2) / sum(x) over unfolded windows."""
    n, c, h, w = x.shape
    windows = torch_F.unfold(x.reshape(n * c, 1, h, w), k, stride=k)
    s1 = windows.sum(1)
    out = (windows * windows).sum(1) / torch.where(s1 > 0, s1, torch.ones_like(s1))
    return out.view(n, c, h // k, w // k)


def run(quick: bool = False) -> Tuple[List[Dict[str, object]], List[str]]:
    torch.manual_seed(0)
    shape = QUICK_SHAPE if quick else SHAPE
    rows = []
    for layout in ("NCHW", "channels_last"):
        x = torch.randn(shape)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        gbytes = x.numel() * x.element_size() / 1e9
        for name, baseline, ref, ours in _cases(x):
            steps = {"baseline": with_backward(ref), "ours": with_backward(ours)}
            times, ratios = compare_times(steps, "baseline", budget_s=0.3 if quick else 3.0)
            rows.append({
                "case": name, "layout": layout, "baseline": baseline,
                "baseline ms": 1e3 * times["baseline"], "ours ms": 1e3 * times["ours"],
                "ours/baseline": ratios["ours"], "ours GB/s": gbytes / times["ours"],
                "baseline GB/s": gbytes / times["baseline"],
            })
    # k-max pooling and maxout, against their pure-PyTorch workarounds
    kx = torch.randn(QUICK_KMAX_SHAPE if quick else KMAX_SHAPE, requires_grad=True)
    k = kx.shape[-1] // 8
    mx = torch.randn(shape, requires_grad=True)
    extra = [
        (f"kmax k={k}", "topk+sort+gather", kx,
         lambda: kx.gather(-1, kx.topk(k, -1).indices.sort(-1).values), lambda: F.kmax_pool1d(kx, k)),
        ("maxout 2", "unflatten+amax", mx,
         lambda: mx.unflatten(1, (mx.shape[1] // 2, 2)).amax(2), lambda: F.channel_max_pool(mx, 2)),
    ]
    gx = torch.randn(shape, requires_grad=True)
    d = torch.arange(3, dtype=torch.float64) - 1
    g1 = torch.exp(-d * d / 2)
    gk = torch.outer(g1, g1) / g1.sum() ** 2
    gk = gk.float().expand(shape[1], 1, 3, 3).contiguous()
    extra.append(("gaussian k3 s1 p1 sigma 1", "depthwise conv2d", gx,
                  lambda: torch_F.conv2d(gx, gk, stride=1, padding=1, groups=gx.shape[1]),
                  lambda: F.gaussian_pool2d(gx, 3, 1, 1, 1.0)))
    sx = torch.rand(shape).add_(0.01).requires_grad_()
    extra.append(("stochastic eval k2", "unfold sum(x^2)/sum(x)", sx,
                  lambda: _stochastic_eval_unfold(sx, 2), lambda: F.stochastic_pool2d(sx, 2, training=False)))
    for name, baseline, x, ref, ours in extra:
        steps = {"baseline": with_backward(ref), "ours": with_backward(ours)}
        times, ratios = compare_times(steps, "baseline", budget_s=0.3 if quick else 3.0)
        gbytes = x.numel() * x.element_size() / 1e9
        rows.append({
            "case": name, "layout": "contiguous", "baseline": baseline,
            "baseline ms": 1e3 * times["baseline"], "ours ms": 1e3 * times["ours"],
            "ours/baseline": ratios["ours"], "ours GB/s": gbytes / times["ours"],
            "baseline GB/s": gbytes / times["baseline"],
        })
    columns = ["case", "layout", "baseline", "baseline ms", "ours ms", "ours/baseline", "ours GB/s", "baseline GB/s"]
    return rows, columns
