"""tco.convert on subclasses of torch.nn layers and tco.summary's input conventions.

References are independent of the code under test: the original torch.nn modules (convert) and
figures computed by hand from the layers' sizes (summary).
"""

import copy

import pytest
import torch
import torch.nn as tnn

import torch_cnn_ops as tco
from torch_cnn_ops.convert import Replacement, Skipped


# ---- convert: subclasses -----------------------------------------------------------------------
class Conv3DSimple(tnn.Conv3d):
    """torchvision.models.video.resnet's 3x3x3 convolution: its own constructor, torch's forward."""

    def __init__(self, in_planes, out_planes, midplanes=None, stride=1, padding=1):
        super().__init__(in_channels=in_planes, out_channels=out_planes, kernel_size=(3, 3, 3),
                         stride=stride, padding=padding, bias=False)

    @staticmethod
    def get_downsample_stride(stride):
        return stride, stride, stride


class TaggedConv(tnn.Conv2d):
    def __init__(self, *args, label="conv", **kwargs):
        super().__init__(*args, **kwargs)
        self.label = label


class TaggedBatchNorm(tnn.BatchNorm2d):
    def __init__(self, num_features):
        super().__init__(num_features)
        self.origin = {"from": "checkpoint"}


class Scaled(tnn.Conv2d):
    def forward(self, x):
        return 2 * super().forward(x)


class OwnConvForward(tnn.Conv2d):
    def _conv_forward(self, input, weight, bias):
        return super()._conv_forward(input, weight, bias) - 1


class AnyRankBatchNorm(tnn.BatchNorm2d):
    def _check_input_dim(self, input):
        pass


def test_convert_subclass_without_own_forward():
    torch.manual_seed(0)
    conv = TaggedConv(3, 4, 3, padding=1, padding_mode="reflect", label="stem").double()
    conv.tag = 3
    bn = TaggedBatchNorm(4).double()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    model = tnn.Sequential(conv, bn, tnn.ReLU()).eval()
    calls = []
    handle = conv.register_forward_hook(lambda m, args, out: calls.append(out.shape))
    x = torch.randn(2, 3, 7, 7, dtype=torch.float64)
    expected = model(x)
    assert calls == [(2, 4, 7, 7)]

    converted, report = tco.convert(model, inplace=True, return_report=True)
    assert type(converted[0]) is tco.nn.Conv2d and type(converted[1]) is tco.nn.BatchNorm2d
    # Instance attributes of the subclass's constructor and the user's, the same objects.
    assert converted[0].label == "stem" and converted[0].tag == 3
    assert converted[1].origin is bn.origin
    # Constructor arguments, the very parameters and buffers, the mode.
    assert converted[0].padding_mode == "reflect" and converted[0].padding == (1, 1)
    assert converted[0].weight is conv.weight and converted[0].bias is conv.bias
    assert converted[1].running_mean is bn.running_mean and converted[1].weight is bn.weight
    assert not converted[0].training and not converted[1].training
    torch.testing.assert_close(converted(x), expected, rtol=1e-12, atol=1e-12)
    assert calls == [(2, 4, 7, 7)] * 2  # the hook came along
    handle.remove()
    converted(x)
    assert len(calls) == 2
    # The report as before: a list of Replacement, with nothing skipped.
    assert isinstance(report, list) and all(type(r) is Replacement for r in report)
    assert [(r.name, r.original.__name__, r.twin.__name__) for r in report] == [
        ("0", "TaggedConv", "Conv2d"), ("1", "TaggedBatchNorm", "BatchNorm2d")]
    assert report.skipped == []


def test_convert_torchvision_style_conv3d():
    torch.manual_seed(0)
    model = tnn.Sequential(
        Conv3DSimple(3, 4), tnn.BatchNorm3d(4), tnn.ReLU(),
        Conv3DSimple(4, 6, stride=2), tnn.Conv3d(6, 2, 1),
    ).double().eval()
    x = torch.randn(2, 3, 5, 6, 7, dtype=torch.float64)
    expected = model(x)
    converted, report = tco.convert(model, return_report=True)
    assert [type(converted[i]) for i in (0, 3, 4)] == [tco.nn.Conv3d] * 3
    assert converted[3].stride == (2, 2, 2) and converted[3].kernel_size == (3, 3, 3)
    assert converted[3].padding == (1, 1, 1) and converted[3].bias is None
    assert [(r.name, r.original.__name__) for r in report] == [
        ("0", "Conv3DSimple"), ("1", "BatchNorm3d"), ("3", "Conv3DSimple"), ("4", "Conv3d")]
    torch.testing.assert_close(converted(x), expected, rtol=1e-12, atol=1e-12)
    assert type(model[0]) is Conv3DSimple  # inplace=False: the original is untouched


