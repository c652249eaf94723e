"""ONNX export (torch_cnn_ops.onnx): every layer, exported with a dynamic batch dimension, runs in
ONNX Runtime at other batch sizes and matches eager at float32 tolerances, with standard ONNX
operators only."""

import numpy as np
import pytest
import torch

import onnxruntime
import torch_cnn_ops as tco

tco_onnx = tco.onnx  # imported on first use

ops = torch.ops.cnn_ops


class Call(torch.nn.Module):
    """A module around a function of the input (for the functional-only forms and raw ops)."""

    def __init__(self, fn, *params):
        super().__init__()
        self.fn = fn
        self.params = torch.nn.ParameterList(params)

    def forward(self, x):
        return self.fn(x, *self.params)


def _randn(*shape):
    return torch.randn(*shape)


def _positive(*shape):
    return torch.rand(*shape) + 0.05


def _sparse_positive(*shape):  # stochastic pooling's all-zero windows included
    x = torch.rand(*shape)
    x[..., :4, :4] = 0
    return x


def _normal_module(module):
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for name, p in module.named_parameters():
            p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b))
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    return module


# (id, module factory, input factory, input shape); the batch (dimension 0) is exported dynamic.
CASES = [
    ("conv1d", lambda: tco.nn.Conv1d(4, 6, 3, padding="same", dilation=2), _randn, (2, 4, 17)),
    ("conv2d", lambda: tco.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), _randn, (2, 4, 15, 13)),
    ("conv2d_full_flip", lambda: tco.nn.Conv2d(3, 5, (3, 2), padding="full", flip=True, bias=False), _randn,
     (2, 3, 9, 8)),
    ("conv2d_same_strided", lambda: tco.nn.Conv2d(3, 5, 3, stride=2, padding="same"), _randn, (2, 3, 10, 11)),
    ("conv2d_reflect", lambda: tco.nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), _randn, (2, 3, 8, 8)),
    ("conv2d_winograd", lambda: tco.nn.Conv2d(8, 8, 3, padding=1, algorithm="winograd"), _randn, (2, 8, 12, 12)),
    ("conv3d", lambda: tco.nn.Conv3d(2, 3, 3, padding=(1, 0, 1)), _randn, (2, 2, 5, 6, 5)),
    ("tiled_conv1d", lambda: tco.nn.TiledConv1d(3, 4, 3, tile_size=2, padding=1), _randn, (2, 3, 11)),
    ("tiled_conv2d", lambda: tco.nn.TiledConv2d(3, 4, 3, tile_size=(2, 3), stride=(1, 2), padding=1, dilation=(2, 1)),
     _randn, (2, 3, 10, 9)),
    ("unshared_conv1d", lambda: tco.nn.UnsharedConv1d(3, 4, 3, input_size=9, stride=2), _randn, (2, 3, 9)),
    ("unshared_conv2d", lambda: tco.nn.UnsharedConv2d(3, 4, 3, input_size=(7, 6), padding="same"), _randn,
     (2, 3, 7, 6)),
    ("max_pool1d", lambda: tco.nn.MaxPool1d(3, 2, padding=1, return_indices=True), _randn, (2, 3, 12)),
    ("max_pool2d", lambda: tco.nn.MaxPool2d(3, 2, padding=1, dilation=2, ceil_mode=True, return_indices=True),
     _randn, (2, 3, 11, 12)),
    ("max_pool3d", lambda: tco.nn.MaxPool3d(2, return_indices=True), _randn, (2, 2, 6, 5, 4)),
    ("min_pool2d", lambda: tco.nn.MinPool2d(3, 2, padding=1, return_indices=True), _randn, (2, 3, 9, 10)),
    ("adaptive_max_pool2d_even", lambda: tco.nn.AdaptiveMaxPool2d((4, 3), return_indices=True), _randn,
     (2, 3, 8, 9)),
    ("adaptive_max_pool2d_uneven", lambda: tco.nn.AdaptiveMaxPool2d((3, 4), return_indices=True), _randn,
     (2, 3, 10, 7)),
    ("adaptive_min_pool1d", lambda: tco.nn.AdaptiveMinPool1d(5, return_indices=True), _randn, (2, 3, 13)),
    ("adaptive_max_pool3d", lambda: tco.nn.AdaptiveMaxPool3d((2, 3, 2)), _randn, (2, 2, 5, 7, 4)),
    ("avg_pool1d", lambda: tco.nn.AvgPool1d(3, 2, padding=1, count_include_pad=False), _randn, (2, 3, 12)),
    ("avg_pool2d", lambda: tco.nn.AvgPool2d(3, 2, padding=1), _randn, (2, 3, 11, 10)),
    ("avg_pool2d_ceil", lambda: tco.nn.AvgPool2d(3, 2, padding=1, ceil_mode=True), _randn, (2, 3, 10, 11)),
    ("avg_pool2d_ceil_no_pad_count", lambda: tco.nn.AvgPool2d(3, 2, padding=1, ceil_mode=True,
                                                               count_include_pad=False), _randn, (2, 3, 10, 11)),
    ("avg_pool3d_divisor", lambda: tco.nn.AvgPool3d(2, padding=1, divisor_override=3), _randn, (2, 2, 5, 4, 5)),
    ("max_pool2d_same", lambda: tco.nn.MaxPool2d((2, 4), 2, padding="same", return_indices=True), _randn,
     (2, 3, 7, 9)),
    ("min_pool1d_same", lambda: tco.nn.MinPool1d(4, 3, padding="same"), _randn, (2, 3, 11)),
    ("avg_pool2d_same", lambda: tco.nn.AvgPool2d((2, 4), 2, padding="same", count_include_pad=False), _randn,
     (2, 3, 7, 9)),
    ("avg_pool1d_same_divisor", lambda: tco.nn.AvgPool1d(4, 3, padding="same"), _randn, (2, 3, 11)),
    ("adaptive_avg_pool2d_even", lambda: tco.nn.AdaptiveAvgPool2d((4, 3)), _randn, (2, 3, 8, 9)),
    ("adaptive_avg_pool2d_uneven", lambda: tco.nn.AdaptiveAvgPool2d((3, 4)), _randn, (2, 3, 10, 7)),
    ("adaptive_avg_pool2d_global", lambda: tco.nn.AdaptiveAvgPool2d(1), _randn, (2, 3, 7, 5)),
    ("adaptive_avg_pool1d", lambda: tco.nn.AdaptiveAvgPool1d(4), _randn, (2, 3, 11)),
    ("lp_pool1d", lambda: tco.nn.LPPool1d(2, 3, 2), _randn, (2, 3, 12)),
    ("lp_pool2d_ceil", lambda: tco.nn.LPPool2d(3, 3, 2, ceil_mode=True), _positive, (2, 3, 10, 9)),
    ("lp_pool3d", lambda: tco.nn.LPPool3d(1.5, 2), _positive, (2, 2, 4, 6, 4)),
    ("kmax_pool1d", lambda: tco.nn.KMaxPool1d(4), _randn, (2, 3, 11)),
    ("kmax_pool_dim1", lambda: tco.nn.KMaxPool1d(2, dim=1), _randn, (2, 5, 7)),
    ("dynamic_kmax_pool1d", lambda: tco.nn.DynamicKMaxPool1d(1, 3, 2), _randn, (2, 3, 12)),
    ("maxout", lambda: tco.nn.Maxout(3), _randn, (2, 6, 5, 4)),
    ("gaussian_pool2d", lambda: tco.nn.GaussianPool2d(3, 2, padding=1, sigma=0.8), _randn, (2, 3, 9, 10)),
    ("stochastic_pool2d_eval", lambda: tco.nn.StochasticPool2d(2), _sparse_positive, (2, 3, 8, 10)),
    ("batch_norm1d", lambda: tco.nn.BatchNorm1d(3), _randn, (2, 3, 7)),
    ("batch_norm2d", lambda: tco.nn.BatchNorm2d(3), _randn, (2, 3, 5, 6)),
    ("batch_norm3d_no_affine", lambda: tco.nn.BatchNorm3d(2, affine=False), _randn, (2, 2, 3, 4, 3)),
    ("batch_norm2d_batch_stats", lambda: tco.nn.BatchNorm2d(3, track_running_stats=False), _randn, (2, 3, 5, 6)),
    ("sync_batch_norm", lambda: tco.nn.SyncBatchNorm(3), _randn, (2, 3, 4, 5)),
    ("instance_norm2d", lambda: tco.nn.InstanceNorm2d(3, affine=True), _randn, (2, 3, 5, 6)),
    ("instance_norm1d_running", lambda: tco.nn.InstanceNorm1d(3, track_running_stats=True), _randn, (2, 3, 8)),
    ("group_norm", lambda: tco.nn.GroupNorm(2, 6), _randn, (2, 6, 4, 5)),
    ("layer_norm", lambda: tco.nn.LayerNorm((4, 5)), _randn, (2, 3, 4, 5)),
    ("layer_norm_no_bias", lambda: tco.nn.LayerNorm(5, bias=False), _randn, (2, 3, 5)),
    # operators that no module reaches outside distributed training
    ("batch_norm_stats", lambda: Call(lambda x: ops.batch_norm_stats(x)), _randn, (2, 3, 4, 5)),
    ("batch_norm_elemt", lambda: Call(lambda x, w, b: ops.batch_norm_elemt(x, w, b, x.mean((0, 2)), 1 / (
        x.var((0, 2), unbiased=False) + 1e-5).sqrt()), torch.nn.Parameter(torch.randn(3)),
        torch.nn.Parameter(torch.randn(3))), _randn, (2, 3, 6)),
]


