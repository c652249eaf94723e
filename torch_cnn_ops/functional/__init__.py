"""The functional API: ``torch_cnn_ops.functional`` (also ``torch_cnn_ops.F``).

Names, argument order and defaults follow ``torch.nn.functional`` wherever a twin exists.
One module per op family, each listing its public functions in ``__all__``; they are all
re-exported here. Every public function is a leaf of torch.fx tracing: called with a
``torch.fx.Proxy`` among its arguments, it is recorded as one ``call_function`` node targeting
itself (see ``torch_cnn_ops._fx``).
"""

from . import conv, local, norm, pool
from .conv import *  # noqa: F401,F403
from .local import *  # noqa: F401,F403
from .norm import *  # noqa: F401,F403
from .pool import *  # noqa: F401,F403

__all__ = [*conv.__all__, *local.__all__, *pool.__all__, *norm.__all__]
