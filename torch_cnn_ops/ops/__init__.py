"""Fake kernels and batching rules of the C++/CUDA ops, one module per family (their autograd
is registered in C++, csrc/<family>/<family>_autograd.cpp).

Importing this package registers them with torch.library; the ops themselves are reached
as ``torch.ops.cnn_ops.<name>``.
"""

from . import conv, local, norm, pool  # noqa: F401
from . import vmap  # noqa: F401  (after the families: the rules call their ops)
