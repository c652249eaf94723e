"""Tests of the conv family: tco.functional.conv{1,2,3}d, tco.grad, tco.nn.Conv{1,2,3}d and the
raw ops torch.ops.cnn_ops.conv_forward / conv_input_backward / conv_weight_backward.

References are independent of the library: torch.nn.functional / torch.nn.grad / torch.nn
(in float64 on the CPU), SciPy and NumPy.
"""

import math
from dataclasses import dataclass
from typing import Any, Tuple

import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F
from conftest import (LOW_PRECISION_DTYPES, as_reference, as_tuple, assert_close_to_reference, explicit_pads, randn,
                      runs_cuda_kernels)

import torch_cnn_ops as tco

# torch warns that padding='same' with an even kernel needs a padded copy; that is torch's
# reference path talking, not the library under test.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

ALGORITHMS = ["direct", "im2col", "shifted", "aten", "auto"]


def unit_stride(case):
    stride = case.stride if isinstance(case.stride, tuple) else (case.stride,)
    return all(s == 1 for s in stride)
TCO_CONV = {1: tco.functional.conv1d, 2: tco.functional.conv2d, 3: tco.functional.conv3d}
TORCH_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
TCO_GRAD_INPUT = {1: tco.grad.conv1d_input, 2: tco.grad.conv2d_input, 3: tco.grad.conv3d_input}
TCO_GRAD_WEIGHT = {1: tco.grad.conv1d_weight, 2: tco.grad.conv2d_weight, 3: tco.grad.conv3d_weight}
TORCH_GRAD_INPUT = {1: torch.nn.grad.conv1d_input, 2: torch.nn.grad.conv2d_input, 3: torch.nn.grad.conv3d_input}
TORCH_GRAD_WEIGHT = {1: torch.nn.grad.conv1d_weight, 2: torch.nn.grad.conv2d_weight, 3: torch.nn.grad.conv3d_weight}
TCO_MODULE = {1: tco.nn.Conv1d, 2: tco.nn.Conv2d, 3: tco.nn.Conv3d}
TORCH_MODULE = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
BAD_INPUT = (RuntimeError, ValueError)


# ---- references -----------------------------------------------------------------------------
def torch_reference(nd, x, w, b, stride, padding, dilation, groups, flip=False):
    """The convolution computed by torch built-ins (float64 inputs, autograd-able).

    flip=False uses torch's own padding handling ('same', 'valid', ints; 'full' as the int
    padding dilation*(k-1)); flip=True rotates the kernel and pads explicitly with F.pad, the
    pad placement being checked against SciPy/NumPy separately below.
    """
    conv = TORCH_CONV[nd]
    kernel = tuple(w.shape[2:])
    if not flip:
        if padding == "full":
            padding = tuple(d * (k - 1) for d, k in zip(as_tuple(dilation, nd), kernel))
        return conv(x, w, b, stride, padding, dilation, groups)
    lo, hi = explicit_pads(nd, padding, kernel, dilation, flip)
    pads = [p for i in reversed(range(nd)) for p in (lo[i], hi[i])]
    return conv(F.pad(x, pads), w.flip(list(range(2, 2 + nd))), b, stride, 0, dilation, groups)


@dataclass
class Case:
    """One convolution geometry (input, weight and arguments) for the value tests."""

    id: str
    nd: int
    batch: int
    cin: int
    cout: int
    size: Tuple[int, ...]
    kernel: Tuple[int, ...]
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = True

    def tensors(self, dtype, device, requires_grad=True):
        x = randn(self.batch, self.cin, *self.size, dtype=dtype, device=device, requires_grad=requires_grad)
        w = randn(self.cout, self.cin // self.groups, *self.kernel, dtype=dtype, device=device, requires_grad=requires_grad)
        b = randn(self.cout, dtype=dtype, device=device, requires_grad=requires_grad) if self.bias else None
        return x, w, b

    @property
    def args(self):
        return dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)


CASES = [
    # 1-d
    Case("1d-basic", 1, 2, 3, 4, (9,), (3,)),
    Case("1d-stride-pad-dilation-groups", 1, 2, 4, 6, (9,), (3,), stride=2, padding=1, dilation=2, groups=2),
    # asymmetric 'same': total pad 3 split (1, 2)
    Case("1d-same-even-kernel", 1, 2, 3, 4, (8,), (4,), padding="same"),
    # even kernel with odd dilation: total pad 3, split (1, 2)
    Case("1d-same-even-kernel-dilation3", 1, 2, 3, 2, (7,), (2,), padding="same", dilation=3, bias=False),
    # the dilated kernel (span 9) is longer than the input (6): only padding makes it fit
    Case("1d-same-kernel-longer-than-input", 1, 2, 3, 4, (6,), (5,), padding="same", dilation=2),
    Case("1d-full-stride-dilation", 1, 2, 3, 4, (7,), (3,), stride=2, padding="full", dilation=2),
    # stride > kernel leaves input positions no window covers; padding > kernel gives all-zero windows;
    # (9 + 6 - 2) % 3 != 0, so the last input position is read by no output
    Case("1d-stride-gt-kernel-pad-gt-kernel", 1, 2, 3, 3, (9,), (2,), stride=3, padding=3),
    Case("1d-batch0", 1, 0, 3, 4, (9,), (3,), padding=1),
    # 2-d
    Case("2d-basic", 2, 2, 3, 4, (7, 8), (3, 3), padding=1),
    Case("2d-anisotropic", 2, 2, 3, 5, (8, 7), (2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2)),
    # H: total 3 split (1, 2); W: total 2 split (1, 1)
    Case("2d-same-even-kernel", 2, 2, 3, 4, (7, 6), (4, 2), padding="same", dilation=(1, 2)),
    # (6 - 3) % 2 != 0: the last row/column of the input is not read
    Case("2d-valid-stride-leftover", 2, 2, 3, 4, (6, 6), (3, 2), stride=2, padding="valid"),
    Case("2d-full-dilation", 2, 2, 2, 3, (5, 6), (3, 2), padding="full", dilation=(2, 1)),
    Case("2d-groups-stride", 2, 2, 4, 6, (7, 7), (3, 3), stride=2, padding=1, groups=2),
    # depthwise with channel multiplier 2
    Case("2d-depthwise-multiplier", 2, 2, 4, 8, (7, 6), (3, 3), padding=1, groups=4),
    # depthwise (groups == channels) with asymmetric 'same'
    Case("2d-depthwise-same-even", 2, 2, 5, 5, (6, 7), (2, 2), padding="same", groups=5),
    # 8 input channels in one group (more than the few per group of the cases above)
    Case("2d-wide-channels", 2, 2, 8, 3, (6, 6), (3, 3), padding=1),
    Case("2d-1x1", 2, 2, 3, 4, (6, 7), (1, 1)),
    Case("2d-kernel-equals-input", 2, 2, 3, 2, (5, 6), (5, 6), bias=False),
    Case("2d-batch0", 2, 0, 3, 4, (6, 6), (3, 3), padding=1),
    # larger than the rest, so that parallel loops split the work
    Case("2d-larger", 2, 3, 6, 6, (13, 12), (3, 3), stride=(1, 2), padding=(2, 1), groups=3),
    # kernels of width 3 at unit width stride take the direct algorithm's row passes
    # (three_tap_plane): a 5-row kernel (row by row), row stride and dilation (source rows not
    # consecutive), padding wider than the kernel's reach along the width, a plane narrower than
    # the kernel (every column at a row's ends), a valid 3x3 (outputs narrower than inputs)
    Case("2d-width3-tall-kernel", 2, 2, 3, 3, (9, 10), (5, 3), padding=(2, 1), groups=3),
    Case("2d-width3-row-stride-dilation", 2, 2, 4, 4, (11, 9), (3, 3), stride=(2, 1), padding=(1, 3),
         dilation=(2, 1), groups=4),
    Case("2d-width3-narrow-full", 2, 2, 2, 2, (6, 2), (3, 3), padding="full", groups=2),
    Case("2d-depthwise-3x3-valid", 2, 2, 3, 3, (8, 9), (3, 3), groups=3),
    # 16 channels per group on a 16x17 plane with padding "same" (asymmetric): "auto" takes
    # ATen's convolution, over an explicitly padded input
    Case("2d-auto-same", 2, 2, 32, 4, (16, 17), (3, 2), padding="same", groups=2),
    # 3-d
    Case("3d-anisotropic", 3, 2, 3, 4, (5, 6, 5), (2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1)),
    Case("3d-same-even-kernel", 3, 2, 2, 3, (4, 5, 6), (2, 3, 4), padding="same"),
    Case("3d-dilation-groups", 3, 2, 4, 4, (5, 5, 5), (3, 3, 3), padding=2, dilation=2, groups=2),
    Case("3d-full-stride", 3, 1, 3, 2, (4, 4, 5), (2, 2, 3), stride=2, padding="full"),
    Case("3d-depthwise", 3, 2, 3, 3, (4, 5, 4), (3, 2, 2), padding=(1, 0, 1), groups=3, bias=False),
    Case("3d-batch0", 3, 0, 2, 3, (4, 4, 4), (2, 2, 2)),
]
CASE_IDS = [c.id for c in CASES]


