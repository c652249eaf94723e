"""torch.fx: our functions are leaves of symbolic tracing, our modules trace through, and the
traced graphs compute, check and update state as the eager modules do.

Every public function of ``torch_cnn_ops.functional`` and ``torch_cnn_ops.grad`` must be
recorded as one ``call_function`` node whose target is the function itself, however it is
reached; every module of ``torch_cnn_ops.nn`` must trace (its forward is traced into: only
torch.nn's own classes are fx leaf modules) into a graph that equals the module, running
statistics and ``num_batches_tracked`` included; a network converted with ``tco.convert``
must trace, and a feature extractor cut from its graph (as torchvision's
``create_feature_extractor`` does: nodes picked by module path, then dead-code elimination)
must give the unconverted network's features. torchvision itself is not used: the PyPI
wheel of torchvision 0.28.0 (the release for torch 2.13.0) is a CUDA build that does not
import against the CPU build of torch, so the ResNet-18 here is torchvision's architecture
written out in torch.nn, and the extractor is written out with torch.fx.
"""

import copy
import inspect
import operator
import pickle

import pytest
import torch
import torch.fx
from torch._dynamo.utils import counters
from torch.fx.proxy import GraphAppendingTracer

import torch_cnn_ops as tco
from torch_cnn_ops._fx import leaf
from torch_cnn_ops.nn.norm import _counted_batch_norm
import torch_cnn_ops.functional.pool as pool_module
from torch_cnn_ops import grad as G
from torch_cnn_ops.functional import max_pool2d as imported_max_pool2d

F = tco.functional

GRAD_FUNCTIONS = [f"conv{d}d_{kind}" for kind in ("input", "weight") for d in (1, 2, 3)]
PUBLIC = [(F, name) for name in F.__all__] + [(G, name) for name in GRAD_FUNCTIONS]


def _call_targets(graph_module):
    """Targets of the call_function nodes, in order, but indexing (operator.getitem)."""
    return [n.target for n in graph_module.graph.nodes if n.op == "call_function" and n.target is not operator.getitem]


def _assert_same_state(module, reference, msg):
    state, ref_state = module.state_dict(), reference.state_dict()
    assert state.keys() == ref_state.keys(), msg
    for key in state:
        torch.testing.assert_close(state[key], ref_state[key], msg=lambda m: f"{msg}, {key}: {m}")


# ---- the decorator ---------------------------------------------------------------------------------
@pytest.mark.parametrize("namespace,name", PUBLIC, ids=[f"{ns.__name__.split('.')[-1]}.{n}" for ns, n in PUBLIC])
def test_public_function_is_a_leaf_with_its_metadata(namespace, name):
    """A Proxy argument gives one call_function node targeting the public function, also outside
    symbolic_trace (a graph built by hand); name, module, docstring and signature are kept."""
    fn = getattr(namespace, name)
    original = fn.__wrapped__
    assert fn.__name__ == name and original.__name__ == name
    if original.__doc__ is not None:
        assert fn.__doc__ == original.__doc__
    assert fn.__module__ == original.__module__ and fn.__qualname__ == original.__qualname__
    assert inspect.signature(fn) == inspect.signature(original)
    assert getattr(__import__(fn.__module__, fromlist=[name]), name) is fn  # the node's target is importable
    params = list(inspect.signature(fn).parameters.values())
    required = [p for p in params if p.default is p.empty]
    graph = torch.fx.Graph()
    tracer = GraphAppendingTracer(graph)
    proxies = [torch.fx.Proxy(graph.placeholder(p.name), tracer) for p in required]
    out = fn(*proxies)
    assert isinstance(out, torch.fx.Proxy)
    node = out.node
    assert node.op == "call_function" and node.target is fn
    assert node.args[:len(proxies)] == tuple(p.node for p in proxies)
    assert len(node.args) + len(node.kwargs) == len(params)  # every parameter, defaults filled in
    # a Proxy as the last parameter, passed by keyword; the others plain values
    last = params[-1].name
    p = torch.fx.Proxy(graph.placeholder("last"), tracer)
    out = fn(*[0] * (len(required) - (last == required[-1].name)), **{last: p})
    assert out.node.target is fn and p.node in out.node.all_input_nodes


