"""tco.convert on subclasses of torch.nn layers and tco.summary's input conventions.

References are independent of the code under test: the original torch.nn modules (convert) and
figures computed by hand from the layers' sizes (summary).
"""

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
