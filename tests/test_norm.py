"""Tests of the norm family: tco.functional batch/instance/group/layer norm, the modules of
tco.nn (BatchNorm1d/2d/3d, SyncBatchNorm, GroupNorm, LayerNorm, InstanceNorm1d/2d/3d) and
the raw ops torch.ops.cnn_ops.*norm*.

References are torch.nn's modules and torch.nn.functional's functions, run in float64 on
the CPU from the same inputs and parameters. SyncBatchNorm across processes is compared with
one process's torch.nn.BatchNorm2d on the whole batch.
"""

import copy
import inspect
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import (LOW_PRECISION_DTYPES, as_reference, assert_close_to_reference, opcheck_case, randn,
                      requires_cuda)

import torch_cnn_ops as tco

TF = tco.functional
ops = torch.ops.cnn_ops
BAD_INPUT = (RuntimeError, ValueError)

# an input shape per module rank: (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W)
SHAPES = {"0d": (5, 3), "1d": (4, 3, 6), "2d": (3, 3, 4, 5), "3d": (2, 3, 3, 4, 3)}
BN_CLASS = {"0d": "BatchNorm1d", "1d": "BatchNorm1d", "2d": "BatchNorm2d", "3d": "BatchNorm3d"}


def _pair(name, *args, device="cpu", **kwargs):
    """(ours, torch's) module `name` with the same (randomised) parameters, in float64."""
    theirs = getattr(torch.nn, name)(*args, **kwargs).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape, dtype=torch.float64))
    ours = getattr(tco.nn, name)(*args, **kwargs).double()
    # SyncBatchNorm derives from torch's _BatchNorm (DistributedDataParallel refuses CPU modules
    # holding torch.nn.SyncBatchNorm); the others from their torch.nn twin
    twin = torch.nn.modules.batchnorm._BatchNorm if name == "SyncBatchNorm" else type(theirs)
    assert isinstance(ours, twin) and repr(ours) == repr(theirs)
    ours.load_state_dict(theirs.state_dict())
    return ours.to(device), theirs


def _compare_state(ours, theirs, msg):
    theirs_state = theirs.state_dict()
    for key, value in ours.state_dict().items():
        ref = theirs_state[key]
        if value is None or ref is None:
            assert value is None and ref is None, f"{msg}: {key}"
        elif value.dtype == torch.int64:
            assert torch.equal(value.cpu(), ref), f"{msg}: {key} {value} != {ref}"
        else:
            assert_close_to_reference(value, ref, msg=f"{msg}: {key}")
    assert ours.state_dict().keys() == theirs_state.keys()


def _step(ours, theirs, shape, device, msg, memory_format=None):
    """One forward and backward through both modules; compares output, all gradients and state."""
    x = randn(*shape, device=device)
    if memory_format is not None:
        x = x.contiguous(memory_format=memory_format)
    x.requires_grad_()
    xr = as_reference(x)
    if memory_format is not None:
        xr = xr.detach().contiguous(memory_format=memory_format).requires_grad_()
    out, ref = ours(x), theirs(xr)
    assert_close_to_reference(out, ref, msg=f"{msg} output")
    if memory_format is not None:
        ours_cl, torch_cl = (t.is_contiguous(memory_format=memory_format) for t in (out, ref))
        assert ours_cl == torch_cl, f"{msg}: output in {memory_format}: ours {ours_cl}, torch's {torch_cl}"
    gy = randn(*ref.shape, device=device)
    out.backward(gy)
    ref.backward(gy.cpu())
    assert_close_to_reference(x.grad, xr.grad, msg=f"{msg} input gradient")
    for (name, p), pr in zip(ours.named_parameters(), theirs.parameters()):
        assert_close_to_reference(p.grad, pr.grad, msg=f"{msg} {name} gradient")
        p.grad, pr.grad = None, None
    _compare_state(ours, theirs, msg)
    return out


# ---- batch norm modules ---------------------------------------------------------------------------------
# (track_running_stats, momentum): momentum is read only when the running statistics are tracked
TRACKING = [(True, 0.1), (True, None), (False, 0.1)]
TRACKING_IDS = ["track-0.1", "track-None", "no-track"]


@pytest.mark.parametrize("track,momentum", TRACKING, ids=TRACKING_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("rank", list(SHAPES))
def test_batch_norm_modules_train_then_eval(rank, affine, track, momentum, device):
    ours, theirs = _pair(BN_CLASS[rank], 3, momentum=momentum, affine=affine, track_running_stats=track,
                         device=device)
    for step in range(3):
        _step(ours.train(), theirs.train(), SHAPES[rank], device, f"train step {step}")
    for step in range(2):
        _step(ours.eval(), theirs.eval(), SHAPES[rank], device, f"eval step {step}")
    if track:
        assert ours.num_batches_tracked.item() == 3


@pytest.mark.parametrize("rank,fmt", [("2d", torch.channels_last), ("3d", torch.channels_last_3d)])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_batch_norm_channels_last(rank, fmt, train, device):
    ours, theirs = _pair(BN_CLASS[rank], 3, device=device)
    ours.train(train), theirs.train(train)
    shape = (3, 3, 5, 6) if rank == "2d" else (2, 3, 3, 4, 5)
    for step in range(2):
        _step(ours, theirs, shape, device, f"step {step}", memory_format=fmt)


@pytest.mark.parametrize("name,args", [("GroupNorm", (3, 6)), ("LayerNorm", ([4, 5],)), ("InstanceNorm2d", (6,))],
                         ids=["group", "layer", "instance"])
def test_other_norms_channels_last(name, args, device):
    """Values, gradients and the output's layout as torch's for a channels_last input."""
    ours, theirs = _pair(name, *args, device=device)
    _step(ours, theirs, (2, 6, 4, 5), device, name, memory_format=torch.channels_last)


def test_batch_norm_noncontiguous_input(device):
    ours, theirs = _pair("BatchNorm2d", 3, device=device)
    x = randn(4, 6, 5, 3, device=device).permute(0, 3, 1, 2)[:, :, ::2]  # (4, 3, 3, 5), strided
    assert_close_to_reference(ours(x), theirs(x.cpu()))
    _compare_state(ours, theirs, "running statistics")


def test_batch_norm_state_dict_both_ways():
    theirs = torch.nn.BatchNorm2d(4, momentum=None).double()
    theirs(torch.randn(3, 4, 5, 5, dtype=torch.float64))
    ours = tco.nn.BatchNorm2d(4, momentum=None).double()
    ours.load_state_dict(theirs.state_dict())
    _compare_state(ours, theirs, "ours from torch's")
    x = torch.randn(3, 4, 5, 5, dtype=torch.float64)
    ours(x), theirs(x)
    back = torch.nn.BatchNorm2d(4, momentum=None).double()
    back.load_state_dict(ours.state_dict())
    _compare_state(ours, back, "torch's from ours")
    _compare_state(ours, theirs, "after a step")


def test_norm_state_dicts_load_both_ways():
    for name, args, kwargs in [("GroupNorm", (2, 4), {}), ("LayerNorm", ([4, 3],), {"bias": False}),
                               ("InstanceNorm2d", (4,), {"affine": True, "track_running_stats": True}),
                               ("BatchNorm1d", (4,), {"affine": False})]:
        ours, theirs = _pair(name, *args, **kwargs)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        fresh = getattr(torch.nn, name)(*args, **kwargs).double()
        fresh.load_state_dict(ours.state_dict())
        _compare_state(ours, fresh, name)


# ---- group, layer and instance norm modules ------------------------------------------------------------
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("shape,groups", [((4, 6), 3), ((3, 6, 7), 2), ((2, 6, 4, 5), 3), ((2, 4, 3, 2, 3), 4),
                                          ((2, 6, 4, 5), 1), ((1, 6, 3), 6)])
def test_group_norm_module(shape, groups, affine, device):
    ours, theirs = _pair("GroupNorm", groups, shape[1], affine=affine, device=device)
    for step in range(2):
        _step(ours, theirs, shape, device, f"step {step}")


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"bias": False}],
                         ids=["affine", "no-affine", "no-bias"])
@pytest.mark.parametrize("shape,normalized", [((4, 7), 7), ((3, 4, 5), [5]), ((2, 3, 4, 5), (3, 4, 5)),
                                              ((2, 3, 4, 5), [4, 5]), ((6,), [6])])
