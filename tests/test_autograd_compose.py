"""Double backward inside graphs, for every op: gradcheck and gradgradcheck of compositions,
second (and third) derivatives against torch's twins or torch-op references, and gradient
penalties through small models against the same models built from torch.nn.

Every public functional of every family appears in OP_CASES below (both modes of batch norm,
instance norm and stochastic pooling, and the tco.grad functions). Each case is a function of
float64 tensors, all of which are differentiated, and the reference that computes the same
values with torch's operators (its twin, or a composition of torch ops where torch lacks one).
"""

import itertools
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF
from conftest import (ref_channel_max_pool, ref_gaussian_pool2d, ref_kmax_pool, ref_min_pool,
                      ref_stochastic_pool2d_eval, ref_stochastic_pool2d_train, ref_tiled_conv, ref_unshared_conv)

import torch_cnn_ops as tco

F = tco.F
D = torch.float64
# torch's own 'same' padding with even kernels warns about its padded copy (the reference's cost)
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")


@pytest.fixture(autouse=True)
def _one_thread():
    """The shapes here are tiny: one thread, so that a busy machine does not stall the
    gradchecks on thread synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@dataclass
class OpCase:
    """``fn(*tensors)`` (ours) and ``ref(*tensors)`` (torch's twin or a torch-op reference) of
    float64 tensors of ``shapes``; ``positive``: the first tensor is made positive (stochastic
    pooling takes non-negative inputs)."""

    id: str
    fn: Callable
    ref: Callable
    shapes: Sequence[Tuple[int, ...]]
    positive: bool = False
    marks: tuple = field(default_factory=tuple)

    def inputs(self, device="cpu"):
        g = torch.Generator().manual_seed(sum(map(ord, self.id)))
        ts = [torch.randn(*s, dtype=D, generator=g) for s in self.shapes]
        if self.positive:
            ts[0] = ts[0].abs() + 0.2
        return [t.to(device).requires_grad_() for t in ts]


# Running statistics of the eval-mode norms: constants, away from 0 / 1 so that they matter.
_RM = torch.tensor([0.3, -0.2, 0.5, 0.1], dtype=D)
_RV = torch.tensor([0.7, 1.6, 0.9, 1.2], dtype=D)


def _rs(c):
    return _RM[:c].clone(), _RV[:c].clone()


def _sampled(seed=7):
    return torch.Generator().manual_seed(seed)


def _adaptive_pool_cases():
    """Adaptive max, min and avg pooling in 1-3 d, each against torch's twin (min: max of -x)."""
    cases = []
    for kind in ("max", "min", "avg"):
        for nd, size, shape in ((1, 3, (2, 2, 7)), (2, (3, 2), (2, 2, 7, 5)), (3, 2, (1, 2, 3, 4, 5))):
            name = f"adaptive_{kind}_pool{nd}d"
            ours, twin = getattr(F, name), getattr(TF, name.replace("min", "max"))
            if kind == "min":
                ref = lambda x, twin=twin, size=size: ref_min_pool(twin, x, size)  # noqa: E731
            else:
                ref = lambda x, twin=twin, size=size: twin(x, size)  # noqa: E731
            cases.append(OpCase(name, lambda x, ours=ours, size=size: ours(x, size), ref, [shape]))
    return cases


OP_CASES = [
    # ---- convolution ----
    OpCase("conv1d", lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1, groups=2),
           lambda x, w, b: TF.conv1d(x, w, b, stride=2, padding=1, groups=2), [(2, 4, 7), (4, 2, 3), (4,)]),
    OpCase("conv2d", lambda x, w, b: F.conv2d(x, w, b, padding=1),
           lambda x, w, b: TF.conv2d(x, w, b, padding=1), [(2, 2, 5, 5), (3, 2, 3, 3), (3,)]),
    OpCase("conv2d-stride-dilation", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=2),
           lambda x, w, b: TF.conv2d(x, w, b, stride=2, padding=(1, 2), dilation=2),
           [(2, 2, 7, 6), (3, 2, 2, 3), (3,)]),
    OpCase("conv2d-same-even", lambda x, w, b: F.conv2d(x, w, b, padding="same"),
           lambda x, w, b: TF.conv2d(x, w, b, padding="same"), [(1, 2, 5, 4), (2, 2, 2, 4), (2,)]),
    OpCase("conv2d-full-flip", lambda x, w, b: F.conv2d(x, w, b, padding="full", flip=True),
           lambda x, w, b: TF.conv2d(x, w.flip(2, 3), b, padding=(2, 1)), [(1, 2, 4, 4), (2, 2, 3, 2), (2,)]),
    OpCase("conv2d-direct-depthwise", lambda x, w, b: F.conv2d(x, w, b, padding=1, groups=3, algorithm="direct"),
           lambda x, w, b: TF.conv2d(x, w, b, padding=1, groups=3), [(2, 3, 4, 5), (3, 1, 3, 3), (3,)]),
    OpCase("conv2d-im2col", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), algorithm="im2col"),
           lambda x, w, b: TF.conv2d(x, w, b, stride=(2, 1)), [(2, 2, 6, 5), (3, 2, 3, 2), (3,)]),
    OpCase("conv2d-shifted", lambda x, w, b: F.conv2d(x, w, b, padding=1, algorithm="shifted"),
           lambda x, w, b: TF.conv2d(x, w, b, padding=1), [(1, 2, 4, 5), (3, 2, 3, 3), (3,)]),
    OpCase("conv2d-winograd", lambda x, w, b: F.conv2d(x, w, b, padding=(2, 1), algorithm="winograd"),
           lambda x, w, b: TF.conv2d(x, w, b, padding=(2, 1)), [(1, 2, 6, 5), (3, 2, 3, 3), (3,)]),
    OpCase("conv3d", lambda x, w, b: F.conv3d(x, w, b, stride=(1, 2, 1), padding=1),
           lambda x, w, b: TF.conv3d(x, w, b, stride=(1, 2, 1), padding=1), [(1, 2, 3, 4, 3), (2, 2, 2, 2, 2), (2,)]),
    # ---- tco.grad: the gradients of convolution, as functions ----
    OpCase("grad.conv1d_input", lambda w, gy: tco.grad.conv1d_input((2, 4, 7), w, gy, 2, 1, 1, 2),
           lambda w, gy: torch.nn.grad.conv1d_input((2, 4, 7), w, gy, 2, 1, 1, 2), [(4, 2, 3), (2, 4, 4)]),
    OpCase("grad.conv2d_input", lambda w, gy: tco.grad.conv2d_input((1, 2, 5, 5), w, gy, 2, 1),
           lambda w, gy: torch.nn.grad.conv2d_input((1, 2, 5, 5), w, gy, 2, 1), [(3, 2, 3, 3), (1, 3, 3, 3)]),
    OpCase("grad.conv3d_input", lambda w, gy: tco.grad.conv3d_input((1, 2, 3, 4, 3), w, gy, 1, 1),
           lambda w, gy: torch.nn.grad.conv3d_input((1, 2, 3, 4, 3), w, gy, 1, 1),
           [(2, 2, 2, 2, 2), (1, 2, 4, 5, 4)]),
    OpCase("grad.conv1d_weight", lambda x, gy: tco.grad.conv1d_weight(x, (4, 2, 3), gy, 2, 1, 1, 2),
           lambda x, gy: torch.nn.grad.conv1d_weight(x, (4, 2, 3), gy, 2, 1, 1, 2), [(2, 4, 7), (2, 4, 4)]),
    OpCase("grad.conv2d_weight", lambda x, gy: tco.grad.conv2d_weight(x, (3, 2, 3, 3), gy, 1, 1, 2),
           lambda x, gy: torch.nn.grad.conv2d_weight(x, (3, 2, 3, 3), gy, 1, 1, 2), [(1, 2, 5, 5), (1, 3, 3, 3)]),
    OpCase("grad.conv3d_weight", lambda x, gy: tco.grad.conv3d_weight(x, (2, 2, 2, 2, 2), gy, 2),
           lambda x, gy: torch.nn.grad.conv3d_weight(x, (2, 2, 2, 2, 2), gy, 2),
           [(1, 2, 4, 4, 5), (1, 2, 2, 2, 2)]),
    # ---- tiled and unshared convolution ----
    OpCase("tiled_conv1d", lambda x, w, b: F.tiled_conv1d(x, w, b, stride=2, padding=1),
           lambda x, w, b: ref_tiled_conv(x, w, b, 2, 1), [(2, 2, 7), (2, 3, 2, 3), (3,)]),
    OpCase("tiled_conv2d", lambda x, w, b: F.tiled_conv2d(x, w, b, padding="same"),
           lambda x, w, b: ref_tiled_conv(x, w, b, 1, "same"), [(1, 2, 4, 5), (2, 3, 2, 2, 3, 2), (2,)]),
    OpCase("tiled_conv2d-dilation", lambda x, w, b: F.tiled_conv2d(x, w, b, stride=(1, 2), dilation=2),
           lambda x, w, b: ref_tiled_conv(x, w, b, (1, 2), 0, 2), [(1, 2, 6, 6), (1, 2, 2, 2, 2, 2), (2,)]),
    OpCase("unshared_conv1d", lambda x, w, b: F.unshared_conv1d(x, w, b, padding=1),
           lambda x, w, b: ref_unshared_conv(x, w, b, 1, 1), [(2, 2, 5), (5, 3, 2, 3), (3, 5)]),
    OpCase("unshared_conv2d", lambda x, w, b: F.unshared_conv2d(x, w, b, stride=2, padding=1),
           lambda x, w, b: ref_unshared_conv(x, w, b, 2, 1), [(1, 2, 5, 4), (3, 2, 2, 2, 3, 3), (2,)]),
    OpCase("unshared_conv2d-position-bias", lambda x, w, b: F.unshared_conv2d(x, w, b),
           lambda x, w, b: ref_unshared_conv(x, w, b), [(2, 2, 4, 4), (3, 2, 2, 2, 2, 3), (2, 3, 2)]),
    # ---- max / min pooling ----
    OpCase("max_pool1d", lambda x: F.max_pool1d(x, 3, 2, 1), lambda x: TF.max_pool1d(x, 3, 2, 1), [(2, 2, 8)]),
    OpCase("max_pool2d", lambda x: F.max_pool2d(x, 3, 2, 1, 1, True), lambda x: TF.max_pool2d(x, 3, 2, 1, 1, True),
           [(2, 2, 6, 6)]),
    OpCase("max_pool2d-dilation", lambda x: F.max_pool2d(x, 2, 1, 0, 2), lambda x: TF.max_pool2d(x, 2, 1, 0, 2),
           [(1, 2, 5, 5)]),
    OpCase("max_pool3d", lambda x: F.max_pool3d(x, 2, padding=1), lambda x: TF.max_pool3d(x, 2, padding=1),
           [(1, 2, 3, 4, 4)]),
    OpCase("min_pool1d", lambda x: F.min_pool1d(x, 3, 2, 1),
           lambda x: ref_min_pool(TF.max_pool1d, x, 3, 2, 1), [(2, 2, 8)]),
    OpCase("min_pool2d", lambda x: F.min_pool2d(x, 3, 2, 1, 1, True),
           lambda x: ref_min_pool(TF.max_pool2d, x, 3, 2, 1, 1, True), [(2, 2, 6, 6)]),
    OpCase("min_pool3d", lambda x: F.min_pool3d(x, 2, padding=1),
           lambda x: ref_min_pool(TF.max_pool3d, x, 2, padding=1), [(1, 2, 3, 4, 4)]),
    # padding="same", TensorFlow's rule (the larger half at the end), against an explicitly padded input
    OpCase("max_pool2d-same", lambda x: F.max_pool2d(x, (2, 3), 2, "same"),
           lambda x: TF.max_pool2d(TF.pad(x, (0, 1, 0, 1), value=-math.inf), (2, 3), 2), [(2, 2, 7, 8)]),
    OpCase("min_pool1d-same", lambda x: F.min_pool1d(x, 4, 3, "same"),
           lambda x: -TF.max_pool1d(TF.pad(-x, (1, 1), value=-math.inf), 4, 3), [(2, 2, 11)]),
    # ---- average and power-average pooling ----
    OpCase("avg_pool1d", lambda x: F.avg_pool1d(x, 3, 2, 1, True, False),
           lambda x: TF.avg_pool1d(x, 3, 2, 1, True, False), [(2, 2, 8)]),
    OpCase("avg_pool2d", lambda x: F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1), [(2, 2, 6, 5)]),
    OpCase("avg_pool2d-divisor", lambda x: F.avg_pool2d(x, 2, 1, 1, divisor_override=3),
           lambda x: TF.avg_pool2d(x, 2, 1, 1, divisor_override=3), [(1, 2, 4, 4)]),
    OpCase("avg_pool2d-same", lambda x: F.avg_pool2d(x, (2, 3), 2, "same"),
           lambda x: TF.avg_pool2d(TF.pad(x, (0, 1, 0, 1)), (2, 3), 2), [(2, 2, 7, 8)]),
    OpCase("avg_pool3d", lambda x: F.avg_pool3d(x, 2, 1, 1, False, False),
           lambda x: TF.avg_pool3d(x, 2, 1, 1, False, False), [(1, 2, 3, 3, 3)]),
    OpCase("lp_pool1d", lambda x: F.lp_pool1d(x, 2, 3, 2), lambda x: TF.lp_pool1d(x, 2, 3, 2), [(2, 2, 8)]),
    OpCase("lp_pool2d-p1.5-ceil", lambda x: F.lp_pool2d(x, 1.5, 2, 2, True),
           lambda x: TF.lp_pool2d(x, 1.5, 2, 2, True), [(2, 2, 5, 5)], positive=True),
    OpCase("lp_pool3d", lambda x: F.lp_pool3d(x, 3, 2), lambda x: TF.lp_pool3d(x, 3, 2), [(1, 2, 4, 4, 4)],
           positive=True),
    # ---- adaptive pooling ----
    *_adaptive_pool_cases(),
    # ---- the poolings torch lacks ----
    OpCase("kmax_pool1d", lambda x: F.kmax_pool1d(x, 3), lambda x: ref_kmax_pool(x, 3), [(2, 3, 7)]),
    OpCase("kmax_pool1d-dim1", lambda x: F.kmax_pool1d(x, 2, dim=1), lambda x: ref_kmax_pool(x, 2, 1), [(2, 5, 3)]),
    OpCase("dynamic_kmax_pool1d", lambda x: F.dynamic_kmax_pool1d(x, 1, 3, 2),
           lambda x: ref_kmax_pool(x, 6), [(2, 2, 9)]),
    OpCase("channel_max_pool", lambda x: F.channel_max_pool(x, 2), lambda x: ref_channel_max_pool(x, 2),
           [(2, 6, 3, 2)]),
    OpCase("channel_max_pool-last", lambda x: F.channel_max_pool(x, 3, dim=-1),
           lambda x: ref_channel_max_pool(x, 3, -1), [(2, 2, 6)]),
    OpCase("gaussian_pool2d", lambda x: F.gaussian_pool2d(x, 3, 2, 1, 0.8),
           lambda x: ref_gaussian_pool2d(x, 3, 2, 1, 0.8), [(2, 2, 6, 5)]),
    OpCase("gaussian_pool2d-rect", lambda x: F.gaussian_pool2d(x, (2, 3), 1, (0, 1), 1.5),
           lambda x: ref_gaussian_pool2d(x, (2, 3), 1, (0, 1), 1.5), [(1, 2, 4, 4)]),
    OpCase("stochastic_pool2d-train", lambda x: F.stochastic_pool2d(x, 2, generator=_sampled()),
           lambda x: ref_stochastic_pool2d_train(x, 2, None, 7), [(2, 2, 4, 6)], positive=True),
    OpCase("stochastic_pool2d-train-overlap", lambda x: F.stochastic_pool2d(x, 3, 2, generator=_sampled(3)),
           lambda x: ref_stochastic_pool2d_train(x, 3, 2, 3), [(1, 2, 5, 5)], positive=True),
    OpCase("stochastic_pool2d-eval", lambda x: F.stochastic_pool2d(x, 2, training=False),
           lambda x: ref_stochastic_pool2d_eval(x, 2), [(2, 2, 4, 6)], positive=True),
    OpCase("stochastic_pool2d-eval-overlap", lambda x: F.stochastic_pool2d(x, (3, 2), (2, 1), training=False),
           lambda x: ref_stochastic_pool2d_eval(x, (3, 2), (2, 1)), [(1, 2, 5, 4)], positive=True),
    # ---- normalization ----
    OpCase("batch_norm-train", lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
           lambda x, w, b: TF.batch_norm(x, None, None, w, b, True), [(3, 3, 2, 2), (3,), (3,)]),
    OpCase("batch_norm-train-running", lambda x, w, b: F.batch_norm(x, *_rs(3), w, b, True, 0.3),
           lambda x, w, b: TF.batch_norm(x, *_rs(3), w, b, True, 0.3), [(4, 3, 3), (3,), (3,)]),
    OpCase("batch_norm-train-1d", lambda x, w, b: F.batch_norm(x, None, None, w, b, True, eps=1e-3),
           lambda x, w, b: TF.batch_norm(x, None, None, w, b, True, eps=1e-3), [(5, 3), (3,), (3,)]),
    OpCase("batch_norm-train-noaffine", lambda x: F.batch_norm(x, None, None, None, None, True),
           lambda x: TF.batch_norm(x, None, None, None, None, True), [(2, 2, 3, 2, 2)]),
    OpCase("batch_norm-eval", lambda x, w, b: F.batch_norm(x, *_rs(3), w, b, False),
           lambda x, w, b: TF.batch_norm(x, *_rs(3), w, b, False), [(3, 3, 2, 2), (3,), (3,)]),
    OpCase("batch_norm-eval-noaffine", lambda x: F.batch_norm(x, *_rs(4), training=False),
           lambda x: TF.batch_norm(x, *_rs(4), training=False), [(2, 4, 3)]),
    OpCase("instance_norm", lambda x, w, b: F.instance_norm(x, weight=w, bias=b),
           lambda x, w, b: TF.instance_norm(x, weight=w, bias=b), [(2, 3, 2, 3), (3,), (3,)]),
    OpCase("instance_norm-running-stats", lambda x, w, b: F.instance_norm(x, *_rs(3), w, b, use_input_stats=False),
           lambda x, w, b: TF.instance_norm(x, *_rs(3), w, b, use_input_stats=False), [(2, 3, 4), (3,), (3,)]),
    OpCase("group_norm", lambda x, w, b: F.group_norm(x, 2, w, b), lambda x, w, b: TF.group_norm(x, 2, w, b),
           [(2, 4, 2, 2), (4,), (4,)]),
    OpCase("group_norm-noaffine", lambda x: F.group_norm(x, 3), lambda x: TF.group_norm(x, 3), [(2, 3, 5)]),
    OpCase("layer_norm", lambda x, w, b: F.layer_norm(x, (2, 3), w, b), lambda x, w, b: TF.layer_norm(x, (2, 3), w, b),
           [(2, 3, 2, 3), (2, 3), (2, 3)]),
    OpCase("layer_norm-whole", lambda x, w, b: F.layer_norm(x, (3, 4), w, b, 1e-3),
           lambda x, w, b: TF.layer_norm(x, (3, 4), w, b, 1e-3), [(3, 4), (3, 4), (3, 4)]),
]

