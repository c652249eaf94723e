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

The fakes check what csrc/local/local_common.cpp checks (the spatial arguments and output
sizes are the conv family's, in ._geometry) and return contiguous results, as the kernels.
"""

import torch

from ._geometry import (check_backward_sizes, check_dtype, check_padding_end, check_same_kind, check_spatial_args,
                        forward_extent, register_fake, shape_str)

ops = torch.ops.cnn_ops

_OP = "cnn_ops.local"


def _check_weight(wsize, nd, in_channels, what):
    """fill_weight (local_common.cpp): (*grid, out_channels, in_channels, *kernel) with every
    grid size, out_channels and kernel size positive."""
    torch._check(len(wsize) == 2 * nd + 2,
                 lambda: f"{_OP}: expected a {2 * nd + 2}-d weight ({nd} tile or output sizes, out_channels, "
                         f"in_channels, {nd} kernel sizes) for a {nd}-d convolution, got weight of shape "
                         f"{shape_str(wsize)}")
    for g in wsize[:nd]:
        torch._check(g >= 1, lambda: f"{_OP}: the weight's leading {nd} sizes (tile size, or output size for unshared) "
                                     f"must be at least 1, got weight of shape {shape_str(wsize)}")
    torch._check(wsize[nd] >= 1, lambda: f"{_OP}: out_channels (weight.size({nd})) must be positive, got weight of "
                                         f"shape {shape_str(wsize)}")
    torch._check(wsize[nd + 1] == in_channels,
                 lambda: f"{_OP}: weight of shape {shape_str(wsize)} expects {wsize[nd + 1]} input channels "
                         f"(weight.size({nd + 1})), but the {what} has {in_channels}")
    for k in wsize[nd + 2:]:
        torch._check(k >= 1, lambda: f"{_OP}: kernel sizes must be positive, got weight of shape {shape_str(wsize)}")


@register_fake("local_forward")
def _local_forward_fake(input, weight, bias, stride, padding, padding_end, dilation):
    nd = check_spatial_args(_OP, stride, padding, dilation)
    check_padding_end(_OP, padding_end, nd)
    torch._check(input.dim() == nd + 2,
                 lambda: f"{_OP}: expected a {nd + 2}-d input (batch, channels, {nd} spatial) for a {nd}-d "
                         f"convolution, got input of shape {shape_str(input.shape)}")
    check_dtype(input, "input", _OP)
    check_same_kind(input, "input", weight, "weight", _OP)
    _check_weight(weight.shape, nd, input.shape[1], "input")
    out_channels = weight.shape[nd]
    spatial = [
        forward_extent(_OP, input.shape[2 + i], padding[i], padding_end[i], weight.shape[nd + 2 + i], stride[i],
                       dilation[i], i, input.shape)
        for i in range(nd)
    ]
    if bias is not None:
        check_same_kind(input, "input", bias, "bias", _OP)
        # (out_channels) or (out_channels, *output_size): the number of dimensions picks the
        # form (a plain int), then each size is checked.
        per_position = [out_channels, *spatial]
        torch._check(bias.dim() in (1, nd + 1),
                     lambda: f"{_OP}: bias must have shape [{out_channels}] (out_channels) or "
                             f"{shape_str(per_position)} (out_channels, *output_size), got {shape_str(bias.shape)}")
        for b, e in zip(bias.shape, per_position):
            torch._check(b == e, lambda: f"{_OP}: bias must have shape [{out_channels}] (out_channels) or "
                                         f"{shape_str(per_position)} (out_channels, *output_size), got "
                                         f"{shape_str(bias.shape)}")
    return input.new_empty([input.shape[0], out_channels, *spatial])


@register_fake("local_input_backward")
def _local_input_backward_fake(grad_output, weight, input_size, stride, padding, dilation):
    op = "cnn_ops.local_input_backward"
    nd = check_spatial_args(_OP, stride, padding, dilation)
    torch._check(len(input_size) == nd + 2 and grad_output.dim() == nd + 2,
                 lambda: f"{op}: input_size {shape_str(input_size)} and grad_output {shape_str(grad_output.shape)} "
                         f"must have {nd + 2} dimensions")
    check_dtype(grad_output, "grad_output", _OP)
    check_same_kind(grad_output, "grad_output", weight, "weight", _OP)
    _check_weight(weight.shape, nd, input_size[1], "input")
    check_backward_sizes(op, grad_output, input_size, weight.shape[nd], weight.shape[nd + 2:], stride, padding,
                         dilation)
    return grad_output.new_empty(input_size)


@register_fake("local_weight_backward")
def _local_weight_backward_fake(grad_output, input, weight_size, stride, padding, dilation):
    op = "cnn_ops.local_weight_backward"
    nd = check_spatial_args(_OP, stride, padding, dilation)
    torch._check(grad_output.dim() == nd + 2 and input.dim() == nd + 2,
                 lambda: f"{op}: grad_output {shape_str(grad_output.shape)} and input {shape_str(input.shape)} must "
                         f"have {nd + 2} dimensions")
    check_dtype(grad_output, "grad_output", _OP)
    check_same_kind(grad_output, "grad_output", input, "input", _OP)
    _check_weight(weight_size, nd, input.shape[1], "input")
    check_backward_sizes(op, grad_output, input.shape, weight_size[nd], weight_size[nd + 2:], stride, padding,
                         dilation)
    return grad_output.new_empty(weight_size)
