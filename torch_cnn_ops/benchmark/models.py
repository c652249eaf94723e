"""Whole networks: a torch.nn model against ``tco.convert`` of it (same weights), training step
(forward + backward) and eval forward.

The networks are ResNet-18 and ResNet-50 as torchvision builds them (7x7 stem, max pooling,
BasicBlock stages 2-2-2-2 / Bottleneck stages 3-4-6-3, global average pooling, a linear head),
written here in torch.nn so that torchvision is not needed.

Ratios are medians over interleaved rounds (see ``compare_times``); below 1 is faster than torch.
"""

import copy
from typing import Dict, List, Tuple

import torch
from torch import nn

from ..convert import convert
from . import compare_times


class _Residual(nn.Module):
    """relu(body(x) + shortcut(x)); subclasses build the body."""

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


class _Basic(_Residual):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = _shortcut(cin, cout, stride)


class _Bottleneck(_Residual):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int):
        super().__init__()
        cout = width * self.expansion
        self.body = nn.Sequential(
            nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = _shortcut(cin, cout, stride)


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


def resnet(block, stages, num_classes: int = 1000) -> nn.Module:
    layers: List[nn.Module] = [nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                               nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for i, (width, count) in enumerate(zip((64, 128, 256, 512), stages)):
        for j in range(count):
            layers.append(block(cin, width, 2 if i > 0 and j == 0 else 1))
            cin = width * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


MODELS = {"resnet18": lambda: resnet(_Basic, (2, 2, 2, 2)), "resnet50": lambda: resnet(_Bottleneck, (3, 4, 6, 3))}
# (model, batch, image size)
CASES = [("resnet18", 8, 112), ("resnet18", 1, 224), ("resnet50", 8, 112), ("resnet50", 1, 224)]
QUICK_CASES = [("resnet18", 2, 32)]


def _train_step(model, x):
    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    return step


def _eval_forward(model, x):
    def step():
        with torch.no_grad():
            model(x)

    return step


def run(quick: bool = False) -> Tuple[List[Dict[str, object]], List[str]]:
    torch.manual_seed(0)
    rows = []
    for name, batch, size in QUICK_CASES if quick else CASES:
        original = MODELS[name]()
        converted = convert(copy.deepcopy(original))
        x = torch.randn(batch, 3, size, size)
        for mode, make in (("train step", _train_step), ("eval forward", _eval_forward)):
            original.train(mode == "train step")
            converted.train(mode == "train step")
            times, ratios = compare_times({"torch": make(original, x), "ours": make(converted, x)}, "torch",
                                          budget_s=0.5 if quick else 6.0)
            rows.append({"model": name, "input": f"{batch}x3x{size}x{size}", "pass": mode,
                         "torch ms": 1e3 * times["torch"], "converted ms": 1e3 * times["ours"],
                         "ratio": ratios["ours"]})
    return rows, ["model", "input", "pass", "torch ms", "converted ms", "ratio"]
