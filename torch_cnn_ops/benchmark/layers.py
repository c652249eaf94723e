"""Small layers, where the per-call cost of the Python wrappers and the autograd bookkeeping
shows against the kernels: module forward + backward (autograd.grad with a dense grad_output),
ours against the same torch.nn layer with the same parameters.

Ratios are medians over interleaved rounds (see ``compare_times``); below 1 is faster than torch.
"""

from typing import Dict, List, Tuple

import torch

from .. import nn as tco_nn
from . import compare_times

# (name, torch layer, input shape)
CASES = [
    ("Conv2d 16->16 k3 p1", lambda nn: nn.Conv2d(16, 16, 3, padding=1), (8, 16, 16, 16)),
    ("MaxPool2d k2", lambda nn: nn.MaxPool2d(2), (8, 16, 16, 16)),
    ("BatchNorm2d train", lambda nn: nn.BatchNorm2d(32), (8, 32, 16, 16)),
    ("BatchNorm2d eval", lambda nn: nn.BatchNorm2d(32).eval(), (8, 32, 16, 16)),
    ("GroupNorm 8", lambda nn: nn.GroupNorm(8, 32), (8, 32, 16, 16)),
    ("AvgPool2d k2", lambda nn: nn.AvgPool2d(2), (8, 16, 16, 16)),
]
QUICK_CASES = [(n, make, (2, s[1], 8, 8)) for n, make, s in CASES[:3]]


def _step(layer, x, params):
    def step():
        out = layer(x)
        torch.autograd.grad(out, [x, *params], torch.ones_like(out))

    return step


def run(quick: bool = False) -> Tuple[List[Dict[str, object]], List[str]]:
    torch.manual_seed(0)
    rows = []
    for name, make, shape in QUICK_CASES if quick else CASES:
        ref = make(torch.nn)
        ours = make(tco_nn)
        ours.load_state_dict(ref.state_dict())
        x = torch.randn(shape, requires_grad=True)
        steps = {
            "torch": _step(ref, x, list(ref.parameters())),
            "ours": _step(ours, x, list(ours.parameters())),
        }
        times, ratios = compare_times(steps, "torch", min_rounds=20, max_rounds=400,
                                      budget_s=0.3 if quick else 2.0)
        rows.append({"case": name, "input": "x".join(map(str, shape)), "torch us": 1e6 * times["torch"],
                     "ours us": 1e6 * times["ours"], "ratio": ratios["ours"]})
    return rows, ["case", "input", "torch us", "ours us", "ratio"]
