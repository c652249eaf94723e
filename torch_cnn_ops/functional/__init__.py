"""The functional API: ``torch_cnn_ops.functional`` (also ``torch_cnn_ops.F``).

Names, argument order and defaults follow ``torch.nn.functional`` wherever a twin exists.
One module per op family; everything public is re-exported here. Every public function is a
leaf of torch.fx tracing: called with a ``torch.fx.Proxy`` among its arguments, it is recorded
as one ``call_function`` node targeting itself (see ``torch_cnn_ops._fx``).
"""

from .conv import conv1d, conv2d, conv3d, conv_padding
from .local import tiled_conv1d, tiled_conv2d, unshared_conv1d, unshared_conv2d
from .pool import (adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d, adaptive_max_pool1d,
                   adaptive_max_pool2d, adaptive_max_pool3d, adaptive_min_pool1d, adaptive_min_pool2d,
                   adaptive_min_pool3d, avg_pool1d, avg_pool2d, avg_pool3d, channel_max_pool,
                   dynamic_kmax_pool1d, gaussian_pool2d, kmax_pool1d, lp_pool1d, lp_pool2d, lp_pool3d,
                   max_pool1d, max_pool2d, max_pool3d, min_pool1d, min_pool2d, min_pool3d, stochastic_pool2d)
from .pool import __all__ as _pool_all
from .norm import batch_norm, group_norm, instance_norm, layer_norm

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_padding",
    "tiled_conv1d", "tiled_conv2d", "unshared_conv1d", "unshared_conv2d",
    *_pool_all,
    "batch_norm", "instance_norm", "group_norm", "layer_norm",
]
