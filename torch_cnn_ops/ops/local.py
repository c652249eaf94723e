"""Fake kernels of the local family (tiled and unshared convolution).

Three ops serve both layers: ``local_forward`` with a weight of shape
``(*grid, out_channels, in_channels, *kernel)`` whose output position ``p`` uses the kernel
``weight[p % grid]`` (grid = tile size, or output size for unshared convolution), and its two
backward passes. Every op's derivatives (first derivatives, double backward, tangents) are
registered in C++, csrc/local/local_autograd.cpp:

* ``local_input_backward(gy, W)`` is linear in ``gy`` and in ``W``: its adjoint in ``gy`` is the
  forward op, its adjoint in ``W`` the weight gradient.
* ``local_weight_backward(gy, x)`` is linear in ``gy`` and in ``x``: its adjoint in ``gy`` is the
  forward op of ``x`` with the cotangent as the weight, its adjoint in ``x`` the input gradient.
"""

import torch

from .conv import _out_size

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
