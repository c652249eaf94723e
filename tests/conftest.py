"""Shared machinery of the test suite: devices, seeding, random inputs and tolerances.

Every family's tests reuse these helpers, so that they all run on the same devices and
compare against references with the same, dtype-based tolerances.
"""

import math
import os

import pytest
import torch

import cuda_emulation

# ---- devices ------------------------------------------------------------------------------
# The "cuda" cases of the `device` fixture run on the GPU where one is visible. Without one they
# run the same CUDA kernels through the host emulation (tests/cuda_emulation): CPU tensors, with
# every cnn_ops call sent to the emulated kernels (TCO_CUDA_EMULATION=0 turns that off, and the
# cases are skipped). Tests of what only a device has (CUDA autocast, tensors on two devices)
# are marked `requires_cuda` and skipped without a GPU: the only skip this suite allows.
HAS_CUDA = torch.cuda.is_available()
EMULATE_CUDA = not HAS_CUDA and os.environ.get("TCO_CUDA_EMULATION", "1") != "0"
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device visible")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not (HAS_CUDA or EMULATE_CUDA), reason="no CUDA device visible and the emulation is off"))]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device a value test runs on: "cpu", and "cuda" (a GPU, or its host emulation, under
    which the test's tensors live on the CPU and `device` is "cpu")."""
    if request.param == "cuda" and EMULATE_CUDA:
        marker = request.node.get_closest_marker("cuda_device")
        if marker is not None:
            pytest.skip(f"not emulated: {marker.args[0]}")
        cuda_emulation.load()
        with cuda_emulation.EmulatedCuda():
            yield "cpu"
    else:
        yield request.param


def runs_cuda_kernels(t):
    """Whether our ops compute on `t` with the CUDA kernels (on a GPU, or emulated)."""
    return t.is_cuda or cuda_emulation.active()


@pytest.fixture(autouse=True)
def _seed():
    """A fixed seed for every test, so that failures reproduce."""
    torch.manual_seed(0)
    yield


# ---- dtypes and tolerances ----------------------------------------------------------------
FLOAT_DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
LOW_PRECISION_DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# (rtol, atol) per dtype of the tensor under test, for a comparison against a float64
# reference computed from the very same (already rounded) inputs. The absolute tolerance is
# multiplied by the largest magnitude of the reference (at least 1), so it stands for "a few
# units in the last place of the result's scale": float32 and the half types accumulate in
# float32 and round once at the end, which these bounds allow with a margin; a wrong index or a
# missing term is off by O(1) relative to the scale and fails by orders of magnitude.
_TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2 * 2.0**-7, 2 * 2.0**-7),  # 2 eps of bfloat16
    torch.float16: (2 * 2.0**-10, 2 * 2.0**-10),  # 2 eps of float16
}


def tolerances(dtype):
    """(rtol, atol) for results of `dtype` compared with a float64 reference (atol before scaling)."""
    return _TOLERANCES[dtype]


def assert_close_to_reference(actual, expected, dtype=None, msg=""):
    """Checks `actual` (of `dtype`, any device) against a reference computed in float64.

    `dtype` defaults to `actual.dtype`; it picks the tolerances. Shapes must match exactly.
    """
    assert actual is not None, f"{msg}: got None"
    dtype = actual.dtype if dtype is None else dtype
    actual64 = actual.detach().to("cpu", torch.float64)
    expected64 = expected.detach().to("cpu", torch.float64)
    assert actual64.shape == expected64.shape, f"{msg}: shape {tuple(actual64.shape)} != {tuple(expected64.shape)}"
    rtol, atol = tolerances(dtype)
    scale = max(1.0, expected64.abs().max().item()) if expected64.numel() else 1.0
    torch.testing.assert_close(
        actual64, expected64, rtol=rtol, atol=atol * scale, msg=lambda m: f"{msg} ({dtype}): {m}"
    )


# ---- torch versions ------------------------------------------------------------------------
# The library supports torch from torch_cnn_ops.MIN_TORCH on, and its twins follow the rules of
# the newest torch tested (2.13) on every supported one. Where an older torch decides otherwise,
# the tests that compare with torch compare with torch 2.13's rule, written out here.
def _torch_computes(call):
    try:
        call()
        return True
    except Exception:
        return False


# torch 2.13 normalizes with eps=0 outside training (the running statistics; 2.11 and 2.12
# refuse eps <= 0 in both modes) ...
TORCH_BATCH_NORM_EVAL_EPS_ZERO = _torch_computes(lambda: torch.nn.functional.batch_norm(
    torch.ones(2, 1), torch.zeros(1), torch.ones(1), eps=0.0))
# ... and takes lp_pool's infinite norm_type to the largest (smallest) |x| of the window (2.11
# and 2.12: the power formula, which gives 1).
TORCH_LP_POOL_INFINITE = torch.nn.functional.lp_pool1d(
    torch.tensor([[[2.0, -3.0]]]), float("inf"), 2).item() == 3.0


