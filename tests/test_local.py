"""Tests of the local family: tco.functional.{tiled,unshared}_conv{1,2}d, tco.nn.TiledConv{1,2}d,
tco.nn.UnsharedConv{1,2}d (LocallyConnected{1,2}d) and the raw ops torch.ops.cnn_ops.local_forward /
local_input_backward / local_weight_backward.

The reference is independent of the library: a plain loop over output positions written here
(explicit padding, one window and one kernel per position), in float64 on the CPU, differentiated
by autograd; plus identities with torch.nn.functional.conv{1,2}d.
"""

import math
from dataclasses import dataclass
from typing import Any, Tuple

import pytest
import torch
import torch.nn.functional as F
from conftest import (LOW_PRECISION_DTYPES, as_reference, as_tuple, assert_close_to_reference, explicit_pads,
                      randn)

import torch_cnn_ops as tco
from torch_cnn_ops.benchmark.local import peak_extra_bytes, unshared_einsum

BAD_INPUT = (RuntimeError, ValueError)
TILED = {1: tco.functional.tiled_conv1d, 2: tco.functional.tiled_conv2d}
UNSHARED = {1: tco.functional.unshared_conv1d, 2: tco.functional.unshared_conv2d}
TORCH_CONV = {1: F.conv1d, 2: F.conv2d}