CASES = {c.id: c for c in OP_CASES}


def test_every_public_functional_has_a_case():
    """The catalogue covers every public functional and every tco.grad function."""
    names = set(tco.functional.__all__) - {"conv_padding"}
    grads = {f"grad.conv{nd}d_{kind}" for nd in (1, 2, 3) for kind in ("input", "weight")}
    covered = {c.id.split("-")[0] for c in OP_CASES}
    assert names | grads <= covered, sorted((names | grads) - covered)


def composed(fn):
    """tanh(fn(first * 1.5, *rest)) * y: the op inside a graph, with y the last argument."""
    return lambda *a: torch.tanh(fn(a[0] * 1.5, *a[1:-1])) * a[-1]


def _with_y(case, device="cpu"):
    inputs = case.inputs(device)
    with torch.no_grad():
        shape = case.fn(*inputs).shape
    g = torch.Generator().manual_seed(1)
    y = torch.randn(shape, dtype=D, generator=g).to(device).requires_grad_()
    return inputs, y


# ---- gradcheck and gradgradcheck of compositions -----------------------------------------------
@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_gradcheck_gradgradcheck_composition(case):
    inputs, y = _with_y(case)
    fn = composed(case.fn)
    # the composition's values are the reference's (so that the derivatives checked are of the
    # right function)
    torch.testing.assert_close(fn(*inputs, y), composed(case.ref)(*inputs, y))
    assert torch.autograd.gradcheck(fn, (*inputs, y))
    assert torch.autograd.gradgradcheck(fn, (*inputs, y))


