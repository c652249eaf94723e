"""Batching rules of the ops, for ``torch.vmap`` (and ``torch.func`` transforms built on it:
per-sample gradients, ``jacrev`` / ``jacfwd``, ensembles).

A rule receives the vmapped dimension of each argument (``in_dims``) and folds the vmapped
dimension ``B`` into a dimension the op already iterates over, so that one call serves the
whole batch:

* into the samples ``N`` (``(B, N, C, ...) -> (B*N, C, ...)``) where every sample is computed
  on its own: pooling, convolution with a shared weight, group and layer norm's forward;
* into the channels (``(N, B*C, ...)``) where the op is per channel or per group of channels
  but sums over samples: batch norm (its statistics are per channel), group norm's backward,
  and convolution with a batched weight or a per-sample weight gradient (``groups * B``,
  as torch's own batching rule for convolution does);
* elsewhere (rare combinations, e.g. a batched tiled-convolution weight), a loop over ``B``.

Only these Python rules run under vmap; outside vmap they cost nothing.
"""

import torch

ops = torch.ops.cnn_ops


# --- helpers -------------------------------------------------------------------------------------


def _batched(d):
    """Whether an in_dims entry marks a batched tensor (a list argument's entry is a list)."""
    return isinstance(d, int)


def _front(x, d, size):
    """x with its vmapped dimension first; an unbatched x is expanded to ``size``."""
    if x is None:
        return None
    if d is None:
        return x.unsqueeze(0).expand(size, *x.shape)
    return x.movedim(d, 0)


def _into_samples(x):
    """(B, N, ...) -> (B*N, ...)."""
    return x.flatten(0, 1)


def _from_samples(y, size):
    """(B*N, ...) -> (B, N, ...)."""
    return y.unflatten(0, (size, -1))


def _into_channels(x):
    """(B, N, C, ...) -> (N, B*C, ...) (also group statistics (B, N, G) -> (N, B*G))."""
    return x.movedim(0, 1).flatten(1, 2)


def _from_channels(y, size):
    """(N, B*C, ...) -> (B, N, C, ...)."""
    return y.unflatten(1, (size, -1)).movedim(1, 0)


def _per_channel(p, d, size):
    """A per-channel vector (C) or a batched one (B, C) -> (B*C)."""
    return None if p is None else _front(p, d, size).flatten()


def _loop(op, in_dims, args):
    """The op on each slice of the vmapped dimension, stacked."""
    size = next(a.shape[d] for a, d in zip(args, in_dims) if _batched(d))
    results = [op(*[a.select(d, i) if _batched(d) else a for a, d in zip(args, in_dims)]) for i in range(size)]
    if isinstance(results[0], tuple):
        return tuple(torch.stack(r) for r in zip(*results)), (0,) * len(results[0])
    return torch.stack(results), 0


def _only(in_dims, *positions):
    """Whether no argument but those at ``positions`` is batched."""
    return not any(_batched(d) for i, d in enumerate(in_dims) if i not in positions)


def _rule(op):
    def register(fn):
        torch.library.register_vmap(op, fn)
        return fn

    return register


# --- conv / local -------------------------------------------------------------------------------------


@_rule("cnn_ops::conv_forward")
def _conv_forward(info, in_dims, input, weight, bias, stride, padding, padding_end, dilation, groups, algorithm):
    x_d, w_d, b_d = in_dims[:3]
    size = info.batch_size
    if w_d is None and b_d is None:
        y = ops.conv_forward(_into_samples(_front(input, x_d, size)), weight, bias, stride, padding, padding_end,
                             dilation, groups, algorithm)
        return _from_samples(y, size), 0
    # Batched weight (ensembles): each member is a group of channels.
    y = ops.conv_forward(_into_channels(_front(input, x_d, size)), _front(weight, w_d, size).flatten(0, 1),
                         _per_channel(bias, b_d, size), stride, padding, padding_end, dilation, groups * size,
                         algorithm)
    return _from_channels(y, size), 0


@_rule("cnn_ops::conv_input_backward")
def _conv_input_backward(info, in_dims, grad_output, weight, input_size, stride, padding, dilation, groups,
                         algorithm):
    g_d, w_d = in_dims[:2]
    size = info.batch_size
    if w_d is None:
        y = ops.conv_input_backward(_into_samples(_front(grad_output, g_d, size)), weight,
                                    [size * input_size[0], *input_size[1:]], stride, padding, dilation, groups,
                                    algorithm)
        return _from_samples(y, size), 0
    y = ops.conv_input_backward(_into_channels(_front(grad_output, g_d, size)), _front(weight, w_d, size).flatten(0, 1),
                                [input_size[0], size * input_size[1], *input_size[2:]], stride, padding, dilation,
                                groups * size, algorithm)
    return _from_channels(y, size), 0


