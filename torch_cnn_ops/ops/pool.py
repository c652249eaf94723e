"""Fake kernels of the pool family.

The backward passes are ops themselves. Every op's derivatives (first derivatives, double
backward, tangents) are registered in C++, csrc/pool/pool_autograd.cpp.

The fakes check what csrc/pool/pool_common.cpp (through ._geometry), pool_ops.cpp and the
k-max, Gaussian and stochastic entry points check, and return results in the kernels'
layouts: channels_last for the window and adaptive ops whose layout tensor is
(``pool_channels_last``), contiguous otherwise.
"""

import math

import torch

from ._geometry import (adaptive_shape, check_dtype, check_grad_output_matches, check_same_shape, check_sizes_equal,
                        check_window_backward, empty, pool_channels_last, register_fake, scalar_type, shape_str,
                        window_shape, wrap_dim)

ops = torch.ops.cnn_ops


def _ones(n):
    return [1] * n


def _zeros(n):
    return [0] * n


def _check_divisor(op, divisor_override):
    """set_divisor (pool_common.cpp): an override divides, so it is non-zero (a negative one
    divides too, as torch's)."""
    torch._check(divisor_override is None or divisor_override != 0,
                 lambda: f"{op}: divisor_override must be non-zero")


def _check_norm_type(op, norm_type):
    # `norm_type > 0` is false for a NaN, which is refused too, as in C++; an infinite norm is
    # the window's largest magnitude, which the public functions compute by max pooling.
    torch._check(norm_type > 0 and math.isfinite(norm_type),
                 lambda: f"{op}: norm_type must be positive and finite, got {norm_type}")


MAX_GAUSSIAN_KERNEL = 2**20  # kMaxGaussianKernel (pool_common.h): the weight table's bound


def _check_gaussian(op, sigma, kernel_size):
    """check_gaussian (pool_common.cpp)."""
    torch._check(sigma > 0 and math.isfinite(sigma), lambda: f"{op}: sigma must be positive and finite, got {sigma}")
    for k in kernel_size:
        torch._check(k <= MAX_GAUSSIAN_KERNEL,
                     lambda: f"{op}: kernel_size {shape_str(kernel_size)} has more than {MAX_GAUSSIAN_KERNEL} taps in "
                             f"a dimension (its weight table would not fit)")


def _check_same_dtype_device(op, grad_output, input):
    """check_same_dtype_device (pool_common.cpp)."""
    torch._check(input.dtype == grad_output.dtype and input.device == grad_output.device,
                 lambda: f"{op}: input ({scalar_type(input.dtype)}, {input.device}) and grad_output "
                         f"({scalar_type(grad_output.dtype)}, {grad_output.device}) must have the same dtype and device")


def _check_indices(op, grad_output, indices):
    """The saved indices of a backward op: int64, grad_output's shape and device."""
    check_dtype(grad_output, "grad_output", op)
    torch._check(indices.dtype == torch.long, lambda: f"{op}: indices must be int64, got {scalar_type(indices.dtype)}")
    check_same_shape(grad_output, "grad_output", indices, "indices", op)
    torch._check(grad_output.device == indices.device,
                 lambda: f"{op}: grad_output ({grad_output.device}) and indices ({indices.device}) must be on the "
                         f"same device")


# --- window and adaptive pooling (pool_ops.cpp) ----------------------------------------------------


@register_fake("max_pool_forward")
def _max_pool_forward_fake(input, kernel_size, stride, padding, dilation, ceil_mode, minimum, padding_end=()):
    op = "cnn_ops.min_pool" if minimum else "cnn_ops.max_pool"
    check_dtype(input, "input", op)
    shape = window_shape(op, input.shape, kernel_size, stride, padding, dilation, ceil_mode, padding_end)
    cl = pool_channels_last(input)
    return empty(input, shape, channels_last=cl), empty(input, shape, torch.long, channels_last=cl)


@register_fake("adaptive_max_pool_forward")
def _adaptive_max_pool_forward_fake(input, output_size, minimum):
    op = "cnn_ops.adaptive_min_pool" if minimum else "cnn_ops.adaptive_max_pool"
    shape = adaptive_shape(op, input, output_size)
    cl = pool_channels_last(input)
    return empty(input, shape, channels_last=cl), empty(input, shape, torch.long, channels_last=cl)


