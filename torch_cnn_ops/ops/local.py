"""Fake kernels and autograd of the local family (tiled and unshared convolution).

Three ops serve both layers: ``local_forward`` with a weight of shape
``(*grid, out_channels, in_channels, *kernel)`` whose output position ``p`` uses the kernel
``weight[p % grid]`` (grid = tile size, or output size for unshared convolution), and its two
backward passes. As for conv, the backward passes are ops with their own autograd, so double
backward is the autograd of the backward ops:

* ``local_input_backward(gy, W)`` is linear in ``gy`` and in ``W``: its adjoint in ``gy`` is the
  forward op, its adjoint in ``W`` the weight gradient.
* ``local_weight_backward(gy, x)`` is linear in ``gy`` and in ``x``: its adjoint in ``gy`` is the
  forward op of ``x`` with the cotangent as the weight, its adjoint in ``x`` the input gradient.
"""

import torch

from .conv import _exact_padding_end, _out_size

ops = torch.ops.cnn_ops


@torch.library.register_fake("cnn_ops::local_forward")
def _local_forward_fake(input, weight, bias, stride, padding, padding_end, dilation):
    nd = len(stride)
    torch._check(input.dim() == nd + 2, lambda: f"local: expected a {nd + 2}-d input, got {input.dim()}-d")
    torch._check(weight.dim() == 2 * nd + 2, lambda: f"local: expected a {2 * nd + 2}-d weight, got {weight.dim()}-d")
    torch._check(input.shape[1] == weight.shape[nd + 1], lambda: "local: input channels do not match the weight")
    torch._check(input.dtype == weight.dtype, lambda: "local: input and weight must have the same dtype")
    spatial = [
        _out_size(input.shape[2 + i], padding[i], padding_end[i], weight.shape[nd + 2 + i], stride[i], dilation[i])
        for i in range(nd)
    ]
    return input.new_empty([input.shape[0], weight.shape[nd], *spatial])


@torch.library.register_fake("cnn_ops::local_input_backward")
def _local_input_backward_fake(grad_output, weight, input_size, stride, padding, dilation):
    return grad_output.new_empty(input_size)


@torch.library.register_fake("cnn_ops::local_weight_backward")
def _local_weight_backward_fake(grad_output, input, weight_size, stride, padding, dilation):
    return grad_output.new_empty(weight_size)


# --- autograd of the forward ------------------------------------------------------------
# Registered in C++ (csrc/local/local_autograd.cpp): from Python it cost about 100 us per call.
# The derivatives of the backward ops are below.


def _local_of(input, weight, out_sizes, stride, padding, dilation):
    """Forward op (no bias) whose output has the spatial sizes ``out_sizes``."""
    nd = len(stride)
    pad_end = _exact_padding_end(input.shape[2:], out_sizes, weight.shape[nd + 2 :], stride, padding, dilation)
    return ops.local_forward(input, weight, None, stride, padding, pad_end, dilation)


# --- autograd of the input gradient -------------------------------------------------------


def _input_backward_setup(ctx, inputs, output):
    grad_output, weight, input_size, stride, padding, dilation = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.args = (stride, padding, dilation)


def _input_backward_backward(ctx, gg_input):
    grad_output, weight = ctx.saved_tensors
    d_grad_output = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad_output = _local_of(gg_input, weight, grad_output.shape[2:], *ctx.args)
    if ctx.needs_input_grad[1]:
        d_weight = ops.local_weight_backward(grad_output, gg_input, list(weight.shape), *ctx.args)
    return d_grad_output, d_weight, None, None, None, None


torch.library.register_autograd(
    "cnn_ops::local_input_backward", _input_backward_backward, setup_context=_input_backward_setup
)


# --- autograd of the weight gradient ------------------------------------------------------


def _weight_backward_setup(ctx, inputs, output):
    grad_output, input, weight_size, stride, padding, dilation = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.args = (stride, padding, dilation)


def _weight_backward_backward(ctx, gg_weight):
    grad_output, input = ctx.saved_tensors
    d_grad_output = d_input = None
    if ctx.needs_input_grad[0]:
        d_grad_output = _local_of(input, gg_weight, grad_output.shape[2:], *ctx.args)
    if ctx.needs_input_grad[1]:
        d_input = ops.local_input_backward(grad_output, gg_weight, list(input.shape), *ctx.args)
    return d_grad_output, d_input, None, None, None, None


torch.library.register_autograd(
    "cnn_ops::local_weight_backward", _weight_backward_backward, setup_context=_weight_backward_setup
)