@leaf
def _positional_only(x, y=2.0, /, z=1.0, *, w=0.0):
    return x * y + z + w


@leaf
def _variadic(x, *rest, scale=1.0, **extra):
    return (x + sum(rest)) * scale + sum(extra.values())


class _UsesOtherSignatures(torch.nn.Module):
    def forward(self, x):
        return _positional_only(x, 3.0, z=x, w=1.0) + _variadic(x, x, x, scale=2.0, bonus=x)


def test_leaf_decorator_on_other_signatures():
    """Positional-only and keyword-only parameters keep their kinds; ``*args``/``**kwargs``
    functions get the generic wrapper; both record one node and compute as undecorated."""
    assert inspect.signature(_positional_only) == inspect.signature(_positional_only.__wrapped__)
    assert str(inspect.signature(_positional_only)) == "(x, y=2.0, /, z=1.0, *, w=0.0)"
    with pytest.raises(TypeError):
        _positional_only(torch.ones(1), y=2.0)  # still positional-only
    traced = torch.fx.symbolic_trace(_UsesOtherSignatures())
    targets = _call_targets(traced)
    assert targets.count(_positional_only) == 1 and targets.count(_variadic) == 1
    x = _r(3)
    torch.testing.assert_close(traced(x), 3 * x + x + 1 + (x + 2 * x) * 2 + x)


def test_functional_docstrings_are_kept():
    assert "convolution" in F.conv2d.__doc__ and "flip" in F.conv2d.__doc__
    assert "Tiled" in F.tiled_conv2d.__doc__
    assert "torch.nn.functional.batch_norm" in F.batch_norm.__doc__
    assert "input_size" in G.conv2d_input.__doc__
    assert list(inspect.signature(F.conv2d).parameters) == [
        "input", "weight", "bias", "stride", "padding", "dilation", "groups", "flip", "algorithm"]
    assert inspect.signature(F.max_pool2d) == inspect.signature(pool_module.max_pool2d.__wrapped__)


class _Call(torch.nn.Module):
    """A user module whose forward calls ``fn(*tensors, *args, **kwargs)`` on its ``n`` inputs."""

    def __init__(self, fn, n, *args, **kwargs):
        super().__init__()
        self.fn, self.n, self.args, self.kwargs = fn, n, args, kwargs

    def forward(self, *tensors):
        # tensors is a Proxy of a tuple while tracing: it can be indexed, not unpacked
        return self.fn(*[tensors[i] for i in range(self.n)], *self.args, **self.kwargs)


