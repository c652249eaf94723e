"""Example networks built from ``torch_cnn_ops.nn`` layers: ``LeNet5`` and a small ``ResNet``.

Convolution, normalization and pooling are ours; ``torch.nn.Linear``, ``ReLU`` and ``Flatten``
are torch's (we have no twin of them).
"""

from typing import Sequence, Type, Union

import torch
from torch import Tensor

from . import nn

__all__ = ["LeNet5", "BasicBlock", "Bottleneck", "ResNet"]


def _positive_int(owner: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


class LeNet5(torch.nn.Module):
    """LeNet-5 (LeCun et al. 1998) with ReLU and max pooling:
    conv 5x5 (6) -> pool 2 -> conv 5x5 (16) -> pool 2 -> fc 120 -> fc 84 -> fc ``num_classes``.

    Args:
        in_channels: channels of the input images.
        num_classes: outputs of the last layer (logits).
        input_size: side of the square input images (at least 12 with padding, 16 without).
        padding: pad the first convolution by 2. ``None`` (default) pads when ``input_size`` is
            28, so that MNIST-sized images give the classic 28x28 / 10x10 / 5x5 maps of 32x32 inputs.
        pool: ``"max"`` (default) or ``"avg"`` (the original's subsampling, without its weights).

    Shapes: input ``(N, in_channels, input_size, input_size)``, output ``(N, num_classes)``.

    Example::

        >>> net = tco.models.LeNet5(in_channels=1, num_classes=10, input_size=28)
        >>> net(torch.randn(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, input_size: int = 32,
                 padding: Union[bool, None] = None, pool: str = "max") -> None:
        super().__init__()
        _positive_int("LeNet5", "in_channels", in_channels)
        _positive_int("LeNet5", "num_classes", num_classes)
        _positive_int("LeNet5", "input_size", input_size)
        if pool not in ("max", "avg"):
            raise ValueError(f"LeNet5: pool must be 'max' or 'avg', got {pool!r}")
        if padding is None:
            padding = input_size == 28
        pad = 2 if padding else 0
        side = ((input_size + 2 * pad - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet5: input_size {input_size} is too small (at least {16 - 2 * pad} "
                             f"with padding={bool(padding)})")
        Pool = nn.MaxPool2d if pool == "max" else nn.AvgPool2d
        self.features = torch.nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=pad), torch.nn.ReLU(), Pool(2),
            nn.Conv2d(6, 16, 5), torch.nn.ReLU(), Pool(2),
        )
        self.classifier = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(16 * side * side, 120), torch.nn.ReLU(),
            torch.nn.Linear(120, 84), torch.nn.ReLU(),
            torch.nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def _shortcut(in_planes: int, out_planes: int, stride: int):
    """The identity where shapes agree, else a 1x1 (strided) projection with batch norm."""
    if stride == 1 and in_planes == out_planes:
        return None
    return torch.nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                               nn.BatchNorm2d(out_planes))


class _ResidualBlock(torch.nn.Module):
    """What the two blocks share: numbered convolutions without bias, each followed by batch norm
    (``conv1``, ``bn1``, ``conv2``, ...), a ReLU and the shortcut."""

    def _layers(self, in_planes: int, out_planes: int, stride: int, convs) -> None:
        """``convs``: (in, out, kernel, stride) of each convolution, in order; they are registered
        in that order (conv_i then bn_i), which is the order of the state_dict's keys."""
        for i, (c_in, c_out, kernel, conv_stride) in enumerate(convs, 1):
            setattr(self, f"conv{i}", nn.Conv2d(c_in, c_out, kernel, stride=conv_stride, padding=kernel // 2,
                                                bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(c_out))
        # Not in place: a normalization layer may keep its output for the backward pass.
        self.relu = torch.nn.ReLU()
        self.downsample = _shortcut(in_planes, out_planes, stride)

    def _add_shortcut(self, out: Tensor, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class BasicBlock(_ResidualBlock):
    """Two 3x3 convolutions with batch norm and a shortcut (He et al. 2016):
    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``; ``conv1`` carries the stride and
    ``downsample`` (a 1x1 strided convolution and batch norm) matches the shortcut's shape.

    Shapes: ``(N, in_planes, H, W)`` -> ``(N, planes, ceil(H / stride), ceil(W / stride))``.

    Example::

        >>> block = tco.models.BasicBlock(16, 32, stride=2)
        >>> block(torch.randn(2, 16, 8, 8)).shape
        torch.Size([2, 32, 4, 4])
    """

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self._layers(in_planes, planes, stride, [(in_planes, planes, 3, stride), (planes, planes, 3, 1)])

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self._add_shortcut(self.bn2(self.conv2(out)), x)


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (by ``expansion = 4``), each with batch norm, and a shortcut
    (He et al. 2016): the 3x3 convolution carries the stride, as torchvision's ResNet v1.5, and
    ``downsample`` (a 1x1 strided convolution and batch norm) matches the shortcut's shape.

    Shapes: ``(N, in_planes, H, W)`` -> ``(N, 4 * planes, ceil(H / stride), ceil(W / stride))``.

    Example::

        >>> block = tco.models.Bottleneck(64, 16, stride=2)
        >>> block(torch.randn(2, 64, 8, 8)).shape
        torch.Size([2, 64, 4, 4])
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self._layers(in_planes, out_planes, stride,
                     [(in_planes, planes, 1, 1), (planes, planes, 3, stride), (planes, out_planes, 1, 1)])

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self._add_shortcut(self.bn3(self.conv3(out)), x)


class ResNet(torch.nn.Module):
    """A residual network: a stem, ``len(layers)`` stages of blocks, global average pooling and a
    linear classifier.

    Stage ``i`` has ``layers[i]`` blocks of ``width * 2**i`` planes (times ``block.expansion`` at
    its output); every stage after the first halves the resolution in its first block. The
    stem is a 3x3 convolution for small images (``small_input=True``, CIFAR-style: 32x32 stays
    32x32), or torchvision's 7x7 stride-2 convolution and 3x3 stride-2 max pooling. The defaults,
    ``BasicBlock`` with ``layers=(2, 2, 2)`` and ``width=16``, give a 14-layer network of 0.17M
    parameters for 32x32 images (``layers=(3, 3, 3)`` is He et al.'s ResNet-20).

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage.
        num_classes: outputs (logits).
        in_channels: channels of the input images.
        width: planes of the first stage.
        small_input: the 3x3 stem without pooling (``True``) or the 7x7 stem with max pooling.

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, num_classes)``.

    Example::

        >>> net = tco.models.ResNet(tco.models.Bottleneck, layers=(1, 1), num_classes=10)
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(self, block: Type[torch.nn.Module] = BasicBlock, layers: Sequence[int] = (2, 2, 2),
                 num_classes: int = 10, in_channels: int = 3, width: int = 16, small_input: bool = True) -> None:
        super().__init__()
        if not (isinstance(block, type) and hasattr(block, "expansion")):
            raise TypeError(f"ResNet: block must be BasicBlock or Bottleneck (a class with an expansion), got {block!r}")
        layers = tuple(layers)
        if not layers:
            raise ValueError("ResNet: layers must name at least one stage")
        for n in layers:
            _positive_int("ResNet", "every entry of layers", n)
        for name, value in (("num_classes", num_classes), ("in_channels", in_channels), ("width", width)):
            _positive_int("ResNet", name, value)
        if small_input:
            self.stem = torch.nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
                                            nn.BatchNorm2d(width), torch.nn.ReLU())
        else:
            self.stem = torch.nn.Sequential(nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False),
                                            nn.BatchNorm2d(width), torch.nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        stages = []
        in_planes = width
        for i, num_blocks in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for b in range(num_blocks):
                blocks.append(block(in_planes, planes, stride=2 if (i > 0 and b == 0) else 1))
                in_planes = planes * block.expansion
            stages.append(torch.nn.Sequential(*blocks))
        self.layers = torch.nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = torch.nn.Flatten()
        self.fc = torch.nn.Linear(in_planes, num_classes)
        for m in self.modules():
            # He initialisation for the ReLU network, as torchvision's ResNet.
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))
