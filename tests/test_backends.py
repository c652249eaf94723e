"""tco.backends.conv: the algorithm "auto" picks (conv_algorithm), record() of the algorithm
each call runs, and the autotuning cache (benchmark), against torch's convolution."""

import threading

import pytest
import torch
import torch.nn.functional as TF
from conftest import assert_close_to_reference, runs_cuda_kernels

import torch_cnn_ops as tco

conv = tco.backends.conv


def _intel_cpu():
    """Whether the CPU is Intel's, where auto leaves most 3x3 layers to ATen (csrc/conv/conv_common.h)."""
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.split(":", 1)[1].strip() == "GenuineIntel" for line in f if line.startswith("vendor_id"))
    except OSError:
        return False


def _wide_3x3(x):
    """What auto runs for a wide 3x3 float32 layer in the contiguous layout on x's device."""
    return "winograd_2x2" if not runs_cuda_kernels(x) and not _intel_cpu() else "aten"


@pytest.fixture
def benchmark_on():
    conv.clear_cache()
    conv.benchmark = True
    try:
        yield
    finally:
        conv.benchmark = False
        conv.clear_cache()


def _algorithm(x, w, stride=1, padding=1, groups=1, algorithm="auto"):
    nd = x.dim() - 2
    return conv.algorithm_for(x, w, [stride] * nd, [padding] * nd, [padding] * nd, [1] * nd, groups, algorithm)