class _Functional213:
    """torch.nn.functional under torch 2.13's rules: the installed torch's functions, except
    where the installed torch predates a rule above; then that rule, as torch 2.13 computes it."""

    def __getattr__(self, name):
        return getattr(torch.nn.functional, name)

    @staticmethod
    def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1,
                   eps=1e-5):
        if TORCH_BATCH_NORM_EVAL_EPS_ZERO or training or eps != 0 or running_mean is None or running_var is None:
            return torch.nn.functional.batch_norm(input, running_mean, running_var, weight, bias, training,
                                                  momentum, eps)
        shape = (1, -1) + (1,) * (input.dim() - 2)
        out = (input - running_mean.view(shape)) * running_var.rsqrt().view(shape)
        if weight is not None:
            out = out * weight.view(shape)
        return out if bias is None else out + bias.view(shape)

    @staticmethod
    def _lp_pool(nd, input, norm_type, kernel_size, stride=None, ceil_mode=False):
        max_pool = getattr(torch.nn.functional, f"max_pool{nd}d")
        if not TORCH_LP_POOL_INFINITE and isinstance(norm_type, (int, float)) and math.isinf(norm_type):
            sign = 1 if norm_type > 0 else -1
            return sign * max_pool(sign * input.abs(), kernel_size, stride, 0, 1, ceil_mode)
        return getattr(torch.nn.functional, f"lp_pool{nd}d")(input, norm_type, kernel_size, stride, ceil_mode)

    def lp_pool1d(self, *args, **kwargs):
        return self._lp_pool(1, *args, **kwargs)

    def lp_pool2d(self, *args, **kwargs):
        return self._lp_pool(2, *args, **kwargs)

    def lp_pool3d(self, *args, **kwargs):
        return self._lp_pool(3, *args, **kwargs)


TF213 = _Functional213()


# ---- random inputs ------------------------------------------------------------------------
def randn(*shape, dtype=torch.float64, device="cpu", requires_grad=False):
    """Normal random values drawn in float64 on the CPU (so that they are the same on every
    device), rounded to `dtype` and moved to `device`."""
    t = torch.randn(*shape, dtype=torch.float64).to(dtype).to(device)
    return t.requires_grad_(requires_grad)


def as_reference(t, requires_grad=None):
    """A float64 CPU copy of `t` (a leaf) for computing references; keeps `requires_grad` unless told."""
    if t is None:
        return None
    rg = t.requires_grad if requires_grad is None else requires_grad
    return t.detach().to("cpu", torch.float64).clone().requires_grad_(rg)


# ---- references built from torch ops, for the ops torch lacks ------------------------------------
# Differentiable compositions of torch's own operators (autograd, forward AD and torch.func all
# work through them), used to check our gradients, tangents and batching where no twin exists.
def ref_min_pool(torch_max_pool, x, *args, **kwargs):
    """Min pooling as ``-max_pool(-x)`` with torch's max pooling (window or adaptive)."""
    return -torch_max_pool(-x, *args, **kwargs)


def ref_kmax_pool(x, k, dim=-1):
    """The k largest values along ``dim`` in their original order: topk, sort the indices, gather."""
    idx = x.topk(k, dim).indices.sort(dim).values
    return x.gather(dim, idx)


