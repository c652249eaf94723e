"""Normalization: batch, instance, group and layer norm.

Names, arguments and defaults follow ``torch.nn.functional``; so do the errors torch raises
in Python (a ``ValueError`` for a training batch with one value per channel). Statistics
are computed in one pass by the library's moments kernel (float32 accumulation for float16
and bfloat16 inputs), and the backward takes one reduction pass and one elementwise pass.
"""

from typing import List, Optional, Sequence, Union

import torch
from torch import Tensor

from .._fx import leaf

ops = torch.ops.cnn_ops
# The overloads themselves: calling them skips the packet's overload resolution, a few
# microseconds per call that show on small inputs.
_batch_norm_forward = ops.batch_norm_forward.default
_batch_norm_update_stats = ops.batch_norm_update_stats.default

__all__ = ["batch_norm", "instance_norm", "group_norm", "layer_norm"]


def _check_tensor(name: str, input) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}: input must be a tensor, got {type(input).__name__}")


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
    _check_tensor("batch_norm", input)
    if input.dim() < 2:
        raise ValueError(f"batch_norm: expected an input of shape (N, C, *), got {tuple(input.shape)}")
    if momentum is None:
        raise TypeError("batch_norm: momentum must be a float (BatchNorm modules turn momentum=None into "
                        "the cumulative average factor)")
    count = _values_per_channel(input)
    if training and count == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.size()}")
    out, mean, _, var = _batch_norm_forward(input, weight, bias, running_mean, running_var, bool(training),
                                            float(eps))
    if training and running_mean is not None:
        _batch_norm_update_stats(running_mean, running_var, mean, var, count, float(momentum))
    return out


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
    _check_tensor("instance_norm", input)
    if input.dim() < 3:
        raise ValueError(f"instance_norm: expected an input of shape (N, C, *) with spatial dimensions, "
                         f"got {tuple(input.shape)}")
    if use_input_stats:
        spatial = 1
        for s in input.shape[2:]:
            spatial *= s
        if spatial == 1:
            raise ValueError(f"Expected more than 1 spatial element when training, got input size {input.size()}")
    n, c = input.shape[:2]
    x = input.reshape(1, n * c, *input.shape[2:])
    w = weight.repeat(n) if weight is not None else None
    b = bias.repeat(n) if bias is not None else None
    rm = running_mean.repeat(n) if running_mean is not None else None
    rv = running_var.repeat(n) if running_var is not None else None
    out = batch_norm.__wrapped__(x, rm, rv, w, b, use_input_stats, momentum, eps)  # x is a tensor: skip the Proxy check
    if running_mean is not None and use_input_stats:
        with torch.no_grad():
            running_mean.copy_(rm.view(n, c).mean(0))
            running_var.copy_(rv.view(n, c).mean(0))
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
    _check_tensor("group_norm", input)
    if input.dim() < 2:
        raise RuntimeError(f"group_norm: expected at least 2 dimensions for input tensor but received {input.dim()}")
    if not isinstance(num_groups, int) or isinstance(num_groups, bool):
        raise TypeError(f"group_norm: num_groups must be an int, got {num_groups!r}")
    if num_groups >= 1 and input.shape[1] % num_groups == 0:
        # torch's check: the input seen as (N * C / G, G, *), counted without its dimension 1
        size = [input.shape[0] * input.shape[1] // num_groups, num_groups, *input.shape[2:]]
        prod = size[0]
        for s in size[2:]:
            prod *= s
        if prod == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")
    return ops.group_norm_forward(input, weight, bias, num_groups, float(eps))[0]


@leaf
def layer_norm(input: Tensor, normalized_shape: Union[int, Sequence[int]], weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """Layer normalization (Ba et al. 2016) over the trailing dimensions ``normalized_shape``,
    with elementwise ``weight`` and ``bias`` of that shape, as ``torch.nn.functional.layer_norm``.

    Example::

        >>> y = layer_norm(torch.randn(2, 3, 4, 4), (3, 4, 4))   # each sample normalised
    """
    _check_tensor("layer_norm", input)
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    shape: List[int] = [int(s) for s in normalized_shape]
    return ops.layer_norm_forward(input, shape, weight, bias, float(eps))[0]