def test_layer_norm_module(shape, normalized, kwargs, device):
    ours, theirs = _pair("LayerNorm", normalized, **kwargs, device=device)
    for step in range(2):
        _step(ours, theirs, shape, device, f"step {step}")


@pytest.mark.parametrize("track,momentum", TRACKING, ids=TRACKING_IDS)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_instance_norm_modules(nd, affine, track, momentum, device):
    ours, theirs = _pair(f"InstanceNorm{nd}d", 3, affine=affine, track_running_stats=track, momentum=momentum,
                         device=device)
    shape = (2, 3, *[4, 5, 3][:nd])
    for step in range(2):
        _step(ours.train(), theirs.train(), shape, device, f"train step {step}")
    _step(ours, theirs, shape[1:], device, "unbatched train")
    _step(ours.eval(), theirs.eval(), shape, device, "eval")
    _step(ours, theirs, shape[1:], device, "unbatched eval")


# ---- functional -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, 0.5, 1.0, 0.0])
@pytest.mark.parametrize("rank", ["0d", "2d", "3d"])
def test_functional_batch_norm_matches_torch(rank, momentum, device):
    shape = SHAPES[rank]
    rm, rv = randn(3, device=device), randn(3, device=device).abs() + 0.5
    rm_ref, rv_ref = rm.cpu().clone(), rv.cpu().clone()
    w, b = randn(3, device=device, requires_grad=True), randn(3, device=device, requires_grad=True)
    for training in (True, False, True):
        x = randn(*shape, device=device, requires_grad=True)
        out = TF.batch_norm(x, rm, rv, w, b, training, momentum, 1e-3)
        xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
        ref = F.batch_norm(xr, rm_ref, rv_ref, wr, br, training, momentum, 1e-3)
        assert_close_to_reference(out, ref, msg=f"training={training} output")
        assert_close_to_reference(rm, rm_ref, msg="running_mean")
        assert_close_to_reference(rv, rv_ref, msg="running_var")
        gy = randn(*shape, device=device)
        gx, gw, gb = torch.autograd.grad(out, (x, w, b), gy)
        rgx, rgw, rgb = torch.autograd.grad(ref, (xr, wr, br), gy.cpu())
        for a, e, name in ((gx, rgx, "input"), (gw, rgw, "weight"), (gb, rgb, "bias")):
            assert_close_to_reference(a, e, msg=f"training={training} {name} gradient")


@pytest.mark.parametrize("affine", [True, False])
def test_functional_batch_norm_without_running_stats(affine, device):
    x = randn(4, 3, 5, device=device, requires_grad=True)
    w = randn(3, device=device) if affine else None
    b = randn(3, device=device) if affine else None
    out = TF.batch_norm(x, None, None, w, b, training=True)
    xr = as_reference(x)
    ref = F.batch_norm(xr, None, None, as_reference(w), as_reference(b), training=True)
    assert_close_to_reference(out, ref)
    gy = randn(4, 3, 5, device=device)
    assert_close_to_reference(torch.autograd.grad(out, x, gy)[0], torch.autograd.grad(ref, xr, gy.cpu())[0])


def test_functional_instance_norm_matches_torch(device):
    x = randn(3, 4, 5, 6, device=device)
    w, b = randn(4, device=device), randn(4, device=device)
    rm, rv = randn(4, device=device), randn(4, device=device).abs() + 0.5
    rm_ref, rv_ref = rm.cpu().clone(), rv.cpu().clone()
    out = TF.instance_norm(x, rm, rv, w, b, True, 0.3, 1e-4)
    ref = F.instance_norm(x.cpu(), rm_ref, rv_ref, w.cpu(), b.cpu(), True, 0.3, 1e-4)
    assert_close_to_reference(out, ref, msg="with input statistics")
    assert_close_to_reference(rm, rm_ref, msg="running_mean")
    assert_close_to_reference(rv, rv_ref, msg="running_var")
    out = TF.instance_norm(x, rm, rv, w, b, False, 0.3, 1e-4)
    ref = F.instance_norm(x.cpu(), rm_ref, rv_ref, w.cpu(), b.cpu(), False, 0.3, 1e-4)
    assert_close_to_reference(out, ref, msg="with running statistics")
    assert_close_to_reference(TF.instance_norm(x), F.instance_norm(x.cpu()), msg="plain")


@pytest.mark.parametrize("affine", [True, False])
def test_functional_group_and_layer_norm_match_torch(affine, device):
    x = randn(2, 6, 4, 3, device=device)
    w = randn(6, device=device) if affine else None
    b = randn(6, device=device) if affine else None
    assert_close_to_reference(TF.group_norm(x, 3, w, b, 1e-3),
                              F.group_norm(x.cpu(), 3, as_reference(w), as_reference(b), 1e-3), msg="group_norm")
    w2 = randn(4, 3, device=device) if affine else None
    b2 = randn(4, 3, device=device) if affine else None
    assert_close_to_reference(TF.layer_norm(x, (4, 3), w2, b2, 1e-3),
                              F.layer_norm(x.cpu(), (4, 3), as_reference(w2), as_reference(b2), 1e-3),
                              msg="layer_norm")
    assert_close_to_reference(TF.layer_norm(x, 3), F.layer_norm(x.cpu(), [3]), msg="layer_norm int shape")


@pytest.mark.parametrize("shape,groups", [((2, 4, 30, 50), 2), ((1, 2, 96, 96), 1)])
def test_group_and_layer_norm_long_rows(shape, groups, device):
    # Groups of 3,000 and 18,432 values, layer-norm rows of 1,500 and 9,216: longer than the
    # 1,024 values a warp takes on CUDA, so a block takes each row, and rows of more than 4,096
    # values, being few, are split over blocks whose partial statistics are then combined.
    x = randn(*shape, device=device, requires_grad=True)
    w = randn(shape[1], device=device, requires_grad=True)
    lw = randn(*shape[2:], device=device, requires_grad=True)
    xr, wr, lwr = as_reference(x), as_reference(w), as_reference(lw)
    ours = (TF.group_norm(x, groups, w, None), TF.layer_norm(x, shape[2:], lw, None))
    refs = (F.group_norm(xr, groups, wr, None), F.layer_norm(xr, shape[2:], lwr, None))
    for name, out, ref in zip(("group_norm", "layer_norm"), ours, refs):
        assert_close_to_reference(out, ref, msg=name)
    gy = randn(*shape, device=device)
    grads = torch.autograd.grad(ours, (x, w, lw), (gy, gy))
    ref_grads = torch.autograd.grad(refs, (xr, wr, lwr), (as_reference(gy), as_reference(gy)))
    for name, g, r in zip(("input", "group weight", "layer weight"), grads, ref_grads):
        assert_close_to_reference(g, r, msg=f"grad {name}")


def test_functional_names_and_signatures():
    import inspect

    for name in ("batch_norm", "instance_norm", "group_norm", "layer_norm"):
        ours, theirs = inspect.signature(getattr(TF, name)), inspect.signature(getattr(F, name))
        assert list(ours.parameters) == list(theirs.parameters), name
        for p in ours.parameters.values():
            assert p.default == theirs.parameters[p.name].default, f"{name}: default of {p.name}"
        assert getattr(tco.F, name) is getattr(TF, name)


# ---- gradcheck / gradgradcheck -----------------------------------------------------------------------
def _grad_cases():
    def bn(training):
        def fn(x, w, b):
            rm, rv = torch.linspace(-0.5, 0.5, 3, dtype=x.dtype), torch.linspace(0.5, 1.5, 3, dtype=x.dtype)
            return TF.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-3)
        return fn

    return {
        "batch-train": (bn(True), (3, 3, 4), (3,)),
        "batch-train-2d": (bn(True), (2, 3, 2, 2), (3,)),
        "batch-eval": (bn(False), (3, 3, 4), (3,)),
        "batch-no-stats": (lambda x, w, b: TF.batch_norm(x, None, None, w, b, True, eps=1e-3), (4, 3), (3,)),
        "group": (lambda x, w, b: TF.group_norm(x, 2, w, b, 1e-3), (2, 4, 3), (4,)),
        "group-2d": (lambda x, w, b: TF.group_norm(x, 3, w, b, 1e-3), (2, 3, 2, 2), (3,)),
        "layer": (lambda x, w, b: TF.layer_norm(x, (3, 4), w, b, 1e-3), (2, 3, 4), (3, 4)),
        "layer-1": (lambda x, w, b: TF.layer_norm(x, 5, w, b, 1e-3), (3, 5), (5,)),
        "instance": (lambda x, w, b: TF.instance_norm(x, None, None, w, b, eps=1e-3), (2, 3, 4), (3,)),
    }


