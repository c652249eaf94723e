"""torch's rules: every twin takes what torch takes and refuses what torch refuses.

Each case runs a call on torch and on our twin with the same arguments. Where torch raises,
ours must raise exactly the same exception class (RuntimeError where torch's kernel raises;
ValueError, TypeError, IndexError, ZeroDivisionError or NotImplementedError where torch's
Python layer or argument parser does), with a message that names the argument or shapes at
fault. Where torch computes, ours must give torch's values. The cases are

* a table of edge and bad arguments per function (every argument of convolution and
  pooling given as a float, a bool, a string, None, a sequence of the wrong length or with a
  float, a negative or zero value, a NumPy integer, a 0-d tensor), plus single cases;
* PyTorch's own OpInfo error inputs (``op_db``'s ``error_inputs``) and sample inputs of the
  twins, and ModuleInfo error and sample inputs (``module_db``) of the twin modules;
* a failed call on a module leaves its state and the caller's tensors as they were.

The known differences, kept on purpose, are tested as such at the end: integer inputs of
convolution and max pooling (torch computes them; we have floating-point kernels only, and
raise a RuntimeError that names the dtype), a bare int as ``normalized_shape`` of
``layer_norm`` (taken, as torch.nn.LayerNorm takes it), and ``dilation=0`` in ``tco.grad``
(refused; torch.nn.grad computes without checking it).
"""

import copy
import re
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
import torch.nn.grad as TG

import torch_cnn_ops as tco
from conftest import TF213, TORCH_BATCH_NORM_EVAL_EPS_ZERO

F = tco.F


def _torch_testing_db():
    """op_db and module_db of torch.testing._internal (which needs expecttest, a test dependency
    of PyTorch's own suite, installed by the README's test command)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.testing._internal.common_methods_invocations import op_db
        from torch.testing._internal.common_modules import module_db
    return op_db, module_db


OP_DB, MODULE_DB = _torch_testing_db()


# ---- the comparison ---------------------------------------------------------------------------
def _run(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return call(), None
        except Exception as error:  # noqa: BLE001 - the class is what is compared
            return None, error


def _assert_same_values(ours, theirs, what):
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), f"{what}: {type(ours)} != {type(theirs)}"
        for o, t in zip(ours, theirs):
            _assert_same_values(o, t, what)
        return
    assert isinstance(ours, torch.Tensor), f"{what}: got {type(ours).__name__}"
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, \
        f"{what}: {tuple(ours.shape)} {ours.dtype} != {tuple(theirs.shape)} {theirs.dtype}"
    # torch's default tolerances, with the absolute one taken relative to the result's scale: a
    # float32 sum of many terms in another order (another algorithm) differs by a few units in
    # the last place of its largest terms, not of each result.
    finite = theirs[theirs.isfinite()] if theirs.is_floating_point() else theirs
    scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
    atol = {torch.float32: 1e-5, torch.float64: 1e-7}.get(theirs.dtype)
    torch.testing.assert_close(ours, theirs, equal_nan=True, msg=lambda m: f"{what}: {m}",
                               **({} if atol is None else {"atol": atol * scale, "rtol": 1.3e-6 if theirs.dtype ==
                                                           torch.float32 else 1e-7}))


def assert_as_torch(torch_call, our_call, names=None):
    """Runs both calls: the same exception class (exactly), our message matching the regular
    expression ``names`` (case-insensitive) when given; or torch's values."""
    theirs, their_error = _run(torch_call)
    if their_error is not None:
        expected = type(their_error)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(expected) as info:
                our_call()
        assert type(info.value) is expected, \
            f"torch raises {expected.__name__} ({their_error}), ours {type(info.value).__name__}: {info.value}"
        if names is not None:
            assert re.search(names, str(info.value), re.IGNORECASE), \
                f"the message does not name {names!r}: {info.value}"
        return their_error
    ours, our_error = _run(our_call)
    assert our_error is None, f"torch computes, ours raises {type(our_error).__name__}: {our_error}"
    _assert_same_values(ours, theirs, "values")
    return None


# ---- arguments of convolution and pooling -----------------------------------------------------
def _variants(nd):
    """Values to give an int or int-tuple argument of an nd function: (id, value, whether the
    message must name the argument when it is refused)."""
    return [
        ("float", 1.5), ("integral-float", 2.0), ("bool", True), ("negative", -1), ("zero", 0),
        ("too-long", (1,) * (nd + 1)), ("one-entry", (2,)), ("empty", ()), ("string", "a"), ("none", None),
        ("float-entries", [1.0] * nd), ("bool-entry", [True] + [1] * (nd - 1)), ("numpy-int", np.int64(2)),
        ("tensor", torch.tensor(2)), ("one-element-tensor", torch.tensor([2])), ("float-tensor", torch.tensor(2.0)),
        ("numpy-entries", tuple(np.int32(1) for _ in range(nd))), ("size", torch.Size([1] * nd)),
        ("two", 2), ("tuple", tuple(range(1, nd + 1))),
    ]


def _input(nd, channels=4, size=None):
    size = size or {1: 9, 2: 8, 3: 6}[nd]
    return torch.randn(2, channels, *(size,) * nd, dtype=torch.float64)


def _conv_cases():
    cases = []
    for nd in (1, 2, 3):
        for arg in ("stride", "padding", "dilation", "groups"):
            for vid, value in _variants(nd):
                cases.append((f"conv{nd}d-{arg}-{vid}", nd, arg, value))
    return cases


@pytest.mark.parametrize("nd,arg,value", [c[1:] for c in _conv_cases()], ids=[c[0] for c in _conv_cases()])
def test_conv_arguments(nd, arg, value):
    x = _input(nd)
    w = torch.randn(6, 2 if arg == "groups" else 4, *(3,) * nd, dtype=torch.float64)
    kwargs = {arg: value}
    assert_as_torch(lambda: getattr(TF, f"conv{nd}d")(x, w, **kwargs),
                    lambda: getattr(F, f"conv{nd}d")(x, w, **kwargs), arg)