def check_against_torch(case, dtype, device, algorithm, flip=False):
    """Forward and all gradients (autograd .backward) of the library vs torch in float64."""
    x, w, b = case.tensors(dtype, device)
    if algorithm == "shifted" and not unit_stride(case):
        # the shifted algorithm exists for unit stride only and says so
        with pytest.raises(RuntimeError, match="shifted.*stride 1"):
            TCO_CONV[case.nd](x, w, b, **case.args, flip=flip, algorithm=algorithm)
        return
    # reference copies first, so that a kernel writing into its inputs cannot hide
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    out = TCO_CONV[case.nd](x, w, b, **case.args, flip=flip, algorithm=algorithm)
    ref = torch_reference(case.nd, xr, wr, br, **case.args, flip=flip)
    assert out.dtype == dtype and out.device.type == device
    assert_close_to_reference(out, ref, dtype, "forward")

    grad_out = randn(*ref.shape, dtype=dtype, device=device)
    out.backward(grad_out)
    ref.backward(as_reference(grad_out))
    assert_close_to_reference(x.grad, xr.grad, dtype, "grad input")
    assert_close_to_reference(w.grad, wr.grad, dtype, "grad weight")
    if b is not None:
        assert_close_to_reference(b.grad, br.grad, dtype, "grad bias")


# ---- forward and backward against torch ---------------------------------------------------------
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_torch_float64(case, algorithm, device):
    check_against_torch(case, torch.float64, device, algorithm)


# The low-precision dtypes are compared with the float64 result of the same rounded inputs.
@pytest.mark.parametrize("algorithm", ["direct", "im2col", "shifted"])
@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_torch_low_precision(case, dtype, algorithm, device):
    check_against_torch(case, dtype, device, algorithm)


# flip=True (true convolution), with every padding kind, against torch on the rotated kernel.
FLIP_CASES = [c for c in CASES if c.id in {
    "1d-same-even-kernel", "1d-same-even-kernel-dilation3", "1d-full-stride-dilation", "1d-basic",
    "2d-anisotropic", "2d-same-even-kernel", "2d-full-dilation", "2d-valid-stride-leftover",
    "2d-depthwise-same-even", "3d-same-even-kernel", "3d-full-stride", "3d-anisotropic",
}]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", FLIP_CASES, ids=[c.id for c in FLIP_CASES])
def test_flip_matches_torch(case, algorithm, device):
    check_against_torch(case, torch.float64, device, algorithm, flip=True)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", [c for c in CASES if c.padding != "same"],
                         ids=[c.id for c in CASES if c.padding != "same"])
def test_grad_functions_match_torch(case, dtype, device):
    """tco.grad.convNd_input / _weight vs torch.nn.grad with the same arguments.

    torch.nn.grad takes int/tuple padding only; 'valid' and 'full' are passed as their ints.
    """
    nd = case.nd
    x, w, _ = case.tensors(dtype, device, requires_grad=False)
    padding = explicit_pads(nd, case.padding, case.kernel, case.dilation, False)[0]
    args = dict(stride=case.stride, padding=padding, dilation=case.dilation, groups=case.groups)
    out_shape = TORCH_CONV[nd](as_reference(x), as_reference(w), None, **args).shape
    grad_out = randn(*out_shape, dtype=dtype, device=device)

    ref_gi = TORCH_GRAD_INPUT[nd](x.shape, as_reference(w), as_reference(grad_out), **args)
    ref_gw = TORCH_GRAD_WEIGHT[nd](as_reference(x), w.shape, as_reference(grad_out), **args)

    gi = TCO_GRAD_INPUT[nd](x.shape, w, grad_out, **args)
    assert gi.dtype == dtype and gi.device.type == device
    assert_close_to_reference(gi, ref_gi, dtype, "grad input")

    gw = TCO_GRAD_WEIGHT[nd](x, w.shape, grad_out, **args)
    assert gw.dtype == dtype and gw.device.type == device
    assert_close_to_reference(gw, ref_gw, dtype, "grad weight")


def test_grad_input_size_larger_than_output_covers(device):
    """With stride 2 an output of 4 comes from an input of 9 or of 10; input_size decides
    the size of the gradient, the uncovered last position getting zero."""
    w = randn(3, 2, 3, dtype=torch.float64, device=device)
    grad_out = randn(2, 3, 4, dtype=torch.float64, device=device)
    for length in (9, 10):
        gi = tco.grad.conv1d_input((2, 2, length), w, grad_out, stride=2)
        ref = torch.nn.grad.conv1d_input((2, 2, length), as_reference(w), as_reference(grad_out), stride=2)
        assert_close_to_reference(gi, ref, torch.float64, f"length {length}")


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unbatched_input(nd, device):
    """An input without a batch dimension (C, *spatial) works like torch's."""
    size = {1: (8,), 2: (6, 7), 3: (4, 5, 4)}[nd]
    x = randn(3, *size, device=device, requires_grad=True)
    w = randn(4, 3, *(2,) * nd, device=device, requires_grad=True)
    b = randn(4, device=device, requires_grad=True)
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    out = TCO_CONV[nd](x, w, b, padding="same")
    ref = TORCH_CONV[nd](xr, wr, br, padding="same")
    assert_close_to_reference(out, ref, torch.float64, "forward")
    grad_out = randn(*ref.shape, device=device)
    out.backward(grad_out)
    ref.backward(as_reference(grad_out))
    for name, a, r in [("input", x, xr), ("weight", w, wr), ("bias", b, br)]:
        assert_close_to_reference(a.grad, r.grad, torch.float64, f"grad {name}")


def test_F_is_functional():
    """tco.F is the functional namespace."""
    x, w = torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)
    torch.testing.assert_close(tco.F.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), rtol=1e-5, atol=1e-5)
    assert tco.F.conv1d is tco.functional.conv1d and tco.F.conv3d is tco.functional.conv3d


# ---- SciPy and NumPy ------------------------------------------------------------------------------
def dilate_kernel(k, dilation):
    """A kernel with dilation-1 zeros between its taps (SciPy has no dilation argument)."""
    if dilation == 1:
        return k
    shape = tuple(dilation * (s - 1) + 1 for s in k.shape)
    out = np.zeros(shape, dtype=k.dtype)
    out[tuple(slice(None, None, dilation) for _ in k.shape)] = k
    return out


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("kernel", [(3, 3), (2, 3), (4, 4), (1, 2)], ids=str)
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("flip", [False, True])
def test_conv2d_matches_scipy(flip, mode, kernel, dilation, device):
    """flip=True equals scipy.signal.convolve2d, flip=False correlate2d, for each mode, incl.
    where the even kernels put their extra pad; summed over input channels, plus bias."""
    x = randn(2, 2, 8, 9, device=device)
    w = randn(3, 2, *kernel, device=device)
    b = randn(3, device=device)
    out = tco.functional.conv2d(x, w, b, padding=mode, dilation=dilation, flip=flip)

    sp = scipy.signal.convolve2d if flip else scipy.signal.correlate2d
    xn, wn, bn = x.cpu().numpy(), w.cpu().numpy(), b.cpu().numpy()
    ref = np.stack([
        np.stack([sum(sp(xn[n, c], dilate_kernel(wn[o, c], dilation), mode=mode) for c in range(2)) + bn[o]
                  for o in range(3)])
        for n in range(2)
    ])
    assert_close_to_reference(out, torch.from_numpy(ref), torch.float64)


