"""Fake kernels of the conv family.

The backward passes are ops themselves (``conv_input_backward`` and
``conv_weight_backward``). Every op's derivatives (first derivatives, double backward to any
order, tangents for forward-mode AD) are registered in C++, csrc/conv/conv_autograd.cpp.
"""

import torch

ops = torch.ops.cnn_ops


def _out_size(in_size, pad_lo, pad_hi, k, stride, dilation):
    return (in_size + pad_lo + pad_hi - dilation * (k - 1) - 1) // stride + 1


@torch.library.register_fake("cnn_ops::conv_forward")
def _conv_forward_fake(input, weight, bias, stride, padding, padding_end, dilation, groups, algorithm):
    nd = len(stride)
    torch._check(input.dim() == nd + 2, lambda: f"conv: expected a {nd + 2}-d input, got {input.dim()}-d")
    torch._check(weight.dim() == nd + 2, lambda: f"conv: expected a {nd + 2}-d weight, got {weight.dim()}-d")
    torch._check(input.shape[1] == weight.shape[1] * groups, lambda: "conv: input channels do not match weight")
    torch._check(input.dtype == weight.dtype, lambda: "conv: input and weight must have the same dtype")
    spatial = [
        _out_size(input.shape[2 + i], padding[i], padding_end[i], weight.shape[2 + i], stride[i], dilation[i])
        for i in range(nd)
    ]
    return input.new_empty([input.shape[0], weight.shape[0], *spatial])


@torch.library.register_fake("cnn_ops::conv_input_backward")
def _conv_input_backward_fake(grad_output, weight, input_size, stride, padding, dilation, groups, algorithm):
    return grad_output.new_empty(input_size)


@torch.library.register_fake("cnn_ops::conv_weight_backward")
def _conv_weight_backward_fake(grad_output, input, weight_size, stride, padding, dilation, groups, algorithm):
    return grad_output.new_empty(weight_size)