@pytest.mark.parametrize("nd,arg,value", [c[1:] for c in _conv_cases() if c[2] != "groups"],
                         ids=[c[0].replace("conv", "tiled_conv") for c in _conv_cases() if c[2] != "groups"])
def test_tiled_and_unshared_conv_arguments_follow_conv(nd, arg, value):
    """Tiled convolution with a tile of 1 and unshared convolution with the same kernel at every
    position are convolutions: they take and refuse what torch's convolution does."""
    if nd == 3:
        nd = 2
    x = _input(nd)
    w = torch.randn(6, 4, *(3,) * nd, dtype=torch.float64)
    kwargs = {arg: value}
    conv = getattr(TF, f"conv{nd}d")
    tiled = getattr(F, f"tiled_conv{nd}d")
    unshared = getattr(F, f"unshared_conv{nd}d")
    assert_as_torch(lambda: conv(x, w, **kwargs), lambda: tiled(x, w.reshape(*(1,) * nd, *w.shape), **kwargs), arg)
    reference, error = _run(lambda: conv(x, w, **kwargs))
    grid = reference.shape[2:] if error is None else (6,) * nd  # a grid for the refused calls
    local_w = w.expand(*grid, *w.shape).contiguous()
    assert_as_torch(lambda: conv(x, w, **kwargs), lambda: unshared(x, local_w, **kwargs), arg)


_POOL_ARGS = {
    "max_pool": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "avg_pool": ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"),
    "lp_pool": ("kernel_size", "stride", "ceil_mode", "norm_type"),
}


def _pool_cases():
    cases = []
    for kind, args in _POOL_ARGS.items():
        for nd in (1, 2, 3):
            for arg in args:
                if kind == "avg_pool" and nd == 1 and arg == "divisor_override":
                    continue
                for vid, value in _variants(nd) + [("bool-false", False), ("int-one", 1)]:
                    cases.append((f"{kind}{nd}d-{arg}-{vid}", kind, nd, arg, value))
    return cases


@pytest.mark.parametrize("kind,nd,arg,value", [c[1:] for c in _pool_cases()], ids=[c[0] for c in _pool_cases()])
def test_pool_arguments(kind, nd, arg, value):
    x = _input(nd).abs() + 0.5 if kind == "lp_pool" else _input(nd)
    kwargs = {"kernel_size": 2}
    if kind == "lp_pool":
        kwargs["norm_type"] = 2
    kwargs[arg] = value
    name = f"{kind}{nd}d"
    assert_as_torch(lambda: getattr(TF, name)(x, **kwargs), lambda: getattr(F, name)(x, **kwargs),
                    "kernel_size|stride" if arg == "kernel_size" else arg)


def _adaptive_cases():
    cases = []
    for kind in ("max", "avg"):
        for nd in (1, 2, 3):
            extra = [("nones", (None,) * nd), ("negative-entries", (-1,) * nd), ("one-none", (None, 2)),
                     ("numpy-array", np.array([2] * nd)), ("string-two", "ab")]
            for vid, value in _variants(nd) + extra:
                cases.append((f"adaptive_{kind}_pool{nd}d-output_size-{vid}", kind, nd, value))
    return cases


@pytest.mark.parametrize("kind,nd,value", [c[1:] for c in _adaptive_cases()], ids=[c[0] for c in _adaptive_cases()])
def test_adaptive_pool_output_size(kind, nd, value):
    x = _input(nd)
    name = f"adaptive_{kind}_pool{nd}d"
    assert_as_torch(lambda: getattr(TF, name)(x, value), lambda: getattr(F, name)(x, value), "output_size|input")


@pytest.mark.parametrize("nd", [1, 2, 3])
@pytest.mark.parametrize("value", [True, 1, "yes", None, 0], ids=["true", "one", "string", "none", "zero"])
def test_adaptive_max_pool_return_indices(nd, value):
    x = _input(nd)
    name = f"adaptive_max_pool{nd}d"
    assert_as_torch(lambda: getattr(TF, name)(x, 2, value), lambda: getattr(F, name)(x, 2, value))


