"""Settings of the library's backends, as ``torch.backends`` holds torch's: ``conv``."""

from . import conv

__all__ = ["conv"]