def test_convert_subclass_with_own_computation_left_and_reported():
    torch.manual_seed(0)
    shared = Scaled(2, 2, 1)
    model = tnn.Sequential(shared, OwnConvForward(2, 2, 3, padding=1), AnyRankBatchNorm(2), shared,
                           TaggedConv(2, 2, 1)).double().eval()
    x = torch.randn(1, 2, 5, 5, dtype=torch.float64)
    expected = model(x)
    converted, report = tco.convert(model, return_report=True)
    assert [type(m) for m in converted] == [Scaled, OwnConvForward, AnyRankBatchNorm, Scaled, tco.nn.Conv2d]
    assert converted[0] is converted[3]
    assert report.skipped == [
        Skipped("0", Scaled, "Scaled overrides forward of torch.nn.Conv2d"),
        Skipped("1", OwnConvForward, "OwnConvForward overrides _conv_forward of torch.nn.Conv2d"),
        Skipped("2", AnyRankBatchNorm, "AnyRankBatchNorm overrides _check_input_dim of torch.nn.BatchNorm2d"),
    ]
    assert [(r.name, r.original) for r in report] == [("4", TaggedConv)]
    torch.testing.assert_close(converted(x), expected, rtol=1e-12, atol=1e-12)


def test_convert_skips_forward_set_on_instance_and_parametrized():
    patched = tnn.Conv2d(2, 2, 1)
    patched.forward = lambda x: x + 1
    parametrized = tnn.Conv2d(2, 2, 1)
    torch.nn.utils.parametrize.register_parametrization(parametrized, "weight", tnn.Identity())
    model = tnn.Sequential(patched, parametrized)
    converted, report = tco.convert(model, inplace=True, return_report=True)
    assert converted[0] is patched and converted[1] is parametrized
    assert list(report) == []
    assert [(s.name, s.reason) for s in report.skipped] == [
        ("0", "forward set on the instance"),
        ("1", "ParametrizedConv2d has parametrizations (weight) from torch.nn.utils.parametrize")]
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(converted[0](x), x + 1)


def test_convert_leaves_twins_and_their_subclasses_unreported():
    class MyTwin(tco.nn.Conv2d):
        pass

    model = tnn.Sequential(tco.nn.Conv2d(2, 2, 1), MyTwin(2, 2, 1), tco.nn.MaxPool2d(2))
    converted, report = tco.convert(model, return_report=True)
    assert [type(m) for m in converted] == [tco.nn.Conv2d, MyTwin, tco.nn.MaxPool2d]
    assert list(report) == [] and report.skipped == []


# ---- summary: input conventions ----------------------------------------------------------------
def seed_conv():
    # 10 * 3 * 5 * 5 + 10 = 760 parameters; per sample 10 * 32 * 32 outputs of 3 * 25 MACs = 768,000.
    return tnn.Conv2d(3, 10, 5, padding=2)


def row_tuples(s):
    return [(r.name, r.type, r.output_shape, r.params, r.macs, r.receptive_field) for r in s.rows]


def test_unconvert_round_trip():
    """unconvert(convert(model)) has torch's classes again, the same parameters (the very
    tensors), buffers, hooks and attributes, and the original's outputs and gradients."""
    torch.manual_seed(0)
    net = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), tnn.BatchNorm2d(8), tnn.ReLU(),
                         tnn.MaxPool2d(2, ceil_mode=True), tnn.GroupNorm(2, 8), tnn.Conv2d(8, 4, 1, bias=False),
                         tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(4, 2)).double()
    seen = []
    net[0].register_forward_hook(lambda m, i, o: seen.append(o.shape))
    net[0].tag = "stem"
    fast = tco.convert(net)
    back, report = tco.unconvert(fast, return_report=True)
    assert [type(m) for m in back.modules()] == [type(m) for m in net.modules()]
    assert [(r.name, r.original.__module__.split(".")[0], r.twin.__module__.split(".")[0]) for r in report] == [
        (str(i), "torch_cnn_ops", "torch") for i in (0, 1, 3, 4, 5, 6)]
    assert not report.skipped
    assert back[0].tag == "stem" and not hasattr(back[0], "algorithm") and not hasattr(back[0], "flip")
    # not in place: the converted model keeps its twins
    assert type(fast[0]) is tco.nn.Conv2d
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    for model in (net, back):
        model.train()
    ref, out = net(x), back(x)
    torch.testing.assert_close(out, ref)
    assert len(seen) == 2
    torch.testing.assert_close(dict(back.state_dict()), dict(net.state_dict()))
    gx = torch.autograd.grad(out.sum(), back[0].weight)[0]
    torch.testing.assert_close(gx, torch.autograd.grad(ref.sum(), net[0].weight)[0])
    # in place: the very parameters stay (optimizers keep working)
    weight = fast[0].weight
    same = tco.unconvert(fast, inplace=True)
    assert same is fast and type(fast[0]) is tnn.Conv2d and fast[0].weight is weight


