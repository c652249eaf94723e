"""torch_cnn_ops: C++/CUDA operators for convolutional networks.

``import torch_cnn_ops as tco``; then ``tco.functional`` (alias ``tco.F``), ``tco.nn`` and
``tco.grad`` mirror ``torch.nn.functional``, ``torch.nn`` and ``torch.nn.grad``.
Tools: ``tco.convert`` (torch.nn layers to their twins here), ``tco.summary`` (a table of shapes,
parameters, multiply-adds and receptive fields), ``tco.filters`` (Sobel, Gabor and k-means kernel
banks) and ``tco.models`` (LeNet5, ResNet). ``tco.backends.conv``: autotuning of the convolution
algorithm (``benchmark``) and a record of the algorithm each call runs. ``tco.onnx``: ONNX export
of models that use these layers (imported on first use: it needs onnxscript).
"""

import torch  # noqa: F401  (loads libtorch before our extension links against it)

from . import _C  # noqa: F401  (registers the C++/CUDA kernels with the dispatcher)
from . import ops  # noqa: F401  (fake kernels and autograd formulas)
from . import backends, functional, grad, nn
from . import filters, models
from .convert import convert, unconvert
from .summary import Summary, summary

F = functional

from ._version import __version__


def __getattr__(name: str):
    if name == "onnx":  # imported on first use: it needs onnxscript, which the layers do not
        import importlib

        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["backends", "functional", "F", "grad", "nn", "filters", "models", "convert", "unconvert", "summary", "Summary"]
