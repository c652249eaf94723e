"""ONNX export of models that use torch_cnn_ops' layers.

``torch.onnx.export(model, args, dynamo=True)`` meets our operators (``cnn_ops::*``) in the
exported graph and knows no ONNX function for them. :data:`TRANSLATIONS` gives one for each
forward operator, built from standard ONNX operators (opset 18), so the model runs in ONNX
Runtime, TensorRT or OpenVINO with no custom operator:

- twins of torch's layers become the ONNX operator of that layer: ``Conv``, ``MaxPool`` (with
  its indices turned into torch's per-plane ones), ``AveragePool``, ``BatchNormalization``,
  ``InstanceNormalization``, ``LayerNormalization``, ``GroupNormalization``;
- the rest become exact compositions: min pooling is the negated max pooling of the negated
  input; ``flip=True`` and 'same'/'full' padding are a reversed kernel (``torch.flip`` in the
  graph) and the pads of ``Conv``; k-max pooling is ``TopK`` followed by a sort of the chosen
  positions; Gaussian pooling is a depthwise ``Conv`` with the Gaussian kernel; tiled and unshared
  convolution gather the input's patches and multiply them by each position's kernel; adaptive
  pooling with windows of unequal sizes gathers each window; pooling with ``ceil_mode`` or a
  ``divisor_override``, and Lp pooling, sum their windows with a depthwise ``Conv`` of ones and
  divide by torch's divisors; stochastic pooling in eval is ``sum(x^2) / sum(x)`` per window.

Stochastic pooling in training draws random picks and has no translation: export the model in
``eval()`` mode. The compositions that index or divide by position (tiled and unshared
convolution, pooling with uneven windows, ``ceil_mode``) need the spatial sizes to be static; the
batch size may be dynamic everywhere.

Use :func:`export` (``torch.onnx.export`` with our table), or pass the table yourself::

    onnx_program = torch.onnx.export(model, (x,), dynamo=True,
                                     custom_translation_table=tco.onnx.TRANSLATIONS)

Needs the ``onnxscript`` and ``onnx`` packages (``pip install onnxscript onnx``), as
``torch.onnx.export(..., dynamo=True)`` does.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .ops._geometry import conv_out_size, pool_out_size

try:
    from onnxscript import ir
    from onnxscript import opset18 as op
except ImportError as e:  # pragma: no cover - exercised only without onnxscript
    raise ImportError("torch_cnn_ops.onnx needs the onnxscript and onnx packages: pip install onnxscript onnx") from e

__all__ = ["TRANSLATIONS", "export"]

# --- helpers -------------------------------------------------------------------------------------


def _const(array) -> Any:
    return op.Constant(value=ir.tensor(np.ascontiguousarray(array)))


def _ints(values: Sequence[int]) -> Any:
    return _const(np.asarray(list(values), dtype=np.int64))


def _like(array, x) -> Any:
    """A constant of ``x``'s dtype (given in float64, rounded once)."""
    return op.CastLike(_const(np.asarray(array, dtype=np.float64)), x)


def _static(op_name: str, x, dims: Sequence[int], what: str = "spatial sizes") -> list:
    """The sizes of ``x`` along ``dims``, which the translation needs as numbers."""
    sizes = []
    for d in dims:
        size = x.shape[d]
        if not isinstance(size, int):
            raise ValueError(
                f"cnn_ops.{op_name}: the ONNX translation needs static {what}, got input of shape {x.shape}; "
                f"export with a dynamic batch dimension only (dynamic_shapes marking dimension 0)")
        sizes.append(size)
    return sizes


def _channels(op_name: str, x) -> int:
    return _static(op_name, x, [1], "channels")[0]


def _stat(t, x) -> Any:
    """Statistics come out in float32 for half input and in the input's dtype otherwise, as the op's."""
    return t if x.dtype in (ir.DataType.FLOAT, ir.DataType.DOUBLE) else op.Cast(t, to=ir.DataType.FLOAT)


def _per_channel(v, nd: int) -> Any:
    """A (C,) vector shaped (C, 1, ..., 1) to broadcast over an (N, C, *spatial) tensor."""
    return op.Reshape(v, _ints([-1] + [1] * nd))


def _rank(op_name: str, x) -> int:
    if x.shape is None:
        raise ValueError(f"cnn_ops.{op_name}: the ONNX translation needs the input's rank")
    return len(x.shape)


