"""torch.autocast: every op runs in the dtype torch runs its twin in (lower precision for
convolutions, float32 where torch's policy says so, the input's dtype otherwise), with values
as close to the twin's as that dtype allows; a converted model under autocast gives the
original's dtypes layer by layer and its values; mixed dtypes where torch accepts them."""

import pytest
import torch
import torch.nn.functional as TF

import torch_cnn_ops as tco
from torch_cnn_ops import functional as F

from conftest import requires_cuda

# (device, autocast dtype): CPU bfloat16 and float16 here, CUDA float16 and bfloat16 where a
# GPU is visible.
AUTOCAST = [
    ("cpu", torch.bfloat16),
    ("cpu", torch.float16),
    pytest.param("cuda", torch.float16, marks=requires_cuda),
    pytest.param("cuda", torch.bfloat16, marks=requires_cuda),
]


def _tolerance(dtype):
    # A few units in the last place of the low-precision result (accumulation orders differ).
    return {torch.bfloat16: (3e-2, 3e-2), torch.float16: (4e-3, 4e-3), torch.float32: (1e-5, 1e-5)}[dtype]


def _cases(device, input_dtype):
    """name -> a call of one op, given the module (ours or torch.nn.functional) to take it from.
    The inputs are of `input_dtype` (float32, or the autocast dtype as after a layer that ran
    in it); parameters and statistics are float32."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(device)

    x2, x3 = rand(2, 4, 8, 8).to(input_dtype), rand(2, 4, 4, 6, 6).to(input_dtype)
    w1, w2, w3, b = rand(6, 4, 3), rand(6, 4, 3, 3), rand(6, 4, 2, 3, 3), rand(6)
    c = 4
    ones, zeros = torch.ones(c, device=device), torch.zeros(c, device=device)
    return {
        "conv1d": lambda m: m.conv1d(x2.flatten(2), w1, b, padding=1),
        "conv2d": lambda m: m.conv2d(x2, w2, b, padding=1),
        "conv3d": lambda m: m.conv3d(x3, w3, b),
        "max_pool2d": lambda m: m.max_pool2d(x2, 2),
        "max_pool3d": lambda m: m.max_pool3d(x3, 2),
        "avg_pool2d": lambda m: m.avg_pool2d(x2, 3, 2, 1),
        "avg_pool3d": lambda m: m.avg_pool3d(x3, 2),
        "adaptive_avg_pool2d": lambda m: m.adaptive_avg_pool2d(x2, 3),
        "adaptive_avg_pool3d": lambda m: m.adaptive_avg_pool3d(x3, 3),
        "adaptive_max_pool2d": lambda m: m.adaptive_max_pool2d(x2, 3),
        "adaptive_max_pool3d": lambda m: m.adaptive_max_pool3d(x3, 3),
        "lp_pool2d": lambda m: m.lp_pool2d(x2.abs(), 2, 2),
        "lp_pool3d": lambda m: m.lp_pool3d(x3.abs(), 2, 2),
        "batch_norm_train": lambda m: m.batch_norm(x2, zeros.clone(), ones.clone(), ones, zeros, training=True),
        "batch_norm_eval": lambda m: m.batch_norm(x2, zeros, ones, ones, zeros),
        "group_norm": lambda m: m.group_norm(x2, 2, ones, zeros),
        "layer_norm": lambda m: m.layer_norm(x2, (8,), torch.ones(8, device=device), torch.zeros(8, device=device)),
        "instance_norm": lambda m: m.instance_norm(x2, weight=ones, bias=zeros),
    }


@pytest.mark.parametrize("device,dtype", AUTOCAST)
@pytest.mark.parametrize("low_precision_input", [False, True], ids=["float32-in", "low-in"])
def test_op_dtypes_and_values_follow_torch(device, dtype, low_precision_input):
    for name, call in _cases(device, dtype if low_precision_input else torch.float32).items():
        with torch.autocast(device, dtype=dtype):
            expected, actual = call(TF), call(F)
        assert actual.dtype == expected.dtype, name
        # Within the autocast dtype's precision: where torch rounds an intermediate to it that
        # we keep in float32 (lp pooling's powers), ours is the closer to the exact value.
        rtol, atol = _tolerance(dtype)
        torch.testing.assert_close(actual.float(), expected.float(), rtol=rtol, atol=atol * expected.abs().max().item(),
                                   msg=name)


def test_convolutions_run_in_lower_precision_on_cpu():
    x, w = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3)
    for dtype in (torch.bfloat16, torch.float16):
        with torch.autocast("cpu", dtype=dtype):
            assert F.conv2d(x, w).dtype == dtype
            assert F.tiled_conv2d(x, torch.randn(2, 2, 6, 4, 3, 3), padding=1).dtype == dtype
            assert F.unshared_conv2d(x, torch.randn(6, 6, 6, 4, 3, 3)).dtype == dtype
        # The same, computed in float32 from the values autocast casts to.
        ref = TF.conv2d(x.to(dtype).double(), w.to(dtype).double())
        with torch.autocast("cpu", dtype=dtype):
            ours = F.conv2d(x, w)
        rtol, atol = _tolerance(dtype)
        torch.testing.assert_close(ours.double(), ref, rtol=rtol, atol=atol * ref.abs().max().item())


def test_float64_is_left_alone():
    x, w = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(6, 4, 3, 3, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert F.conv2d(x, w).dtype == torch.float64 == TF.conv2d(x, w).dtype


def _network():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 8, 3, padding=1, groups=2), torch.nn.GroupNorm(2, 8), torch.nn.AvgPool2d(2),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(), torch.nn.LayerNorm(8), torch.nn.Linear(8, 5),
    )


def _layer_dtypes(model, x, device, dtype):
    seen = []
    hooks = [m.register_forward_hook(lambda m, i, o: seen.append((type(m).__name__, o.dtype))) for m in model]
    with torch.autocast(device, dtype=dtype):
        out = model(x)
    for h in hooks:
        h.remove()
    return out, seen


@pytest.mark.parametrize("device,dtype", AUTOCAST)
def test_converted_model_under_autocast_matches_the_original(device, dtype):
    torch.manual_seed(0)
    original = _network().to(device)
    converted = tco.convert(original)
    assert any(type(m).__module__.startswith("torch_cnn_ops") for m in converted)
    x = torch.randn(4, 3, 16, 16, device=device)
    expected, expected_dtypes = _layer_dtypes(original, x, device, dtype)
    actual, actual_dtypes = _layer_dtypes(converted, x, device, dtype)
    assert [d for _, d in actual_dtypes] == [d for _, d in expected_dtypes]
    assert any(d == dtype for _, d in actual_dtypes)  # some layers did run in lower precision
    rtol, atol = _tolerance(dtype)
    torch.testing.assert_close(actual.float(), expected.float(), rtol=4 * rtol, atol=4 * atol)
    # The training step: gradients of the float32 parameters in float32, close to torch's.
    for model, out in ((original, expected), (converted, actual)):
        out.float().pow(2).sum().backward()
    for (name, p), (_, q) in zip(original.named_parameters(), converted.named_parameters()):
        assert q.grad.dtype == p.grad.dtype == torch.float32, name
        torch.testing.assert_close(q.grad, p.grad, rtol=0.1, atol=0.02 * p.grad.abs().max().item(), msg=name)


def test_low_precision_activation_into_a_twin_conv():
    # A bfloat16 activation from a layer that stayed torch's, into a twin convolution.
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3)
    twin = tco.convert(torch.nn.Sequential(conv))[0]
    x = torch.randn(2, 4, 8, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, actual = conv(x), twin(x)
    assert actual.dtype == expected.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected.float(), rtol=3e-2, atol=3e-2 * expected.abs().max().item())
    # Outside autocast both refuse the mix, with torch's class.
    with pytest.raises(RuntimeError):
        conv(x)
    with pytest.raises(RuntimeError):
        twin(x)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_batch_norm_low_precision_input_float32_parameters(dtype):
    torch.manual_seed(0)
    ref, ours = torch.nn.BatchNorm2d(4), tco.nn.BatchNorm2d(4)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(8, 4, 6, 6).to(dtype)
    expected, actual = ref(x), ours(x)
    assert actual.dtype == expected.dtype == dtype
    torch.testing.assert_close(actual.float(), expected.float(), rtol=_tolerance(dtype)[0], atol=_tolerance(dtype)[1] * 4)
    for name in ("running_mean", "running_var"):
        assert getattr(ours, name).dtype == torch.float32
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-2, atol=1e-3)
