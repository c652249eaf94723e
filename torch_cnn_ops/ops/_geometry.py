"""The kernels' argument checks and output-size rules, in Python, for the fake kernels of every
family (conv.py, local.py, pool.py, norm.py).

A fake kernel must refuse exactly what its C++ kernel refuses, with the same exception class,
and otherwise return results of the same shape, dtype and strides; each function here mirrors
the C++ helper named in its docstring, with that helper's messages. Every C++ check is a
TORCH_CHECK (RuntimeError: ``torch._check``) except c10's dimension wrapping (IndexError:
``torch._check_index``).

Sizes read from tensors (and ``input_size`` / ``weight_size``) may be SymInts under
``torch.compile(dynamic=True)``: every condition on them is a ``torch._check`` of an
expression, never a Python ``if``. The integer arguments (stride, padding, kernel_size, ...)
are plain ints.

Python's integers do not overflow. Where the C++ refuses int64 overflow (the dilated kernel's
extent, the padded input's length) the checks below bound the sizes by INT64_MAX, and the
arithmetic is otherwise exact: an int64 wrap-around in C++ is a bug there, not a rule to copy.
"""

import functools

import torch

INT64_MAX = 2**63 - 1
FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


_SCALAR_TYPE_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.int64: "Long", torch.int32: "Int", torch.int16: "Short", torch.int8: "Char", torch.uint8: "Byte",
    torch.bool: "Bool", torch.complex32: "ComplexHalf", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def scalar_type(dtype) -> str:
    """A dtype as the C++ messages print it (c10::ScalarType: ``Float``, ``Long``, ...)."""
    return _SCALAR_TYPE_NAMES.get(dtype, str(dtype))


def shape_str(sizes) -> str:
    """``[2, 3, 4]``, as the C++ messages print shapes."""
    return "[" + ", ".join(str(s) for s in sizes) + "]"


# --- registration --------------------------------------------------------------------------------


def register_fake(name):
    """``torch.library.register_fake`` for ``cnn_ops::name``, with the device rule that every
    kernel checks: all tensor arguments on one device. A meta tensor among CPU (or CUDA) ones
    sends the call to the fake kernel (the Meta key outranks the others) instead of a kernel,
    and a fake result on the first tensor's device would be uninitialised memory; the kernels
    (and torch's ops) raise a RuntimeError instead. Checked first: a call that mixes devices is
    refused whatever else is wrong with it (each kernel raises a RuntimeError for it among its
    own checks)."""

    def register(fake):
        arg_names = [a.name for a in getattr(torch.ops.cnn_ops, name).default._schema.arguments]

        @functools.wraps(fake)
        def checked(*args, **kwargs):
            tensors = [(n, a) for n, a in zip(arg_names, args) if isinstance(a, torch.Tensor)]
            first, first_t = tensors[0] if tensors else (None, None)
            for arg, t in tensors[1:]:
                torch._check(t.device == first_t.device,
                             lambda: f"cnn_ops.{name}: {arg} on device {t.device} is not on the expected device "
                                     f"{first_t.device} (that of {first})")
            return fake(*args, **kwargs)

        torch.library.register_fake(f"cnn_ops::{name}")(checked)
        return fake

    return register


# --- tensors ------------------------------------------------------------------------------------


def check_dtype(t, name, op):
    """check_dtype (csrc/conv/conv_common.cpp): t is float32, float64, float16 or bfloat16."""
    torch._check(t.dtype in FLOAT_DTYPES,
                 lambda: f"{op}: {name} must be float32, float64, float16 or bfloat16, got {scalar_type(t.dtype)}")


def check_same_kind(a, a_name, b, b_name, op):
    """check_same_kind (conv_common.cpp): a and b have the same dtype and device."""
    torch._check(a.dtype == b.dtype,
                 lambda: f"{op}: {a_name} ({scalar_type(a.dtype)}) and {b_name} ({scalar_type(b.dtype)}) must have "
                         f"the same dtype")
    torch._check(a.device == b.device,
                 lambda: f"{op}: {a_name} ({a.device}) and {b_name} ({b.device}) must be on the same device")