GRAD_CASES = _grad_cases()


@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "no-weight"])
@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradcheck_and_gradgradcheck(name, with_weight, device):
    fn, shape, pshape = GRAD_CASES[name]
    x = randn(*shape, device=device, requires_grad=True)
    if with_weight:
        w = randn(*pshape, device=device, requires_grad=True)
        b = randn(*pshape, device=device, requires_grad=True)
        args = (x, w, b)
        f = fn
    else:
        args = (x,)
        def f(x):
            return fn(x, None, None)
    if device == "cuda":  # the running statistics of the eval case live on the input's device
        f0 = f
        def f(*a):
            with torch.device(device):
                return f0(*a)
    assert torch.autograd.gradcheck(f, args)
    assert torch.autograd.gradgradcheck(f, args)


def test_double_backward_of_weight_only_graph(device):
    """The second derivative with respect to weight alone (input not requiring grad)."""
    x = randn(3, 3, 4, device=device)
    w = randn(3, device=device, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda w: TF.batch_norm(x, None, None, w, None, True), (w,))
    assert torch.autograd.gradgradcheck(lambda w: TF.group_norm(x, 3, w), (w,))


# ---- opcheck of the raw ops ---------------------------------------------------------------------------
def _opcheck_cases(device):
    def r(*shape, grad=False):
        return randn(*shape, device=device, requires_grad=grad)

    x, gy = r(3, 4, 5, 2), r(3, 4, 5, 2)
    xc = x.contiguous(memory_format=torch.channels_last)
    w, b = r(4, grad=True), r(4, grad=True)
    mean, var = ops.batch_norm_stats(x)
    invstd = (var + 1e-5).rsqrt()
    rm, rv = r(4), r(4).abs() + 0.5
    sum_dy, sum_dy_xmu = ops.batch_norm_backward_reduce(gy, x, mean)
    xg = r(3, 4, 5, 2, grad=True)
    g_out, g_mean, g_rstd = ops.group_norm_forward(x, w.detach(), b.detach(), 2, 1e-5)
    l_out, l_mean, l_rstd = ops.layer_norm_forward(x, [5, 2], None, None, 1e-5)
    return [
        ("batch_norm_stats", (x,)),
        ("batch_norm_stats", (xc,)),
        ("batch_norm_elemt", (x, w.detach(), b.detach(), mean, invstd)),
        ("batch_norm_forward", (xg, w, b, rm, rv, True, 1e-5)),
        ("batch_norm_forward", (xg, w, b, rm, rv, False, 1e-5)),
        ("batch_norm_forward", (xc.detach().requires_grad_(), None, None, None, None, True, 1e-3)),
        ("batch_norm_update_stats", (rm.clone(), rv.clone(), mean, var, 30, 0.1)),
        ("batch_norm_backward_reduce", (gy, x, mean)),
        ("batch_norm_backward_elemt", (gy, x, mean, invstd, w.detach(), sum_dy, sum_dy_xmu, 30)),
        ("batch_norm_backward", (r(3, 4, 5, 2, grad=True), xg, w, mean, invstd, True, 1e-5)),
        ("batch_norm_backward", (r(3, 4, 5, 2, grad=True), xg, None, rm, (rv + 1e-5).rsqrt(), False, 1e-5)),
        ("group_norm_forward", (xg, w, b, 2, 1e-5)),
        ("group_norm_backward", (r(3, 4, 5, 2, grad=True), xg, w, g_mean, g_rstd, 2, 1e-5)),
        ("layer_norm_forward", (xg, [5, 2], r(5, 2, grad=True), r(5, 2, grad=True), 1e-5)),
        ("layer_norm_backward", (r(3, 4, 5, 2, grad=True), xg, [5, 2], r(5, 2, grad=True), l_mean, l_rstd,
                                 1e-5)),
    ]


OPCHECK_IDS = ["stats", "stats-cl", "elemt", "forward-train", "forward-eval", "forward-cl-no-stats", "update-stats",
               "backward-reduce", "backward-elemt", "backward-train", "backward-eval", "group", "group-backward",
               "layer", "layer-backward"]


@pytest.mark.parametrize("i", range(len(OPCHECK_IDS)), ids=OPCHECK_IDS)
def test_opcheck(i, device):
    opcheck_case(_opcheck_cases, i, device)


def test_every_norm_op_is_opchecked():
    names = {name for name, _ in _opcheck_cases("cpu")}
    assert names == {"batch_norm_stats", "batch_norm_elemt", "batch_norm_forward", "batch_norm_update_stats",
                     "batch_norm_backward_reduce", "batch_norm_backward_elemt", "batch_norm_backward",
                     "group_norm_forward", "group_norm_backward", "layer_norm_forward", "layer_norm_backward"}


def test_raw_ops_match_torch(device):
    x = randn(3, 4, 5, device=device)
    mean, var = ops.batch_norm_stats(x)
    assert_close_to_reference(mean, x.cpu().mean((0, 2)), msg="mean")
    assert_close_to_reference(var, x.cpu().var((0, 2), correction=0), msg="var")
    rm, rv = torch.zeros(4, dtype=torch.float64, device=device), torch.ones(4, dtype=torch.float64, device=device)
    ops.batch_norm_update_stats(rm, rv, mean, var, 15, 0.25)
    assert_close_to_reference(rm, 0.25 * x.cpu().mean((0, 2)), msg="running_mean")
    assert_close_to_reference(rv, 0.75 + 0.25 * x.cpu().var((0, 2), correction=1), msg="running_var")
    gy = randn(3, 4, 5, device=device)
    sum_dy, sum_dy_xmu = ops.batch_norm_backward_reduce(gy, x, mean)
    assert_close_to_reference(sum_dy, gy.cpu().sum((0, 2)), msg="sum_dy")
    assert_close_to_reference(sum_dy_xmu, (gy * (x - mean.view(1, -1, 1))).cpu().sum((0, 2)), msg="sum_dy_xmu")


# ---- torch.compile -------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum,fullgraph", [(0.1, True), (None, False)])
def test_compile_batch_norm_module_train(momentum, fullgraph):
    """momentum=None reads float(num_batches_tracked), which breaks the graph (as in torch's)."""
    torch._dynamo.reset()
    model = torch.nn.Sequential(tco.nn.BatchNorm2d(3, momentum=momentum), tco.nn.GroupNorm(3, 3)).double()
    with torch.no_grad():
        model[0].weight.normal_(), model[0].bias.normal_()
    eager = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=fullgraph, backend="aot_eager")
    for step in range(2):
        x = randn(2, 3, 4, 4, requires_grad=True)
        xc = x.detach().clone().requires_grad_()
        ref, out = eager(x), compiled(xc)
        assert_close_to_reference(out, ref, torch.float64, f"step {step} forward")
        gy = randn(*ref.shape)
        ref.backward(gy)
        out.backward(gy)
        assert_close_to_reference(xc.grad, x.grad, torch.float64, f"step {step} input gradient")
        for (name, p), pe in zip(model.named_parameters(), eager.parameters()):
            assert_close_to_reference(p.grad, pe.grad, torch.float64, f"step {step} {name} gradient")
    _compare_state(model, eager, "compiled running statistics")
    assert model[0].num_batches_tracked.item() == 2
    reference = torch.nn.BatchNorm2d(3, momentum=momentum).double()  # and the eager one is torch's
    reference.load_state_dict(eager[0].state_dict())
    model.eval(), eager.eval()
    x = randn(2, 3, 4, 4)
    assert_close_to_reference(compiled(x), eager(x), torch.float64, "compiled eval")


