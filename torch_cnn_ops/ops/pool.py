"""Fake kernels of the pool family.

The backward passes are ops themselves. Every op's derivatives (first derivatives, double
backward, tangents) are registered in C++, csrc/pool/pool_autograd.cpp.
"""


import torch

ops = torch.ops.cnn_ops


def _out_size(in_size, pad, k, stride, dilation, ceil_mode):
    span = in_size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= in_size + pad:
        out = out - 1
    return out


def _channels_last(t):
    """The layout rule of the kernels (use_channels_last in csrc/pool/pool_common.cpp): a 4-d
    tensor dense in channels_last strides and not NCHW-contiguous is pooled in that layout,
    and its results (outputs, indices, gradients) come back channels_last."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _empty(like, shape, layout_of, dtype=None):
    fmt = torch.channels_last if _channels_last(layout_of) else torch.contiguous_format
    return like.new_empty(shape, dtype=dtype).contiguous(memory_format=fmt) if fmt != torch.contiguous_format \
        else like.new_empty(shape, dtype=dtype)


def _window_shape(input_shape, kernel_size, stride, padding, dilation, ceil_mode):
    nd = len(kernel_size)
    torch._check(len(input_shape) == nd + 2, lambda: f"pool: expected a {nd + 2}-d input, got {len(input_shape)}-d")
    spatial = [
        _out_size(input_shape[2 + i], padding[i], kernel_size[i], stride[i], dilation[i], ceil_mode)
        for i in range(nd)
    ]
    return [input_shape[0], input_shape[1], *spatial]


# --- fake kernels ------------------------------------------------------------------------------


@torch.library.register_fake("cnn_ops::max_pool_forward")
def _max_pool_forward_fake(input, kernel_size, stride, padding, dilation, ceil_mode, minimum):
    shape = _window_shape(input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    return _empty(input, shape, input), _empty(input, shape, input, torch.long)


@torch.library.register_fake("cnn_ops::adaptive_max_pool_forward")
def _adaptive_max_pool_forward_fake(input, output_size, minimum):
    shape = [input.shape[0], input.shape[1], *output_size]
    return _empty(input, shape, input), _empty(input, shape, input, torch.long)


@torch.library.register_fake("cnn_ops::max_pool_backward")
def _max_pool_backward_fake(grad_output, indices, input_size):
    return _empty(grad_output, input_size, indices)


@torch.library.register_fake("cnn_ops::avg_pool_forward")
def _avg_pool_forward_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    ones = [1] * len(kernel_size)
    return _empty(input, _window_shape(input.shape, kernel_size, stride, padding, ones, ceil_mode), input)


@torch.library.register_fake("cnn_ops::avg_pool_backward")
def _avg_pool_backward_fake(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override):
    return _empty(grad_output, input_size, grad_output)


@torch.library.register_fake("cnn_ops::adaptive_avg_pool_forward")
def _adaptive_avg_pool_forward_fake(input, output_size):
    return _empty(input, [input.shape[0], input.shape[1], *output_size], input)


@torch.library.register_fake("cnn_ops::adaptive_avg_pool_backward")
def _adaptive_avg_pool_backward_fake(grad_output, input_size):
    return _empty(grad_output, input_size, grad_output)


@torch.library.register_fake("cnn_ops::lp_pool_forward")
def _lp_pool_forward_fake(input, norm_type, kernel_size, stride, ceil_mode):
    nd = len(kernel_size)
    return _empty(input, _window_shape(input.shape, kernel_size, stride, [0] * nd, [1] * nd, ceil_mode), input)


@torch.library.register_fake("cnn_ops::lp_pool_backward")
def _lp_pool_backward_fake(grad_output, input, norm_type, kernel_size, stride, ceil_mode):
    return _empty(grad_output, input.shape, input)


# --- k-max ---------------------------------------------------------------------------------------


@torch.library.register_fake("cnn_ops::kmax_pool_forward")
def _kmax_pool_forward_fake(input, k, dim):
    shape = list(input.shape)
    shape[dim] = k
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.long)


@torch.library.register_fake("cnn_ops::kmax_pool_backward")
def _kmax_pool_backward_fake(grad_output, indices, dim, input_size):
    return grad_output.new_empty(input_size)


# --- gaussian ------------------------------------------------------------------------------------


@torch.library.register_fake("cnn_ops::gaussian_pool_forward")
def _gaussian_pool_forward_fake(input, kernel_size, stride, padding, sigma):
    ones = [1] * len(kernel_size)
    return input.new_empty(_window_shape(input.shape, kernel_size, stride, padding, ones, False))


@torch.library.register_fake("cnn_ops::gaussian_pool_backward")
def _gaussian_pool_backward_fake(grad_output, input_size, kernel_size, stride, padding, sigma):
    return grad_output.new_empty(input_size)


# --- stochastic ----------------------------------------------------------------------------------


@torch.library.register_fake("cnn_ops::stochastic_pool_forward")
def _stochastic_pool_forward_fake(input, uniform, kernel_size, stride):
    nd = len(kernel_size)
    shape = _window_shape(input.shape, kernel_size, stride, [0] * nd, [1] * nd, False)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.long)


@torch.library.register_fake("cnn_ops::stochastic_pool_eval_forward")
def _stochastic_pool_eval_forward_fake(input, kernel_size, stride):
    nd = len(kernel_size)
    return input.new_empty(_window_shape(input.shape, kernel_size, stride, [0] * nd, [1] * nd, False))


@torch.library.register_fake("cnn_ops::stochastic_pool_eval_backward")
def _stochastic_pool_eval_backward_fake(grad_output, input, kernel_size, stride):
    return input.new_empty(input.shape)
