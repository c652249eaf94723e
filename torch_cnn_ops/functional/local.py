"""Locally connected convolutions: ``tiled_conv1d/2d`` and ``unshared_conv1d/2d``.

Both are convolutions whose kernel depends on the output position: tiled convolution
(Ngiam et al., 2010) cycles through a small tile of kernels, unshared convolution (a locally
connected layer) has one kernel per output position. PyTorch has neither; the usual
workaround unfolds the input for every position and sample and multiplies it with a
per-position weight, which holds the whole unfolded input in memory. These kernels never
do: they unfold one block of output columns, or one position for all samples, at a time
into a bounded per-thread buffer, so that the extra memory beyond the inputs and results is
that buffer plus at most one reordered copy of the output or its gradient (and float32
copies for float16 / bfloat16); see csrc/local/local_cpu.cpp.
"""

from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .._fx import named_leaf
from .._utils import IntOrTuple, batched, ntuple
from .conv import _conv_padding, _check_operands

__all__ = ["tiled_conv1d", "tiled_conv2d", "unshared_conv1d", "unshared_conv2d"]

Padding = Union[str, IntOrTuple]


def local_output_size(
    input_size: Tuple[int, ...], kernel_size: Tuple[int, ...], stride: Tuple[int, ...],
    pad_lo: List[int], pad_hi: List[int], dilation: Tuple[int, ...],
) -> Tuple[int, ...]:
    """Spatial output size of a convolution with these (already normalised) arguments."""
    return tuple(
        (i + lo + hi - d * (k - 1) - 1) // s + 1
        for i, k, s, lo, hi, d in zip(input_size, kernel_size, stride, pad_lo, pad_hi, dilation)
    )


def _shape(t) -> Tuple[int, ...]:
    return tuple(int(s) for s in t)


def _localnd(name, nd, unshared, input, weight, bias, stride, padding, dilation) -> Tensor:
    # The rules of torch's convolution: a TypeError for arguments of the wrong type, a
    # RuntimeError for wrong values and shapes.
    _check_operands(name, input, weight, bias)
    stride = ntuple(stride, nd, "stride", name)
    dilation = ntuple(dilation, nd, "dilation", name)
    if not isinstance(padding, str):
        padding = ntuple(padding, nd, "padding", name)
    grid_name = "output size" if unshared else "tile size"
    if weight.dim() != 2 * nd + 2:
        raise RuntimeError(
            f"{name}(): weight must have {2 * nd + 2} dimensions ({nd} {grid_name}, out_channels, in_channels, "
            f"{nd} kernel sizes), got weight of shape {_shape(weight.shape)}"
        )
    input, unbatched = batched(name, nd, input)
    grid = _shape(weight.shape[:nd])
    out_channels, in_channels = int(weight.shape[nd]), int(weight.shape[nd + 1])
    kernel_size = _shape(weight.shape[nd + 2 :])
    if not unshared and any(t < 1 for t in grid):
        raise RuntimeError(f"{name}(): the tile size (weight.shape[:{nd}]) must be at least 1, got weight of shape "
                           f"{_shape(weight.shape)}")
    if input.shape[1] != in_channels:
        raise RuntimeError(
            f"{name}(): input has {int(input.shape[1])} channels (shape {_shape(input.shape)}) but weight of shape "
            f"{_shape(weight.shape)} expects in_channels = {in_channels} (weight.shape[{nd + 1}])"
        )
    for arg, values in (("stride", stride), ("dilation", dilation)):
        if any(v < 1 for v in values):
            raise RuntimeError(f"{name}(): {arg} must be at least 1, got {arg}={values}")
    pad_lo, pad_hi = _conv_padding(padding, kernel_size, stride, dilation, False, name, _shape(input.shape[2:]))
    out_size = local_output_size(_shape(input.shape[2:]), kernel_size, stride, pad_lo, pad_hi, dilation)
    if unshared and grid != out_size:
        raise RuntimeError(
            f"{name}(): weight of shape {_shape(weight.shape)} has kernels for {grid} output positions, but the "
            f"output of input {_shape(input.shape)} with kernel {kernel_size}, stride {stride}, padding {padding!r} "
            f"and dilation {dilation} has size {out_size}: weight must have shape "
            f"{(*out_size, out_channels, in_channels, *kernel_size)}"
        )
    if bias is not None:
        allowed = [(out_channels,), (out_channels, *out_size)] if unshared else [(out_channels,)]
        if _shape(bias.shape) not in allowed:
            raise RuntimeError(f"{name}(): bias must have shape {' or '.join(map(str, allowed))} (weight of shape "
                               f"{_shape(weight.shape)}), got bias of shape {_shape(bias.shape)}")
    out = torch.ops.cnn_ops.local_forward(input, weight, bias, list(stride), pad_lo, pad_hi, list(dilation))
    return out.squeeze(0) if unbatched else out