def _run_onnx(program, x):
    session = onnxruntime.InferenceSession(program.model_proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def _export(module, x):
    batch = torch.export.Dim("batch", min=1, max=1024)
    return tco_onnx.export(module, (x,), dynamic_shapes=({0: batch},), verbose=False)


def _check_against(program, reference, shape, batches=(1, 3)):
    """The program's first output against ``reference`` (eager) on inputs of ``(batch, *shape)``."""
    for batch in batches:
        x = torch.randn(batch, *shape)
        with torch.no_grad():
            expected = reference(x)
        np.testing.assert_allclose(_run_onnx(program, x)[0], expected.numpy(), rtol=1e-4, atol=1e-5)


def _as_list(result):
    return list(result) if isinstance(result, (tuple, list)) else [result]


@pytest.mark.parametrize("name, make, data, shape", CASES, ids=[c[0] for c in CASES])
def test_layer_runs_in_onnxruntime(name, make, data, shape):
    torch.manual_seed(0)
    module = _normal_module(make()).eval()
    program = _export(module, data(*shape))
    graph = program.model_proto.graph
    # standard ONNX only: no node of ours (or of any custom domain) is left for the runtime
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}, [n.op_type for n in graph.node]
    assert not any(node.op_type.endswith("_forward") for node in graph.node)
    for batch in (3, 5):  # other batch sizes than the exported one
        x = data(batch, *shape[1:])
        with torch.no_grad():
            expected = _as_list(module(x))
        got = _run_onnx(program, x)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert tuple(g.shape) == tuple(e.shape)
            if e.dtype == torch.int64:  # pooling indices, exactly torch's
                np.testing.assert_array_equal(g, e.numpy())
            else:  # float32 rounding, relative to the output's scale (Winograd's included)
                np.testing.assert_allclose(g, e.numpy(), rtol=1e-4, atol=1e-5 * max(1.0, e.abs().max().item()))


