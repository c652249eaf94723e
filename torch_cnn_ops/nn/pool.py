"""Pooling layers running our kernels.

The twins of torch.nn's pooling layers subclass them, so constructor, attributes, ``repr``
and ``isinstance(m, torch.nn.MaxPool2d)`` are torch's own. The min pooling layers, which
torch lacks, subclass torch's private bases of the max layers, so they take the same
arguments and print alike (``MinPool2d(kernel_size=2, stride=2, ...)``).
"""

import torch.nn as torch_nn
from torch import nn
from torch import Tensor
from torch.nn.modules.pooling import _AdaptiveMaxPoolNd, _MaxPoolNd

from .. import functional as F


class _WindowMaxForward:
    """The forward of the max and min layers (their arguments are the same): the functional
    named by ``_function``, looked up in F at call time as a direct reference would be."""

    _function: str

    def forward(self, input: Tensor):
        return getattr(F, self._function)(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                          self.ceil_mode, self.return_indices)


class _AdaptiveMaxForward:
    """The forward of the adaptive max and min layers: the functional named by ``_function``."""

    _function: str

    def forward(self, input: Tensor):
        return getattr(F, self._function)(input, self.output_size, self.return_indices)


class MaxPool1d(_WindowMaxForward, torch_nn.MaxPool1d):
    _function = "max_pool1d"


class MaxPool2d(_WindowMaxForward, torch_nn.MaxPool2d):
    _function = "max_pool2d"


class MaxPool3d(_WindowMaxForward, torch_nn.MaxPool3d):
    _function = "max_pool3d"


class MinPool1d(_WindowMaxForward, _MaxPoolNd):
    """Minimum over each window: ``-MaxPool1d(...)(-x)``; the arguments of ``torch.nn.MaxPool1d``."""

    _function = "min_pool1d"


class MinPool2d(_WindowMaxForward, _MaxPoolNd):
    """Minimum over each window: ``-MaxPool2d(...)(-x)``; the arguments of ``torch.nn.MaxPool2d``."""

    _function = "min_pool2d"


class MinPool3d(_WindowMaxForward, _MaxPoolNd):
    """Minimum over each window: ``-MaxPool3d(...)(-x)``; the arguments of ``torch.nn.MaxPool3d``."""

    _function = "min_pool3d"


class AvgPool1d(torch_nn.AvgPool1d):
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True) -> None:
        text = isinstance(padding, str)  # "same" or "valid": torch's _single would split it into letters
        super().__init__(kernel_size, stride, 0 if text else padding, ceil_mode, count_include_pad)
        if text:
            self.padding = padding

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad)


class AvgPool2d(torch_nn.AvgPool2d):
    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class AvgPool3d(torch_nn.AvgPool3d):
    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                            self.count_include_pad, self.divisor_override)


class LPPool1d(torch_nn.LPPool1d):
    def forward(self, input: Tensor) -> Tensor:
        return F.lp_pool1d(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)


class LPPool2d(torch_nn.LPPool2d):
    def forward(self, input: Tensor) -> Tensor:
        return F.lp_pool2d(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)


class LPPool3d(torch_nn.LPPool3d):
    def forward(self, input: Tensor) -> Tensor:
        return F.lp_pool3d(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)


class AdaptiveMaxPool1d(_AdaptiveMaxForward, torch_nn.AdaptiveMaxPool1d):
    _function = "adaptive_max_pool1d"


class AdaptiveMaxPool2d(_AdaptiveMaxForward, torch_nn.AdaptiveMaxPool2d):
    _function = "adaptive_max_pool2d"


class AdaptiveMaxPool3d(_AdaptiveMaxForward, torch_nn.AdaptiveMaxPool3d):
    _function = "adaptive_max_pool3d"


class AdaptiveMinPool1d(_AdaptiveMaxForward, _AdaptiveMaxPoolNd):
    """Minimum over adaptive windows; the arguments of ``torch.nn.AdaptiveMaxPool1d``."""

    _function = "adaptive_min_pool1d"


