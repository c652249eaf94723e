"""Fake kernels and autograd of the pool family.

The backward passes are ops themselves, each with its own autograd formula, so double
backward is the autograd of the backward ops and ``torch.compile`` sees every step:

* ``max_pool_backward(gy, indices)`` scatters ``gy`` to the saved indices; it is linear in
  ``gy`` and its adjoint gathers at the indices.
* ``avg_pool_backward(gy)`` spreads ``gy`` over each window divided by its divisor; its
  adjoint is ``avg_pool_forward`` with the same arguments (likewise for the adaptive pair).
* ``lp_pool_backward(gy, x)`` is linear in ``gy`` with adjoint the directional derivative of
  lp pooling; its derivative in ``x`` is taken by differentiating lp pooling written with
  the avg op (``(avg_pool(x^p) * kernel_volume)^(1/p)``, torch's formula).
"""

import math

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


# --- max / min -----------------------------------------------------------------------------------


def _gather(values, indices):
    """values (N, C, *in) read at indices (N, C, *out): the adjoint of the scatter."""
    flat = values.flatten(2)
    return flat.gather(2, indices.flatten(2)).view(indices.shape)


# The first derivatives of every pooling are registered in C++ (csrc/pool/pool_autograd.cpp);
# the derivatives of their backward ops (double backward) are here.


def _scatter_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _scatter_backward(ctx, gg_input):
    (indices,) = ctx.saved_tensors
    return _gather(gg_input, indices), None, None


torch.library.register_autograd("cnn_ops::max_pool_backward", _scatter_backward, setup_context=_scatter_setup)


# --- avg -------------------------------------------------------------------------------------------


def _avg_backward_setup(ctx, inputs, output):
    grad_output, input_size, *args = inputs
    ctx.args = args


def _avg_backward_backward(ctx, gg_input):
    return (ops.avg_pool_forward(gg_input, *ctx.args),) + (None,) * 7


torch.library.register_autograd("cnn_ops::avg_pool_backward", _avg_backward_backward,
                                setup_context=_avg_backward_setup)


def _adaptive_avg_backward_setup(ctx, inputs, output):
    ctx.output_size = list(inputs[0].shape[2:])


def _adaptive_avg_backward_backward(ctx, gg_input):
    return ops.adaptive_avg_pool_forward(gg_input, ctx.output_size), None


torch.library.register_autograd("cnn_ops::adaptive_avg_pool_backward", _adaptive_avg_backward_backward,
                                setup_context=_adaptive_avg_backward_setup)


# --- lp ----------------------------------------------------------------------------------------------


def lp_pool_composite(input, norm_type, kernel_size, stride, ceil_mode):
    """lp pooling built from differentiable pieces (torch's formula on the avg op)."""
    nd = len(kernel_size)
    avg = ops.avg_pool_forward(input.pow(norm_type), kernel_size, stride, [0] * nd, ceil_mode, True, None)
    volume = math.prod(kernel_size)
    return (torch.sign(avg) * torch.relu(avg.abs()) * volume).pow(1.0 / norm_type)


def _lp_backward_setup(ctx, inputs, output):
    grad_output, input, *args = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.args = args


def _lp_backward_backward(ctx, gg_input):
    grad_output, input = ctx.saved_tensors
    with torch.enable_grad():
        gy = grad_output.detach().requires_grad_()
        x = input.detach().requires_grad_()
        out = lp_pool_composite(x, *ctx.args)
        (gx,) = torch.autograd.grad(out, x, gy, create_graph=True)
        d_gy, d_x = torch.autograd.grad(gx, (gy, x), gg_input, allow_unused=True,
                                        create_graph=torch.is_grad_enabled())
    if d_x is None:
        d_x = torch.zeros_like(input)
    return d_gy, d_x, None, None, None, None


torch.library.register_autograd("cnn_ops::lp_pool_backward", _lp_backward_backward,
                                setup_context=_lp_backward_setup)


# --- k-max ---------------------------------------------------------------------------------------


