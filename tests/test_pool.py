"""Tests of the pool family: tco.functional max/min/avg/lp pooling and their adaptive variants
in 1d/2d/3d, the modules of tco.nn, and the raw ops torch.ops.cnn_ops.*pool*.

References are torch.nn.functional's pooling functions (in float64 on the CPU); min pooling
is checked against -max_pool(-x), which it must equal in values, indices and gradients.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import (LOW_PRECISION_DTYPES, TF213, as_reference, assert_close_to_reference, opcheck_case, randn,
                      runs_cuda_kernels, tolerances)

import torch_cnn_ops as tco

TF = tco.functional
ops = torch.ops.cnn_ops
BAD_INPUT = (RuntimeError, ValueError)


def _f(kind, nd):
    return getattr(TF, f"{kind}_pool{nd}d")


def _torch(kind, nd):
    return getattr(F, f"{kind}_pool{nd}d")


def _shape(nd, size, batch=2, channels=3):
    if isinstance(size, int):
        size = (size,) * nd
    return (batch, channels, *size)


def _min_reference(nd, x, *args, **kwargs):
    """min pooling as -max_pool(-x), with the indices when asked."""
    out = _torch("max", nd)(-x, *args, **kwargs)
    if isinstance(out, tuple):
        return -out[0], out[1]
    return -out


# ---- max and min -----------------------------------------------------------------------------------
# (nd, spatial size, kernel, stride, padding, dilation, ceil_mode)
EXTREME_CASES = [
    (1, 11, 3, 2, 1, 1, False),
    (1, 10, 2, None, 0, 1, True),
    (1, 12, 3, 1, 1, 3, False),
    (2, (9, 11), 3, 2, 1, 1, False),
    (2, (8, 8), 2, None, 0, 1, False),
    (2, (10, 7), (3, 2), (2, 1), (1, 0), (2, 1), True),
    (2, (7, 9), 3, 3, 1, 1, True),
    (2, (6, 6), 4, 3, 2, 1, True),
    (3, (5, 6, 7), 2, 2, 0, 1, True),
    (3, (6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 0), (1, 2, 1), False),
]
EXTREME_IDS = [f"{c[0]}d-k{c[2]}-s{c[3]}-p{c[4]}-d{c[5]}-{'ceil' if c[6] else 'floor'}" for c in EXTREME_CASES]


@pytest.mark.parametrize("kind", ["max", "min"])
@pytest.mark.parametrize("case", EXTREME_CASES, ids=EXTREME_IDS)
def test_max_min_match_torch(case, kind, device):
    nd, size, k, s, p, d, ceil = case
    x = randn(*_shape(nd, size), device=device, requires_grad=True)
    out, idx = _f(kind, nd)(x, k, s, p, d, ceil, return_indices=True)
    xr = as_reference(x)
    if kind == "max":
        ref, ref_idx = _torch("max", nd)(xr, k, s, p, d, ceil, return_indices=True)
    else:
        ref, ref_idx = _min_reference(nd, xr, k, s, p, d, ceil, return_indices=True)
    assert_close_to_reference(out, ref, msg="values")
    assert idx.dtype == torch.int64 and torch.equal(idx.cpu(), ref_idx), "indices"
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


@pytest.mark.parametrize("kind", ["max", "min"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_ties_pick_torch_index(nd, kind, device):
    """Integer-valued inputs tie often; the first maximum (minimum) in scan order wins, as in torch."""
    x = torch.randint(-2, 3, _shape(nd, 7), dtype=torch.float64).to(device)
    out, idx = _f(kind, nd)(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = (_torch("max", nd)(x.cpu(), 3, 2, 1, return_indices=True) if kind == "max"
                    else _min_reference(nd, x.cpu(), 3, 2, 1, return_indices=True))
    assert torch.equal(out.cpu(), ref) and torch.equal(idx.cpu(), ref_idx)


@pytest.mark.parametrize("kind", ["max", "min"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_nan_propagates_like_torch(nd, kind, device):
    x = randn(*_shape(nd, 8), device=device)
    mask = torch.rand(x.shape) < 0.15
    x[mask.to(device)] = float("nan")
    out, idx = _f(kind, nd)(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = (_torch("max", nd)(x.cpu(), 3, 2, 1, return_indices=True) if kind == "max"
                    else _min_reference(nd, x.cpu(), 3, 2, 1, return_indices=True))
    torch.testing.assert_close(out.cpu(), ref, equal_nan=True)
    assert torch.equal(idx.cpu(), ref_idx)
    assert out.isnan().any()


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES)
@pytest.mark.parametrize("kind", ["max", "min", "avg", "lp"])
def test_low_precision(kind, dtype, device):
    x = randn(2, 4, 13, 12, dtype=dtype, device=device, requires_grad=True)
    if kind == "lp":
        args = (2.0, 3, 2)
    elif kind == "avg":
        args = (3, 2, 1)
    else:
        args = (3, 2, 1, 1, True)
    out = _f(kind, 2)(x, *args)
    xr = as_reference(x)
    ref = _min_reference(2, xr, *args) if kind == "min" else _torch(kind, 2)(xr, *args)
    assert out.dtype == dtype
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, dtype=dtype, device=device)
    out.backward(gy)
    ref.backward(as_reference(gy))
    # the gradient of x^(1/2) amplifies rounding of the low-precision forward
    scale = 4.0 if kind == "lp" and dtype != torch.float32 else 1.0
    rtol, atol = tolerances(dtype)
    torch.testing.assert_close(x.grad.double().cpu(), xr.grad, rtol=rtol * scale,
                               atol=atol * scale * max(1.0, xr.grad.abs().max().item()))


# ---- avg ------------------------------------------------------------------------------------------------
# (nd, size, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CASES = [
    (1, 11, 3, 2, 1, False, True, None),
    (1, 10, 4, 3, 2, True, False, None),
    (1, 9, 3, 1, 1, False, False, None),
    (2, (9, 11), 3, 2, 1, False, True, None),
    (2, (9, 11), 3, 2, 1, True, False, None),
    (2, (8, 8), 2, None, 0, False, True, None),
    (2, (7, 10), (3, 2), (2, 3), (1, 1), True, True, 5),
    (2, (6, 6), 4, 3, 2, True, False, 3),
    (3, (5, 6, 7), 2, 2, 1, True, True, None),
    (3, (6, 5, 7), (3, 2, 3), (2, 1, 2), (1, 1, 0), False, False, 7),
]
AVG_IDS = [f"{c[0]}d-k{c[2]}-s{c[3]}-p{c[4]}-{'ceil' if c[5] else 'floor'}-{'incl' if c[6] else 'excl'}-div{c[7]}"
           for c in AVG_CASES]


def _avg_args(case):
    nd, size, k, s, p, ceil, cip, div = case
    return (k, s, p, ceil, cip) if nd == 1 else (k, s, p, ceil, cip, div)


@pytest.mark.parametrize("case", AVG_CASES, ids=AVG_IDS)
def test_avg_matches_torch(case, device):
    nd, size = case[:2]
    x = randn(*_shape(nd, size), device=device, requires_grad=True)
    out = _f("avg", nd)(x, *_avg_args(case))
    xr = as_reference(x)
    ref = _torch("avg", nd)(xr, *_avg_args(case))
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


# ---- lp -------------------------------------------------------------------------------------------------
# (nd, size, norm_type, kernel, stride, ceil_mode)
LP_CASES = [
    (1, 11, 2.0, 3, 2, False),
    (1, 10, 1.0, 3, None, True),
    (1, 9, 2.0, 3, 1, False),
    (1, 9, 2.0, 2, 1, True),
    (2, (9, 11), 2.0, 3, 2, False),
    (2, (8, 8), 2, 2, None, False),
    (2, (9, 10), 3.0, (3, 2), (2, 3), True),
    (2, (7, 7), 1.5, 2, 2, True),
    (3, (5, 6, 7), 2.0, 2, 2, True),
    (3, (5, 6, 7), 4.0, (2, 3, 2), (1, 2, 2), False),
]
LP_IDS = [f"{c[0]}d-p{c[2]}-k{c[3]}-s{c[4]}-{'ceil' if c[5] else 'floor'}" for c in LP_CASES]


@pytest.mark.parametrize("case", LP_CASES, ids=LP_IDS)
def test_lp_matches_torch(case, device):
    nd, size, p, k, s, ceil = case
    x = randn(*_shape(nd, size), device=device)
    if p != int(p) or p % 2 == 1:  # roots of negative window sums are NaN, in torch as here
        x = x.abs()
    x.requires_grad_()
    out = _f("lp", nd)(x, p, k, s, ceil)
    xr = as_reference(x)
    ref = _torch("lp", nd)(xr, p, k, s, ceil)
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


@pytest.mark.parametrize("kind", ["max", "min", "avg"])
@pytest.mark.parametrize("kernel", [2**31, 2**62])
def test_huge_kernel_pools_the_whole_row(kind, kernel, device):
    # A kernel far longer than the input is legal with padding of half of it: every window
    # covers the whole row (torch's own max_pool1d loops over every tap for minutes). Only the
    # taps that read the input are visited, so this is instant and needs no per-tap memory.
    x = randn(2, 3, 10, device=device)
    out = _f(kind, 1)(x, kernel, 1, kernel // 2)
    assert out.shape == (2, 3, 11)  # (10 + 2 * (kernel // 2) - kernel) // 1 + 1
    xr = as_reference(x)
    if kind == "avg":  # count_include_pad: the row's sum over the whole (padded) window
        ref = xr.sum(-1, keepdim=True) / kernel
    else:
        ref = xr.amax(-1, keepdim=True) if kind == "max" else xr.amin(-1, keepdim=True)
    assert_close_to_reference(out, ref.expand(2, 3, 11))


@pytest.mark.parametrize("p", [math.inf, -math.inf])
def test_lp_infinite_norm_is_extreme_magnitude(p, device):
    # torch's lp_pool (2.13; conftest's TF213) takes an infinite norm_type to the window's largest
    # (smallest) |x|; the raw op, whose power formula would give 1, refuses it.
    x = randn(2, 3, 8, 9, device=device)
    assert_close_to_reference(TF.lp_pool2d(x, p, 2), TF213.lp_pool2d(as_reference(x), p, 2))
    with pytest.raises(RuntimeError, match="norm_type must be positive and finite"):
        ops.lp_pool_forward(x, p, [2, 2], [2, 2], False)


def test_lp_zero_window_has_zero_gradient(device):
    x = randn(1, 2, 6, 6, device=device)
    x[..., :2, :2] = 0
    x.requires_grad_()
    out = TF.lp_pool2d(x, 2, 2)
    out.sum().backward()
    xr = as_reference(x)
    F.lp_pool2d(xr, 2, 2).sum().backward()
    assert torch.all(x.grad[..., :2, :2] == 0)
    assert_close_to_reference(x.grad, xr.grad)


# ---- adaptive ------------------------------------------------------------------------------------------
ADAPTIVE_CASES = [
    (1, 11, 4),
    (1, 5, 8),
    (2, (9, 11), (4, 5)),
    (2, (7, 7), 3),
    (2, (10, 9), (None, 4)),
    (3, (5, 6, 7), (2, 3, 4)),
    (3, (4, 5, 6), (4, None, 1)),
    # global pooling (one output per plane: one sum per plane) and windows as wide as the input
    # (a window's rows summed as one span)
    (1, 9, 1),
    (2, (7, 7), 1),
    (3, (3, 4, 5), 1),
    (2, (9, 6), (4, 1)),
    (3, (4, 5, 6), (2, 3, 1)),
    # windows that tile the input evenly (each size a multiple of the output's), which run as
    # the equal regular windows (kernel = stride = in / out), the identity among them
    (1, 12, 4),
    (2, (14, 14), 7),
    (2, (8, 12), (4, 3)),
    (2, (5, 5), 5),
    (3, (4, 6, 8), (2, 3, 4)),
]
ADAPTIVE_IDS = [f"{c[0]}d-{c[1]}-to-{c[2]}" for c in ADAPTIVE_CASES]


@pytest.mark.parametrize("kind", ["max", "min", "avg"])
@pytest.mark.parametrize("case", ADAPTIVE_CASES, ids=ADAPTIVE_IDS)
def test_adaptive_matches_torch(case, kind, device):
    nd, size, out_size = case
    x = randn(*_shape(nd, size), device=device, requires_grad=True)
    xr = as_reference(x)
    fn = getattr(TF, f"adaptive_{kind}_pool{nd}d")
    ref_fn = getattr(F, f"adaptive_{'avg' if kind == 'avg' else 'max'}_pool{nd}d")
    if kind == "avg":
        out, ref = fn(x, out_size), ref_fn(xr, out_size)
    else:
        out, idx = fn(x, out_size, return_indices=True)
        if kind == "max":
            ref, ref_idx = ref_fn(xr, out_size, return_indices=True)
        else:
            ref, ref_idx = ref_fn(-xr, out_size, return_indices=True)
            ref = -ref
        assert torch.equal(idx.cpu(), ref_idx), "indices"
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES)
@pytest.mark.parametrize("out_size", [1, (3, 1), (7, 3)], ids=["global", "full-width", "even-windows"])
def test_adaptive_avg_low_precision(out_size, dtype, device):
    """Low-precision adaptive averages sum in float32 (the global, whole-width and even-window
    paths too)."""
    x = randn(3, 5, 7, 9, dtype=dtype, device=device, requires_grad=True)
    out = TF.adaptive_avg_pool2d(x, out_size)
    xr = as_reference(x)
    ref = F.adaptive_avg_pool2d(xr, out_size)
    assert out.dtype == dtype
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, dtype=dtype, device=device)
    out.backward(gy)
    ref.backward(as_reference(gy))
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unbatched_input(nd, device):
    x = randn(3, *([7] * nd), device=device)
    xr = x.cpu()
    assert_close_to_reference(_f("max", nd)(x, 2), _torch("max", nd)(xr, 2))
    out, idx = _f("min", nd)(x, 3, 2, 1, return_indices=True)
    ref, ref_idx = _min_reference(nd, xr, 3, 2, 1, return_indices=True)
    assert_close_to_reference(out, ref)
    assert torch.equal(idx.cpu(), ref_idx)
    assert_close_to_reference(_f("avg", nd)(x, 3, 2, 1), _torch("avg", nd)(xr, 3, 2, 1))
    assert_close_to_reference(_f("lp", nd)(x, 2, 2), _torch("lp", nd)(xr, 2, 2))
    size = [3] * nd
    assert_close_to_reference(getattr(TF, f"adaptive_avg_pool{nd}d")(x, size),
                              getattr(F, f"adaptive_avg_pool{nd}d")(xr, size))


def test_noncontiguous_inputs(device):
    x = randn(2, 9, 10, 3, device=device).permute(0, 3, 1, 2)  # channels-last strides
    xr = x.cpu()
    assert_close_to_reference(TF.max_pool2d(x, 3, 2, 1), F.max_pool2d(xr, 3, 2, 1))
    assert_close_to_reference(TF.avg_pool2d(x, 2), F.avg_pool2d(xr, 2))
    assert_close_to_reference(TF.lp_pool2d(x, 2, 2), F.lp_pool2d(xr, 2, 2))
    xt = randn(2, 3, 10, 9, device=device).transpose(2, 3)
    assert_close_to_reference(TF.min_pool2d(xt, 2), _min_reference(2, xt.cpu(), 2))


# ---- channels_last --------------------------------------------------------------------------------------
CL = torch.channels_last
CL_CASES = {
    "max": (lambda x: TF.max_pool2d(x, 3, 2, 1, return_indices=True),
            lambda x: F.max_pool2d(x, 3, 2, 1, return_indices=True)),
    "max-dilated-ceil": (lambda x: TF.max_pool2d(x, (3, 2), (2, 1), (1, 0), (2, 1), True, return_indices=True),
                         lambda x: F.max_pool2d(x, (3, 2), (2, 1), (1, 0), (2, 1), True, return_indices=True)),
    "min": (lambda x: TF.min_pool2d(x, 2, return_indices=True), lambda x: _min_reference(2, x, 2, return_indices=True)),
    "avg": (lambda x: TF.avg_pool2d(x, 3, 2, 1, True, False), lambda x: F.avg_pool2d(x, 3, 2, 1, True, False)),
    "avg-divisor": (lambda x: TF.avg_pool2d(x, 2, 1, 1, divisor_override=3),
                    lambda x: F.avg_pool2d(x, 2, 1, 1, divisor_override=3)),
    "lp": (lambda x: TF.lp_pool2d(x, 2, 3, 2, True), lambda x: F.lp_pool2d(x, 2, 3, 2, True)),
    "lp-p3": (lambda x: TF.lp_pool2d(x.abs(), 3, 2), lambda x: F.lp_pool2d(x.abs(), 3, 2)),
    "adaptive-max": (lambda x: TF.adaptive_max_pool2d(x, (3, 4), True), lambda x: F.adaptive_max_pool2d(x, (3, 4), True)),
    "adaptive-min": (lambda x: TF.adaptive_min_pool2d(x, 4), lambda x: -F.adaptive_max_pool2d(-x, 4)),
    "adaptive-avg": (lambda x: TF.adaptive_avg_pool2d(x, (4, 3)), lambda x: F.adaptive_avg_pool2d(x, (4, 3))),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", list(CL_CASES))
def test_channels_last_matches_torch(name, dtype, device):
    """channels_last inputs are pooled in that layout: values, indices and gradients equal torch's,
    and outputs and input gradients come back channels_last, as torch's do."""
    ours_fn, ref_fn = CL_CASES[name]
    x = randn(2, 5, 9, 11, dtype=dtype, device=device).contiguous(memory_format=CL).requires_grad_()
    out = ours_fn(x)
    xr = as_reference(x)
    ref = ref_fn(xr)
    if isinstance(out, tuple):
        assert torch.equal(out[1].cpu(), ref[1]) and out[1].is_contiguous(memory_format=CL), "indices"
        out, ref = out[0], ref[0]
    assert out.is_contiguous(memory_format=CL)
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, dtype=dtype, device=device)
    out.backward(gy)
    ref.backward(as_reference(gy))
    assert x.grad.is_contiguous(memory_format=CL)
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