# ---- precision -----------------------------------------------------------------------------------------
def _low_precision_cases():
    return {
        "batch": (lambda x, w, b: TF.batch_norm(x, None, None, w, b, True),
                  lambda x, w, b: F.batch_norm(x, None, None, w, b, True), (4, 8)),
        "batch-eval": (lambda x, w, b: TF.batch_norm(x, torch.zeros_like(w), torch.ones_like(w), w, b),
                       lambda x, w, b: F.batch_norm(x, torch.zeros_like(w), torch.ones_like(w), w, b), (4, 8)),
        "group": (lambda x, w, b: TF.group_norm(x, 2, w, b), lambda x, w, b: F.group_norm(x, 2, w, b), (4, 8)),
        "layer": (lambda x, w, b: TF.layer_norm(x, (8, 7), w.view(8, 1).expand(8, 7).contiguous(), None),
                  lambda x, w, b: F.layer_norm(x, (8, 7), w.view(8, 1).expand(8, 7).contiguous(), None), (4, 8)),
        "instance": (lambda x, w, b: TF.instance_norm(x, weight=w, bias=b),
                     lambda x, w, b: F.instance_norm(x, weight=w, bias=b), (4, 8)),
    }


LOW_CASES = _low_precision_cases()


@pytest.mark.parametrize("dtype", LOW_PRECISION_DTYPES)
@pytest.mark.parametrize("name", list(LOW_CASES))
def test_low_precision_against_float64(name, dtype, device):
    ours, ref_fn, (n, c) = LOW_CASES[name]
    x = randn(n, c, 7, dtype=dtype, device=device, requires_grad=True)
    w = randn(c, dtype=dtype, device=device, requires_grad=True)
    b = randn(c, dtype=dtype, device=device, requires_grad=True)
    out = ours(x, w, b)
    assert out.dtype == dtype
    xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
    ref = ref_fn(xr, wr, br)
    # one rounding of the normalised value, then the affine in low precision: a few eps
    loose = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 4e-3}[dtype]
    scale = max(1.0, ref.abs().max().item())
    torch.testing.assert_close(out.double().cpu(), ref, rtol=loose, atol=loose * scale)
    gy = randn(*out.shape, dtype=dtype, device=device)
    grads = torch.autograd.grad(out, (x, w, b), gy, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, (xr, wr, br), as_reference(gy), allow_unused=True)
    for g, rg, what in zip(grads, ref_grads, ("input", "weight", "bias")):
        if rg is None:
            assert g is None or not g.any(), what
            continue
        assert g.dtype == dtype, what
        gscale = max(1.0, rg.abs().max().item())
        torch.testing.assert_close(g.double().cpu(), rg, rtol=loose, atol=loose * gscale * 2,
                                   msg=lambda m: f"{what} gradient: {m}")


# Planar (NCHW) batch norm reduces per channel in one task each on the CPU when the channels
# outnumber twice the threads and each holds at most 2^16 values, per (sample, channel) row
# otherwise: both paths, whatever the machine's thread count.
PLANAR_SHAPES = {
    "per-channel-small-planes": (8, 64, 4, 4),
    "per-channel-odd-planes": (3, 70, 5, 7),
    "per-row-one-channel": (4, 1, 9, 9),
    "per-row-large-channels": (2, 4, 260, 260),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", list(PLANAR_SHAPES.values()), ids=list(PLANAR_SHAPES))
def test_batch_norm_planar_reductions(shape, dtype, device):
    """Statistics, running statistics, output and the three gradients of training and eval
    batch norm on NCHW input against torch in float64."""
    c = shape[1]
    for training in (True, False):
        x = randn(*shape, dtype=dtype, device=device, requires_grad=True)
        w = (torch.rand(c, dtype=dtype) + 0.5).to(device).requires_grad_()
        b = randn(c, dtype=dtype, device=device, requires_grad=True)
        stats = torch.float64 if dtype == torch.float64 else torch.float32
        rm, rv = randn(c, dtype=stats, device=device), torch.rand(c, dtype=stats).to(device) + 0.5
        rm_ref, rv_ref = rm.double().cpu(), rv.double().cpu()
        out = tco.F.batch_norm(x, rm, rv, w, b, training, 0.3, 1e-5)
        xr, wr, br = as_reference(x), as_reference(w), as_reference(b)
        ref = F.batch_norm(xr, rm_ref, rv_ref, wr, br, training, 0.3, 1e-5)
        loose = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2}[dtype]
        check = lambda got, want, what: torch.testing.assert_close(  # noqa: E731
            got.double().cpu(), want, rtol=loose, atol=loose * max(1.0, want.abs().max().item()),
            msg=lambda m: f"training={training} {what}: {m}")
        check(out, ref, "output")
        check(rm, rm_ref, "running_mean")
        check(rv, rv_ref, "running_var")
        gy = randn(*shape, dtype=dtype, device=device)
        grads = torch.autograd.grad(out, (x, w, b), gy)
        ref_grads = torch.autograd.grad(ref, (xr, wr, br), as_reference(gy))
        for g, rg, what in zip(grads, ref_grads, ("input", "weight", "bias")):
            assert g.dtype == dtype
            check(g, rg, f"{what} gradient")
    # the gradient sums alone (SyncBatchNorm's backward_reduce)
    mean = xr.detach().mean((0, 2, 3))
    sum_dy, sum_dy_xmu = torch.ops.cnn_ops.batch_norm_backward_reduce(gy, x.detach(), mean.to(device))
    gy64 = as_reference(gy)
    check(sum_dy, gy64.sum((0, 2, 3)), "sum_dy")
    check(sum_dy_xmu, (gy64 * (xr.detach() - mean[None, :, None, None])).sum((0, 2, 3)), "sum_dy_xmu")


# Group norm on NCHW input runs a group at a time where groups (N * G) are at least four per
# thread (the values of a group cached between its two passes), as rows of the whole tensor
# otherwise: both paths, whatever the machine's thread count (up to 64).
GROUP_SHAPES = {
    "per-group-small-planes": ((8, 64, 5, 7), 32),
    "per-group-long-planes": ((2, 256, 70, 70), 128),  # planes of several blocks
    "per-row-one-group": ((1, 6, 9, 9), 1),
}


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape,groups", list(GROUP_SHAPES.values()), ids=list(GROUP_SHAPES))
def test_group_norm_planar_paths(shape, groups, dtype, affine, device):
    """Output, statistics and the three gradients of group norm on NCHW input against torch in
    float64, on both the per-group and the per-row path."""
    c = shape[1]
    x = (randn(*shape, dtype=torch.float64) * 3 + 100).to(dtype).to(device).requires_grad_()  # far from 0
    w = (torch.rand(c, dtype=dtype) + 0.5).to(device).requires_grad_() if affine else None
    b = randn(c, dtype=dtype, device=device, requires_grad=True) if affine else None
    out, mean, rstd = torch.ops.cnn_ops.group_norm_forward(x, w, b, groups, 1e-5)
    xr = as_reference(x)
    wr, br = (as_reference(w), as_reference(b)) if affine else (None, None)
    ref = F.group_norm(xr, groups, wr, br, 1e-5)
    loose = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2}[dtype]
    check = lambda got, want, what: torch.testing.assert_close(  # noqa: E731
        got.double().cpu(), want, rtol=loose, atol=loose * max(1.0, want.abs().max().item()),
        msg=lambda m: f"{what}: {m}")
    check(out, ref, "output")
    groups_view = xr.detach().reshape(shape[0], groups, -1)
    check(mean, groups_view.mean(-1), "mean")
    check(rstd, (groups_view.var(-1, unbiased=False) + 1e-5).rsqrt(), "rstd")
    gy = randn(*shape, dtype=dtype, device=device)
    inputs, ref_inputs = ((x, w, b), (xr, wr, br)) if affine else ((x,), (xr,))
    grads = torch.autograd.grad(out, inputs, gy)
    ref_grads = torch.autograd.grad(ref, ref_inputs, as_reference(gy))
    for g, rg, what in zip(grads, ref_grads, ("input", "weight", "bias")):
        assert g.dtype == dtype
        check(g, rg, f"{what} gradient")