@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("flip", [False, True])
def test_conv1d_matches_numpy(flip, mode, k, dilation, device):
    """flip=True equals numpy.convolve for each mode; flip=False equals numpy.correlate for
    'valid' / 'full' and torch's F.conv1d(padding='same') for 'same' (numpy.correlate puts the
    extra pad of an even kernel on the other side)."""
    x = randn(11, device=device)
    w = randn(k, device=device)
    out = tco.functional.conv1d(x[None, None], w[None, None], padding=mode, dilation=dilation, flip=flip)[0, 0]
    xn, wn = x.cpu().numpy(), dilate_kernel(w.cpu().numpy(), dilation)
    if flip:
        ref = torch.from_numpy(np.convolve(xn, wn, mode))
    elif mode != "same":
        ref = torch.from_numpy(np.correlate(xn, wn, mode))
    else:
        ref = F.conv1d(x.cpu()[None, None], w.cpu()[None, None], padding="same", dilation=dilation)[0, 0]
    assert_close_to_reference(out, ref, torch.float64)


@pytest.mark.parametrize("kernel", [(2, 3, 2), (3, 3, 3)], ids=str)
@pytest.mark.parametrize("mode", ["valid", "same", "full"])
@pytest.mark.parametrize("flip", [False, True])
def test_conv3d_matches_scipy(flip, mode, kernel, device):
    """3-d against scipy.signal.convolve / correlate (n-d). scipy.signal.correlate's 'same'
    puts an even kernel's extra pad on the left, unlike torch, so flip=False 'same' with an
    even kernel is compared with torch's F.conv3d(padding='same') instead."""
    x = randn(5, 6, 5, device=device)
    w = randn(*kernel, device=device)
    out = tco.functional.conv3d(x[None, None], w[None, None], padding=mode, flip=flip)[0, 0]
    xn, wn = x.cpu().numpy(), w.cpu().numpy()
    if flip:
        ref = scipy.signal.convolve(xn, wn, mode=mode, method="direct")
    elif mode != "same" or all(k % 2 == 1 for k in kernel):
        ref = scipy.signal.correlate(xn, wn, mode=mode, method="direct")
    else:
        ref = F.conv3d(x.cpu()[None, None], w.cpu()[None, None], padding="same")[0, 0].numpy()
    assert_close_to_reference(out, torch.as_tensor(ref), torch.float64)


# ---- padding="same" with a stride: TensorFlow's rule ------------------------------------------------
def tensorflow_same_pads(size, kernel, stride, dilation):
    """TensorFlow's SAME padding (tf.nn.convolution's documentation): ceil(size / stride) outputs,
    the total pad split with the larger half after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("geometry", [(1, (9,), (4,), (2,), (1,)), (2, (7, 10), (3, 2), (2, 3), (1, 2)),
                                      (2, (8, 8), (5, 5), (3, 2), (2, 1)), (3, (5, 6, 7), (3, 3, 2), (2, 1, 3), (1, 1, 1))],
                         ids=["1d", "2d-odd", "2d-dilated", "3d"])
def test_same_padding_with_a_stride_is_tensorflows(geometry, flip, device):
    """padding='same' with a stride (torch refuses it) pads as TensorFlow and timm's Conv2dSame:
    ceil(size / stride) outputs; the larger half of the pad at the end, at the start for flip=True.
    The module gives the same, with every padding_mode, and traced by torch.fx."""
    nd, size, kernel, stride, dilation = geometry
    x = randn(2, 3, *size, device=device, requires_grad=True)
    w = randn(4, 3, *kernel, device=device, requires_grad=True)
    out = TCO_CONV[nd](x, w, None, stride, "same", dilation, flip=flip)
    pads = [tensorflow_same_pads(*g) for g in zip(size, kernel, stride, dilation)]
    if flip:
        pads = [(hi, lo) for lo, hi in pads]
    xr, wr = as_reference(x), as_reference(w)
    padded = F.pad(xr, [p for lo_hi in reversed(pads) for p in lo_hi])
    ref = TORCH_CONV[nd](padded, wr.flip(list(range(2, nd + 2))) if flip else wr, None, stride, 0, dilation)
    assert ref.shape[2:] == tuple(math.ceil(i / s) for i, s in zip(size, stride))
    assert_close_to_reference(out, ref, torch.float64)
    gy = randn(*ref.shape, device=device)
    gx, gw = torch.autograd.grad(out, (x, w), gy)
    rgx, rgw = torch.autograd.grad(ref, (xr, wr), as_reference(gy))
    assert_close_to_reference(gx, rgx, torch.float64)
    assert_close_to_reference(gw, rgw, torch.float64)
    for mode in ("zeros", "reflect", "circular"):
        module = TCO_MODULE[nd](3, 4, kernel, stride, "same", dilation, bias=False, padding_mode=mode, flip=flip,
                                device=device, dtype=torch.float64)
        with torch.no_grad():
            module.weight.copy_(w)
        mode_padded = F.pad(xr, [p for lo_hi in reversed(pads) for p in lo_hi],
                            mode="constant" if mode == "zeros" else mode)
        mode_ref = TORCH_CONV[nd](mode_padded, wr.flip(list(range(2, nd + 2))) if flip else wr, None, stride, 0,
                                  dilation)
        assert_close_to_reference(module(x), mode_ref, torch.float64, mode)
        # the pads depend on the input's size: torch.fx records them
        assert_close_to_reference(torch.fx.symbolic_trace(module)(x), mode_ref, torch.float64, f"{mode} traced")


# ---- Winograd ---------------------------------------------------------------------------------------
WINOGRAD = ["winograd", "winograd_2x2", "winograd_4x4", "winograd_6x6"]
# Where Winograd applies: 3, 1x3, 3x1 and 3x3 kernels at unit stride and dilation, with every
# padding (pads beyond the kernel, 'full', asymmetric) and planes that are not whole tiles.
WINOGRAD_CASES = [
    Case("w-3x3-pad1", 2, 2, 3, 4, (7, 9), (3, 3), padding=1),
    Case("w-3x3-valid-groups", 2, 2, 4, 6, (9, 8), (3, 3), groups=2),
    Case("w-3x3-asymmetric-pad", 2, 1, 3, 2, (6, 7), (3, 3), padding=(2, 0)),
    Case("w-3x3-full", 2, 2, 2, 3, (5, 6), (3, 3), padding="full"),
    # a plane smaller than one tile, pads beyond the kernel
    Case("w-3x3-tiny-pad3", 2, 1, 2, 3, (2, 2), (3, 3), padding=3, bias=False),
    Case("w-depthwise", 2, 2, 4, 4, (6, 6), (3, 3), padding=1, groups=4),
    Case("w-1x3", 2, 1, 3, 2, (5, 13), (1, 3), padding=(0, 1)),
    Case("w-3x1", 2, 2, 3, 2, (13, 4), (3, 1), padding=(1, 0)),
    Case("w-1d-same", 1, 2, 3, 4, (11,), (3,), padding="same"),
    Case("w-1d-full", 1, 1, 2, 3, (4,), (3,), padding="full"),
    # several blocks of tile rows per sample and per thread, and more channels than a vector
    Case("w-wide", 2, 5, 20, 24, (17, 30), (3, 3), padding=1, bias=False),
    # few channels on a large plane: the weight gradient runs Winograd too (on the CPU)
    Case("w-large-plane", 2, 1, 3, 5, (56, 58), (3, 3), padding=1),
    Case("w-3x1-large-plane", 2, 1, 2, 3, (58, 57), (3, 1), padding=(1, 0)),
]
WINOGRAD_IDS = [c.id for c in WINOGRAD_CASES]


@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize("case", WINOGRAD_CASES, ids=WINOGRAD_IDS)
def test_winograd_matches_torch(case, algorithm, device):
    """Forward and gradients (the input gradient through Winograd) against torch in float64."""
    check_against_torch(case, torch.float64, device, algorithm)


@pytest.mark.parametrize("algorithm", WINOGRAD)
@pytest.mark.parametrize("case", [c for c in WINOGRAD_CASES if "large-plane" in c.id], ids=lambda c: c.id)
def test_winograd_weight_gradient_kernels_match_torch(case, algorithm, device, monkeypatch):
    """The CPU's Winograd weight gradient (taken where it measured faster, or when the
    environment asks for it) against torch in float64, on the planes it is taken for; and the
    environment's choice is the one that runs."""
    monkeypatch.setenv("TCO_WINOGRAD_WEIGHT_GRADIENT", "winograd")
    check_against_torch(case, torch.float64, device, algorithm)
    if not runs_cuda_kernels(torch.empty(0, device=device)):
        x = torch.randn(1, case.cin, *case.size, requires_grad=True)
        w = torch.randn(case.cout, case.cin // case.groups, *case.kernel, requires_grad=True)

        def backward():
            TCO_CONV[case.nd](x, w, padding=case.padding, algorithm=algorithm).sum().backward()

        for choice, aten_runs in (("winograd", False), ("aten", True)):
            monkeypatch.setenv("TCO_WINOGRAD_WEIGHT_GRADIENT", choice)
            assert ("aten::convolution_backward" in _backward_ops(backward)) == aten_runs, choice


@pytest.mark.parametrize("algorithm", ["winograd_2x2", "winograd_4x4"])
@pytest.mark.parametrize("case", [c for c in WINOGRAD_CASES if c.id in {"w-1d-same", "w-3x3-asymmetric-pad"}],
                         ids=["w-1d-same", "w-3x3-asymmetric-pad"])
def test_winograd_flip_matches_torch(case, algorithm, device):
    check_against_torch(case, torch.float64, device, algorithm, flip=True)


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES, ids=str)
@pytest.mark.parametrize("case", WINOGRAD_CASES[:3] + WINOGRAD_CASES[-1:], ids=WINOGRAD_IDS[:3] + WINOGRAD_IDS[-1:])
def test_winograd_low_precision(case, dtype, device):
    """float16 and bfloat16 compute in float32 (the tolerances are those of their rounding)."""
    check_against_torch(case, dtype, device, "winograd")


