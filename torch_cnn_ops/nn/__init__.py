"""Modules: drop-in twins of ``torch.nn`` layers and the layers torch lacks."""

from .conv import Conv1d, Conv2d, Conv3d
from .local import LocallyConnected1d, LocallyConnected2d, TiledConv1d, TiledConv2d, UnsharedConv1d, UnsharedConv2d
from .pool import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, AdaptiveMaxPool1d, AdaptiveMaxPool2d,
                   AdaptiveMaxPool3d, AdaptiveMinPool1d, AdaptiveMinPool2d, AdaptiveMinPool3d, AvgPool1d, AvgPool2d,
                   AvgPool3d, DynamicKMaxPool1d, GaussianPool2d, KMaxPool1d, LPPool1d, LPPool2d, LPPool3d, Maxout, MaxPool1d,
                   MaxPool2d, MaxPool3d, MinPool1d, MinPool2d, MinPool3d, StochasticPool2d)
from .pool import __all__ as _pool_all
from .norm import (BatchNorm1d, BatchNorm2d, BatchNorm3d, GroupNorm, InstanceNorm1d, InstanceNorm2d, InstanceNorm3d,
                   LayerNorm, SyncBatchNorm)
from .norm import __all__ as _norm_all

__all__ = [
    "Conv1d", "Conv2d", "Conv3d",
    "TiledConv1d", "TiledConv2d", "UnsharedConv1d", "UnsharedConv2d", "LocallyConnected1d", "LocallyConnected2d",
    *_pool_all,
    *_norm_all,
]
