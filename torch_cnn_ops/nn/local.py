"""Locally connected layers: ``TiledConv1d/2d`` and ``UnsharedConv1d/2d`` (alias
``LocallyConnected1d/2d``), which torch.nn lacks.

Parameters are ``weight`` (tile size or output size first, then ``out_channels,
in_channels, *kernel_size``) and ``bias``, initialised as :class:`torch.nn.Conv2d` does:
kaiming-uniform with ``a = sqrt(5)`` and fan-in ``in_channels * prod(kernel_size)`` (each
output position sees that many inputs, whichever kernel it uses), bias uniform in
``±1 / sqrt(fan_in)``.
"""

import math
from typing import Tuple

import torch
from torch import Tensor

from .. import functional as F
from .._fx import leaf
from .._utils import ntuple
from ..functional.conv import _conv_padding
from ..functional.local import local_output_size

__all__ = ["TiledConv1d", "TiledConv2d", "UnsharedConv1d", "UnsharedConv2d", "LocallyConnected1d",
           "LocallyConnected2d"]


@leaf
def _check_input_size(input: Tensor, input_size: Tuple[int, ...], name: str) -> Tensor:
    """``input``, once it is ``(C, *input_size)`` or ``(N, C, *input_size)``; otherwise a
    ValueError naming the layer ``name``. A leaf of fx tracing that passes its input on, so
    that a traced graph checks the input as the module does."""
    nd = len(input_size)
    spatial = tuple(input.shape[-nd:]) if input.dim() >= nd else tuple(input.shape)
    if input.dim() not in (nd + 1, nd + 2) or spatial != tuple(input_size):
        raise ValueError(f"{name}: expected an input of spatial size {tuple(input_size)} (input_size), "
                         f"got input of shape {tuple(input.shape)}")
    return input


class _LocalConvNd(torch.nn.Module):
    _nd: int
    # Set by the tiled and unshared bases: the functional's name without "1d" / "2d", and the
    # constructor argument (an attribute too) that sizes the weight's grid, shown by the repr.
    _function: str
    _grid_arg: str

    def _checked(self, input: Tensor) -> Tensor:
        """The input as the functional takes it; a subclass checks what the functional cannot."""
        return input

    def forward(self, input: Tensor) -> Tensor:
        fn = getattr(F, f"{self._function}{self._nd}d")
        return fn(self._checked(input), self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        s = self._common_repr() + f", {self._grid_arg}={getattr(self, self._grid_arg)}"
        return s + (", bias=False" if self.bias is None else "")

    def _init(self, in_channels, out_channels, kernel_size, grid_arg, stride, padding, dilation, device,
              dtype) -> None:
        """The constructor's common part; ``grid_arg``: the value of the argument named ``_grid_arg``."""
        nd = self._nd
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = ntuple(kernel_size, nd, "kernel_size", type(self).__name__)
        self.stride = ntuple(stride, nd, "stride", type(self).__name__)
        self.dilation = ntuple(dilation, nd, "dilation", type(self).__name__)
        for arg, values in (("kernel_size", self.kernel_size), ("stride", self.stride), ("dilation", self.dilation)):
            if any(v < 1 for v in values):
                raise ValueError(f"{type(self).__name__}: {arg} must be at least 1, got {values}")
        self.padding = padding if isinstance(padding, str) else ntuple(padding, nd, "padding", type(self).__name__)
        try:  # the checks of torch.nn.Conv2d's constructor: a ValueError for a bad padding string
            # (any input_size: strided 'same' takes its pads from each input's size)
            _conv_padding(self.padding, self.kernel_size, self.stride, self.dilation, input_size=self.kernel_size)
        except RuntimeError as error:
            raise ValueError(f"{type(self).__name__}: {error}") from None
        self._factory = {"device": device, "dtype": dtype}
        setattr(self, self._grid_arg, ntuple(grid_arg, nd, self._grid_arg, type(self).__name__))

    def _make_parameters(self, grid: Tuple[int, ...], bias_shape) -> None:
        self.weight = torch.nn.Parameter(
            torch.empty(*grid, self.out_channels, self.in_channels, *self.kernel_size, **self._factory)
        )
        if bias_shape is not None:
            self.bias = torch.nn.Parameter(torch.empty(*bias_shape, **self._factory))
        else:
            self.register_parameter("bias", None)
        del self._factory
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.init.kaiming_uniform_ would take the fan-in from weight.shape[1:], which
        # here starts with the grid; the layer's fan-in is that of a convolution.
        fan_in = self.in_channels * math.prod(self.kernel_size)
        gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
        bound = gain * math.sqrt(3.0 / fan_in)  # = 1 / sqrt(fan_in), as torch.nn.Conv2d
        torch.nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            bias_bound = 1 / math.sqrt(fan_in)
            torch.nn.init.uniform_(self.bias, -bias_bound, bias_bound)

    def _common_repr(self) -> str:
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}"
        if self.stride != (1,) * self._nd:
            s += f", stride={self.stride}"
        if self.padding != (0,) * self._nd:
            s += f", padding={self.padding!r}"
        if self.dilation != (1,) * self._nd:
            s += f", dilation={self.dilation}"
        return s