@_rule("cnn_ops::conv_weight_backward")
def _conv_weight_backward(info, in_dims, grad_output, input, weight_size, stride, padding, dilation, groups,
                          algorithm):
    # A weight gradient per member of the batch (per-sample gradients): each member is a group.
    size = info.batch_size
    y = ops.conv_weight_backward(_into_channels(_front(grad_output, in_dims[0], size)),
                                 _into_channels(_front(input, in_dims[1], size)),
                                 [size * weight_size[0], *weight_size[1:]], stride, padding, dilation, groups * size,
                                 algorithm)
    return y.unflatten(0, (size, -1)), 0


@_rule("cnn_ops::local_forward")
def _local_forward(info, in_dims, input, weight, bias, stride, padding, padding_end, dilation):
    if not _only(in_dims, 0):
        return _loop(ops.local_forward, in_dims, (input, weight, bias, stride, padding, padding_end, dilation))
    size = info.batch_size
    y = ops.local_forward(_into_samples(_front(input, in_dims[0], size)), weight, bias, stride, padding, padding_end,
                          dilation)
    return _from_samples(y, size), 0


@_rule("cnn_ops::local_input_backward")
def _local_input_backward(info, in_dims, grad_output, weight, input_size, stride, padding, dilation):
    if not _only(in_dims, 0):
        return _loop(ops.local_input_backward, in_dims, (grad_output, weight, input_size, stride, padding, dilation))
    size = info.batch_size
    y = ops.local_input_backward(_into_samples(_front(grad_output, in_dims[0], size)), weight,
                                 [size * input_size[0], *input_size[1:]], stride, padding, dilation)
    return _from_samples(y, size), 0


@_rule("cnn_ops::local_weight_backward")
def _local_weight_backward(info, in_dims, grad_output, input, weight_size, stride, padding, dilation):
    return _loop(ops.local_weight_backward, in_dims, (grad_output, input, weight_size, stride, padding, dilation))


# --- pooling: every sample on its own -------------------------------------------------------------------


def _sample_rule(name):
    """A rule folding B into the samples, read off the op's schema: its leading Tensor arguments
    are the batched tensors (samples first), and its ``input_size`` argument, if any, is the
    shape of one of them (its N grows by B)."""
    op = getattr(ops, name)
    arguments = op.default._schema.arguments
    tensors = next(i for i, a in enumerate(arguments) if str(a.type) != "Tensor")
    sized = next((i for i, a in enumerate(arguments) if a.name == "input_size"), None)

    def rule(info, in_dims, *args):
        size = info.batch_size
        args = list(args)
        for i in range(tensors):
            args[i] = _into_samples(_front(args[i], in_dims[i], size))
        if sized is not None:
            args[sized] = [size * args[sized][0], *args[sized][1:]]
        result = op(*args)
        if isinstance(result, tuple):
            return tuple(_from_samples(r, size) for r in result), (0,) * len(result)
        return _from_samples(result, size), 0

    torch.library.register_vmap(f"cnn_ops::{name}", rule)


# Every window, adaptive, Gaussian and stochastic pooling op (a new one included) computes each
# sample on its own; k-max pools along any dimension and has its own rules below.
_OP_NAMES = sorted({s.name.split("::")[1] for s in torch._C._jit_get_all_schemas() if s.name.startswith("cnn_ops::")})
for _name in _OP_NAMES:
    if "pool" in _name and not _name.startswith("kmax"):
        _sample_rule(_name)


@_rule("cnn_ops::kmax_pool_forward")
def _kmax_pool_forward(info, in_dims, input, k, dim):
    # Any rank: B becomes a leading dimension and `dim` moves one place.
    dim = dim % (input.dim() - 1) + 1
    values, indices = ops.kmax_pool_forward(_front(input, in_dims[0], info.batch_size), k, dim)
    return (values, indices), (0, 0)


@_rule("cnn_ops::kmax_pool_backward")
def _kmax_pool_backward(info, in_dims, grad_output, indices, dim, input_size):
    size = info.batch_size
    dim = dim % len(input_size) + 1
    y = ops.kmax_pool_backward(_front(grad_output, in_dims[0], size), _front(indices, in_dims[1], size), dim,
                               [size, *input_size])
    return y, 0


# --- norms ---------------------------------------------------------------------------------------------------


