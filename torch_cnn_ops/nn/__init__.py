"""Modules: drop-in twins of ``torch.nn`` layers and the layers torch lacks.

One module per op family, each listing its public modules in ``__all__``; they are all
re-exported here.
"""

from . import conv, local, norm, pool
from .conv import *  # noqa: F401,F403
from .local import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403

__all__ = [*conv.__all__, *local.__all__, *pool.__all__, *norm.__all__]