# The ONNX operator each twin becomes (its standard counterpart, not a composition).
STANDARD_OPS = {
    "conv2d": "Conv", "max_pool2d": "MaxPool", "avg_pool2d": "AveragePool", "adaptive_avg_pool2d_global":
    "GlobalAveragePool", "batch_norm2d": "BatchNormalization", "instance_norm2d": "InstanceNormalization",
    "layer_norm": "LayerNormalization", "group_norm": "GroupNormalization", "kmax_pool1d": "TopK",
    "gaussian_pool2d": "Conv",
}


@pytest.mark.parametrize("name", sorted(STANDARD_OPS))
def test_twins_export_as_their_onnx_operator(name):
    _, make, data, shape = next(c for c in CASES if c[0] == name)
    program = _export(_normal_module(make()).eval(), data(*shape))
    assert STANDARD_OPS[name] in {node.op_type for node in program.model_proto.graph.node}


def _small_cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False),
        torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, 5))


def test_converted_network_matches_the_original_in_onnxruntime():
    torch.manual_seed(0)
    original = _normal_module(_small_cnn()).eval()
    converted = tco.convert(original).eval()
    assert isinstance(converted[0], tco.nn.Conv2d)
    _check_against(_export(converted, torch.randn(2, 3, 16, 16)), original, (3, 16, 16), batches=(1, 4))