# ---- single cases -----------------------------------------------------------------------------
def _single_cases():
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    c = 4
    z, o = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    xi = x.round().int()
    pos = x.abs() + 0.1
    cases = [
        # norms: eps
        ("layer_norm-eps-zero", lambda m: m.layer_norm(x, (8,), eps=0.0), None),
        ("layer_norm-eps-negative", lambda m: m.layer_norm(x, (8,), eps=-1e-9), None),
        ("group_norm-eps-zero", lambda m: m.group_norm(x, 2, eps=0.0), None),
        ("instance_norm-eps-zero", lambda m: m.instance_norm(x, eps=0.0), None),
        ("instance_norm-eps-negative", lambda m: m.instance_norm(x, eps=-1e-9), None),
        ("batch_norm-eval-eps-zero", lambda m: m.batch_norm(x, z.clone(), o.clone(), eps=0.0), None),
        ("batch_norm-train-eps-zero", lambda m: m.batch_norm(x, None, None, training=True, eps=0.0), r"eps"),
        ("batch_norm-train-eps-negative", lambda m: m.batch_norm(x, z.clone(), o.clone(), training=True, eps=-1.0),
         r"eps"),
        ("batch_norm-eval-eps-negative", lambda m: m.batch_norm(x, z.clone(), o.clone(), eps=-1.0), r"eps"),
        ("batch_norm-eps-string", lambda m: m.batch_norm(x, None, None, training=True, eps="a"), r"eps"),
        ("batch_norm-eps-nan", lambda m: m.batch_norm(x, None, None, training=True, eps=float("nan")), None),
        ("batch_norm-momentum-none", lambda m: m.batch_norm(x, z.clone(), o.clone(), training=True, momentum=None),
         r"momentum"),
        # norms: shapes
        ("batch_norm-0d-train", lambda m: m.batch_norm(torch.tensor(1.0), None, None, training=True), r"shape \(\)"),
        ("batch_norm-1d-train", lambda m: m.batch_norm(torch.randn(4), None, None, training=True), r"shape \(4,\)"),
        ("batch_norm-1d-one-value", lambda m: m.batch_norm(torch.randn(1), None, None, training=True),
         r"more than 1 value"),
        ("batch_norm-1d-eval-stats", lambda m: m.batch_norm(torch.randn(4), torch.zeros(4), torch.ones(4)),
         r"running_mean.*\(4,\)"),
        ("batch_norm-1d-eval-no-stats", lambda m: m.batch_norm(torch.randn(4), None, None), r"running_mean"),
        ("batch_norm-1d-train-weight", lambda m: m.batch_norm(torch.randn(4), None, None, torch.ones(4),
                                                              training=True), r"weight.*\(4,\)"),
        ("batch_norm-1d-empty-stats", lambda m: m.batch_norm(torch.randn(4), torch.zeros(0), torch.ones(0)),
         r"shape \(4,\)"),
        ("batch_norm-empty-1d", lambda m: m.batch_norm(torch.randn(0), None, None, training=True), None),
        ("batch_norm-weight-size", lambda m: m.batch_norm(x, None, None, torch.ones(3, dtype=torch.float64),
                                                          training=True), r"weight"),
        ("batch_norm-running-mean-size", lambda m: m.batch_norm(x, torch.zeros(3, dtype=torch.float64),
                                                                torch.ones(3, dtype=torch.float64)), r"running_mean"),
        ("batch_norm-one-value", lambda m: m.batch_norm(torch.randn(1, 4), None, None, training=True),
         r"more than 1 value"),
        ("batch_norm-eval-no-stats", lambda m: m.batch_norm(x, None, None), r"running_mean"),
        ("group_norm-groups-zero", lambda m: m.group_norm(x, 0), r"num_groups"),
        ("group_norm-groups-not-dividing", lambda m: m.group_norm(x, 3), r"num_groups|divisible"),
        ("group_norm-groups-negative", lambda m: m.group_norm(x, -2), r"num_groups|groups"),
        ("group_norm-groups-float", lambda m: m.group_norm(x, 2.0), r"num_groups"),
        ("group_norm-groups-bool", lambda m: m.group_norm(x, True), r"num_groups"),
        ("group_norm-groups-numpy", lambda m: m.group_norm(x, np.int64(2)), None),
        ("group_norm-groups-tensor", lambda m: m.group_norm(x, torch.tensor(2)), None),
        ("group_norm-1d", lambda m: m.group_norm(torch.randn(4), 2), r"dimensions"),
        ("group_norm-one-value-per-group", lambda m: m.group_norm(torch.randn(1, 4), 4), r"more than 1 value"),
        ("group_norm-weight-size", lambda m: m.group_norm(x, 2, torch.ones(3, dtype=torch.float64)), r"weight"),
        ("layer_norm-shape-mismatch", lambda m: m.layer_norm(x, (7,)), r"normalized_shape"),
        ("layer_norm-shape-too-long", lambda m: m.layer_norm(x, (1, 2, 4, 8, 8)), r"normalized_shape"),
        ("layer_norm-shape-empty", lambda m: m.layer_norm(x, ()), r"normalized_shape"),
        ("layer_norm-shape-float-entry", lambda m: m.layer_norm(x, (8.0,)), r"normalized_shape"),
        ("layer_norm-shape-float", lambda m: m.layer_norm(x, 8.0), r"normalized_shape"),
        ("layer_norm-shape-bool", lambda m: m.layer_norm(x, True), r"normalized_shape"),
        ("layer_norm-shape-none", lambda m: m.layer_norm(x, None), r"normalized_shape"),
        ("layer_norm-shape-numpy-scalar", lambda m: m.layer_norm(x, np.int64(8)), r"normalized_shape"),
        ("layer_norm-shape-tensor", lambda m: m.layer_norm(x, torch.tensor(8)), r"normalized_shape"),
        ("layer_norm-shape-size", lambda m: m.layer_norm(x, x.shape[1:]), None),
        ("layer_norm-shape-numpy-entries", lambda m: m.layer_norm(x, [np.int64(8)]), None),
        ("layer_norm-weight-size", lambda m: m.layer_norm(x, (8,), torch.ones(7, dtype=torch.float64)), r"weight"),
        ("layer_norm-eps-string", lambda m: m.layer_norm(x, (8,), eps="a"), r"eps"),
        ("instance_norm-one-value", lambda m: m.instance_norm(torch.randn(2, 4, 1)), r"more than 1 spatial"),
        ("instance_norm-2d", lambda m: m.instance_norm(torch.randn(2, 3)), r"more than 1 spatial"),
        ("instance_norm-1d", lambda m: m.instance_norm(torch.randn(3)), r"more than 1 spatial"),
        ("instance_norm-2d-eval", lambda m: m.instance_norm(x[:, :, 0, 0], z.clone(), o.clone(),
                                                            use_input_stats=False), None),
        ("instance_norm-eval-no-stats", lambda m: m.instance_norm(x, use_input_stats=False), r"running_mean"),
        ("instance_norm-1d-eval-stats", lambda m: m.instance_norm(torch.randn(3), torch.zeros(3), torch.ones(3),
                                                                  use_input_stats=False), r"shape \(3,\)"),
        ("instance_norm-running-mean-size", lambda m: m.instance_norm(x, torch.zeros(3, dtype=torch.float64),
                                                                      torch.ones(3, dtype=torch.float64)),
         r"running_mean"),
        # norms: integer inputs (torch: NotImplementedError)
        ("batch_norm-int-train", lambda m: m.batch_norm(xi, None, None, training=True), r"Int|dtype"),
        ("batch_norm-int-eval", lambda m: m.batch_norm(xi, z.clone(), o.clone()), r"Int|dtype"),
        ("group_norm-int", lambda m: m.group_norm(xi, 2), r"Int|dtype"),
        ("layer_norm-int", lambda m: m.layer_norm(xi, (8,)), r"Int|dtype"),
        ("instance_norm-int", lambda m: m.instance_norm(xi), r"Int|dtype"),
        # convolution
        ("conv-padding-negative-tuple", lambda m: m.conv2d(x, w, padding=(1, -1)), r"padding"),
        ("conv-padding-same-stride-1-tuple", lambda m: m.conv2d(x, w, stride=(1, 1), padding="same"), None),
        ("conv-padding-valid", lambda m: m.conv2d(x, w, padding="valid"), None),
        ("conv-padding-unknown", lambda m: m.conv2d(x, w, padding="foo"), r"padding.*foo"),
        ("conv-padding-case", lambda m: m.conv2d(x, w, padding="SAME"), r"padding.*SAME"),
        ("conv-weight-3d", lambda m: m.conv2d(x, torch.randn(6, 4, 3, dtype=torch.float64)), r"weight.*\(6, 4, 3\)"),
        ("conv-weight-5d", lambda m: m.conv2d(x, w[..., None]), r"weight"),
        ("conv-input-5d", lambda m: m.conv2d(x.unsqueeze(0), w), r"input.*\(1, 2, 4, 8, 8\)"),
        ("conv-input-2d", lambda m: m.conv2d(x[0, 0], w), r"input.*\(8, 8\)"),
        ("conv-unbatched", lambda m: m.conv2d(x[0], w), None),
        ("conv-channels", lambda m: m.conv2d(x, torch.randn(6, 3, 3, 3, dtype=torch.float64)), r"channels"),
        ("conv-groups-not-dividing", lambda m: m.conv2d(x, torch.randn(6, 4, 3, 3, dtype=torch.float64), groups=3),
         r"groups|channels"),
        ("conv-kernel-larger", lambda m: m.conv2d(x, torch.randn(6, 4, 9, 9, dtype=torch.float64)), r"kernel"),
        ("conv-bias-size", lambda m: m.conv2d(x, w, torch.randn(5, dtype=torch.float64)), r"bias"),
        ("conv-bias-list", lambda m: m.conv2d(x, w, [1.0] * 6), r"bias"),
        ("conv-input-list", lambda m: m.conv2d([1.0], w), r"input"),
        ("conv-weight-list", lambda m: m.conv2d(x, [1.0]), r"weight"),
        ("conv-dtype-mix", lambda m: m.conv2d(x, w.float()), r"dtype|type"),
        ("conv-empty-batch", lambda m: m.conv2d(x[:0], w), None),
        ("conv1d-weight-2d", lambda m: m.conv1d(x[:, :, 0], torch.randn(6, 4, dtype=torch.float64)), r"weight"),
        # pooling
        ("max_pool-padding-over-half", lambda m: m.max_pool2d(x, 2, padding=2), r"pad"),
        ("max_pool-kernel-larger", lambda m: m.max_pool2d(x, 9), r"kernel|size"),
        ("max_pool-empty-channels", lambda m: m.max_pool2d(torch.randn(2, 0, 8, 8), 2), r"input|empty|0"),
        ("max_pool-empty-batch", lambda m: m.max_pool2d(x[:0], 2), None),
        ("max_pool-input-5d", lambda m: m.max_pool2d(x.unsqueeze(0), 2), r"input.*\(1, 2, 4, 8, 8\)"),
        ("max_pool-input-1d", lambda m: m.max_pool1d(torch.randn(8), 2), r"input.*\(8,\)"),
        ("max_pool-input-0d", lambda m: m.max_pool1d(torch.tensor(1.0), 1), r"input.*\(\)"),
        ("max_pool-input-list", lambda m: m.max_pool2d([1.0], 2), r"input"),
        ("max_pool-indices", lambda m: m.max_pool2d(x, 3, 2, 1, return_indices=True), None),
        ("max_pool-ceil", lambda m: m.max_pool2d(x, 3, 2, 1, ceil_mode=True), None),
        ("avg_pool-divisor-negative", lambda m: m.avg_pool2d(x, 2, divisor_override=-2), None),
        ("avg_pool-divisor-zero", lambda m: m.avg_pool2d(x, 2, divisor_override=0), r"divisor"),
        ("avg_pool3d-divisor-negative", lambda m: m.avg_pool3d(x[None], 2, divisor_override=-3), None),
        ("avg_pool-padding-over-half", lambda m: m.avg_pool2d(x, 2, padding=2), r"pad"),
        ("avg_pool-kernel-larger", lambda m: m.avg_pool2d(x, 9), r"kernel|size"),
        ("avg_pool-empty-channels", lambda m: m.avg_pool2d(torch.randn(2, 0, 8, 8), 2), r"input|empty|0"),
        ("avg_pool-input-5d", lambda m: m.avg_pool2d(x.unsqueeze(0), 2), r"input"),
        ("avg_pool-int", lambda m: m.avg_pool2d(xi, 2), r"Int|dtype"),
        ("avg_pool1d-int", lambda m: m.avg_pool1d(xi[:, :, 0], 2), r"Int|dtype"),
        ("adaptive_avg-empty-channels", lambda m: m.adaptive_avg_pool2d(torch.randn(2, 0, 8, 8), 2), None),
        ("adaptive_avg3d-empty-channels", lambda m: m.adaptive_avg_pool3d(torch.randn(2, 0, 4, 4, 4), 2),
         r"input|empty|0"),
        ("adaptive_max-empty-channels", lambda m: m.adaptive_max_pool2d(torch.randn(2, 0, 8, 8), 2),
         r"input|empty|0"),
        ("adaptive_avg-output-zero", lambda m: m.adaptive_avg_pool2d(x, 0), None),
        ("adaptive_max-output-zero", lambda m: m.adaptive_max_pool2d(x, 0), None),
        ("adaptive_avg-output-negative", lambda m: m.adaptive_avg_pool2d(x, -1), r"output_size|negative"),
        ("adaptive_avg-input-2d", lambda m: m.adaptive_avg_pool2d(torch.randn(4, 8), (2, 2)), r"output_size|input"),
        ("adaptive_avg-input-2d-int-size", lambda m: m.adaptive_avg_pool2d(torch.randn(4, 8), 2), r"input.*\(4, 8\)"),
        ("adaptive_avg-int", lambda m: m.adaptive_avg_pool2d(xi, 2), r"Int|dtype"),
        ("adaptive_max-int", lambda m: m.adaptive_max_pool2d(xi, 2), r"Int|dtype"),
        ("adaptive_avg1d-int", lambda m: m.adaptive_avg_pool1d(xi[:, :, 0], 2), r"Int|dtype"),
        ("adaptive_max3d-int", lambda m: m.adaptive_max_pool3d(xi[None], 2), r"Int|dtype"),
        ("lp-empty-channels", lambda m: m.lp_pool2d(torch.randn(2, 0, 8, 8), 2, 2), r"input|empty|0"),
        ("lp-norm-inf", lambda m: m.lp_pool2d(x, float("inf"), 2), None),
        ("lp-norm-minus-inf", lambda m: m.lp_pool2d(x, float("-inf"), 2), None),
        ("lp-norm-minus-inf-1d", lambda m: m.lp_pool1d(x[:, :, 0], float("-inf"), 3, 2, True), None),
        ("lp-norm-negative", lambda m: m.lp_pool2d(pos, -2, 2), None),
        ("lp-norm-negative-ceil", lambda m: m.lp_pool2d(pos, -1.5, 3, 2, True), None),
        ("lp3d-norm-negative", lambda m: m.lp_pool3d(pos[None], -1, 2), None),
        ("lp-norm-nan", lambda m: m.lp_pool2d(x, float("nan"), 2), None),
        ("lp-norm-half", lambda m: m.lp_pool2d(pos, 0.5, 2), None),
        ("lp-norm-zero", lambda m: m.lp_pool2d(x, 0, 2), r"norm_type"),
        ("lp1d-norm-zero", lambda m: m.lp_pool1d(x[:, :, 0], 0.0, 2), r"norm_type"),
        ("lp-norm-tensor", lambda m: m.lp_pool2d(pos, torch.tensor(2.0), 2), None),
        ("lp-norm-int-input", lambda m: m.lp_pool2d(xi, 2, 2), r"Int|dtype"),
        ("lp-norm-int-input-float-power", lambda m: m.lp_pool2d(xi, 2.0, 2), None),
        ("lp1d-kernel-tuple", lambda m: m.lp_pool1d(x[:, :, 0], 2, (2,)), r"kernel_size"),
        ("lp2d-kernel-tuple", lambda m: m.lp_pool2d(x, 2, (2, 3)), None),
        ("lp2d-kernel-list-one", lambda m: m.lp_pool2d(x, 2, [2]), r"kernel_size"),
        ("lp3d-kernel-three", lambda m: m.lp_pool3d(x[None], 2, (2, 1, 2)), None),
        ("lp-input-5d", lambda m: m.lp_pool2d(x.unsqueeze(0), 2, 2), r"input"),
        # inputs that are no tensors: a TypeError from torch's parser, an AttributeError where its
        # Python layer reads an attribute of the input first
        *((f"{fn}-input-list-{i}", (lambda m, fn=fn, a=a: getattr(m, fn)([[1.0, 2.0]], *a)), r"input")
          for i, (fn, a) in enumerate([("conv2d", (w,)), ("max_pool2d", (2,)), ("max_pool1d", (2,)), ("avg_pool2d", (2,)),
                        ("lp_pool2d", (2, 2)), ("lp_pool1d", (2, 2)), ("adaptive_avg_pool2d", (2,)),
                        ("adaptive_avg_pool2d", ((2, 2),)), ("adaptive_avg_pool1d", (2,)),
                        ("adaptive_max_pool3d", (2,)), ("adaptive_max_pool1d", (2,)),
                        ("batch_norm", (None, None, None, None, True)), ("batch_norm", (z, o)),
                        ("group_norm", (1,)), ("layer_norm", ((2,),)), ("instance_norm", ()),
                        ("instance_norm", (z, o, None, None, False))])),
    ]
    return cases