# ---- second derivatives against the twin: Hessian-vector products ------------------------------
def _hvp(fn, inputs, y, vs):
    """First gradients and the Hessian-vector product of sum(tanh(fn(*inputs)) * y) in all inputs."""
    out = (torch.tanh(fn(*inputs)) * y).sum()
    gs = torch.autograd.grad(out, inputs, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(gs, vs))
    hv = torch.autograd.grad(dot, inputs, allow_unused=True, materialize_grads=True)
    return out, gs, hv


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_hessian_vector_product_matches_reference(case):
    inputs, y = _with_y(case)
    g = torch.Generator().manual_seed(2)
    vs = [torch.randn(t.shape, dtype=D, generator=g) for t in inputs]
    ours = _hvp(case.fn, inputs, y, vs)
    ref_inputs = [t.detach().clone().requires_grad_() for t in inputs]
    theirs = _hvp(case.ref, ref_inputs, y.detach(), vs)
    torch.testing.assert_close(ours[0], theirs[0])
    for name, a, b in (("grad", ours[1], theirs[1]), ("hvp", ours[2], theirs[2])):
        for i, (ai, bi) in enumerate(zip(a, b)):
            torch.testing.assert_close(ai, bi, msg=lambda m: f"{case.id} {name} of input {i}: {m}")


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_double_backward_with_some_inputs_requiring_grad(case):
    """A gradient penalty through the op when only some of its tensors require grad (the
    others constants): the first gradients and the penalty's gradients are the reference's."""
    base = [t.detach() for t in case.inputs()]
    with torch.no_grad():
        y = torch.randn(case.ref(*base).shape, dtype=D, generator=torch.Generator().manual_seed(5))
    for mask in itertools.product([False, True], repeat=len(base)):
        if not any(mask) or all(mask):
            continue
        results = []
        for fn in (case.fn, case.ref):
            inputs = [t.clone().requires_grad_(m) for t, m in zip(base, mask)]
            diff = [t for t in inputs if t.requires_grad]
            gs = torch.autograd.grad((torch.tanh(fn(*inputs)) * y).sum(), diff, create_graph=True)
            penalty = sum(g.pow(2).sum() for g in gs)
            results.append(gs + torch.autograd.grad(penalty, diff, allow_unused=True, materialize_grads=True))
        for i, (a, b) in enumerate(zip(*results)):
            torch.testing.assert_close(a, b, msg=lambda m: f"{case.id}, requires_grad {mask}, result {i}: {m}")