def test_unconvert_leaves_what_torch_lacks():
    layers = tnn.Sequential(tco.nn.Conv2d(3, 3, 3, flip=True), tco.nn.Conv2d(3, 3, 3, padding="full"),
                            tco.nn.Conv2d(3, 3, 3, stride=2, padding="same"), tco.nn.TiledConv2d(3, 3, 3, tile_size=2),
                            tco.nn.Conv2d(3, 3, 3, algorithm="im2col"), tco.nn.MaxPool2d(3, 2, padding="same"))
    back, report = tco.unconvert(layers, return_report=True)
    assert [type(m) for m in back] == [tco.nn.Conv2d, tco.nn.Conv2d, tco.nn.Conv2d, tco.nn.TiledConv2d, tnn.Conv2d,
                                       tco.nn.MaxPool2d]
    assert [s.name for s in report.skipped] == ["0", "1", "2", "5"]
    reasons = [s.reason for s in report.skipped]
    assert "flip=True" in reasons[0] and "padding='full'" in reasons[1] and "'same' and a stride" in reasons[2]
    assert "padding='same'" in reasons[3] and "pooling" in reasons[3]
    with pytest.raises(TypeError, match="unconvert"):
        tco.unconvert("not a module")


def test_summary_size_without_batch_unchanged():
    s = tco.summary(seed_conv(), (3, 32, 32))
    assert row_tuples(s) == [("", "Conv2d", (10, 32, 32), 760, 768_000, (5, 5))]
    assert s.input_size == (3, 32, 32) and s.batch_size == 1
    assert "input: 3x32x32 (batch of 1)" in str(s)


@pytest.mark.parametrize("size", [(1, 3, 32, 32), torch.Size([1, 3, 32, 32])])
def test_summary_size_with_batch_of_one(size):
    s = tco.summary(seed_conv(), size)
    assert row_tuples(s) == [("", "Conv2d", (10, 32, 32), 760, 768_000, (5, 5))]
    assert s.input_size == (3, 32, 32) and s.batch_size == 1 and s.total_macs == 768_000


def test_summary_batch_of_eight_counts_the_batch():
    s = tco.summary(seed_conv(), (8, 3, 32, 32))
    assert row_tuples(s) == [("", "Conv2d", (10, 32, 32), 760, 8 * 768_000, (5, 5))]
    assert s.total_params == 760 and s.total_macs == 6_144_000
    assert s.input_size == (3, 32, 32) and s.batch_size == 8
    text = str(s)
    assert "input: 3x32x32 (batch of 8)" in text and "6,144,000" in text


def test_summary_batch_keeps_fields_and_per_layer_figures():
    # Hand-computed as in test_product: 3x3 stride 2 then 3x3 -> fields 3 and 3 + 2 * 2 = 7.
    model = tnn.Sequential(tnn.Conv2d(1, 2, 3, stride=2), tnn.Conv2d(2, 1, 3), tnn.Flatten(), tnn.Linear(25, 4))
    s = tco.summary(model, (4, 1, 15, 15))
    assert s.batch_size == 4
    assert [r.output_shape for r in s.rows] == [(2, 7, 7), (1, 5, 5), (25,), (4,)]
    assert [r.receptive_field for r in s.rows] == [(3, 3), (7, 7), (7, 7), (15, 15)]
    # Per sample: 2*49 outputs of 9 MACs, 25 outputs of 2*9, 4 outputs of 25; times the batch of 4.
    assert [r.macs for r in s.rows] == [4 * 2 * 49 * 9, 4 * 25 * 18, 0, 4 * 4 * 25]


def test_summary_input_data_used_as_is():
    model = seed_conv().double()
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    s = tco.summary(model, input_data=x)
    assert len(seen) == 1 and seen[0] is x
    # Per sample 10 * 16 * 16 outputs of 75 MACs = 192,000; a batch of 2.
    assert row_tuples(s) == [("", "Conv2d", (10, 16, 16), 760, 384_000, (5, 5))]
    assert s.input_size == (3, 16, 16) and s.batch_size == 2