@pytest.mark.parametrize("stats", ["contiguous", "strided", "bfloat16"])
def test_eval_batch_norm_running_statistics_forms(stats):
    """Eval batch norm copies the running statistics and computes invstd in one loop where they
    are contiguous vectors of the compute type, and through conversions otherwise (strided
    views, bfloat16 statistics of a bfloat16 input): both give torch's output and gradients and
    leave the running statistics as they were."""
    torch.manual_seed(0)
    dtype = torch.bfloat16 if stats == "bfloat16" else torch.float32
    full_mean, full_var = torch.randn(12), torch.rand(12) + 0.5
    if stats == "strided":
        rm, rv = full_mean[::2], full_var[::2]
    else:
        rm, rv = full_mean[:6].to(dtype), full_var[:6].to(dtype)
    before = (rm.clone(), rv.clone())
    x = torch.randn(3, 6, 5, 5, dtype=dtype, requires_grad=True)
    w = torch.rand(6, dtype=dtype, requires_grad=True)
    out = tco.F.batch_norm(x, rm, rv, w, None, False, 0.1, 1e-3)
    xr, wr = as_reference(x), as_reference(w)
    ref = F.batch_norm(xr, rm.double(), rv.double(), wr, None, False, 0.1, 1e-3)
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    gy = torch.randn_like(out)
    for g, rg in zip(torch.autograd.grad(out, (x, w), gy), torch.autograd.grad(ref, (xr, wr), gy.double())):
        torch.testing.assert_close(g.double(), rg, rtol=tol, atol=tol * max(1.0, rg.abs().max().item()))
    torch.testing.assert_close(rm, before[0], rtol=0, atol=0)
    torch.testing.assert_close(rv, before[1], rtol=0, atol=0)


class _Subclass(torch.Tensor):
    pass


class _PassThrough(torch.overrides.TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_batch_norm_plain_and_general_calls_agree(training):
    """A plain batch_norm call (tensors, a bool, floats) runs the ops from C++
    (torch_cnn_ops._C.batch_norm); other forms (NumPy scalars, tensor subclasses, a
    torch-function mode) take the Python path. Outputs, gradients and running statistics agree."""
    from torch_cnn_ops import _C

    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    stats = (torch.randn(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64) + 0.5)
    gy = torch.randn(4, 6, 5, 5, dtype=torch.float64)

    def run(call):
        rm, rv = stats[0].clone(), stats[1].clone()
        out = call(rm, rv)
        return (out.as_subclass(torch.Tensor), *torch.autograd.grad(out, (x, w, b), gy), rm, rv)

    xr, wr, br = x.detach().requires_grad_(), w.detach().requires_grad_(), b.detach().requires_grad_()
    rm, rv = stats[0].clone(), stats[1].clone()
    ref = F.batch_norm(xr, rm, rv, wr, br, training, 0.2, 1e-3)
    want = (ref, *torch.autograd.grad(ref, (xr, wr, br), gy), rm, rv)
    plain = lambda rm, rv: tco.F.batch_norm(x, rm, rv, w, b, training, 0.2, 1e-3)  # noqa: E731
    assert _C.batch_norm(x, stats[0].clone(), stats[1].clone(), w, b, training, 0.2, 1e-3) is not NotImplemented
    general = {
        "numpy-scalars": (lambda rm, rv: tco.F.batch_norm(x, rm, rv, w, b, training, np.float64(0.2), np.float32(1e-3)),
                          (x, *stats, w, b, training, np.float64(0.2), np.float32(1e-3))),
        "subclass": (lambda rm, rv: tco.F.batch_norm(x.as_subclass(_Subclass), rm, rv, w, b, training, 0.2, 1e-3),
                     (x.as_subclass(_Subclass), *stats, w, b, training, 0.2, 1e-3)),
    }
    # torch's parser refuses an int for training: the Python path raises its TypeError
    assert _C.batch_norm(x, *stats, w, b, int(training), 0.2, 1e-3) is NotImplemented
    with pytest.raises(TypeError, match="training"):
        F.batch_norm(x, *stats, w, b, int(training), 0.2, 1e-3)
    with pytest.raises(TypeError, match="training"):
        tco.F.batch_norm(x, *stats, w, b, int(training), 0.2, 1e-3)
    for name, (call, args) in general.items():
        assert _C.batch_norm(*args) is NotImplemented, name
        for got, exp in zip(run(call), want):
            torch.testing.assert_close(got, exp, msg=name)
    for got, exp in zip(run(plain), want):
        torch.testing.assert_close(got, exp, msg="plain")
    with _PassThrough():
        assert _C.batch_norm(x, *stats, w, b, training, 0.2, 1e-3) is NotImplemented
        got = run(plain)
    for g, exp in zip(got, want):
        torch.testing.assert_close(g, exp, msg="mode")


@pytest.mark.parametrize("kind", ["group_norm", "layer_norm"])
def test_group_and_layer_norm_plain_and_general_calls_agree(kind):
    """Plain group_norm / layer_norm calls (tensors, ints, floats) run the op from C++
    (torch_cnn_ops._C.group_norm / layer_norm); NumPy scalars, tensor subclasses, a
    torch-function mode and integer inputs take the Python path. Outputs and gradients agree
    with torch's, and the Python path keeps torch's errors."""
    from torch_cnn_ops import _C

    torch.manual_seed(0)
    x = torch.randn(3, 6, 4, 5, dtype=torch.float64, requires_grad=True)
    if kind == "group_norm":
        w = torch.randn(6, dtype=torch.float64, requires_grad=True)
        size, general_size = 3, np.int64(3)
    else:
        w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
        size, general_size = (4, 5), (np.int64(4), 5)
    b = torch.randn_like(w, requires_grad=True)
    entry, ours, theirs = getattr(_C, kind), getattr(tco.F, kind), getattr(F, kind)
    expected = theirs(x, size, w, b, 1e-3)
    gy = torch.randn_like(expected)
    want = torch.autograd.grad(expected, (x, w, b), gy)

    assert isinstance(entry(x, size, w, b, 1e-3), torch.Tensor)
    assert isinstance(entry(x, size, None, None, 1e-3), torch.Tensor)
    refused = {"numpy-scalars": (x, general_size, w, b, np.float64(1e-3)),
               "subclass": (x.as_subclass(_Subclass), size, w, b, 1e-3),
               "integer-input": (x.long(), size, None, None, 1e-3)}
    for name, args in refused.items():
        assert entry(*args) is NotImplemented, name
    with _PassThrough():
        assert entry(x, size, w, b, 1e-3) is NotImplemented
        in_mode = ours(x, size, w, b, 1e-3)
    results = {"plain": ours(x, size, w, b, 1e-3), "numpy-scalars": ours(x, general_size, w, b, np.float64(1e-3)),
               "subclass": ours(x.as_subclass(_Subclass), size, w, b, 1e-3), "mode": in_mode}
    for name, out in results.items():
        torch.testing.assert_close(out.as_subclass(torch.Tensor), expected, msg=name)
        for got, exp in zip(torch.autograd.grad(out, (x, w, b), gy), want):
            torch.testing.assert_close(got.as_subclass(torch.Tensor), exp, msg=name)
    with pytest.raises(NotImplementedError):  # torch's class for an integer input, via the Python path
        ours(x.long(), size)
    # what the entry passes on and the op refuses, as torch refuses it
    bad_size = 4 if kind == "group_norm" else (4, 6)
    with pytest.raises(RuntimeError):
        theirs(x, bad_size)
    with pytest.raises(RuntimeError, match=str(bad_size[-1] if kind == "layer_norm" else bad_size)):
        ours(x, bad_size)


def test_half_input_with_float_parameters(device):
    """Mixed precision as autocast produces it: float16 activations, float32 parameters and stats."""
    bn = tco.nn.BatchNorm2d(3).to(device)
    ref_bn = torch.nn.BatchNorm2d(3).double()
    x = randn(4, 3, 5, 5, dtype=torch.float16, device=device)
    out = bn(x)
    ref = ref_bn(as_reference(x))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.double().cpu(), ref, rtol=4e-3, atol=4e-3 * ref.abs().max().item())
    torch.testing.assert_close(bn.running_var.double().cpu(), ref_bn.running_var, rtol=1e-4, atol=1e-4)