class _TiledConvNd(_LocalConvNd):
    _function, _grid_arg = "tiled_conv", "tile_size"

    def __init__(self, in_channels, out_channels, kernel_size, tile_size, stride=1, padding=0, dilation=1,
                 bias=True, device=None, dtype=None):
        super().__init__()
        self._init(in_channels, out_channels, kernel_size, tile_size, stride, padding, dilation, device, dtype)
        if any(t < 1 for t in self.tile_size):
            raise ValueError(f"{type(self).__name__}: tile_size must be at least 1, got {tile_size!r}")
        self._make_parameters(self.tile_size, (out_channels,) if bias else None)


class _UnsharedConvNd(_LocalConvNd):
    _function, _grid_arg = "unshared_conv", "input_size"

    def __init__(self, in_channels, out_channels, kernel_size, input_size, stride=1, padding=0, dilation=1,
                 bias=True, device=None, dtype=None):
        super().__init__()
        self._init(in_channels, out_channels, kernel_size, input_size, stride, padding, dilation, device, dtype)
        pad_lo, pad_hi = _conv_padding(self.padding, self.kernel_size, self.stride, self.dilation,
                                       input_size=self.input_size)
        self.output_size = local_output_size(self.input_size, self.kernel_size, self.stride, pad_lo, pad_hi,
                                             self.dilation)
        if any(o < 1 for o in self.output_size):
            raise ValueError(
                f"{type(self).__name__}: input_size {self.input_size} with kernel_size {self.kernel_size}, "
                f"stride {self.stride}, padding {self.padding!r} and dilation {self.dilation} gives no output "
                f"(output size {self.output_size})"
            )
        # One bias per output channel and position: the layer shares nothing across positions.
        self._make_parameters(self.output_size, (out_channels, *self.output_size) if bias else None)

    def _checked(self, input: Tensor) -> Tensor:
        # the weight holds one kernel per output position: only inputs of input_size fit it
        return _check_input_size(input, self.input_size, type(self).__name__)


class TiledConv1d(_TiledConvNd):
    """Tiled 1-d convolution over ``(N, C_in, L)``: output position ``i`` uses kernel
    ``weight[i % tile_size]``; see :func:`torch_cnn_ops.functional.tiled_conv1d`.

    Example::

        >>> m = tco.nn.TiledConv1d(4, 8, kernel_size=3, tile_size=2, padding=1)
        >>> m.weight.shape, m(torch.randn(2, 4, 20)).shape
        (torch.Size([2, 8, 4, 3]), torch.Size([2, 8, 20]))
    """

    _nd = 1


class TiledConv2d(_TiledConvNd):
    """Tiled 2-d convolution over ``(N, C_in, H, W)``: output position ``(i, j)`` uses kernel
    ``weight[i % tH, j % tW]``; see :func:`torch_cnn_ops.functional.tiled_conv2d`.

    Example::

        >>> m = tco.nn.TiledConv2d(3, 16, kernel_size=3, tile_size=2, padding=1)
        >>> m.weight.shape, m(torch.randn(2, 3, 32, 32)).shape
        (torch.Size([2, 2, 16, 3, 3, 3]), torch.Size([2, 16, 32, 32]))
    """

    _nd = 2


class UnsharedConv1d(_UnsharedConvNd):
    """Unshared (locally connected) 1-d convolution over ``(N, C_in, L)`` with ``L = input_size``:
    one kernel and (with ``bias=True``) one bias per output position; see
    :func:`torch_cnn_ops.functional.unshared_conv1d`.

    Example::

        >>> m = tco.nn.UnsharedConv1d(4, 8, kernel_size=3, input_size=20)
        >>> m.weight.shape, m.bias.shape, m(torch.randn(2, 4, 20)).shape
        (torch.Size([18, 8, 4, 3]), torch.Size([8, 18]), torch.Size([2, 8, 18]))
    """

    _nd = 1


class UnsharedConv2d(_UnsharedConvNd):
    """Unshared (locally connected) 2-d convolution over ``(N, C_in, H, W)`` with
    ``(H, W) = input_size``: one kernel and (with ``bias=True``) one bias per output position;
    see :func:`torch_cnn_ops.functional.unshared_conv2d`.

    Example::

        >>> m = tco.nn.UnsharedConv2d(3, 16, kernel_size=3, input_size=(28, 28), padding=1)
        >>> m.weight.shape, m.bias.shape, m(torch.randn(2, 3, 28, 28)).shape
        (torch.Size([28, 28, 16, 3, 3, 3]), torch.Size([16, 28, 28]), torch.Size([2, 16, 28, 28]))
    """

    _nd = 2


LocallyConnected1d = UnsharedConv1d
LocallyConnected2d = UnsharedConv2d