def test_summary_batch_dim_keyword():
    linear = tnn.Linear(10, 5)
    # Linear takes any leading dimensions: "auto" reads (4, 10) without the batch...
    s = tco.summary(linear, (4, 10))
    assert (s.batch_size, s.input_size, s.rows[0].output_shape) == (1, (4, 10), (4, 5))
    # ...and batch_dim=None says it holds it (torchinfo's reading).
    s = tco.summary(linear, (4, 10), batch_dim=None)
    assert (s.batch_size, s.input_size, s.rows[0].output_shape) == (4, (10,), (5,))
    assert s.total_macs == 4 * 5 * 10
    s = tco.summary(seed_conv(), (2, 3, 8, 8), batch_dim=None)
    assert s.batch_size == 2 and s.rows[0].output_shape == (10, 8, 8)
    s = tco.summary(seed_conv(), (3, 8, 8), batch_dim=0)
    assert s.batch_size == 1 and s.input_size == (3, 8, 8)
    with pytest.raises(ValueError, match=r"read as \(C, \*spatial\)"):
        tco.summary(seed_conv(), (1, 3, 8, 8), batch_dim=0)  # no fallback when batch_dim says so
    with pytest.raises(ValueError, match="batch_dim"):
        tco.summary(seed_conv(), (3, 8, 8), batch_dim=1)


def test_summary_fallback_restores_modes_and_state():
    model = tnn.Sequential(tnn.Conv2d(3, 4, 3), tnn.BatchNorm2d(4)).train()
    s = tco.summary(model, (2, 3, 8, 8))  # (1, 2, 3, 8, 8) fails first
    assert s.batch_size == 2 and [r.output_shape for r in s.rows] == [(4, 6, 6), (4, 6, 6)]
    assert model.training and all(m.training for m in model)
    assert int(model[1].num_batches_tracked) == 0
    with pytest.raises(ValueError):
        tco.summary(model, (4, 8, 8))
    assert model.training and all(m.training for m in model)


def test_summary_input_errors():
    conv = seed_conv()
    with pytest.raises(ValueError) as info:
        tco.summary(conv, (4, 8, 8))  # 4 channels for a 3-channel convolution, with or without batch
    message = str(info.value)
    assert "input_size (4, 8, 8)" in message and "(1, 4, 8, 8)" in message
    assert "(C, *spatial)" in message and "(N, C, *spatial)" in message and "3 channels" in message
    assert isinstance(info.value.__cause__, RuntimeError)
    with pytest.raises(ValueError, match=r"input_data of size \(2, 4, 8, 8\)"):
        tco.summary(conv, input_data=torch.randn(2, 4, 8, 8))
    with pytest.raises(TypeError, match="both"):
        tco.summary(conv, (3, 8, 8), input_data=torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="neither"):
        tco.summary(conv)
    with pytest.raises(TypeError):
        tco.summary(conv, input_data=[torch.randn(1, 3, 8, 8)])
    with pytest.raises(TypeError):
        tco.summary(conv, input_data=torch.randn(1, 3, 8, 8), dtype=torch.float64)
    with pytest.raises(ValueError):
        tco.summary(conv, input_data=torch.randn(1, 3, 8, 8), batch_dim=0)
    with pytest.raises(ValueError):
        tco.summary(conv, input_data=torch.randn(8))
    with pytest.raises(ValueError):
        tco.summary(conv, (1, 3, 0, 8))


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v3_small"])
def test_converted_network_trains_as_the_original(name):
    # The benchmark's networks (torchvision's layouts in torch.nn): one training step of the
    # converted copy gives the original's output, every parameter's gradient and the running
    # statistics; eval too. In float64, so that fifty layers of batch norm over few values do not
    # amplify rounding into the comparison. The seed is set before each forward, so that
    # MobileNet's dropout drops the same units in both.
    from torch_cnn_ops.benchmark.models import MODELS

    torch.manual_seed(0)
    original = MODELS[name]().double()
    converted = tco.convert(copy.deepcopy(original))
    assert sum(type(m).__module__.startswith("torch_cnn_ops.nn") for m in converted.modules()) > 20
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    outs = []
    for model in (original, converted):
        model.train()
        torch.manual_seed(1)
        out = model(x)
        out.square().mean().backward()
        outs.append(out)

    def close(a, b, what):
        scale = max(1.0, b.abs().max().item())
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9 * scale, msg=lambda m: f"{what}: {m}")

    close(outs[1], outs[0], "output")
    for (n, p), (_, q) in zip(original.named_parameters(), converted.named_parameters()):
        close(q.grad, p.grad, f"grad of {n}")
    for (n, b), (_, c) in zip(original.named_buffers(), converted.named_buffers()):
        close(c.double(), b.double(), f"buffer {n}")
    original.eval()
    converted.eval()
    with torch.no_grad():
        close(converted(x), original(x), "eval output")