class AdaptiveMinPool2d(_AdaptiveMaxForward, _AdaptiveMaxPoolNd):
    """Minimum over adaptive windows; the arguments of ``torch.nn.AdaptiveMaxPool2d``."""

    _function = "adaptive_min_pool2d"


class AdaptiveMinPool3d(_AdaptiveMaxForward, _AdaptiveMaxPoolNd):
    """Minimum over adaptive windows; the arguments of ``torch.nn.AdaptiveMaxPool3d``."""

    _function = "adaptive_min_pool3d"


class AdaptiveAvgPool1d(torch_nn.AdaptiveAvgPool1d):
    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool1d(input, self.output_size)


class AdaptiveAvgPool2d(torch_nn.AdaptiveAvgPool2d):
    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)


class AdaptiveAvgPool3d(torch_nn.AdaptiveAvgPool3d):
    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool3d(input, self.output_size)


class KMaxPool1d(nn.Module):
    """The ``k`` largest values along ``dim``, in their original order (see ``kmax_pool1d``)."""

    def __init__(self, k: int, dim: int = -1) -> None:
        super().__init__()
        self.k = k
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.kmax_pool1d(input, self.k, self.dim)

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}"


class DynamicKMaxPool1d(nn.Module):
    """k-max pooling with ``k = max(k_top, ceil((num_layers - layer) / num_layers * s))``, ``s`` the
    input's length along ``dim`` (see ``dynamic_kmax_pool1d``)."""

    def __init__(self, layer: int, num_layers: int, k_top: int, dim: int = -1) -> None:
        super().__init__()
        F.pool.dynamic_k(layer, num_layers, k_top, 1)  # validates the arguments
        self.layer = layer
        self.num_layers = num_layers
        self.k_top = k_top
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.dynamic_kmax_pool1d(input, self.layer, self.num_layers, self.k_top, self.dim)

    def extra_repr(self) -> str:
        return f"layer={self.layer}, num_layers={self.num_layers}, k_top={self.k_top}, dim={self.dim}"


class Maxout(nn.Module):
    """Maximum over groups of ``pool_size`` consecutive channels (see ``channel_max_pool``)."""

    def __init__(self, pool_size: int, dim: int = 1) -> None:
        super().__init__()
        self.pool_size = F.pool._pool_size(pool_size, "Maxout")
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.channel_max_pool(input, self.pool_size, self.dim)

    def extra_repr(self) -> str:
        return f"pool_size={self.pool_size}, dim={self.dim}"


class GaussianPool2d(nn.Module):
    """Average over each window weighted by the normalised Gaussian of the distance to the
    window's centre (see ``gaussian_pool2d``)."""

    def __init__(self, kernel_size, stride=None, padding=0, sigma: float = 1.0) -> None:
        super().__init__()
        F.pool._check_sigma(sigma, "GaussianPool2d")
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.sigma = float(sigma)

    def forward(self, input: Tensor) -> Tensor:
        return F.gaussian_pool2d(input, self.kernel_size, self.stride, self.padding, self.sigma)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, sigma={self.sigma}"


class StochasticPool2d(nn.Module):
    """Stochastic pooling (Zeiler & Fergus 2013) of a non-negative input: in training mode a
    sample per window with probabilities proportional to the activations, in eval mode the
    probability-weighted average (see ``stochastic_pool2d``)."""

    def __init__(self, kernel_size, stride=None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size

    def forward(self, input: Tensor) -> Tensor:
        return F.stochastic_pool2d(input, self.kernel_size, self.stride, self.training)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}"


__all__ = [
    *(f"{kind}Pool{nd}d" for kind in ("Max", "Min", "Avg", "LP") for nd in (1, 2, 3)),
    *(f"Adaptive{kind}Pool{nd}d" for kind in ("Max", "Min", "Avg") for nd in (1, 2, 3)),
    "KMaxPool1d", "DynamicKMaxPool1d", "Maxout", "GaussianPool2d", "StochasticPool2d",
]