def test_saved_file_loads(tmp_path):
    module = tco.nn.TiledConv2d(2, 3, 3, tile_size=2, padding=1).eval()
    path = tmp_path / "tiled.onnx"
    tco_onnx.export(module, (torch.randn(2, 2, 6, 6),), str(path), verbose=False)
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 2, 6, 6)
    with torch.no_grad():
        expected = module(x)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_translation_table_works_with_torch_onnx_export():
    module = tco.nn.MinPool2d(2).eval()
    x = torch.randn(2, 3, 6, 6)
    program = torch.onnx.export(module, (x,), dynamo=True, custom_translation_table=tco_onnx.TRANSLATIONS,
                                verbose=False)
    with torch.no_grad():
        np.testing.assert_allclose(_run_onnx(program, x)[0], module(x).numpy(), rtol=1e-6)


def test_stochastic_pooling_in_training_is_refused_with_advice():
    module = tco.nn.StochasticPool2d(2).train()
    with pytest.raises(Exception, match="eval"):
        _export(module, torch.rand(2, 3, 8, 8))


def test_readme_example(tmp_path):
    model = tco.models.ResNet(tco.models.BasicBlock, layers=(1, 1)).eval()
    batch = torch.export.Dim("batch")
    path = str(tmp_path / "resnet.onnx")
    tco_onnx.export(model, (torch.randn(2, 3, 32, 32),), path, dynamic_shapes=({0: batch},), verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-5)


# Translations that are one standard operator keep the spatial sizes dynamic.
DYNAMIC_SPATIAL = {
    "conv": lambda: tco.nn.Conv2d(3, 4, 3, padding="same"), "max_pool": lambda: tco.nn.MaxPool2d(2, 2, padding=1),
    "avg_pool": lambda: tco.nn.AvgPool2d(3, 2), "gaussian_pool": lambda: tco.nn.GaussianPool2d(3, padding=1),
    "lp_pool": lambda: tco.nn.LPPool2d(2, 2), "batch_norm": lambda: tco.nn.BatchNorm2d(3),
    "instance_norm": lambda: tco.nn.InstanceNorm2d(3), "group_norm": lambda: tco.nn.GroupNorm(3, 3),
    "layer_norm": lambda: tco.nn.LayerNorm(7),
}


@pytest.mark.parametrize("name", sorted(DYNAMIC_SPATIAL))
def test_dynamic_spatial_sizes(name):
    module = _normal_module(DYNAMIC_SPATIAL[name]()).eval()
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=4, max=64)}
    program = tco_onnx.export(module, (torch.randn(2, 3, 8, 7),), dynamic_shapes=(dims,), verbose=False)
    _check_against(program, module, (3, 13, 7), batches=(3,))


def test_dynamic_spatial_sizes_are_refused_where_the_translation_needs_them():
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=4, max=64)}
    with pytest.raises(Exception, match="avg_pool_forward: the ONNX translation needs static spatial sizes"):
        tco_onnx.export(tco.nn.AvgPool2d(3, 2, ceil_mode=True), (torch.randn(2, 2, 8, 8),), dynamic_shapes=(dims,),
                        verbose=False)
    # where the standard operator takes any size, the height stays dynamic
    module = tco.nn.MaxPool2d(2, return_indices=True)
    program = tco_onnx.export(module, (torch.randn(2, 2, 8, 8),), dynamic_shapes=(dims,), verbose=False)
    x = torch.randn(3, 2, 12, 8)
    for got, expected in zip(_run_onnx(program, x), module(x)):
        np.testing.assert_array_equal(got, expected.numpy())


def test_every_forward_operator_has_a_translation():
    forward = {name for name in dir(ops) if name.endswith("_forward") or name in ("batch_norm_stats",
                                                                                   "batch_norm_elemt")}
    assert forward == {target.name().split("::")[1] for target in tco_onnx.TRANSLATIONS}


def test_network_of_the_layers_torch_lacks():
    from test_export import _special_net  # the network tests/test_export.py exports with torch.export

    model = _special_net()
    _check_against(_export(model, torch.randn(2, 3, 10, 10)), model, (3, 10, 10))