def _window_sum(x, channels: int, kernel: Sequence[int], stride: Sequence[int], pads_begin: Sequence[int],
                pads_end: Sequence[int]) -> Any:
    """The sum of each window (zeros outside the input): a depthwise Conv with a kernel of ones."""
    ones = _like(np.ones((channels, 1, *kernel)), x)
    return op.Conv(x, ones, strides=list(stride), pads=list(pads_begin) + list(pads_end), group=channels)


def _ceil_pool_sum(x, channels, sizes, kernel, stride, padding, ceil_mode, padding_end):
    """Window sums with torch's pooling geometry (ceil_mode and padding_end included), and the
    output size."""
    out = [int(pool_out_size(n, p, k, s, 1, ceil_mode, pe))
           for n, k, s, p, pe in zip(sizes, kernel, stride, padding, padding_end)]
    # The end padding that makes the Conv give exactly the `out` windows of the ceil_mode geometry.
    end = [max(0, (o - 1) * s + k - n - p) for o, n, k, s, p in zip(out, sizes, kernel, stride, padding)]
    return _window_sum(x, channels, kernel, stride, padding, end), out


def _avg_divisors(sizes, out, kernel, stride, padding, count_include_pad, divisor_override,
                  padding_end) -> np.ndarray:
    """torch's avg_pool divisor of every output position: the window clipped to the padded input
    (count_include_pad) or to the input, or divisor_override."""
    per_dim = []
    for n, o, k, s, p, pe in zip(sizes, out, kernel, stride, padding, padding_end):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + pe)
        padded = end - start
        inside = np.minimum(end, n) - np.maximum(start, 0)
        per_dim.append(padded if count_include_pad else inside)
    divisor = per_dim[0].astype(np.float64)
    for counts in per_dim[1:]:
        divisor = np.multiply.outer(divisor, counts)
    if divisor_override is not None:
        divisor = np.full(divisor.shape, float(divisor_override))
    return divisor


