"""Normalization: batch, instance, group and layer norm.

Names, arguments and defaults follow ``torch.nn.functional``; so do the errors torch raises
in Python (a ``ValueError`` for a training batch with one value per channel). Statistics
are computed in one pass by the library's moments kernel (float32 accumulation for float16
and bfloat16 inputs), and the backward takes one reduction pass and one elementwise pass.
"""

from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

from .. import _C
from .._fx import leaf
from .._utils import as_bool, as_int, check_floating

ops = torch.ops.cnn_ops
# The overloads themselves: calling them skips the packet's overload resolution, a few
# microseconds per call that show on small inputs.
_batch_norm_forward = ops.batch_norm_forward.default
_batch_norm_update_stats = ops.batch_norm_update_stats.default

__all__ = ["batch_norm", "instance_norm", "group_norm", "layer_norm"]


def _check_tensor(name: str, input, python_layer: bool = False) -> None:
    """A TypeError for an input that is no tensor, as torch's argument parser raises; an
    AttributeError where torch's Python layer reads a tensor attribute of it first."""
    if not isinstance(input, Tensor):
        error = AttributeError if python_layer else TypeError
        raise error(f"{name}(): input must be a tensor, got {type(input).__name__}")


def _values_per_channel(input: Tensor) -> int:
    n = input.shape[0]
    for s in input.shape[2:]:
        n *= s
    return n


@leaf
def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalization (Ioffe & Szegedy 2015) of an ``(N, C, *)`` input, as
    ``torch.nn.functional.batch_norm``.

    Training: normalises with the batch's mean and biased variance per channel and, when
    ``running_mean`` / ``running_var`` (shape ``(C,)``) are given, moves them in place:
    ``running = (1 - momentum) * running + momentum * batch`` (the variance unbiased).
    Eval (``training=False``): normalises with the running statistics. ``weight`` and
    ``bias`` (``(C,)``) scale and shift the result. A call that raises leaves the running
    statistics untouched.

    Example::

        >>> x = torch.randn(8, 3, 5, 5)
        >>> rm, rv = torch.zeros(3), torch.ones(3)
        >>> y = batch_norm(x, rm, rv, training=True)   # y.mean((0, 2, 3)) ~ 0, rm moved
    """
    # Plain calls run the ops from C++ (csrc/python_calls.cpp), as convolution's do.
    if not torch.compiler.is_compiling():
        out = _C.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
        if out is not NotImplemented:
            return out
    _check_tensor("batch_norm", input, training)
    # torch's Python checks, in its order: one value per channel, then eps
    count = 0
    if training:
        if input.dim() == 0:
            raise IndexError("batch_norm(): input of shape () has no batch dimension: expected an input of shape "
                             "(N, C, *)")
        count = _values_per_channel(input)
        if count == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    _check_eps(eps, training)
    # then torch's argument parser's: training must be a bool (not 0 or 1)
    training = as_bool(training, "training", "batch_norm")
    _check_running_pair("batch_norm", running_mean, running_var)
    if input.dim() < 2:
        return _batch_norm_without_channels(input, running_mean, running_var, weight, bias, training)
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training, momentum, eps, count)


def _batch_norm(name, input, running_mean, running_var, weight, bias, training, momentum, eps, count=0,
                _stats=False):
    """Batch norm on our op, after the checks of the caller ``name`` (batch or instance norm);
    with ``_stats``, the output and the batch's mean and biased variance."""
    if momentum is None:
        raise TypeError(f"{name}(): argument 'momentum' must be a float, got None (the norm modules turn "
                        "momentum=None into the cumulative average factor)")
    if type(eps) is not float:
        eps = _as_float(eps, "eps", name)
    check_floating(name, input)
    out, mean, _, var = _batch_norm_forward(input, weight, bias, running_mean, running_var, bool(training), eps)
    if training and running_mean is not None:
        _batch_norm_update_stats(running_mean, running_var, mean, var, count or _values_per_channel(input),
                                 float(momentum))
    return (out, mean, var) if _stats else out


