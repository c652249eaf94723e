"""Fake kernels of the norm family.

First derivatives are the backward ops (``batch_norm_backward``, ``group_norm_backward``,
``layer_norm_backward``): one reduction pass over the data, then one pass for the input
gradient. Every op's derivatives (first derivatives, double backward, tangents) are
registered in C++, csrc/norm/norm_autograd.cpp.

The running statistics are not touched by any differentiable op: ``batch_norm_forward``
returns the batch statistics and ``batch_norm_update_stats`` (mutating, no autograd) moves
the running ones, after the forward has succeeded.

The fakes check what csrc/norm/norm_ops.cpp checks and return its layouts: the data-sized
results keep a channels-last input's strides (batch and group norm), all others are
contiguous; statistics are in the compute type.
"""

import torch

from ._geometry import check_dtype, check_sizes_equal, register_fake, scalar_type, shape_str

ops = torch.ops.cnn_ops


def _compute_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _channels_last(t):
    """channels_last (norm_ops.cpp): a 4-d or 5-d input dense in channels-last strides and not
    contiguous is normalised in place, and its results keep that layout."""
    if t.dim() == 4:
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    if t.dim() == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()
    return False


def _like_input(input):
    """at::empty_like of the input as the kernels read it: itself when channels-last (so its
    strides, those of any size-1 dimension included), a contiguous copy otherwise."""
    return torch.empty_like(input) if _channels_last(input) else input.new_empty(input.shape)


def _channel_vector(input, n):
    return input.new_empty((n,), dtype=_compute_dtype(input))


def _param_dtype(input, weight):
    return weight.dtype if weight is not None else input.dtype


# --- checks (norm_ops.cpp) -----------------------------------------------------------------------


def _check_input(op, input):
    """check_input: a float input of shape (N, C, *); returns C."""
    check_dtype(input, "input", op)
    torch._check(input.dim() >= 2, lambda: f"{op}: expected an input of shape (N, C, *), got {shape_str(input.shape)}")
    return input.shape[1]


def _check_vector(op, t, name, input, size, what="the input's channels"):
    """check_vector: an absent tensor, or `size` entries of a float dtype on the input's device."""
    if t is None:
        return
    msg = lambda: f"{op}: {name} must have shape [{size}] ({what}, input shape {shape_str(input.shape)}), got " \
                  f"{shape_str(t.shape)}"  # noqa: E731
    torch._check(t.dim() == 1, msg)
    torch._check(t.shape[0] == size, msg)
    check_dtype(t, name, op)
    torch._check(t.device == input.device, lambda: f"{op}: {name} is on {t.device} but input is on {input.device}")


def _check_like_input(op, t, name, input):
    """check_like_input: the input's shape, dtype and device."""
    check_sizes_equal(t.shape, input.shape, lambda: f"{op}: {name} must have the input's shape "
                                                    f"{shape_str(input.shape)}, got {shape_str(t.shape)}")
    torch._check(t.dtype == input.dtype,
                 lambda: f"{op}: {name} ({scalar_type(t.dtype)}) must have the input's dtype "
                         f"({scalar_type(input.dtype)})")
    torch._check(t.device == input.device, lambda: f"{op}: {name} is on {t.device} but input is on {input.device}")


def _check_statistics(op, input, shape, what, *stats):
    """The saved statistics of group and layer norm's backward ops: `shape`, and a float dtype on
    the input's device, as batch norm's check_vector asks of its own. The kernels check the shape
    only, which is a bug there (an integer statistic is converted, and one on another device is
    read as if it were on the input's): the fakes refuse what they should."""
    for t, name in stats:
        check_sizes_equal(t.shape, shape, lambda: f"{op}: {name} must have shape {shape_str(shape)} ({what}), got "
                                                  f"{shape_str(t.shape)}")
        check_dtype(t, name, op)
        torch._check(t.device == input.device, lambda: f"{op}: {name} is on {t.device} but input is on {input.device}")


# --- batch norm ----------------------------------------------------------------------------------


@register_fake("batch_norm_stats")
def _batch_norm_stats_fake(input):
    c = _check_input("cnn_ops.batch_norm_stats", input)
    return _channel_vector(input, c), _channel_vector(input, c)