@register_fake("max_pool_backward")
def _max_pool_backward_fake(grad_output, indices, input_size):
    # scatter_geometry (pool_common.cpp). Whether every index lies inside input_size depends on
    # the data: the kernels check that while scattering, a fake cannot.
    op = "cnn_ops.max_pool_backward"
    _check_indices(op, grad_output, indices)
    check_grad_output_matches(op, grad_output, input_size)
    # The layout of the forward, remembered by its indices.
    return empty(grad_output, input_size, channels_last=pool_channels_last(indices))


@register_fake("avg_pool_forward")
def _avg_pool_forward_fake(input, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override,
                           padding_end=()):
    op = "cnn_ops.avg_pool"
    check_dtype(input, "input", op)
    shape = window_shape(op, input.shape, kernel_size, stride, padding, _ones(len(kernel_size)), ceil_mode,
                         padding_end)
    _check_divisor(op, divisor_override)
    return empty(input, shape, channels_last=pool_channels_last(input))


@register_fake("avg_pool_backward")
def _avg_pool_backward_fake(grad_output, input_size, kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override, padding_end=()):
    op = "cnn_ops.avg_pool_backward"
    check_window_backward(op, grad_output, input_size, kernel_size, stride, padding, _ones(len(kernel_size)),
                          ceil_mode, padding_end)
    _check_divisor(op, divisor_override)
    # grad_output's layout: the autograd formula passes it in the layout of the forward's input.
    return empty(grad_output, input_size, channels_last=pool_channels_last(grad_output))


@register_fake("adaptive_avg_pool_forward")
def _adaptive_avg_pool_forward_fake(input, output_size):
    shape = adaptive_shape("cnn_ops.adaptive_avg_pool", input, output_size, empty_channels_allowed=True)
    return empty(input, shape, channels_last=pool_channels_last(input))


@register_fake("adaptive_avg_pool_backward")
def _adaptive_avg_pool_backward_fake(grad_output, input_size):
    # adaptive_backward_geometry (pool_common.cpp): grad_output's spatial sizes are the output
    # sizes, any of them (0 included); the input's must be positive.
    op = "cnn_ops.adaptive_avg_pool_backward"
    check_dtype(grad_output, "grad_output", op)
    torch._check(3 <= len(input_size) <= 5,
                 lambda: f"{op}: input_size must have 1, 2 or 3 spatial dimensions after (batch, channels), got "
                         f"{shape_str(input_size)}")
    check_grad_output_matches(op, grad_output, input_size)
    for s in input_size[2:]:
        torch._check(s >= 1, lambda: f"{op}: empty spatial size in input_size {shape_str(input_size)}")
    return empty(grad_output, input_size, channels_last=pool_channels_last(grad_output))


@register_fake("lp_pool_forward")
def _lp_pool_forward_fake(input, norm_type, kernel_size, stride, ceil_mode):
    op = "cnn_ops.lp_pool"
    _check_norm_type(op, norm_type)
    check_dtype(input, "input", op)
    nd = len(kernel_size)
    shape = window_shape(op, input.shape, kernel_size, stride, _zeros(nd), _ones(nd), ceil_mode)
    return empty(input, shape, channels_last=pool_channels_last(input))


@register_fake("lp_pool_backward")
def _lp_pool_backward_fake(grad_output, input, norm_type, kernel_size, stride, ceil_mode):
    op = "cnn_ops.lp_pool_backward"
    _check_norm_type(op, norm_type)
    _check_same_dtype_device(op, grad_output, input)
    nd = len(kernel_size)
    check_window_backward(op, grad_output, input.shape, kernel_size, stride, _zeros(nd), _ones(nd), ceil_mode)
    # The input's layout (the gradient is computed from it).
    return empty(grad_output, input.shape, channels_last=pool_channels_last(input))


# --- k-max (kmax_pool_cpu.cpp; checks in pool_common.cpp) -------------------------------------------


@register_fake("kmax_pool_forward")
def _kmax_pool_forward_fake(input, k, dim):
    op = "cnn_ops.kmax_pool"
    check_dtype(input, "input", op)
    torch._check(input.dim() >= 1, lambda: f"{op}: input must have at least one dimension")
    d = wrap_dim(dim, input.dim())
    msg = lambda: f"{op}: k must be between 1 and the size of dimension {dim} ({input.shape[d]}) of the input of " \
                  f"shape {shape_str(input.shape)}, got k = {k}"  # noqa: E731
    torch._check(k >= 1, msg)
    torch._check(k <= input.shape[d], msg)
    shape = list(input.shape)
    shape[d] = k
    return empty(input, shape), empty(input, shape, torch.long)


