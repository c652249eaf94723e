"""``Conv1d``, ``Conv2d``, ``Conv3d``: torch.nn's convolution layers running our kernels.

They subclass the torch.nn classes, so the constructor, parameter names (``weight``,
``bias``), initialisation (kaiming-uniform with fan-in ``in_channels / groups * prod(kernel)``),
``repr`` and ``state_dict`` are torch's own, and ``isinstance(m, torch.nn.Conv2d)`` holds.
Added: ``algorithm`` ("auto", "direct", "im2col", "shifted", "aten", "winograd", "winograd_2x2", "winograd_4x4",
"winograd_6x6"), ``flip`` (true convolution) and
``padding="full"``; every ``padding_mode`` (zeros, reflect, replicate, circular) works.
"""

from typing import List, Optional

import torch
import torch.nn.functional as torch_F
from torch import Tensor

from .. import functional as F
from .._fx import untraced
from ..functional.conv import _check_algorithm, _conv_padding, _convnd, conv_padding

__all__ = ["Conv1d", "Conv2d", "Conv3d"]


class _ConvMixin:
    """What our three classes add to torch.nn.ConvNd: torch's arguments, plus ``algorithm`` and
    ``flip``; ``padding`` may be ``"full"``, and ``"same"`` with a stride (TensorFlow's rule)."""

    _nd: int

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None, *,
                 algorithm="auto", flip=False):
        # torch.nn.ConvNd knows 'valid' and 'same' (unstrided) only; 'full' and a strided 'same'
        # (TensorFlow's rule: the pads depend on the input's size) are set after construction.
        strided = any(s != 1 for s in (stride if isinstance(stride, (tuple, list)) else (stride,)))
        later = padding == "full" or (padding == "same" and strided)
        super().__init__(in_channels, out_channels, kernel_size, stride, 0 if later else padding,
                         dilation, groups, bias, padding_mode, device, dtype)
        _check_algorithm(algorithm)
        self.algorithm = algorithm
        self.flip = bool(flip)
        self.padding = padding if isinstance(padding, str) else self.padding

    def _mode_pad(self, input: Tensor) -> List[int]:
        """F.pad's argument (last dimension first) for a non-zero padding_mode."""
        if self.padding == "same" and any(s != 1 for s in self.stride):
            # the pads depend on the input's size: through the fx leaf, so that tracing records them
            lo, hi = conv_padding(self.padding, self.kernel_size, self.stride, self.dilation, self.flip,
                                  input_size=input.shape[-self._nd:])
        else:
            lo, hi = _conv_padding(self.padding, self.kernel_size, self.stride, self.dilation, self.flip)
        pads: List[int] = []
        for d in reversed(range(self._nd)):
            pads += [lo[d], hi[d]]
        return pads

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
        if self.padding_mode == "zeros" and untraced(input, weight, bias):
            # the body of F.conv{nd}d, which its fx-leaf wrapper would run: two Python calls fewer
            # (0.45 us of a small layer's 8 us)
            return _convnd(self._nd, input, weight, bias, self.stride, self.padding, self.dilation, self.groups,
                           self.flip, self.algorithm)
        conv = (F.conv1d, F.conv2d, F.conv3d)[self._nd - 1]
        padding = self.padding
        if self.padding_mode != "zeros":
            input = torch_F.pad(input, self._mode_pad(input), mode=self.padding_mode)
            padding = 0
        return conv(input, weight, bias, self.stride, padding, self.dilation, self.groups,
                    flip=self.flip, algorithm=self.algorithm)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.algorithm != "auto":
            s += f", algorithm={self.algorithm!r}"
        if self.flip:
            s += ", flip=True"
        return s


class Conv1d(_ConvMixin, torch.nn.Conv1d):
    """1-d convolution over ``(N, C_in, L)``; arguments of :class:`torch.nn.Conv1d` plus
    ``algorithm`` and ``flip``, and ``padding`` may be ``"full"``.

    Example::

        >>> m = tco.nn.Conv1d(4, 8, kernel_size=4, padding="same", flip=True)
        >>> m(torch.randn(2, 4, 20)).shape
        torch.Size([2, 8, 20])
    """

    _nd = 1


class Conv2d(_ConvMixin, torch.nn.Conv2d):
    """2-d convolution over ``(N, C_in, H, W)``; arguments of :class:`torch.nn.Conv2d` plus
    ``algorithm`` and ``flip``, and ``padding`` may be ``"full"``.

    Example::

        >>> m = tco.nn.Conv2d(3, 16, kernel_size=3, padding=1)
        >>> m(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 16, 32, 32])
    """

    _nd = 2


class Conv3d(_ConvMixin, torch.nn.Conv3d):
    """3-d convolution over ``(N, C_in, D, H, W)``; arguments of :class:`torch.nn.Conv3d` plus
    ``algorithm`` and ``flip``, and ``padding`` may be ``"full"``.

    Example::

        >>> m = tco.nn.Conv3d(2, 4, kernel_size=3, padding="full")
        >>> m(torch.randn(1, 2, 5, 5, 5)).shape
        torch.Size([1, 4, 7, 7, 7])
    """

    _nd = 3