@_rule("cnn_ops::batch_norm_forward")
def _batch_norm_forward(info, in_dims, input, weight, bias, running_mean, running_var, training, eps):
    size = info.batch_size
    x_d, w_d, b_d, m_d, v_d = in_dims[:5]
    if x_d is None and (training or (m_d is None and v_d is None)):
        # The statistics are shared by the whole batch (an ensemble of affines over one input):
        # normalise once, as unbatched outputs, so that the running statistics move once, as
        # torch's; only the affine is batched.
        stats = (None, None) if training else (running_mean, running_var)  # read in eval only
        out, mean, invstd, var = ops.batch_norm_forward(input, None, None, *stats, training, eps)
        shape = [size, 1, -1] + [1] * (input.dim() - 2)
        out = out.unsqueeze(0)
        if weight is not None:
            out = out * _front(weight, w_d, size).reshape(shape)
        if bias is not None:
            out = out + _front(bias, b_d, size).reshape(shape)
        return (out.to(input.dtype), mean, invstd, var), (0, None, None, None)
    # Statistics are per channel: each member of B is its own set of channels.
    params = [_per_channel(p, d, size) for p, d in zip((weight, bias, running_mean, running_var), in_dims[1:5])]
    out, mean, invstd, var = ops.batch_norm_forward(_into_channels(_front(input, in_dims[0], size)), *params,
                                                    training, eps)
    return (_from_channels(out, size), *(s.unflatten(0, (size, -1)) for s in (mean, invstd, var))), (0, 0, 0, 0)


@_rule("cnn_ops::batch_norm_update_stats")
def _batch_norm_update_stats(info, in_dims, running_mean, running_var, mean, var, count, momentum):
    size = info.batch_size
    if in_dims[0] is None or in_dims[1] is None:
        raise RuntimeError(
            "batch_norm: under vmap the batch statistics are batched but running_mean and running_var, which "
            "are updated in place, are not; give each member its own running statistics (e.g. "
            "torch.func.stack_module_state), or use eval mode or track_running_stats=False")
    # Each member of B moves its own running statistics: one update over B*C channels, written
    # back into the batched tensors.
    stats = [_front(t, d, size) for t, d in zip((running_mean, running_var), in_dims[:2])]
    flat = [t.reshape(-1) for t in stats]
    ops.batch_norm_update_stats(*flat, _per_channel(mean, in_dims[2], size), _per_channel(var, in_dims[3], size),
                                count, momentum)
    for t, f in zip(stats, flat):
        if f.data_ptr() != t.data_ptr():  # reshape copied: write the update back
            t.copy_(f.view_as(t))
    return None, None


@_rule("cnn_ops::batch_norm_backward")
def _batch_norm_backward(info, in_dims, grad_output, input, weight, mean, invstd, training, eps):
    size = info.batch_size
    gi, gw, gb = ops.batch_norm_backward(
        _into_channels(_front(grad_output, in_dims[0], size)), _into_channels(_front(input, in_dims[1], size)),
        _per_channel(weight, in_dims[2], size), _per_channel(mean, in_dims[3], size),
        _per_channel(invstd, in_dims[4], size), training, eps)
    return (_from_channels(gi, size), gw.unflatten(0, (size, -1)), gb.unflatten(0, (size, -1))), (0, 0, 0)


@_rule("cnn_ops::group_norm_forward")
def _group_norm_forward(info, in_dims, input, weight, bias, num_groups, eps):
    # Groups are consecutive channels, so B members of G groups are B*G groups of (N, B*C).
    size = info.batch_size
    out, mean, rstd = ops.group_norm_forward(_into_channels(_front(input, in_dims[0], size)),
                                             _per_channel(weight, in_dims[1], size),
                                             _per_channel(bias, in_dims[2], size), num_groups * size, eps)
    stats = tuple(_from_channels(s, size) for s in (mean, rstd))  # (N, B*G) -> (B, N, G)
    return (_from_channels(out, size), *stats), (0, 0, 0)


@_rule("cnn_ops::group_norm_backward")
def _group_norm_backward(info, in_dims, grad_output, input, weight, mean, rstd, num_groups, eps):
    size = info.batch_size
    gi, gw, gb = ops.group_norm_backward(
        _into_channels(_front(grad_output, in_dims[0], size)), _into_channels(_front(input, in_dims[1], size)),
        _per_channel(weight, in_dims[2], size), _into_channels(_front(mean, in_dims[3], size)),
        _into_channels(_front(rstd, in_dims[4], size)), num_groups * size, eps)
    return (_from_channels(gi, size), gw.unflatten(0, (size, -1)), gb.unflatten(0, (size, -1))), (0, 0, 0)


@_rule("cnn_ops::layer_norm_forward")
def _layer_norm_forward(info, in_dims, input, normalized_shape, weight, bias, eps):
    if not _only(in_dims, 0):
        return _loop(ops.layer_norm_forward, in_dims, (input, normalized_shape, weight, bias, eps))
    # Rows are independent: B is one more leading dimension.
    size = info.batch_size
    out, mean, rstd = ops.layer_norm_forward(_front(input, in_dims[0], size), normalized_shape, weight, bias, eps)
    return (out, mean.unflatten(0, (size, -1)), rstd.unflatten(0, (size, -1))), (0, 0, 0)


@_rule("cnn_ops::layer_norm_backward")
def _layer_norm_backward(info, in_dims, grad_output, input, normalized_shape, weight, mean, rstd, eps):
    # The weight and bias gradients sum over the rows of each member separately.
    return _loop(ops.layer_norm_backward, in_dims, (grad_output, input, normalized_shape, weight, mean, rstd, eps))