# ---- third order ----------------------------------------------------------------------------------
THIRD_ORDER = ["conv2d", "tiled_conv2d", "max_pool2d", "lp_pool2d-p1.5-ceil", "gaussian_pool2d",
               "stochastic_pool2d-eval", "batch_norm-train", "batch_norm-eval", "group_norm", "layer_norm",
               "grad.conv2d_input"]


def _third(fn, inputs, y, v):
    """d^3/dt^3 of sum(tanh(fn(inputs + t v)) * y) at t = 0, and the gradient it leaves in inputs."""
    out = (torch.tanh(fn(*inputs)) * y).sum()
    g1 = torch.autograd.grad(out, inputs, create_graph=True)
    d1 = sum((g * vi).sum() for g, vi in zip(g1, v))
    g2 = torch.autograd.grad(d1, inputs, create_graph=True)
    d2 = sum((g * vi).sum() for g, vi in zip(g2, v))
    return torch.autograd.grad(d2, inputs, allow_unused=True, materialize_grads=True)


def _normalize(x, dims, eps):
    mean = x.mean(dims, keepdim=True)
    return (x - mean) / torch.sqrt((x - mean).pow(2).mean(dims, keepdim=True) + eps)


def _channel(t, dim):
    """(C,) viewed to broadcast over an (N, C, *) tensor of `dim` dimensions."""
    return t.view(1, -1, *([1] * (dim - 2)))


