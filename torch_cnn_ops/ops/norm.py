"""Fake kernels and double backward of the norm family.

First derivatives are the backward ops (``batch_norm_backward``, ``group_norm_backward``,
``layer_norm_backward``): one reduction pass over the data, then one pass for the input
gradient. They are attached to the forward ops in C++ (csrc/norm/norm_autograd.cpp), where
the autograd bookkeeping costs a few microseconds instead of about a hundred from Python,
which matters for small inputs. Their own derivatives (double backward) differentiate the norm written with torch
ops, as torch does for its native batch norm: the second derivative is a rare path, and
written this way it cannot disagree with the first.

The running statistics are not touched by any differentiable op: ``batch_norm_forward``
returns the batch statistics and ``batch_norm_update_stats`` (mutating, no autograd) moves
the running ones, after the forward has succeeded.
"""

import torch

ops = torch.ops.cnn_ops


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


@torch.library.register_fake("cnn_ops::batch_norm_stats")
def _batch_norm_stats_fake(input):
    return _channel_vector(input), _channel_vector(input)


@torch.library.register_fake("cnn_ops::batch_norm_elemt")
def _batch_norm_elemt_fake(input, weight, bias, mean, invstd):
    return _empty_like_layout(input)


@torch.library.register_fake("cnn_ops::batch_norm_forward")
def _batch_norm_forward_fake(input, weight, bias, running_mean, running_var, training, eps):
    torch._check(input.dim() >= 2, lambda: "batch_norm: expected an input of shape (N, C, *)")
    return _empty_like_layout(input), _channel_vector(input), _channel_vector(input), _channel_vector(input)


@torch.library.register_fake("cnn_ops::batch_norm_update_stats")
def _batch_norm_update_stats_fake(running_mean, running_var, mean, var, count, momentum):
    return None


@torch.library.register_fake("cnn_ops::batch_norm_backward_reduce")
def _batch_norm_backward_reduce_fake(grad_output, input, mean):
    return _channel_vector(input), _channel_vector(input)


@torch.library.register_fake("cnn_ops::batch_norm_backward_elemt")
def _batch_norm_backward_elemt_fake(grad_output, input, mean, invstd, weight, sum_dy, sum_dy_xmu, count):
    return _empty_like_layout(input)


@torch.library.register_fake("cnn_ops::batch_norm_backward")
def _batch_norm_backward_fake(grad_output, input, weight, mean, invstd, training, eps):
    c, dtype = input.shape[1], _param_dtype(input, weight)
    return _empty_like_layout(input), input.new_empty((c,), dtype=dtype), input.new_empty((c,), dtype=dtype)


@torch.library.register_fake("cnn_ops::group_norm_forward")
def _group_norm_forward_fake(input, weight, bias, num_groups, eps):
    stats = input.new_empty((input.shape[0], num_groups), dtype=_compute_dtype(input))
    return _empty_like_layout(input), stats, stats.new_empty(stats.shape)


@torch.library.register_fake("cnn_ops::group_norm_backward")
def _group_norm_backward_fake(grad_output, input, weight, mean, rstd, num_groups, eps):
    c, dtype = input.shape[1], _param_dtype(input, weight)
    return _empty_like_layout(input), input.new_empty((c,), dtype=dtype), input.new_empty((c,), dtype=dtype)


def _rows(input, normalized_shape):
    rows = 1
    for s in input.shape[: input.dim() - len(normalized_shape)]:
        rows *= s
    return rows


@torch.library.register_fake("cnn_ops::layer_norm_forward")
def _layer_norm_forward_fake(input, normalized_shape, weight, bias, eps):
    stats = input.new_empty((_rows(input, normalized_shape),), dtype=_compute_dtype(input))
    return input.new_empty(input.shape), stats, stats.new_empty(stats.shape)


@torch.library.register_fake("cnn_ops::layer_norm_backward")
def _layer_norm_backward_fake(grad_output, input, normalized_shape, weight, mean, rstd, eps):
    dtype = _param_dtype(input, weight)
    shape = tuple(normalized_shape)
    return input.new_empty(input.shape), input.new_empty(shape, dtype=dtype), input.new_empty(shape, dtype=dtype)


# --- the norms written with torch ops, for the double backward ----------------------------------


def _normalized(x, dims, eps):
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, correction=0, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


def _channel_shape(x):
    return [1, -1] + [1] * (x.dim() - 2)


def _batch_norm_composite(x, weight, mean, invstd, training, eps):
    """Batch norm without bias; training: from the batch statistics of x; eval: from the
    constants mean and invstd."""
    if training:
        y = _normalized(x, [0, *range(2, x.dim())], eps)
    else:
        y = (x - mean.to(x.dtype).view(_channel_shape(x))) * invstd.to(x.dtype).view(_channel_shape(x))
    return y if weight is None else y * weight.to(x.dtype).view(_channel_shape(x))


def _group_norm_composite(x, weight, num_groups, eps):
    n = x.shape[0]
    y = _normalized(x.reshape(n, num_groups, -1), [2], eps).reshape(x.shape)
    return y if weight is None else y * weight.to(x.dtype).view(_channel_shape(x))