LARGE_MEAN = {
    "batch": (lambda x: TF.batch_norm(x, None, None, training=True),
              lambda x: F.batch_norm(x, None, None, training=True),
              lambda x: ops.batch_norm_stats(x), (0, 2, 3)),
    "batch-channels-last": (lambda x: TF.batch_norm(x.contiguous(memory_format=torch.channels_last), None, None,
                                                    training=True),
                            lambda x: F.batch_norm(x, None, None, training=True),
                            lambda x: ops.batch_norm_stats(x.contiguous(memory_format=torch.channels_last)),
                            (0, 2, 3)),
    "group": (lambda x: TF.group_norm(x, 2), lambda x: F.group_norm(x, 2),
              lambda x: ops.group_norm_forward(x, None, None, 2, 1e-5)[1:], None),
    "layer": (lambda x: TF.layer_norm(x, x.shape[1:]), lambda x: F.layer_norm(x, x.shape[1:]),
              lambda x: ops.layer_norm_forward(x, list(x.shape[1:]), None, None, 1e-5)[1:], (1, 2, 3)),
}


@pytest.mark.parametrize("name", list(LARGE_MEAN))
def test_large_mean_stays_accurate(name, device):
    """Values around 1e4 with a spread of 1 in float32: E[x^2] - E[x]^2 would lose every digit.

    The mean must be within two units in the last place of 1e4 in float32 (2e-3; torch's own
    float32 kernels come to about 1.2e-3), the variance within 1e-3 relative, and the output
    within 2e-3 (std 1: the rounding of the mean and of the affine form x * scale + shift).
    """
    x = (1e4 + randn(8, 4, 16, 16)).float().to(device)
    ours, ref_fn, stats_fn, dims = LARGE_MEAN[name]
    out = ours(x)
    x64 = x.double().cpu()
    torch.testing.assert_close(out.double().cpu(), ref_fn(x64), rtol=0, atol=2e-3)
    mean, second = stats_fn(x)
    if dims is None:  # group norm: per (sample, group)
        groups = x64.view(8, 2, -1)
        ref_mean, ref_var = groups.mean(-1), groups.var(-1, correction=0)
    else:
        ref_mean, ref_var = x64.mean(dims), x64.var(dims, correction=0)
    torch.testing.assert_close(mean.double().cpu(), ref_mean, rtol=0, atol=2e-3, msg=lambda m: f"mean: {m}")
    var = second.double().cpu() if name.startswith("batch") else second.double().cpu().pow(-2) - 1e-5
    torch.testing.assert_close(var, ref_var, rtol=1e-3, atol=0, msg=lambda m: f"variance: {m}")


def test_large_mean_running_var(device):
    x = (1e4 + randn(8, 4, 16, 16)).float().to(device)
    bn, ref_bn = tco.nn.BatchNorm2d(4, momentum=1.0).to(device), torch.nn.BatchNorm2d(4, momentum=1.0).double()
    bn(x), ref_bn(x.double().cpu())
    torch.testing.assert_close(bn.running_var.double().cpu(), ref_bn.running_var, rtol=1e-3, atol=0)
    torch.testing.assert_close(bn.running_mean.double().cpu(), ref_bn.running_mean, rtol=1e-6, atol=0)


# ---- NaN -----------------------------------------------------------------------------------------------
NAN_CASES = {
    "batch": (lambda x: TF.batch_norm(x, None, None, training=True),
              lambda x: F.batch_norm(x, None, None, training=True)),
    "batch-eval": (lambda x: TF.batch_norm(x, torch.zeros(4, dtype=x.dtype, device=x.device),
                                           torch.ones(4, dtype=x.dtype, device=x.device)),
                   lambda x: F.batch_norm(x, torch.zeros(4, dtype=x.dtype), torch.ones(4, dtype=x.dtype))),
    "group": (lambda x: TF.group_norm(x, 2), lambda x: F.group_norm(x, 2)),
    "layer": (lambda x: TF.layer_norm(x, [5]), lambda x: F.layer_norm(x, [5])),
    "instance": (lambda x: TF.instance_norm(x), lambda x: F.instance_norm(x)),
}


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("name", list(NAN_CASES))
def test_nan_propagates_like_torch(name, layout, device):
    x = randn(3, 4, 2, 5, device=device)
    x[1, 2, 1, 3] = float("nan")
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    ours, ref_fn = NAN_CASES[name]
    out, ref = ours(x), ref_fn(x.cpu())
    assert out.isnan().any()
    torch.testing.assert_close(out.cpu(), ref, equal_nan=True)


def test_nan_in_running_stats_of_that_channel_only():
    bn, ref_bn = tco.nn.BatchNorm1d(3).double(), torch.nn.BatchNorm1d(3).double()
    x = randn(4, 3, 5)
    x[2, 1, 0] = float("nan")
    bn(x), ref_bn(x)
    torch.testing.assert_close(bn.running_mean, ref_bn.running_mean, equal_nan=True)
    torch.testing.assert_close(bn.running_var, ref_bn.running_var, equal_nan=True)
    assert bn.running_mean.isnan().tolist() == [False, True, False]


# ---- bad input ---------------------------------------------------------------------------------------
def _module_failures():
    return [
        ("wrong-channels", lambda: tco.nn.BatchNorm2d(3), torch.randn(2, 4, 3, 3), RuntimeError,
         r"running_mean|weight.*shape"),
        ("wrong-channels-no-affine", lambda: tco.nn.BatchNorm1d(3, affine=False), torch.randn(2, 4),
         RuntimeError, r"running_mean.*shape"),
        ("one-value-per-channel", lambda: tco.nn.BatchNorm1d(3), torch.randn(1, 3), ValueError,
         r"more than 1 value per channel"),
        ("one-value-per-channel-2d", lambda: tco.nn.BatchNorm2d(3), torch.randn(1, 3, 1, 1), ValueError,
         r"more than 1 value per channel"),
        ("wrong-rank", lambda: tco.nn.BatchNorm2d(3), torch.randn(2, 3, 4), ValueError, r"4D input"),
        ("wrong-dtype", lambda: tco.nn.BatchNorm2d(3), torch.randint(0, 4, (2, 3, 2, 2)), RuntimeError,
         r"float|dtype"),
        ("sync-wrong-channels", lambda: tco.nn.SyncBatchNorm(3), torch.randn(2, 4, 3, 3), RuntimeError,
         r"running_mean|weight.*shape"),
        ("sync-one-value", lambda: tco.nn.SyncBatchNorm(3), torch.randn(1, 3, 1, 1), ValueError,
         r"more than 1 value per channel"),
        ("instance-wrong-channels", lambda: tco.nn.InstanceNorm2d(3, affine=True, track_running_stats=True),
         torch.randn(2, 4, 3, 3), ValueError, r"num_features"),
    ]


MODULE_FAILURES = _module_failures()


@pytest.mark.parametrize("make,x,error,pattern", [c[1:] for c in MODULE_FAILURES], ids=[c[0] for c in MODULE_FAILURES])
def test_failing_module_call_leaves_state_untouched(make, x, error, pattern):
    m = make()
    if m.track_running_stats:
        with torch.no_grad():
            m.running_mean.uniform_(), m.running_var.uniform_(1, 2)
    state = copy.deepcopy(m.state_dict())
    x_before = x.clone()
    with pytest.raises(error, match=f"(?i){pattern}"):
        m(x)
    after = m.state_dict()
    for key, value in state.items():
        assert torch.equal(after[key], value), f"{key} changed by a failing call"
    assert torch.equal(x, x_before)


def test_eval_backward_after_running_stats_moved():
    """The backward of an eval-mode call differentiates that call: it uses the statistics the
    forward read, also when a training call has moved the running statistics in place before
    the backward runs (the statistics an op returns are its own, not views of its arguments)."""
    def grads(fn, move):
        torch.manual_seed(0)
        x, w = randn(4, 3, 5, requires_grad=True), randn(3, requires_grad=True)
        rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64) * 2
        y = fn(x, rm, rv, w, None, False)
        grad_output, other = randn(4, 3, 5), randn(4, 3, 5) + 3
        if move:
            fn(other, rm, rv, None, None, True, 0.5)
        return torch.autograd.grad(y, (x, w), grad_output)

    for ours, ref, what in zip(grads(TF.batch_norm, True), grads(F.batch_norm, False), ("input", "weight")):
        assert_close_to_reference(ours, ref, msg=f"{what} gradient")


@pytest.mark.parametrize("shape,groups", [((1, 2), 2), ((1, 4), 2), ((2, 2), 2), ((1, 2, 1), 1), ((1, 4, 1), 4),
                                          ((1, 3, 1, 1), 3), ((1, 6, 1, 1), 3)])