def _check_running_pair(name: str, running_mean, running_var) -> None:
    """torch's ValueError for one running statistic without the other."""
    if (running_mean is None) != (running_var is None):
        given = "running_mean" if running_var is None else "running_var"
        raise ValueError(f"{name}(): running_mean and running_var must be given together (either both be None or "
                         f"neither be None), got only {given}")


def _batch_norm_without_channels(input, running_mean, running_var, weight, bias, training) -> Tensor:
    """What torch's kernel does with an input of fewer than 2 dimensions: it counts 0 channels,
    so an empty 1-d input without weight and bias gives an empty output, per-channel tensors
    of another size are a RuntimeError, missing running statistics in eval too, and reading the
    channel dimension otherwise an IndexError."""
    if input.dim() == 1 and input.numel() == 0 and weight is None and bias is None and \
            all(t is None or t.numel() == 0 for t in (running_mean, running_var)):
        return input.clone()
    described = f"input of shape {tuple(input.shape)} (no channel dimension: expected an input of shape (N, C, *))"
    for arg, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if t is not None and t.numel() != 0:
            raise RuntimeError(f"batch_norm(): {arg} of shape {tuple(t.shape)} does not match the 0 channels of the "
                               f"{described}")
    if not training and (running_mean is None or running_var is None):
        raise RuntimeError(f"batch_norm(): running_mean and running_var must be given in evaluation mode, got the "
                           f"{described}")
    raise IndexError(f"batch_norm(): dimension 1 (channels) is out of range for the {described}")


def _check_eps(eps, training: bool) -> None:
    """torch's ``F.batch_norm`` checks of eps: positive in training, non-negative otherwise (ValueError)."""
    try:
        if training and eps <= 0.0:
            raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
        if eps < 0.0:
            raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    except TypeError:
        raise TypeError(f"batch_norm(): argument 'eps' must be a float, got {eps!r} of type "
                        f"{type(eps).__name__}") from None


def _as_float(value, name: str, fn: str) -> float:
    if type(value) is float:
        return value
    if not isinstance(value, (str, bytes)):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"{fn}(): argument '{name}' must be a float, got {value!r} of type {type(value).__name__}")


