"""torch_cnn_ops: C++/CUDA operators for convolutional networks.

``import torch_cnn_ops as tco``; then ``tco.functional`` (alias ``tco.F``), ``tco.nn`` and
``tco.grad`` mirror ``torch.nn.functional``, ``torch.nn`` and ``torch.nn.grad``.
"""

import torch  # noqa: F401  (loads libtorch before our extension links against it)

from . import _C  # noqa: F401  (registers the C++/CUDA kernels with the dispatcher)
from . import ops  # noqa: F401  (fake kernels and autograd formulas)
from . import functional, grad, nn
from . import filters
from .summary import Summary, summary
from .convert import convert
from . import models

F = functional

__version__ = "0.1.0"
__all__ = ["functional", "F", "grad", "nn", "filters", "summary", "Summary", "convert", "models"]