@pytest.mark.parametrize("tile", sorted(tco.functional.conv.WINOGRAD_ERROR_BOUNDS))
@pytest.mark.parametrize("channels", [16, 256])
def test_winograd_float32_error_within_the_documented_bound(tile, channels, device):
    """The float32 error of each tile, max |result - exact| / max |exact| against a float64
    reference, for the forward and the input gradient, stays within the bound the docstring
    states; the 2x2 tile is the most accurate of the three."""
    bound = tco.functional.conv.WINOGRAD_ERROR_BOUNDS[tile]
    algorithm = f"winograd_{tile}x{tile}"
    torch.manual_seed(0)
    x = torch.randn(2, channels, 20, 20, device=device)
    w = torch.randn(channels, channels, 3, 3, device=device) / (3 * channels ** 0.5)
    gy = torch.randn(2, channels, 20, 20, device=device)

    def errors(algo):
        y = TCO_CONV[2](x, w, padding=1, algorithm=algo).double()
        gx = torch.ops.cnn_ops.conv_input_backward(gy, w, list(x.shape), [1, 1], [1, 1], [1, 1], 1, algo).double()
        ref = F.conv2d(x.double(), w.double(), padding=1)
        ref_gx = torch.nn.grad.conv2d_input(x.shape, w.double(), gy.double(), padding=1)
        return [((a - r).abs().max() / r.abs().max()).item() for a, r in ((y, ref), (gx, ref_gx))]

    ours = errors(algorithm)
    assert max(ours) <= bound, (algorithm, ours, bound)
    if tile == 2:
        assert max(ours) < max(errors("winograd_4x4")), ours


@pytest.mark.parametrize("tile", sorted(tco.functional.conv.WINOGRAD_ERROR_BOUNDS))
@pytest.mark.parametrize("channels", [(16, 16), (3, 5)], ids=str)
def test_winograd_weight_gradient_float32(channels, tile, device, monkeypatch):
    """The weight gradient on a plane large enough for Winograd's own (few channels), in float32
    (the vector GEMM kernels), within the tile's documented bound."""
    monkeypatch.setenv("TCO_WINOGRAD_WEIGHT_GRADIENT", "winograd")  # the kernels, on every CPU
    cin, cout = channels
    torch.manual_seed(0)
    x = torch.randn(2, cin, 56, 60, device=device)
    gy = torch.randn(2, cout, 56, 60, device=device)
    gw = torch.ops.cnn_ops.conv_weight_backward(gy, x, [cout, cin, 3, 3], [1, 1], [1, 1], [1, 1], 1,
                                                f"winograd_{tile}x{tile}")
    ref = torch.nn.grad.conv2d_weight(x.double(), (cout, cin, 3, 3), gy.double(), padding=1)
    error = ((gw.double() - ref).abs().max() / ref.abs().max()).item()
    assert error <= tco.functional.conv.WINOGRAD_ERROR_BOUNDS[tile], error


@pytest.mark.parametrize("algorithm", ["winograd_2x2", "winograd_4x4"])
def test_winograd_nan_and_inf_land_where_torch_puts_them(algorithm, device, monkeypatch):
    """Winograd's transforms mix a tile's inputs into all its outputs; a non-finite result is
    recomputed the direct way, so NaN and infinity (and their gradients) land as torch's."""
    monkeypatch.setenv("TCO_WINOGRAD_WEIGHT_GRADIENT", "winograd")
    x = randn(1, 2, 56, 58, device=device, requires_grad=True)  # a plane where the weight gradient is Winograd's
    w = randn(3, 2, 3, 3, device=device, requires_grad=True)
    with torch.no_grad():
        x[0, 0, 4, 4] = float("nan")
        x[0, 1, 1, 7] = float("inf")
    xr, wr = as_reference(x), as_reference(w)
    out = TCO_CONV[2](x, w, padding=1, algorithm=algorithm)
    ref = F.conv2d(xr, wr, padding=1)
    torch.testing.assert_close(out.cpu(), ref.detach().cpu(), equal_nan=True)
    gy = randn(*out.shape, device=device)
    gy[0, 2, 0, 0] = float("nan")
    gx, gw = torch.autograd.grad(out, (x, w), gy)
    rgx, rgw = torch.autograd.grad(ref, (xr, wr), as_reference(gy))
    torch.testing.assert_close(gx.cpu(), rgx.cpu(), equal_nan=True)
    torch.testing.assert_close(gw.cpu(), rgw.cpu(), equal_nan=True)


def test_winograd_refuses_what_it_does_not_compute():
    """Strided, dilated, 5x5 and 3-d convolutions with algorithm='winograd' are errors (use
    'auto'), on the public function and the raw op."""
    x, w = torch.randn(1, 2, 8, 8), torch.randn(3, 2, 3, 3)
    for kwargs in (dict(stride=2), dict(dilation=2)):
        with pytest.raises(RuntimeError, match="winograd.*stride 1, dilation 1"):
            tco.functional.conv2d(x, w, algorithm="winograd", **kwargs)
    with pytest.raises(RuntimeError, match=r"kernel \[1, 5, 5\]"):
        tco.functional.conv2d(x, torch.randn(3, 2, 5, 5), algorithm="winograd_2x2")
    with pytest.raises(RuntimeError, match="1-d or 2-d"):
        tco.functional.conv3d(torch.randn(1, 2, 4, 4, 4), torch.randn(3, 2, 3, 3, 3), algorithm="winograd")
    with pytest.raises(RuntimeError, match="winograd"):
        torch.ops.cnn_ops.conv_forward(x, w, None, [2, 2], [0, 0], [0, 0], [1, 1], 1, "winograd")