# ---- padding="same" / "valid": TensorFlow's rule, which torch's pooling lacks -------------------------
def _tf_same_pads(size, k, s, d):
    """TensorFlow's SAME padding of one dimension: ceil(size / s) outputs, the larger half at the end."""
    total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def _tf_padded(x, kernel, stride, dilation, value):
    """x padded explicitly by the SAME rule (F.pad takes the last dimension first)."""
    pads = []
    for size, k, s, d in reversed(list(zip(x.shape[2:], kernel, stride, dilation))):
        pads += _tf_same_pads(size, k, s, d)
    return F.pad(x, pads, value=value)


# (nd, spatial size, kernel, stride, dilation): odd and even totals, symmetric and not, none at all
SAME_CASES = [(1, (11,), (4,), (3,), (1,)), (2, (7, 9), (2, 4), (2, 2), (1, 1)), (2, (8, 8), (3, 3), (1, 1), (1, 1)),
              (2, (9, 6), (3, 2), (3, 1), (2, 1)), (3, (5, 6, 7), (2, 3, 2), (2, 3, 1), (1, 1, 1)),
              (2, (12, 5), (3, 1), (4, 2), (1, 1))]
SAME_IDS = ["1d-k4-s3", "2d-k2x4-s2", "2d-k3-s1", "2d-dilated", "3d", "2d-no-padding"]


