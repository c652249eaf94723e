"""Whole networks: a torch.nn model against ``tco.convert`` of it (same weights), training step
(forward + backward) and eval forward.

The networks are ResNet-18, ResNet-50 and MobileNetV3-Small as torchvision builds them
(ResNets: 7x7 stem, max pooling, BasicBlock stages 2-2-2-2 / Bottleneck stages 3-4-6-3, global
average pooling, a linear head; MobileNetV3-Small: torchvision's table of inverted residual
blocks with depthwise 3x3 and 5x5 convolutions and squeeze-and-excitation), written here in
torch.nn so that torchvision is not needed.

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


def _make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's rounding of a channel count: to a multiple of 8, never down by more than 10%."""
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, activation=None) -> nn.Module:
    """torchvision's Conv2dNormActivation as MobileNetV3 builds it (batch norm eps 1e-3, momentum 0.01)."""
    layers = [nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=0.001, momentum=0.01)]
    if activation is not None:
        layers.append(activation(inplace=True))
    return nn.Sequential(*layers)


class _SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.relu = nn.ReLU()
        self.fc2 = nn.Conv2d(squeezed, channels, 1)
        self.hardsigmoid = nn.Hardsigmoid()

    def forward(self, x):
        return x * self.hardsigmoid(self.fc2(self.relu(self.fc1(self.avgpool(x)))))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, kernel: int, expanded: int, cout: int, squeeze: bool, activation, stride: int):
        super().__init__()
        layers = [] if expanded == cin else [_conv_bn(cin, expanded, 1, activation=activation)]
        layers.append(_conv_bn(expanded, expanded, kernel, stride, groups=expanded, activation=activation))
        if squeeze:
            layers.append(_SqueezeExcitation(expanded, _make_divisible(expanded // 4)))
        layers.append(_conv_bn(expanded, cout, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        out = self.block(x)
        return out + x if self.residual else out


# torchvision's mobilenet_v3_small: (in, kernel, expanded, out, squeeze-and-excitation, activation, stride)
_RE, _HS = nn.ReLU, nn.Hardswish
_MOBILENET_V3_SMALL = [(16, 3, 16, 16, True, _RE, 2), (16, 3, 72, 24, False, _RE, 2), (24, 3, 88, 24, False, _RE, 1),
                       (24, 5, 96, 40, True, _HS, 2), (40, 5, 240, 40, True, _HS, 1), (40, 5, 240, 40, True, _HS, 1),
                       (40, 5, 120, 48, True, _HS, 1), (48, 5, 144, 48, True, _HS, 1), (48, 5, 288, 96, True, _HS, 2),
                       (96, 5, 576, 96, True, _HS, 1), (96, 5, 576, 96, True, _HS, 1)]


def mobilenet_v3_small(num_classes: int = 1000) -> nn.Module:
    layers: List[nn.Module] = [_conv_bn(3, 16, 3, 2, activation=nn.Hardswish)]
    layers += [_InvertedResidual(*block) for block in _MOBILENET_V3_SMALL]
    layers += [_conv_bn(96, 576, 1, activation=nn.Hardswish), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
               nn.Linear(576, 1024), nn.Hardswish(inplace=True), nn.Dropout(0.2, inplace=True),
               nn.Linear(1024, num_classes)]
    return nn.Sequential(*layers)


MODELS = {"resnet18": lambda: resnet(_Basic, (2, 2, 2, 2)), "resnet50": lambda: resnet(_Bottleneck, (3, 4, 6, 3)),
          "mobilenet_v3_small": mobilenet_v3_small}
# (model, batch, image size)
CASES = [("resnet18", 8, 112), ("resnet18", 1, 224), ("resnet50", 8, 112), ("resnet50", 1, 224),
         ("mobilenet_v3_small", 8, 112), ("mobilenet_v3_small", 1, 224)]
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