def output_size(nd, in_size, kernel, stride, padding, dilation):
    lo, hi = explicit_pads(nd, padding, kernel, dilation)
    s, d = as_tuple(stride, nd), as_tuple(dilation, nd)
    return tuple((i + lo[k] + hi[k] - d[k] * (kernel[k] - 1) - 1) // s[k] + 1 for k, i in enumerate(in_size))


def loop_reference(nd, x, w, b, stride, padding, dilation):
    """The locally connected convolution as a loop over output positions.

    x: (N, C, *in), w: (*grid, O, C, *kernel) with position p using w[p % grid], b: None, (O,)
    or (O, *out). Differentiable (float64 autograd gives the reference gradients)."""
    grid = tuple(w.shape[:nd])
    kernel = tuple(w.shape[nd + 2:])
    s, d = as_tuple(stride, nd), as_tuple(dilation, nd)
    lo, hi = explicit_pads(nd, padding, kernel, dilation)
    xp = F.pad(x, [p for i in reversed(range(nd)) for p in (lo[i], hi[i])])
    out = output_size(nd, tuple(x.shape[2:]), kernel, stride, padding, dilation)
    columns = []
    for pos in _positions(out):
        window = xp[(slice(None), slice(None)) + tuple(
            slice(pos[k] * s[k], pos[k] * s[k] + d[k] * (kernel[k] - 1) + 1, d[k]) for k in range(nd))]
        kernel_w = w[tuple(pos[k] % grid[k] for k in range(nd))]  # (O, C, *kernel)
        columns.append(window.reshape(x.shape[0], -1) @ kernel_w.reshape(kernel_w.shape[0], -1).t())
    y = torch.stack(columns, dim=-1).reshape(x.shape[0], w.shape[nd], *out)
    if b is not None:
        y = y + (b.view(1, -1, *([1] * nd)) if b.dim() == 1 else b.unsqueeze(0))
    return y


def _positions(out):
    if len(out) == 1:
        return [(i,) for i in range(out[0])]
    return [(i, j) for i in range(out[0]) for j in range(out[1])]


@dataclass
class Case:
    """One geometry: kind (tiled/unshared), input, kernel, tile, arguments, bias kind."""

    id: str
    nd: int
    kind: str
    input_shape: Tuple[int, ...]
    out_channels: int
    kernel: Tuple[int, ...]
    tile: Any = None  # tiled only
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    bias: str = "channel"  # "none", "channel", "position" (unshared only)

    def out_size(self):
        return output_size(self.nd, self.input_shape[2:], self.kernel, self.stride, self.padding, self.dilation)

    def tensors(self, dtype=torch.float64, device="cpu", requires_grad=False):
        c = self.input_shape[1]
        grid = as_tuple(self.tile, self.nd) if self.kind == "tiled" else self.out_size()
        x = randn(*self.input_shape, dtype=dtype, device=device, requires_grad=requires_grad)
        w = randn(*grid, self.out_channels, c, *self.kernel, dtype=dtype, device=device, requires_grad=requires_grad)
        b = None
        if self.bias == "channel":
            b = randn(self.out_channels, dtype=dtype, device=device, requires_grad=requires_grad)
        elif self.bias == "position":
            b = randn(self.out_channels, *self.out_size(), dtype=dtype, device=device, requires_grad=requires_grad)
        return x, w, b

    def fn(self):
        return (TILED if self.kind == "tiled" else UNSHARED)[self.nd]

    def run(self, x, w, b):
        return self.fn()(x, w, b, self.stride, self.padding, self.dilation)


CASES = [
    # tiled
    Case("tiled2d-basic", 2, "tiled", (2, 3, 7, 8), 4, (3, 3), tile=2),
    Case("tiled2d-s2-p1-d2", 2, "tiled", (2, 3, 11, 9), 5, (3, 2), tile=(3, 2), stride=2, padding=1, dilation=(2, 1)),
    Case("tiled2d-same-even", 2, "tiled", (1, 2, 6, 7), 3, (4, 2), tile=(2, 3), padding="same", bias="none"),
    Case("tiled2d-full", 2, "tiled", (2, 2, 5, 4), 3, (2, 3), tile=2, padding="full"),
    Case("tiled2d-tile-gt-out", 2, "tiled", (2, 2, 5, 5), 3, (3, 3), tile=(4, 5)),
    Case("tiled2d-tile-odd", 2, "tiled", (3, 2, 10, 10), 2, (3, 3), tile=(3, 4), stride=(1, 2), padding=(2, 1)),
    Case("tiled1d", 1, "tiled", (3, 4, 17), 5, (3,), tile=3, stride=2, padding=2, dilation=2),
    Case("tiled1d-valid", 1, "tiled", (2, 3, 9), 2, (4,), tile=2, padding="valid"),
    # unshared
    Case("unshared2d-basic", 2, "unshared", (2, 3, 6, 7), 4, (3, 3), bias="position"),
    Case("unshared2d-s2-p1-d2", 2, "unshared", (3, 3, 11, 9), 5, (3, 2), stride=2, padding=1, dilation=(2, 1)),
    Case("unshared2d-same", 2, "unshared", (2, 2, 5, 6), 3, (2, 3), padding="same", bias="channel"),
    Case("unshared2d-full", 2, "unshared", (1, 2, 4, 3), 2, (3, 2), padding="full", bias="none"),
    Case("unshared1d", 1, "unshared", (4, 3, 13), 4, (3,), stride=2, padding=1, dilation=2, bias="position"),
    Case("unshared1d-k1", 1, "unshared", (2, 5, 6), 3, (1,), bias="channel"),
]
IDS = [c.id for c in CASES]


# ---- values against the loop reference ---------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_and_gradients_match_loop_reference(case, device):
    x, w, b = case.tensors(device=device, requires_grad=True)
    y = case.run(x, w, b)
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    ref = loop_reference(case.nd, xr, wr, br, case.stride, case.padding, case.dilation)
    assert_close_to_reference(y, ref, msg="output")
    gy = randn(*ref.shape, device=device)
    y.backward(gy)
    ref.backward(as_reference(gy))
    assert_close_to_reference(x.grad, xr.grad, msg="grad input")
    assert_close_to_reference(w.grad, wr.grad, msg="grad weight")
    if b is not None:
        assert_close_to_reference(b.grad, br.grad, msg="grad bias")


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES, ids=str)
@pytest.mark.parametrize("case", [CASES[1], CASES[5], CASES[9], CASES[12]], ids=lambda c: c.id)
def test_low_precision_accumulates_in_float32(case, dtype, device):
    # Inputs rounded to dtype; the reference uses exactly those values in float64, so the only
    # difference allowed is the final rounding (accumulation in float32).
    x, w, b = case.tensors(dtype=dtype, device=device, requires_grad=True)
    y = case.run(x, w, b)
    assert y.dtype == dtype
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    ref = loop_reference(case.nd, xr, wr, br, case.stride, case.padding, case.dilation)
    assert_close_to_reference(y, ref, msg="output")
    gy = randn(*ref.shape, dtype=dtype, device=device)
    y.backward(gy)
    ref.backward(as_reference(gy))
    assert_close_to_reference(x.grad, xr.grad, msg="grad input")
    assert_close_to_reference(w.grad, wr.grad, msg="grad weight")