_TILED_DOC = """
Tiled {nd}-d convolution (Ngiam et al., 2010) over an input of shape ``(N, C_in, {dims})`` or
``(C_in, {dims})``: output position ``({idx})`` uses the kernel ``weight[{mod}]``, so
neighbouring outputs use different kernels that repeat every tile. A tile size of 1 is an
ordinary convolution.

Shapes: weight ``({tdims}, C_out, C_in, {kdims})`` (tile size first), bias ``(C_out,)``,
output ``(N, C_out, {odims})``. ``stride``, ``padding`` (int, tuple, ``"valid"``,
``"same"``, ``"full"``) and ``dilation`` as for :func:`conv{nd}d`.

Memory: the kernels work on blocks of output columns whose unfolded input fits in a
per-thread buffer of about 1 MiB, never on the unfolded input of the whole batch.

Example::

    >>> x = torch.randn(2, 3, {example})
    >>> w = torch.randn({texample}, 8, 3, {kexample})
    >>> tco.functional.tiled_conv{nd}d(x, w, padding=1).shape
    torch.Size([2, 8, {example}])
"""

_UNSHARED_DOC = """
Unshared (locally connected) {nd}-d convolution over an input of shape ``(N, C_in, {dims})``
or ``(C_in, {dims})``: every output position has its own kernel, output position ``({idx})``
uses ``weight[{idx}]``.

Shapes: weight ``({odims}, C_out, C_in, {kdims})`` (output size first), bias ``(C_out,)`` or
``(C_out, {odims})`` (per position), output ``(N, C_out, {odims})``. ``stride``, ``padding``
(int, tuple, ``"valid"``, ``"same"``, ``"full"``) and ``dilation`` as for :func:`conv{nd}d`;
a weight whose leading sizes differ from the output size raises a RuntimeError.

Memory: unlike the unfold + einsum workaround, the unfolded input of all positions and
samples is never held at once: the kernels unfold one position (all samples) at a time into
a per-thread buffer, and keep one (C_out, position, sample) copy of the output or of its
gradient.

Example::

    >>> x = torch.randn(2, 3, {example})
    >>> w = torch.randn({example}, 8, 3, {kexample})
    >>> tco.functional.unshared_conv{nd}d(x, w, padding="same").shape
    torch.Size([2, 8, {example}])
"""


def _public_localnd(nd: int, unshared: bool, doc: str) -> Callable[..., Tensor]:
    """tiled_conv{nd}d or unshared_conv{nd}d: the arguments of conv{nd}d but groups, as a torch.fx leaf."""
    name = f"{'unshared' if unshared else 'tiled'}_conv{nd}d"

    def localnd(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrTuple = 1,
                padding: Padding = 0, dilation: IntOrTuple = 1) -> Tensor:
        return _localnd(name, nd, unshared, input, weight, bias, stride, padding, dilation)

    return named_leaf(localnd, name, doc)


tiled_conv1d = _public_localnd(1, False, _TILED_DOC.format(nd=1, dims="L", idx="i", mod="i % tL", tdims="tL",
                                                           kdims="kL", odims="L_out", example="10", texample="2",
                                                           kexample="3"))
tiled_conv2d = _public_localnd(2, False, _TILED_DOC.format(nd=2, dims="H, W", idx="i, j", mod="i % tH, j % tW",
                                                           tdims="tH, tW", kdims="kH, kW", odims="H_out, W_out",
                                                           example="10, 10", texample="2, 2", kexample="3, 3"))
unshared_conv1d = _public_localnd(1, True, _UNSHARED_DOC.format(nd=1, dims="L", idx="i", kdims="kL", odims="L_out",
                                                                example="10", kexample="3"))
unshared_conv2d = _public_localnd(2, True, _UNSHARED_DOC.format(nd=2, dims="H, W", idx="i, j", kdims="kH, kW",
                                                                odims="H_out, W_out", example="10, 10",
                                                                kexample="3, 3"))
