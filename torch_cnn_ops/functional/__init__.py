"""The functional API: ``torch_cnn_ops.functional`` (also ``torch_cnn_ops.F``).

Names, argument order and defaults follow ``torch.nn.functional`` wherever a twin exists.
One module per op family; everything public is re-exported here.
"""

from .conv import conv1d, conv2d, conv3d, conv_padding
from .local import tiled_conv1d, tiled_conv2d, unshared_conv1d, unshared_conv2d

__all__ = [
    "conv1d", "conv2d", "conv3d", "conv_padding",
    "tiled_conv1d", "tiled_conv2d", "unshared_conv1d", "unshared_conv2d",
]