SINGLE_CASES = _single_cases()


@pytest.mark.parametrize("call,names", [c[1:] for c in SINGLE_CASES], ids=[c[0] for c in SINGLE_CASES])
def test_single_case(call, names):
    assert_as_torch(lambda: call(TF213), lambda: call(F), names)


# ---- the same through the modules --------------------------------------------------------------
_MODULE_ARGS = {
    "Conv2d": ((4, 6, 3), ("stride", "padding", "dilation")),
    "MaxPool2d": ((2,), ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "AvgPool2d": ((2,), ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")),
    "LPPool2d": ((2, 2), ("norm_type", "kernel_size", "stride", "ceil_mode")),
    "AdaptiveAvgPool2d": ((), ("output_size",)),
    "AdaptiveMaxPool2d": ((), ("output_size",)),
}


def _module_arg_cases():
    return [(f"{name}-{arg}-{vid}", name, arg, value) for name, (_, args) in _MODULE_ARGS.items() for arg in args
            for vid, value in _variants(2)]


@pytest.mark.parametrize("name,arg,value", [c[1:] for c in _module_arg_cases()], ids=[c[0] for c in _module_arg_cases()])
def test_module_arguments(name, arg, value):
    """The modules take their arguments as torch's (our modules subclass them) and their forward
    passes them to our functions: the same classes and values as torch's modules."""
    args, _ = _MODULE_ARGS[name]
    kwargs = {arg: value}
    x = _input(2).abs() + 0.5

    def make(module_cls):
        def run():
            torch.manual_seed(0)
            return module_cls(*args, **kwargs).double()
        return run

    (theirs, their_error), (ours, our_error) = _run(make(getattr(torch.nn, name))), _run(make(getattr(tco.nn, name)))
    if their_error is not None:  # torch's constructor (ours is a subclass of it) refuses the argument
        assert type(our_error) is type(their_error), f"{their_error!r} != {our_error!r}"
        return
    assert our_error is None, f"torch constructs the module, ours raises {our_error!r}"
    assert_as_torch(lambda: theirs(x), lambda: ours(x), "kernel_size|stride" if arg == "kernel_size" else arg)


# ---- tco.grad against torch.nn.grad -----------------------------------------------------------
def _grad_cases():
    cases = []
    for which in ("input", "weight"):
        for arg in ("stride", "padding", "dilation", "groups"):
            for vid, value in _variants(2):
                if arg == "dilation" and vid == "zero":
                    continue  # a known difference, tested below
                cases.append((f"conv2d_{which}-{arg}-{vid}", which, arg, value))
    return cases


@pytest.mark.parametrize("which,arg,value", [c[1:] for c in _grad_cases()], ids=[c[0] for c in _grad_cases()])
def test_grad_arguments(which, arg, value):
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    go = torch.randn(2, 6, 6, 6, dtype=torch.float64)
    kwargs = {arg: value}
    if which == "input":
        assert_as_torch(lambda: TG.conv2d_input(x.shape, w, go, **kwargs),
                        lambda: tco.grad.conv2d_input(x.shape, w, go, **kwargs), f"{arg}|grad_output")
    else:
        assert_as_torch(lambda: TG.conv2d_weight(x, w.shape, go, **kwargs),
                        lambda: tco.grad.conv2d_weight(x, w.shape, go, **kwargs), f"{arg}|grad_output")


@pytest.mark.parametrize("case", ["input_size-3", "input_size-float", "grad_output-rows", "weight_size-3",
                                  "weight_size-float", "grad_output-columns-weight", "stride-2-size-7",
                                  "stride-2-size-8", "stride-2-size-9"])
def test_grad_sizes(case):
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    w = torch.randn(6, 4, 3, 3, dtype=torch.float64)
    go = torch.randn(2, 6, 6, 6, dtype=torch.float64)
    go3 = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    calls = {
        "input_size-3": (lambda g: g.conv2d_input((2, 4, 8), w, go), r"input_size"),
        "input_size-float": (lambda g: g.conv2d_input((2.0, 4, 8, 8), w, go), r"input_size"),
        "grad_output-rows": (lambda g: g.conv2d_input(x.shape, w, go[:, :, :5]), r"grad_output.*\(2, 6, 5, 6\)"),
        "weight_size-3": (lambda g: g.conv2d_weight(x, (6, 4, 3), go), r"weight_size|stride"),
        "weight_size-float": (lambda g: g.conv2d_weight(x, (6, 4, 3.0, 3), go), r"weight_size"),
        "grad_output-columns-weight": (lambda g: g.conv2d_weight(x, w.shape, go[..., :4]), r"grad_output"),
        "stride-2-size-7": (lambda g: g.conv2d_input((2, 4, 7, 7), w, go3, stride=2), None),
        "stride-2-size-8": (lambda g: g.conv2d_input((2, 4, 8, 8), w, go3, stride=2), None),
        "stride-2-size-9": (lambda g: g.conv2d_input((2, 4, 9, 9), w, go3, stride=2), r"grad_output"),
    }
    call, names = calls[case]
    assert_as_torch(lambda: call(TG), lambda: call(tco.grad), names)


# ---- PyTorch's OpInfo error and sample inputs -------------------------------------------------
_TWIN_OPS = (
    [f"nn.functional.conv{nd}d" for nd in (1, 2, 3)]
    + [f"nn.functional.{kind}_pool{nd}d" for kind in ("max", "avg", "adaptive_max", "adaptive_avg")
       for nd in (1, 2, 3)]
    + [f"nn.functional.{norm}" for norm in ("batch_norm", "group_norm", "layer_norm", "instance_norm")]
)
_OPINFOS = [op for op in OP_DB if op.name in _TWIN_OPS]


def _ours(op):
    return getattr(F, op.name.rsplit(".", 1)[1])


def _opinfo_id(op):
    return op.name.rsplit(".", 1)[1] + (f"-{op.variant_test_name}" if op.variant_test_name else "")


def test_every_twin_has_opinfos():
    assert sorted({op.name for op in _OPINFOS}) == sorted(_TWIN_OPS)


_ERROR_OPINFOS = [op for op in _OPINFOS if op.error_inputs_func is not None]


# torch's error inputs that the twins accept on purpose, and where the feature is tested.
_EXTENSIONS = {
    "padding='same' is not supported for strided convolutions":
        "TensorFlow's 'same' with a stride (tests/test_conv.py::test_same_padding_with_a_stride_is_tensorflows)",
}


@pytest.mark.parametrize("op", _ERROR_OPINFOS, ids=[_opinfo_id(op) for op in _ERROR_OPINFOS])
def test_opinfo_error_inputs(op):
    """PyTorch's error inputs of the op: ours raises the class torch's test expects (every one of
    these samples takes only arguments our twin has)."""
    count = 0
    for error_input in op.error_inputs(torch.device("cpu")):
        sample = error_input.sample_input
        args = (sample.input, *sample.args)
        if error_input.error_regex in _EXTENSIONS:  # what torch refuses and the twin does on purpose
            _ours(op)(*args, **sample.kwargs)
            continue
        their_error = _run(lambda: op.op(*args, **sample.kwargs))[1]
        assert type(their_error) is error_input.error_type  # the expectation holds for torch here
        with pytest.raises(error_input.error_type) as info:
            _ours(op)(*args, **sample.kwargs)
        assert type(info.value) is error_input.error_type, \
            f"{sample}: expected {error_input.error_type.__name__}, got {type(info.value).__name__}: {info.value}"
        count += 1
    assert count > 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("op", _OPINFOS, ids=[_opinfo_id(op) for op in _OPINFOS])
def test_opinfo_sample_inputs(op, dtype):
    """PyTorch's sample inputs of the op: ours gives torch's values and moves the running
    statistics of batch and instance norm as torch does."""
    count = 0
    for sample in op.sample_inputs("cpu", dtype, requires_grad=False):
        args = (sample.input, *sample.args)
        theirs_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        our_args = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        assert_as_torch(lambda: op.op(*theirs_args, **sample.kwargs), lambda: _ours(op)(*our_args, **sample.kwargs))
        for ours, theirs in zip(our_args, theirs_args):
            if isinstance(ours, torch.Tensor):
                torch.testing.assert_close(ours, theirs, equal_nan=True)
        count += 1
    assert count > 0


# ---- PyTorch's ModuleInfo error and sample inputs ---------------------------------------------
def _twin_module_infos():
    infos = []
    for info in MODULE_DB:
        name = info.module_cls.__name__
        ours = getattr(tco.nn, name, None)
        if isinstance(ours, type) and issubclass(ours, info.module_cls) and ours is not info.module_cls:
            infos.append(info)
    return infos


_MODULE_INFOS = _twin_module_infos()
_ERROR_MODULE_INFOS = [info for info in _MODULE_INFOS if info.module_error_inputs_func is not None]


def test_module_infos_cover_the_twins():
    names = {info.module_cls.__name__ for info in _MODULE_INFOS}
    for name in ("Conv1d", "Conv2d", "Conv3d", "MaxPool2d", "AvgPool3d", "LPPool1d", "AdaptiveAvgPool2d",
                 "AdaptiveMaxPool3d", "BatchNorm2d", "GroupNorm", "LayerNorm", "InstanceNorm3d"):
        assert name in names
    # MaxPool2d's error inputs came with torch 2.13's module_db.
    listed = {info.module_cls.__name__ for info in MODULE_DB if info.module_error_inputs_func is not None}
    assert {info.module_cls.__name__ for info in _ERROR_MODULE_INFOS} >= \
        {"BatchNorm1d", "GroupNorm"} | ({"MaxPool2d"} & listed)


def _module_call(cls, module_input, training):
    def call():
        m = cls(*module_input.constructor_input.args, **module_input.constructor_input.kwargs)
        m.train(training)
        return m(*module_input.forward_input.args, **module_input.forward_input.kwargs)
    return call


def _torch_module_call(cls, module_input, training):
    """_module_call of torch's module under torch 2.13's rules (conftest's TF213): a batch norm
    that normalizes with its running statistics and eps=0 computes, where an older torch refuses."""
    def call():
        m = cls(*module_input.constructor_input.args, **module_input.constructor_input.kwargs)
        m.train(training)
        if not TORCH_BATCH_NORM_EVAL_EPS_ZERO and isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and \
                not m.training and m.running_mean is not None and m.eps == 0:
            (x,) = module_input.forward_input.args
            m._check_input_dim(x)
            return TF213.batch_norm(x, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)
        return m(*module_input.forward_input.args, **module_input.forward_input.kwargs)
    return call


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("info", _ERROR_MODULE_INFOS, ids=[i.module_cls.__name__ for i in _ERROR_MODULE_INFOS])
def test_module_error_inputs(info, training):
    """ModuleInfo's error inputs: our module fails as torch's does (where torch's does: the eps=0
    case of batch norm is listed for eval mode too, where torch 2.13 computes)."""
    ours = getattr(tco.nn, info.module_cls.__name__)
    count = 0
    for error_input in info.module_error_inputs_func(info, device="cpu", dtype=torch.float32, requires_grad=False,
                                                     training=training):
        mi = error_input.module_error_input
        error = assert_as_torch(_torch_module_call(info.module_cls, mi, training), _module_call(ours, mi, training))
        if error is not None:
            assert type(error) is error_input.error_type
        count += 1
    assert count > 0


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("info", _MODULE_INFOS, ids=[i.module_cls.__name__ for i in _MODULE_INFOS])
def test_module_sample_inputs(info, training):
    """ModuleInfo's sample inputs: our module (torch's parameters and buffers loaded) gives
    torch's outputs and leaves torch's state."""
    ours_cls = getattr(tco.nn, info.module_cls.__name__)
    count = 0
    for mi in info.module_inputs_func(info, device="cpu", dtype=torch.float64, requires_grad=False,
                                      training=training):
        args, kwargs = mi.constructor_input.args, mi.constructor_input.kwargs
        theirs = info.module_cls(*args, **kwargs).to(torch.float64).train(training)
        ours = ours_cls(*args, **kwargs).to(torch.float64).train(training)
        ours.load_state_dict(theirs.state_dict())
        fwd = mi.forward_input.args
        their_in = [a.clone() if isinstance(a, torch.Tensor) else a for a in fwd]
        our_in = [a.clone() if isinstance(a, torch.Tensor) else a for a in fwd]
        assert_as_torch(lambda: theirs(*their_in, **mi.forward_input.kwargs),
                        lambda: ours(*our_in, **mi.forward_input.kwargs))
        torch.testing.assert_close(ours.state_dict(), theirs.state_dict(), equal_nan=True)
        count += 1
    assert count > 0


# ---- a failed call leaves the state as it was -------------------------------------------------
def _module_failures():
    f64 = torch.float64
    return [
        ("batch_norm-eps-zero-train", lambda: tco.nn.BatchNorm2d(3, eps=0.0), True, torch.randn(2, 3, 4, 4), r"eps"),
        ("batch_norm-eps-negative-train", lambda: tco.nn.BatchNorm1d(3, eps=-1.0), True, torch.randn(4, 3), r"eps"),
        ("batch_norm-eps-negative-eval", lambda: tco.nn.BatchNorm1d(3, eps=-1.0), False, torch.randn(4, 3), r"eps"),
        ("batch_norm-momentum-none-eps-zero", lambda: tco.nn.BatchNorm1d(3, eps=0.0, momentum=None), True,
         torch.randn(4, 3), r"eps"),
        ("batch_norm-one-value", lambda: tco.nn.BatchNorm1d(3), True, torch.randn(1, 3), r"more than 1 value"),
        ("batch_norm-rank", lambda: tco.nn.BatchNorm2d(3), True, torch.randn(2, 3, 4), r"4D input"),
        ("batch_norm-channels", lambda: tco.nn.BatchNorm2d(3), True, torch.randn(2, 4, 3, 3), r"running_mean|weight"),
        ("batch_norm-int", lambda: tco.nn.BatchNorm2d(3), True, torch.randint(0, 4, (2, 3, 2, 2)), r"Int|dtype"),
        ("batch_norm-int-eval", lambda: tco.nn.BatchNorm2d(3), False, torch.randint(0, 4, (2, 3, 2, 2)),
         r"Int|dtype"),
        ("sync_batch_norm-eps-zero", lambda: tco.nn.SyncBatchNorm(3, eps=0.0), True, torch.randn(2, 3, 2), r"eps"),
        ("instance_norm-int", lambda: tco.nn.InstanceNorm2d(3, track_running_stats=True), True,
         torch.randint(0, 4, (2, 3, 4, 4)), r"Int|dtype"),
        ("instance_norm-one-value", lambda: tco.nn.InstanceNorm1d(3, track_running_stats=True), True,
         torch.randn(2, 3, 1), r"more than 1 spatial"),
        ("group_norm-int", lambda: tco.nn.GroupNorm(1, 3, affine=False), True, torch.randint(0, 4, (2, 3, 4)),
         r"Long|dtype"),
        ("group_norm-int-float-weight", lambda: tco.nn.GroupNorm(1, 3), True, torch.randint(0, 4, (2, 3, 4)),
         r"Long|dtype"),
        ("layer_norm-shape", lambda: tco.nn.LayerNorm(5).to(f64), True, torch.randn(2, 4, dtype=f64),
         r"normalized_shape"),
    ]


MODULE_FAILURES = _module_failures()


@pytest.mark.parametrize("make,training,x,names", [c[1:] for c in MODULE_FAILURES],
                         ids=[c[0] for c in MODULE_FAILURES])
def test_failed_module_call_leaves_state_and_input(make, training, x, names):
    """Ours raises torch's class (torch's module built alike raises it too), and leaves the
    module's parameters, running statistics and num_batches_tracked, and the input, as they were."""
    m = make().train(training)
    for buffer in ("running_mean", "running_var"):
        if getattr(m, buffer, None) is not None:
            with torch.no_grad():
                getattr(m, buffer).uniform_(0.5, 1.5)
    twin = next(c for c in type(m).__mro__ if c.__module__.startswith("torch.nn"))
    if twin is torch.nn.modules.batchnorm._BatchNorm:
        twin = torch.nn.BatchNorm1d  # SyncBatchNorm without a process group computes as BatchNorm
    theirs = copy.deepcopy(m)
    theirs.__class__ = twin
    state = copy.deepcopy(m.state_dict())
    x_before = x.clone()
    assert_as_torch(lambda: theirs(x.clone()), lambda: m(x), names)
    after = m.state_dict()
    assert after.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(after[key], value), f"{key} changed by a failed call"
    assert torch.equal(x, x_before)


def test_failed_functional_call_leaves_running_statistics():
    x = torch.randn(4, 3, 5)
    for call in (lambda rm, rv: F.batch_norm(x, rm, rv, training=True, eps=0.0),
                 lambda rm, rv: F.batch_norm(x, rm, rv, training=True, eps=-1e-3),
                 lambda rm, rv: F.batch_norm(x, rm, rv, training=False, eps=-1e-3),
                 lambda rm, rv: F.batch_norm(x.int(), rm, rv, training=True),
                 lambda rm, rv: F.batch_norm(x[:1, :, :1], rm, rv, training=True),
                 lambda rm, rv: F.batch_norm(x, rm, rv, torch.ones(2), training=True),
                 lambda rm, rv: F.instance_norm(x.int(), rm, rv),
                 lambda rm, rv: F.instance_norm(x[:, :, :1], rm, rv)):
        rm, rv = torch.rand(3), torch.rand(3) + 1
        rm0, rv0, x0 = rm.clone(), rv.clone(), x.clone()
        with pytest.raises((RuntimeError, ValueError)):
            call(rm, rv)
        assert torch.equal(rm, rm0) and torch.equal(rv, rv0) and torch.equal(x, x0)


# ---- known differences ------------------------------------------------------------------------
@pytest.mark.parametrize("call", [
    lambda m: m.conv2d(torch.randint(0, 3, (1, 2, 5, 5)), torch.randint(0, 3, (3, 2, 3, 3))),
    lambda m: m.conv1d(torch.randint(0, 3, (1, 2, 5)), torch.randint(0, 3, (3, 2, 3))),
    lambda m: m.max_pool2d(torch.randint(0, 3, (1, 2, 5, 5)), 2),
    lambda m: m.max_pool1d(torch.randint(0, 3, (1, 2, 5)).to(torch.int16), 2, return_indices=True),
], ids=["conv2d", "conv1d", "max_pool2d", "max_pool1d-int16"])
def test_integer_inputs_of_convolution_and_max_pooling_are_refused(call):
    """torch computes these (its CPU convolution and max pooling have integer kernels); ours are
    floating-point only and refuse an integer input with a RuntimeError naming its dtype."""
    assert _run(lambda: call(TF))[1] is None
    with pytest.raises(RuntimeError, match=r"(?i)float.*got (Int|Long|Short)") as info:
        call(F)
    assert type(info.value) is RuntimeError


def test_layer_norm_takes_an_int_normalized_shape():
    """torch.nn.functional.layer_norm refuses a bare int (TypeError); ours reads it as a
    1-tuple, as torch.nn.LayerNorm's constructor does."""
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    assert isinstance(_run(lambda: TF.layer_norm(x, 5))[1], TypeError)
    torch.testing.assert_close(F.layer_norm(x, 5), TF.layer_norm(x, (5,)))


def test_grad_refuses_dilation_zero():
    """torch.nn.grad computes with dilation 0 for some shapes (ATen's backward does not always
    check it), torch's convolution refuses it; ours refuses it always."""
    x, w, go = torch.randn(2, 4, 8, 8), torch.randn(6, 4, 3, 3), torch.randn(2, 6, 6, 6)
    assert _run(lambda: TG.conv2d_input(x.shape, w, go, dilation=0))[1] is None
    assert isinstance(_run(lambda: TF.conv2d(x, w, dilation=0))[1], RuntimeError)
    with pytest.raises(RuntimeError, match="dilation"):
        tco.grad.conv2d_input(x.shape, w, go, dilation=0)
    with pytest.raises(RuntimeError, match="dilation"):
        tco.grad.conv2d_weight(x, w.shape, go, dilation=0)