def _affine(y, w, b):
    return y * _channel(w, y.dim()) + _channel(b, y.dim())


def _bn_train(x, eps=1e-5):
    return _normalize(x, tuple(d for d in range(x.dim()) if d != 1), eps)


def _bn_eval(x, c, eps=1e-5):
    rm, rv = _rs(c)
    return (x - _channel(rm, x.dim())) / torch.sqrt(_channel(rv, x.dim()) + eps)


def _group(x, groups, eps=1e-5):
    return _normalize(x.reshape(x.shape[0], groups, -1), (2,), eps).view(x.shape)


# The norms written out with torch's elementary ops: the reference for derivatives that torch's
# own norms get wrong (torch 2.13): the third derivatives of batch_norm and layer_norm (their
# double-backward formulas are not differentiated correctly; torch.autograd.gradgradcheck of
# the gradient of F.batch_norm(x, None, None, training=True) fails), and the second
# derivatives of batch_norm, instance_norm and layer_norm in forward-over-forward and
# reverse-over-forward mode (jacfwd(jacfwd), jacrev(jacfwd); see test_func).
NORM_COMPOSITIONS = {
    "batch_norm-train": lambda x, w, b: _affine(_bn_train(x), w, b),
    "batch_norm-train-running": lambda x, w, b: _affine(_bn_train(x), w, b),
    "batch_norm-train-1d": lambda x, w, b: _affine(_bn_train(x, 1e-3), w, b),
    "batch_norm-train-noaffine": lambda x: _bn_train(x),
    "batch_norm-eval": lambda x, w, b: _affine(_bn_eval(x, 3), w, b),
    "batch_norm-eval-noaffine": lambda x: _bn_eval(x, 4),
    "instance_norm": lambda x, w, b: _affine(_normalize(x, (2, 3), 1e-5), w, b),
    "instance_norm-running-stats": lambda x, w, b: _affine(_bn_eval(x, 3), w, b),
    "group_norm": lambda x, w, b: _affine(_group(x, 2), w, b),
    "group_norm-noaffine": lambda x: _group(x, 3),
    "layer_norm": lambda x, w, b: _normalize(x, (2, 3), 1e-5) * w + b,
    "layer_norm-whole": lambda x, w, b: _normalize(x, (0, 1), 1e-3) * w + b,
}


