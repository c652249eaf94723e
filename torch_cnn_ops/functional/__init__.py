"""The functional API: ``torch_cnn_ops.functional`` (also ``torch_cnn_ops.F``).

Names, argument order and defaults follow ``torch.nn.functional`` wherever a twin exists.
One module per op family; everything public is re-exported here.
"""

from .conv import conv1d, conv2d, conv3d, conv_padding

__all__ = ["conv1d", "conv2d", "conv3d", "conv_padding"]