def _r(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def _functional_cases():
    x1, x2, x3 = _r(2, 3, 9), _r(2, 3, 8, 7), _r(1, 2, 5, 6, 4)
    return [
        ("conv1d", F.conv1d, (x1, _r(4, 3, 3)), (), {"padding": "full", "flip": True}),
        ("conv2d", F.conv2d, (x2, _r(4, 3, 2, 3), _r(4)), (1, "same"), {"algorithm": "im2col"}),
        ("conv3d", F.conv3d, (x3, _r(3, 2, 2, 2, 2)), (None, 2, 1), {}),
        ("tiled_conv1d", F.tiled_conv1d, (x1, _r(2, 4, 3, 3)), (), {"padding": 1}),
        ("tiled_conv2d", F.tiled_conv2d, (x2, _r(2, 2, 4, 3, 3, 3)), (None, 1, "same"), {}),
        ("unshared_conv1d", F.unshared_conv1d, (x1, _r(7, 4, 3, 3)), (), {}),
        ("unshared_conv2d", F.unshared_conv2d, (x2, _r(4, 4, 4, 3, 3, 3)), (None, 2, 1), {}),
        *[(f"{kind}_pool{nd}d", getattr(F, f"{kind}_pool{nd}d"), (x,), (2,), {"ceil_mode": True})
          for kind in ("max", "min", "avg") for nd, x in ((1, x1), (2, x2), (3, x3))],
        ("max_pool2d-indices", F.max_pool2d, (x2,), (3, 2, 1), {"return_indices": True}),
        *[(f"{kind}_pool2d-same", getattr(F, f"{kind}_pool2d"), (x2,), ((2, 3), 2, "same"), {})
          for kind in ("max", "min", "avg")],
        ("min_pool1d-indices", F.min_pool1d, (x1,), (2,), {"return_indices": True}),
        *[(f"lp_pool{nd}d", getattr(F, f"lp_pool{nd}d"), (x.abs(),), (2.0, 2), {})
          for nd, x in ((1, x1), (2, x2), (3, x3))],
        *[(f"adaptive_{kind}_pool{nd}d", getattr(F, f"adaptive_{kind}_pool{nd}d"), (x,), (3,), {})
          for kind in ("max", "min", "avg") for nd, x in ((1, x1), (2, x2), (3, x3))],
        ("adaptive_max_pool2d-indices", F.adaptive_max_pool2d, (x2,), ((3, None),), {"return_indices": True}),
        ("kmax_pool1d", F.kmax_pool1d, (x1,), (4,), {}),
        ("dynamic_kmax_pool1d", F.dynamic_kmax_pool1d, (x1,), (1, 3, 2), {}),
        ("channel_max_pool", F.channel_max_pool, (_r(2, 6, 5),), (3,), {}),
        ("gaussian_pool2d", F.gaussian_pool2d, (x2,), (3, 1, 1), {"sigma": 0.7}),
        ("stochastic_pool2d-eval", F.stochastic_pool2d, (x2.abs(),), (2,), {"training": False}),
        ("batch_norm", F.batch_norm, (x2, _r(3), _r(3).abs(), _r(3), _r(3)), (), {}),
        ("batch_norm-train", F.batch_norm, (x2, None, None), (), {"training": True}),
        ("instance_norm", F.instance_norm, (x2,), (), {}),
        ("group_norm", F.group_norm, (_r(2, 6, 4, 3), 3, _r(6), _r(6)), (), {}),
        ("layer_norm", F.layer_norm, (x2, (8, 7)), (), {}),
        ("conv2d_input", G.conv2d_input, ((2, 3, 8, 7), _r(4, 3, 3, 3), _r(2, 4, 6, 5)), (), {}),
        ("conv1d_weight", G.conv1d_weight, (x1, (4, 3, 3), _r(2, 4, 7)), (), {}),
    ]


FUNCTIONAL_CASES = _functional_cases()


@pytest.mark.parametrize("fn,tensors,args,kwargs", [c[1:] for c in FUNCTIONAL_CASES],
                         ids=[c[0] for c in FUNCTIONAL_CASES])
def test_functional_call_in_user_module_traces_to_one_node(fn, tensors, args, kwargs):
    # non-tensor inputs (sizes) are bound as constants; tensors become placeholders
    tensor_args = [t for t in tensors if isinstance(t, torch.Tensor)]

    positions = [i for i, t in enumerate(tensors) if isinstance(t, torch.Tensor)]

    def call(*ts):
        values = list(tensors)
        for k, i in enumerate(positions):
            values[i] = ts[k]
        return fn(*values, *args, **kwargs)

    module = _Call(call, len(tensor_args))
    traced = torch.fx.symbolic_trace(module)
    assert _call_targets(traced) == [fn], traced.code
    expected = call(*tensor_args)
    torch.testing.assert_close(traced(*tensor_args), expected)


def test_stochastic_pool_training_traced_equals_eager():
    x = _r(2, 3, 8, 8).abs()
    traced = torch.fx.symbolic_trace(_Call(F.stochastic_pool2d, 1, 2))
    assert _call_targets(traced) == [F.stochastic_pool2d]
    torch.manual_seed(3)
    expected = F.stochastic_pool2d(x, 2)
    torch.manual_seed(3)
    torch.testing.assert_close(traced(x), expected)


class _Reached(torch.nn.Module):
    """The same function reached four ways: package attribute, submodule attribute, imported
    name, and a name bound in this module's globals."""

    def forward(self, x):
        a = tco.F.max_pool2d(x, 2)
        b = pool_module.max_pool2d(x, 2)
        c = imported_max_pool2d(x, 2)
        d = torch_cnn_ops_functional.max_pool2d(x, 2)
        return a + b + c + d


torch_cnn_ops_functional = tco.functional


def test_leaf_however_the_function_is_reached():
    traced = torch.fx.symbolic_trace(_Reached())
    assert _call_targets(traced).count(F.max_pool2d) == 4
    x = _r(2, 3, 6, 6)
    torch.testing.assert_close(traced(x), 4 * F.max_pool2d(x, 2))


class _ProxyInTuple(torch.nn.Module):
    """Arguments computed from the input's shape: Proxies inside a tuple, and a Proxy size."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(_r(4, 3, 3, 3))

    def forward(self, x, gy):
        pooled = F.adaptive_avg_pool2d(x, (x.shape[2] // 2, x.shape[3] - 1))
        gx = G.conv2d_input(x.shape, self.weight, gy, padding=1)
        return pooled, gx


def test_proxy_inside_tuple_and_proxy_size():
    traced = torch.fx.symbolic_trace(_ProxyInTuple())
    assert F.adaptive_avg_pool2d in _call_targets(traced) and G.conv2d_input in _call_targets(traced)
    x, gy = _r(2, 3, 8, 6), _r(2, 4, 8, 6)
    pooled, gx = traced(x, gy)
    torch.testing.assert_close(pooled, F.adaptive_avg_pool2d(x, (4, 5)))
    torch.testing.assert_close(gx, G.conv2d_input(x.shape, traced.weight, gy, padding=1))
    x = _r(1, 3, 10, 4)  # the graph reads the shape when it runs
    torch.testing.assert_close(traced(x, _r(1, 4, 10, 4))[0], F.adaptive_avg_pool2d(x, (5, 3)))


def test_plain_calls_still_run_and_raise():
    """Outside tracing the decorated functions compute and raise as before."""
    with pytest.raises(TypeError, match="must be tensors"):
        F.conv2d([1.0], torch.ones(1, 1, 1, 1))
    with pytest.raises(RuntimeError, match="4-d|3-d"):  # torch's class for an input of the wrong rank
        F.max_pool2d(torch.ones(2, 2), 2)
    x = _r(1, 1, 4, 4)
    torch.testing.assert_close(F.max_pool2d(x, 2), torch.nn.functional.max_pool2d(x, 2))


# ---- modules ---------------------------------------------------------------------------------------
def _module_cases():
    nn = tco.nn
    c = [
        ("Conv1d", lambda: nn.Conv1d(3, 4, 3, padding="full", flip=True), (2, 3, 9), F.conv1d),
        ("Conv2d", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (2, 3, 8, 7), F.conv2d),
        ("Conv2d-reflect", lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), (2, 3, 6, 5), F.conv2d),
        ("Conv3d", lambda: nn.Conv3d(2, 3, 2, padding="same"), (1, 2, 4, 5, 3), F.conv3d),
        ("TiledConv1d", lambda: nn.TiledConv1d(3, 4, 3, tile_size=2, padding=1), (2, 3, 9), F.tiled_conv1d),
        ("TiledConv2d", lambda: nn.TiledConv2d(3, 4, 3, tile_size=2), (2, 3, 8, 7), F.tiled_conv2d),
        ("UnsharedConv1d", lambda: nn.UnsharedConv1d(3, 4, 3, input_size=9), (2, 3, 9), F.unshared_conv1d),
        ("UnsharedConv2d", lambda: nn.UnsharedConv2d(3, 4, 3, input_size=(8, 7), padding=1), (2, 3, 8, 7),
         F.unshared_conv2d),
        ("MaxPool2d-indices", lambda: nn.MaxPool2d(3, 2, 1, return_indices=True), (2, 3, 8, 7), F.max_pool2d),
        ("AdaptiveMaxPool1d-indices", lambda: nn.AdaptiveMaxPool1d(4, return_indices=True), (2, 3, 9),
         F.adaptive_max_pool1d),
        ("KMaxPool1d", lambda: nn.KMaxPool1d(3), (2, 3, 9), F.kmax_pool1d),
        ("DynamicKMaxPool1d", lambda: nn.DynamicKMaxPool1d(1, 2, 2), (2, 3, 9), F.dynamic_kmax_pool1d),
        ("Maxout", lambda: nn.Maxout(2), (2, 4, 5), F.channel_max_pool),
        ("GaussianPool2d", lambda: nn.GaussianPool2d(3, 2, 1, sigma=1.5), (2, 3, 8, 7), F.gaussian_pool2d),
        ("StochasticPool2d", lambda: nn.StochasticPool2d(2), (2, 3, 8, 6), F.stochastic_pool2d),
        ("GroupNorm", lambda: nn.GroupNorm(2, 4), (2, 4, 5, 3), F.group_norm),
        ("LayerNorm", lambda: nn.LayerNorm([5, 3]), (2, 4, 5, 3), F.layer_norm),
        ("SyncBatchNorm", lambda: nn.SyncBatchNorm(3), (4, 3, 5), _counted_batch_norm),
    ]
    for kind in ("Max", "Min", "Avg", "LP"):
        for nd, shape in ((1, (2, 3, 9)), (2, (2, 3, 8, 7)), (3, (1, 2, 5, 6, 4))):
            make = (lambda k=kind, n=nd: getattr(nn, f"{k}Pool{n}d")(2, ceil_mode=True)) if kind != "LP" else \
                (lambda n=nd: getattr(nn, f"LPPool{n}d")(2.0, 2))
            c.append((f"{kind}Pool{nd}d", make, shape, getattr(F, f"{kind.lower()}_pool{nd}d")))
    for kind in ("Max", "Min", "Avg"):
        for nd, shape in ((1, (2, 3, 9)), (2, (2, 3, 8, 7)), (3, (1, 2, 5, 6, 4))):
            c.append((f"Adaptive{kind}Pool{nd}d", lambda k=kind, n=nd: getattr(nn, f"Adaptive{k}Pool{n}d")(3), shape,
                      getattr(F, f"adaptive_{kind.lower()}_pool{nd}d")))
    for nd, shape in ((1, (4, 3, 5)), (2, (2, 3, 4, 5)), (3, (2, 3, 2, 3, 4))):
        for momentum in (0.1, None):
            c.append((f"BatchNorm{nd}d-momentum-{momentum}",
                      lambda n=nd, m=momentum: getattr(nn, f"BatchNorm{n}d")(3, momentum=m), shape,
                      _counted_batch_norm))
        c.append((f"BatchNorm{nd}d-no-tracking",
                  lambda n=nd: getattr(nn, f"BatchNorm{n}d")(3, track_running_stats=False), shape, F.batch_norm))
        c.append((f"InstanceNorm{nd}d-tracking",
                  lambda n=nd: getattr(nn, f"InstanceNorm{n}d")(3, affine=True, track_running_stats=True), shape,
                  F.instance_norm))
        c.append((f"InstanceNorm{nd}d", lambda n=nd: getattr(nn, f"InstanceNorm{n}d")(3), shape, F.instance_norm))
    return c


MODULE_CASES = _module_cases()


def _randomise(module):
    """Parameters and running statistics away from their initial values, so that a graph that
    skipped them would differ."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
        for name, b in module.named_buffers():
            if b.is_floating_point():
                b.uniform_(0.5, 1.5)


@pytest.mark.parametrize("make,shape,fn", [c[1:] for c in MODULE_CASES], ids=[c[0] for c in MODULE_CASES])
def test_module_traces_and_equals_eager(make, shape, fn):
    """Train then eval: the traced graph gives the eager module's outputs and moves the module's
    state (running statistics, num_batches_tracked) the same way; tracing itself moves nothing."""
    torch.manual_seed(0)
    module = make().double()
    _randomise(module)
    eager = copy.deepcopy(module)
    before = copy.deepcopy(module.state_dict())
    traced = torch.fx.symbolic_trace(module.train())
    _assert_same_state(module, eager, "state after tracing")
    for key, value in before.items():
        assert torch.equal(module.state_dict()[key], value), f"tracing changed {key}"
    assert fn in _call_targets(traced), traced.code
    assert not [n for n in traced.graph.nodes if n.op == "call_module"], "our modules are traced into"
    traced_eval = torch.fx.symbolic_trace(copy.deepcopy(module).eval())
    for step in range(3):
        x = _r(*shape).abs()
        torch.manual_seed(step)
        out = traced(x)
        torch.manual_seed(step)
        ref = eager.train()(x)
        torch.testing.assert_close(out, ref, msg=lambda m: f"train step {step}: {m}")
        _assert_same_state(module, eager, f"train step {step}")
    traced_eval.load_state_dict(module.state_dict(), strict=False)
    eager.eval()
    x = _r(*shape).abs()
    torch.testing.assert_close(traced_eval(x), eager(x), msg=lambda m: f"eval: {m}")
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
        assert int(module.num_batches_tracked) == 3


def test_batch_norm_graph_reads_count_and_updates_in_place():
    """momentum=None: the graph reads num_batches_tracked when it runs (1/1, 1/2, 1/3, ...), so
    the running mean is the plain average of the batches, as torch's layer computes it."""
    ours = tco.nn.BatchNorm1d(2, momentum=None).double()
    theirs = torch.nn.BatchNorm1d(2, momentum=None).double()
    traced = torch.fx.symbolic_trace(ours)
    targets = _call_targets(traced)
    assert _counted_batch_norm in targets  # training with running statistics: counts, then F.batch_norm
    batches = [_r(5, 2) + i for i in range(4)]
    for x in batches:
        torch.testing.assert_close(traced(x), theirs(x))
    torch.testing.assert_close(ours.running_mean, torch.stack([b.mean(0) for b in batches]).mean(0))
    _assert_same_state(ours, theirs, "after four batches")
    assert int(ours.num_batches_tracked) == 4


def test_traced_graph_keeps_the_input_checks():
    bn = torch.fx.symbolic_trace(tco.nn.BatchNorm2d(3))
    with pytest.raises(ValueError, match="expected 4D input"):
        bn(torch.randn(2, 3, 4))
    bn1 = torch.fx.symbolic_trace(tco.nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="expected 2D or 3D input"):
        bn1(torch.randn(2, 3, 4, 4))
    sync = torch.fx.symbolic_trace(tco.nn.SyncBatchNorm(3))
    with pytest.raises(ValueError, match="at least 2D"):
        sync(torch.randn(3))
    inorm = torch.fx.symbolic_trace(tco.nn.InstanceNorm2d(3, affine=True))
    with pytest.raises(ValueError, match="num_features"):
        inorm(torch.randn(2, 4, 5, 5))
    local = torch.fx.symbolic_trace(tco.nn.UnsharedConv2d(3, 4, 3, input_size=(8, 8), stride=2))
    with pytest.raises(ValueError, match="input_size"):
        local(torch.randn(2, 3, 7, 7))  # the output size of 8 x 8: only the module's check sees it


def test_failed_call_of_traced_batch_norm_counts_nothing():
    bn = tco.nn.BatchNorm2d(3)
    traced = torch.fx.symbolic_trace(bn)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        traced(torch.randn(1, 3, 1, 1))
    assert int(bn.num_batches_tracked) == 0
    assert torch.equal(bn.running_mean, torch.zeros(3)) and torch.equal(bn.running_var, torch.ones(3))


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_traced_instance_norm_takes_unbatched_input(nd):
    """The graph does not fix the input's rank: an unbatched input works as in eager mode."""
    module = getattr(tco.nn, f"InstanceNorm{nd}d")(3, affine=True, track_running_stats=True).double()
    _randomise(module)
    eager = copy.deepcopy(module)
    traced = torch.fx.symbolic_trace(module)
    x = _r(3, *[5, 4, 3][:nd])
    torch.testing.assert_close(traced(x), eager(x))
    _assert_same_state(module, eager, "unbatched")
    with pytest.warns(UserWarning, match="num_features"):
        torch.fx.symbolic_trace(getattr(tco.nn, f"InstanceNorm{nd}d")(4))(_r(2, 3, *[5, 4, 3][:nd]))


def test_graph_module_copies_and_pickles():
    model = tco.convert(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                                            torch.nn.MaxPool2d(2))).double().eval()
    traced = torch.fx.symbolic_trace(model)
    x = _r(2, 3, 8, 8)
    for other in (copy.deepcopy(traced), pickle.loads(pickle.dumps(traced))):
        assert _call_targets(other) == _call_targets(traced)
        torch.testing.assert_close(other(x), model(x))