def test_larger_batch_and_channels_than_one_block(device):
    # Enough samples, channels and positions that the kernels cut the work into several blocks
    # of positions and samples (the by-positions path) and of columns (the by-cells path).
    x = randn(40, 24, 12, 12, device=device)
    for grid in [(2, 2), (12, 12)]:
        w = randn(*grid, 6, 24, 3, 3, device=device)
        ref = loop_reference(2, as_reference(x), as_reference(w), None, 1, 1, 1)
        assert_close_to_reference(tco.F.tiled_conv2d(x, w, padding=1), ref, msg=f"grid {grid}")


def test_weight_gradient_summed_over_many_terms(device):
    # One kernel for all 144 positions of 3 samples: 432 (sample, position) terms per weight,
    # which the CUDA kernel sums with a block per weight rather than a thread.
    x = randn(3, 2, 12, 12, device=device, requires_grad=True)
    w = randn(1, 1, 3, 2, 3, 3, device=device, requires_grad=True)
    y = tco.F.tiled_conv2d(x, w, padding=1)
    xr, wr = as_reference(x), as_reference(w)
    ref = loop_reference(2, xr, wr, None, 1, 1, 1)
    gy = randn(*ref.shape, device=device)
    y.backward(gy)
    ref.backward(as_reference(gy))
    assert_close_to_reference(w.grad, wr.grad, msg="grad weight")
    assert_close_to_reference(x.grad, xr.grad, msg="grad input")


# ---- identities ------------------------------------------------------------------------------
@pytest.mark.parametrize("nd", [1, 2])
def test_tile_size_one_is_convolution(nd, device):
    x = randn(2, 3, *([9] * nd), device=device)
    w = randn(4, 3, *([3] * nd), device=device)
    b = randn(4, device=device)
    ours = TILED[nd](x, w.unsqueeze(0) if nd == 1 else w[None, None], b, stride=2, padding=1, dilation=2)
    ref = TORCH_CONV[nd](as_reference(x), as_reference(w), as_reference(b), stride=2, padding=1, dilation=2)
    assert_close_to_reference(ours, ref)


@pytest.mark.parametrize("nd", [1, 2])
def test_unshared_with_one_kernel_everywhere_is_convolution(nd, device):
    x = randn(3, 2, *([8] * nd), device=device)
    w = randn(5, 2, *([3] * nd), device=device)
    out = output_size(nd, x.shape[2:], w.shape[2:], 1, "same", 1)
    w_everywhere = w.expand(*out, *w.shape).contiguous()
    ours = UNSHARED[nd](x, w_everywhere, None, padding="same")
    ref = TORCH_CONV[nd](as_reference(x), as_reference(w), None, padding="same")
    assert_close_to_reference(ours, ref)


def test_tiled_with_tile_equal_to_output_is_unshared(device):
    x = randn(2, 3, 9, 8, device=device)
    out = output_size(2, (9, 8), (3, 3), 2, 1, 1)
    w = randn(*out, 4, 3, 3, 3, device=device)
    b = randn(4, device=device)
    tiled = tco.F.tiled_conv2d(x, w, b, stride=2, padding=1)
    unshared = tco.F.unshared_conv2d(x, w, b, stride=2, padding=1)
    torch.testing.assert_close(tiled, unshared, rtol=0, atol=0)
    assert_close_to_reference(unshared, loop_reference(2, as_reference(x), as_reference(w), as_reference(b), 2, 1, 1))