def math_reference(case):
    """The reference whose derivatives of every order are right: the composition for the norms."""
    return NORM_COMPOSITIONS.get(case.id, case.ref)


def test_norm_compositions_are_the_norms():
    for name, comp in NORM_COMPOSITIONS.items():
        inputs = CASES[name].inputs()
        torch.testing.assert_close(comp(*inputs), CASES[name].ref(*inputs), msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("name", THIRD_ORDER)
def test_third_order_matches_reference(name):
    case = CASES[name]
    inputs, y = _with_y(case)
    g = torch.Generator().manual_seed(3)
    v = [torch.randn(t.shape, dtype=D, generator=g) for t in inputs]
    ours = _third(case.fn, inputs, y, v)
    ref = math_reference(case)
    theirs = _third(ref, [t.detach().clone().requires_grad_() for t in inputs], y.detach(), v)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}, input {i}: {m}")


@pytest.mark.parametrize("name", ["conv1d", "batch_norm-train", "layer_norm", "lp_pool1d"])
def test_gradgradcheck_of_the_gradient(name):
    """gradgradcheck of the first derivative: checks the third derivative numerically (torch's
    own batch_norm and layer_norm fail this)."""
    case = CASES[name]
    inputs, y = _with_y(case)

    def first_grads(*args):
        out = (torch.tanh(case.fn(*args)) ** 2).sum()
        return torch.autograd.grad(out, args, create_graph=True)

    assert torch.autograd.gradcheck(first_grads, tuple(inputs))
    assert torch.autograd.gradgradcheck(first_grads, tuple(inputs))