# ---- a converted network ---------------------------------------------------------------------------
class _BasicBlock(torch.nn.Module):
    """torchvision.models.resnet.BasicBlock."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(planes)
        self.relu = torch.nn.ReLU(inplace=True)
        self.conv2 = torch.nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class _ResNet18(torch.nn.Module):
    """torchvision.models.resnet18(weights=None): the same layers, names and forward."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(64)
        self.relu = torch.nn.ReLU(inplace=True)
        self.maxpool = torch.nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, 2)
        self.layer3 = self._make_layer(256, 2, 2)
        self.layer4 = self._make_layer(512, 2, 2)
        self.avgpool = torch.nn.AdaptiveAvgPool2d((1, 1))
        self.fc = torch.nn.Linear(512, num_classes)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = torch.nn.Sequential(torch.nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                             torch.nn.BatchNorm2d(planes))
        layers = [_BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [_BasicBlock(planes, planes) for _ in range(1, blocks)]
        return torch.nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = _ResNet18(num_classes=10).double()
    with torch.no_grad():  # running statistics away from (0, 1), so that eval differs from train
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1), m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.1, 0.1)
    return model


def _image(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 32, 32, dtype=torch.float64, generator=g)


def test_converted_resnet18_traces_and_equals_eager(resnet):
    reference = copy.deepcopy(resnet)
    converted = tco.convert(resnet)
    eager = copy.deepcopy(converted)
    traced = torch.fx.symbolic_trace(converted)
    targets = _call_targets(traced)
    assert targets.count(F.conv2d) == 20 and targets.count(_counted_batch_norm) == 20
    assert F.max_pool2d in targets and F.adaptive_avg_pool2d in targets
    leaf_modules = {type(traced.get_submodule(n.target)) for n in traced.graph.nodes if n.op == "call_module"}
    assert leaf_modules == {torch.nn.ReLU, torch.nn.Linear}
    for step in range(2):  # training: outputs and every running statistic as eager, ours and torch's
        x = _image(step)
        out = traced(x)
        torch.testing.assert_close(out, eager(x))
        torch.testing.assert_close(out, reference(x))
        _assert_same_state(converted, eager, f"train step {step}")
        _assert_same_state(converted, reference, f"train step {step}, torch's")
    assert int(converted.bn1.num_batches_tracked) == 2
    traced_eval = torch.fx.symbolic_trace(converted.eval())
    eager.eval(), reference.eval()
    x = _image(5)
    torch.testing.assert_close(traced_eval(x), eager(x))
    torch.testing.assert_close(traced_eval(x), reference(x))