def test_unbatched_input(device):
    x = randn(3, 7, 7, device=device)
    w = randn(2, 2, 4, 3, 3, 3, device=device)
    y = tco.F.tiled_conv2d(x, w, padding=1)
    ref = loop_reference(2, as_reference(x).unsqueeze(0), as_reference(w), None, 1, 1, 1).squeeze(0)
    assert_close_to_reference(y, ref)


# ---- gradcheck and gradgradcheck -------------------------------------------------------------
GRAD_CASES = [
    Case("tiled2d", 2, "tiled", (2, 2, 6, 5), 2, (3, 2), tile=(2, 3), stride=(2, 1), padding=1, dilation=(1, 2)),
    Case("tiled1d", 1, "tiled", (2, 2, 9), 3, (3,), tile=2, stride=2, padding=2, dilation=2),
    Case("unshared2d", 2, "unshared", (2, 2, 6, 5), 2, (2, 3), stride=2, padding=(1, 2), dilation=(2, 1),
         bias="position"),
    Case("unshared1d", 1, "unshared", (2, 3, 8), 2, (3,), stride=2, padding=1, dilation=2, bias="channel"),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: c.id)
def test_gradcheck_and_gradgradcheck(case, device):
    x, w, b = case.tensors(device=device, requires_grad=True)
    inputs = (x, w, b) if b is not None else (x, w)

    def fn(*args):
        return case.run(*args) if len(args) == 3 else case.run(*args, None)

    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)


# ---- opcheck ---------------------------------------------------------------------------------
RAW_CASES = [
    # (input shape, weight shape, bias shape, stride, padding, padding_end, dilation)
    ((2, 3, 7, 6), (2, 2, 4, 3, 3, 3), (4,), [1, 1], [1, 1], [1, 1], [1, 1]),  # tiled 2x2
    ((2, 3, 9, 8), (5, 7, 2, 3, 3, 2), (2, 5, 7), [2, 1], [1, 0], [1, 1], [1, 2]),  # unshared, asymmetric pad
    ((3, 2, 11), (3, 2, 2, 3), None, [2], [2], [1], [2]),  # tiled 1d
]


def _raw(case, device):
    xs, ws, bs, stride, padding, padding_end, dilation = case
    x = randn(*xs, device=device, requires_grad=True)
    w = randn(*ws, device=device, requires_grad=True)
    b = randn(*bs, device=device, requires_grad=True) if bs else None
    return (x, w, b, stride, padding, padding_end, dilation)


@pytest.mark.parametrize("case", RAW_CASES, ids=["tiled2d", "unshared2d", "tiled1d"])
def test_opcheck_every_op(case, device):
    args = _raw(case, device)
    x, w, b, stride, padding, padding_end, dilation = args
    ops = torch.ops.cnn_ops
    torch.library.opcheck(ops.local_forward.default, args)
    y = ops.local_forward(*args)
    gy = randn(*y.shape, device=device, requires_grad=True)
    in_args = (gy, w, list(x.shape), stride, padding, dilation)
    w_args = (gy, x, list(w.shape), stride, padding, dilation)
    torch.library.opcheck(ops.local_input_backward.default, in_args)
    torch.library.opcheck(ops.local_weight_backward.default, w_args)
    # and the values, against the loop on the explicitly padded input
    nd = len(stride)
    pads = [p for i in reversed(range(nd)) for p in (padding[i], padding_end[i])]
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    ref = loop_reference(nd, F.pad(xr, pads), wr, br, stride, 0, dilation)
    assert_close_to_reference(y, ref, torch.float64, "forward")
    ref.backward(as_reference(gy))
    assert_close_to_reference(ops.local_input_backward(*in_args), xr.grad, torch.float64, "input")
    assert_close_to_reference(ops.local_weight_backward(*w_args), wr.grad, torch.float64, "weight")


# ---- torch.compile ---------------------------------------------------------------------------
class SmallLocalNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.tiled = tco.nn.TiledConv2d(2, 4, 3, tile_size=2, padding=1)
        self.unshared = tco.nn.LocallyConnected2d(4, 3, 3, input_size=(8, 8), stride=2)
        self.tiled1d = tco.nn.TiledConv1d(3, 2, 2, tile_size=3)

    def forward(self, x):
        y = torch.relu(self.unshared(torch.relu(self.tiled(x))))
        return self.tiled1d(y.flatten(2))