@torch.library.register_fake("cnn_ops::kmax_pool_forward")
def _kmax_pool_forward_fake(input, k, dim):
    shape = list(input.shape)
    shape[dim] = k
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.long)


@torch.library.register_fake("cnn_ops::kmax_pool_backward")
def _kmax_pool_backward_fake(grad_output, indices, dim, input_size):
    return grad_output.new_empty(input_size)


def _kmax_backward_setup(ctx, inputs, output):
    grad_output, indices, dim, input_size = inputs
    ctx.dim = dim
    ctx.save_for_backward(indices)


def _kmax_backward_backward(ctx, gg_input):
    (indices,) = ctx.saved_tensors
    return gg_input.gather(ctx.dim, indices), None, None, None


torch.library.register_autograd("cnn_ops::kmax_pool_backward", _kmax_backward_backward,
                                setup_context=_kmax_backward_setup)


# --- gaussian ------------------------------------------------------------------------------------
# gaussian_pool_backward(gy) is the transposed weighted window, linear in gy; its adjoint is
# gaussian_pool_forward with the same arguments.


@torch.library.register_fake("cnn_ops::gaussian_pool_forward")
def _gaussian_pool_forward_fake(input, kernel_size, stride, padding, sigma):
    ones = [1] * len(kernel_size)
    return input.new_empty(_window_shape(input.shape, kernel_size, stride, padding, ones, False))


@torch.library.register_fake("cnn_ops::gaussian_pool_backward")
def _gaussian_pool_backward_fake(grad_output, input_size, kernel_size, stride, padding, sigma):
    return grad_output.new_empty(input_size)


def _gaussian_backward_setup(ctx, inputs, output):
    grad_output, input_size, *args = inputs
    ctx.args = args


def _gaussian_backward_backward(ctx, gg_input):
    return ops.gaussian_pool_forward(gg_input, *ctx.args), None, None, None, None, None


torch.library.register_autograd("cnn_ops::gaussian_pool_backward", _gaussian_backward_backward,
                                setup_context=_gaussian_backward_setup)


# --- stochastic ----------------------------------------------------------------------------------
# Training: the gradient goes to the picked elements, max_pool_backward's scatter through the
# indices. Eval: stochastic_pool_eval_backward(gy, x) is linear in gy; its derivatives are
# taken by differentiating eval-mode stochastic pooling written with the avg op
# (avg_pool(x^2) / avg_pool(x), 0 where the window sums to 0).


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


def stochastic_eval_composite(input, kernel_size, stride):
    """Eval-mode stochastic pooling built from differentiable pieces: avg(x^2) / avg(x)."""
    nd = len(kernel_size)
    args = (kernel_size, stride, [0] * nd, False, True, None)
    s1 = ops.avg_pool_forward(input, *args)
    s2 = ops.avg_pool_forward(input * input, *args)
    positive = s1 > 0
    return torch.where(positive, s2 / torch.where(positive, s1, torch.ones_like(s1)), torch.zeros_like(s1))


def _stochastic_eval_backward_setup(ctx, inputs, output):
    grad_output, input, *args = inputs
    ctx.save_for_backward(grad_output, input)
    ctx.args = args


def _stochastic_eval_backward_backward(ctx, gg_input):
    grad_output, input = ctx.saved_tensors
    with torch.enable_grad():
        gy = grad_output.detach().requires_grad_()
        x = input.detach().requires_grad_()
        out = stochastic_eval_composite(x, *ctx.args)
        (gx,) = torch.autograd.grad(out, x, gy, create_graph=True)
        d_gy, d_x = torch.autograd.grad(gx, (gy, x), gg_input, allow_unused=True,
                                        create_graph=torch.is_grad_enabled())
    if d_x is None:
        d_x = torch.zeros_like(input)
    return d_gy, d_x, None, None


torch.library.register_autograd("cnn_ops::stochastic_pool_eval_backward", _stochastic_eval_backward_backward,
                                setup_context=_stochastic_eval_backward_setup)