@leaf
def instance_norm(input: Tensor, running_mean: Optional[Tensor] = None, running_var: Optional[Tensor] = None,
                  weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, use_input_stats: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Instance normalization (Ulyanov et al. 2016): each (sample, channel) plane of an
    ``(N, C, *)`` input normalised by its own statistics, as ``torch.nn.functional.instance_norm``.

    It is batch norm of the input seen as ``(1, N * C, *)`` (torch's formulation); running
    statistics, when given, are the average over the batch of the per-sample ones.

    Example::

        >>> y = instance_norm(torch.randn(4, 3, 8, 8))   # y[n, c].mean() ~ 0, y[n, c].var() ~ 1
    """
    _check_tensor("instance_norm", input, use_input_stats)
    if use_input_stats:
        spatial = 1
        for s in input.shape[2:]:
            spatial *= s
        if spatial == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    elif input.dim() < 2:
        if running_mean is None or running_var is None:
            raise RuntimeError(f"instance_norm(): expected running_mean and running_var when use_input_stats is "
                               f"False, got input of shape {tuple(input.shape)} and no running statistics")
        raise IndexError(f"instance_norm(): input of shape {tuple(input.shape)} has no channel dimension: expected "
                         f"an input of shape (N, C, *)")
    _check_running_pair("instance_norm", running_mean, running_var)
    n, c = input.shape[:2]
    # Checked here, so that the messages show the caller's shapes rather than the (1, N * C, *) view's.
    for arg, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and tuple(t.shape) != (c,):
            raise RuntimeError(f"instance_norm(): {arg} of shape {tuple(t.shape)} does not match the {c} channels of "
                               f"the input of shape {tuple(input.shape)}: expected shape ({c},)")
    x = input.reshape(1, n * c, *input.shape[2:])
    w = weight.repeat(n) if weight is not None else None
    b = bias.repeat(n) if bias is not None else None
    if not use_input_stats:
        rm = running_mean.repeat(n) if running_mean is not None else None
        rv = running_var.repeat(n) if running_var is not None else None
        return _batch_norm("instance_norm", x, rm, rv, w, b, False, momentum, eps).view(input.shape)
    out = _batch_norm("instance_norm", x, None, None, w, b, True, momentum, eps, _stats=running_mean is not None)
    if running_mean is not None:
        # The running statistics move towards the batch average of the per-plane statistics (what
        # torch's update of N repeated copies, averaged back, amounts to), by the op that refuses
        # expanded or grad-requiring statistics before writing either.
        out, mean, var = out
        with torch.no_grad():
            mean, var = mean.view(n, c).mean(0), var.view(n, c).mean(0)
        _batch_norm_update_stats(running_mean, running_var, mean, var, _values_per_channel(x), float(momentum))
    return out.view(input.shape)


@leaf
def group_norm(input: Tensor, num_groups: int, weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
               eps: float = 1e-5) -> Tensor:
    """Group normalization (Wu & He 2018) of an ``(N, C, *)`` input: statistics per sample
    over each group of ``C // num_groups`` channels, then ``weight`` and ``bias`` (``(C,)``)
    per channel, as ``torch.nn.functional.group_norm``.

    Example::

        >>> y = group_norm(torch.randn(2, 8, 4, 4), 4)   # groups of 2 channels
    """
    if not torch.compiler.is_compiling():  # plain calls from C++, as batch_norm's
        out = _C.group_norm(input, num_groups, weight, bias, eps)
        if out is not NotImplemented:
            return out
    _check_tensor("group_norm", input, True)
    if input.dim() < 2:
        raise RuntimeError(f"group_norm(): expected at least 2 dimensions for input tensor but received "
                           f"{input.dim()} (input of shape {tuple(input.shape)})")
    # torch's check, in Python before its kernel: the input seen as (N * C / G, G, *), counted
    # without its dimension 1, must have more than one value
    try:
        size0 = input.shape[0] * input.shape[1] // num_groups
    except ZeroDivisionError:
        raise ZeroDivisionError(f"group_norm(): num_groups must not be 0 (the {input.shape[1]} channels of the input "
                                f"of shape {tuple(input.shape)} are split into num_groups groups)") from None
    except TypeError:
        size0 = None
    if size0 is not None:
        prod = size0
        for s in input.shape[2:]:
            prod *= s
        if prod == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size "
                             f"{[size0, num_groups, *input.shape[2:]]}")
    if type(num_groups) is not int:
        num_groups = as_int(num_groups, "num_groups", "group_norm")
    if type(eps) is not float:
        eps = _as_float(eps, "eps", "group_norm")
    check_floating("group_norm", input, weight, bias)
    return ops.group_norm_forward(input, weight, bias, num_groups, eps)[0]


@leaf
def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Layer normalization (Ba et al. 2016) over the trailing dimensions ``normalized_shape``,
    with elementwise ``weight`` and ``bias`` of that shape, as ``torch.nn.functional.layer_norm``.
    ``normalized_shape`` may also be a bare int, as for ``torch.nn.LayerNorm`` (torch's
    functional refuses it).

    Example::

        >>> y = layer_norm(torch.randn(2, 3, 4, 4), (3, 4, 4))   # each sample normalised
    """
    if not torch.compiler.is_compiling():  # plain calls from C++, as batch_norm's
        out = _C.layer_norm(input, normalized_shape, weight, bias, eps)
        if out is not NotImplemented:
            return out
    _check_tensor("layer_norm", input)
    if type(normalized_shape) is int:  # as torch.nn.LayerNorm's constructor (F.layer_norm wants a sequence)
        shape: List[int] = [normalized_shape]
    elif isinstance(normalized_shape, (list, tuple)):
        shape = [s if type(s) is int else as_int(s, "normalized_shape", "layer_norm") for s in normalized_shape]
    else:
        raise TypeError(f"layer_norm(): argument 'normalized_shape' must be a tuple of ints, got {normalized_shape!r} "
                        f"of type {type(normalized_shape).__name__}")
    if type(eps) is not float:
        eps = _as_float(eps, "eps", "layer_norm")
    check_floating("layer_norm", input, weight, bias)
    return ops.layer_norm_forward(input, shape, weight, bias, eps)[0]