# ---- gradcheck / gradgradcheck ---------------------------------------------------------------------
# Small float64 geometries with every argument away from its default.
GRADCHECK_CASES = [
    Case("1d", 1, 2, 4, 2, (7,), (3,), stride=2, padding=1, dilation=2, groups=2),
    Case("2d", 2, 1, 2, 4, (5, 6), (2, 3), stride=(2, 1), padding=(1, 0), dilation=(1, 2), groups=2),
    Case("3d", 3, 1, 2, 2, (4, 4, 3), (2, 2, 2), stride=(1, 2, 1), padding=(1, 0, 1), dilation=(2, 1, 1)),
    # asymmetric padding through autograd
    Case("2d-same-even", 2, 1, 2, 2, (4, 5), (2, 3), padding="same", dilation=(3, 1)),
    Case("2d-unit-stride", 2, 2, 4, 2, (5, 4), (3, 2), padding=(2, 1), dilation=(1, 2), groups=2),
    Case("2d-3x3", 2, 2, 2, 3, (5, 6), (3, 3), padding=(1, 2)),
]


# the shifted algorithm only where it applies (unit stride)
GRADCHECK_PARAMS = [
    pytest.param(case, algorithm, id=f"{case.id}-{algorithm}")
    for case in GRADCHECK_CASES
    for algorithm in ("direct", "im2col", "shifted", "winograd")
    if (algorithm != "shifted" or unit_stride(case)) and (algorithm != "winograd" or case.id == "2d-3x3")
]


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("case, algorithm", GRADCHECK_PARAMS)
def test_gradcheck_and_gradgradcheck(case, flip, algorithm, device):
    x, w, b = case.tensors(torch.float64, device)

    def fn(x, w, b):
        return TCO_CONV[case.nd](x, w, b, **case.args, flip=flip, algorithm=algorithm)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("case", GRADCHECK_CASES[:3], ids=[c.id for c in GRADCHECK_CASES[:3]])
def test_gradcheck_grad_functions(case, device):
    """gradcheck through the public backward functions (their own autograd)."""
    nd = case.nd
    x, w, _ = case.tensors(torch.float64, device)
    args = case.args
    out_shape = TORCH_CONV[nd](as_reference(x), as_reference(w), None, **args).shape
    grad_out = randn(*out_shape, device=device, requires_grad=True)

    def grad_input(w, go):
        return TCO_GRAD_INPUT[nd](x.shape, w, go, **args)

    def grad_weight(x, go):
        return TCO_GRAD_WEIGHT[nd](x, w.shape, go, **args)

    assert torch.autograd.gradcheck(grad_input, (w, grad_out))
    assert torch.autograd.gradcheck(grad_weight, (x, grad_out))
    assert torch.autograd.gradgradcheck(grad_input, (w, grad_out))
    assert torch.autograd.gradgradcheck(grad_weight, (x, grad_out))


# ---- opcheck of the raw ops ------------------------------------------------------------------------
# (input shape, weight shape, has bias, stride, padding, padding_end, dilation, groups, algorithm)
RAW_CASES = [
    ((2, 3, 9), (4, 3, 3), True, [2], [1], [2], [1], 1, "direct"),
    ((2, 4, 6, 7), (6, 2, 2, 3), False, [1, 2], [0, 1], [1, 2], [2, 1], 2, "im2col"),
    ((1, 2, 4, 4, 5), (2, 2, 2, 2, 3), True, [1, 1, 2], [1, 0, 0], [0, 1, 1], [1, 1, 1], 1, "auto"),
    ((2, 4, 5, 6), (4, 2, 3, 2), True, [1, 1], [2, 0], [0, 1], [1, 2], 2, "shifted"),
]
RAW_IDS = ["1d", "2d-asymmetric-groups", "3d", "2d-shifted-asymmetric"]


def _raw_tensors(case, device):
    in_shape, w_shape, has_bias, stride, padding, padding_end, dilation, groups, algorithm = case
    x = randn(*in_shape, device=device, requires_grad=True)
    w = randn(*w_shape, device=device, requires_grad=True)
    b = randn(w_shape[0], device=device, requires_grad=True) if has_bias else None
    return x, w, b


@pytest.mark.parametrize("case", RAW_CASES, ids=RAW_IDS)
def test_opcheck_conv_forward(case, device):
    x, w, b = _raw_tensors(case, device)
    _, _, _, stride, padding, padding_end, dilation, groups, algorithm = case
    args = (x, w, b, stride, padding, padding_end, dilation, groups, algorithm)
    torch.library.opcheck(torch.ops.cnn_ops.conv_forward.default, args)
    # and the values: torch on the explicitly padded input
    pads = [p for i in reversed(range(len(stride))) for p in (padding[i], padding_end[i])]
    ref = TORCH_CONV[len(stride)](F.pad(as_reference(x), pads), as_reference(w), as_reference(b),
                                  stride, 0, dilation, groups)
    assert_close_to_reference(torch.ops.cnn_ops.conv_forward(*args), ref, torch.float64)


@pytest.mark.parametrize("case", RAW_CASES, ids=RAW_IDS)
def test_opcheck_conv_backward_ops(case, device):
    x, w, _ = _raw_tensors(case, device)
    _, _, _, stride, padding, padding_end, dilation, groups, algorithm = case
    nd = len(stride)
    out_shape = torch.ops.cnn_ops.conv_forward(x, w, None, stride, padding, padding_end, dilation, groups,
                                               algorithm).shape
    grad_out = randn(*out_shape, device=device, requires_grad=True)

    in_args = (grad_out, w, list(x.shape), stride, padding, dilation, groups, algorithm)
    torch.library.opcheck(torch.ops.cnn_ops.conv_input_backward.default, in_args)
    w_args = (grad_out, x, list(w.shape), stride, padding, dilation, groups, algorithm)
    torch.library.opcheck(torch.ops.cnn_ops.conv_weight_backward.default, w_args)

    # and the values: the gradients of torch's convolution of the explicitly padded input
    pads = [p for i in reversed(range(nd)) for p in (padding[i], padding_end[i])]
    xr, wr = as_reference(x), as_reference(w)
    ref = TORCH_CONV[nd](F.pad(xr, pads), wr, None, stride, 0, dilation, groups)
    ref.backward(as_reference(grad_out))
    assert_close_to_reference(torch.ops.cnn_ops.conv_input_backward(*in_args), xr.grad, torch.float64, "input")
    assert_close_to_reference(torch.ops.cnn_ops.conv_weight_backward(*w_args), wr.grad, torch.float64, "weight")


# ---- torch.compile -------------------------------------------------------------------------------
class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = tco.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = tco.nn.Conv2d(4, 6, 2, padding="same", algorithm="im2col", groups=2)
        self.conv3 = tco.nn.Conv2d(6, 2, 3, stride=2, padding_mode="reflect", padding=1, flip=True)

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