@register_fake("batch_norm_elemt")
def _batch_norm_elemt_fake(input, weight, bias, mean, invstd):
    op = "cnn_ops.batch_norm_elemt"
    c = _check_input(op, input)
    for t, name in ((weight, "weight"), (bias, "bias"), (mean, "mean"), (invstd, "invstd")):
        _check_vector(op, t, name, input, c)
    return _like_input(input)


@register_fake("batch_norm_forward")
def _batch_norm_forward_fake(input, weight, bias, running_mean, running_var, training, eps):
    op = "cnn_ops.batch_norm"
    c = _check_input(op, input)
    for t, name in ((weight, "weight"), (bias, "bias"), (running_mean, "running_mean"), (running_var, "running_var")):
        _check_vector(op, t, name, input, c)
    torch._check((running_mean is None) == (running_var is None),
                 lambda: f"{op}: running_mean and running_var must be given together")
    torch._check(training or running_mean is not None,
                 lambda: f"{op}: running_mean and running_var must be given in evaluation mode (training=False)")
    if training:
        # check_batch_size: the batch's statistics need more than one value per channel.
        count = input.shape[0]
        for size in input.shape[2:]:
            count = count * size
        torch._check(count != 1, lambda: f"{op}: expected more than 1 value per channel when training, got input "
                                         f"size {shape_str(input.shape)}")
    return _like_input(input), _channel_vector(input, c), _channel_vector(input, c), _channel_vector(input, c)


@register_fake("batch_norm_update_stats")
def _batch_norm_update_stats_fake(running_mean, running_var, mean, var, count, momentum):
    op = "cnn_ops.batch_norm_update_stats"
    c = running_mean.numel()
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var"), (mean, "mean"), (var, "var")):
        _check_vector(op, t, name, running_mean, c, "running_mean's size")
    torch._check(count >= 0, lambda: f"{op}: count must be non-negative, got {count}")
    # Refused before either is written, so that a failed call moves neither.
    for t, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        torch._check(torch._debug_has_internal_overlap(t) != 1,  # 1: at::MemOverlap::Yes
                     lambda: f"{op}: {name} is updated in place, so its elements must not share memory, got a tensor "
                             f"of shape {list(t.shape)} and strides {list(t.stride())} (an expanded tensor?); clone() "
                             f"it first")
        torch._check(not (torch.is_grad_enabled() and t.requires_grad),
                     lambda: f"{op}: {name} is updated in place, so it must not require grad (torch's batch_norm "
                             f"refuses that too)")
    return None


@register_fake("batch_norm_backward_reduce")
def _batch_norm_backward_reduce_fake(grad_output, input, mean):
    op = "cnn_ops.batch_norm_backward_reduce"
    c = _check_input(op, input)
    _check_like_input(op, grad_output, "grad_output", input)
    _check_vector(op, mean, "mean", input, c)
    return _channel_vector(input, c), _channel_vector(input, c)