def _adaptive_windows(size: int, out: int):
    """torch's adaptive pooling windows along one dimension: [floor(i n / o), ceil((i + 1) n / o))."""
    starts = [(i * size) // out for i in range(out)]
    ends = [-((-(i + 1) * size) // out) for i in range(out)]
    return starts, ends


def _adaptive_gather_table(sizes, out) -> np.ndarray:
    """For each output position (flattened), the flat input indices of its window, padded to the
    largest window with repeats of the window's first element (neutral for max and argmax)."""
    axes = [_adaptive_windows(n, o) for n, o in zip(sizes, out)]
    widest = [max(e - s for s, e in zip(*w)) for w in axes]
    table = np.zeros((math.prod(out), math.prod(widest)), dtype=np.int64)
    for pos, cell in enumerate(np.ndindex(*out)):
        window = np.meshgrid(*[np.arange(axes[d][0][i], axes[d][1][i]) for d, i in enumerate(cell)], indexing="ij")
        flat = np.ravel_multi_index([w.reshape(-1) for w in window], sizes)
        table[pos, :] = flat[0]
        table[pos, :flat.size] = flat
    return table


def _plane(x, channels: int) -> Any:
    """(N, C, *spatial) -> (N, C, prod(spatial))."""
    return op.Reshape(x, _ints([0, channels, -1]))


def _unplane(y, channels: int, out: Sequence[int]) -> Any:
    return op.Reshape(y, _ints([0, channels, *out]))


# --- convolution ---------------------------------------------------------------------------------


def conv_forward(input, weight, bias, stride: Sequence[int], padding: Sequence[int], padding_end: Sequence[int],
                 dilation: Sequence[int], groups: int, algorithm: str):
    # flip=True reached the op as a flipped weight, and 'same'/'full'/asymmetric padding as the pads.
    args = (input, weight) if bias is None else (input, weight, bias)
    return op.Conv(*args, strides=list(stride), pads=list(padding) + list(padding_end), dilations=list(dilation),
                   group=groups)


def local_forward(input, weight, bias, stride: Sequence[int], padding: Sequence[int],
                  padding_end: Sequence[int], dilation: Sequence[int]):
    """Tiled/unshared convolution: the patches of every output position (Gather), times the
    kernel of that position (tile index = position modulo the tile size), as one batched MatMul
    over positions."""
    nd = len(stride)
    sizes = _static("local_forward", input, range(2, 2 + nd))
    channels = _channels("local_forward", input)
    wshape = _static("local_forward", weight, range(2 * nd + 2), "weight sizes")
    grid, out_channels, kernel = wshape[:nd], wshape[nd], wshape[nd + 2:]
    padded = [n + lo + hi for n, lo, hi in zip(sizes, padding, padding_end)]
    out = [int(conv_out_size(*args)) for args in zip(sizes, padding, padding_end, kernel, stride, dilation)]
    positions, taps = math.prod(out), math.prod(kernel)
    # patch_index[position, tap]: the tap's flat index in the padded plane
    plane_strides = np.cumprod([1] + padded[::-1])[::-1][1:]
    start = np.zeros(out, dtype=np.int64)
    for d in range(nd):
        shape = [1] * nd
        shape[d] = out[d]
        start = start + (np.arange(out[d]) * stride[d] * plane_strides[d]).reshape(shape)
    offset = np.zeros(kernel, dtype=np.int64)
    for d in range(nd):
        shape = [1] * nd
        shape[d] = kernel[d]
        offset = offset + (np.arange(kernel[d]) * dilation[d] * plane_strides[d]).reshape(shape)
    patch_index = start.reshape(-1, 1) + offset.reshape(1, -1)

    x = input
    if any(padding) or any(padding_end):
        x = op.Pad(x, _ints([0, 0, *padding, 0, 0, *padding_end]))
    patches = op.Gather(_plane(x, channels), _const(patch_index), axis=2)  # (N, C, L, K)
    patches = op.Reshape(op.Transpose(patches, perm=[2, 0, 1, 3]), _ints([positions, -1, channels * taps]))
    kernels = op.Reshape(weight, _ints([math.prod(grid), out_channels, channels * taps]))
    if list(grid) != out:  # tiled: position (i, j, ...) uses weight[i % T_1, j % T_2, ...]
        tile = np.zeros(out, dtype=np.int64)
        tile_strides = np.cumprod([1] + list(grid[::-1]))[::-1][1:]
        for d in range(nd):
            shape = [1] * nd
            shape[d] = out[d]
            tile = tile + ((np.arange(out[d]) % grid[d]) * tile_strides[d]).reshape(shape)
        kernels = op.Gather(kernels, _const(tile.reshape(-1)), axis=0)
    result = op.MatMul(patches, op.Transpose(kernels, perm=[0, 2, 1]))  # (L, N, C_out)
    result = op.Reshape(op.Transpose(result, perm=[1, 2, 0]), _ints([0, out_channels, *out]))
    if bias is not None:
        per_position = bias.shape is not None and len(bias.shape) == 1 + nd
        result = op.Add(result, bias if per_position else _per_channel(bias, nd))
    return result


# --- pooling -------------------------------------------------------------------------------------


def max_pool_forward(input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                     dilation: Sequence[int], ceil_mode: bool, minimum: bool, padding_end: Sequence[int] = ()):
    x = op.Neg(input) if minimum else input
    pads = list(padding) + list(padding_end or padding)  # ONNX's order: every start, then every end
    values, indices = op.MaxPool(x, kernel_shape=list(kernel_size), strides=list(stride), pads=pads,
                                 dilations=list(dilation), ceil_mode=int(ceil_mode), storage_order=0)
    # ONNX counts indices over the whole (N, C, *spatial) tensor, torch within each plane.
    indices = op.Mod(indices, op.ReduceProd(op.Shape(input, start=2), keepdims=1))
    return (op.Neg(values) if minimum else values), indices


def adaptive_max_pool_forward(input, output_size: Sequence[int], minimum: bool):
    nd = len(output_size)
    sizes = _static("adaptive_max_pool_forward", input, range(2, 2 + nd))
    if all(n % o == 0 for n, o in zip(sizes, output_size)):  # equal windows: a MaxPool
        k = [n // o for n, o in zip(sizes, output_size)]
        return max_pool_forward(input, k, k, [0] * nd, [1] * nd, False, minimum)
    channels = _channels("adaptive_max_pool_forward", input)
    table = _adaptive_gather_table(sizes, output_size)
    x = op.Neg(input) if minimum else input
    windows = op.Gather(_plane(x, channels), _const(table), axis=2)  # (N, C, L, widest)
    values = op.ReduceMax(windows, _ints([3]), keepdims=0)
    chosen = op.ArgMax(windows, axis=3, keepdims=0)  # first maximum, as torch
    position = op.Add(chosen, _const((np.arange(table.shape[0]) * table.shape[1]).astype(np.int64)))
    indices = op.Gather(_const(table.reshape(-1)), position, axis=0)
    values = _unplane(values, channels, output_size)
    return (op.Neg(values) if minimum else values), _unplane(indices, channels, output_size)


def avg_pool_forward(input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                     ceil_mode: bool, count_include_pad: bool, divisor_override: Optional[int],
                     padding_end: Sequence[int] = ()):
    nd = len(kernel_size)
    padding_end = list(padding_end or padding)
    if not ceil_mode and divisor_override is None:
        return op.AveragePool(input, kernel_shape=list(kernel_size), strides=list(stride),
                              pads=list(padding) + padding_end, count_include_pad=int(count_include_pad))
    sizes = _static("avg_pool_forward", input, range(2, 2 + nd))
    sums, out = _ceil_pool_sum(input, _channels("avg_pool_forward", input), sizes, kernel_size, stride, padding,
                               ceil_mode, padding_end)
    divisor = _avg_divisors(sizes, out, kernel_size, stride, padding, count_include_pad, divisor_override,
                            padding_end)
    return op.Div(sums, _like(divisor, input))


def adaptive_avg_pool_forward(input, output_size: Sequence[int]):
    nd = len(output_size)
    if all(o == 1 for o in output_size):
        return op.GlobalAveragePool(input)
    sizes = _static("adaptive_avg_pool_forward", input, range(2, 2 + nd))
    if all(n % o == 0 for n, o in zip(sizes, output_size)):
        k = [n // o for n, o in zip(sizes, output_size)]
        return op.AveragePool(input, kernel_shape=k, strides=k)
    # Uneven windows: each output is a weighted sum of its window, one MatMul by (plane, L) weights.
    channels = _channels("adaptive_avg_pool_forward", input)
    table = _adaptive_gather_table(sizes, output_size)
    weights = np.zeros((math.prod(sizes), table.shape[0]))
    for pos, row in enumerate(table):
        window = np.unique(row)
        weights[window, pos] = 1.0 / len(window)
    return _unplane(op.MatMul(_plane(input, channels), _like(weights, input)), channels, output_size)


def lp_pool_forward(input, norm_type: float, kernel_size: Sequence[int], stride: Sequence[int], ceil_mode: bool):
    """torch's formula: (avg_pool(x^p, ceil_mode) * prod(kernel_size))^(1/p)."""
    nd = len(kernel_size)
    channels, zeros = _channels("lp_pool_forward", input), [0] * nd
    p = float(norm_type)
    powered = input if p == 1.0 else op.Mul(input, input) if p == 2.0 else op.Pow(input, _like(p, input))
    if ceil_mode:  # the windows cut by the end count prod(kernel_size) / their size times
        sizes = _static("lp_pool_forward", input, range(2, 2 + nd))
        sums, out = _ceil_pool_sum(powered, channels, sizes, kernel_size, stride, zeros, ceil_mode, zeros)
        scale = math.prod(kernel_size) / _avg_divisors(sizes, out, kernel_size, stride, zeros, True, None, zeros)
        sums = op.Mul(sums, _like(scale, input))
    else:
        sums = _window_sum(powered, channels, kernel_size, stride, zeros, zeros)
    return sums if p == 1.0 else op.Pow(sums, _like(1.0 / p, input))


def kmax_pool_forward(input, k: int, dim: int):
    """The k largest values along dim, kept in their order: TopK, then the chosen positions sorted."""
    rank = _rank("kmax_pool_forward", input)
    axis = dim % rank
    count = _ints([k])
    _, chosen = op.TopK(input, count, axis=axis, largest=1, sorted=1)
    positions, _ = op.TopK(chosen, count, axis=axis, largest=0, sorted=1)
    return op.GatherElements(input, positions, axis=axis), positions


def gaussian_kernel(kernel_size: Sequence[int], sigma: float) -> np.ndarray:
    """The Gaussian pooling kernel: exp(-d^2 / (2 sigma^2)) around the window's centre, summing to 1."""
    grids = np.meshgrid(*[np.arange(k) - (k - 1) / 2.0 for k in kernel_size], indexing="ij")
    weights = np.exp(-sum(g * g for g in grids) / (2.0 * sigma * sigma))
    return weights / weights.sum()


def gaussian_pool_forward(input, kernel_size: Sequence[int], stride: Sequence[int], padding: Sequence[int],
                          sigma: float):
    channels = _channels("gaussian_pool_forward", input)
    kernel = np.broadcast_to(gaussian_kernel(kernel_size, sigma), (channels, 1, *kernel_size))
    return op.Conv(input, _like(kernel, input), strides=list(stride), pads=list(padding) * 2, group=channels)


def stochastic_pool_eval_forward(input, kernel_size: Sequence[int], stride: Sequence[int]):
    """sum(x^2) / sum(x) per window, 0 for an all-zero window."""
    channels = _channels("stochastic_pool_eval_forward", input)
    zeros = [0] * len(kernel_size)
    s1 = _window_sum(input, channels, kernel_size, stride, zeros, zeros)
    s2 = _window_sum(op.Mul(input, input), channels, kernel_size, stride, zeros, zeros)
    positive = op.Greater(s1, _like(0.0, input))
    return op.Where(positive, op.Div(s2, op.Where(positive, s1, _like(1.0, input))), _like(0.0, input))


def stochastic_pool_forward(input, uniform, kernel_size: Sequence[int], stride: Sequence[int]):
    raise NotImplementedError(
        "cnn_ops.stochastic_pool_forward: stochastic pooling in training draws random picks and has no ONNX "
        "translation; export the model in eval() mode (StochasticPool2d then gives sum(x^2) / sum(x) per window)")


# --- normalization -------------------------------------------------------------------------------


def _moments(x, axes: Sequence[int]):
    mean = op.ReduceMean(x, _ints(axes), keepdims=1)
    centred = op.Sub(x, mean)
    return mean, centred, op.ReduceMean(op.Mul(centred, centred), _ints(axes), keepdims=1)


def _affine(y, weight, bias, nd: int):
    if weight is not None:
        y = op.Mul(y, _per_channel(weight, nd))
    if bias is not None:
        y = op.Add(y, _per_channel(bias, nd))
    return y


def _vector(x) -> Any:
    return op.Reshape(x, _ints([-1]))


def _per_channel_constant(value: float, input) -> Any:
    """A (C,) vector of ``value`` for the channels of ``input`` (C may be dynamic)."""
    return op.Expand(_like([value], input), op.Shape(input, start=1, end=2))


def batch_norm_forward(input, weight, bias, running_mean, running_var, training: bool, eps: float):
    nd = _rank("batch_norm_forward", input) - 2
    scale = weight if weight is not None else _per_channel_constant(1.0, input)
    shift = bias if bias is not None else _per_channel_constant(0.0, input)
    if not training:
        out = op.BatchNormalization(input, scale, shift, running_mean, running_var, epsilon=eps)
        invstd = op.Reciprocal(op.Sqrt(op.Add(running_var, _like(eps, running_var))))
        return out, _stat(op.Identity(running_mean), input), _stat(invstd, input), _stat(op.Identity(running_var), input)
    axes = [0] + list(range(2, 2 + nd))
    mean, centred, var = _moments(input, axes)
    invstd = op.Reciprocal(op.Sqrt(op.Add(var, _like(eps, input))))
    if nd > 0 and isinstance(input.shape[0], int) and input.shape[0] == 1:
        # One sample (instance norm's (1, N * C, *) view): the statistics of each channel's plane.
        out = op.InstanceNormalization(input, scale, shift, epsilon=eps)
    else:
        out = _affine(op.Mul(centred, invstd), weight, bias, nd)
    return out, _stat(_vector(mean), input), _stat(_vector(invstd), input), _stat(_vector(var), input)


def batch_norm_stats(input):
    nd = _rank("batch_norm_stats", input) - 2
    mean, _, var = _moments(input, [0] + list(range(2, 2 + nd)))
    return _stat(_vector(mean), input), _stat(_vector(var), input)


def batch_norm_elemt(input, weight, bias, mean, invstd):
    nd = _rank("batch_norm_elemt", input) - 2
    cast = lambda v: op.CastLike(v, input)  # noqa: E731  (statistics may be float32 for half input)
    y = op.Mul(op.Sub(input, _per_channel(cast(mean), nd)), _per_channel(cast(invstd), nd))
    return _affine(y, weight, bias, nd)


def group_norm_forward(input, weight, bias, num_groups: int, eps: float):
    """Normalised per (sample, group) by ONNX's GroupNormalization with unit scale, then the
    per-channel affine (opset 18's GroupNormalization scales per group)."""
    nd = _rank("group_norm_forward", input) - 2
    groups = _ints([num_groups])
    ones, zeros = op.Expand(_like([1.0], input), groups), op.Expand(_like([0.0], input), groups)
    out = op.GroupNormalization(input, ones, zeros, epsilon=eps, num_groups=num_groups)
    grouped = op.Reshape(input, _ints([0, num_groups, -1]))
    mean, _, var = _moments(grouped, [2])
    rstd = op.Reciprocal(op.Sqrt(op.Add(var, _like(eps, input))))
    stats_shape = _ints([-1, num_groups])
    return (_affine(out, weight, bias, nd), _stat(op.Reshape(mean, stats_shape), input),
            _stat(op.Reshape(rstd, stats_shape), input))


def layer_norm_forward(input, normalized_shape: Sequence[int], weight, bias, eps: float):
    axis = -len(normalized_shape)
    scale = weight if weight is not None else _like(np.ones(list(normalized_shape)), input)
    args = (input, scale) if bias is None else (input, scale, bias)
    out, mean, invstd = op.LayerNormalization(*args, axis=axis, epsilon=eps, stash_type=1)
    return out, _stat(_vector(mean), input), _stat(_vector(invstd), input)


_OPS = torch.ops.cnn_ops

TRANSLATIONS: Dict[Callable, Callable] = {
    _OPS.conv_forward.default: conv_forward,
    _OPS.local_forward.default: local_forward,
    _OPS.max_pool_forward.default: max_pool_forward,
    _OPS.adaptive_max_pool_forward.default: adaptive_max_pool_forward,
    _OPS.avg_pool_forward.default: avg_pool_forward,
    _OPS.adaptive_avg_pool_forward.default: adaptive_avg_pool_forward,
    _OPS.lp_pool_forward.default: lp_pool_forward,
    _OPS.kmax_pool_forward.default: kmax_pool_forward,
    _OPS.gaussian_pool_forward.default: gaussian_pool_forward,
    _OPS.stochastic_pool_forward.default: stochastic_pool_forward,
    _OPS.stochastic_pool_eval_forward.default: stochastic_pool_eval_forward,
    _OPS.batch_norm_forward.default: batch_norm_forward,
    _OPS.batch_norm_stats.default: batch_norm_stats,
    _OPS.batch_norm_elemt.default: batch_norm_elemt,
    _OPS.group_norm_forward.default: group_norm_forward,
    _OPS.layer_norm_forward.default: layer_norm_forward,
}
"""The ONNX translation of each forward operator, for ``torch.onnx.export``'s
``custom_translation_table``. The backward operators and ``batch_norm_update_stats`` (a
training-time side effect) never appear in an inference graph."""


def export(model: torch.nn.Module, args: tuple, f=None, *, custom_translation_table: Optional[dict] = None,
           **kwargs):
    """``torch.onnx.export(model, args, f, dynamo=True, ...)`` with :data:`TRANSLATIONS` (entries of
    ``custom_translation_table`` take precedence); other keyword arguments go to torch as they are
    (``dynamic_shapes``, ``input_names``, ``opset_version``...). Returns torch's ``ONNXProgram``.

    Example::

        >>> batch = torch.export.Dim("batch")
        >>> program = tco.onnx.export(model.eval(), (x,), "model.onnx", dynamic_shapes=({0: batch},))
    """
    if kwargs.pop("dynamo", True) is not True:
        raise ValueError("torch_cnn_ops.onnx.export: our operators export through the dynamo exporter only "
                         "(dynamo=True)")
    table = dict(TRANSLATIONS)
    table.update(custom_translation_table or {})
    return torch.onnx.export(model, args, f, dynamo=True, custom_translation_table=table, **kwargs)
