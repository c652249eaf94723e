"""Pooling: max, min, avg and lp pooling over windows, and adaptive max, min and avg pooling,
each in 1d, 2d and 3d; Gaussian-weighted and stochastic pooling (2d); k-max pooling (static and dynamic) and channel max pooling (maxout).

Names, arguments and defaults follow ``torch.nn.functional`` (``min_pool*`` and
``adaptive_min_pool*`` take the arguments of their max twins). Inputs are batched
``(N, C, *spatial)`` or unbatched ``(C, *spatial)``. Indices (``return_indices=True``) are
flat positions in each input plane, as torch's. Max, min and avg pooling also take
``padding="valid"`` and ``padding="same"`` (torch's pooling does not): the output as large as
the input at stride 1 and ``ceil(size / stride)`` with a stride, TensorFlow's rule (as timm's
``MaxPool2dSame`` and ``AvgPool2dSame``), the larger half of the padding at the end; for avg
pooling ``count_include_pad`` then counts that padding as any other.

Arguments are read by torch's rules, with torch's exception classes (see ``torch_cnn_ops._utils``):
sizes are ints (NumPy integers and integer tensors too) or sequences of them, ``ceil_mode``
and ``count_include_pad`` bools; wrong types are TypeErrors, sequences of the wrong length and
inputs of the wrong rank RuntimeErrors, and integer inputs of average, lp and adaptive pooling
NotImplementedErrors, as torch's (so are those of Gaussian and stochastic pooling, weighted
averages and samples). Max and min pooling have floating-point kernels only: an integer input,
which torch's max pooling takes, is a RuntimeError naming the dtype.
"""

from typing import Optional, Sequence, Union

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from .. import _C
from .._fx import leaf, named_leaf
from .._utils import IntOrTuple, as_bool, as_int, batched, check_floating, ntuple
from .conv import _conv_padding

ops = torch.ops.cnn_ops


def _batched(name: str, nd: int, input: Tensor):
    if not isinstance(input, Tensor):
        raise TypeError(f"{name}(): argument 'input' must be a tensor, got {type(input).__name__}")
    return batched(name, nd, input)


def _stride(stride, kernel_size, nd, name=""):
    if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0):
        return kernel_size
    return ntuple(stride, nd, "stride", name)


def _unbatch(result, unbatched):
    if not unbatched:
        return result
    if isinstance(result, tuple):
        return tuple(r.squeeze(0) for r in result)
    return result.squeeze(0)


PADDING_STRINGS = ("valid", "same")