# torch.compile traces nothing while a dispatch mode is active, and the emulation is one.
_COMPILE_NOT_EMULATED = pytest.mark.cuda_device("torch.compile does not trace under the emulation's dispatch mode")


@_COMPILE_NOT_EMULATED
def test_torch_compile_fullgraph(device):
    model = SmallLocalNet().to(device, torch.float64)
    x = randn(2, 2, 8, 8, device=device, requires_grad=True)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    (g_eager,) = torch.autograd.grad(eager.sum(), x)
    (g_compiled,) = torch.autograd.grad(compiled(x).sum(), x)
    torch.testing.assert_close(g_compiled, g_eager)


@_COMPILE_NOT_EMULATED
def test_torch_compile_default_backend(device):
    model = SmallLocalNet().to(device)
    x = randn(2, 2, 8, 8, dtype=torch.float32, device=device)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


# ---- modules ---------------------------------------------------------------------------------
def test_unshared_module_shapes_bias_and_alias():
    assert tco.nn.LocallyConnected2d is tco.nn.UnsharedConv2d
    assert tco.nn.LocallyConnected1d is tco.nn.UnsharedConv1d
    m = tco.nn.UnsharedConv2d(3, 5, (3, 2), input_size=(9, 8), stride=2, padding=1)
    assert m.output_size == (5, 5)
    assert m.weight.shape == (5, 5, 5, 3, 3, 2)
    assert m.bias.shape == (5, 5, 5)
    assert set(m.state_dict()) == {"weight", "bias"}
    x = randn(2, 3, 9, 8, dtype=torch.float32)
    ref = loop_reference(2, as_reference(x), as_reference(m.weight), as_reference(m.bias), 2, 1, 1)
    assert_close_to_reference(m(x), ref)
    assert tco.nn.UnsharedConv1d(2, 3, 3, input_size=10, bias=False).bias is None