# ---- gradient penalties through small models, against torch.nn ---------------------------------
def _model_2d(nn):
    return tnn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), tnn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.GroupNorm(2, 4), nn.AvgPool2d(2))


def _model_1d(nn):
    return tnn.Sequential(nn.Conv1d(2, 4, 3, stride=1, padding=2, dilation=2), nn.InstanceNorm1d(4, affine=True),
                          tnn.Tanh(), nn.LPPool1d(2, 2), nn.Conv1d(4, 3, 2, groups=1), nn.LayerNorm(3),
                          nn.BatchNorm1d(3), nn.AdaptiveMaxPool1d(2))


def _model_3d(nn):
    return tnn.Sequential(nn.Conv3d(2, 3, 2, padding=1), nn.BatchNorm3d(3, momentum=None), tnn.Tanh(),
                          nn.MaxPool3d(2, ceil_mode=True), nn.AvgPool3d(2, 1, 1, count_include_pad=False),
                          nn.AdaptiveAvgPool3d((1, 2, 1)))


MODELS = {"2d": (_model_2d, (3, 2, 8, 8)), "1d": (_model_1d, (3, 2, 9)), "3d": (_model_3d, (2, 2, 3, 4, 4))}


def _twins(name, device="cpu"):
    """(our model, torch's) with the same parameters and buffers, float64, and an input."""
    build, shape = MODELS[name]
    torch.manual_seed(11)
    theirs = build(tnn).to(device, D)
    ours = build(tco.nn).to(device, D)
    with torch.no_grad():  # non-trivial affine parameters and running statistics
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for mod in theirs.modules():
            if isinstance(mod, tnn.modules.batchnorm._BatchNorm):
                mod.running_mean.copy_(torch.randn_like(mod.running_mean) * 0.2)
                mod.running_var.copy_(torch.rand_like(mod.running_var) + 0.5)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(12)).to(device)
    return ours, theirs, x