@register_fake("batch_norm_backward_elemt")
def _batch_norm_backward_elemt_fake(grad_output, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    op = "cnn_ops.batch_norm_backward_elemt"
    c = _check_input(op, input)
    _check_like_input(op, grad_output, "grad_output", input)
    for t, name in ((mean, "mean"), (invstd, "invstd"), (weight, "weight"), (sum_dy, "sum_dy"),
                    (sum_dy_xmu, "sum_dy_xmu")):
        _check_vector(op, t, name, input, c)
    torch._check(count >= 0, lambda: f"{op}: count must be non-negative, got {count}")
    return _like_input(input)


@register_fake("batch_norm_backward")
def _batch_norm_backward_fake(grad_output, input, weight, mean, invstd, training, eps):
    op = "cnn_ops.batch_norm_backward"
    c = _check_input(op, input)
    _check_like_input(op, grad_output, "grad_output", input)
    for t, name in ((weight, "weight"), (mean, "mean"), (invstd, "invstd")):
        _check_vector(op, t, name, input, c)
    dtype = _param_dtype(input, weight)
    return _like_input(input), input.new_empty((c,), dtype=dtype), input.new_empty((c,), dtype=dtype)


# --- group norm ----------------------------------------------------------------------------------


def _check_group_norm(op, input, weight, bias, num_groups):
    """check_group_norm: C divisible by num_groups >= 1; weight and bias of C entries."""
    c = _check_input(op, input)
    torch._check(num_groups >= 1, lambda: f"{op}: num_groups must be positive, got {num_groups}")
    torch._check(c % num_groups == 0,
                 lambda: f"{op}: the input's {c} channels (input shape {shape_str(input.shape)}) are not divisible "
                         f"by num_groups={num_groups}")
    _check_vector(op, weight, "weight", input, c)
    _check_vector(op, bias, "bias", input, c)
    return c


@register_fake("group_norm_forward")
def _group_norm_forward_fake(input, weight, bias, num_groups, eps):
    _check_group_norm("cnn_ops.group_norm", input, weight, bias, num_groups)
    stats = input.new_empty((input.shape[0], num_groups), dtype=_compute_dtype(input))
    return _like_input(input), stats, stats.new_empty(stats.shape)


@register_fake("group_norm_backward")
def _group_norm_backward_fake(grad_output, input, weight, mean, rstd, num_groups, eps):
    op = "cnn_ops.group_norm_backward"
    c = _check_group_norm(op, input, weight, None, num_groups)
    _check_like_input(op, grad_output, "grad_output", input)
    _check_statistics(op, input, [input.shape[0], num_groups], "batch, groups", (mean, "mean"), (rstd, "rstd"))
    dtype = _param_dtype(input, weight)
    return _like_input(input), input.new_empty((c,), dtype=dtype), input.new_empty((c,), dtype=dtype)


# --- layer norm ----------------------------------------------------------------------------------


def _check_layer_norm(op, input, normalized_shape, weight, bias):
    """check_layer_norm: the input ends with normalized_shape (at least one dimension); weight
    and bias have that shape. Returns the number of normalised rows."""
    check_dtype(input, "input", op)
    nd = len(normalized_shape)
    torch._check(nd >= 1, lambda: f"{op}: normalized_shape must have at least one dimension")
    msg = lambda: f"{op}: input of shape {shape_str(input.shape)} does not end with normalized_shape " \
                  f"{shape_str(normalized_shape)}"  # noqa: E731
    torch._check(input.dim() >= nd, msg)
    check_sizes_equal(input.shape[input.dim() - nd:], normalized_shape, msg)
    for t, name in ((weight, "weight"), (bias, "bias")):
        if t is None:
            continue
        check_sizes_equal(t.shape, normalized_shape, lambda: f"{op}: {name} must have shape normalized_shape "
                                                             f"{shape_str(normalized_shape)}, got {shape_str(t.shape)}")
        check_dtype(t, name, op)
        torch._check(t.device == input.device, lambda: f"{op}: {name} is on {t.device} but input is on {input.device}")
    # One row per position of the leading dimensions, also when the rows are empty (a 0 in
    # normalized_shape). The kernels count input.numel() / prod(normalized_shape) rows, and none
    # when that product is 0: a bug there (the statistics then lose the leading shape).
    rows = 1
    for s in input.shape[: input.dim() - nd]:
        rows = rows * s
    return rows


@register_fake("layer_norm_forward")
def _layer_norm_forward_fake(input, normalized_shape, weight, bias, eps):
    rows = _check_layer_norm("cnn_ops.layer_norm", input, normalized_shape, weight, bias)
    stats = input.new_empty((rows,), dtype=_compute_dtype(input))
    return input.new_empty(input.shape), stats, stats.new_empty(stats.shape)


@register_fake("layer_norm_backward")
def _layer_norm_backward_fake(grad_output, input, normalized_shape, weight, mean, rstd, eps):
    op = "cnn_ops.layer_norm_backward"
    rows = _check_layer_norm(op, input, normalized_shape, weight, None)
    _check_like_input(op, grad_output, "grad_output", input)
    _check_statistics(op, input, [rows], "one entry per normalised row", (mean, "mean"), (rstd, "rstd"))
    dtype = _param_dtype(input, weight)
    shape = tuple(normalized_shape)
    return input.new_empty(input.shape), input.new_empty(shape, dtype=dtype), input.new_empty(shape, dtype=dtype)


# --- SyncBatchNorm's backward pieces: no autograd of their own (torch's SyncBatchNorm has no
# double backward either); their fake kernels above are what torch.compile needs.