def test_auto_rule(device):
    """The rule of csrc/conv/conv_common.h: Winograd 2x2 for wide 3x3 float32 layers in the
    contiguous layout on the CPU (on Intel's only wider ones on larger planes, forward and input
    gradient), and the rest as before; CUDA always ATen's."""
    r = lambda *s, **kw: torch.randn(*s, device=device, **kw)  # noqa: E731
    cpu = not runs_cuda_kernels(r(1))
    wide = _wide_3x3(r(1))
    assert _algorithm(r(2, 64, 14, 14), r(64, 64, 3, 3)) == wide
    assert _algorithm(r(2, 64, 14, 14), r(128, 64, 3, 3), groups=1) == wide
    assert _algorithm(r(2, 32, 14, 14), r(64, 32, 3, 3)) == "aten"  # too few input channels
    assert _algorithm(r(2, 64, 13, 14), r(64, 64, 3, 3)) == "aten"  # a plane below 14x14
    assert _algorithm(r(2, 64, 14, 14), r(64, 64, 3, 3), stride=2) == "aten"
    assert _algorithm(r(2, 64, 14, 14, dtype=torch.float64), r(64, 64, 3, 3, dtype=torch.float64)) == "aten"
    x_cl = r(2, 64, 14, 14).to(memory_format=torch.channels_last)
    assert _algorithm(x_cl, r(64, 64, 3, 3)) == "aten"
    x_expanded = r(1, 1, 1, 1).expand(2, 64, 14, 14)  # as the grad_output of a sum
    assert _algorithm(x_expanded, r(64, 64, 3, 3)) == wide
    # on Intel's CPUs: winograd_2x2 for 128 channels on planes of 28x28, with at least
    # 2 x 28 x 28 output positions over the batch
    for x, w, on_intel in (((2, 128, 28, 28), (128, 128, 3, 3), True),
                           ((8, 256, 14, 14), (256, 256, 3, 3), False),  # a plane below 28x28
                           ((4, 128, 56, 56), (256, 128, 3, 3), True),
                           ((1, 128, 28, 28), (128, 128, 3, 3), False),  # too few positions
                           ((2, 128, 28, 27), (128, 128, 3, 3), False),  # a plane below 28x28
                           ((2, 128, 28, 28), (128, 64, 3, 3), False)):  # 64 channels per group
        if _intel_cpu():
            expected = "winograd_2x2" if on_intel and cpu else "aten"
        else:  # the rule above: 64 channels per group on planes of 14x14
            expected = wide
        assert _algorithm(r(*x), r(*w), groups=x[1] // w[1]) == expected, (x, w)
    # depthwise: direct for 3x3 at stride 1 on planes of 56x56 (28x28 alone), in 1-d and 3-d
    direct = "direct" if cpu else "aten"
    assert _algorithm(r(2, 8, 56, 56), r(8, 1, 3, 3), groups=8) == direct
    assert _algorithm(r(1, 8, 28, 28), r(8, 1, 3, 3), groups=8) == direct
    assert _algorithm(r(2, 8, 28, 28), r(8, 1, 3, 3), groups=8) == "aten"
    assert _algorithm(r(2, 8, 56, 56), r(8, 1, 3, 3), stride=2, groups=8) == "aten"
    assert _algorithm(r(2, 8, 56, 56), r(8, 1, 5, 5), padding=2, groups=8) == "aten"
    assert _algorithm(r(2, 8, 30), r(8, 1, 5), groups=8) == direct
    assert _algorithm(r(2, 8, 6, 6, 6), r(8, 1, 3, 3, 3), groups=8) == direct
    assert _algorithm(r(2, 8, 30, 30), r(4, 8, 1, 1), padding=0) == "aten"
    assert _algorithm(r(2, 8, 30, 30), r(4, 8, 1, 1), padding=0, stride=2) == ("im2col" if cpu else "aten")
    # grouped 3x3 layers of 2 channels per group: direct on Intel's CPUs
    grouped = "direct" if cpu and _intel_cpu() else "aten"
    assert _algorithm(r(2, 16, 7, 7), r(16, 2, 3, 3), groups=8) == grouped
    assert _algorithm(r(2, 16, 28, 28), r(16, 4, 3, 3), groups=4) == "aten"  # 4 per group
    assert _algorithm(r(2, 16, 28, 28), r(16, 2, 3, 3), stride=2, groups=8) == "aten"
    assert _algorithm(r(2, 16, 28, 28).to(memory_format=torch.channels_last), r(16, 2, 3, 3), groups=8) == "aten"
    # 1-d 1x1 float32 layers without groups, up to 128 x 256 channels: im2col on Intel's CPUs
    one_d = "im2col" if cpu and _intel_cpu() else "aten"
    assert _algorithm(r(2, 64, 50), r(64, 64, 1), padding=0) == one_d
    assert _algorithm(r(2, 128, 50), r(256, 128, 1), padding=0) == one_d
    assert _algorithm(r(2, 256, 50), r(256, 256, 1), padding=0) == "aten"  # past the channel product
    assert _algorithm(r(2, 64, 50), r(64, 32, 1), padding=0, groups=2) == "aten"
    assert _algorithm(r(2, 64, 50, dtype=torch.float64), r(64, 64, 1, dtype=torch.float64), padding=0) == "aten"
    assert _algorithm(r(2, 64, 50), r(64, 64, 3)) == "aten"
    # explicit names run as asked ('shifted' on CUDA is im2col)
    # 'winograd' is the 4x4 tile, the 2x2 one for 3x3 kernels on planes of at most 14x14
    assert _algorithm(r(2, 8, 9, 9), r(4, 8, 3, 3), algorithm="winograd") == "winograd_2x2"
    assert _algorithm(r(2, 8, 14, 14), r(4, 8, 3, 3), algorithm="winograd") == "winograd_2x2"
    assert _algorithm(r(2, 8, 14, 15), r(4, 8, 3, 3), algorithm="winograd") == "winograd_4x4"
    assert _algorithm(r(2, 8, 16, 16), r(4, 8, 3, 3), algorithm="winograd") == "winograd_4x4"
    assert _algorithm(r(2, 8, 9, 9), r(4, 8, 1, 3), padding=0, algorithm="winograd") == "winograd_4x4"
    assert _algorithm(r(2, 8, 9), r(4, 8, 3), algorithm="winograd") == "winograd_4x4"
    assert _algorithm(r(2, 8, 9, 9), r(4, 8, 3, 3), algorithm="shifted") == ("shifted" if cpu else "im2col")
    # shifted's per-thread buffers past their budget (64 MiB): im2col, the same GEMMs unfolded
    big = torch.empty(1, 64, 512, 512, device=device)
    assert _algorithm(big, r(4, 64, 3, 3), algorithm="shifted") == "im2col"


@pytest.mark.parametrize("layer", ["grouped-4-per-group", "depthwise-5x5"])
def test_auto_resolves_the_weight_gradient_on_its_own(layer):
    """auto resolves each pass: a grouped 3x3 layer of 4 channels per group (on Intel's CPUs)
    and a depthwise 5x5 layer, both on 14x14 planes, run ATen's forward and input gradient and
    the direct weight gradient (ATen's is slow there), so the two gradients come from the two
    backward ops, one of them ATen's; otherwise both from ATen in one call. Gradients as torch's."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 14, 14, requires_grad=True)
    if layer == "depthwise-5x5":
        w, groups, padding, per_pass = torch.randn(16, 1, 5, 5, requires_grad=True), 16, 2, True
    else:
        w, groups, padding, per_pass = torch.randn(16, 4, 3, 3, requires_grad=True), 4, 1, _intel_cpu()
    assert _algorithm(x, w, padding=padding, groups=groups) == "aten"
    gy = torch.randn(2, 16, 14, 14)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        got = torch.autograd.grad(tco.F.conv2d(x, w, None, 1, padding, 1, groups), (x, w), gy)
    names = [e.name for e in prof.events()]
    assert ("cnn_ops::conv_weight_backward" in names) == per_pass, names
    assert ("cnn_ops::conv_input_backward" in names) == per_pass, names
    assert names.count("aten::convolution_backward") == 1, names  # the input's (or both, in one call)
    want = torch.autograd.grad(TF.conv2d(x, w, None, 1, padding, 1, groups), (x, w), gy)
    for g, e in zip(got, want):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_conv_algorithm_refuses_what_conv_forward_refuses():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    ops = torch.ops.cnn_ops
    for bad in (dict(w=torch.randn(3, 4, 3, 3)), dict(stride=[0, 1]), dict(algorithm="fast"),
                dict(algorithm="winograd", stride=[2, 2])):
        args = dict(x=x, w=w, stride=[1, 1], algorithm="auto") | bad
        call = (args["x"], args["w"], args["stride"], [0, 0], [0, 0], [1, 1], 1, args["algorithm"])
        with pytest.raises(RuntimeError) as forward_error:
            ops.conv_forward(call[0], call[1], None, *call[2:])
        with pytest.raises(RuntimeError) as algorithm_error:
            ops.conv_algorithm(*call)
        assert str(algorithm_error.value).splitlines()[0] == str(forward_error.value).splitlines()[0]


def test_record_lists_every_call(device):
    model = torch.nn.Sequential(tco.nn.Conv2d(64, 64, 3, padding=1), tco.nn.Conv2d(64, 16, 1, algorithm="im2col"),
                                tco.nn.Conv2d(16, 16, 3, padding="same", groups=16, flip=True)).to(device)
    x = torch.randn(2, 64, 56, 56, device=device)
    model(x)  # outside any record() block: nothing kept
    with conv.record() as outer:
        with conv.record() as inner:
            model(x)
        model(x[:1])
    assert len(inner) == 3 and len(outer) == 6
    assert [c.requested for c in inner] == ["auto", "im2col", "auto"]
    cpu = not runs_cuda_kernels(x)
    assert [c.algorithm for c in inner] == ([_wide_3x3(x), "im2col", "direct"] if cpu else ["aten", "im2col", "aten"])
    assert inner[0].input_shape == (2, 64, 56, 56) and inner[0].weight_shape == (64, 64, 3, 3)
    assert inner[0].padding == ((1, 1), (1, 1)) and not any(c.tuned for c in inner)
    assert outer[3].input_shape == (1, 64, 56, 56)


def test_benchmark_tunes_once_per_key_and_matches_torch(benchmark_on, device):
    x = torch.randn(2, 16, 12, 12, device=device, dtype=torch.float64, requires_grad=True)
    w = torch.randn(16, 16, 3, 3, device=device, dtype=torch.float64, requires_grad=True)
    with conv.record() as calls:
        y = tco.F.conv2d(x, w, padding=1)
        y2 = tco.F.conv2d(x, w, padding=1)
        with torch.no_grad():
            tco.F.conv2d(x, w, padding=1)  # no gradient: another key
        tco.F.conv2d(x, w, padding=1, algorithm="im2col")  # an explicit algorithm is not tuned
    assert len(conv.cache()) == 2
    assert [c.tuned for c in calls] == [True, True, True, False]
    assert calls[0].algorithm == calls[1].algorithm and calls[0].algorithm in conv.CANDIDATES
    ref = TF.conv2d(x, w, padding=1)
    assert_close_to_reference(y, ref, torch.float64)
    gx, gw = torch.autograd.grad(y2.sum(), (x, w))
    rgx, rgw = torch.autograd.grad(ref.sum(), (x, w))
    assert_close_to_reference(gx, rgx, torch.float64)
    assert_close_to_reference(gw, rgw, torch.float64)


def test_benchmark_cache_is_thread_safe(benchmark_on):
    """Threads tuning the same and different keys at once: one entry per key, right results."""
    shapes = [(2, 8, 10, 10), (2, 8, 12, 12), (1, 8, 10, 10)]
    w = torch.randn(8, 8, 3, 3, dtype=torch.float64)
    inputs = [torch.randn(s, dtype=torch.float64) for s in shapes]
    errors = []

    def work(i):
        try:
            for x in inputs[i % 3:] + inputs[:i % 3]:
                with torch.no_grad():
                    assert_close_to_reference(tco.F.conv2d(x, w, padding=1), TF.conv2d(x, w, padding=1))
        except Exception as e:  # noqa: BLE001  (reported below, on the main thread)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(conv.cache()) == 3


def test_benchmark_leaves_traced_and_compiled_code_alone(benchmark_on):
    x, w = torch.randn(2, 8, 10, 10), torch.randn(8, 8, 3, 3)
    compiled = torch.compile(lambda x, w: tco.F.conv2d(x, w, padding=1), fullgraph=True, backend="eager")
    assert_close_to_reference(compiled(x, w), TF.conv2d(x.double(), w.double(), padding=1), torch.float32)
    batched = torch.func.vmap(lambda x: tco.F.conv2d(x, w, padding=1))(x[:, None])
    assert_close_to_reference(batched[:, 0], TF.conv2d(x.double(), w.double(), padding=1), torch.float32)
    assert conv.cache() == {}