def test_group_norm_single_value_check_as_torch(shape, groups):
    x = torch.randn(*shape, dtype=torch.float64)
    try:
        ref = F.group_norm(x, groups)
    except ValueError:
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            TF.group_norm(x, groups)
    else:
        torch.testing.assert_close(TF.group_norm(x, groups), ref)


def test_eval_after_failure_matches_torch():
    """A failing training call must not count a batch (momentum=None weighs batches by that count)."""
    ours, theirs = tco.nn.BatchNorm1d(3, momentum=None).double(), torch.nn.BatchNorm1d(3, momentum=None).double()
    x = randn(4, 3)
    ours(x), theirs(x)
    with pytest.raises(ValueError):
        ours(randn(1, 3))
    y = randn(6, 3)
    ours(y), theirs(y)
    _compare_state(ours, theirs, "after a failed call in between")


def _functional_failures():
    x = torch.randn(2, 6, 4)
    c = torch.ones(6)
    return [
        ("bn-weight-size", lambda: TF.batch_norm(x, None, None, torch.ones(5), None, True), r"weight.*shape"),
        ("bn-bias-size", lambda: TF.batch_norm(x, c.clone(), c.clone(), None, torch.ones(7)), r"bias.*shape"),
        ("bn-eval-without-stats", lambda: TF.batch_norm(x, None, None, training=False),
         r"running_mean.*running_var"),
        ("bn-one-value", lambda: TF.batch_norm(torch.randn(1, 6), None, None, training=True),
         r"more than 1 value per channel"),
        ("bn-one-sided-stats", lambda: TF.batch_norm(x, c.clone(), None, training=True), r"together"),
        ("bn-rank-1-stats", lambda: TF.batch_norm(torch.randn(6), c.clone(), c.clone(), training=True),
         r"running_mean.*shape \(6,\)"),
        ("bn-integer-input", lambda: TF.batch_norm(x.long(), None, None, training=True), r"float|dtype"),
        ("bn-integer-weight", lambda: TF.batch_norm(x, None, None, torch.ones(6, dtype=torch.long), None, True),
         r"float|dtype"),
        ("gn-groups-not-dividing", lambda: TF.group_norm(x, 4), r"divisible"),
        ("gn-weight-size", lambda: TF.group_norm(x, 3, torch.ones(3)), r"weight.*shape"),
        ("gn-one-value", lambda: TF.group_norm(torch.randn(1, 2), 2), r"more than 1 value"),
        ("ln-shape-mismatch", lambda: TF.layer_norm(x, [5]), r"normalized_shape"),
        ("ln-shape-too-long", lambda: TF.layer_norm(x, [1, 2, 6, 4]), r"normalized_shape"),
        ("ln-weight-shape", lambda: TF.layer_norm(x, [4], torch.ones(5)), r"weight.*shape"),
        ("in-one-value", lambda: TF.instance_norm(torch.randn(2, 3, 1)), r"more than 1 spatial"),
        ("in-rank-2", lambda: TF.instance_norm(torch.randn(2, 3)), r"more than 1 spatial"),
        ("gn-module-groups", lambda: tco.nn.GroupNorm(4, 6), r"divisible"),
        ("ln-module-shape", lambda: tco.nn.LayerNorm([3, 4])(x), r"normalized_shape"),
        ("in-module-rank", lambda: tco.nn.InstanceNorm2d(6)(x[:, :, 0]), r"3D|4D"),
    ]


FUNCTIONAL_FAILURES = _functional_failures()


@pytest.mark.parametrize("call,pattern", [c[1:] for c in FUNCTIONAL_FAILURES],
                         ids=[c[0] for c in FUNCTIONAL_FAILURES])
def test_bad_input_raises(call, pattern):
    with pytest.raises(BAD_INPUT, match=f"(?i){pattern}"):
        call()


def test_functional_failure_leaves_running_stats_untouched():
    x = torch.randn(2, 6, 4)
    rm, rv = torch.rand(6), torch.rand(6) + 1
    rm0, rv0 = rm.clone(), rv.clone()
    for call in (lambda: TF.batch_norm(x, rm, rv, torch.ones(5), None, True),
                 lambda: TF.batch_norm(x, rm, rv, None, torch.ones(5), True),
                 lambda: TF.batch_norm(x[:1, :, :1], rm, rv, None, None, True),
                 lambda: TF.instance_norm(x[:, :, :1], rm, rv)):
        with pytest.raises(BAD_INPUT):
            call()
        assert torch.equal(rm, rm0) and torch.equal(rv, rv0)


@requires_cuda
def test_wrong_device_raises():
    x = torch.randn(2, 3, 4, device="cuda")
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(RuntimeError, match="(?i)device|cpu|cuda"):
        TF.batch_norm(x, rm, rv, training=True)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))
    with pytest.raises(RuntimeError, match="(?i)device|cpu|cuda"):
        TF.group_norm(x, 3, torch.ones(3))
    with pytest.raises(RuntimeError, match="(?i)device|cpu|cuda"):
        TF.layer_norm(x, [4], torch.ones(4))


# ---- callers' tensors ------------------------------------------------------------------------------------
def test_inputs_and_parameters_not_modified(device):
    x = randn(3, 4, 5, device=device, requires_grad=True)
    w, b = randn(4, device=device, requires_grad=True), randn(4, device=device, requires_grad=True)
    w2 = randn(5, device=device, requires_grad=True)
    rm, rv = randn(4, device=device), randn(4, device=device).abs()
    before = [t.detach().clone() for t in (x, w, b, w2)]
    outs = [TF.batch_norm(x, rm, rv, w, b, True), TF.batch_norm(x, rm, rv, w, b, False),
            TF.group_norm(x, 2, w, b), TF.layer_norm(x, [5], w2, w2), TF.instance_norm(x, weight=w, bias=b),
            TF.batch_norm(x.transpose(1, 2).contiguous().transpose(1, 2), None, None, w, b, True)]
    gy = randn(3, 4, 5, device=device)
    gy0 = gy.clone()
    for out in outs:
        out.backward(gy)
    for t, t0 in zip((x, w, b, w2), before):
        assert torch.equal(t.detach(), t0)
    assert torch.equal(gy, gy0)
    xc = randn(2, 3, 4, 4, device=device).contiguous(memory_format=torch.channels_last)
    xc0 = xc.clone()
    tco.nn.BatchNorm2d(3).double().to(device)(xc)
    tco.nn.GroupNorm(3, 3).double().to(device)(xc)
    assert torch.equal(xc, xc0)


# ---- SyncBatchNorm -------------------------------------------------------------------------------------
@pytest.mark.parametrize("momentum", [0.1, None])
def test_sync_batch_norm_without_process_group_is_batch_norm(momentum, device):
    ours, theirs = _pair("SyncBatchNorm", 3, momentum=momentum, device=device)
    ref = torch.nn.BatchNorm2d(3, momentum=momentum).double()
    ref.load_state_dict(theirs.state_dict())
    for step in range(3):
        _step(ours.train(), ref.train(), SHAPES["2d"], device, f"train step {step}")
    _step(ours.eval(), ref.eval(), SHAPES["2d"], device, "eval")


def test_convert_sync_batchnorm_shares_parameters():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), torch.nn.BatchNorm2d(3),
                                torch.nn.Sequential(tco.nn.BatchNorm1d(3, affine=False)))
    converted = tco.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(converted[1], tco.nn.SyncBatchNorm) and isinstance(converted[2][0], tco.nn.SyncBatchNorm)
    assert converted[1].weight is model[1].weight and converted[1].running_mean is model[1].running_mean
    assert converted[2][0].weight is None