def _feature_extractor(model, return_nodes):
    """torchvision's ``create_feature_extractor(model, return_nodes)`` for module names: the
    graph of ``model`` with, as outputs, the last node traced inside each named module, and
    what those do not need removed by dead-code elimination."""
    traced = torch.fx.symbolic_trace(model)
    graph = traced.graph
    picked = {}
    for node in graph.nodes:
        scopes = {qualname for qualname, _ in node.meta.get("nn_module_stack", {}).values()}
        for name in return_nodes:
            if name in scopes:
                picked[name] = node
    assert set(picked) == set(return_nodes), picked
    graph.erase_node(next(n for n in graph.nodes if n.op == "output"))
    graph.output({return_nodes[name]: picked[name] for name in return_nodes})
    graph.eliminate_dead_code()
    graph.lint()
    traced.recompile()
    return traced


def _eager_features(model, return_nodes, x):
    features = {}
    handles = [model.get_submodule(name).register_forward_hook(
        lambda m, args, out, key=key: features.__setitem__(key, out.clone())) for name, key in return_nodes.items()]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    return features


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_feature_extractor_of_converted_resnet18(resnet, train):
    """Features cut from the converted network's graph equal the unconverted network's; in
    training the layers they pass through update their running statistics and batch counts
    as torch's do (the counts survive dead-code elimination)."""
    return_nodes = {"layer1": "feat1", "layer2": "feat2", "layer3.0.bn2": "mid", "layer4": "feat4"}
    reference = copy.deepcopy(resnet).train(train)
    converted = tco.convert(resnet).train(train)
    extractor = _feature_extractor(converted, return_nodes)
    assert F.conv2d in _call_targets(extractor)
    assert not any(n.op == "call_module" and n.target == "fc" for n in extractor.graph.nodes), "fc is dead code"
    for step in range(2):
        x = _image(10 + step)
        features = extractor(x)
        expected = _eager_features(reference, return_nodes, x)
        assert features.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(features[key], expected[key], msg=lambda m: f"{key}, step {step}: {m}")
        _assert_same_state(converted, reference, f"step {step}")
    assert int(converted.layer4[1].bn2.num_batches_tracked) == (2 if train else 0)


