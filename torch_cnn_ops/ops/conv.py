"""Fake kernels and autograd of the conv family.

The backward passes are ops themselves (``conv_input_backward`` and
``conv_weight_backward``), each with its own autograd formula, so double backward is the
autograd of the backward ops and ``torch.compile`` sees every step:

* ``conv_input_backward(gy, W)`` is linear in ``gy`` and in ``W``: its adjoint in ``gy`` is
  the forward convolution, its adjoint in ``W`` the weight gradient.
* ``conv_weight_backward(gy, x)`` is linear in ``gy`` and in ``x``: its adjoint in ``gy`` is
  the forward convolution of ``x`` with the cotangent as a kernel, its adjoint in ``x`` the
  input gradient.
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


# --- autograd of the forward ------------------------------------------------------------
# Registered in C++ (csrc/conv/conv_autograd.cpp): from Python it cost about 100 us per call,
# more than the kernels of a small layer. The derivatives of the backward ops are below.


# --- autograd of the input gradient -------------------------------------------------------


def _exact_padding_end(in_sizes, out_sizes, kernel, stride, padding, dilation):
    """The smallest trailing pad for which a forward convolution of ``in_sizes`` gives ``out_sizes``.

    The trailing pad only decides how many outputs there are, never their values, so the
    forward convolution rebuilt with it equals the one that produced ``out_sizes``.
    """
    return [
        max(0, (o - 1) * s + d * (k - 1) + 1 - i - p)
        for i, o, k, s, p, d in zip(in_sizes, out_sizes, kernel, stride, padding, dilation)
    ]


def _conv_of(input, weight, out_sizes, stride, padding, dilation, groups, algorithm):
    """Forward convolution (no bias) whose output has the spatial sizes ``out_sizes``."""
    pad_end = _exact_padding_end(input.shape[2:], out_sizes, weight.shape[2:], stride, padding, dilation)
    return ops.conv_forward(input, weight, None, stride, padding, pad_end, dilation, groups, algorithm)


def _input_backward_setup(ctx, inputs, output):
    grad_output, weight, input_size, stride, padding, dilation, groups, algorithm = inputs
    ctx.save_for_backward(grad_output, weight)
    ctx.args = (stride, padding, dilation, groups, algorithm)


def _input_backward_backward(ctx, gg_input):
    grad_output, weight = ctx.saved_tensors
    stride, padding, dilation, groups, algorithm = ctx.args
    d_grad_output = d_weight = None
    if ctx.needs_input_grad[0]:
        d_grad_output = _conv_of(gg_input, weight, grad_output.shape[2:], *ctx.args)
    if ctx.needs_input_grad[1]:
        d_weight = ops.conv_weight_backward(grad_output, gg_input, list(weight.shape), *ctx.args)
    return d_grad_output, d_weight, None, None, None, None, None, None


torch.library.register_autograd(
    "cnn_ops::conv_input_backward", _input_backward_backward, setup_context=_input_backward_setup
)


# --- autograd of the weight gradient ------------------------------------------------------


def _weight_backward_setup(ctx, inputs, output):
    grad_output, input, weight_size, stride, padding, dilation, groups, algorithm = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.args = (stride, padding, dilation, groups, algorithm)


def _weight_backward_backward(ctx, gg_weight):
    grad_output, input = ctx.saved_tensors
    d_grad_output = d_input = None
    if ctx.needs_input_grad[0]:
        d_grad_output = _conv_of(input, gg_weight, grad_output.shape[2:], *ctx.args)
    if ctx.needs_input_grad[1]:
        d_input = ops.conv_input_backward(grad_output, gg_weight, list(input.shape), *ctx.args)
    return d_grad_output, d_input, None, None, None, None, None, None


torch.library.register_autograd(
    "cnn_ops::conv_weight_backward", _weight_backward_backward, setup_context=_weight_backward_setup
)