@pytest.mark.parametrize("kind", ["max", "min"])
@pytest.mark.parametrize("case", SAME_CASES, ids=SAME_IDS)
def test_max_min_same_padding_is_tensorflow_rule(case, kind, device):
    nd, size, kernel, stride, dilation = case
    x = randn(2, 3, *size, device=device, requires_grad=True)
    out, idx = _f(kind, nd)(x, kernel, stride, "same", dilation, return_indices=True)
    assert tuple(out.shape[2:]) == tuple(-(-n // s) for n, s in zip(size, stride))
    xr = as_reference(x)
    sign = -1 if kind == "min" else 1
    padded = _tf_padded(sign * xr, kernel, stride, dilation, -math.inf)
    ref = sign * _torch("max", nd)(padded, kernel, stride, 0, dilation)
    assert_close_to_reference(out, ref, msg="values")
    # the indices are flat positions in the unpadded plane holding those values
    assert torch.equal(x.detach().flatten(2).gather(2, idx.flatten(2)).view_as(out), out.detach())
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(as_reference(gy))
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


# undilated cases; divisor_override with 2-d and 3-d ones (avg_pool1d has none, as torch's)
AVG_SAME = [(case, count, divisor) for case in SAME_CASES if case[4] == (1,) * case[0]
            for count, divisor in [(True, None), (False, None), (True, 5)] if case[0] > 1 or divisor is None]
AVG_SAME_IDS = [f"{SAME_IDS[SAME_CASES.index(c)]}-{'pad' if count else 'nopad'}-{divisor}" for c, count, divisor in AVG_SAME]


@pytest.mark.parametrize("case,count_include_pad,divisor_override", AVG_SAME, ids=AVG_SAME_IDS)
def test_avg_same_padding_is_tensorflow_rule(case, count_include_pad, divisor_override, device):
    nd, size, kernel, stride, _ = case
    x = randn(2, 3, *size, device=device, requires_grad=True)
    kwargs = {} if divisor_override is None else {"divisor_override": divisor_override}
    out = _f("avg", nd)(x, kernel, stride, "same", False, count_include_pad, **kwargs)
    xr = as_reference(x)
    ones = (1,) * nd
    sums = _torch("avg", nd)(_tf_padded(xr, kernel, stride, ones, 0.0), kernel, stride) * math.prod(kernel)
    if divisor_override is not None:
        ref = sums / divisor_override
    elif count_include_pad:  # no window reaches past the padding: each counts the whole kernel
        ref = sums / math.prod(kernel)
    else:  # the inputs in the window
        counts = _torch("avg", nd)(_tf_padded(torch.ones_like(xr), kernel, stride, ones, 0.0), kernel, stride)
        ref = sums / (counts * math.prod(kernel))
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(as_reference(gy))
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


@pytest.mark.parametrize("kind", ["max", "avg"])
def test_same_padding_channels_last_and_valid(kind, device):
    x = randn(2, 3, 7, 9, device=device).contiguous(memory_format=CL)
    out = _f(kind, 2)(x, (2, 4), 2, "same")
    assert out.is_contiguous(memory_format=CL)
    assert_close_to_reference(out, as_reference(_f(kind, 2)(x.contiguous(), (2, 4), 2, "same")))
    assert torch.equal(_f(kind, 2)(x, 3, 2, "valid"), _f(kind, 2)(x, 3, 2, 0))


def test_same_padding_modules(device):
    x = randn(2, 3, 11, device=device)
    for name in ("MaxPool1d", "MinPool1d", "AvgPool1d"):
        module = getattr(tco.nn, name)(4, 3, padding="same")
        assert module.padding == "same" and "padding=same" in repr(module)
        kind = name[:3].lower()
        assert torch.equal(module(x), _f(kind, 1)(x, 4, 3, "same"))
    m = tco.nn.MaxPool2d((2, 4), 2, padding="same", return_indices=True)
    assert [tuple(t.shape) for t in m(randn(1, 2, 7, 9, device=device))] == [(1, 2, 4, 5)] * 2


SAME_BAD_CASES = [  # a string torch's pooling would refuse with a TypeError too
    ("unknown-string", lambda: TF.max_pool2d(torch.randn(1, 1, 6, 6), 3, 2, "full"), TypeError,
     r"'padding' must be .* got the string 'full'"),
    ("avg-unknown-string", lambda: TF.avg_pool1d(torch.randn(1, 1, 6), 3, 2, "SAME"), TypeError, r"'padding'"),
    ("same-dilated-past-half-the-kernel", lambda: TF.max_pool1d(torch.randn(1, 1, 6), 3, 1, "same", 2), RuntimeError,
     r"padding='same'.*kernel_size \(3,\).*dilation \(2,\).*needs padding \(2,\) before"),
    ("raw-padding-end-length", lambda: ops.max_pool_forward(torch.randn(1, 1, 6, 6), [3, 3], [2, 2], [1, 1], [1, 1],
                                                            False, False, [1]), RuntimeError, r"padding_end \[1\]"),
    ("raw-padding-end-past-half", lambda: ops.avg_pool_forward(torch.randn(1, 1, 6), [3], [2], [0], False, True, None,
                                                               [2]), RuntimeError, r"padding_end.*half of kernel_size"),
]


@pytest.mark.parametrize("call,error,pattern", [c[1:] for c in SAME_BAD_CASES], ids=[c[0] for c in SAME_BAD_CASES])
def test_same_padding_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


# ---- gradcheck / gradgradcheck -------------------------------------------------------------------------
GRAD_FNS = {
    "max2d": lambda x: TF.max_pool2d(x, 3, 2, 1, 2, True),
    "min1d": lambda x: TF.min_pool1d(x.flatten(2), 3, 2, 1),
    "max3d": lambda x: TF.max_pool3d(x.unsqueeze(2).expand(-1, -1, 2, -1, -1), 2, 1),
    "avg2d": lambda x: TF.avg_pool2d(x, 3, 2, 1, True, False),
    "avg2d-div": lambda x: TF.avg_pool2d(x, 2, 1, 1, divisor_override=3),
    "avg3d": lambda x: TF.avg_pool3d(x.unsqueeze(2), (1, 3, 3), 2, (0, 1, 1)),
    "lp2d": lambda x: TF.lp_pool2d(x, 2, 3, 2),
    "lp1d-p3": lambda x: TF.lp_pool1d((x.flatten(2) / 5).exp(), 3, 3, 2, True),
    "max2d-same": lambda x: TF.max_pool2d(x, (2, 4), 2, "same"),
    "avg2d-same": lambda x: TF.avg_pool2d(x, (2, 4), (2, 3), "same", count_include_pad=False),
    "adaptive-max2d": lambda x: TF.adaptive_max_pool2d(x, (3, 4)),
    "adaptive-min2d": lambda x: TF.adaptive_min_pool2d(x, (4, None)),
    "adaptive-avg2d": lambda x: TF.adaptive_avg_pool2d(x, (3, 4)),
    "adaptive-avg3d": lambda x: TF.adaptive_avg_pool3d(x.unsqueeze(2), (1, 4, 3)),
}


@pytest.mark.parametrize("name", list(GRAD_FNS))
def test_gradcheck_and_gradgradcheck(name, device):
    # distinct values keep max/min away from ties, where the gradient is not defined
    x = (torch.randperm(2 * 2 * 7 * 7, dtype=torch.float64) / 10 - 5).view(2, 2, 7, 7).to(device)
    x.requires_grad_()
    fn = GRAD_FNS[name]
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


# ---- opcheck of the raw ops ---------------------------------------------------------------------------
def _opcheck_cases(device):
    x = randn(2, 3, 7, 8, device=device, requires_grad=True)
    x1 = randn(2, 3, 9, device=device, requires_grad=True)
    x3 = randn(1, 2, 4, 5, 6, device=device, requires_grad=True)
    out, idx = ops.max_pool_forward(x.detach(), [3, 3], [2, 2], [1, 1], [1, 1], True, False)
    gy = randn(*out.shape, device=device, requires_grad=True)
    a_gy = randn(2, 3, 4, 4, device=device, requires_grad=True)
    avg_args = ([2, 3], [2, 2], [1, 1], True, False, None)
    avg_gy = randn(*ops.avg_pool_forward(x.detach(), *avg_args).shape, device=device, requires_grad=True)
    lp_gy = randn(*ops.lp_pool_forward(x.detach(), 2.0, [2, 2], [2, 2], True).shape, device=device,
                  requires_grad=True)
    cases = [
        ("max_pool_forward", (x, [3, 3], [2, 2], [1, 1], [1, 1], True, False)),
        ("max_pool_forward", (x1, [3], [2], [1], [2], False, True)),
        ("max_pool_forward", (x3, [2, 2, 3], [1, 2, 2], [1, 0, 1], [1, 1, 1], False, False)),
        ("adaptive_max_pool_forward", (x, [3, 5], True)),
        ("max_pool_backward", (gy, idx, list(x.shape))),
        ("avg_pool_forward", (x, *avg_args)),
        ("avg_pool_forward", (x3, [2, 2, 2], [2, 1, 2], [1, 1, 0], False, True, 5)),
        ("avg_pool_backward", (avg_gy, list(x.shape), *avg_args)),
        ("adaptive_avg_pool_forward", (x1, [4])),
        ("adaptive_avg_pool_backward", (a_gy, list(x.shape))),
        ("lp_pool_forward", (x, 2.0, [2, 2], [2, 2], True)),
        ("lp_pool_backward", (lp_gy, x, 2.0, [2, 2], [2, 2], True)),
    ]


    xc = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    out_c, idx_c = ops.max_pool_forward(xc.detach(), [3, 3], [2, 2], [1, 1], [1, 1], False, True)
    gy_c = randn(*out_c.shape, device=device).contiguous(memory_format=torch.channels_last).requires_grad_()
    avg_gy_c = avg_gy.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    cases += [
        ("max_pool_forward", (xc, [3, 3], [2, 2], [1, 1], [1, 1], False, True)),
        ("max_pool_backward", (gy_c, idx_c, list(x.shape))),
        ("adaptive_max_pool_forward", (xc, [3, 5], False)),
        ("avg_pool_forward", (xc, *avg_args)),
        ("avg_pool_backward", (avg_gy_c, list(x.shape), *avg_args)),
        ("adaptive_avg_pool_forward", (xc, [3, 2])),
        ("lp_pool_forward", (xc, 2.0, [3, 2], [2, 1], True)),
        ("lp_pool_backward", (lp_gy, xc, 2.0, [2, 2], [2, 2], True)),
    ]
    # padding_end: more padding after the input than before (TensorFlow's 'same')
    same_args = ([2, 4], [2, 3], [0, 1], False, False, None, [1, 2])
    same_gy = randn(*ops.avg_pool_forward(x.detach(), *same_args).shape, device=device, requires_grad=True)
    cases += [
        ("max_pool_forward", (x, [2, 4], [2, 2], [0, 1], [1, 1], False, False, [1, 2])),
        ("avg_pool_forward", (xc, *same_args)),
        ("avg_pool_backward", (same_gy, list(x.shape), *same_args)),
    ]
    return cases


OPCHECK_IDS = ["max", "min-1d", "max-3d", "adaptive-min", "max-backward", "avg", "avg-3d-divisor", "avg-backward",
               "adaptive-avg", "adaptive-avg-backward", "lp", "lp-backward",
               "cl-min", "cl-max-backward", "cl-adaptive-max", "cl-avg", "cl-avg-backward", "cl-adaptive-avg",
               "cl-lp", "cl-lp-backward", "max-padding-end", "cl-avg-padding-end", "avg-backward-padding-end"]


@pytest.mark.parametrize("i", range(len(OPCHECK_IDS)), ids=OPCHECK_IDS)
def test_opcheck(i, device):
    opcheck_case(_opcheck_cases, i, device)


# ---- torch.compile -------------------------------------------------------------------------------------
class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = tco.nn.Conv2d(3, 4, 3, padding=1)
        self.max = tco.nn.MaxPool2d(3, 2, 1)
        self.min = tco.nn.MinPool2d(2, ceil_mode=True)
        self.lp = tco.nn.LPPool2d(2, 2, 1)
        self.avg = tco.nn.AdaptiveAvgPool2d(2)

    def forward(self, x):
        y = self.max(torch.relu(self.conv(x)))
        return self.avg(self.lp(y + self.min(y).repeat_interleave(2, -1).repeat_interleave(2, -2)[..., :y.shape[-2], :y.shape[-1]]))


def test_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    model = SmallNet().double()
    compiled = torch.compile(model, fullgraph=True)
    x = randn(2, 3, 12, 12, requires_grad=True)
    xc = x.detach().clone().requires_grad_()
    eager = model(x)
    eager.sum().backward()
    out = compiled(xc)
    out.sum().backward()
    assert_close_to_reference(out, eager, torch.float64, "compiled forward")
    assert_close_to_reference(xc.grad, x.grad, torch.float64, "compiled backward")


# ---- modules --------------------------------------------------------------------------------------------
MODULE_CASES = [
    ("MaxPool2d", (3, 2, 1), {"ceil_mode": True}),
    ("MaxPool1d", (2,), {"return_indices": True}),
    ("MaxPool3d", (2, 1), {"dilation": 2}),
    ("AvgPool1d", (3, 2, 1), {"count_include_pad": False}),
    ("AvgPool2d", (3, 2, 1), {"divisor_override": 4}),
    ("AvgPool3d", (2,), {"ceil_mode": True}),
    ("LPPool1d", (2, 3), {}),
    ("LPPool2d", (3, 2), {"ceil_mode": True}),
    ("LPPool3d", (2, 2), {}),
    ("AdaptiveMaxPool2d", ((3, None),), {"return_indices": True}),
    ("AdaptiveAvgPool1d", (4,), {}),
    ("AdaptiveAvgPool3d", (2,), {}),
]


@pytest.mark.parametrize("name,args,kwargs", MODULE_CASES, ids=[c[0] for c in MODULE_CASES])
def test_modules_match_torch(name, args, kwargs, device):
    ours, theirs = getattr(tco.nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)
    assert isinstance(ours, type(theirs)) and repr(ours) == repr(theirs)
    nd = int(name[-2])
    x = randn(*_shape(nd, 8), device=device).abs()
    out, ref = ours(x), theirs(x.cpu())
    if isinstance(ref, tuple):
        assert torch.equal(out[1].cpu(), ref[1])
        out, ref = out[0], ref[0]
    assert_close_to_reference(out, ref)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_min_modules(nd, device):
    x = randn(*_shape(nd, 8), device=device)
    m = getattr(tco.nn, f"MinPool{nd}d")(3, 2, 1, return_indices=True)
    assert repr(m).startswith(f"MinPool{nd}d(kernel_size=3, stride=2, padding=1")
    out, idx = m(x)
    ref, ref_idx = _min_reference(nd, x.cpu(), 3, 2, 1, return_indices=True)
    assert_close_to_reference(out, ref)
    assert torch.equal(idx.cpu(), ref_idx)
    a = getattr(tco.nn, f"AdaptiveMinPool{nd}d")(3)
    assert repr(a) == f"AdaptiveMinPool{nd}d(output_size=3)"
    assert_close_to_reference(a(x), -getattr(F, f"adaptive_max_pool{nd}d")(-x.cpu(), 3))


# ---- bad input ------------------------------------------------------------------------------------------
def _bad_cases():
    x = torch.randn(2, 3, 6, 6)
    return [
        ("kernel-larger-than-padded-input", lambda: TF.max_pool2d(x, 9), r"kernel.*larger.*padded input"),
        ("avg-kernel-larger", lambda: TF.avg_pool2d(x, (7, 2)), r"kernel.*larger"),
        ("dilated-kernel-larger", lambda: TF.min_pool2d(x, 3, dilation=3), r"kernel.*dilation"),
        ("stride-zero", lambda: TF.max_pool2d(x, 2, 0), r"stride"),
        ("avg-stride-zero", lambda: TF.avg_pool1d(x[:, :, 0], 2, 0), r"stride"),
        ("lp-stride-zero", lambda: TF.lp_pool2d(x, 2, 2, 0), r"stride"),
        ("kernel-zero", lambda: TF.max_pool2d(x, 0), r"kernel_size"),
        ("dilation-zero", lambda: TF.max_pool2d(x, 2, dilation=0), r"dilation"),
        ("padding-more-than-half", lambda: TF.max_pool2d(x, 3, padding=2), r"padding.*half.*kernel_size"),
        ("avg-padding-more-than-half", lambda: TF.avg_pool3d(x[None], 2, padding=(0, 0, 2)), r"padding.*half"),
        ("padding-negative", lambda: TF.max_pool2d(x, 3, padding=-1), r"padding"),
        ("raw-norm-type", lambda: ops.lp_pool_forward(x, -2.0, [2, 2], [2, 2], False), r"norm_type"),
        ("divisor-zero", lambda: TF.avg_pool2d(x, 2, divisor_override=0), r"divisor_override"),
        ("raw-divisor-zero", lambda: ops.avg_pool_forward(x, [2, 2], [2, 2], [0, 0], False, True, 0),
         r"divisor_override"),
        ("input-rank", lambda: TF.max_pool2d(x[0, 0, 0], 2), r"input"),
        ("raw-input-rank", lambda: ops.max_pool_forward(x, [2], [2], [0], [1], False, False), r"input"),
        ("kernel-wrong-length", lambda: TF.max_pool2d(x, (2, 2, 2)), r"kernel_size"),
        ("integer-input", lambda: TF.max_pool2d(x.long(), 2), r"float"),
        ("adaptive-output-wrong-length", lambda: TF.adaptive_max_pool2d(x, (2, 2, 2)), r"output_size"),
        ("backward-shape", lambda: ops.avg_pool_backward(torch.randn(2, 3, 4, 4), list(x.shape), [2, 2], [2, 2],
                                                         [0, 0], False, True, None), r"grad_output.*shape"),
        ("backward-index-range",
         lambda: ops.max_pool_backward(torch.randn(2, 3, 3, 3), torch.full((2, 3, 3, 3), 99), list(x.shape)),
         r"index"),
    ]


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("call,pattern", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_input_raises(call, pattern):
    with pytest.raises(BAD_INPUT, match=f"(?i){pattern}"):
        call()


def test_functional_names_exist():
    for kind in ("max", "min", "avg", "lp"):
        for nd in (1, 2, 3):
            assert callable(getattr(tco.F, f"{kind}_pool{nd}d"))
            assert callable(getattr(tco.nn, f"{'LP' if kind == 'lp' else kind.capitalize()}Pool{nd}d"))
    for kind in ("max", "min", "avg"):
        for nd in (1, 2, 3):
            assert callable(getattr(tco.F, f"adaptive_{kind}_pool{nd}d"))
            assert callable(getattr(tco.nn, f"Adaptive{kind.capitalize()}Pool{nd}d"))
    for name in ("kmax_pool1d", "dynamic_kmax_pool1d", "channel_max_pool"):
        assert callable(getattr(tco.F, name))
    for name in ("KMaxPool1d", "DynamicKMaxPool1d", "Maxout"):
        assert callable(getattr(tco.nn, name))


# ---- k-max and channel pooling --------------------------------------------------------------------------
def _kmax_positions(x, k, dim):
    """The positions k-max pooling takes: topk's on the CPU; the first of tied values in the row
    with the CUDA kernels (a stable descending sort; NaN is the largest, as for topk)."""
    if runs_cuda_kernels(x):
        positions = x.sort(dim=dim, descending=True, stable=True).indices.narrow(dim, 0, k)
    else:
        positions = x.topk(k, dim).indices
    return positions.sort(dim).values


def _kmax_reference(x, k, dim):
    return x.gather(dim, _kmax_positions(x, k, dim))


@pytest.mark.parametrize("shape,k,dim", [((2, 3, 10), 4, -1), ((2, 7, 5), 3, 1), ((9,), 9, 0), ((3, 4, 6, 5), 1, 2)])
def test_kmax_matches_topk_in_original_order(shape, k, dim, device):
    x = randn(*shape, device=device, requires_grad=True)
    out = TF.kmax_pool1d(x, k, dim)
    xr = as_reference(x)
    ref = _kmax_reference(xr, k, dim)
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")


def test_kmax_ties_and_nan_as_topk(device):
    x = torch.randint(0, 3, (4, 3, 12), dtype=torch.float64).to(device)
    assert torch.equal(TF.kmax_pool1d(x, 5).cpu(), _kmax_reference(x, 5, -1).cpu())
    x[0, 0, 3] = float("nan")
    torch.testing.assert_close(TF.kmax_pool1d(x, 5).cpu(), _kmax_reference(x, 5, -1).cpu(), equal_nan=True)


@pytest.mark.parametrize("length", [46 * 1024 // 4, 46 * 1024 // 4 + 1, 48 * 1024 // 4])
def test_kmax_rows_at_the_shared_memory_limit(length, device):
    # The CUDA kernel keeps a row's keys in shared memory up to 46 KiB (its static shared memory
    # takes the rest of the 48 KiB a launch may use) and reads global memory beyond.
    x = torch.randn(2, length, generator=torch.Generator().manual_seed(length)).to(device)
    values, positions = ops.kmax_pool_forward(x, 5, -1)
    assert torch.equal(positions, _kmax_positions(x, 5, -1)) and torch.equal(values, x.gather(-1, positions))


def _tied_input(shape, dtype, device):
    """Small integers (many ties) with NaNs, -0.0 and +0.0 among them."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(-3, 4, shape, generator=gen).to(torch.float64)
    u = torch.rand(shape, generator=gen)
    x[u < 0.05] = float("nan")
    x[(u >= 0.05) & (u < 0.15)] = -0.0
    return x.to(dtype).to(device)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("k", [64, 512, 1])
@pytest.mark.parametrize("shape,dim", [((4, 512), -1), ((2, 512, 3), 1)], ids=["last-dim", "middle-dim"])
def test_kmax_long_rows_with_ties_and_nan_as_topk(shape, dim, k, contiguous, dtype, device):
    x = _tied_input(shape, dtype, device)
    if not contiguous:  # the same values, with other strides
        x = x.transpose(0, -1).contiguous().transpose(0, -1)
        assert not x.is_contiguous()
    x.requires_grad_()
    values, positions = ops.kmax_pool_forward(x, k, dim)
    # The positions are increasing and give the values.
    assert positions.shape == values.shape and bool((positions.diff(dim=dim) > 0).all())
    torch.testing.assert_close(values, x.detach().gather(dim, positions), rtol=0, atol=0, equal_nan=True)
    # The very positions topk picks on the CPU, ties included (torch.topk's CPU selection is no
    # rule on positions; the kernel reruns it for rows whose threshold value must be split); the
    # first of tied values in the row with the CUDA kernels.
    assert torch.equal(positions, _kmax_positions(x.detach(), k, dim))
    top = x.detach().topk(k, dim)
    torch.testing.assert_close(values.float().sort(dim).values, top.values.float().sort(dim).values,
                               rtol=0, atol=0, equal_nan=True)
    out = TF.kmax_pool1d(x, k, dim)
    gy = torch.randn(out.shape, dtype=torch.float64).to(dtype).to(device)
    out.backward(gy)
    expected = torch.zeros_like(x).scatter(dim, positions, gy)
    assert torch.equal(x.grad, expected)


@pytest.mark.parametrize("layer,num_layers,k_top,length,expected", [(1, 3, 3, 18, 12), (2, 3, 3, 18, 6), (3, 3, 3, 18, 3),
                                                                      (1, 2, 5, 7, 5), (1, 4, 1, 10, 8)])
def test_dynamic_kmax(layer, num_layers, k_top, length, expected, device):
    x = randn(2, 3, length, device=device)
    out = TF.dynamic_kmax_pool1d(x, layer, num_layers, k_top)
    assert out.shape[-1] == expected
    assert_close_to_reference(out, _kmax_reference(x.cpu(), expected, -1))
    m = tco.nn.DynamicKMaxPool1d(layer, num_layers, k_top)
    assert_close_to_reference(m(x), out)
    assert repr(m) == f"DynamicKMaxPool1d(layer={layer}, num_layers={num_layers}, k_top={k_top}, dim=-1)"


@pytest.mark.parametrize("shape,pool_size,dim", [((2, 6, 5, 4), 2, 1), ((2, 6, 5, 4), 3, 1), ((3, 8), 4, -1),
                                                 ((2, 4, 9), 3, 2), ((2, 6, 3, 2, 2), 6, 1)])
def test_channel_max_pool_matches_torch(shape, pool_size, dim, device):
    x = randn(*shape, device=device, requires_grad=True)
    out = TF.channel_max_pool(x, pool_size, dim)
    xr = as_reference(x)
    d = dim % xr.dim()
    ref = xr.unflatten(d, (xr.shape[d] // pool_size, pool_size)).amax(d + 1)
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*out.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")
    assert_close_to_reference(tco.nn.Maxout(pool_size, dim)(x), ref)


def test_kmax_gradcheck_opcheck(device):
    x = (torch.randperm(2 * 3 * 9, dtype=torch.float64) / 7).view(2, 3, 9).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: TF.kmax_pool1d(t, 4), (x,))
    assert torch.autograd.gradgradcheck(lambda t: TF.kmax_pool1d(t, 2, 1), (x,))
    assert torch.autograd.gradgradcheck(lambda t: TF.channel_max_pool(t, 3, 1), (x,))
    torch.library.opcheck(ops.kmax_pool_forward.default, (x, 4, -1))
    values, positions = ops.kmax_pool_forward(x.detach(), 2, 1)
    gy = randn(*values.shape, device=device, requires_grad=True)
    torch.library.opcheck(ops.kmax_pool_backward.default, (gy, positions, 1, list(x.shape)))


def assert_compiled_matches_eager(module, x):
    """``module`` compiled whole (fullgraph, aot_eager) gives eager's output and input gradient;
    ``x`` requires grad and is not modified."""
    xc = x.detach().clone().requires_grad_()
    eager = module(x)
    eager.sum().backward()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")(xc)
    compiled.sum().backward()
    assert_close_to_reference(compiled, eager)
    assert_close_to_reference(xc.grad, x.grad)


def test_kmax_modules_and_compile():
    torch._dynamo.reset()
    model = torch.nn.Sequential(tco.nn.Maxout(2), tco.nn.KMaxPool1d(3), tco.nn.DynamicKMaxPool1d(1, 2, 2)).double()
    assert repr(model[1]) == "KMaxPool1d(k=3, dim=-1)" and repr(model[0]) == "Maxout(pool_size=2, dim=1)"
    assert_compiled_matches_eager(model, randn(2, 6, 8, requires_grad=True))


KMAX_BAD_CASES = [
    ("k-too-large", lambda: TF.kmax_pool1d(torch.randn(2, 5), 6), r"\bk\b"),
    ("k-zero", lambda: TF.kmax_pool1d(torch.randn(2, 5), 0), r"\bk\b"),
    ("k-not-int", lambda: TF.kmax_pool1d(torch.randn(2, 5), 2.5), r"\bk\b"),
    ("layer-out-of-range", lambda: TF.dynamic_kmax_pool1d(torch.randn(2, 5), 4, 3, 1), r"layer"),
    ("k-top-zero", lambda: TF.dynamic_kmax_pool1d(torch.randn(2, 5), 1, 3, 0), r"k_top"),
    ("backward-shape", lambda: ops.kmax_pool_backward(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.long), -1,
                                                      [3, 5]), r"grad_output.*input_size"),
    ("backward-k-too-large", lambda: ops.kmax_pool_backward(torch.randn(2, 6), torch.zeros(2, 6, dtype=torch.long),
                                                            -1, [2, 5]), r"grad_output.*input_size"),
    ("backward-index-range", lambda: ops.kmax_pool_backward(torch.randn(2, 3), torch.full((2, 3), 7), -1, [2, 5]),
     r"index 7"),
    ("backward-index-dtype", lambda: ops.kmax_pool_backward(torch.randn(2, 3), torch.zeros(2, 3, dtype=torch.int32),
                                                            -1, [2, 5]), r"int64"),
    ("pool-size-not-dividing", lambda: TF.channel_max_pool(torch.randn(2, 5, 3), 2), r"divisible.*pool_size"),
    ("pool-size-zero", lambda: tco.nn.Maxout(0), r"pool_size"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in KMAX_BAD_CASES], ids=[c[0] for c in KMAX_BAD_CASES])
def test_kmax_bad_input_raises(call, pattern):
    with pytest.raises((RuntimeError, ValueError, TypeError), match=f"(?i){pattern}"):
        call()


# ---- Gaussian pooling ------------------------------------------------------------------------------------
def _gaussian_reference(x, kernel_size, stride, padding, sigma):
    """The depthwise convolution with the normalised Gaussian kernel."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size

    def one(k):
        d = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
        w = torch.exp(-d * d / (2 * sigma**2))
        return w / w.sum()

    kernel = torch.outer(one(kh), one(kw)).to(x.dtype)
    channels = x.shape[1]
    return F.conv2d(x, kernel.expand(channels, 1, kh, kw), stride=stride, padding=padding, groups=channels)


# (spatial size, kernel, stride, padding, sigma)
GAUSSIAN_CASES = [
    ((9, 11), 3, 1, 1, 1.0),
    ((8, 8), 2, None, 0, 0.5),
    ((10, 7), (5, 3), (2, 1), (2, 1), 1.7),
    ((7, 9), 4, 3, 2, 3.0),
    ((5, 6), (1, 3), 1, (0, 1), 0.8),
]
GAUSSIAN_IDS = [f"k{c[1]}-s{c[2]}-p{c[3]}-sigma{c[4]}" for c in GAUSSIAN_CASES]


@pytest.mark.parametrize("case", GAUSSIAN_CASES, ids=GAUSSIAN_IDS)
def test_gaussian_matches_depthwise_conv(case, device):
    size, k, s, p, sigma = case
    x = randn(2, 3, *size, device=device, requires_grad=True)
    out = TF.gaussian_pool2d(x, k, s, p, sigma)
    xr = as_reference(x)
    ref = _gaussian_reference(xr, k, k if s is None else s, p, sigma)
    assert_close_to_reference(out, ref, msg="values")
    gy = randn(*ref.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg="gradient")
    module = tco.nn.GaussianPool2d(k, s, p, sigma)
    assert_close_to_reference(module(x), ref, msg="module")
    assert_close_to_reference(TF.gaussian_pool2d(x[0], k, s, p, sigma), ref[0], msg="unbatched")


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES)
def test_gaussian_low_precision(dtype, device):
    x = randn(2, 3, 9, 8, dtype=dtype, device=device)
    ref = _gaussian_reference(as_reference(x), 3, 2, 1, 1.2)
    assert TF.gaussian_pool2d(x, 3, 2, 1, 1.2).dtype == dtype
    assert_close_to_reference(TF.gaussian_pool2d(x, 3, 2, 1, 1.2), ref)


def test_gaussian_gradcheck_gradgradcheck_opcheck(device):
    x = randn(2, 2, 7, 6, device=device, requires_grad=True)
    fn = lambda t: TF.gaussian_pool2d(t, (3, 2), (2, 1), (1, 1), 0.9)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    torch.library.opcheck(ops.gaussian_pool_forward.default, (x, [3, 3], [2, 2], [1, 1], 1.5))
    out = ops.gaussian_pool_forward(x.detach(), [3, 3], [2, 2], [1, 1], 1.5)
    gy = randn(*out.shape, device=device, requires_grad=True)
    torch.library.opcheck(ops.gaussian_pool_backward.default, (gy, list(x.shape), [3, 3], [2, 2], [1, 1], 1.5))


@pytest.mark.parametrize("sigma", [0.05, 0.01, 1e-200])
@pytest.mark.parametrize("k", [2, 3, 4])
def test_gaussian_small_sigma_weighs_the_nearest_taps(sigma, k, device):
    # exp(-d^2 / (2 sigma^2)) underflows to 0 at every tap of an even kernel (d >= 1/2) for a
    # small sigma; the normalised weights are still defined: the taps nearest the centre share
    # the weight (reference: the depthwise convolution in float64 with the limiting weights,
    # 1 / (number of nearest taps) on them, 0 elsewhere, up to exp(-1/(2 sigma^2)) ~ 1e-87).
    x = randn(2, 3, 9, 8, device=device)
    out = TF.gaussian_pool2d(x, k, 1, 0, sigma)
    centre = (k - 1) / 2
    one = torch.tensor([1.0 if abs(i - centre) <= 0.5 else 0.0 for i in range(k)], dtype=torch.float64)
    one = one / one.sum()
    kernel = torch.outer(one, one)
    ref = F.conv2d(as_reference(x), kernel.expand(3, 1, k, k), groups=3)
    assert torch.isfinite(out).all()
    assert_close_to_reference(out, ref)


def test_gaussian_module_and_compile():
    torch._dynamo.reset()
    module = tco.nn.GaussianPool2d(3, 1, 1, sigma=2.0)
    assert repr(module) == "GaussianPool2d(kernel_size=3, stride=1, padding=1, sigma=2.0)"
    assert_compiled_matches_eager(module, randn(2, 3, 6, 5, requires_grad=True))
    assert callable(tco.F.gaussian_pool2d) and "GaussianPool2d" in tco.nn.__all__


GAUSSIAN_BAD_CASES = [
    ("sigma-zero", lambda: TF.gaussian_pool2d(torch.randn(1, 2, 5, 5), 3, sigma=0.0), r"sigma"),
    ("sigma-negative", lambda: TF.gaussian_pool2d(torch.randn(1, 2, 5, 5), 3, sigma=-1.0), r"sigma"),
    ("sigma-op", lambda: ops.gaussian_pool_forward(torch.randn(1, 2, 5, 5), [3, 3], [1, 1], [0, 0], 0.0), r"sigma"),
    ("module-sigma", lambda: tco.nn.GaussianPool2d(3, sigma=-2.0), r"sigma"),
    ("kernel-too-large", lambda: TF.gaussian_pool2d(torch.randn(1, 2, 4, 4), 7, padding=1), r"larger than the padded"),
    ("padding-too-large", lambda: TF.gaussian_pool2d(torch.randn(1, 2, 6, 6), 3, padding=2), r"padding"),
    ("stride-zero", lambda: TF.gaussian_pool2d(torch.randn(1, 2, 6, 6), 3, stride=0), r"stride"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in GAUSSIAN_BAD_CASES], ids=[c[0] for c in GAUSSIAN_BAD_CASES])
def test_gaussian_bad_input_raises(call, pattern):
    with pytest.raises(BAD_INPUT, match=f"(?i){pattern}"):
        call()


# ---- stochastic pooling ----------------------------------------------------------------------------------
def _windows(x, kernel_size, stride):
    """(N, C, kernel volume, number of windows) of a 4-d input."""
    n, c = x.shape[:2]
    volume = kernel_size[0] * kernel_size[1]
    return F.unfold(x.reshape(n * c, 1, *x.shape[2:]), kernel_size, stride=stride).view(n, c, volume, -1)


def _stochastic_eval_reference(x, kernel_size, stride):
    w = _windows(x, kernel_size, stride)
    s1, s2 = w.sum(2), (w * w).sum(2)
    return torch.where(s1 > 0, s2 / torch.where(s1 > 0, s1, torch.ones_like(s1)), torch.zeros_like(s1))


def _positive(*shape, device="cpu", dtype=torch.float64, zero_window=False):
    x = torch.rand(*shape, dtype=torch.float64) * (torch.rand(*shape, dtype=torch.float64) > 0.3)
    if zero_window:
        x[..., :2, :2] = 0
    return x.to(dtype).to(device)


# (spatial size, kernel, stride)
STOCHASTIC_CASES = [((8, 8), 2, None), ((9, 11), 3, 2), ((7, 6), (3, 2), (1, 2))]
stochastic_cases = pytest.mark.parametrize("case", STOCHASTIC_CASES,
                                           ids=[f"k{c[1]}-s{c[2]}" for c in STOCHASTIC_CASES])


def _stochastic_input(case, device):
    """A case's kernel and stride as the layer takes them and as pairs, and a positive input
    with a window of zeros."""
    size, k, s = case
    kk = (k, k) if isinstance(k, int) else k
    ss = kk if s is None else ((s, s) if isinstance(s, int) else s)
    return k, s, kk, ss, _positive(2, 3, *size, device=device, zero_window=True)


@stochastic_cases
def test_stochastic_training_picks_from_window(case, device):
    k, s, kk, ss, x = _stochastic_input(case, device)
    size = case[0]
    u = torch.rand(TF.stochastic_pool2d(x, k, s, training=False).shape, dtype=x.dtype).to(device)
    values, indices = ops.stochastic_pool_forward(x, u, list(kk), list(ss))
    # the value is the input at the picked index, and the index lies in the window
    assert torch.equal(values, x.flatten(2).gather(2, indices.flatten(2)).view_as(values))
    plane_index = torch.arange(x[0, 0].numel(), dtype=torch.float64).view(1, 1, *size).to(device)
    window_idx = _windows(plane_index, kk, ss).long()
    assert (window_idx.expand(*x.shape[:2], -1, -1) == indices.flatten(2).unsqueeze(2)).any(2).all()
    # a picked element is positive unless its whole window is zero (then the value is 0)
    window_sum = _windows(x, kk, ss).sum(2).view_as(values)
    assert ((values > 0) | (window_sum == 0)).all() and (values[window_sum == 0] == 0).all()
    # the pick is the first element whose cumulative share exceeds u
    w = _windows(x, kk, ss)
    cum = w.cumsum(2) / w.sum(2, keepdim=True)
    first = (cum > u.flatten(2).unsqueeze(2)).float().argmax(2)
    expected = window_idx.expand(*x.shape[:2], -1, -1).gather(2, first.unsqueeze(2)).squeeze(2)
    nonzero = window_sum.flatten(2) > 0
    assert torch.equal(indices.flatten(2)[nonzero], expected[nonzero])


def test_stochastic_reproducible_with_generator(device):
    x = _positive(2, 3, 8, 8, device=device) + 0.1
    runs = [TF.stochastic_pool2d(x, 2, generator=torch.Generator(device=device).manual_seed(seed))
            for seed in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_stochastic_frequencies_follow_probabilities(device):
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], device=device).expand(1, 20000, 2, 2)
    out = TF.stochastic_pool2d(x, 2, generator=torch.Generator(device=device).manual_seed(0)).flatten()
    for value in (1.0, 2.0, 3.0, 4.0):
        assert abs((out == value).double().mean().item() - value / 10) < 0.02, value


@stochastic_cases
def test_stochastic_eval_is_weighted_average(case, device):
    k, s, kk, ss, x = _stochastic_input(case, device)
    out = TF.stochastic_pool2d(x, k, s, training=False)
    ref = _stochastic_eval_reference(x.cpu(), kk, ss).view(out.shape)
    assert_close_to_reference(out, ref)
    module = tco.nn.StochasticPool2d(k, s).eval()
    assert_close_to_reference(module(x), ref)
    assert_close_to_reference(TF.stochastic_pool2d(x[0], k, s, training=False), ref[0])


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES)
def test_stochastic_low_precision(dtype, device):
    x = _positive(2, 3, 8, 8, dtype=dtype, device=device)
    ref = _stochastic_eval_reference(as_reference(x), (2, 2), (2, 2)).view(2, 3, 4, 4)
    assert_close_to_reference(TF.stochastic_pool2d(x, 2, training=False), ref)
    out = TF.stochastic_pool2d(x, 2, generator=torch.Generator(device=device).manual_seed(0))
    assert out.dtype == dtype and out.shape == (2, 3, 4, 4)


@pytest.mark.parametrize("scale", [1e20, 1e38, 1e-25, 1e-40])
def test_stochastic_eval_large_and_tiny_inputs(scale, device):
    # x^2 overflows (or underflows in) float32 for these magnitudes, yet S2 / S1 lies within
    # the window's values: values and gradient against float64.
    x = (_positive(2, 3, 8, 8, device=device) + 0.5) * scale
    x = x.float().requires_grad_()
    out = TF.stochastic_pool2d(x, 2, training=False)
    xr = x.detach().cpu().double().requires_grad_()
    ref = _stochastic_eval_reference(xr, (2, 2), (2, 2)).view(out.shape)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-5, atol=0)
    gy = randn(*out.shape, device=device)
    (grad,) = torch.autograd.grad(out, x, gy)
    (grad_ref,) = torch.autograd.grad(ref, xr, gy.cpu().double())
    torch.testing.assert_close(grad.cpu().double(), grad_ref, rtol=1e-4, atol=1e-6)


def test_stochastic_gradient_goes_to_picked_element(device):
    x = _positive(2, 3, 9, 8, device=device).requires_grad_()
    u = torch.rand(2, 3, 4, 3, dtype=x.dtype, device=device)
    values, indices = ops.stochastic_pool_forward(x, u, [3, 2], [2, 3])
    gy = randn(*values.shape, device=device)
    (grad,) = torch.autograd.grad(values, x, gy)
    manual = torch.zeros(2, 3, 72, dtype=x.dtype, device=device).scatter_add_(2, indices.flatten(2), gy.flatten(2))
    assert torch.equal(grad, manual.view_as(x))
    # through the functional API with a generator: the same picks as a second, identical draw
    g = lambda: torch.Generator(device=device).manual_seed(3)  # noqa: E731
    out = TF.stochastic_pool2d(x, 2, generator=g())
    (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
    _, idx = ops.stochastic_pool_forward(x.detach(), torch.rand(out.shape, generator=g(), device=device,
                                                                 dtype=x.dtype), [2, 2], [2, 2])
    manual = torch.zeros(2, 3, 72, dtype=x.dtype, device=device).scatter_add_(2, idx.flatten(2),
                                                                                torch.ones_like(out).flatten(2))
    assert torch.equal(grad, manual.view_as(x))


def test_stochastic_eval_gradcheck_and_opcheck(device):
    x = (torch.rand(2, 2, 7, 6, dtype=torch.float64) + 0.1).to(device).requires_grad_()
    fn = lambda t: TF.stochastic_pool2d(t, (3, 2), (2, 1), training=False)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    torch.library.opcheck(ops.stochastic_pool_eval_forward.default, (x, [2, 2], [1, 2]))
    u = torch.rand(2, 2, 3, 3, dtype=torch.float64, device=device)
    torch.library.opcheck(ops.stochastic_pool_forward.default, (x, u, [3, 2], [2, 2]))
    gy = randn(2, 2, 6, 3, device=device, requires_grad=True)
    torch.library.opcheck(ops.stochastic_pool_eval_backward.default, (gy, x, [2, 2], [1, 2]))


def test_stochastic_module_and_compile():
    torch._dynamo.reset()
    module = tco.nn.StochasticPool2d(2)
    assert repr(module) == "StochasticPool2d(kernel_size=2, stride=2)"
    x = (torch.rand(2, 3, 6, 4, dtype=torch.float64) + 0.1).requires_grad_()
    out = module(x)
    assert out.shape == (2, 3, 3, 2)
    module.eval()
    assert_compiled_matches_eager(module, x)
    assert callable(tco.F.stochastic_pool2d) and "StochasticPool2d" in tco.nn.__all__


STOCHASTIC_BAD_CASES = [
    ("negative-train", lambda: TF.stochastic_pool2d(-torch.rand(1, 2, 4, 4) - 0.1, 2), r"non-negative"),
    ("negative-eval", lambda: TF.stochastic_pool2d(-torch.rand(1, 2, 4, 4) - 0.1, 2, training=False),
     r"non-negative"),
    ("kernel-too-large", lambda: TF.stochastic_pool2d(torch.rand(1, 2, 3, 3), 4), r"larger than the padded"),
    ("uniform-shape", lambda: ops.stochastic_pool_forward(torch.rand(1, 2, 4, 4), torch.rand(1, 2, 3, 3), [2, 2],
                                                         [2, 2]), r"uniform"),
]


@pytest.mark.parametrize("call,pattern", [c[1:] for c in STOCHASTIC_BAD_CASES], ids=[c[0] for c in STOCHASTIC_BAD_CASES])
def test_stochastic_bad_input_raises(call, pattern):
    with pytest.raises(BAD_INPUT, match=f"(?i){pattern}"):
        call()


# ---- the C++ entry of plain calls ----------------------------------------------------------
class _PassThrough(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class _Subclass(torch.Tensor):
    pass


def _min_pool(nd):
    max_pool = getattr(F, f"max_pool{nd}d")

    def min_pool(x, *args, **kwargs):
        out = max_pool(-x, *args, **kwargs)
        return (-out[0], out[1]) if isinstance(out, tuple) else -out
    return min_pool


# name: (our function, torch's or its equal, the C++ entry's leading arguments, the arguments
# after the input, the same in forms the entry leaves to the Python path)
def _plain_pool_cases(nd):
    import numpy as np
    return {
        "max": (getattr(tco.F, f"max_pool{nd}d"), getattr(F, f"max_pool{nd}d"), ("max_pool", nd, False),
                (3, 2, 1, 1, False, True), (3, np.int64(2), 1, 1, False, True)),
        "min": (getattr(tco.F, f"min_pool{nd}d"), _min_pool(nd), ("max_pool", nd, True),
                ((3,) * nd, None, [1] * nd, 1, True, False), (3, None, np.int32(1), 1, True, False)),
        "avg": (getattr(tco.F, f"avg_pool{nd}d"), getattr(F, f"avg_pool{nd}d"), ("avg_pool", nd),
                (3, 2, 1, True, False) + ((None,) if nd > 1 else ()),
                (np.int64(3), 2, 1, True, False) + ((None,) if nd > 1 else ())),
        "adaptive-avg": (getattr(tco.F, f"adaptive_avg_pool{nd}d"), getattr(F, f"adaptive_avg_pool{nd}d"),
                         ("adaptive_avg_pool", nd), ((3,) * nd,), ((np.int64(3),) * nd,)),
    }


@pytest.mark.parametrize("kind", ["max", "min", "avg", "adaptive-avg"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_plain_and_general_pool_calls_agree(nd, kind):
    """A plain pooling call (a batched tensor, ints, bools) runs the op from C++
    (torch_cnn_ops._C.max_pool / avg_pool / adaptive_avg_pool); NumPy ints, tensor subclasses,
    unbatched inputs, padding strings and torch-function modes take the Python path. Both give
    torch's values, indices and gradients."""
    from torch_cnn_ops import _C

    ours, theirs, entry, args, general_args = _plain_pool_cases(nd)[kind]
    entry_fn, head = getattr(_C, entry[0]), entry[1:]
    extra = (None,) if entry[0] == "avg_pool" and nd == 1 else ()  # the 1-d function has no divisor_override
    torch.manual_seed(nd)
    x = torch.randn(2, 3, *(8,) * nd, dtype=torch.float64, requires_grad=True)
    expected = theirs(x, *args)
    values = expected[0] if isinstance(expected, tuple) else expected
    gy = torch.randn_like(values)
    (want,) = torch.autograd.grad(values, x, gy)

    plain = entry_fn(*head, x, *args, *extra)
    assert isinstance(plain, type(expected))
    refused = {"numpy-ints": (x, *general_args), "subclass": (x.as_subclass(_Subclass), *args),
               "unbatched": (x[0], *args)}
    for name, call_args in refused.items():
        assert entry_fn(*head, *call_args, *extra) is NotImplemented, name
    with _PassThrough():
        assert entry_fn(*head, x, *args, *extra) is NotImplemented
        in_mode = ours(x, *args)
    results = {
        "plain": ours(x, *args),
        "numpy-ints": ours(x, *general_args),
        "subclass": ours(x.as_subclass(_Subclass), *args),
        "unbatched": [torch.stack(parts) for parts in zip(*(
            (lambda r: r if isinstance(r, tuple) else (r,))(ours(x[i], *args)) for i in range(2)))],
        "mode": in_mode,
    }
    results["unbatched"] = tuple(results["unbatched"]) if isinstance(expected, tuple) else results["unbatched"][0]
    for name, out in results.items():
        outs = out if isinstance(out, tuple) else (out,)
        refs = expected if isinstance(expected, tuple) else (expected,)
        for got, ref in zip(outs, refs):
            torch.testing.assert_close(got.as_subclass(torch.Tensor), ref, msg=name)
        (grad,) = torch.autograd.grad(outs[0], x, gy)
        torch.testing.assert_close(grad, want, msg=name)


def test_plain_pool_calls_raise_torchs_errors():
    """What the C++ entry passes on and the op refuses raises as torch does (a padding above
    half the kernel); a padding string is left to the Python path."""
    from torch_cnn_ops import _C

    x = torch.randn(1, 2, 6, 6)
    for ours, theirs in [(tco.F.max_pool2d, F.max_pool2d), (tco.F.avg_pool2d, F.avg_pool2d)]:
        with pytest.raises(RuntimeError, match="(?i)pad"):
            theirs(x, 2, 1, 2)
        with pytest.raises(RuntimeError, match="(?i)pad"):
            ours(x, 2, 1, 2)
    assert _C.max_pool(2, False, x, 3, 1, "same", 1, False, False) is NotImplemented
    torch.testing.assert_close(tco.F.max_pool2d(x, 3, 1, "same"), F.max_pool2d(x, 3, 1, 1))
