"""Gradients of convolution as public functions, with the signatures of ``torch.nn.grad``.

``conv{1,2,3}d_input`` is the transposed-kernel convolution: ``grad_output`` dilated by the
stride, correlated in 'full' mode with the 180°-rotated kernel whose in/out channels are
swapped (computed without materialising the inserted zeros). ``conv{1,2,3}d_weight`` is the
correlation of the input with ``grad_output``. Both are differentiable (double backward).
"""

import operator
from collections.abc import Iterable
from typing import Callable, List, Sequence, Tuple, Union

import torch
from torch import Tensor

from ._fx import named_leaf
from ._utils import IntOrTuple, as_int, repeat_single
from .functional.conv import _conv_padding


def _grad_tuple(value, nd: int, name: str, fn: str) -> Tuple[int, ...]:
    """``value`` as torch.nn.grad reads ``stride``, ``padding`` and ``dilation``: ``_pair`` (a
    sequence is taken as it is, anything else repeated), then ATen's convolution_backward, which
    takes ints and bools and refuses anything else with a RuntimeError (no overload matches)."""
    if isinstance(value, Iterable):
        try:
            values = tuple(value)
        except TypeError:  # a 0-d tensor, as torch's _pair
            raise TypeError(f"{fn}(): argument '{name}' must be an int or a tuple of {nd} ints, got {value!r}") \
                from None
    else:
        values = (value,) * nd
    out = []
    for v in values:
        if type(v) is not int:
            try:
                v = operator.index(v)
            except TypeError:
                raise RuntimeError(f"{fn}(): argument '{name}' must be an int or a tuple of {nd} ints, got "
                                   f"{value!r}") from None
        if not -(2**63) <= v < 2**63:  # no int64: no overload of convolution_backward matches either
            raise RuntimeError(f"{fn}(): argument '{name}' must be an int or a tuple of {nd} ints that fit in "
                               f"int64, got {value!r}")
        out.append(v)
    return repeat_single(out, nd, name, fn, value)


def _size(value, nd: int, name: str, fn: str) -> List[int]:
    """``input_size`` / ``weight_size``: nd + 2 non-negative ints (torch: a TypeError for entries
    that are no int, a RuntimeError for another number of dimensions or a negative size)."""
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{fn}(): argument '{name}' must be a tuple of {nd + 2} ints, got {value!r}")
    sizes = [as_int(v, name, fn) for v in value]
    if len(sizes) != nd + 2:
        raise RuntimeError(f"{fn}(): argument '{name}' must have {nd + 2} entries, got {len(sizes)}: {value!r}")
    if min(sizes) < 0:  # torch: "numel: integer multiplication overflow"
        raise RuntimeError(f"{fn}(): argument '{name}' must not have a negative size, got {tuple(sizes)}")
    return sizes


def _args(fn, nd, kernel_size, stride, padding, dilation, groups):
    stride = _grad_tuple(stride, nd, "stride", fn)
    dilation = _grad_tuple(dilation, nd, "dilation", fn)
    if not isinstance(padding, str):
        padding = _grad_tuple(padding, nd, "padding", fn)
    if type(groups) is not int:
        try:
            groups = operator.index(groups)
        except TypeError:
            raise RuntimeError(f"{fn}(): argument 'groups' must be an int, got {groups!r}") from None
    pad_lo, pad_hi = _conv_padding(padding, tuple(kernel_size), stride, dilation, False, fn)
    return list(stride), pad_lo, pad_hi, list(dilation), groups


def _check_output_size(fn, input_size, kernel_size, stride, pad_lo, pad_hi, dilation, grad_output):
    """grad_output must have the spatial size of the convolution's output, as torch's backward
    requires (RuntimeError)."""
    expected = tuple(
        (i + lo + hi - d * (k - 1) - 1) // s + 1 if s > 0 else -1
        for i, k, s, lo, hi, d in zip(input_size[2:], kernel_size, stride, pad_lo, pad_hi, dilation)
    )
    if isinstance(grad_output, Tensor) and grad_output.dim() == len(input_size) and \
            tuple(grad_output.shape[2:]) != expected and all(e >= 0 for e in expected) and min(stride) > 0:
        raise RuntimeError(f"{fn}(): grad_output of shape {tuple(grad_output.shape)} does not match the output of the "
                           f"convolution of an input of size {tuple(input_size)} with kernel {tuple(kernel_size)}, "
                           f"stride {tuple(stride)} and dilation {tuple(dilation)}: expected spatial size {expected}")