def _pads(name, padding, kernel_size, stride, dilation, x):
    """The pads before and after the input, as lists: the ops always take both (padding_end is
    passed even where it equals padding: AOTInductor's runner gives an omitted list argument as
    None). A tuple pads both sides alike. ``padding="valid"`` or ``"same"``, which torch's
    pooling lacks: "same" is convolution's rule (``conv_padding``): at stride 1 the output as
    large as the input, with a stride TensorFlow's (as timm's ``MaxPool2dSame``): ``ceil(size /
    stride)`` outputs, the larger half of the padding at the end. Each side must stay within
    half the kernel (torch's bound, which keeps every window on the input), which only a
    dilation can break."""
    if not isinstance(padding, str):
        return list(padding), list(padding)
    if padding not in PADDING_STRINGS:  # a TypeError, as torch's pooling gives for every string
        raise TypeError(f"{name}(): argument 'padding' must be an int, a tuple of {len(kernel_size)} ints or one of "
                        f"{PADDING_STRINGS}, got the string {padding!r}")
    begin, end = _conv_padding(padding, kernel_size, stride, dilation, fn=name, input_size=tuple(x.shape[2:]))
    if any(max(b, e) > k // 2 for b, e, k in zip(begin, end, kernel_size)):
        raise RuntimeError(f"{name}(): padding='same' with kernel_size {tuple(kernel_size)}, stride {tuple(stride)} "
                           f"and dilation {tuple(dilation)} needs padding {tuple(begin)} before and {tuple(end)} "
                           f"after an input of spatial size {tuple(x.shape[2:])}, more than half of kernel_size on "
                           f"a side: some windows would hold no input")
    return begin, end


def _extreme_pool(name, nd, minimum, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    # Plain calls run the op from C++ (csrc/python_calls.cpp), as convolution's do.
    if not torch.compiler.is_compiling():
        result = _C.max_pool(nd, minimum, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)
        if result is not NotImplemented:
            return result
    # torch's argument parser first: a TypeError for what is no int or bool, a RuntimeError for a wrong length
    kernel_size = ntuple(kernel_size, nd, "kernel_size", name)
    stride = _stride(stride, kernel_size, nd, name)
    padded_by = padding if isinstance(padding, str) else ntuple(padding, nd, "padding", name)
    dilation = ntuple(dilation, nd, "dilation", name)
    if ceil_mode is not False and ceil_mode is not True:
        as_bool(ceil_mode, "ceil_mode", name)
    x, unbatched = _batched(name, nd, input)
    begin, end = _pads(name, padded_by, kernel_size, stride, dilation, x)
    out, indices = ops.max_pool_forward(x, list(kernel_size), list(stride), begin, list(dilation), ceil_mode, minimum,
                                        end)
    return _unbatch((out, indices) if return_indices else out, unbatched)


def _public_extreme_pool(nd: int, minimum: bool):
    """max_pool{nd}d or min_pool{nd}d, with the signature of torch's max_pool{nd}d, as a torch.fx leaf."""
    name = f"{'min' if minimum else 'max'}_pool{nd}d"

    def extreme_pool(input: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                     padding: Union[str, IntOrTuple] = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
                     return_indices: bool = False):
        return _extreme_pool(name, nd, minimum, input, kernel_size, stride, padding, dilation, ceil_mode,
                             return_indices)

    doc = f"Minimum over each window; equals ``-max_pool{nd}d(-input)`` (values, indices, gradients)."
    return named_leaf(extreme_pool, name, doc if minimum else None)


max_pool1d, max_pool2d, max_pool3d = (_public_extreme_pool(nd, minimum=False) for nd in (1, 2, 3))
min_pool1d, min_pool2d, min_pool3d = (_public_extreme_pool(nd, minimum=True) for nd in (1, 2, 3))


def _avg_pool(name, nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    if not torch.compiler.is_compiling():  # plain calls from C++, as in _extreme_pool
        out = _C.avg_pool(nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
        if out is not NotImplemented:
            return out
    kernel_size = ntuple(kernel_size, nd, "kernel_size", name)
    stride = _stride(stride, kernel_size, nd, name)
    padded_by = padding if isinstance(padding, str) else ntuple(padding, nd, "padding", name)
    if ceil_mode is not False and ceil_mode is not True:
        as_bool(ceil_mode, "ceil_mode", name)
    if count_include_pad is not True and count_include_pad is not False:
        as_bool(count_include_pad, "count_include_pad", name)
    if divisor_override is not None and type(divisor_override) is not int:
        if isinstance(divisor_override, Tensor) and divisor_override.dim() != 0:  # torch's parser: no 1-d tensor
            raise TypeError(f"{name}(): argument 'divisor_override' must be an int, got a tensor of shape "
                            f"{tuple(divisor_override.shape)}")
        divisor_override = as_int(divisor_override, "divisor_override", name)
    x, unbatched = _batched(name, nd, input)
    check_floating(name, x)
    # A divisor_override of 0 is refused by the op, a negative one divides as torch's does.
    begin, end = _pads(name, padded_by, kernel_size, stride, (1,) * nd, x)
    out = ops.avg_pool_forward(x, list(kernel_size), list(stride), begin, ceil_mode, count_include_pad,
                               divisor_override, end)
    return _unbatch(out, unbatched)


def _public_avg_pool(nd: int):
    """avg_pool{nd}d with the signature of torch's (no ``divisor_override`` in 1-d), as a torch.fx leaf."""
    name = f"avg_pool{nd}d"
    if nd == 1:
        def avg_pool(input: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                     padding: Union[str, IntOrTuple] = 0, ceil_mode: bool = False,
                     count_include_pad: bool = True) -> Tensor:
            return _avg_pool(name, nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad, None)
    else:
        def avg_pool(input: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                     padding: Union[str, IntOrTuple] = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                     divisor_override: Optional[int] = None) -> Tensor:
            return _avg_pool(name, nd, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                             divisor_override)
    return named_leaf(avg_pool, name)


avg_pool1d, avg_pool2d, avg_pool3d = (_public_avg_pool(nd) for nd in (1, 2, 3))


def _lp_kernel_size(name, nd, kernel_size):
    """``kernel_size`` of lp pooling as an nd-tuple, with the errors of torch's ``F.lp_poolNd``,
    which unpacks it in Python before its avg pooling reads it."""
    if type(kernel_size) is int:
        return (kernel_size,) * nd
    if nd == 1:
        size = ntuple(kernel_size, 1, "kernel_size", name)
        if isinstance(kernel_size, (list, tuple)):  # torch multiplies its result by kernel_size
            raise TypeError(f"{name}(): argument 'kernel_size' must be an int, got {kernel_size!r}")
        return size
    if isinstance(kernel_size, Iterable):
        try:
            values = tuple(kernel_size)
        except TypeError:
            raise TypeError(f"{name}(): argument 'kernel_size' must be an int or a tuple of {nd} ints, got "
                            f"{kernel_size!r} of type {type(kernel_size).__name__}") from None
        if len(values) != nd:
            raise ValueError(f"{name}(): argument 'kernel_size' must be an int or a tuple of {nd} ints, got "
                             f"{len(values)} values: {kernel_size!r}")
    return ntuple(kernel_size, nd, "kernel_size", name)


def _lp_pool(name, nd, input, norm_type, kernel_size, stride, ceil_mode):
    kernel_size = _lp_kernel_size(name, nd, kernel_size)
    if not isinstance(input, Tensor):  # torch's Python layer computes input.pow(norm_type) first
        raise AttributeError(f"{name}(): argument 'input' must be a tensor, got {type(input).__name__}")
    try:
        p = float(norm_type)
    except (TypeError, ValueError):
        raise TypeError(f"{name}(): argument 'norm_type' must be a number, got {norm_type!r} of type "
                        f"{type(norm_type).__name__}") from None
    if p == math.inf or p == -math.inf:  # as torch: the largest or smallest magnitude in each window
        return _extreme_pool(name, nd, p < 0, input.abs(), kernel_size, stride, 0, 1, ceil_mode, False)
    stride = _stride(stride, kernel_size, nd, name)
    if ceil_mode is not False and ceil_mode is not True:
        as_bool(ceil_mode, "ceil_mode", name)
    x, unbatched = _batched(name, nd, input)
    if p > 0:
        try:
            return _unbatch(ops.lp_pool_forward(x, p, list(kernel_size), list(stride), ceil_mode), unbatched)
        except RuntimeError:
            if x.is_floating_point():
                raise
    # a norm_type of 0, a negative or NaN one, or an integer input: torch's formula on our average pooling
    out = _avg_pool(name, nd, x.pow(norm_type), kernel_size, stride, 0, ceil_mode, True, None)
    if p == 0:
        raise ZeroDivisionError(f"{name}(): norm_type must not be 0 (the result is the (1 / norm_type)-th power of "
                                f"the window's sum of x^norm_type), got norm_type={norm_type!r}")
    out = (torch.sign(out) * torch.relu(torch.abs(out))).mul(math.prod(kernel_size)).pow(1.0 / norm_type)
    return _unbatch(out, unbatched)


def _public_lp_pool(nd: int):
    """lp_pool{nd}d with the signature of torch's, as a torch.fx leaf."""
    name = f"lp_pool{nd}d"

    def lp_pool(input: Tensor, norm_type: Union[int, float], kernel_size: IntOrTuple,
                stride: Optional[IntOrTuple] = None, ceil_mode: bool = False) -> Tensor:
        return _lp_pool(name, nd, input, norm_type, kernel_size, stride, ceil_mode)

    return named_leaf(lp_pool, name, f"``(sum over the window of x^p)^(1/p)``, computed as torch's ``F.{name}``.")


lp_pool1d, lp_pool2d, lp_pool3d = (_public_lp_pool(nd) for nd in (1, 2, 3))


# ---- adaptive ---------------------------------------------------------------------------------------


def _output_size(name, nd, input, output_size) -> list:
    """``output_size`` as a list of nd sizes, with torch's errors: its argument parser's in 1-d
    (an int or one int in a sequence), and in 2-d and 3-d first those of its Python layer (a
    sequence whose Nones take the input's sizes; a TypeError for what has no length, a
    ValueError for an input of too few dimensions), then the parser's (no repetition of a
    single entry: a sequence of another length than nd is a RuntimeError)."""
    if nd > 1 and not isinstance(input, Tensor):  # torch's Python layer reads input.size() first
        raise AttributeError(f"{name}(): argument 'input' must be a tensor, got {type(input).__name__}")
    if type(output_size) is int:
        return [output_size] * nd
    if nd == 1:
        return list(ntuple(output_size, 1, "output_size", name))
    if isinstance(output_size, int):
        return [as_int(output_size, "output_size", name)] * nd
    try:
        n = len(output_size)
    except TypeError:
        raise TypeError(f"{name}(): argument 'output_size' must be an int or a tuple of {nd} ints or Nones, got "
                        f"{output_size!r} of type {type(output_size).__name__}") from None
    if input.dim() <= n:
        raise ValueError(f"{name}(): input of shape {tuple(input.shape)} has too few dimensions for output_size "
                         f"{output_size!r}: expected at least {n + 1}")
    sizes = [as_int(input.shape[input.dim() - n + i] if v is None else v, "output_size", name)
             for i, v in enumerate(output_size)]
    if n != nd:
        raise RuntimeError(f"{name}(): argument 'output_size' must be an int or a tuple of {nd} ints, got {n} "
                           f"values: {output_size!r}")
    return sizes


def _adaptive_extreme(name, nd, minimum, input, output_size, return_indices):
    sizes = _output_size(name, nd, input, output_size)
    x, unbatched = _batched(name, nd, input)
    check_floating(name, x)
    out, indices = ops.adaptive_max_pool_forward(x, sizes, minimum)
    return _unbatch((out, indices) if return_indices else out, unbatched)


def _public_adaptive_extreme(nd: int, minimum: bool):
    """adaptive_max_pool{nd}d or adaptive_min_pool{nd}d, with the signature of torch's
    adaptive_max_pool{nd}d, as a torch.fx leaf."""
    name = f"adaptive_{'min' if minimum else 'max'}_pool{nd}d"

    def adaptive_extreme(input: Tensor, output_size, return_indices: bool = False):
        return _adaptive_extreme(name, nd, minimum, input, output_size, return_indices)

    return named_leaf(adaptive_extreme, name)


adaptive_max_pool1d, adaptive_max_pool2d, adaptive_max_pool3d = (
    _public_adaptive_extreme(nd, minimum=False) for nd in (1, 2, 3))
adaptive_min_pool1d, adaptive_min_pool2d, adaptive_min_pool3d = (
    _public_adaptive_extreme(nd, minimum=True) for nd in (1, 2, 3))


def _adaptive_avg(name, nd, input, output_size):
    if not torch.compiler.is_compiling():  # plain calls from C++, as in _extreme_pool
        out = _C.adaptive_avg_pool(nd, input, output_size)
        if out is not NotImplemented:
            return out
    sizes = _output_size(name, nd, input, output_size)
    x, unbatched = _batched(name, nd, input)
    check_floating(name, x)
    out = ops.adaptive_avg_pool_forward(x, sizes)
    return _unbatch(out, unbatched)


def _public_adaptive_avg(nd: int):
    """adaptive_avg_pool{nd}d with the signature of torch's, as a torch.fx leaf."""
    name = f"adaptive_avg_pool{nd}d"

    def adaptive_avg(input: Tensor, output_size) -> Tensor:
        return _adaptive_avg(name, nd, input, output_size)

    return named_leaf(adaptive_avg, name)


adaptive_avg_pool1d, adaptive_avg_pool2d, adaptive_avg_pool3d = (_public_adaptive_avg(nd) for nd in (1, 2, 3))


# ---- k-max and channel pooling ---------------------------------------------------------------------------


@leaf
def kmax_pool1d(input: Tensor, k: int, dim: int = -1) -> Tensor:
    """The ``k`` largest values along ``dim``, kept in their original order (Kalchbrenner et al.
    2014). The values chosen are those ``torch.topk`` picks (NaN counts as the largest value); on
    the CPU the positions are topk's too, ties included; on CUDA tied values are taken first-in-row."""
    if not isinstance(input, Tensor):
        raise TypeError(f"kmax_pool1d: input must be a tensor, got {type(input).__name__}")
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"kmax_pool1d: k must be an int, got {k!r}")
    if type(dim) is not int:  # torch.topk's TypeError (the dispatcher would raise a RuntimeError)
        dim = as_int(dim, "dim", "kmax_pool1d")
    return ops.kmax_pool_forward(input, k, dim)[0]


def dynamic_k(layer: int, num_layers: int, k_top: int, length: int) -> int:
    """``max(k_top, ceil((num_layers - layer) / num_layers * length))``, the k of dynamic k-max pooling."""
    if num_layers < 1 or not 1 <= layer <= num_layers:
        raise ValueError(f"dynamic_kmax_pool1d: need 1 <= layer <= num_layers, got layer={layer}, "
                         f"num_layers={num_layers}")
    if k_top < 1:
        raise ValueError(f"dynamic_kmax_pool1d: k_top must be at least 1, got {k_top}")
    return max(k_top, math.ceil((num_layers - layer) / num_layers * length))


@leaf
def dynamic_kmax_pool1d(input: Tensor, layer: int, num_layers: int, k_top: int, dim: int = -1) -> Tensor:
    """k-max pooling with ``k = max(k_top, ceil((num_layers - layer) / num_layers * s))``, ``s`` the
    length of ``input`` along ``dim`` (layer ``layer`` of ``num_layers`` convolutional layers)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"dynamic_kmax_pool1d: input must be a tensor, got {type(input).__name__}")
    dim = _dim(as_int(dim, "dim", "dynamic_kmax_pool1d"), input, "dynamic_kmax_pool1d")
    return kmax_pool1d.__wrapped__(input, dynamic_k(layer, num_layers, k_top, input.shape[dim]), dim)


def _dim(dim: int, input: Tensor, fn: str) -> int:
    """``dim`` once it indexes a dimension of ``input``; otherwise torch's IndexError for a
    dimension argument, with the input's shape."""
    n = max(input.dim(), 1)  # as torch, a 0-d tensor has dimensions -1 and 0
    if not -n <= dim < n:
        raise IndexError(f"{fn}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got "
                         f"{dim}) for an input of shape {tuple(input.shape)}")
    return dim


def _pool_size(pool_size, fn: str) -> int:
    """``pool_size`` of maxout: an int (a TypeError otherwise, as torch's for an int argument) of at least 1."""
    pool_size = as_int(pool_size, "pool_size", fn)
    if pool_size < 1:
        raise ValueError(f"{fn}: pool_size must be a positive int, got {pool_size!r}")
    return pool_size


@leaf
def channel_max_pool(input: Tensor, pool_size: int, dim: int = 1) -> Tensor:
    """Maxout: the maximum over groups of ``pool_size`` consecutive entries along ``dim``
    (channels by default); that dimension shrinks by a factor ``pool_size``."""
    if not isinstance(input, Tensor):
        raise TypeError(f"channel_max_pool: input must be a tensor, got {type(input).__name__}")
    pool_size = _pool_size(pool_size, "channel_max_pool")
    if input.dim() == 0:
        raise ValueError("channel_max_pool: input must have at least one dimension")
    dim = _dim(as_int(dim, "dim", "channel_max_pool"), input, "channel_max_pool") % input.dim()
    channels = input.shape[dim]
    if channels % pool_size != 0:
        raise ValueError(f"channel_max_pool: the size of dimension {dim} ({channels}) must be divisible by "
                         f"pool_size ({pool_size}); input of shape {tuple(input.shape)}")
    outer = math.prod(input.shape[:dim])
    inner = math.prod(input.shape[dim + 1:])
    # max pooling with a (pool_size, 1) window and the same stride over a (channels, inner) plane
    planes = input.reshape(outer, 1, channels, inner)
    out = ops.max_pool_forward(planes, [pool_size, 1], [pool_size, 1], [0, 0], [1, 1], False, False)[0]
    return out.reshape(*input.shape[:dim], channels // pool_size, *input.shape[dim + 1:])


def _check_sigma(sigma, fn: str) -> None:
    """The ValueError of a Gaussian's ``sigma`` that is no positive finite number."""
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not (0 < float(sigma) < math.inf):
        raise ValueError(f"{fn}: sigma must be a positive finite number, got {sigma!r}")


@leaf
def gaussian_pool2d(input: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                    padding: IntOrTuple = 0, sigma: float = 1.0) -> Tensor:
    """Average over each window weighted by ``exp(-d^2 / (2 sigma^2))``, ``d`` the distance of a
    tap from the window's centre (``(k - 1) / 2`` per dimension), the weights normalised to sum 1
    over the full kernel; the padding counts as zeros. Equals the depthwise convolution with that
    kernel: ``F.conv2d(input, kernel.expand(C, 1, kh, kw), stride=stride, padding=padding, groups=C)``."""
    x, unbatched = _batched("gaussian_pool2d", 2, input)
    _check_sigma(sigma, "gaussian_pool2d")
    check_floating("gaussian_pool2d", x)
    kernel_size = ntuple(kernel_size, 2, "kernel_size", "gaussian_pool2d")
    stride = _stride(stride, kernel_size, 2, "gaussian_pool2d")
    out = ops.gaussian_pool_forward(x, list(kernel_size), list(stride),
                                    list(ntuple(padding, 2, "padding", "gaussian_pool2d")),
                                    float(sigma))
    return _unbatch(out, unbatched)


@leaf
def stochastic_pool2d(input: Tensor, kernel_size: IntOrTuple, stride: Optional[IntOrTuple] = None,
                      training: bool = True, generator: Optional[torch.Generator] = None) -> Tensor:
    """Stochastic pooling (Zeiler & Fergus 2013) of a non-negative input. In training, each
    window gives one of its elements, picked with probability proportional to its value (an
    all-zero window gives 0), and the gradient flows to the picked element; the uniform numbers
    are drawn with ``torch.rand(..., generator=generator)``, so a seeded generator reproduces the
    picks. In eval (``training=False``), the probability-weighted average ``sum(x^2) / sum(x)``
    (0 for an all-zero window)."""
    x, unbatched = _batched("stochastic_pool2d", 2, input)
    kernel_size = list(ntuple(kernel_size, 2, "kernel_size", "stochastic_pool2d"))
    stride = list(_stride(stride, kernel_size, 2, "stochastic_pool2d"))
    check_floating("stochastic_pool2d", x)  # before torch.rand, which has no integer kernel either
    if not training:
        return _unbatch(ops.stochastic_pool_eval_forward(x, kernel_size, stride), unbatched)
    # out-of-range sizes give an empty draw; the op then reports the bad geometry
    out_shape = [x.shape[0], x.shape[1]] + [
        max(0, (x.shape[2 + i] - kernel_size[i]) // stride[i] + 1) if stride[i] > 0 else 0 for i in range(2)]
    # No generator argument unless one is given: torch.export traces rand(generator=None) to an
    # overload that refuses a symbolic (dynamic) batch size.
    draw = {} if generator is None else {"generator": generator}
    uniform = torch.rand(out_shape, device=x.device, dtype=x.dtype, **draw)
    out, _ = ops.stochastic_pool_forward(x, uniform, kernel_size, stride)
    return _unbatch(out, unbatched)


__all__ = [
    *(f"{kind}_pool{nd}d" for kind in ("max", "min", "avg", "lp") for nd in (1, 2, 3)),
    *(f"adaptive_{kind}_pool{nd}d" for kind in ("max", "min", "avg") for nd in (1, 2, 3)),
    "kmax_pool1d", "dynamic_kmax_pool1d", "channel_max_pool", "gaussian_pool2d",
    "stochastic_pool2d",
]