def test_sync_batch_norm_bias_argument():
    """`bias=False` (an affine layer without bias) where torch's batch norms have the argument
    (torch 2.13); with an older torch a TypeError that says so, and conversions pass no `bias`."""
    has_bias_arg = "bias" in inspect.signature(torch.nn.BatchNorm2d).parameters
    assert tco.nn.SyncBatchNorm(3, bias=True).bias.shape == (3,)
    if has_bias_arg:
        ours, theirs = tco.nn.SyncBatchNorm(3, bias=False), torch.nn.SyncBatchNorm(3, bias=False)
        assert ours.bias is None and ours.weight.shape == (3,)
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        converted = tco.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm2d(3, bias=False))
        assert converted.bias is None and converted.weight is not None
        x = torch.randn(4, 3, 2, 2)
        torch.testing.assert_close(converted(x), torch.nn.functional.batch_norm(
            x, None, None, converted.weight, None, training=True))
    else:
        with pytest.raises(TypeError, match="2.13"):
            tco.nn.SyncBatchNorm(3, bias=False)
    converted = tco.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.BatchNorm2d(3, affine=False))
    assert converted.weight is None and converted.bias is None


SYNC_CHILD = textwrap.dedent("""
    import os, sys
    import torch
    import torch.distributed as dist
    import torch_cnn_ops as tco

    rank, world, port, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    data = torch.load(os.path.join(folder, "data.pt"))
    results = {}
    for momentum in (0.1, None):
        model = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=momentum)).double()
        model[0].load_state_dict(data["state"])
        model = tco.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        assert isinstance(model[0], tco.nn.SyncBatchNorm)
        steps = []
        for x, gy in zip(data["x"], data["gy"]):
            half = x.shape[0] // world
            xs = x[rank * half:(rank + 1) * half].clone().requires_grad_()
            out = model(xs)
            out.backward(gy[rank * half:(rank + 1) * half])
            steps.append({"out": out.detach(), "grad_input": xs.grad, "grad_weight": model[0].weight.grad.clone(),
                          "grad_bias": model[0].bias.grad.clone(),
                          "running_mean": model[0].running_mean.clone(), "running_var": model[0].running_var.clone(),
                          "num_batches_tracked": model[0].num_batches_tracked.clone()})
            model.zero_grad()
        model.eval()
        steps.append({"eval_out": model(data["x"][0][rank * half:(rank + 1) * half])})
        results[momentum] = steps
    torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    dist.barrier()  # both ranks have saved their results
    # Leave without gloo's teardown: rank 0 hosts the rendezvous store, and when its teardown ends
    # first the other rank's aborts ("terminate called without an active exception").
    sys.stdout.flush()
    os._exit(0)
""")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_sync_batch_norm_two_processes(tmp_path):
    world, steps = 2, 3
    state = torch.nn.BatchNorm2d(3).double().state_dict()
    state["weight"] = randn(3)
    state["bias"] = randn(3)
    data = {"x": [randn(4, 3, 3, 5) * (step + 1) + step for step in range(steps)],
            "gy": [randn(4, 3, 3, 5) for _ in range(steps)], "state": state}
    torch.save(data, tmp_path / "data.pt")
    script = tmp_path / "child.py"
    script.write_text(SYNC_CHILD)
    root = os.path.dirname(os.path.dirname(os.path.abspath(tco.__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    port = str(_free_port())
    children = [subprocess.Popen([sys.executable, str(script), str(rank), str(world), port, str(tmp_path)], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for rank in range(world)]
    logs = []
    try:
        for child in children:
            logs.append(child.communicate(timeout=120)[0].decode(errors="replace"))
    except subprocess.TimeoutExpired:
        pytest.fail("SyncBatchNorm children did not finish within 120 s")
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for rank, child in enumerate(children):
        assert child.returncode == 0, f"rank {rank} failed:\n{logs[rank][-3000:]}"
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(world)]

    for momentum in (0.1, None):
        ref = torch.nn.BatchNorm2d(3, momentum=momentum).double()
        ref.load_state_dict(state)
        for step in range(steps):
            x = data["x"][step].clone().requires_grad_()
            out = ref(x)
            out.backward(data["gy"][step])
            got = [r[momentum][step] for r in results]
            msg = f"momentum={momentum} step {step}"
            assert_close_to_reference(torch.cat([g["out"] for g in got]), out, msg=f"{msg} output")
            assert_close_to_reference(torch.cat([g["grad_input"] for g in got]), x.grad, msg=f"{msg} input gradient")
            assert_close_to_reference(sum(g["grad_weight"] for g in got), ref.weight.grad, msg=f"{msg} weight grad")
            assert_close_to_reference(sum(g["grad_bias"] for g in got), ref.bias.grad, msg=f"{msg} bias grad")
            for g in got:
                assert_close_to_reference(g["running_mean"], ref.running_mean, msg=f"{msg} running_mean")
                assert_close_to_reference(g["running_var"], ref.running_var, msg=f"{msg} running_var")
                assert g["num_batches_tracked"].item() == ref.num_batches_tracked.item() == step + 1
            ref.zero_grad()
        ref.eval()
        eval_out = torch.cat([r[momentum][steps]["eval_out"] for r in results])
        assert_close_to_reference(eval_out, ref(data["x"][0]), msg=f"momentum={momentum} eval output")


# ---- the ATen arithmetic path (the one CUDA takes) on the CPU ---------------------------------------
# The per-channel arithmetic of the norms runs as ATen ops on CUDA, and on the CPU for vectors of
# 4096 entries or more (csrc/norm/norm_ops.cpp, kLoopsBelow); shorter ones take plain loops, which
# the rest of this file checks. These cases have 4096 channels, groups or rows.
ATEN_PATH_CASES = {
    "batch_norm-train": (lambda x, w, b, rm, rv: tco.F.batch_norm(x, rm, rv, w, b, True, 0.3, 1e-5),
                         lambda x, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, True, 0.3, 1e-5), (3, 4096, 2), 4096),
    "batch_norm-eval": (lambda x, w, b, rm, rv: tco.F.batch_norm(x, rm, rv, w, b, False, 0.3, 1e-5),
                        lambda x, w, b, rm, rv: F.batch_norm(x, rm, rv, w, b, False, 0.3, 1e-5), (3, 4096, 2), 4096),
    "group_norm": (lambda x, w, b, rm, rv: tco.F.group_norm(x, 2048, w, b, 1e-5),
                   lambda x, w, b, rm, rv: F.group_norm(x, 2048, w, b, 1e-5), (2, 4096, 3), 4096),
    "layer_norm": (lambda x, w, b, rm, rv: tco.F.layer_norm(x, (3,), w, b, 1e-5),
                   lambda x, w, b, rm, rv: F.layer_norm(x, (3,), w, b, 1e-5), (4096, 3), 3),
}


# (case, channels_last): the channel norms also on a 4-d channels_last input (layer norm
# normalises trailing dimensions, where the layout makes no other case).
ATEN_PATH_RUNS = [(name, False) for name in ATEN_PATH_CASES] + [
    (name, True) for name in ATEN_PATH_CASES if name != "layer_norm"]


@pytest.mark.parametrize("name,channels_last", ATEN_PATH_RUNS)
def test_norm_aten_arithmetic_path_matches_torch(name, channels_last):
    ours, theirs, shape, params = ATEN_PATH_CASES[name]
    x = torch.randn(*shape, dtype=torch.float64)
    if channels_last:  # the same values with a trailing dimension of 1, in channels_last memory
        x = x.unsqueeze(-1).contiguous(memory_format=torch.channels_last)
    w = (torch.rand(params, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(params, dtype=torch.float64).requires_grad_()
    x.requires_grad_()
    stats = [torch.randn(shape[1], dtype=torch.float64), torch.rand(shape[1], dtype=torch.float64) + 0.5]
    ref_stats = [t.clone() for t in stats]
    y, y_ref = ours(x, w, b, *stats), theirs(x, w, b, *ref_stats)
    torch.testing.assert_close(y, y_ref)
    for got, want in zip(stats, ref_stats):
        torch.testing.assert_close(got, want)
    gy = torch.randn_like(y_ref)
    grads = torch.autograd.grad(y, (x, w, b), gy, create_graph=True)
    ref_grads = torch.autograd.grad(y_ref, (x, w, b), gy, create_graph=True)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want)
    # double backward: the gradient of <grads, v> against torch's
    vs = [torch.randn_like(g) for g in grads]
    second = torch.autograd.grad(sum((g * v).sum() for g, v in zip(grads, vs)), (x, w), allow_unused=True)
    ref_second = torch.autograd.grad(sum((g * v).sum() for g, v in zip(ref_grads, vs)), (x, w), allow_unused=True)
    for got, want in zip(second, ref_second):
        torch.testing.assert_close(got, want)
