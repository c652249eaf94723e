"""Tests of the tools around the ops: tco.convert, tco.summary, tco.filters, tco.models and the
command line's summary subcommand.

References are independent of the code under test: the original torch.nn models (convert),
hand-computed figures (summary), the formulas evaluated with math/NumPy (filters).
"""

import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as tnn

import torch_cnn_ops as tco
from torch_cnn_ops.__main__ import main as cli_main


# ---- convert ---------------------------------------------------------------------------------
class TorchBlock(tnn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else tnn.Sequential(
            tnn.Conv2d(cin, cout, 1, stride, bias=False), tnn.BatchNorm2d(cout))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


def torch_resnet():
    """A small ResNet written with torch.nn only."""
    return tnn.Sequential(
        tnn.Conv2d(3, 8, 3, padding=1), tnn.BatchNorm2d(8), tnn.ReLU(), tnn.MaxPool2d(2),
        TorchBlock(8, 8, 1), TorchBlock(8, 16, 2),
        tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(16, 5),
    ).double()


def layer_types(model):
    return [(name, type(m)) for name, m in model.named_modules()]


def test_convert_resnet_outputs_and_report():
    model = torch_resnet().eval()
    before_types = layer_types(model)
    before_params = {k: (v, v.detach().clone()) for k, v in model.state_dict(keep_vars=True).items()}
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    expected = model(x)

    converted, report = tco.convert(model, return_report=True)
    # The original is untouched: same classes, same tensors with the same values.
    assert layer_types(model) == before_types
    for k, v in model.state_dict(keep_vars=True).items():
        assert v is before_params[k][0] and torch.equal(v, before_params[k][1]), k
    # Conv2d and MaxPool2d have twins: replaced and reported; the rest stays.
    assert type(converted[0]) is tco.nn.Conv2d and type(converted[3]) is tco.nn.MaxPool2d
    assert type(converted[4].conv1) is tco.nn.Conv2d and type(converted[5].down[0]) is tco.nn.Conv2d
    assert type(converted[8]) is tnn.Linear
    names = {r.name: r for r in report}
    for name in ("0", "3", "4.conv1", "4.conv2", "5.conv1", "5.conv2", "5.down.0", "6"):
        assert name in names, name
    assert names["0"].original is tnn.Conv2d and names["0"].twin is tco.nn.Conv2d
    assert names["3"].original is tnn.MaxPool2d and names["3"].twin is tco.nn.MaxPool2d
    assert all(type(m).__module__.startswith("torch_cnn_ops") for m in (converted[0], converted[3], converted[6]))
    assert not converted.training
    torch.testing.assert_close(converted(x), expected, rtol=1e-12, atol=1e-12)


def test_convert_training_step_gradients_equal():
    model = torch_resnet().train()
    model[4].conv2.weight.requires_grad_(False)  # requires_grad is carried
    converted = tco.convert(model)
    assert converted.training and converted[4].conv1.training
    assert not converted[4].conv2.weight.requires_grad
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    target = torch.randn(4, 5, dtype=torch.float64)
    grads = []
    for net in (model, converted):
        loss = torch.nn.functional.mse_loss(net(x), target)
        loss.backward()
        grads.append({n: p.grad for n, p in net.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        if g is None:
            assert grads[1][name] is None, name
        else:
            torch.testing.assert_close(grads[1][name], g, rtol=1e-10, atol=1e-12, msg=name)
    # Running statistics took the same step.
    torch.testing.assert_close(converted[1].running_mean, model[1].running_mean, rtol=1e-12, atol=1e-12)


def test_convert_inplace_keeps_parameters():
    model = torch_resnet()
    params = list(model.parameters())
    out = tco.convert(model, inplace=True)
    assert out is model
    assert type(model[0]) is tco.nn.Conv2d and type(model[4].conv1) is tco.nn.Conv2d
    # The very same Parameter objects: an optimizer built before conversion still applies.
    assert all(a is b for a, b in zip(params, model.parameters()))


@pytest.mark.parametrize("layer, shape", [
    (tnn.Conv1d(2, 4, 3, stride=2, padding=2, padding_mode="circular"), (2, 2, 11)),
    (tnn.Conv2d(4, 6, 3, padding="same", dilation=2, groups=2, padding_mode="reflect"), (2, 4, 9, 9)),
    (tnn.Conv3d(2, 3, 2, padding=1, bias=False, padding_mode="replicate"), (1, 2, 4, 5, 4)),
    (tnn.MaxPool1d(3, 2, 1, ceil_mode=True, return_indices=True), (2, 3, 10)),
    (tnn.MaxPool2d(3, 2, 1, dilation=2, return_indices=True), (2, 3, 10, 10)),
    (tnn.MaxPool3d(2), (1, 2, 4, 4, 4)),
    (tnn.AvgPool1d(3, 2, 1, count_include_pad=False), (2, 3, 10)),
    (tnn.AvgPool2d(3, 2, 1, ceil_mode=True, divisor_override=4), (2, 3, 9, 9)),
    (tnn.AvgPool3d(2), (1, 2, 4, 4, 4)),
    (tnn.LPPool1d(2, 3, 2), (2, 3, 10)),
    (tnn.LPPool2d(3.0, 2), (2, 3, 8, 8)),
    (tnn.AdaptiveMaxPool1d(4, return_indices=True), (2, 3, 10)),
    (tnn.AdaptiveMaxPool2d((3, 2)), (2, 3, 10, 9)),
    (tnn.AdaptiveAvgPool3d(2), (1, 2, 5, 4, 4)),
    (tnn.AdaptiveAvgPool1d(3), (2, 3, 10)),
    # Norm layers are replaced wherever torch_cnn_ops.nn has their twin, and stay torch's before.
    (tnn.BatchNorm1d(3, eps=1e-3, momentum=None), (4, 3, 5)),
    (tnn.BatchNorm2d(3, affine=False), (2, 3, 4, 4)),
    (tnn.BatchNorm3d(2, track_running_stats=False), (2, 2, 3, 3, 3)),
    (tnn.SyncBatchNorm(3).eval(), (2, 3, 4, 4)),
    (tnn.GroupNorm(2, 4, eps=1e-4), (2, 4, 5, 5)),
    (tnn.LayerNorm((5, 5), elementwise_affine=True, bias=False), (2, 4, 5, 5)),
    (tnn.InstanceNorm1d(3, affine=True), (2, 3, 8)),
    (tnn.InstanceNorm2d(3, track_running_stats=True), (2, 3, 5, 5)),
    (tnn.InstanceNorm3d(2), (1, 2, 3, 4, 4)),
])
def test_convert_every_layer_kind(layer, shape):
    layer = layer.double()
    for p in layer.parameters():  # not the default ones and zeros, so that a lost value shows
        p.data.uniform_(0.5, 1.5)
    x = torch.rand(*shape, dtype=torch.float64) + 0.1  # positive, for LPPool with odd p
    twin = tco.convert(layer)
    assert type(twin) is getattr(tco.nn, type(layer).__name__, type(layer))
    assert twin.training == layer.training
    for attr in ("padding_mode", "padding", "stride", "dilation", "return_indices", "ceil_mode",
                 "count_include_pad", "divisor_override", "norm_type", "output_size", "groups", "eps",
                 "momentum", "affine", "track_running_stats", "num_groups", "normalized_shape",
                 "elementwise_affine"):
        if hasattr(layer, attr):
            assert getattr(twin, attr) == getattr(layer, attr), attr
    assert twin.state_dict().keys() == layer.state_dict().keys()
    for key, value in layer.state_dict().items():
        assert torch.equal(twin.state_dict()[key], value), key
    expected, actual = layer(x), twin(x)
    if isinstance(expected, tuple):
        torch.testing.assert_close(actual[0], expected[0], rtol=1e-12, atol=1e-12)
        assert torch.equal(actual[1], expected[1])
    else:
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def test_convert_leaves_subclasses_and_keeps_sharing():
    class MyConv(tnn.Conv2d):  # a subclass with its own forward stays
        def forward(self, x):
            return super().forward(x) + 1

    shared = tnn.Conv2d(2, 2, 1)
    model = tnn.Sequential(MyConv(2, 2, 1), shared, shared)
    converted, report = tco.convert(model, return_report=True)
    assert type(converted[0]) is MyConv
    assert converted[1] is converted[2] and type(converted[1]) is tco.nn.Conv2d
    assert [r.name for r in report] == ["1"]


def test_convert_errors():
    with pytest.raises(TypeError):
        tco.convert(torch.randn(2))
    with pytest.raises(TypeError):
        tco.convert(tnn.Conv2d(1, 1, 1), inplace="yes")


# ---- summary ---------------------------------------------------------------------------------
def test_summary_seed_figures():
    s = tco.summary(tnn.Conv2d(3, 10, 5, stride=1, padding=2), (3, 32, 32))
    assert len(s.rows) == 1
    row = s.rows[0]
    assert row.output_shape == (10, 32, 32)
    assert row.params == 760 and s.total_params == 760
    assert row.macs == 768_000 and s.total_macs == 768_000
    assert row.receptive_field == (5, 5)
    text = str(s)
    assert "10x32x32" in text and "768,000" in text and "760" in text


@pytest.mark.parametrize("num_layers", [1, 2, 5])
def test_summary_stacked_3x3_receptive_field(num_layers):
    model = tnn.Sequential(*[tnn.Conv2d(2, 2, 3, padding=1) for _ in range(num_layers)])
    s = tco.summary(model, (2, 16, 16))
    assert [r.receptive_field for r in s.rows] == [(1 + 2 * (i + 1),) * 2 for i in range(num_layers)]


def test_summary_stride_and_dilation():
    # 3x3 stride 2, then 3x3: the second's (k - 1) counts twice -> 3 + 2 * 2 = 7.
    s = tco.summary(tnn.Sequential(tnn.Conv2d(1, 1, 3, stride=2), tnn.Conv2d(1, 1, 3)), (1, 17, 17))
    assert [r.receptive_field for r in s.rows] == [(3, 3), (7, 7)]
    # MaxPool2d(2) then a 3x3 dilated by 2 (effective 5x5): 2 + 4 * 2 = 10; 1-d sees one dim.
    s = tco.summary(tnn.Sequential(tnn.MaxPool1d(2), tnn.Conv1d(1, 1, 3, dilation=2)), (1, 20))
    assert [r.receptive_field for r in s.rows] == [(2,), (10,)]
    assert s.rows[0].macs == 0
    # Adaptive pooling: windows of ceil(in / out) with stride in // out; 10 -> 2: 3 + 4 = 7, 2 -> 1: 7 + 5 = 12.
    s = tco.summary(tnn.Sequential(tnn.Conv1d(1, 1, 3), tnn.AdaptiveMaxPool1d(2), tnn.AdaptiveAvgPool1d(1)), (1, 12))
    assert [r.receptive_field for r in s.rows] == [(3,), (7,), (12,)]


def test_summary_residual_and_macs_conventions():
    class Residual(tnn.Module):
        def __init__(self):
            super().__init__()
            self.a = tnn.Conv2d(4, 4, 3, padding=1)
            self.b = tnn.Conv2d(4, 4, 3, padding=1)
            self.act = tnn.ReLU()

        def forward(self, x):
            return self.act(self.b(self.a(x)) + x)

    model = tnn.Sequential(tnn.Conv2d(2, 4, 1), Residual(), tnn.BatchNorm2d(4), tnn.Flatten(), tnn.Linear(4 * 8 * 8, 3))
    s = tco.summary(model.double(), (2, 8, 8))
    rows = {r.name: r for r in s.rows}
    assert rows["1.act"].receptive_field == (5, 5)  # the main path's field, not the shortcut's 1
    assert rows["2"].macs == 4 * 8 * 8  # norm: one multiply-add per element
    assert rows["4"].macs == 3 * 256 and rows["4"].receptive_field == (8, 8)  # fc sees the whole input
    assert rows["0"].macs == 4 * 64 * 2
    assert s.total_params == sum(p.numel() for p in model.parameters())
    assert s.total_macs == sum(r.macs for r in s.rows)
    text = str(s)
    assert all(name in text for name in rows)


def test_summary_grouped_local_and_state_kept():
    model = tnn.Sequential(
        tco.nn.Conv2d(4, 8, 3, groups=2, bias=False),
        tco.nn.TiledConv2d(8, 2, 3, tile_size=2),
        tco.nn.UnsharedConv2d(2, 3, 1, input_size=(4, 4)),
        tnn.BatchNorm2d(3),
    ).train()
    s = tco.summary(model, (4, 8, 8))
    assert [r.macs for r in s.rows] == [8 * 36 * 2 * 9, 2 * 16 * 8 * 9, 3 * 16 * 2, 3 * 16]
    assert [r.receptive_field for r in s.rows][:3] == [(3, 3), (5, 5), (5, 5)]
    # The model ran in eval mode: modes restored, running statistics untouched.
    assert model.training and all(m.training for m in model)
    assert int(model[3].num_batches_tracked) == 0


def test_summary_errors():
    with pytest.raises(TypeError):
        tco.summary("model", (3, 8, 8))
    with pytest.raises(ValueError):
        tco.summary(tnn.Conv2d(3, 1, 1), (3, 0, 8))
    with pytest.raises(TypeError):
        tco.summary(tnn.Conv2d(3, 1, 1), 3)


# ---- filters ---------------------------------------------------------------------------------
def test_sobel():
    gx = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    both = tco.filters.sobel(dtype=torch.float64)
    assert both.shape == (2, 1, 3, 3)
    np.testing.assert_array_equal(both[0, 0].numpy(), gx)
    np.testing.assert_array_equal(both[1, 0].numpy(), gx.T)
    assert tco.filters.sobel("x").shape == (1, 1, 3, 3)
    np.testing.assert_array_equal(tco.filters.sobel("y")[0, 0].numpy(), gx.T)
    with pytest.raises(ValueError):
        tco.filters.sobel("z")


def gabor_formula(x, y, theta, f, sigma, phase, gamma, alpha):
    xr = x * math.cos(theta) + y * math.sin(theta)
    yr = -x * math.sin(theta) + y * math.cos(theta)
    return alpha * math.exp(-xr**2 / (2 * sigma**2) - gamma**2 * yr**2 / (2 * sigma**2)) * math.cos(2 * math.pi * f * xr + phase)


def test_gabor_against_formula():
    theta, f, sigma, phase, gamma, alpha = 0.7, 0.2, 1.8, 0.4, 0.6, 1.5
    k = tco.filters.gabor((5, 7), theta, f, sigma=sigma, phase=phase, gamma=gamma, amplitude=alpha,
                          dtype=torch.float64)
    assert k.shape == (5, 7)
    for i, j in [(0, 0), (2, 3), (4, 6), (1, 5), (3, 1)]:
        x, y = j - 3, i - 2  # x along columns, y along rows, centred
        assert k[i, j].item() == pytest.approx(gabor_formula(x, y, theta, f, sigma, phase, gamma, alpha), abs=1e-12)
    # Default sigma: 0.56 / frequency.
    k = tco.filters.gabor(5, 0.0, 0.25, dtype=torch.float64)
    assert k[2, 4].item() == pytest.approx(gabor_formula(2, 0, 0.0, 0.25, 0.56 / 0.25, 0.0, 1.0, 1.0), abs=1e-12)
    with pytest.raises(ValueError):
        tco.filters.gabor(5, 0.0, -0.1)


def test_gabor_bank_shape_order_and_conv():
    w = tco.filters.gabor_bank(orientations=4, frequencies=(0.2, 0.3), size=7, in_channels=3, dtype=torch.float64)
    assert w.shape == (16, 3, 7, 7)
    # Filter (f=1, t=2, p=1): the gabor kernel, mean removed, unit norm, split over the channels.
    k = tco.filters.gabor(7, math.pi * 2 / 4, 0.3, phase=math.pi / 2, dtype=torch.float64)
    k = (k - k.mean()) / (k - k.mean()).norm()
    torch.testing.assert_close(w[(1 * 4 + 2) * 2 + 1], (k / 3).expand(3, 7, 7))
    torch.testing.assert_close(w.sum(1).flatten(1).norm(dim=1), torch.ones(16, dtype=torch.float64))
    conv = tco.filters.init_conv_(tco.nn.Conv2d(3, 16, 7, padding=3), w, zero_bias=True)
    assert torch.equal(conv.weight.detach(), w.float()) and not conv.bias.any()
    assert conv(torch.randn(1, 3, 12, 12)).shape == (1, 16, 12, 12)
    with pytest.raises(ValueError):
        tco.filters.init_conv_(tco.nn.Conv2d(3, 8, 7), w)


def test_kmeans_shape_determinism_and_norm():
    images = torch.rand(6, 3, 16, 16)
    w1 = tco.filters.kmeans(images, 8, 5, num_patches=500, generator=torch.Generator().manual_seed(1))
    w2 = tco.filters.kmeans(images, 8, 5, num_patches=500, generator=torch.Generator().manual_seed(1))
    assert w1.shape == (8, 3, 5, 5) and w1.dtype == torch.float32
    assert torch.equal(w1, w2)
    torch.testing.assert_close(w1.flatten(1).norm(dim=1), torch.ones(8))
    w3 = tco.filters.kmeans((images * 255).to(torch.uint8)[:, 0], 4, (3, 4), num_patches=300, whiten=False)
    assert w3.shape == (4, 1, 3, 4) and w3.dtype == torch.get_default_dtype()
    with pytest.raises(ValueError):
        tco.filters.kmeans(images, 8, 17)
    with pytest.raises(TypeError):
        tco.filters.kmeans(images.numpy(), 8, 5)


@pytest.mark.parametrize("whiten", [False, True])
def test_kmeans_recovers_prototypes(whiten):
    # 4x4 images (so a 4x4 patch is a whole image), each a positive multiple of one of three
    # orthonormal, zero-mean prototypes plus a little noise.
    g = torch.Generator().manual_seed(0)
    # QR of [1, random]: columns 1..3 are orthonormal and orthogonal to 1 (zero mean).
    start = torch.cat([torch.ones(16, 1, dtype=torch.float64), torch.randn(16, 3, generator=g, dtype=torch.float64)], 1)
    protos = torch.linalg.qr(start)[0][:, 1:]
    labels = torch.arange(600) % 3
    scale = 1 + torch.rand(600, generator=g, dtype=torch.float64)
    images = (protos.t()[labels] * scale[:, None] + 0.05 * torch.randn(600, 16, generator=g, dtype=torch.float64))
    w = tco.filters.kmeans(images.reshape(600, 1, 4, 4), 3, 4, num_patches=600, whiten=whiten,
                           generator=torch.Generator().manual_seed(0)).flatten(1)
    cos = w @ protos / w.norm(dim=1, keepdim=True)  # (filters, prototypes), prototypes unit norm
    assert (cos.max(dim=0).values > 0.9).all(), cos


# ---- models ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, shape", [
    ({}, (2, 1, 32, 32)),
    ({"input_size": 28}, (2, 1, 28, 28)),
    ({"in_channels": 3, "num_classes": 7, "padding": True, "pool": "avg"}, (2, 3, 32, 32)),
])
def test_lenet5_shapes(kwargs, shape):
    net = tco.models.LeNet5(**kwargs)
    assert net(torch.randn(*shape)).shape == (2, kwargs.get("num_classes", 10))
    assert all(type(m) is tco.nn.Conv2d for m in net.modules() if isinstance(m, tnn.Conv2d))
    with pytest.raises(ValueError):
        tco.models.LeNet5(input_size=12)


@pytest.mark.parametrize("block", [tco.models.BasicBlock, tco.models.Bottleneck])
def test_resnet_forward_backward(block):
    net = tco.models.ResNet(block, layers=(1, 1), num_classes=4, width=8)
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 4)
    out.square().sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    convs = [m for m in net.modules() if isinstance(m, tnn.Conv2d)]
    assert convs and all(type(m) is tco.nn.Conv2d for m in convs)
    assert all(type(m) is tco.nn.BatchNorm2d for m in net.modules() if isinstance(m, tnn.modules.batchnorm._NormBase))
    stage2 = net.layers[1][0]
    assert stage2.downsample[0].kernel_size == (1, 1) and stage2.downsample[0].stride == (2, 2)
    if block is tco.models.Bottleneck:
        assert stage2.conv1.kernel_size == (1, 1) and stage2.conv3.kernel_size == (1, 1)
        assert stage2.conv2.kernel_size == (3, 3) and stage2.conv2.stride == (2, 2)
        assert stage2.conv3.out_channels == 4 * stage2.conv1.out_channels
    else:
        assert stage2.conv1.stride == (2, 2)


