"""Modules: drop-in twins of ``torch.nn`` layers and the layers torch lacks."""

from .conv import Conv1d, Conv2d, Conv3d
from .local import LocallyConnected1d, LocallyConnected2d, TiledConv1d, TiledConv2d, UnsharedConv1d, UnsharedConv2d

__all__ = [
    "Conv1d", "Conv2d", "Conv3d",
    "TiledConv1d", "TiledConv2d", "UnsharedConv1d", "UnsharedConv2d", "LocallyConnected1d", "LocallyConnected2d",
]