def _input_grad(nd, input_size, weight, grad_output, stride, padding, dilation, groups) -> Tensor:
    fn = f"conv{nd}d_input"
    input_size = _size(input_size, nd, "input_size", fn)
    kernel_size = tuple(weight.shape[2:])
    stride, pad_lo, pad_hi, dilation, groups = _args(fn, nd, kernel_size, stride, padding, dilation, groups)
    _check_output_size(fn, input_size, kernel_size, stride, pad_lo, pad_hi, dilation, grad_output)
    return torch.ops.cnn_ops.conv_input_backward(
        grad_output, weight, input_size, stride, pad_lo, dilation, groups, "auto"
    )


def _weight_grad(nd, input, weight_size, grad_output, stride, padding, dilation, groups) -> Tensor:
    fn = f"conv{nd}d_weight"
    weight_size = _size(weight_size, nd, "weight_size", fn)
    kernel_size = tuple(weight_size[2:])
    stride, pad_lo, pad_hi, dilation, groups = _args(fn, nd, kernel_size, stride, padding, dilation, groups)
    if isinstance(input, Tensor):
        _check_output_size(fn, tuple(input.shape), kernel_size, stride, pad_lo, pad_hi, dilation, grad_output)
    return torch.ops.cnn_ops.conv_weight_backward(
        grad_output, input, weight_size, stride, pad_lo, dilation, groups, "auto"
    )


Size = Sequence[int]
Padding = Union[str, IntOrTuple]


def _public_grad(nd: int, wrt: str, doc: str) -> Callable[..., Tensor]:
    """conv{nd}d_input (``wrt="input"``) or conv{nd}d_weight (``wrt="weight"``) with the signature of
    torch.nn.grad's, as a torch.fx leaf."""
    if wrt == "input":
        def grad(input_size: Size, weight: Tensor, grad_output: Tensor, stride: IntOrTuple = 1,
                 padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
            return _input_grad(nd, input_size, weight, grad_output, stride, padding, dilation, groups)
    else:
        def grad(input: Tensor, weight_size: Size, grad_output: Tensor, stride: IntOrTuple = 1,
                 padding: Padding = 0, dilation: IntOrTuple = 1, groups: int = 1) -> Tensor:
            return _weight_grad(nd, input, weight_size, grad_output, stride, padding, dilation, groups)
    return named_leaf(grad, f"conv{nd}d_{wrt}", doc)


conv1d_input = _public_grad(1, "input",
                            "Gradient of conv1d with respect to its input, of shape ``input_size`` (N, C_in, L).")
conv2d_input = _public_grad(2, "input", """\
Gradient of conv2d with respect to its input, of shape ``input_size`` (N, C_in, H, W).

    Example::

        >>> x = torch.randn(2, 3, 8, 8); w = torch.randn(4, 3, 3, 3)
        >>> gy = torch.randn(2, 4, 6, 6)
        >>> tco.grad.conv2d_input(x.shape, w, gy).shape
        torch.Size([2, 3, 8, 8])
    """)
conv3d_input = _public_grad(3, "input",
                            "Gradient of conv3d with respect to its input, of shape ``input_size`` (N, C_in, D, H, W).")
conv1d_weight = _public_grad(1, "weight", "Gradient of conv1d with respect to its weight, of shape ``weight_size``.")
conv2d_weight = _public_grad(2, "weight", """\
Gradient of conv2d with respect to its weight, of shape ``weight_size`` (C_out, C_in/groups, kH, kW).

    Example::

        >>> x = torch.randn(2, 3, 8, 8); gy = torch.randn(2, 4, 6, 6)
        >>> tco.grad.conv2d_weight(x, (4, 3, 3, 3), gy).shape
        torch.Size([4, 3, 3, 3])
    """)
conv3d_weight = _public_grad(3, "weight", "Gradient of conv3d with respect to its weight, of shape ``weight_size``.")