@register_fake("kmax_pool_backward")
def _kmax_pool_backward_fake(grad_output, indices, dim, input_size):
    op = "cnn_ops.kmax_pool_backward"
    check_dtype(grad_output, "grad_output", op)
    check_same_shape(grad_output, "grad_output", indices, "indices", op)
    torch._check(indices.dtype == torch.long, lambda: f"{op}: indices must be int64, got {scalar_type(indices.dtype)}")
    torch._check(grad_output.device == indices.device,
                 lambda: f"{op}: grad_output ({grad_output.device}) and indices ({indices.device}) must be on the "
                         f"same device")
    torch._check(len(input_size) == grad_output.dim() and grad_output.dim() >= 1,
                 lambda: f"{op}: input_size {shape_str(input_size)} and grad_output of shape "
                         f"{shape_str(grad_output.shape)} must have the same number (at least one) of dimensions")
    d = wrap_dim(dim, grad_output.dim())
    msg = lambda: f"{op}: grad_output of shape {shape_str(grad_output.shape)} does not fit input_size " \
                  f"{shape_str(input_size)} (equal sizes except along dim {dim}, where it holds between 1 and " \
                  f"input_size[dim] entries)"  # noqa: E731
    for i in range(grad_output.dim()):
        if i == d:
            torch._check(grad_output.shape[i] >= 1, msg)
            torch._check(grad_output.shape[i] <= input_size[i], msg)
        else:
            torch._check(grad_output.shape[i] == input_size[i], msg)
    return empty(grad_output, input_size)


# --- Gaussian (gaussian_pool_cpu.cpp) --------------------------------------------------------------


@register_fake("gaussian_pool_forward")
def _gaussian_pool_forward_fake(input, kernel_size, stride, padding, sigma):
    op = "cnn_ops.gaussian_pool"
    _check_gaussian(op, sigma, kernel_size)
    check_dtype(input, "input", op)
    return empty(input, window_shape(op, input.shape, kernel_size, stride, padding, _ones(len(kernel_size)), False))


@register_fake("gaussian_pool_backward")
def _gaussian_pool_backward_fake(grad_output, input_size, kernel_size, stride, padding, sigma):
    op = "cnn_ops.gaussian_pool_backward"
    _check_gaussian(op, sigma, kernel_size)
    check_window_backward(op, grad_output, input_size, kernel_size, stride, padding, _ones(len(kernel_size)), False)
    return empty(grad_output, input_size)


# --- stochastic (stochastic_pool_cpu.cpp) -----------------------------------------------------------
# The kernels also refuse a negative input (check_non_negative): that depends on the values,
# which a fake does not have.


def _stochastic_shape(op, input, kernel_size, stride):
    check_dtype(input, "input", op)
    nd = len(kernel_size)
    return window_shape(op, input.shape, kernel_size, stride, _zeros(nd), _ones(nd), False)


@register_fake("stochastic_pool_forward")
def _stochastic_pool_forward_fake(input, uniform, kernel_size, stride):
    op = "cnn_ops.stochastic_pool"
    shape = _stochastic_shape(op, input, kernel_size, stride)
    # check_uniform (pool_common.cpp): the output's shape, the input's dtype and device.
    check_sizes_equal(uniform.shape, shape, lambda: f"{op}: uniform of shape {shape_str(uniform.shape)} must have "
                                                    f"the output's shape {shape_str(shape)}")
    torch._check(uniform.dtype == input.dtype and uniform.device == input.device,
                 lambda: f"{op}: uniform ({scalar_type(uniform.dtype)}, {uniform.device}) must have the dtype and "
                         f"device of the input ({scalar_type(input.dtype)}, {input.device})")
    return empty(input, shape), empty(input, shape, torch.long)


@register_fake("stochastic_pool_eval_forward")
def _stochastic_pool_eval_forward_fake(input, kernel_size, stride):
    return empty(input, _stochastic_shape("cnn_ops.stochastic_pool", input, kernel_size, stride))


@register_fake("stochastic_pool_eval_backward")
def _stochastic_pool_eval_backward_fake(grad_output, input, kernel_size, stride):
    op = "cnn_ops.stochastic_pool_eval_backward"
    nd = len(kernel_size)
    check_window_backward(op, grad_output, input.shape, kernel_size, stride, _zeros(nd), _ones(nd), False)
    _check_same_dtype_device(op, grad_output, input)
    return empty(input, input.shape)