@pytest.mark.parametrize("unshared", [False, True], ids=["tiled", "unshared"])
def test_strided_same_is_tensorflow_padding(unshared):
    """padding='same' with a stride, TensorFlow's rule (as conv2d here): ceil(i / s) outputs, a total
    pad of max((ceil(i / s) - 1) s + d (k - 1) + 1 - i, 0), the larger half at the end."""
    size, stride, dilation, kernel = (9, 8), (2, 3), (1, 2), (3, 2)
    out = [-(-i // s) for i, s in zip(size, stride)]
    totals = [max((o - 1) * s + d * (k - 1) + 1 - i, 0) for o, s, d, k, i in zip(out, stride, dilation, kernel, size)]
    assert totals == [2, 1]  # uneven pads in the second dimension
    pads = [totals[1] // 2, totals[1] - totals[1] // 2, totals[0] // 2, totals[0] - totals[0] // 2]  # F.pad's order
    x = randn(2, 3, *size, dtype=torch.float32)
    w, b = randn(*(out if unshared else (2, 2)), 4, 3, *kernel, dtype=torch.float32), randn(4, dtype=torch.float32)
    fn = UNSHARED[2] if unshared else TILED[2]
    ref = loop_reference(2, F.pad(as_reference(x), pads), as_reference(w), as_reference(b), stride, 0, dilation)
    assert_close_to_reference(fn(x, w, b, stride=stride, padding="same", dilation=dilation), ref)
    module = (tco.nn.UnsharedConv2d(3, 4, kernel, input_size=size, stride=stride, padding="same", dilation=dilation)
              if unshared else
              tco.nn.TiledConv2d(3, 4, kernel, tile_size=2, stride=stride, padding="same", dilation=dilation))
    with torch.no_grad():
        module.weight.copy_(w)
        module.bias.copy_(b.view(4, *[1] * (module.bias.dim() - 1)).expand_as(module.bias))  # per position when unshared
    assert_close_to_reference(module(x), ref)


def test_tiled_module_values():
    m = tco.nn.TiledConv2d(3, 4, 3, tile_size=(2, 3), stride=1, padding="same", dilation=2)
    assert m.weight.shape == (2, 3, 4, 3, 3, 3) and m.bias.shape == (4,)
    x = randn(2, 3, 10, 9, dtype=torch.float32)
    ref = loop_reference(2, as_reference(x), as_reference(m.weight), as_reference(m.bias), 1, "same", 2)
    assert_close_to_reference(m(x), ref)
    m1 = tco.nn.TiledConv1d(2, 3, 4, tile_size=3, padding="full", bias=False)
    x1 = randn(2, 2, 11, dtype=torch.float32)
    assert_close_to_reference(m1(x1), loop_reference(1, as_reference(x1), as_reference(m1.weight), None, 1, "full", 1))


@pytest.mark.parametrize("make", [
    lambda: tco.nn.TiledConv2d(16, 64, (3, 5), tile_size=2),
    lambda: tco.nn.UnsharedConv2d(16, 64, (3, 5), input_size=(6, 6)),
], ids=["tiled", "unshared"])
def test_initialisation_like_conv2d(make):
    # torch.nn.Conv2d: kaiming-uniform(a=sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with
    # fan_in = in_channels * prod(kernel); bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    m = make()
    bound = 1 / math.sqrt(16 * 3 * 5)
    torch_conv = torch.nn.Conv2d(16, 64, (3, 5))
    for p in (torch_conv.weight, torch_conv.bias, m.weight, m.bias):
        assert p.abs().max() <= bound + 1e-7
        assert p.abs().max() > 0.8 * bound  # uniform over the whole range, not a smaller one
    # the weight has thousands of entries: its spread is that of U(-bound, bound)
    assert abs(m.weight.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    assert abs(m.weight.mean().item()) < 0.05 * bound


# ---- bad input ---------------------------------------------------------------------------------
def test_wrong_number_of_positions():
    x = randn(2, 3, 8, 8)
    w = randn(7, 8, 4, 3, 3, 3)  # the output is 6x6 (no padding)
    # a shape error, raised as torch's convolution raises those: RuntimeError
    with pytest.raises(RuntimeError, match=r"unshared_conv2d\(\): weight of shape \(7, 8, 4, 3, 3, 3\).*\(6, 6\)"):
        tco.F.unshared_conv2d(x, w)
    with pytest.raises(RuntimeError, match=r"output positions|\(6, 6\)"):
        tco.F.unshared_conv1d(randn(2, 3, 8), randn(5, 4, 3, 3))


def _raw_local_forward_2d(x, w):
    """The raw op with no bias, stride 1, no padding and dilation 1."""
    return torch.ops.cnn_ops.local_forward(x, w, None, [1, 1], [0, 0], [0, 0], [1, 1])


def test_channel_mismatch():
    with pytest.raises(RuntimeError, match=r"input has 3 channels.*in_channels = 2"):
        tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(2, 2, 4, 2, 3, 3))
    with pytest.raises(RuntimeError, match=r"in_channels"):
        tco.F.unshared_conv2d(randn(2, 3, 8, 8), randn(6, 6, 4, 2, 3, 3))
    # the raw op checks it too, on every device
    with pytest.raises(RuntimeError, match=r"expects 2 input channels.*input has 3"):
        _raw_local_forward_2d(randn(2, 3, 8, 8), randn(2, 2, 4, 2, 3, 3))


def test_tile_size_below_one():
    with pytest.raises(ValueError, match=r"tile_size must be at least 1"):
        tco.nn.TiledConv2d(3, 4, 3, tile_size=(0, 2))
    with pytest.raises(RuntimeError, match=r"tile size.*at least 1"):
        tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(0, 2, 4, 3, 3, 3))
    with pytest.raises(RuntimeError, match=r"at least 1"):
        _raw_local_forward_2d(randn(2, 3, 8, 8), randn(0, 2, 4, 3, 3, 3))


def test_module_wrong_input_size():
    m = tco.nn.UnsharedConv2d(3, 4, 3, input_size=(8, 8))
    with pytest.raises(ValueError, match=r"expected an input of spatial size \(8, 8\).*\(2, 3, 9, 8\)"):
        m(randn(2, 3, 9, 8, dtype=torch.float32))
    with pytest.raises(ValueError, match=r"gives no output"):
        tco.nn.UnsharedConv2d(3, 4, 5, input_size=(3, 3))


@pytest.mark.parametrize("call, match", [
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(2, 4, 3, 3, 3)), r"weight must have 6 dimensions"),
    (lambda: tco.F.tiled_conv2d(randn(3, 8, 8, 2, 1), randn(2, 2, 4, 3, 3, 3)), r"expected a 3-d .* or 4-d"),
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(2, 2, 4, 3, 3, 3), randn(5)), r"bias must have shape"),
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(2, 2, 4, 3, 3, 3), randn(4, 6, 6)), r"bias must have shape"),
    (lambda: tco.F.unshared_conv2d(randn(2, 3, 8, 8), randn(6, 6, 4, 3, 3, 3), randn(4, 6, 5)),
     r"bias must have shape \(4,\) or \(4, 6, 6\)"),
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(2, 2, 4, 3, 3, 3), stride=0), r"stride must be at least 1"),
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(2, 2, 4, 3, 3, 3), padding="bogus"), r"padding must be"),
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 2, 2), randn(2, 2, 4, 3, 3, 3)), r"kernel is larger than the padded input"),
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 8, 8), randn(2, 2, 4, 3, 3, 3, dtype=torch.float32)), r"same dtype"),
    (lambda: tco.F.tiled_conv2d(randn(2, 3, 8, 8).int(), randn(2, 2, 4, 3, 3, 3).int()), r"must be float32"),
    (lambda: torch.ops.cnn_ops.local_input_backward(randn(2, 4, 6, 6), randn(2, 2, 4, 3, 3, 3), [2, 3, 4, 4],
                                                    [1, 1], [0, 0], [1, 1]), r"too large for an input of size"),
    (lambda: torch.ops.cnn_ops.local_weight_backward(randn(2, 5, 6, 6), randn(2, 3, 8, 8), [2, 2, 4, 3, 3, 3],
                                                     [1, 1], [0, 0], [1, 1]), r"does not match batch 2 and out_channels 4"),
], ids=["weight-dims", "input-dims", "tiled-bias", "tiled-position-bias", "unshared-bias", "stride", "padding-str",
        "kernel-too-large", "dtype-mismatch", "int-dtype", "input-backward-size",
        "weight-backward-channels"])
