"""Fake kernels of the norm family.

First derivatives are the backward ops (``batch_norm_backward``, ``group_norm_backward``,
``layer_norm_backward``): one reduction pass over the data, then one pass for the input
gradient. Every op's derivatives (first derivatives, double backward, tangents) are
registered in C++, csrc/norm/norm_autograd.cpp.

The running statistics are not touched by any differentiable op: ``batch_norm_forward``
returns the batch statistics and ``batch_norm_update_stats`` (mutating, no autograd) moves
the running ones, after the forward has succeeded.
"""

import torch

ops = torch.ops.cnn_ops


def _register_fake(name):
    """torch.library.register_fake for a norm op, with the device rule of its kernels: every
    tensor on the first one's device. A meta tensor among CPU or CUDA ones sends the call here
    (the Meta key), where a fake result on the input's device would be uninitialised memory;
    torch's norms raise this RuntimeError instead."""

    def register(fake):
        def checked(*args):
            tensors = [a for a in args if isinstance(a, torch.Tensor)]
            for t in tensors[1:]:
                torch._check(t.device == tensors[0].device,
                             lambda: f"Tensor on device {t.device} is not on the expected device {tensors[0].device}!")
            return fake(*args)

        torch.library.register_fake(f"cnn_ops::{name}")(checked)
        return fake

    return register


def _compute_dtype(t):
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _channels_last(t):
    """The layout rule of csrc/norm/norm_ops.cpp: a 4-d or 5-d input dense in channels-last
    strides and not contiguous is normalised in place, and its results keep that layout."""
    if t.dim() == 4:
        return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
    if t.dim() == 5:
        return t.is_contiguous(memory_format=torch.channels_last_3d) and not t.is_contiguous()
    return False


def _empty_like_layout(input):
    if _channels_last(input):
        fmt = torch.channels_last if input.dim() == 4 else torch.channels_last_3d
        return torch.empty_like(input, memory_format=fmt)
    return input.new_empty(input.shape)


def _channel_vector(input, n=None):
    return input.new_empty((input.shape[1] if n is None else n,), dtype=_compute_dtype(input))


def _param_dtype(input, weight):
    return weight.dtype if weight is not None else input.dtype


# --- fake kernels ------------------------------------------------------------------------------


@_register_fake("batch_norm_stats")
def _batch_norm_stats_fake(input):
    return _channel_vector(input), _channel_vector(input)


@_register_fake("batch_norm_elemt")
def _batch_norm_elemt_fake(input, weight, bias, mean, invstd):
    return _empty_like_layout(input)


@_register_fake("batch_norm_forward")
def _batch_norm_forward_fake(input, weight, bias, running_mean, running_var, training, eps):
    torch._check(input.dim() >= 2, lambda: "batch_norm: expected an input of shape (N, C, *)")
    return _empty_like_layout(input), _channel_vector(input), _channel_vector(input), _channel_vector(input)


@_register_fake("batch_norm_update_stats")
def _batch_norm_update_stats_fake(running_mean, running_var, mean, var, count, momentum):
    return None


@_register_fake("batch_norm_backward_reduce")
def _batch_norm_backward_reduce_fake(grad_output, input, mean):
    return _channel_vector(input), _channel_vector(input)


@_register_fake("batch_norm_backward_elemt")
def _batch_norm_backward_elemt_fake(grad_output, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    return _empty_like_layout(input)


@_register_fake("batch_norm_backward")
def _batch_norm_backward_fake(grad_output, input, weight, mean, invstd, training, eps):
    c, dtype = input.shape[1], _param_dtype(input, weight)
    return _empty_like_layout(input), input.new_empty((c,), dtype=dtype), input.new_empty((c,), dtype=dtype)


@_register_fake("group_norm_forward")
def _group_norm_forward_fake(input, weight, bias, num_groups, eps):
    stats = input.new_empty((input.shape[0], num_groups), dtype=_compute_dtype(input))
    return _empty_like_layout(input), stats, stats.new_empty(stats.shape)


@_register_fake("group_norm_backward")
def _group_norm_backward_fake(grad_output, input, weight, mean, rstd, num_groups, eps):
    c, dtype = input.shape[1], _param_dtype(input, weight)
    return _empty_like_layout(input), input.new_empty((c,), dtype=dtype), input.new_empty((c,), dtype=dtype)


def _rows(input, normalized_shape):
    rows = 1
    for s in input.shape[: input.dim() - len(normalized_shape)]:
        rows *= s
    return rows


@_register_fake("layer_norm_forward")
def _layer_norm_forward_fake(input, normalized_shape, weight, bias, eps):
    stats = input.new_empty((_rows(input, normalized_shape),), dtype=_compute_dtype(input))
    return input.new_empty(input.shape), stats, stats.new_empty(stats.shape)


@_register_fake("layer_norm_backward")
def _layer_norm_backward_fake(grad_output, input, normalized_shape, weight, mean, rstd, eps):
    dtype = _param_dtype(input, weight)
    shape = tuple(normalized_shape)
    return input.new_empty(input.shape), input.new_empty(shape, dtype=dtype), input.new_empty(shape, dtype=dtype)


# --- SyncBatchNorm's backward pieces: no autograd of their own (torch's SyncBatchNorm has no
# double backward either); their fake kernels above are what torch.compile needs.