def _penalty_grads(model, x):
    x = x.detach().clone().requires_grad_()
    out = model(x)
    (g,) = torch.autograd.grad((out * torch.linspace(-1, 1, out.numel(), dtype=D, device=x.device)
                                .view(out.shape)).sum(), x, create_graph=True)
    penalty = g.pow(2).sum()
    penalty.backward()
    return out.detach(), g.detach(), penalty.detach(), x.grad, [p.grad for p in model.parameters()]


def _assert_same_state(ours, theirs):
    for (name, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        torch.testing.assert_close(a, b, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", list(MODELS))
def test_gradient_penalty_matches_torch(name, mode, device):
    ours, theirs, x = _twins(name, device)
    ours.train(mode == "train")
    theirs.train(mode == "train")
    a = _penalty_grads(ours, x)
    b = _penalty_grads(theirs, x)
    for what, u, v in zip(("output", "input gradient", "penalty", "penalty's input gradient"), a[:4], b[:4]):
        torch.testing.assert_close(u, v, msg=lambda m: f"{what}: {m}")
    names = [n for n, _ in theirs.named_parameters()]
    for n, u, v in zip(names, a[4], b[4]):
        # A parameter the penalty does not reach: torch's pooling backward nodes link the input
        # they saved with a zero derivative, so torch gives zeros where ours leaves None.
        u = torch.zeros_like(v) if u is None and v is not None else u
        v = torch.zeros_like(u) if v is None and u is not None else v
        if v is not None:
            torch.testing.assert_close(u, v, msg=lambda m: f"penalty's gradient of {n}: {m}")
    _assert_same_state(ours, theirs)  # the running statistics moved alike (or stayed, in eval)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_retain_graph_two_backward_calls(mode):
    """Two backward calls through a retained graph (first order, then through a gradient
    penalty's graph) accumulate exactly as torch's."""
    ours, theirs, x = _twins("2d")
    results = []
    for model in (ours, theirs):
        model.train(mode == "train")
        xi = x.clone().requires_grad_()
        loss = model(xi).pow(2).sum()
        loss.backward(retain_graph=True)
        once = [p.grad.clone() for p in model.parameters()]
        loss.backward()
        twice = [p.grad.clone() for p in model.parameters()]
        for o, t in zip(once, twice):
            torch.testing.assert_close(t, 2 * o)
        model.zero_grad()
        (g,) = torch.autograd.grad(model(xi).pow(2).sum(), xi, create_graph=True)
        penalty = g.pow(2).sum()
        penalty.backward(retain_graph=True)
        penalty.backward(retain_graph=True)
        (gg,) = torch.autograd.grad(penalty, xi)
        results.append((once, [p.grad.clone() for p in model.parameters()], gg, xi.grad.clone()))
    (a_once, a_pen, a_gg, a_xg), (b_once, b_pen, b_gg, b_xg) = results
    for u, v in zip(a_once + a_pen + [a_gg, a_xg], b_once + b_pen + [b_gg, b_xg]):
        torch.testing.assert_close(u, v)
