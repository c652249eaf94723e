"""Fake kernels of the conv family.

The backward passes are ops themselves (``conv_input_backward`` and
``conv_weight_backward``). Every op's derivatives (first derivatives, double backward to any
order, tangents for forward-mode AD) are registered in C++, csrc/conv/conv_autograd.cpp.

The fakes check what csrc/conv/conv_common.cpp checks (through ._geometry) and return what
the CPU and CUDA kernels return: results in the dtype of the first tensor, channels-last where
either operand suggests it (as torch's convolution), else contiguous.
"""

import torch

from ._geometry import (check_backward_sizes, check_dtype, check_padding_end, check_same_kind, check_spatial_args,
                        forward_extent, register_fake, shape_str)

ops = torch.ops.cnn_ops

_OP = "cnn_ops.conv"  # the prefix of the shared checks' messages, as in conv_common.cpp


def _check_weight(wsize, in_channels, groups, what):
    """fill_weight (conv_common.cpp): (out_channels, in_channels / groups, *kernel) with both
    channel counts divisible by groups and positive kernel sizes."""
    out_channels = wsize[0]
    torch._check(in_channels % groups == 0,
                 lambda: f"{_OP}: {what} channels ({in_channels}) must be divisible by groups ({groups})")
    positive_multiple = lambda: f"{_OP}: weight.size(0) (out_channels = {out_channels}) must be a positive multiple " \
                                f"of groups ({groups}); weight shape {shape_str(wsize)}"  # noqa: E731
    torch._check(out_channels >= 1, positive_multiple)
    torch._check(out_channels % groups == 0, positive_multiple)
    torch._check(wsize[1] == in_channels // groups,
                 lambda: f"{_OP}: weight of shape {shape_str(wsize)} expects {wsize[1] * groups} input channels "
                         f"({wsize[1]} per group x {groups} groups), but the {what} has {in_channels}")
    for k in wsize[2:]:
        torch._check(k >= 1, lambda: f"{_OP}: kernel sizes must be positive, weight shape {shape_str(wsize)}")


def _layout_of(t):
    """layout_of (conv_ops.cpp): channels-last for a 4-d or 5-d tensor laid out so and not also
    contiguous."""
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(t.dim(), torch.contiguous_format)
    if fmt == torch.contiguous_format or t.is_contiguous():
        return torch.contiguous_format
    return fmt if t.is_contiguous(memory_format=fmt) else torch.contiguous_format


def _in_result_format(result, a, b):
    """result_format and in_format (conv_ops.cpp): channels-last where either operand is laid out
    so, with the strides torch.empty gives that layout."""
    fmt = _layout_of(a)
    if fmt == torch.contiguous_format and b.dim() == a.dim():
        fmt = _layout_of(b)
    return torch.empty(result.shape, dtype=result.dtype, device=result.device, memory_format=fmt)


WINOGRAD_ALGORITHMS = ("winograd", "winograd_2x2", "winograd_4x4", "winograd_6x6")
ALGORITHMS = ("auto", "direct", "im2col", "shifted", "aten") + WINOGRAD_ALGORITHMS


def _check_algorithm(algorithm, stride, dilation, padding, kernel, in_spatial, out_spatial):
    """resolve_algorithm (conv_common.cpp): a known name; 'shifted' only with stride 1; Winograd
    where winograd_applies (conv_winograd.h), on the (depth, height, width) geometry."""
    torch._check(algorithm in ALGORITHMS,
                 lambda: f"{_OP}: algorithm must be 'auto', 'direct', 'im2col', 'shifted', 'aten', 'winograd', "
                         f"'winograd_2x2', 'winograd_4x4' or 'winograd_6x6', got '{algorithm}'")
    torch._check(algorithm != "shifted" or all(s == 1 for s in stride),
                 lambda: f"{_OP}: algorithm='shifted' needs stride 1 in every dimension; use 'im2col' or 'auto' for "
                         f"strided convolutions")
    if algorithm in WINOGRAD_ALGORITHMS:
        lead = 3 - len(stride)
        k, s, d = ([1] * lead + list(v) for v in (kernel, stride, dilation))
        depth = (1, 1, 0) if lead else (in_spatial[0], out_spatial[0], padding[0])
        applies = (k[0] == 1 and depth == (1, 1, 0) and all(v == 1 for v in s + d)
                   and k[1] in (1, 3) and k[2] in (1, 3) and k[1] * k[2] > 1)
        torch._check(applies, lambda: f"{_OP}: algorithm='{algorithm}' needs a 1-d or 2-d convolution with stride 1, "
                                      f"dilation 1 and a 3, 1x3, 3x1 or 3x3 kernel, got (depth, height, width) kernel "
                                      f"{shape_str(k)}, stride {shape_str(s)}, dilation {shape_str(d)}; use 'auto' "
                                      f"for the others")


