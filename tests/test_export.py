"""Deployment paths that leave Python's eager mode: torch.export with a dynamic batch, and
AOTInductor packages (compiled, saved, loaded and run), for converted networks and for the
layers torch does not have. Each exported program is run at batch sizes other than the one it
was traced with and compared with eager."""

import pytest
import torch
import torch.nn as tnn

import torch_cnn_ops as tco


def _converted_net():
    torch.manual_seed(0)
    net = tnn.Sequential(tnn.Conv2d(3, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU(),
                         tnn.MaxPool2d(2), tnn.Conv2d(16, 16, 3, padding=1, groups=4), tnn.GroupNorm(4, 16),
                         tnn.ReLU(), tnn.AvgPool2d(2), tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(16, 5))
    return tco.convert(net).eval()


class _SpecialLayers(tnn.Module):
    """The layers without a torch twin, in one network."""

    def __init__(self):
        super().__init__()
        self.flip = tco.nn.Conv2d(3, 8, 3, padding="full", flip=True)
        self.same = tco.nn.Conv2d(8, 8, 3, stride=2, padding="same")
        self.tiled = tco.nn.TiledConv2d(8, 8, 3, tile_size=2, padding=1)
        self.local = tco.nn.LocallyConnected2d(8, 8, 3, input_size=(6, 6), padding=1)
        self.min = tco.nn.MinPool2d(2)
        self.gauss = tco.nn.GaussianPool2d(3, stride=1, padding=1)
        self.stochastic = tco.nn.StochasticPool2d(1)  # eval: the probability-weighted average
        self.maxout = tco.nn.Maxout(2)
        self.kmax = tco.nn.KMaxPool1d(2)

    def forward(self, x):
        x = self.same(self.flip(x))  # (N, 8, 6, 6)
        x = self.local(torch.relu(self.tiled(x)))
        x = self.gauss(self.min(x))
        x = self.maxout(self.stochastic(x.abs() + 0.1))  # (N, 4, 3, 3)
        return self.kmax(x.flatten(2))


def _special_net():
    torch.manual_seed(0)
    return _SpecialLayers().eval()


NETS = {"converted": (_converted_net, (3, 16, 16)), "special-layers": (_special_net, (3, 10, 10))}


@pytest.mark.parametrize("name", sorted(NETS))
def test_export_with_dynamic_batch(name):
    build, shape = NETS[name]
    model = build()
    x = torch.randn(2, *shape)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    for n in (1, 3, 7):
        xn = torch.randn(n, *shape)
        torch.testing.assert_close(program.module()(xn), model(xn))


def test_aot_inductor_package_of_a_converted_net(tmp_path):
    model = _converted_net()
    x = torch.randn(2, 3, 16, 16)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    path = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / "net.pt2"))
    loaded = torch._inductor.aoti_load_package(path)
    for n in (1, 5):
        xn = torch.randn(n, 3, 16, 16)
        torch.testing.assert_close(loaded(xn), model(xn), rtol=1e-4, atol=1e-5)


def test_export_of_stochastic_pooling_in_training_with_dynamic_batch():
    module = tco.nn.StochasticPool2d(2).train()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.rand(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    x = torch.rand(5, 3, 8, 8) + 0.1
    out = program.module()(x)
    # each output is one of its window's elements (a draw, so no value to compare with eager)
    windows = x.unfold(2, 2, 2).unfold(3, 2, 2).reshape(5, 3, 4, 4, 4)
    assert out.shape == (5, 3, 4, 4)
    assert (windows == out.unsqueeze(-1)).any(-1).all()
