"""Fake kernels and autograd formulas of the C++/CUDA ops, one module per family.

Importing this package registers them with torch.library; the ops themselves are reached
as ``torch.ops.cnn_ops.<name>``.
"""

from . import conv, local, norm, pool  # noqa: F401