def test_tco_models_resnet_traces():
    model = tco.models.ResNet(tco.models.Bottleneck, layers=(1, 1), num_classes=5).double()
    eager = copy.deepcopy(model)
    traced = torch.fx.symbolic_trace(model)
    x = _r(2, 3, 16, 16)
    torch.testing.assert_close(traced(x), eager(x))
    _assert_same_state(model, eager, "train step")


# ---- torch.compile through the decorated functions ----------------------------------------------------
def _compiled_function(x, w):
    y = F.conv2d(x, w, padding="same", algorithm="im2col")
    y, indices = F.max_pool2d(y, (2, 2), ceil_mode=True, return_indices=True)
    y = F.adaptive_avg_pool2d(y, [3, None]) + indices.to(y.dtype).mean()
    y = F.batch_norm(y, None, None, training=True)
    return F.group_norm(y, 2) + F.kmax_pool1d(y.flatten(2), 2).sum()


def test_compile_fullgraph_through_decorated_functions():
    torch._dynamo.reset()
    counters.clear()
    x, w = _r(2, 3, 8, 8), _r(4, 3, 3, 3)
    compiled = torch.compile(_compiled_function, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, w), _compiled_function(x, w))
    assert not counters["graph_break"]


def test_compile_fullgraph_converted_network_and_its_graph_module():
    """A converted network in training (BatchNorm counting its batches) and the GraphModule
    traced from it both compile into one graph each, and keep computing as in eager mode."""
    torch._dynamo.reset()
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.MaxPool2d(2), torch.nn.InstanceNorm2d(4, affine=True)).double()
    converted = tco.convert(net)
    eager = copy.deepcopy(converted)
    compiled = torch.compile(converted, fullgraph=True, backend="aot_eager")
    traced = torch.compile(torch.fx.symbolic_trace(copy.deepcopy(converted)), fullgraph=True, backend="aot_eager")
    for step in range(2):
        x = _r(2, 3, 8, 8)
        ref = eager(x)
        torch.testing.assert_close(compiled(x), ref)
        torch.testing.assert_close(traced(x), ref)
    _assert_same_state(converted, eager, "compiled module")
    assert int(converted[1].num_batches_tracked) == 2
