"""Convolution: ``conv1d``, ``conv2d``, ``conv3d``.

Beyond ``torch.nn.functional``: ``padding="full"``, ``padding="same"`` for any kernel size
(asymmetric pads without a padded copy of the input), ``flip=True`` for true convolution,
and a choice of algorithm.
"""

from typing import Callable, List, Optional, Tuple, Union

import torch
from torch import Tensor

from .. import _C
from .._fx import leaf, named_leaf
from .._utils import IntOrTuple, _where, as_int, batched, ntuple
from ..backends import conv as _backend
from ..ops.conv import ALGORITHMS

__all__ = ["conv1d", "conv2d", "conv3d", "conv_padding"]

PADDING_STRINGS = ("valid", "same", "full")

# The float32 error of each Winograd tile, max |result - exact| / max |exact|, that the forward
# and the input gradient stay within (measured up to 512 channels with normal inputs and
# weights of unit output variance: 8.1e-7, 1.9e-5 and 2.7e-5; ATen's own convolution: 4.4e-7).
# tests/test_conv.py holds the library to them.
WINOGRAD_ERROR_BOUNDS = {2: 2e-6, 4: 5e-5, 6: 1e-4}


@leaf
def conv_padding(
    padding: Union[str, IntOrTuple],
    kernel_size: Tuple[int, ...],
    stride: Tuple[int, ...],
    dilation: Tuple[int, ...],
    flip: bool = False,
    fn: str = "",
    input_size: Optional[Tuple[int, ...]] = None,
) -> Tuple[List[int], List[int]]:
    """Leading and trailing pads per spatial dimension for a padding argument.

    * int / tuple: the same pad on both sides.
    * ``"valid"``: no padding.
    * ``"same"``: at stride 1 total ``dilation * (k - 1)``, the output as large as the input;
      with a stride (``input_size`` needed: the spatial sizes), TensorFlow's rule, as timm's
      ``Conv2dSame``: ``ceil(i / s)`` outputs, total ``max((ceil(i / s) - 1) * s + dilation * (k - 1)
      + 1 - i, 0)``. For cross-correlation the larger half goes at the end (as torch, TensorFlow
      and ``scipy.signal.correlate2d``), for ``flip=True`` at the start (as
      ``scipy.signal.convolve2d``), since flipping the kernel mirrors the window.
    * ``"full"``: ``dilation * (k - 1)`` on each side, every partial overlap.

    The errors are torch's convolution's: a RuntimeError for a negative pad, a padding of the
    wrong length, an unknown string or ``"same"`` with a stride and no ``input_size``; a
    TypeError for a pad that is no int. ``fn`` names the function in the messages.
    """
    nd = len(kernel_size)
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise RuntimeError(f"{_where(fn)}invalid padding string {padding!r}: padding must be an int, a tuple "
                               f"of {nd} ints or one of {PADDING_STRINGS}")
        if padding == "valid":
            return [0] * nd, [0] * nd
        totals = [d * (k - 1) for k, d in zip(kernel_size, dilation)]
        if any(t >= 2**63 for t in totals):  # the kernels' message for a size that overflows int64
            raise RuntimeError(f"{_where(fn)}padding={padding!r} of {totals} (dilation * (kernel_size - 1) with "
                               f"kernel_size {tuple(kernel_size)} and dilation {tuple(dilation)}) overflows int64")
        if padding == "full":
            return list(totals), list(totals)
        if any(s != 1 for s in stride):
            if input_size is None:
                raise RuntimeError(f"{_where(fn)}padding='same' is not supported for strided convolutions "
                                   f"(stride={tuple(stride)})")
            # TensorFlow's SAME: ceil(i / s) outputs, the windows reaching just past the input's end.
            totals = [max((-(-i // s) - 1) * s + t + 1 - i, 0) for i, s, t in zip(input_size, stride, totals)]
        small = [t // 2 for t in totals]
        large = [t - t // 2 for t in totals]
        return (large, small) if flip else (small, large)
    pads = list(ntuple(padding, nd, "padding", fn))
    for p in pads:
        if p < 0:
            raise RuntimeError(f"{_where(fn)}negative padding is not supported, got padding={padding!r}")
    return pads, pads


# What our own functions and modules call: they pass Python values, never Proxies.
_conv_padding = conv_padding.__wrapped__


def _check_operands(name: str, input, weight, bias) -> None:
    """torch's TypeError for a convolution's input, weight or bias that is no tensor (shared by
    tiled and unshared convolution)."""
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{name}(): input and weight must be tensors, got {type(input).__name__} and "
                        f"{type(weight).__name__}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"{name}(): bias must be a tensor or None, got {type(bias).__name__}")


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")


def _convnd(nd, input, weight, bias, stride, padding, dilation, groups, flip, algorithm) -> Tensor:
    # The plain calls (tensors, ints, int padding, no autotuning or record()) run the op from C++
    # (csrc/python_calls.cpp): torch.ops' parsing of nine arguments costs as much as a small
    # convolution. Compiled code keeps torch.ops, which dynamo traces.
    if algorithm in ALGORITHMS and not (_backend.benchmark or _backend._open_records or torch.compiler.is_compiling()):
        out = _C.conv(nd, input, weight, bias, stride, padding, dilation, groups, flip, algorithm)
        if out is not NotImplemented:
            return out
    name = _NAMES[nd]
    if algorithm not in ALGORITHMS:
        _check_algorithm(algorithm)
    _check_operands(name, input, weight, bias)
    # torch's argument parser first (TypeError for what is no int, RuntimeError for a wrong length) ...
    stride = ntuple(stride, nd, "stride", name)
    dilation = ntuple(dilation, nd, "dilation", name)
    if type(groups) is not int:
        groups = as_int(groups, "groups", name)
    if isinstance(padding, str):
        if padding not in PADDING_STRINGS:
            raise RuntimeError(f"{name}(): invalid padding string {padding!r}: padding must be an int, a tuple of "
                               f"{nd} ints or one of {PADDING_STRINGS}")
    else:
        padding = ntuple(padding, nd, "padding", name)
    # ... then the shapes, as torch's kernel checks them (RuntimeError)
    if weight.dim() != nd + 2:
        raise RuntimeError(
            f"{name}(): weight must have {nd + 2} dimensions (out_channels, in_channels/groups, "
            f"{nd} kernel sizes), got weight of shape {tuple(weight.shape)} for input of shape {tuple(input.shape)}"
        )
    input, unbatched = batched(name, nd, input, f" (weight of shape {tuple(weight.shape)})")
    kernel_size = tuple(weight.shape[2:])
    pad_lo, pad_hi = _conv_padding(padding, kernel_size, stride, dilation, flip, name, tuple(input.shape[2:]))
    if flip:
        weight = weight.flip(list(range(2, nd + 2)))
    if _backend._active():  # autotuning (benchmark) or a record() block
        algorithm = _backend._resolve(input, weight, bias, stride, pad_lo, pad_hi, dilation, groups, algorithm)
    out = torch.ops.cnn_ops.conv_forward(
        input, weight, bias, list(stride), pad_lo, pad_hi, list(dilation), groups, algorithm
    )
    return out.squeeze(0) if unbatched else out


_NAMES = {1: "conv1d", 2: "conv2d", 3: "conv3d"}


_DOC = """
Applies a {nd}-d convolution over an input of shape ``(N, C_in, {dims})`` or ``(C_in, {dims})``.

Arguments as :func:`torch.nn.functional.conv{nd}d`, plus:

* ``padding``: an int, a tuple, ``"valid"``, ``"same"`` (any kernel size; with a stride,
  TensorFlow's rule as timm's ``Conv2dSame``: ``ceil(size / stride)`` outputs) or ``"full"``.
* ``flip``: if True, true (mathematical) convolution: the kernel is rotated 180 degrees, so
  results equal ``scipy.signal.convolve`` with the same mode; if False (default),
  cross-correlation, as torch.
* ``algorithm``: ``"direct"`` (loops over outputs and kernel taps), ``"im2col"`` (unfold +
  GEMM), ``"shifted"`` (stride 1 only: one GEMM per kernel tap over a pointer-shifted view of
  the zero-padded input, no unfolded copy; a CPU algorithm, which CUDA tensors run as
  ``"im2col"``), ``"aten"`` (ATen's own convolution, what ``torch.nn.functional.conv{nd}d``
  runs: oneDNN on the CPU, cuDNN on CUDA), ``"winograd"`` or ``"auto"``: on CUDA aten; on the
  CPU winograd_2x2 for 3x3 kernels at stride 1 with at least 64 input and output channels per
  group on output planes of at least 14x14 (float32, contiguous layout; on Intel's CPUs, where
  ATen's kept up, only the forward and the input gradient of layers with at least 128 channels
  on planes of at least 28x28, with at least 2 x 28 x 28 output positions over the batch), direct for depthwise convolutions (in 2-d only for 3x3 kernels at
  stride 1 on output planes of at least 56x56, or 28x28 for a batch of one; aten for the
  others, but direct for the weight gradient of 5x5 kernels at stride 1 on output planes of at
  least 14x14), im2col for a single input channel, for strided 1x1 kernels and, on Intel's CPUs,
  for 1-d 1x1 float32 kernels without groups of at most 128 x 256 channels, on Intel's CPUs
  also direct for grouped 3x3 float32 kernels at stride 1 with 2 input channels per group, and
  with 3 or 4 per group on output planes of at least 14x14 for the weight gradient (each pass
  is resolved on its own), aten otherwise (each the fastest there, measured against torch; the
  tables are in csrc/conv/conv_common.h).
* ``"winograd"``: Winograd's minimal filtering (Lavin & Gray 2016) for 3, 1x3, 3x1 and 3x3
  kernels at stride 1 and dilation 1 (any padding, groups and ``flip``; 1-d and 2-d):
  ``"winograd_4x4"``, F(4x4, 3x3), 4x fewer multiplications than the direct sum, but
  ``"winograd_2x2"`` (2.25x, the most accurate) for 3x3 kernels on output planes of at most
  14x14 (faster there, measured); each can be asked for by name, as can
  ``"winograd_6x6"`` (5x, the least accurate). The forward and the input gradient run Winograd; the weight gradient runs
  it on the CPU where that measured faster than ATen's (few channels on large planes, on CPUs
  other than Intel's), ATen's elsewhere (the environment variable
  ``TCO_WINOGRAD_WEIGHT_GRADIENT=winograd`` or ``=aten`` overrides that choice).
  float32 error, max abs error over max abs result: at most {bound2:.0e} (2x2), {bound4:.0e}
  (4x4) and {bound6:.0e} (6x6), against about 4e-7 for ATen's; float64 stays near 1e-14. Results that
  come out infinite or NaN are recomputed with ATen's convolution, so NaN and infinity land
  where torch puts them. Extra memory: the transformed weight (16/9, 4 or 7.1 times the
  weight) and about 4 MiB of work buffers per thread on the CPU; on CUDA the transformed
  input and output of up to 256 MiB of samples at a time.

A channels-last input or weight gives a channels-last output (and gradients), as torch's.

Shapes: weight ``(C_out, C_in / groups, {kdims})``, bias ``(C_out,)``, output
``(N, C_out, {odims})``.

Example::

    >>> x = torch.randn(2, 3, {example})
    >>> w = torch.randn(8, 3, {kexample})
    >>> tco.functional.conv{nd}d(x, w, padding="same").shape
    torch.Size([2, 8, {example}])
"""


def _public_convnd(nd: int, **doc_fields) -> Callable[..., Tensor]:
    """conv{nd}d: torch's signature plus ``flip`` and ``algorithm``, as a torch.fx leaf."""
    def convnd(
        input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntOrTuple = 1,
        padding: Union[str, IntOrTuple] = 0, dilation: IntOrTuple = 1, groups: int = 1,
        *, flip: bool = False, algorithm: str = "auto",
    ) -> Tensor:
        return _convnd(nd, input, weight, bias, stride, padding, dilation, groups, flip, algorithm)

    return named_leaf(convnd, _NAMES[nd], _DOC.format(nd=nd, bound2=WINOGRAD_ERROR_BOUNDS[2], bound4=WINOGRAD_ERROR_BOUNDS[4],
                                                       bound6=WINOGRAD_ERROR_BOUNDS[6], **doc_fields))


conv1d = _public_convnd(1, dims="L", kdims="kL", odims="L_out", example="10", kexample="4")
conv2d = _public_convnd(2, dims="H, W", kdims="kH, kW", odims="H_out, W_out", example="10, 10", kexample="4, 4")
conv3d = _public_convnd(3, dims="D, H, W", kdims="kD, kH, kW", odims="D_out, H_out, W_out", example="6, 6, 6",
                        kexample="2, 2, 2")