def _compiled_vs_eager(backend, dynamic, sizes):
    model = SmallNet().double()
    compiled = torch.compile(model, fullgraph=True, backend=backend, dynamic=dynamic)
    for size in sizes:
        x = randn(2, 3, *size, requires_grad=True)
        xc = x.detach().clone().requires_grad_()
        eager = model(x)
        eager.backward(torch.ones_like(eager))
        eager_grads = [x.grad] + [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        out = compiled(xc)
        out.backward(torch.ones_like(out))
        grads = [xc.grad] + [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        assert_close_to_reference(out, eager, torch.float64, "compiled forward")
        for g, e in zip(grads, eager_grads):
            assert_close_to_reference(g, e, torch.float64, "compiled backward")


def test_compile_fullgraph_matches_eager():
    """The default backend (inductor) compiles a model of tco.nn.Conv2d + relu without graph
    breaks; forward and backward equal eager."""
    torch._dynamo.reset()
    _compiled_vs_eager("inductor", None, [(8, 8)])


def test_compile_dynamic_shapes():
    """Symbolic shapes through the fake kernels: two input sizes, one dynamic graph."""
    torch._dynamo.reset()
    _compiled_vs_eager("aot_eager", True, [(8, 8), (7, 9)])


# ---- memory layouts and in-place safety ---------------------------------------------------------------
def _noncontiguous(layout, device):
    """(x, w, b) in float64 on `device`, laid out as `layout` says; values are what counts."""
    if layout == "transposed":  # input (N, H, W, C) permuted to NCHW; weight (I, O, kh, kw) transposed
        x = randn(2, 7, 8, 4, device=device).permute(0, 3, 1, 2)
        w = randn(4, 6, 3, 2, device=device).transpose(0, 1)
        b = randn(12, device=device)[::2]
    elif layout == "sliced":  # every other row, a column offset, every other channel
        x = randn(2, 8, 14, 9, device=device)[:, ::2, ::2, 1:]
        w = randn(6, 4, 3, 4, device=device)[..., 1:]
        b = randn(6, device=device)
    elif layout == "channels_last":
        x = randn(2, 4, 7, 8, device=device).to(memory_format=torch.channels_last)
        w = randn(6, 4, 3, 2, device=device).to(memory_format=torch.channels_last)
        b = randn(6, device=device)
    else:
        raise AssertionError(layout)
    return [t.requires_grad_() for t in (x, w, b)]


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("layout", ["transposed", "sliced", "channels_last"])
def test_noncontiguous_inputs(layout, algorithm, device):
    x, w, b = _noncontiguous(layout, device)
    assert not x.is_contiguous() and not w.is_contiguous()
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    out = tco.functional.conv2d(x, w, b, stride=(1, 2), padding=(1, 0), algorithm=algorithm)
    ref = F.conv2d(xr, wr, br, stride=(1, 2), padding=(1, 0))
    assert_close_to_reference(out, ref, torch.float64, "forward")
    # a non-contiguous grad_output too
    grad_out = randn(*reversed(ref.shape), device=device).permute(3, 2, 1, 0)
    out.backward(grad_out)
    ref.backward(as_reference(grad_out))
    for name, a, r in [("input", x, xr), ("weight", w, wr), ("bias", b, br)]:
        assert_close_to_reference(a.grad, r.grad, torch.float64, f"grad {name}")


def _memory_format(t):
    for fmt in (torch.contiguous_format, torch.channels_last, torch.channels_last_3d):
        if t.is_contiguous(memory_format=fmt):
            return fmt
    return None


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("operands", ["input", "weight", "both", "3d"])
def test_channels_last_layout_as_torch(operands, algorithm, device):
    """A channels-last input or weight gives a channels-last output and gradients, as torch's
    convolution; the values match torch's. 2-d: asymmetric padding ('same' with an even kernel).
    3-d: torch's float64 path on the CPU returns contiguous results whatever the layout (its
    oneDNN path, float32, keeps channels_last_3d as ours does), so only ours is checked."""
    nd = 3 if operands == "3d" else 2
    fmt = torch.channels_last_3d if nd == 3 else torch.channels_last
    x = randn(2, 6, *([7] * nd), device=device)
    w = randn(8, 6, *([3 if nd == 3 else 2] * nd), device=device)
    if operands in ("input", "both", "3d"):
        x = x.to(memory_format=fmt)
    if operands in ("weight", "both"):
        w = w.to(memory_format=fmt)
    x.requires_grad_()
    w.requires_grad_()
    xr, wr = as_reference(x), as_reference(w)
    xt, wt = xr.detach().to(memory_format=_memory_format(x)).requires_grad_(), wr.detach().to(
        memory_format=_memory_format(w)).requires_grad_()
    out = TCO_CONV[nd](x, w, None, padding="same", algorithm=algorithm)
    ref = TORCH_CONV[nd](xt, wt, None, padding="same")
    assert_close_to_reference(out, ref, torch.float64, "forward")
    gy = randn(*ref.shape, device=device).to(memory_format=fmt)
    gx, gw = torch.autograd.grad(out, (x, w), gy)
    rgx, rgw = torch.autograd.grad(ref, (xt, wt), as_reference(gy).to(memory_format=fmt))
    results, torch_results = (out, gx, gw), (ref, rgx, rgw)
    assert [_memory_format(t) for t in results] == [fmt] * 3
    if nd == 2:
        assert [_memory_format(t) for t in torch_results] == [fmt] * 3
    assert_close_to_reference(gx, rgx, torch.float64, "grad input")
    assert_close_to_reference(gw, rgw, torch.float64, "grad weight")


@pytest.mark.parametrize("nd", [1, 3])
def test_channels_last_3d_and_transposed_1d(nd, device):
    """Non-contiguous layouts in the other ranks: channels_last_3d, and a (N, L, C) input."""
    if nd == 3:
        x = randn(2, 3, 4, 5, 4, device=device).to(memory_format=torch.channels_last_3d).requires_grad_()
        w = randn(4, 3, 2, 3, 2, device=device).to(memory_format=torch.channels_last_3d).requires_grad_()
    else:
        x = randn(2, 9, 3, device=device).transpose(1, 2).requires_grad_()
        w = randn(3, 4, 3, device=device).transpose(0, 1).requires_grad_()
    xr, wr = as_reference(x), as_reference(w)
    out = TCO_CONV[nd](x, w, None, padding="same")
    ref = TORCH_CONV[nd](xr, wr, None, padding="same")
    assert_close_to_reference(out, ref, torch.float64, "forward")
    out.sum().backward()  # the sum's grad_output is an expanded (stride 0) tensor
    ref.sum().backward()
    assert_close_to_reference(x.grad, xr.grad, torch.float64, "grad input")
    assert_close_to_reference(w.grad, wr.grad, torch.float64, "grad weight")


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
def test_expanded_grad_output(algorithm, device):
    """out.sum().backward() hands the backward an expanded grad_output (all strides 0)."""
    case = CASES[CASE_IDS.index("2d-groups-stride")]
    x, w, b = case.tensors(torch.float64, device)
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    out = tco.functional.conv2d(x, w, b, **case.args, algorithm=algorithm)
    ref = F.conv2d(xr, wr, br, **case.args)
    (out.sum() * 2).backward()
    (ref.sum() * 2).backward()
    for name, a, r in [("input", x, xr), ("weight", w, wr), ("bias", b, br)]:
        assert_close_to_reference(a.grad, r.grad, torch.float64, f"grad {name}")


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("needs_grad", ["input", "weight", "bias", "weight+bias"])
def test_partial_requires_grad(needs_grad, algorithm, device):
    """Only some arguments require grad (a frozen layer, a fixed input): the backward computes
    just those, with the right values."""
    case = CASES[CASE_IDS.index("2d-anisotropic")]
    x, w, b = case.tensors(torch.float64, device, requires_grad=False)
    wanted = needs_grad.split("+")
    for name, t in [("input", x), ("weight", w), ("bias", b)]:
        t.requires_grad_(name in wanted)
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    out = tco.functional.conv2d(x, w, b, **case.args, algorithm=algorithm)
    ref = F.conv2d(xr, wr, br, **case.args)
    grad_out = randn(*ref.shape, device=device)
    out.backward(grad_out)
    ref.backward(as_reference(grad_out))
    for name, a, r in [("input", x, xr), ("weight", w, wr), ("bias", b, br)]:
        if name in wanted:
            assert_close_to_reference(a.grad, r.grad, torch.float64, f"grad {name}")
        else:
            assert a.grad is None, f"{name} got a gradient"


@pytest.mark.parametrize("algorithm", ["direct", "im2col"])
@pytest.mark.parametrize("flip", [False, True])
def test_inputs_not_modified(flip, algorithm, device):
    """Forward, backward and the tco.grad functions leave their arguments untouched."""
    x, w, b = _noncontiguous("sliced", device)
    grad_out_shape = F.conv2d(x.detach(), w.detach(), None, padding="same").shape
    grad_out = randn(*grad_out_shape, device=device)
    saved = [t.detach().clone() for t in (x, w, b, grad_out)]
    out = tco.functional.conv2d(x, w, b, padding="same", flip=flip, algorithm=algorithm)
    out.backward(grad_out)
    tco.grad.conv2d_input(x.shape, w.detach(), grad_out, padding=1)
    tco.grad.conv2d_weight(x.detach(), w.shape, grad_out, padding=1)
    for name, before, after in zip(["input", "weight", "bias", "grad_output"], saved, (x, w, b, grad_out)):
        assert torch.equal(before, after.detach()), f"{name} was modified"


# ---- modules ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_module_state_dict_both_ways(nd, bias):
    """Same parameter names and shapes as torch.nn.ConvNd; load_state_dict works both ways and
    the outputs then agree."""
    kwargs = dict(stride=2, padding=1, dilation=1, groups=2, bias=bias, dtype=torch.float64)
    ours = TCO_MODULE[nd](4, 6, 3, **kwargs)
    theirs = TORCH_MODULE[nd](4, 6, 3, **kwargs)
    assert isinstance(ours, torch.nn.Module)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (n1, p1), (n2, p2) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert n1 == n2 and p1.shape == p2.shape and p1.dtype == p2.dtype
    assert (ours.bias is None) == (not bias)

    x = randn(2, 4, *(7,) * nd)
    ours.load_state_dict(theirs.state_dict())  # torch -> tco
    assert_close_to_reference(ours(x), theirs(x), torch.float64, "after torch -> tco")
    fresh = TORCH_MODULE[nd](4, 6, 3, **kwargs)
    ours2 = TCO_MODULE[nd](4, 6, 3, **kwargs)
    fresh.load_state_dict(ours2.state_dict())  # tco -> torch
    assert_close_to_reference(ours2(x), fresh(x), torch.float64, "after tco -> torch")


# (kernel, stride, padding, dilation) per padding mode; 'same' with an even kernel is asymmetric
MODULE_GEOMETRIES = [(3, 2, 2, 1), (2, 1, "same", 1), (3, 1, "same", 2), (2, 1, "valid", 1)]


@pytest.mark.parametrize("geometry", MODULE_GEOMETRIES, ids=str)
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_module_padding_modes_match_torch(nd, padding_mode, geometry, device):
    kernel, stride, padding, dilation = geometry
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, padding_mode=padding_mode,
                  device=device, dtype=torch.float64)
    ours = TCO_MODULE[nd](3, 4, kernel, **kwargs)
    theirs = TORCH_MODULE[nd](3, 4, kernel, **kwargs)
    assert ours.weight.device.type == device and ours.weight.dtype == torch.float64
    ours.load_state_dict(theirs.state_dict())
    x = randn(2, 3, *(6, 7, 5)[:nd], device=device)
    out, ref = ours(x), theirs(x)
    assert_close_to_reference(out, ref, torch.float64, "forward")
    out.square().sum().backward()
    ref.square().sum().backward()
    assert_close_to_reference(ours.weight.grad, theirs.weight.grad, torch.float64, "grad weight")
    assert_close_to_reference(ours.bias.grad, theirs.bias.grad, torch.float64, "grad bias")


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "circular"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_module_flip_and_algorithm(algorithm, padding_mode, device):
    """flip=True in a module rotates the kernel, and its 'same' puts the larger pad first for
    every padding_mode (as the functional form); algorithm= does not change the values."""
    ours = tco.nn.Conv2d(3, 4, (2, 3), padding="same", flip=True, algorithm=algorithm,
                         padding_mode=padding_mode, device=device, dtype=torch.float64)
    x = randn(2, 3, 6, 7, device=device)
    # kernel (2, 3): pads (1, 0) in H with the larger one first, (1, 1) in W
    mode = "constant" if padding_mode == "zeros" else padding_mode
    xr = F.pad(as_reference(x), [1, 1, 1, 0], mode=mode)
    ref = torch_reference(2, xr, as_reference(ours.weight), as_reference(ours.bias), 1, "valid", 1, 1, flip=True)
    assert_close_to_reference(ours(x), ref, torch.float64)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_module_default_init(nd, groups):
    """Kaiming-uniform like torch: weights and bias uniform within +-1/sqrt(fan_in), with
    fan_in = in_channels/groups * prod(kernel); the same bound as torch's own module."""
    ours = TCO_MODULE[nd](6, 48, 3, groups=groups)
    theirs = TORCH_MODULE[nd](6, 48, 3, groups=groups)
    bound = 1.0 / (6 // groups * 3**nd) ** 0.5
    for name, mod in [("tco", ours), ("torch", theirs)]:
        w, b = mod.weight.detach(), mod.bias.detach()
        assert w.abs().max() <= bound and b.abs().max() <= bound, name
        # spread over the whole interval, as a uniform distribution
        assert w.abs().max() > 0.9 * bound and b.abs().max() > 0.5 * bound, name
        assert abs(w.std().item() - bound / 3**0.5) < 0.15 * bound / 3**0.5, name
        assert abs(w.mean().item()) < 0.15 * bound, name
    assert ours.weight.shape == theirs.weight.shape


def test_module_repr():
    """repr shows torch's arguments, plus algorithm and flip when set."""
    kwargs = dict(stride=2, padding=1, dilation=2, groups=2, bias=False, padding_mode="reflect")
    ours = tco.nn.Conv2d(4, 6, (3, 2), **kwargs, algorithm="im2col", flip=True)
    theirs = torch.nn.Conv2d(4, 6, (3, 2), **kwargs)
    text = repr(ours)
    assert text.startswith("Conv2d(")
    assert theirs.extra_repr() in text
    assert "im2col" in text and "flip" in text
    plain = repr(tco.nn.Conv1d(3, 5, 4))
    assert "Conv1d(3, 5, kernel_size=(4,)" in plain


# ---- bad input ---------------------------------------------------------------------------------------
def _bad_cases():
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(6, 4, 3, 3)
    conv2d = tco.functional.conv2d
    go = torch.randn(2, 6, 4, 4)
    return [
        ("input-rank-5d", lambda: conv2d(x[..., None], w), r"input|dim"),
        ("input-rank-2d", lambda: conv2d(x[0, 0], w), r"input|dim"),
        ("conv1d-4d-input", lambda: tco.functional.conv1d(x, w[..., 0]), r"input|dim"),
        ("weight-rank", lambda: conv2d(x, w[..., 0]), r"weight|dim"),
        ("channel-mismatch", lambda: conv2d(x, torch.randn(6, 3, 3, 3)), r"channel"),
        ("groups-not-dividing-in-channels", lambda: conv2d(x, torch.randn(6, 1, 3, 3), groups=3), r"groups|divisible"),
        ("groups-not-dividing-out-channels", lambda: conv2d(x, torch.randn(5, 2, 3, 3), groups=2), r"groups|out_channels"),
        ("groups-zero", lambda: conv2d(x, w, groups=0), r"groups"),
        ("kernel-larger-than-padded-input", lambda: conv2d(x, torch.randn(6, 4, 7, 3)), r"kernel|size"),
        ("dilated-kernel-larger-than-input", lambda: conv2d(x, w, dilation=3), r"kernel|dilation|size"),
        ("stride-zero", lambda: conv2d(x, w, stride=0), r"stride"),
        ("stride-negative", lambda: conv2d(x, w, stride=(1, -1)), r"stride"),
        ("stride-wrong-length", lambda: conv2d(x, w, stride=(1, 1, 1)), r"stride"),
        ("dilation-zero", lambda: conv2d(x, w, dilation=0), r"dilation"),
        ("padding-negative", lambda: conv2d(x, w, padding=-1), r"padding"),
        ("padding-wrong-length", lambda: conv2d(x, w, padding=(1, 1, 1)), r"padding"),
        ("padding-negative-tuple", lambda: conv2d(x, w, padding=(1, -2)), r"padding"),
        ("unknown-padding-string", lambda: conv2d(x, w, padding="circular"), r"padding|same|valid|full"),
        ("dtype-input-weight", lambda: conv2d(x, w.double()), r"dtype|weight"),
        ("dtype-bias", lambda: conv2d(x, w, torch.randn(6, dtype=torch.float64)), r"bias"),
        ("bias-shape", lambda: conv2d(x, w, torch.randn(5)), r"bias"),
        ("integer-input", lambda: conv2d(x.long(), w.long()), r"dtype|input|float"),
        ("unknown-algorithm", lambda: conv2d(x, w, algorithm="fft"), r"algorithm"),
        ("module-unknown-algorithm", lambda: tco.nn.Conv2d(4, 6, 3, algorithm="fft")(x), r"algorithm"),
        ("grad-input-stride-zero", lambda: tco.grad.conv2d_input(x.shape, w, go, stride=0), r"stride"),
        ("grad-input-channel-mismatch", lambda: tco.grad.conv2d_input(x.shape, w, go[:, :5]), r"grad_output|channel"),
        ("grad-weight-dilation-zero", lambda: tco.grad.conv2d_weight(x, w.shape, go, dilation=0), r"dilation"),
        ("grad-weight-dtype", lambda: tco.grad.conv2d_weight(x.double(), w.shape, go), r"dtype|input|grad_output"),
        ("raw-unknown-algorithm",
         lambda: torch.ops.cnn_ops.conv_forward(x, w, None, [1, 1], [0, 0], [0, 0], [1, 1], 1, "fast"), r"algorithm"),
        ("raw-negative-padding-end",
         lambda: torch.ops.cnn_ops.conv_forward(x, w, None, [1, 1], [0, 0], [0, -1], [1, 1], 1, "direct"), r"padding"),
    ]


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("call,pattern", [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES])
def test_bad_input_raises(call, pattern):
    with pytest.raises(BAD_INPUT, match=f"(?i){pattern}"):
        call()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")
def test_device_mismatch_raises():
    x = torch.randn(2, 4, 6, 6, device="cuda")
    with pytest.raises(BAD_INPUT, match=r"(?i)device|cuda|cpu"):
        tco.functional.conv2d(x, torch.randn(6, 4, 3, 3))
    with pytest.raises(BAD_INPUT, match=r"(?i)device|cuda|cpu"):
        tco.functional.conv2d(x, torch.randn(6, 4, 3, 3, device="cuda"), torch.randn(6))


# ---- the C++ entry of plain calls ----------------------------------------------------------
class _Logged(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


class _Subclass(torch.Tensor):
    pass


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_plain_and_general_calls_agree(nd):
    """A plain call (tensors, ints) runs the op from C++ (torch_cnn_ops._C.conv); other argument
    forms, tensor subclasses and torch-function modes take the Python path that normalises the
    arguments. Both give torch's values and the same gradients."""
    from torch_cnn_ops import _C

    torch.manual_seed(nd)
    x = torch.randn(2, 4, *(7,) * nd, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 2, *(3,) * nd, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    fn = getattr(tco.F, f"conv{nd}d")
    expected = getattr(F, f"conv{nd}d")(x, w, b, 2, 1, 1, 2)
    gy = torch.randn_like(expected)
    want = torch.autograd.grad(expected, (x, w, b), gy)

    plain = _C.conv(nd, x, w, b, 2, 1, (1,) * nd, 2, False, "auto")
    assert isinstance(plain, torch.Tensor)
    general = {
        "plain": lambda: fn(x, w, b, 2, 1, [1] * nd, 2),
        "numpy-ints": lambda: fn(x, w, b, np.int64(2), (np.int32(1),) * nd, 1, np.int64(2)),
        "one-entry-list": lambda: fn(x, w, b, [2], [1], [1], 2),
        "subclass": lambda: fn(x.as_subclass(_Subclass), w, b, 2, 1, 1, 2),
        "unbatched": lambda: torch.stack([fn(x[0], w, b, 2, 1, 1, 2), fn(x[1], w, b, 2, 1, 1, 2)]),
    }
    refused = {
        "numpy-ints": (x, w, b, np.int64(2), 1, 1, 2),
        "one-entry-list": (x, w, b, [2], [1], [1], 2),
        "subclass": (x.as_subclass(_Subclass), w, b, 2, 1, 1, 2),
        "unbatched": (x[0], w, b, 2, 1, 1, 2),
    }
    if nd == 1:
        del refused["one-entry-list"]  # one entry is the whole tuple
    for name, args in refused.items():
        assert _C.conv(nd, *args, False, "auto") is NotImplemented, name
    with _Logged():
        assert _C.conv(nd, x, w, b, 2, 1, 1, 2, False, "auto") is NotImplemented
        in_mode = fn(x, w, b, 2, 1, 1, 2)
    for name, call in [*general.items(), ("mode", lambda: in_mode)]:
        out = call()
        torch.testing.assert_close(out.as_subclass(torch.Tensor), expected, msg=name)
        got = torch.autograd.grad(out, (x, w, b), gy)
        for g, e in zip(got, want):
            torch.testing.assert_close(g.as_subclass(torch.Tensor), e, msg=name)
    torch.testing.assert_close(plain, expected)


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect"])
def test_module_plain_and_general_calls_agree(padding_mode):
    """A Conv2d module runs the functional's body directly for plain inputs, and the fx leaf (the
    functional) for tensor subclasses, inside a torch-function mode and under symbolic tracing:
    all give torch's module's values and gradients."""
    torch.manual_seed(0)
    ref = torch.nn.Conv2d(4, 6, 3, padding=1, padding_mode=padding_mode).double()
    ours = tco.nn.Conv2d(4, 6, 3, padding=1, padding_mode=padding_mode).double()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64, requires_grad=True)
    expected = ref(x)
    gy = torch.randn_like(expected)
    want = torch.autograd.grad(expected, (x, ref.weight, ref.bias), gy)
    with _Logged():
        in_mode = ours(x)
    traced = torch.fx.symbolic_trace(ours)
    for name, out in [("plain", ours(x)), ("subclass", ours(x.as_subclass(_Subclass))), ("mode", in_mode),
                      ("traced", traced(x))]:
        torch.testing.assert_close(out.as_subclass(torch.Tensor), expected, msg=name)
        got = torch.autograd.grad(out, (x, ours.weight, ours.bias), gy)
        for g, e in zip(got, want):
            torch.testing.assert_close(g.as_subclass(torch.Tensor), e, msg=name)


# ---- both gradients through ATen in one call ---------------------------------------------------
class _SeenOps(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def _backward_ops(run):
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    return [e.name for e in prof.events()]


@pytest.mark.parametrize("padding", [1, "same", (0, 2)], ids=["one-pad", "same-even-kernel", "pads-per-dimension"])
def test_aten_gradients_in_one_call(padding):
    """Where the wanted gradients of a convolution run ATen's, plain eager backward computes them
    (and the bias's) in one convolution_backward call; with create_graph, in torch.func and under
    dispatch modes the backward ops run (they are what double backward and traces need). All give
    torch's values."""
    torch.manual_seed(0)
    k = 4 if padding == "same" else 3
    x = torch.randn(2, 6, 9, 10, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 6, k, k, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    pads = {1: (1, 1), "same": "same", (0, 2): (0, 2)}[padding]
    expected = F.conv2d(x, w, b, 1, pads)
    gy = torch.randn_like(expected)
    want = torch.autograd.grad(expected, (x, w, b), gy)

    def grads(create_graph=False):
        return torch.autograd.grad(tco.F.conv2d(x, w, b, 1, pads, algorithm="aten"), (x, w, b), gy,
                                   create_graph=create_graph)

    one_call = padding != "same"  # an even kernel's 'same' pads the input explicitly: two calls
    names = _backward_ops(grads)
    assert ("cnn_ops::conv_input_backward" not in names) == one_call, names
    # the weight's and the bias's gradients alone (a first layer's): one call too
    weight_and_bias = lambda: torch.autograd.grad(  # noqa: E731
        tco.F.conv2d(x.detach(), w, b, 1, pads, algorithm="aten"), (w, b), gy)
    assert ("cnn_ops::conv_weight_backward" not in _backward_ops(weight_and_bias)) == one_call
    for g, e in zip(weight_and_bias(), want[1:]):
        torch.testing.assert_close(g, e)
    assert "cnn_ops::conv_input_backward" in _backward_ops(lambda: grads(create_graph=True))
    for got in (grads(), grads(create_graph=True), torch.func.grad(
            lambda x, w, b: (tco.F.conv2d(x, w, b, 1, pads, algorithm="aten") * gy).sum(), argnums=(0, 1, 2))(x, w, b)):
        for g, e in zip(got, want):
            torch.testing.assert_close(g, e)
    mode = _SeenOps()
    with mode:
        got = grads()
    assert "cnn_ops.conv_input_backward" in mode.names and "cnn_ops.conv_weight_backward" in mode.names, mode.names
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e)