def test_resnet_imagenet_stem():
    net = tco.models.ResNet(layers=(1,), width=4, small_input=False)
    assert type(net.stem[3]) is tco.nn.MaxPool2d
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 10)


# ---- command line ------------------------------------------------------------------------------
def run_cli(*args):
    root = os.path.dirname(os.path.dirname(os.path.abspath(tco.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "torch_cnn_ops", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_cli_summary_subprocess():
    result = run_cli("summary")
    assert result.returncode == 0, result.stderr
    assert "features.0" in result.stdout and "receptive field" in result.stdout and "total MACs" in result.stdout


@pytest.mark.parametrize("command", [[], ["check"], ["bench"], ["summary"]])
def test_cli_help(command, capsys):
    with pytest.raises(SystemExit) as exit:
        cli_main([*command, "--help"])
    assert exit.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_cli_summary_arguments(capsys):
    assert cli_main(["summary", "--input-size", "3", "28", "28", "--num-classes", "4"]) == 0
    out = capsys.readouterr().out
    assert "features.0" in out and "input: 3x28x28" in out
    assert "340" in out  # the last layer, 84 -> 4: 84 * 4 + 4 parameters
    with pytest.raises(SystemExit):
        cli_main(["summary", "--input-size", "1", "8", "8"])  # too small for LeNet5: a usage error


def test_cli_summary_resnet(capsys):
    assert cli_main(["summary", "--model", "resnet", "--input-size", "3", "16", "16"]) == 0
    out = capsys.readouterr().out
    assert "layers.2.1.conv2" in out and "input: 3x16x16" in out


def test_version_from_one_place():
    """torch_cnn_ops.__version__ is the installed package's version (pyproject.toml reads it from
    torch_cnn_ops/_version.py), and CHANGELOG.md has a section for it."""
    import importlib.metadata
    import pathlib

    assert tco.__version__ == importlib.metadata.version("torch_cnn_ops")
    changelog = pathlib.Path(__file__).resolve().parents[1] / "CHANGELOG.md"
    assert f"## {tco.__version__}\n" in changelog.read_text()


def test_supported_torch_from_one_place():
    """pyproject.toml's `torch>=X.Y` is the one statement of the oldest torch supported: the
    installed package requires it, the torch under test satisfies it, and CI installs torch==X.Y.0
    for its wheel check (.ci/wheel_check.sh reads it from pyproject.toml)."""
    import importlib.metadata

    from torch.torch_version import TorchVersion

    requirements = [r for r in importlib.metadata.requires("torch_cnn_ops") if re.match(r"torch\b", r)]
    assert len(requirements) == 1 and re.fullmatch(r"torch>=\d+\.\d+", requirements[0]), requirements
    oldest = requirements[0][len("torch>="):]
    assert TorchVersion(torch.__version__) >= oldest


def test_compare_times_rotates_the_order():
    """Each round of the benchmark's interleaving starts one function later, so that no
    function always runs right after the same one."""
    from torch_cnn_ops.benchmark import compare_times

    calls = []
    fns = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times, ratios = compare_times(fns, "a", min_rounds=3, max_rounds=3)
    rounds = [calls[3 + 3 * i: 6 + 3 * i] for i in range(3)]  # after one warm-up call each
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    assert set(times) == set(ratios) == set("abc") and ratios["a"] == 1.0