def test_bad_input_raises_clear_errors(call, match):
    with pytest.raises(BAD_INPUT, match=match):
        call()


# ---- memory ----------------------------------------------------------------------------------
def test_forward_backward_memory_is_bounded():
    # Unshared convolution with a 28 MB weight: the extra memory of forward + backward (the
    # output and the three gradients included) stays within a small multiple of
    # input + weight + output, while the unfold + einsum workaround needs more than that.
    x = torch.randn(16, 32, 16, 16, requires_grad=True)
    w = (0.1 * torch.randn(16, 16, 32, 32, 3, 3)).requires_grad_()
    b = torch.randn(32, 16, 16, requires_grad=True)
    sizes = 4 * (x.numel() + w.numel() + 16 * 32 * 16 * 16)

    def ours():
        tco.F.unshared_conv2d(x, w, b, padding=1).sum().backward()

    def workaround():
        unshared_einsum(x, w, b, 3, 1).sum().backward()

    for fn in (ours, workaround):
        fn()  # warm-up
        x.grad = w.grad = b.grad = None
    peak = peak_extra_bytes(ours)
    x.grad = w.grad = b.grad = None
    assert peak is not None, "peak memory is read from Linux's /proc/self"
    assert peak <= 1.5 * sizes, f"peak extra {peak / 1e6:.1f} MB for input+weight+output {sizes / 1e6:.1f} MB"
    workaround_peak = peak_extra_bytes(workaround)
    assert workaround_peak > peak