def check_same_shape(a, a_name, b, b_name, op):
    """check_same_shape (csrc/pool/pool_common.cpp): equal sizes (symbolic ones compared one by one)."""
    msg = lambda: f"{op}: {a_name} of shape {shape_str(a.shape)} and {b_name} of shape {shape_str(b.shape)} " \
                  f"must have the same shape"  # noqa: E731
    check_sizes_equal(a.shape, b.shape, msg)


def check_sizes_equal(actual, expected, msg):
    """``actual == expected`` for two size lists, as one RuntimeError ``msg``: the number of
    dimensions first (a plain int), then each size, so that SymInts are compared one by one
    instead of guarding on a whole-list comparison."""
    torch._check(len(actual) == len(expected), msg)
    for a, e in zip(actual, expected):
        torch._check(a == e, msg)


def wrap_dim(dim, ndim):
    """c10::maybe_wrap_dim: dim in [-ndim, ndim) (a 0-d tensor counts as 1-d), else IndexError."""
    n = max(ndim, 1)
    torch._check_index(-n <= dim < n,
                       lambda: f"Dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return dim % n


def empty(like, shape, dtype=None, channels_last=False):
    """A result of ``shape`` on like's device (like's dtype unless given), as the kernels'
    at::empty: contiguous, or in torch's channels_last strides (4-d only)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(shape, dtype=like.dtype if dtype is None else dtype, device=like.device, memory_format=fmt)


# --- convolution (conv and local families) --------------------------------------------------------


def check_spatial_args(op, stride, padding, dilation, groups=1):
    """fill_spatial_args (conv_common.cpp): 1 to 3 spatial dimensions, one entry each; stride
    and dilation >= 1, padding >= 0, groups >= 1. Returns the number of spatial dimensions."""
    nd = len(stride)
    torch._check(1 <= nd <= 3, lambda: f"{op}: stride must have 1, 2 or 3 entries, got {shape_str(stride)}")
    torch._check(len(padding) == nd and len(dilation) == nd,
                 lambda: f"{op}: stride {shape_str(stride)}, padding {shape_str(padding)} and dilation "
                         f"{shape_str(dilation)} must have one entry per spatial dimension")
    torch._check(groups >= 1, lambda: f"{op}: groups must be at least 1, got {groups}")
    for i in range(nd):
        torch._check(stride[i] >= 1, lambda: f"{op}: stride must be at least 1, got {shape_str(stride)}")
        torch._check(dilation[i] >= 1, lambda: f"{op}: dilation must be at least 1, got {shape_str(dilation)}")
        torch._check(padding[i] >= 0, lambda: f"{op}: padding must be non-negative, got {shape_str(padding)}")
    return nd


def check_padding_end(op, padding_end, nd):
    """The forward ops' trailing padding: one entry per spatial dimension, each >= 0."""
    torch._check(len(padding_end) == nd,
                 lambda: f"{op}: padding_end {shape_str(padding_end)} must have one entry per spatial dimension")
    for p in padding_end:
        torch._check(p >= 0, lambda: f"{op}: padding must be non-negative, got padding_end {shape_str(padding_end)}")


def _check_at_most(size, bound, msg):
    """size <= bound, for the int64 overflow checks (a kernel size or an input length against a
    bound made of the int arguments and INT64_MAX). A SymInt is bounded only below 2**62: such a
    bound limits sizes that tensors have (a dilation of 2**62 allows kernels of 2 taps), while a
    finite bound close to 2**63 binds no tensor and trips torch's symbolic shapes later on (a
    guard solved for that symbol raises an internal AssertionError, "tgt_bound ... not a subset
    of src_bound"). A symbolic bound (a backward op's symbolic kernel in the trailing pad) is
    left to the kernel's own check."""
    if isinstance(bound, torch.SymInt) or (isinstance(size, torch.SymInt) and bound >= 2**62):
        return
    torch._check(size <= bound, msg)


def _dilated_extent(op, kernel, dilation):
    """dilation * (kernel - 1) + 1 (dilation >= 1), refused beyond int64 as the C++ refuses its
    overflow."""
    _check_at_most(kernel - 1, (INT64_MAX - 1) // dilation,
                   lambda: f"{op}: the dilated kernel's extent dilation * (kernel_size - 1) + 1 overflows int64")
    return dilation * (kernel - 1) + 1


def _padded_length(op, in_size, pads):
    """in_size + pads, refused beyond int64 as the C++ refuses its overflow."""
    _check_at_most(in_size, INT64_MAX - pads, lambda: f"{op}: the padded input's length overflows int64")
    return in_size + pads


def conv_out_size(in_size, pad_lo, pad_hi, kernel, stride, dilation):
    """conv_out_size (csrc/conv/conv_geometry.h): floor((padded - dilated kernel) / stride) + 1,
    0 when the kernel does not fit."""
    span = in_size + pad_lo + pad_hi - dilation * (kernel - 1) - 1
    # max(span, -1) // stride + 1 is 0 for a negative span, without a branch on a SymInt.
    return torch.sym_max(span, -1) // stride + 1


def forward_extent(op, in_size, pad, pad_end, kernel, stride, dilation, i, input_shape):
    """forward_extent (conv_common.cpp): the output size along spatial dimension i of a forward
    convolution; refused when the dilated kernel is larger than the padded input, or when either
    length overflows int64."""
    span = _dilated_extent(op, kernel, dilation)
    padded = _padded_length(op, in_size, pad + pad_end)
    torch._check(padded >= span,
                 lambda: f"{op}: the (dilated) kernel is larger than the padded input in spatial dimension {i}: "
                         f"kernel size {kernel} with dilation {dilation} spans {span} but the input of shape "
                         f"{shape_str(input_shape)} padded by ({pad}, {pad_end}) is only {padded} long")
    return (padded - span) // stride + 1


def check_backward_extent(op, in_size, out, pad, kernel, stride, dilation, i, grad_output_shape, input_shape):
    """check_backward_extent (conv_common.cpp): a backward op's grad_output has the output size
    `out` along spatial dimension i, which must be one that a forward convolution of `in_size`
    positions gives for some trailing pad: at least one output, the last window reaching the
    input's last position, and no more outputs than the largest trailing pad of any padding
    mode ('full': dilation * (kernel - 1)) gives."""
    _check_at_most(kernel - 1, INT64_MAX // dilation, lambda: f"{op}: the dilated kernel's extent overflows int64")
    full_pad = dilation * (kernel - 1)
    small = lambda: f"{op}: grad_output of shape {shape_str(grad_output_shape)} is too small in spatial dimension " \
                    f"{i} for an input of size {shape_str(input_shape)}: a convolution with kernel size {kernel}, " \
                    f"stride {stride}, padding {pad} and dilation {dilation} gives at least " \
                    f"{(in_size + pad - full_pad - 1) // stride + 1} outputs"  # noqa: E731
    torch._check(in_size >= 0, small)
    torch._check(out >= 1, small)
    torch._check(out * stride + full_pad >= in_size + pad, small)
    max_pad_end = torch.sym_max(pad, full_pad)
    _padded_length(op, in_size, pad + max_pad_end)
    torch._check(out <= conv_out_size(in_size, pad, max_pad_end, kernel, stride, dilation),
                 lambda: f"{op}: grad_output of shape {shape_str(grad_output_shape)} is too large for an input of "
                         f"size {shape_str(input_shape)} with this kernel, stride and padding")



def check_backward_sizes(op, grad_output, input_shape, out_channels, kernel_size, stride, padding, dilation):
    """The grad_output of a conv or local backward op (conv_common.cpp, local_common.cpp): the
    input's batch, out_channels channels, and along each spatial dimension an output size that
    a forward convolution of the input gives (check_backward_extent)."""
    msg = lambda: f"{op}: grad_output of shape {shape_str(grad_output.shape)} does not match batch " \
                  f"{input_shape[0]} and out_channels {out_channels}"  # noqa: E731
    torch._check(grad_output.shape[0] == input_shape[0], msg)
    torch._check(grad_output.shape[1] == out_channels, msg)
    for i in range(len(kernel_size)):
        check_backward_extent(op, input_shape[2 + i], grad_output.shape[2 + i], padding[i], kernel_size[i], stride[i],
                              dilation[i], i, grad_output.shape, input_shape)

# --- pooling (pool family) -------------------------------------------------------------------------


def check_rank(op, sizes, name, nd):
    """check_rank (pool_common.cpp): 1 to 3 spatial dimensions, and sizes is (N, C, *nd)."""
    torch._check(1 <= nd <= 3, lambda: f"{op}: expected 1, 2 or 3 spatial dimensions, got {nd}")
    torch._check(len(sizes) == nd + 2,
                 lambda: f"{op}: expected a {nd + 2}-d {name} (batch, channels, {nd} spatial), got {name} of shape "
                         f"{shape_str(sizes)}")


def check_non_batch_dims(op, sizes, channels):
    """check_non_batch_dims (pool_common.cpp): torch's pooling refuses an empty channel or
    spatial dimension (only the batch may be empty)."""
    msg = lambda: f"{op}: expected the input's {'non-batch' if channels else 'spatial'} dimensions to be " \
                  f"non-empty, got input of shape {shape_str(sizes)}"  # noqa: E731
    for s in sizes[1 if channels else 2:]:
        torch._check(s != 0, msg)


def pool_out_size(in_size, pad, kernel, stride, dilation, ceil_mode, pad_end=None):
    """pool_out_size (csrc/pool/pool_geometry.h), torch's rule: floor (or ceil with ceil_mode)
    of (in + pad + pad_end - dilation (k - 1) - 1) / stride, plus one (pad_end: pad when None);
    with ceil_mode the last window must start inside the input or the leading padding."""
    pad_end = pad if pad_end is None else pad_end
    span = in_size + pad + pad_end - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode:
        out = torch.sym_ite((out - 1) * stride >= in_size + pad, out - 1, out)
    return out


def window_shape(op, input_shape, kernel_size, stride, padding, dilation, ceil_mode, padding_end=()):
    """fill_window_args (pool_common.cpp): the (N, C, *out) output shape of a regular window
    pooling (max, min, avg, lp, gaussian, stochastic), after its checks: kernel, stride and
    dilation >= 1, 0 <= padding <= kernel_size / 2 before and after the input (padding_end:
    empty for padding on both sides), the (dilated) kernel no larger than the padded input,
    and at least one output."""
    nd = len(kernel_size)
    check_rank(op, input_shape, "input", nd)
    torch._check(len(stride) == nd and len(padding) == nd and len(dilation) == nd,
                 lambda: f"{op}: kernel_size {shape_str(kernel_size)}, stride {shape_str(stride)}, padding "
                         f"{shape_str(padding)} and dilation {shape_str(dilation)} must have one entry per spatial "
                         f"dimension")
    torch._check(len(padding_end) in (0, nd),
                 lambda: f"{op}: padding_end {shape_str(padding_end)} must be empty (padding on both sides) or have "
                         f"one entry per spatial dimension, as kernel_size {shape_str(kernel_size)}")
    padding_end = padding_end if len(padding_end) else padding
    check_non_batch_dims(op, input_shape, channels=True)
    out = []
    for i in range(nd):
        k, s, p, d, in_size = kernel_size[i], stride[i], padding[i], dilation[i], input_shape[2 + i]
        pe = padding_end[i]
        torch._check(k >= 1, lambda: f"{op}: kernel_size must be at least 1, got {shape_str(kernel_size)}")
        torch._check(s >= 1, lambda: f"{op}: stride must be at least 1, got {shape_str(stride)}")
        torch._check(d >= 1, lambda: f"{op}: dilation must be at least 1, got {shape_str(dilation)}")
        torch._check(0 <= p <= k // 2,
                     lambda: f"{op}: padding must be non-negative and at most half of kernel_size, got padding "
                             f"{shape_str(padding)} with kernel_size {shape_str(kernel_size)}")
        torch._check(0 <= pe <= k // 2,
                     lambda: f"{op}: padding_end must be non-negative and at most half of kernel_size, got "
                             f"padding_end {shape_str(padding_end)} with kernel_size {shape_str(kernel_size)}")
        span = _dilated_extent(op, k, d)
        padded = _padded_length(op, in_size, p + pe)
        torch._check(padded >= span,
                     lambda: f"{op}: the (dilated) kernel is larger than the padded input in spatial dimension {i}: "
                             f"kernel_size {k} with dilation {d} spans {span} but the input of shape "
                             f"{shape_str(input_shape)} padded by ({p}, {pe}) is only {padded} long")
        o = pool_out_size(in_size, p, k, s, d, ceil_mode, pe)
        torch._check(o >= 1,
                     lambda: f"{op}: output size is too small: input of shape {shape_str(input_shape)} with "
                             f"kernel_size {shape_str(kernel_size)}, stride {shape_str(stride)}, padding "
                             f"{shape_str(padding)} and dilation {shape_str(dilation)} gives {o} outputs in spatial "
                             f"dimension {i}")
        out.append(o)
    return [input_shape[0], input_shape[1], *out]


def check_window_backward(op, grad_output, input_size, kernel_size, stride, padding, dilation, ceil_mode,
                          padding_end=()):
    """window_backward_geometry (pool_common.cpp): grad_output (a float) has the shape that the
    forward pooling of an input of `input_size` gives."""
    check_dtype(grad_output, "grad_output", op)
    expected = window_shape(op, input_size, kernel_size, stride, padding, dilation, ceil_mode, padding_end)
    check_sizes_equal(grad_output.shape, expected,
                      lambda: f"{op}: grad_output of shape {shape_str(grad_output.shape)} does not match the output "
                              f"shape {shape_str(expected)} of input_size {shape_str(input_size)}")


def adaptive_shape(op, input, output_size, empty_channels_allowed=False):
    """adaptive_geometry (pool_common.cpp): the (N, C, *output_size) output of adaptive pooling
    of a float input with non-empty spatial dimensions (and channels, but for torch's adaptive
    average pooling in 1-d and 2-d); output sizes >= 0."""
    check_dtype(input, "input", op)
    nd = len(output_size)
    check_rank(op, input.shape, "input", nd)
    check_non_batch_dims(op, input.shape, channels=not empty_channels_allowed or nd == 3)
    for s in output_size:
        torch._check(s >= 0, lambda: f"{op}: output_size must be non-negative, got {shape_str(output_size)}")
    return [input.shape[0], input.shape[1], *output_size]


def check_grad_output_matches(op, grad_output, input_size):
    """The scatter and adaptive backward ops' rule (pool_common.cpp): input_size has 1 to 3
    spatial dimensions, grad_output as many, and the same batch and channels."""
    msg = lambda: f"{op}: grad_output of shape {shape_str(grad_output.shape)} does not match input_size " \
                  f"{shape_str(input_size)}"  # noqa: E731
    torch._check(3 <= len(input_size) <= 5 and grad_output.dim() == len(input_size), msg)
    torch._check(grad_output.shape[0] == input_size[0], msg)
    torch._check(grad_output.shape[1] == input_size[1], msg)


def pool_channels_last(t):
    """use_channels_last (pool_common.cpp): a 4-d tensor dense in channels_last strides and not
    NCHW-contiguous is pooled in that layout, and its results (outputs, indices, gradients) come
    back channels_last."""
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