def ref_channel_max_pool(x, pool_size, dim=1):
    """Maxout: the maximum over groups of ``pool_size`` consecutive entries along ``dim``."""
    dim = dim % x.dim()
    return x.unflatten(dim, (x.shape[dim] // pool_size, pool_size)).amax(dim + 1)


def ref_gaussian_pool2d(x, kernel_size, stride, padding, sigma):
    """The depthwise convolution with the Gaussian kernel (distance to the window's centre),
    normalised to sum 1."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size

    def taps(k):
        d = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
        return torch.exp(-d * d / (2 * sigma**2))

    kernel = torch.outer(taps(kh), taps(kw))
    kernel = (kernel / kernel.sum()).to(x.dtype).to(x.device)
    c = x.shape[1]
    return torch.nn.functional.conv2d(x, kernel.expand(c, 1, kh, kw), stride=stride, padding=padding, groups=c)


def ref_stochastic_pool2d_eval(x, kernel_size, stride=None):
    """Eval stochastic pooling: ``sum(x^2) / sum(x)`` per window (the average's divisor cancels)."""
    return torch.nn.functional.avg_pool2d(x * x, kernel_size, stride) / torch.nn.functional.avg_pool2d(
        x, kernel_size, stride)


def ref_stochastic_pool2d_train(x, kernel_size, stride, seed):
    """Training stochastic pooling with the uniforms ``torch.rand(out_shape, generator=seeded)``:
    per window the first element (row-major) whose running sum exceeds ``uniform * window sum``."""
    kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    n, c, h, w = x.shape
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    uniform = torch.rand((n, c, oh, ow), generator=torch.Generator().manual_seed(seed), dtype=x.dtype)
    windows = torch.nn.functional.unfold(x, (kh, kw), stride=(sh, sw)).view(n, c, kh * kw, oh * ow)
    with torch.no_grad():
        running = windows.cumsum(2)
        above = running > (uniform.view(n, c, 1, oh * ow).to(x.device) * running[:, :, -1:])
        pick = above.to(torch.int64).argmax(2, keepdim=True)
    return windows.gather(2, pick).view(n, c, oh, ow)


def as_tuple(v, nd):
    """An int argument repeated nd times, a sequence as a tuple."""
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd


def explicit_pads(nd, padding, kernel, dilation, flip=False):
    """(leading, trailing) pads per dimension of an int / tuple / 'valid' / 'same' / 'full' padding
    (DESIGN.md 3): 'same' puts the larger half at the end, or at the start when flip=True (true
    convolution); dilation an int or a tuple."""
    total = [d * (k - 1) for k, d in zip(kernel, as_tuple(dilation, nd))]
    if padding == "valid":
        return [0] * nd, [0] * nd
    if padding == "full":
        return total, total
    if padding == "same":
        lo, hi = [t // 2 for t in total], [t - t // 2 for t in total]
        return (hi, lo) if flip else (lo, hi)
    p = list(as_tuple(padding, nd))
    return p, p


def ref_unshared_conv(x, w, b=None, stride=1, padding=0, dilation=1):
    """Unshared (locally connected) 1-d / 2-d convolution as unfold + einsum.

    x: (N, C, *in), w: (*out, O, C, *kernel), b: None, (O,) or (O, *out)."""
    nd = x.dim() - 2
    kernel = tuple(w.shape[nd + 2:])
    stride = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    lo, hi = explicit_pads(nd, padding, kernel, dilation)
    xp = torch.nn.functional.pad(x, [p for i in reversed(range(nd)) for p in (lo[i], hi[i])])
    if nd == 1:
        xp, kernel, stride, dilation = xp.unsqueeze(2), (1, *kernel), (1, *stride), (1, *dilation)
    cols = torch.nn.functional.unfold(xp, kernel, dilation=dilation, stride=stride)  # (N, C * K, L)
    out_size = tuple(w.shape[:nd])
    weight = w.reshape(-1, w.shape[nd], cols.shape[1])  # (L, O, C * K)
    y = torch.einsum("nkl,lok->nol", cols, weight).reshape(x.shape[0], w.shape[nd], *out_size)
    if b is not None:
        y = y + (b.view(1, -1, *([1] * nd)) if b.dim() == 1 else b.unsqueeze(0))
    return y


def ref_tiled_conv(x, w, b=None, stride=1, padding=0, dilation=1):
    """Tiled convolution: the per-position weights ``w[p % tile]`` gathered from the tile, then
    the unshared reference."""
    nd = x.dim() - 2
    kernel = tuple(w.shape[nd + 2:])
    stride_t = (stride,) * nd if isinstance(stride, int) else tuple(stride)
    dilation_t = (dilation,) * nd if isinstance(dilation, int) else tuple(dilation)
    lo, hi = explicit_pads(nd, padding, kernel, dilation_t)
    out = [(x.shape[2 + i] + lo[i] + hi[i] - dilation_t[i] * (kernel[i] - 1) - 1) // stride_t[i] + 1
           for i in range(nd)]
    if nd == 1:
        full = w[torch.arange(out[0]) % w.shape[0]]
    else:
        rows = (torch.arange(out[0]) % w.shape[0]).view(-1, 1)
        cols = (torch.arange(out[1]) % w.shape[1]).view(1, -1)
        full = w[rows, cols]
    return ref_unshared_conv(x, full, b, stride, padding, dilation)


def opcheck_case(cases, i, device):
    """torch.library.opcheck of the i-th (op name, arguments) pair of ``cases(device)``."""
    name, args = cases(device)[i]
    torch.library.opcheck(getattr(torch.ops.cnn_ops, name).default, args)


# ---- census of the emulated CUDA kernels --------------------------------------------------
# Which kernels the emulated "cuda" cases launched, and the first test that launched each;
# printed at the end. A run of the whole suite fails if a kernel of csrc/ was never launched.
_FIRST_LAUNCH = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before = cuda_emulation.census()
    yield
    for kernel in cuda_emulation.census().keys() - before.keys():
        _FIRST_LAUNCH.setdefault(kernel, item.nodeid)


def _unlaunched():
    return sorted(cuda_emulation.kernels() - cuda_emulation.census().keys())


def pytest_terminal_summary(terminalreporter):
    counts = cuda_emulation.census()
    if not counts:
        return
    write = terminalreporter.write_line
    terminalreporter.section("CUDA kernels run through the host emulation")
    for kernel in sorted(cuda_emulation.kernels() | counts.keys()):
        if kernel in counts:
            write(f"{kernel:58s} {counts[kernel]:7d}  first: {_FIRST_LAUNCH.get(kernel, '?')}")
    missing = _unlaunched()
    write(f"{len(cuda_emulation.kernels()) - len(missing)} of {len(cuda_emulation.kernels())} kernels launched"
          + (f"; never launched: {', '.join(missing)}" if missing else ""))


def pytest_sessionfinish(session, exitstatus):
    whole_suite = (session.config.args_source == pytest.Config.ArgsSource.TESTPATHS
                   and not session.config.option.keyword and not session.config.option.markexpr)
    if whole_suite and exitstatus == 0 and cuda_emulation.census() and _unlaunched():
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