def _layer_norm_composite(x, weight, normalized_shape, eps):
    dims = list(range(x.dim() - len(normalized_shape), x.dim()))
    y = _normalized(x, dims, eps)
    return y if weight is None else y * weight.to(x.dtype)


def _leaf(t):
    """t itself when it is already part of a graph (so that higher derivatives stay
    connected), else a detached copy that records its use."""
    if t is None or t.requires_grad:
        return t
    return t.detach().requires_grad_()


def _backward_of_backward(composite, grad_output, input, weight, bias_dims, cotangents):
    """Derivatives of (grad_input, grad_weight, grad_bias) = vjp of `composite` (the norm
    without bias) at (input, weight) with grad_output, in the directions `cotangents`.
    Returns the gradients for grad_output, input and weight (None where not reached)."""
    outer_graph = torch.is_grad_enabled()
    wide = torch.float64 if input.dtype == torch.float64 else torch.float32
    with torch.enable_grad():
        dy, x, w = _leaf(grad_output), _leaf(input), _leaf(weight)
        y = composite(x.to(wide), None if w is None else w.to(wide))
        primals = [x] if w is None else [x, w]
        grads = torch.autograd.grad(y, primals, dy.to(wide), create_graph=True, allow_unused=True)
        grad_bias = dy.sum(bias_dims) if bias_dims else dy  # sum over [] would reduce everything
        outputs, directions = [], []
        for out, direction in zip((grads[0], grads[1] if w is not None else None, grad_bias), cotangents):
            if out is not None and direction is not None and out.requires_grad:
                outputs.append(out)
                directions.append(direction.to(out.dtype))
        wrt = [dy, *primals]
        if not outputs:
            return None, None, None
        result = torch.autograd.grad(outputs, wrt, directions, allow_unused=True, create_graph=outer_graph)
    d_dy, d_x = result[0], result[1]
    d_w = result[2] if w is not None else None
    return d_dy, d_x, d_w


# --- batch norm --------------------------------------------------------------------------------


def _bn_backward_setup(ctx, inputs, output):
    grad_output, input, weight, mean, invstd, training, eps = inputs
    ctx.save_for_backward(grad_output, input, weight, mean, invstd)
    ctx.training, ctx.eps = training, eps


def _bn_backward_backward(ctx, gg_input, gg_weight, gg_bias):
    grad_output, input, weight, mean, invstd = ctx.saved_tensors

    def composite(x, w):
        return _batch_norm_composite(x, w, mean, invstd, ctx.training, ctx.eps)

    d_dy, d_x, d_w = _backward_of_backward(composite, grad_output, input, weight, [0, *range(2, input.dim())],
                                           (gg_input, gg_weight, gg_bias))
    return d_dy, d_x, d_w, None, None, None, None


torch.library.register_autograd("cnn_ops::batch_norm_backward", _bn_backward_backward,
                                setup_context=_bn_backward_setup)


# --- group norm --------------------------------------------------------------------------------


def _gn_backward_setup(ctx, inputs, output):
    grad_output, input, weight, mean, rstd, num_groups, eps = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.num_groups, ctx.eps = num_groups, eps


def _gn_backward_backward(ctx, gg_input, gg_weight, gg_bias):
    grad_output, input, weight = ctx.saved_tensors

    def composite(x, w):
        return _group_norm_composite(x, w, ctx.num_groups, ctx.eps)

    d_dy, d_x, d_w = _backward_of_backward(composite, grad_output, input, weight, [0, *range(2, input.dim())],
                                           (gg_input, gg_weight, gg_bias))
    return d_dy, d_x, d_w, None, None, None, None


torch.library.register_autograd("cnn_ops::group_norm_backward", _gn_backward_backward,
                                setup_context=_gn_backward_setup)


# --- layer norm --------------------------------------------------------------------------------


def _ln_backward_setup(ctx, inputs, output):
    grad_output, input, normalized_shape, weight, mean, rstd, eps = inputs
    ctx.save_for_backward(grad_output, input, weight)
    ctx.normalized_shape, ctx.eps = list(normalized_shape), eps


def _ln_backward_backward(ctx, gg_input, gg_weight, gg_bias):
    grad_output, input, weight = ctx.saved_tensors

    def composite(x, w):
        return _layer_norm_composite(x, w, ctx.normalized_shape, ctx.eps)

    leading = list(range(input.dim() - len(ctx.normalized_shape)))
    d_dy, d_x, d_w = _backward_of_backward(composite, grad_output, input, weight, leading,
                                           (gg_input, gg_weight, gg_bias))
    return d_dy, d_x, None, d_w, None, None, None


torch.library.register_autograd("cnn_ops::layer_norm_backward", _ln_backward_backward,
                                setup_context=_ln_backward_setup)


# --- SyncBatchNorm's backward pieces: no autograd of their own (torch's SyncBatchNorm has no
# double backward either); their fake kernels above are what torch.compile needs.