@register_fake("conv_forward")
def _conv_forward_fake(input, weight, bias, stride, padding, padding_end, dilation, groups, algorithm):
    nd = check_spatial_args(_OP, stride, padding, dilation, groups)
    check_padding_end(_OP, padding_end, nd)
    torch._check(input.dim() == nd + 2,
                 lambda: f"{_OP}{nd}d: expected a {nd + 2}-d input (batch, channels, {nd} spatial), got input of "
                         f"shape {shape_str(input.shape)}")
    torch._check(weight.dim() == nd + 2,
                 lambda: f"{_OP}{nd}d: expected a {nd + 2}-d weight (out_channels, in_channels/groups, {nd} kernel "
                         f"sizes), got weight of shape {shape_str(weight.shape)}")
    check_dtype(input, "input", _OP)
    check_same_kind(input, "input", weight, "weight", _OP)
    _check_weight(weight.shape, input.shape[1], groups, "input")
    out_channels = weight.shape[0]
    if bias is not None:
        check_same_kind(input, "input", bias, "bias", _OP)
        msg = lambda: f"{_OP}: bias must have shape [{out_channels}] (out_channels), got " \
                      f"{shape_str(bias.shape)}"  # noqa: E731
        torch._check(bias.dim() == 1, msg)
        torch._check(bias.shape[0] == out_channels, msg)
    spatial = [
        forward_extent(_OP, input.shape[2 + i], padding[i], padding_end[i], weight.shape[2 + i], stride[i],
                       dilation[i], i, input.shape)
        for i in range(nd)
    ]
    _check_algorithm(algorithm, stride, dilation, padding, weight.shape[2:], input.shape[2:], spatial)
    return _in_result_format(input.new_empty([input.shape[0], out_channels, *spatial]), input, weight)


def _check_backward(op, grad_output, size_name, size, other_name, other, stride, padding, dilation, groups,
                    algorithm):
    """The checks of conv_input_backward (``size`` input_size, ``other`` the weight) and of
    conv_weight_backward (``size`` weight_size, ``other`` the input), in conv_common.cpp's order."""
    nd = check_spatial_args(_OP, stride, padding, dilation, groups)
    torch._check(len(size) == nd + 2 and grad_output.dim() == nd + 2 and other.dim() == nd + 2,
                 lambda: f"{op}: {size_name} {shape_str(size)}, grad_output {shape_str(grad_output.shape)} and "
                         f"{other_name} {shape_str(other.shape)} must all have {nd + 2} dimensions")
    check_dtype(grad_output, "grad_output", _OP)
    check_same_kind(grad_output, "grad_output", other, other_name, _OP)
    input_shape, weight_shape = (size, other.shape) if other_name == "weight" else (other.shape, size)
    _check_weight(weight_shape, input_shape[1], groups, "input")
    check_backward_sizes(op, grad_output, input_shape, weight_shape[0], weight_shape[2:], stride, padding, dilation)
    _check_algorithm(algorithm, stride, dilation, padding, weight_shape[2:], input_shape[2:], grad_output.shape[2:])


@register_fake("conv_input_backward")
def _conv_input_backward_fake(grad_output, weight, input_size, stride, padding, dilation, groups, algorithm):
    _check_backward("cnn_ops.conv_input_backward", grad_output, "input_size", input_size, "weight", weight, stride,
                    padding, dilation, groups, algorithm)
    return _in_result_format(grad_output.new_empty(input_size), grad_output, weight)


@register_fake("conv_weight_backward")
def _conv_weight_backward_fake(grad_output, input, weight_size, stride, padding, dilation, groups, algorithm):
    _check_backward("cnn_ops.conv_weight_backward", grad_output, "weight_size", weight_size, "input", input, stride,
                    padding, dilation, groups, algorithm)
    return _in_result_format(grad_output.new_empty(weight_size), grad_output, input)
