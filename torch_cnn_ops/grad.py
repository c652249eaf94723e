"""Gradients of convolution as public functions, with the signatures of ``torch.nn.grad``.

``conv{1,2,3}d_input`` is the transposed-kernel convolution: ``grad_output`` dilated by the
stride, correlated in 'full' mode with the 180°-rotated kernel whose in/out channels are
swapped (computed without materialising the inserted zeros). ``conv{1,2,3}d_weight`` is the
correlation of the input with ``grad_output``. Both are differentiable (double backward).
"""

from typing import Sequence, Union

import torch
from torch import Tensor

from ._fx import leaf
from ._utils import IntOrTuple, ntuple
from .functional.conv import _conv_padding


def _args(nd, kernel_size, stride, padding, dilation):
    stride = ntuple(stride, nd, "stride")
    dilation = ntuple(dilation, nd, "dilation")
    pad_lo, _ = _conv_padding(padding, tuple(kernel_size), stride, dilation)
    return list(stride), pad_lo, list(dilation)


def _input_grad(nd, input_size, weight, grad_output, stride, padding, dilation, groups) -> Tensor:
    input_size = [int(s) for s in input_size]
    if len(input_size) != nd + 2:
        raise ValueError(f"conv{nd}d_input: input_size must have {nd + 2} entries, got {input_size}")
    stride, pad_lo, dilation = _args(nd, weight.shape[2:], stride, padding, dilation)
    return torch.ops.cnn_ops.conv_input_backward(
        grad_output, weight, input_size, stride, pad_lo, dilation, int(groups), "auto"
    )


def _weight_grad(nd, input, weight_size, grad_output, stride, padding, dilation, groups) -> Tensor:
    weight_size = [int(s) for s in weight_size]
    if len(weight_size) != nd + 2:
        raise ValueError(f"conv{nd}d_weight: weight_size must have {nd + 2} entries, got {weight_size}")
    stride, pad_lo, dilation = _args(nd, weight_size[2:], stride, padding, dilation)
    return torch.ops.cnn_ops.conv_weight_backward(
        grad_output, input, weight_size, stride, pad_lo, dilation, int(groups), "auto"
    )


Size = Sequence[int]
Padding = Union[str, IntOrTuple]


@leaf
def conv1d_input(input_size: Size, weight: Tensor, grad_output: Tensor, stride: IntOrTuple = 1,
                 padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Gradient of conv1d with respect to its input, of shape ``input_size`` (N, C_in, L)."""
    return _input_grad(1, input_size, weight, grad_output, stride, padding, dilation, groups)


@leaf
def conv2d_input(input_size: Size, weight: Tensor, grad_output: Tensor, stride: IntOrTuple = 1,
                 padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Gradient of conv2d with respect to its input, of shape ``input_size`` (N, C_in, H, W).

    Example::

        >>> x = torch.randn(2, 3, 8, 8); w = torch.randn(4, 3, 3, 3)
        >>> gy = torch.randn(2, 4, 6, 6)
        >>> tco.grad.conv2d_input(x.shape, w, gy).shape
        torch.Size([2, 3, 8, 8])
    """
    return _input_grad(2, input_size, weight, grad_output, stride, padding, dilation, groups)


@leaf
def conv3d_input(input_size: Size, weight: Tensor, grad_output: Tensor, stride: IntOrTuple = 1,
                 padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Gradient of conv3d with respect to its input, of shape ``input_size`` (N, C_in, D, H, W)."""
    return _input_grad(3, input_size, weight, grad_output, stride, padding, dilation, groups)


@leaf
def conv1d_weight(input: Tensor, weight_size: Size, grad_output: Tensor, stride: IntOrTuple = 1,
                  padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Gradient of conv1d with respect to its weight, of shape ``weight_size``."""
    return _weight_grad(1, input, weight_size, grad_output, stride, padding, dilation, groups)


@leaf
def conv2d_weight(input: Tensor, weight_size: Size, grad_output: Tensor, stride: IntOrTuple = 1,
                  padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Gradient of conv2d with respect to its weight, of shape ``weight_size`` (C_out, C_in/groups, kH, kW).

    Example::

        >>> x = torch.randn(2, 3, 8, 8); gy = torch.randn(2, 4, 6, 6)
        >>> tco.grad.conv2d_weight(x, (4, 3, 3, 3), gy).shape
        torch.Size([4, 3, 3, 3])
    """
    return _weight_grad(2, input, weight_size, grad_output, stride, padding, dilation, groups)


@leaf
def conv3d_weight(input: Tensor, weight_size: Size, grad_output: Tensor, stride: IntOrTuple = 1,
                  padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
    """Gradient of conv3d with respect to its weight, of shape ``weight_size``."""
    return _weight_grad(3, input, weight_size, grad_output, stride, padding, dilation, groups)
