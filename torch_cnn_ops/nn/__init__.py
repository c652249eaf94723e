"""Modules: drop-in twins of ``torch.nn`` layers and the layers torch lacks."""

from .conv import Conv1d, Conv2d, Conv3d

__all__ = ["Conv1d", "Conv2d", "Conv3d"]
