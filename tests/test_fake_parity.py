"""Parity of every op's fake kernel with its kernel: the same calls accepted, with results of the
same shape, dtype and strides; the same calls refused, with the same exception class.

Each op has a generated grid of valid argument sets (the product of a few options per
argument, a fixed-seed sample of it where large) and a grid of invalid ones (one argument
spoiled at a time). Every set runs on the CPU kernel and on the fake kernel twice: with meta
tensors, and under FakeTensorMode. A set with a meta tensor among CPU ones (the device
mismatch that sends a call to the fake kernel) runs the CPU kernel through redispatch, so
that the kernel's own device check answers. A third run under FakeTensorMode with symbolic
sizes (what torch.compile(dynamic=True) traces with) checks that the fakes' checks and shapes
hold for SymInts.

The ops are enumerated from the registered schemas: a new op without cases fails
test_every_op_has_cases.

EDGE_CASES are calls the kernels once answered wrongly (found by these tests): int64
wrap-around, huge kernels, empty rows, statistics of the wrong dtype.
"""

import functools
import itertools
import random

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.fx.experimental.symbolic_shapes import DimDynamic, ShapeEnv, StatelessSymbolicContext

import torch_cnn_ops  # noqa: F401  (registers the ops)

ops = torch.ops.cnn_ops

# conv_algorithm returns no tensor (it names the algorithm conv_forward would run): there is no
# fake kernel to compare; its checks are conv_forward's (tests/test_backends.py holds it to them).
OP_NAMES = sorted({s.name.split("::")[1] for s in torch._C._jit_get_all_schemas()
                   if s.name.startswith("cnn_ops::")} - {"conv_algorithm"})
F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
HUGE = 2**62  # sizes whose padded lengths or element counts overflow int64

# ---- running one argument set ---------------------------------------------------------------------


def _positional(name, args):
    """The argument dict of `name` in schema order (the dicts use the schema's names)."""
    names = [a.name for a in getattr(ops, name).default._schema.arguments]
    assert set(args) == set(names), f"{name}: arguments {sorted(args)} != schema {names}"
    return [args[n] for n in names]


def _tensors(args):
    return [a for a in args if isinstance(a, torch.Tensor)]


def _as_meta(t):
    """t on the meta device with its strides (an expanded tensor stays expanded) and requires_grad."""
    m = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")
    return m.requires_grad_(t.requires_grad)


def _size(s):
    """A size, or a SymInt's value for the real sizes (its hint: no guard, which would cost)."""
    return s.node.hint if isinstance(s, torch.SymInt) else int(s)


def _summary(out):
    """(shape, dtype, strides) of each result; None for an op without results."""
    outs = out if isinstance(out, tuple) else (out,)
    return [None if t is None else (tuple(map(_size, t.shape)), t.dtype, tuple(map(_size, t.stride()))) for t in outs]


def _outcome(fn):
    """('ok', summary) or ('raises', exception class, message)."""
    try:
        return ("ok", _summary(fn()))
    except Exception as e:  # noqa: BLE001  (the class is what is compared)
        return ("raises", type(e), str(e).splitlines()[0][:200] if str(e) else "")


def run_real(name, args):
    args = _positional(name, args)
    if any(t.device.type == "meta" for t in _tensors(args)):
        # The dispatcher would send a call with a meta tensor to the fake kernel: ask the CPU
        # kernel directly.
        cpu = torch._C.DispatchKeySet(torch._C.DispatchKey.CPU)
        return _outcome(lambda: getattr(ops, name).default.redispatch(cpu, *args))
    return _outcome(lambda: getattr(ops, name)(*args))


def run_meta(name, args):
    """With meta tensors; a set that mixes meta and CPU tensors runs as it is (the dispatcher
    sends it to the fake kernel)."""
    args = _positional(name, args)
    if not any(t.device.type == "meta" for t in _tensors(args)):
        args = [_as_meta(a) if isinstance(a, torch.Tensor) else a for a in args]
    return _outcome(lambda: getattr(ops, name)(*args))


def fake_mode(symbolic=False):
    """A FakeTensorMode; with `symbolic`, the tensors it makes have SymInt sizes (hinted by the
    real sizes), as torch.compile(dynamic=True) traces with. One serves many calls (it converts
    each tensor once)."""
    return FakeTensorMode(shape_env=ShapeEnv()) if symbolic else FakeTensorMode()


def run_fake(name, args, mode):
    symbolic = mode.shape_env is not None

    def convert(a):
        if not isinstance(a, torch.Tensor):
            return a
        if not symbolic:
            return mode.from_tensor(a)
        context = StatelessSymbolicContext(dynamic_sizes=[DimDynamic.DYNAMIC] * a.dim())
        return mode.from_tensor(a, symbolic_context=context)

    args = [convert(a) for a in _positional(name, args)]
    with mode:
        return _outcome(lambda: getattr(ops, name)(*args))


def _same_class(real, fake):
    """A fake's outcome matches the kernel's: both return results of the same shapes, dtypes
    and strides, or both raise the same exception class."""
    if real[0] == "raises" or fake[0] == "raises":
        return real[0] == fake[0] and real[1] is fake[1]
    return real[1] == fake[1]


# ---- generating argument sets -----------------------------------------------------------------------


def sample(n, **options):
    """Every combination of the options (a dict per combination), or a fixed-seed sample of n."""
    combos = list(itertools.product(*options.values()))
    if len(combos) > n:
        combos = random.Random(0).sample(combos, n)
    return [dict(zip(options, c)) for c in combos]


def per_dim(choices, first, nd):
    """nd values from `choices`, starting at `first` and rotating, so that the spatial
    dimensions of one set differ (asymmetric strides, kernels, paddings)."""
    i = choices.index(first)
    return [choices[(i + j) % len(choices)] for j in range(nd)]


def rand(shape, dtype=F32, layout="contiguous"):
    """Uniform values in [0, 1) (non-negative: stochastic pooling refuses negative inputs) in
    `layout`: contiguous, channels_last (4-d and 5-d; others stay contiguous) or strided (the
    last two dimensions transposed in memory: dense, neither contiguous nor channels_last)."""
    t = torch.rand(shape, dtype=torch.float64).to(dtype)
    if layout == "channels_last" and t.dim() in (4, 5):
        t = t.contiguous(memory_format=torch.channels_last if t.dim() == 4 else torch.channels_last_3d)
    elif layout == "strided" and t.dim() >= 2:
        t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t


def meta_like(t):
    return _as_meta(t)


def other_float(t):
    return t.to(F64 if t.dtype != F64 else F32)


def as_int(t):
    return t.to(torch.int32)


def grown(t, dim, by=1):
    """A tensor like t whose size along dim is larger by `by`."""
    shape = list(t.shape)
    shape[dim] += by
    return rand(shape, t.dtype) if t.is_floating_point() else torch.zeros(shape, dtype=t.dtype)


def spoil(base, label, **changes):
    """An invalid set: `base` with `changes`; callables are applied to the base's value."""
    args = dict(base)
    for k, v in changes.items():
        args[k] = v(base[k]) if callable(v) else v
    return label, args


VALID = {}
INVALID = {}


def cases(table, *names):
    """Registers a generator of argument sets for the ops `names`: a list of sets (a dict of
    lists per op where it serves several ops), made on first use and kept (the sets of the
    backward ops are made from the forward ops')."""

    def register(fn):
        fn = functools.cache(fn)
        for name in names:
            table[name] = fn
        return fn

    return register


# ---- conv family -------------------------------------------------------------------------------------
K, S, P, D = (1, 2, 3), (1, 2, 3), (0, 1, 2), (1, 2)


def trailing_pads(pe, nd, ks, ps, ds, backward):
    """padding_end per dimension; for a backward op's set at most max(padding, dilation *
    (kernel - 1)), the largest trailing pad of any padding mode, which the backward ops accept."""
    pes = per_dim(P, pe, nd)
    if backward:
        pes = [min(q, max(p, d * (k - 1))) for q, k, p, d in zip(pes, ks, ps, ds)]
    return pes


def conv_forward_args(nd=2, k=3, s=1, p=1, pe=1, d=1, extra=1, groups=1, dtype=F32, layout="contiguous", bias=True,
                      algorithm="auto", batch=2, backward=False):
    ks, ss, ps, ds = per_dim(K, k, nd), per_dim(S, s, nd), per_dim(P, p, nd), per_dim(D, d, nd)
    pes = trailing_pads(pe, nd, ks, ps, ds, backward)
    if algorithm == "shifted":
        ss = [1] * nd
    if algorithm == "winograd":
        if nd == 3:
            algorithm = "auto"  # Winograd is 1-d and 2-d
        else:
            ks, ss, ds = [3] * nd, [1] * nd, [1] * nd
    spatial = [max(dd * (kk - 1) + 1 - pp - qq, 0) + extra for kk, pp, qq, dd in zip(ks, ps, pes, ds)]
    return dict(input=rand([batch, 2 * groups, *spatial], dtype, layout),
                weight=rand([3 * groups, 2, *ks], dtype, layout), bias=rand([3 * groups], dtype) if bias else None,
                stride=ss, padding=ps, padding_end=pes, dilation=ds, groups=groups, algorithm=algorithm)


def conv_backward_args(layout="contiguous", **kw):
    """(input_backward args, weight_backward args) with the output size of a forward set."""
    f = conv_forward_args(layout=layout, backward=True, **kw)
    y = ops.conv_forward(*_positional("conv_forward", f))
    gy = rand(y.shape, y.dtype, layout)
    common = dict(stride=f["stride"], padding=f["padding"], dilation=f["dilation"], groups=f["groups"],
                  algorithm=f["algorithm"])
    return (dict(grad_output=gy, weight=f["weight"], input_size=list(f["input"].shape), **common),
            dict(grad_output=gy, input=f["input"], weight_size=list(f["weight"].shape), **common))


CONV_GRID = dict(nd=(1, 2, 3), k=K, s=S, p=P, pe=P, d=D, extra=(0, 1, 4), groups=(1, 2), dtype=(F32, F64, BF16),
                 layout=("contiguous", "channels_last", "strided"), bias=(False, True),
                 algorithm=("auto", "direct", "im2col", "shifted", "aten", "winograd"), batch=(2, 0))


@cases(VALID, "conv_forward")
def _conv_forward_valid():
    return [conv_forward_args(**c) for c in sample(24, **CONV_GRID)]


@cases(VALID, "conv_input_backward", "conv_weight_backward")
def _conv_backward_valid():
    grid = {k: v for k, v in CONV_GRID.items() if k != "bias"}
    pairs = [conv_backward_args(**c) for c in sample(20, **grid)]
    return {"conv_input_backward": [a for a, _ in pairs], "conv_weight_backward": [b for _, b in pairs]}


def _spatial_spoils(base, forward):
    """The spatial arguments, one spoiled at a time: zero and negative strides and dilations,
    negative paddings, lists of the wrong length, and sizes whose int64 arithmetic overflows
    (the backward sets have a kernel of 3, whose dilated extent 2 * 2**62 overflows)."""
    nd = len(base["stride"])
    out = []
    for arg, bad in itertools.product(("stride", "dilation", "padding") + (("padding_end",) if forward else ()),
                                      (0, -1, "length")):
        if bad == 0 and arg.startswith("padding"):
            continue
        value = [1] * (nd + 1) if bad == "length" else [bad] * nd
        out.append(spoil(base, f"{arg}={value}", **{arg: value}))
    out.append(spoil(base, "dilated kernel overflows", dilation=[2**63 - 1 if forward else HUGE] * nd))
    out.append(spoil(base, "padding 2**62", padding=[HUGE] * nd))
    if forward:
        out.append(spoil(base, "padding_end overflows", padding_end=[2**63 - 1] * nd))
    return out


@cases(INVALID, "conv_forward")
def _conv_forward_invalid():
    out = []
    for nd in (1, 2, 3):
        b = conv_forward_args(nd=nd, k=2, groups=2, bias=True)
        big = [s + p + q + 1 for s, p, q in zip(b["input"].shape[2:], b["padding"], b["padding_end"])]
        out += _spatial_spoils(b, forward=True)
        out += [
            spoil(b, "groups=0", groups=0), spoil(b, "groups=3 (no divisor)", groups=3),
            spoil(b, "algorithm", algorithm="bogus"), spoil(b, "shifted with stride 2", algorithm="shifted",
                                                            stride=[2] * nd),
            spoil(b, "winograd with a kernel of 2", algorithm="winograd"),
            spoil(b, "winograd with stride 2", algorithm="winograd_4x4", stride=[2] * nd),
            spoil(b, "kernel larger than the padded input", weight=rand([6, 2, *big])),
            spoil(b, "weight in_channels", weight=lambda w: grown(w, 1)),
            spoil(b, "weight out_channels not a multiple of groups", weight=lambda w: grown(w, 0)),
            spoil(b, "kernel size 0", weight=lambda w: rand([*w.shape[:-1], 0])),
            spoil(b, "bias size", bias=lambda t: grown(t, 0)), spoil(b, "bias 2-d", bias=lambda t: t[None]),
            spoil(b, "input rank", input=lambda t: t[None]), spoil(b, "weight rank", weight=lambda t: t[None]),
            spoil(b, "input int32", input=as_int), spoil(b, "weight dtype", weight=other_float),
            spoil(b, "bias dtype", bias=other_float),
            spoil(b, "weight on meta", weight=meta_like), spoil(b, "bias on meta", bias=meta_like),
            spoil(b, "stride of 4 entries", stride=[1] * 4, padding=[0] * 4, padding_end=[0] * 4, dilation=[1] * 4),
            spoil(b, "no spatial entries", stride=[], padding=[], padding_end=[], dilation=[]),
        ]
    return out


def _conv_backward_spoils(name, b):
    size_arg, other = ("input_size", "weight") if name == "conv_input_backward" else ("weight_size", "input")
    out = _spatial_spoils(b, forward=False)
    out += [
        spoil(b, "groups=0", groups=0), spoil(b, "groups=3", groups=3), spoil(b, "algorithm", algorithm="bogus"),
        spoil(b, "grad_output batch", grad_output=lambda t: grown(t, 0)),
        spoil(b, "grad_output channels", grad_output=lambda t: grown(t, 1)),
        spoil(b, "grad_output too large", grad_output=lambda t: grown(t, 2, 5)),
        spoil(b, "grad_output spatially empty", grad_output=lambda t: rand([*t.shape[:2], 0, *t.shape[3:]])),
        spoil(b, "grad_output rank", grad_output=lambda t: t[None]),
        spoil(b, f"{size_arg} rank", **{size_arg: lambda s: [1] + s}),
        spoil(b, f"{size_arg} channels", **{size_arg: lambda s: [s[0], s[1] + 1, *s[2:]]}),
        spoil(b, "grad_output int32", grad_output=as_int), spoil(b, f"{other} dtype", **{other: other_float}),
        spoil(b, f"{other} on meta", **{other: meta_like}), spoil(b, f"{other} rank", **{other: lambda t: t[None]}),
    ]
    if name == "conv_input_backward":
        # A grad_output too small for input_size: no trailing pad gives it.
        out.append(spoil(b, "input_size too large", input_size=lambda s: [*s[:2], *(v + 4 for v in s[2:])]))
        out.append(spoil(b, "negative input_size", input_size=lambda s: [*s[:2], -1, *s[3:]]))
    else:
        out.append(spoil(b, "weight_size kernel 0", weight_size=lambda s: [*s[:-1], 0]))
        out.append(spoil(b, "input larger", input=lambda t: grown(t, 2, 4)))
    return out


@cases(INVALID, "conv_input_backward", "conv_weight_backward")
def _conv_backward_invalid():
    out = {"conv_input_backward": [], "conv_weight_backward": []}
    for nd in (1, 2, 3):
        ib, wb = conv_backward_args(nd=nd, k=3, groups=2)
        out["conv_input_backward"] += _conv_backward_spoils("conv_input_backward", ib)
        out["conv_weight_backward"] += _conv_backward_spoils("conv_weight_backward", wb)
    return out


# ---- local family -----------------------------------------------------------------------------------


def local_forward_args(nd=2, k=3, s=1, p=1, pe=1, d=1, extra=1, dtype=F32, layout="contiguous", grid="tile",
                       bias="channel", batch=2, backward=False):
    ks, ss, ps, ds = per_dim(K, k, nd), per_dim(S, s, nd), per_dim(P, p, nd), per_dim(D, d, nd)
    pes = trailing_pads(pe, nd, ks, ps, ds, backward)
    spatial = [max(dd * (kk - 1) + 1 - pp - qq, 0) + extra for kk, pp, qq, dd in zip(ks, ps, pes, ds)]
    out = [(i + pp + qq - dd * (kk - 1) - 1) // st + 1 for i, kk, st, pp, qq, dd in zip(spatial, ks, ss, ps, pes, ds)]
    cells = [max(o, 1) for o in out] if grid == "unshared" else per_dim((1, 2, 3), 2, nd)
    b = {None: None, "channel": rand([3], dtype), "position": rand([3, *out], dtype)}[bias]
    return dict(input=rand([batch, 2, *spatial], dtype, layout), weight=rand([*cells, 3, 2, *ks], dtype),
                bias=b, stride=ss, padding=ps, padding_end=pes, dilation=ds)


def local_backward_args(layout="contiguous", **kw):
    f = local_forward_args(layout=layout, bias=None, backward=True, **kw)
    y = ops.local_forward(*_positional("local_forward", f))
    gy = rand(y.shape, y.dtype, layout)
    common = dict(stride=f["stride"], padding=f["padding"], dilation=f["dilation"])
    return (dict(grad_output=gy, weight=f["weight"], input_size=list(f["input"].shape), **common),
            dict(grad_output=gy, input=f["input"], weight_size=list(f["weight"].shape), **common))


LOCAL_GRID = dict(nd=(1, 2, 3), k=K, s=S, p=P, pe=P, d=D, extra=(0, 1, 3), dtype=(F32, F64, BF16),
                  layout=("contiguous", "channels_last", "strided"), grid=("tile", "unshared"), batch=(2, 0))


@cases(VALID, "local_forward")
def _local_forward_valid():
    return [local_forward_args(**c) for c in sample(20, bias=(None, "channel", "position"), **LOCAL_GRID)]


@cases(VALID, "local_input_backward", "local_weight_backward")
def _local_backward_valid():
    pairs = [local_backward_args(**c) for c in sample(16, **LOCAL_GRID)]
    return {"local_input_backward": [a for a, _ in pairs], "local_weight_backward": [b for _, b in pairs]}


@cases(INVALID, "local_forward")
def _local_forward_invalid():
    out = []
    for nd in (1, 2):
        b = local_forward_args(nd=nd, k=2, bias="channel")
        big = [s + p + q + 1 for s, p, q in zip(b["input"].shape[2:], b["padding"], b["padding_end"])]
        w = b["weight"]
        out += _spatial_spoils(b, forward=True)
        out += [
            spoil(b, "kernel larger than the padded input", weight=rand([*w.shape[:nd + 2], *big])),
            spoil(b, "weight in_channels", weight=lambda t: grown(t, nd + 1)),
            spoil(b, "grid size 0", weight=lambda t: rand([0, *t.shape[1:]])),
            spoil(b, "out_channels 0", weight=lambda t: rand([*t.shape[:nd], 0, *t.shape[nd + 1:]])),
            spoil(b, "kernel size 0", weight=lambda t: rand([*t.shape[:-1], 0])),
            spoil(b, "weight rank", weight=lambda t: t[None]), spoil(b, "input rank", input=lambda t: t[None]),
            spoil(b, "bias size", bias=lambda t: grown(t, 0)),
            spoil(b, "bias per position of the wrong size", bias=rand([3] + [9] * nd)),
            spoil(b, "input int32", input=as_int), spoil(b, "weight dtype", weight=other_float),
            spoil(b, "bias dtype", bias=other_float), spoil(b, "weight on meta", weight=meta_like),
            spoil(b, "bias on meta", bias=meta_like),
        ]
    return out


@cases(INVALID, "local_input_backward", "local_weight_backward")
def _local_backward_invalid():
    out = {"local_input_backward": [], "local_weight_backward": []}
    for nd in (1, 2):
        ib, wb = local_backward_args(nd=nd, k=3)
        for name, b in (("local_input_backward", ib), ("local_weight_backward", wb)):
            size_arg, other = ("input_size", "weight") if name == "local_input_backward" else ("weight_size", "input")
            out[name] += _spatial_spoils(b, forward=False) + [
                spoil(b, "grad_output batch", grad_output=lambda t: grown(t, 0)),
                spoil(b, "grad_output channels", grad_output=lambda t: grown(t, 1)),
                spoil(b, "grad_output too large", grad_output=lambda t: grown(t, 2, 5)),
                spoil(b, "grad_output rank", grad_output=lambda t: t[None]),
                spoil(b, f"{size_arg} rank", **{size_arg: lambda s: [1] + s}),
                spoil(b, "grad_output int32", grad_output=as_int), spoil(b, f"{other} dtype", **{other: other_float}),
                spoil(b, f"{other} on meta", **{other: meta_like}),
            ]
        out["local_input_backward"].append(
            spoil(ib, "input_size too large", input_size=lambda s: [*s[:2], *(v + 4 for v in s[2:])]))
        out["local_input_backward"].append(spoil(ib, "in_channels", input_size=lambda s: [s[0], s[1] + 1, *s[2:]]))
        out["local_weight_backward"].append(spoil(wb, "weight_size kernel 0", weight_size=lambda s: [*s[:-1], 0]))
        out["local_weight_backward"].append(spoil(wb, "weight_size grid 0", weight_size=lambda s: [0, *s[1:]]))
    return out


# ---- pool family: window pooling ------------------------------------------------------------------
PK, PS = (1, 2, 3), (1, 2, 3)


def window_args(nd=2, k=2, s=1, p=0, d=1, extra=1, dtype=F32, layout="contiguous", channels=3, batch=2,
                pad=True, dil=True):
    """input, kernel_size, stride, padding (at most half the kernel) and dilation of a valid window
    pooling; pad / dil False: zeros / ones (the ops without them)."""
    ks, ss, ds = per_dim(PK, k, nd), per_dim(PS, s, nd), per_dim(D, d, nd) if dil else [1] * nd
    ps = [min(pp, kk // 2) for pp, kk in zip(per_dim(P, p, nd), ks)] if pad else [0] * nd
    spatial = [max(dd * (kk - 1) + 1 - 2 * pp, 1) + extra for kk, pp, dd in zip(ks, ps, ds)]
    return dict(input=rand([batch, channels, *spatial], dtype, layout), kernel_size=ks, stride=ss, padding=ps,
                dilation=ds)


WINDOW_GRID = dict(nd=(1, 2, 3), k=PK, s=PS, p=P, d=D, extra=(0, 1, 3), dtype=(F32, F64, BF16),
                   layout=("contiguous", "channels_last", "strided"), channels=(3, 1), batch=(2, 0))


def _without(grid, *names):
    return {k: v for k, v in grid.items() if k not in names}


def _drop(args, *names):
    return {k: v for k, v in args.items() if k not in names}


def _padding_end(a, end):
    """padding_end of a window pooling: empty (the padding on both sides) or one more than the
    padding, within half the kernel (TensorFlow's 'same' pads so)."""
    if end == "both":
        return []
    return [min(p + 1, k // 2) for p, k in zip(a["padding"], a["kernel_size"])]


@cases(VALID, "max_pool_forward")
def _max_pool_valid():
    out = []
    for c in sample(24, ceil_mode=(False, True), minimum=(False, True), end=("both", "more"), **WINDOW_GRID):
        a = window_args(**_drop(c, "ceil_mode", "minimum", "end"))
        out.append(dict(a, ceil_mode=c["ceil_mode"], minimum=c["minimum"], padding_end=_padding_end(a, c["end"])))
    return out


@cases(VALID, "avg_pool_forward")
def _avg_pool_valid():
    out = []
    for c in sample(20, ceil_mode=(False, True), count_include_pad=(False, True), divisor_override=(None, 3, -2),
                    end=("both", "more"), **_without(WINDOW_GRID, "d")):
        a = _drop(window_args(dil=False, **_drop(c, "ceil_mode", "count_include_pad", "divisor_override", "end")),
                  "dilation")
        out.append(dict(a, ceil_mode=c["ceil_mode"], count_include_pad=c["count_include_pad"],
                        divisor_override=c["divisor_override"], padding_end=_padding_end(a, c["end"])))
    return out


@cases(VALID, "lp_pool_forward")
def _lp_pool_valid():
    out = []
    for c in sample(16, norm_type=(1.0, 2.0, 3.5), ceil_mode=(False, True), **_without(WINDOW_GRID, "d", "p")):
        a = window_args(pad=False, dil=False, **_drop(c, "norm_type", "ceil_mode"))
        out.append(dict(input=a["input"], norm_type=c["norm_type"], kernel_size=a["kernel_size"], stride=a["stride"],
                        ceil_mode=c["ceil_mode"]))
    return out


@cases(VALID, "gaussian_pool_forward")
def _gaussian_pool_valid():
    return [dict(_drop(window_args(dil=False, **_drop(c, "sigma")), "dilation"), sigma=c["sigma"])
            for c in sample(12, sigma=(0.5, 2.0), **_without(WINDOW_GRID, "d"))]


def _stochastic_args(c):
    a = window_args(pad=False, dil=False, **c)
    return dict(input=a["input"], kernel_size=a["kernel_size"], stride=a["stride"])


@cases(VALID, "stochastic_pool_eval_forward")
def _stochastic_eval_valid():
    return [_stochastic_args(c) for c in sample(12, **_without(WINDOW_GRID, "d", "p"))]


@cases(VALID, "stochastic_pool_forward")
def _stochastic_valid():
    out = []
    for c in sample(12, **_without(WINDOW_GRID, "d", "p")):
        a = _stochastic_args(c)
        y = ops.stochastic_pool_eval_forward(a["input"], a["kernel_size"], a["stride"])
        out.append(dict(a, uniform=rand(y.shape, y.dtype)))
    return out


def _forward(name, args):
    return getattr(ops, name)(*_positional(name, args))


@cases(VALID, "avg_pool_backward", "lp_pool_backward", "gaussian_pool_backward", "stochastic_pool_eval_backward")
def _window_backward_valid():
    """The backward ops of the window poolings, on the forward sets' output shapes (grad_output
    in any layout)."""
    out = {"avg_pool_backward": [], "lp_pool_backward": [], "gaussian_pool_backward": [],
           "stochastic_pool_eval_backward": []}
    layouts = ("contiguous", "channels_last", "strided")
    for i, a in enumerate(VALID["avg_pool_forward"]()):
        gy = rand(_forward("avg_pool_forward", a).shape, a["input"].dtype, layouts[i % 3])
        out["avg_pool_backward"].append(dict(_drop(a, "input"), grad_output=gy, input_size=list(a["input"].shape)))
    for i, a in enumerate(VALID["lp_pool_forward"]()):
        gy = rand(_forward("lp_pool_forward", a).shape, a["input"].dtype, layouts[i % 3])
        out["lp_pool_backward"].append(dict(a, grad_output=gy))
    for i, a in enumerate(VALID["gaussian_pool_forward"]()):
        gy = rand(_forward("gaussian_pool_forward", a).shape, a["input"].dtype, layouts[i % 3])
        out["gaussian_pool_backward"].append(dict(_drop(a, "input"), grad_output=gy,
                                                  input_size=list(a["input"].shape)))
    for i, a in enumerate(VALID["stochastic_pool_eval_forward"]()):
        gy = rand(_forward("stochastic_pool_eval_forward", a).shape, a["input"].dtype, layouts[i % 3])
        out["stochastic_pool_eval_backward"].append(dict(a, grad_output=gy))
    return out


def _window_spoils(b, has_padding=True, has_dilation=True):
    """A window pooling's arguments, one spoiled at a time."""
    nd = len(b["kernel_size"])
    x_shape = b["input"].shape if "input" in b else b["input_size"]
    out = []
    for arg in ("kernel_size", "stride") + (("padding",) if has_padding else ()) + (("dilation",) if has_dilation
                                                                                     else ()):
        for bad in ((-1, "length") if arg == "padding" else (0, -1, "length")):
            value = [1] * (nd + 1) if bad == "length" else [bad] * nd
            out.append(spoil(b, f"{arg}={value}", **{arg: value}))
    big = [s + 1 for s in x_shape[2:]]
    unpadded = ({"padding": [0] * nd} if has_padding else {}) | ({"padding_end": []} if "padding_end" in b else {})
    out.append(spoil(b, "kernel larger than the input", kernel_size=big, **unpadded))
    if has_padding:
        out.append(spoil(b, "padding more than half the kernel", padding=[k // 2 + 1 for k in b["kernel_size"]]))
        out.append(spoil(b, "padding 2**62", padding=[HUGE] * nd))
    if "padding_end" in b:
        out += [spoil(b, f"padding_end={value}", padding_end=value)
                for value in ([-1] * nd, [0] * (nd + 1), [k // 2 + 1 for k in b["kernel_size"]], [HUGE] * nd)]
    if has_dilation:
        out.append(spoil(b, "dilated kernel overflows", dilation=[HUGE] * nd))
    return out


def _pool_input_spoils(b, arg="input"):
    t = b[arg]
    return [spoil(b, f"{arg} rank", **{arg: t[None]}), spoil(b, f"{arg} int32", **{arg: as_int(t)}),
            spoil(b, f"{arg} without channels", **{arg: rand([t.shape[0], 0, *t.shape[2:]])}),
            spoil(b, f"{arg} empty spatially", **{arg: rand([*t.shape[:2], 0, *t.shape[3:]])})]


@cases(INVALID, "max_pool_forward", "avg_pool_forward", "lp_pool_forward", "gaussian_pool_forward",
       "stochastic_pool_forward", "stochastic_pool_eval_forward")
def _window_forward_invalid():
    out = {}
    for nd in (1, 2, 3):
        w = window_args(nd=nd, k=3, p=1)
        w0 = window_args(nd=nd, k=3, pad=False, dil=False)  # for the ops without padding
        mx = dict(w, ceil_mode=True, minimum=False, padding_end=[])
        avg = dict(_drop(w, "dilation"), ceil_mode=False, count_include_pad=True, divisor_override=None,
                   padding_end=[1] * nd)
        lp = dict(input=w0["input"], norm_type=2.0, kernel_size=w0["kernel_size"], stride=w0["stride"], ceil_mode=True)
        gauss = dict(_drop(w, "dilation"), sigma=1.0)
        ev = dict(input=w0["input"], kernel_size=w0["kernel_size"], stride=w0["stride"])
        uniform = rand(ops.stochastic_pool_eval_forward(**ev).shape)
        st = dict(ev, uniform=uniform)
        out.setdefault("max_pool_forward", []).extend(_window_spoils(mx) + _pool_input_spoils(mx))
        out.setdefault("avg_pool_forward", []).extend(
            _window_spoils(avg, has_dilation=False) + _pool_input_spoils(avg) + [spoil(avg, "divisor 0",
                                                                                       divisor_override=0)])
        out.setdefault("lp_pool_forward", []).extend(
            _window_spoils(lp, has_padding=False, has_dilation=False) + _pool_input_spoils(lp)
            + [spoil(lp, f"norm_type {v}", norm_type=v) for v in (0.0, -1.0, float("nan"))])
        out.setdefault("gaussian_pool_forward", []).extend(
            _window_spoils(gauss, has_dilation=False) + _pool_input_spoils(gauss)
            + [spoil(gauss, f"sigma {v}", sigma=v) for v in (0.0, -1.0, float("inf"), float("nan"))])
        out.setdefault("stochastic_pool_eval_forward", []).extend(
            _window_spoils(ev, has_padding=False, has_dilation=False) + _pool_input_spoils(ev))
        out.setdefault("stochastic_pool_forward", []).extend(
            _window_spoils(st, has_padding=False, has_dilation=False) + _pool_input_spoils(st)
            + [spoil(st, "uniform shape", uniform=lambda u: grown(u, 2)),
               spoil(st, "uniform rank", uniform=lambda u: u[None]),
               spoil(st, "uniform dtype", uniform=other_float), spoil(st, "uniform on meta", uniform=meta_like)])
    return out


@cases(INVALID, "avg_pool_backward", "lp_pool_backward", "gaussian_pool_backward", "stochastic_pool_eval_backward")
def _window_backward_invalid():
    out = {}
    valid = _window_backward_valid()
    for name, sets in valid.items():
        has_padding = "padding" in sets[0]
        for b in [s for s in sets if s["grad_output"].dim() in (3, 4) and s["grad_output"].numel() > 0][:2]:
            spoils = _window_spoils(b, has_padding=has_padding, has_dilation=False) + [
                spoil(b, "grad_output spatially larger", grad_output=lambda t: grown(t, 2)),
                spoil(b, "grad_output batch", grad_output=lambda t: grown(t, 0)),
                spoil(b, "grad_output rank", grad_output=lambda t: t[None]),
                spoil(b, "grad_output int32", grad_output=as_int),
            ]
            if "input_size" in b:
                spoils += [spoil(b, "input_size rank", input_size=lambda s: [1] + s),
                           spoil(b, "input_size spatially smaller", input_size=lambda s: [*s[:2], 0, *s[3:]])]
            else:
                spoils += [spoil(b, "input dtype", input=other_float), spoil(b, "input on meta", input=meta_like),
                           spoil(b, "input larger", input=lambda t: grown(t, 2, 3))]
            if name == "lp_pool_backward":
                spoils.append(spoil(b, "norm_type 0", norm_type=0.0))
            if name == "gaussian_pool_backward":
                spoils.append(spoil(b, "sigma 0", sigma=0.0))
            if name == "avg_pool_backward":
                spoils.append(spoil(b, "divisor 0", divisor_override=0))
            out.setdefault(name, []).extend(spoils)
    return out


# ---- pool family: adaptive pooling and max_pool_backward --------------------------------------------------


ADAPTIVE_GRID = dict(nd=(1, 2, 3), out=(0, 1, 2, 3, 5), size=(1, 4, 7), dtype=(F32, F64, BF16),
                     layout=("contiguous", "channels_last", "strided"), channels=(3, 1), batch=(2, 0))


def adaptive_args(nd=2, out=2, size=4, dtype=F32, layout="contiguous", channels=3, batch=2):
    if nd == 3 and channels == 0:  # empty channels are refused in 3-d (an invalid set)
        channels = 1
    return dict(input=rand([batch, channels, *per_dim((1, 4, 7), size, nd)], dtype, layout),
                output_size=per_dim((0, 1, 2, 3, 5), out, nd))


@cases(VALID, "adaptive_max_pool_forward")
def _adaptive_max_valid():
    return [dict(adaptive_args(**_drop(c, "minimum")), minimum=c["minimum"])
            for c in sample(16, minimum=(False, True), **ADAPTIVE_GRID)]


@cases(VALID, "adaptive_avg_pool_forward")
def _adaptive_avg_valid():
    # torch's adaptive average pooling takes empty channels in 1-d and 2-d.
    return [adaptive_args(**c) for c in sample(16, **dict(ADAPTIVE_GRID, channels=(3, 1, 0)))]


@cases(VALID, "adaptive_avg_pool_backward")
def _adaptive_avg_backward_valid():
    layouts = ("contiguous", "channels_last", "strided")
    out = []
    for i, a in enumerate(_adaptive_avg_valid()):
        if a["input"].shape[1] == 0:
            continue
        gy = rand(ops.adaptive_avg_pool_forward(**a).shape, a["input"].dtype, layouts[i % 3])
        out.append(dict(grad_output=gy, input_size=list(a["input"].shape)))
    return out


@cases(VALID, "max_pool_backward")
def _max_pool_backward_valid():
    """grad_output in any layout with the indices of a window or adaptive forward (their layout
    is the forward's)."""
    layouts = ("contiguous", "channels_last", "strided")
    out = []
    for i, a in enumerate(_max_pool_valid()[:14] + _adaptive_max_valid()[:8]):
        name = "max_pool_forward" if "kernel_size" in a else "adaptive_max_pool_forward"
        y, ind = _forward(name, a)
        out.append(dict(grad_output=rand(y.shape, y.dtype, layouts[i % 3]), indices=ind,
                        input_size=list(a["input"].shape)))
    return out


@cases(INVALID, "adaptive_max_pool_forward", "adaptive_avg_pool_forward")
def _adaptive_forward_invalid():
    out = {}
    for nd in (1, 2, 3):
        a = adaptive_args(nd=nd)
        spoils = [spoil(a, "output_size -1", output_size=[-1] * nd),
                  spoil(a, "output_size of another length", output_size=[2] * (nd + 1)),
                  spoil(a, "no output_size", output_size=[]),
                  spoil(a, "input int32", input=as_int), spoil(a, "input rank", input=lambda t: t[None]),
                  spoil(a, "input empty spatially", input=lambda t: rand([*t.shape[:2], 0, *t.shape[3:]]))]
        out.setdefault("adaptive_avg_pool_forward", []).extend(spoils)
        out.setdefault("adaptive_max_pool_forward", []).extend(
            [(label, dict(args, minimum=True)) for label, args in spoils]
            + [spoil(dict(a, minimum=False), "input without channels",
                     input=lambda t: rand([t.shape[0], 0, *t.shape[2:]]))])
    out["adaptive_avg_pool_forward"].append(spoil(adaptive_args(nd=3), "3-d input without channels",
                                                  input=lambda t: rand([t.shape[0], 0, *t.shape[2:]])))
    return out


@cases(INVALID, "adaptive_avg_pool_backward")
def _adaptive_avg_backward_invalid():
    out = []
    for b in [c for c in _adaptive_avg_backward_valid() if c["grad_output"].numel() > 0][:3]:
        out += [spoil(b, "input_size rank", input_size=lambda s: [1] + s),
                spoil(b, "6 spatial dimensions", input_size=[1, 1] + [4] * 6, grad_output=rand([1, 1] + [2] * 6)),
                spoil(b, "no spatial dimension", input_size=lambda s: s[:2], grad_output=lambda t: rand(t.shape[:2])),
                spoil(b, "input_size spatially empty", input_size=lambda s: [*s[:2], 0, *s[3:]]),
                spoil(b, "grad_output batch", grad_output=lambda t: grown(t, 0)),
                spoil(b, "grad_output channels", grad_output=lambda t: grown(t, 1)),
                spoil(b, "grad_output int32", grad_output=as_int)]
    return out


@cases(INVALID, "max_pool_backward")
def _max_pool_backward_invalid():
    out = []
    for b in [c for c in _max_pool_backward_valid() if c["grad_output"].shape[0] > 0][:3]:
        out += [spoil(b, "indices int32", indices=as_int), spoil(b, "indices shape", indices=lambda t: grown(t, 2)),
                spoil(b, "indices on meta", indices=meta_like), spoil(b, "grad_output int32", grad_output=as_int),
                spoil(b, "grad_output and indices larger", grad_output=lambda t: grown(t, 0),
                      indices=lambda t: grown(t, 0)),
                spoil(b, "input_size rank", input_size=lambda s: [1] + s),
                spoil(b, "input_size channels", input_size=lambda s: [s[0], s[1] + 1, *s[2:]]),
                spoil(b, "negative input_size", input_size=lambda s: [*s[:2], -1, *s[3:]])]
    return out


# ---- pool family: k-max ---------------------------------------------------------------------------


@cases(VALID, "kmax_pool_forward")
def _kmax_valid():
    shapes = ([7], [3, 5], [2, 3, 6], [2, 3, 4, 5])
    out = []
    for c in sample(30, shape=range(len(shapes)), dim=(0, 1, 2, 3, -1, -2), k=("one", "half", "all"),
                    dtype=(F32, F64, BF16), layout=("contiguous", "channels_last", "strided")):
        shape = shapes[c["shape"]]
        if not -len(shape) <= c["dim"] < len(shape):
            continue
        n = shape[c["dim"]]
        k = {"one": 1, "half": (n + 1) // 2, "all": n}[c["k"]]
        out.append(dict(input=rand(shape, c["dtype"], c["layout"]), k=k, dim=c["dim"]))
    return out


@cases(VALID, "kmax_pool_backward")
def _kmax_backward_valid():
    out = []
    for i, a in enumerate(_kmax_valid()):
        y, ind = ops.kmax_pool_forward(**a)
        out.append(dict(grad_output=rand(y.shape, y.dtype, ("contiguous", "strided")[i % 2]), indices=ind,
                        dim=a["dim"], input_size=list(a["input"].shape)))
    return out


@cases(INVALID, "kmax_pool_forward")
def _kmax_invalid():
    out = []
    for b in (dict(input=rand([3, 5]), k=2, dim=-1), dict(input=rand([2, 3, 4]), k=2, dim=1)):
        n, d = b["input"].dim(), b["dim"]
        out += [spoil(b, "k 0", k=0), spoil(b, "k -1", k=-1), spoil(b, "k > length", k=b["input"].shape[d] + 1),
                spoil(b, "dim = ndim", dim=n), spoil(b, "dim < -ndim", dim=-n - 1),
                spoil(b, "input int32", input=as_int), spoil(b, "0-d input", input=torch.tensor(1.0), k=1, dim=0),
                spoil(b, "empty dim", input=lambda t: rand([*t.shape[:-1], 0]), dim=-1, k=1)]
    return out


@cases(INVALID, "kmax_pool_backward")
def _kmax_backward_invalid():
    out = []
    for b in [c for c in _kmax_backward_valid() if c["grad_output"].dim() >= 2][:3]:
        n, d = b["grad_output"].dim(), b["dim"] % b["grad_output"].dim()
        other = (d + 1) % n
        out += [spoil(b, "indices int32", indices=as_int), spoil(b, "indices on meta", indices=meta_like),
                spoil(b, "indices shape", indices=lambda t: grown(t, other)),
                spoil(b, "grad_output int32", grad_output=as_int, indices=lambda t: t),
                spoil(b, "dim out of range", dim=n), spoil(b, "input_size rank", input_size=lambda s: [1] + s),
                spoil(b, "input_size smaller than k along dim",
                      input_size=lambda s: [b["grad_output"].shape[d] - 1 if i == d else v for i, v in enumerate(s)]),
                spoil(b, "input_size differs elsewhere",
                      input_size=lambda s: [v + 1 if i == other else v for i, v in enumerate(s)])]
    return out


# ---- norm family ------------------------------------------------------------------------------------
NORM_SHAPES = ([4, 6], [3, 6, 5], [2, 6, 3, 4], [2, 6, 2, 3, 2], [5, 1, 3, 3], [1, 6, 1, 1])
NORM_GRID = dict(shape=range(len(NORM_SHAPES)), dtype=(F32, F64, BF16), layout=("contiguous", "channels_last",
                                                                                    "strided"))


def _norm_input(c):
    return rand(NORM_SHAPES[c["shape"]], c["dtype"], c["layout"])


def _vector(input, present=True, dtype=None):
    """C entries in `dtype` (the input's unless given), or None."""
    return rand([input.shape[1]], dtype or input.dtype) if present else None


@cases(VALID, "batch_norm_stats")
def _bn_stats_valid():
    return [dict(input=_norm_input(c)) for c in sample(14, **NORM_GRID)]


@cases(VALID, "batch_norm_elemt")
def _bn_elemt_valid():
    out = []
    for c in sample(14, affine=(False, True), stats=(F32, F64), **NORM_GRID):
        x = _norm_input(c)
        out.append(dict(input=x, weight=_vector(x, c["affine"]), bias=_vector(x, c["affine"], F32),
                        mean=_vector(x, dtype=c["stats"]), invstd=_vector(x, dtype=c["stats"])))
    return out


@cases(VALID, "batch_norm_forward")
def _bn_forward_valid():
    out = []
    for c in sample(20, affine=(False, True), running=(False, True), training=(False, True), **NORM_GRID):
        x = _norm_input(c)
        training = c["training"] or not c["running"]
        if training and x.numel() == x.shape[1]:  # one value per channel: refused (an invalid set)
            continue
        out.append(dict(input=x, weight=_vector(x, c["affine"]), bias=_vector(x, c["affine"]),
                        running_mean=_vector(x, c["running"], F32), running_var=_vector(x, c["running"], F32),
                        training=training, eps=1e-5))
    return out


@cases(VALID, "batch_norm_update_stats")
def _bn_update_valid():
    return [dict(running_mean=rand([c["c"]], c["dtype"]), running_var=rand([c["c"]], c["dtype"]),
                 mean=rand([c["c"]], F32), var=rand([c["c"]], F32), count=c["count"], momentum=0.1)
            for c in sample(12, c=(1, 6, 0), dtype=(F32, F64, BF16), count=(0, 1, 5))]


@cases(VALID, "batch_norm_backward_reduce", "batch_norm_backward_elemt", "batch_norm_backward")
def _bn_backward_valid():
    out = {"batch_norm_backward_reduce": [], "batch_norm_backward_elemt": [], "batch_norm_backward": []}
    for i, c in enumerate(sample(14, affine=(False, True), training=(False, True), **NORM_GRID)):
        x = _norm_input(c)
        gy = rand(x.shape, x.dtype, ("contiguous", "channels_last", "strided")[i % 3])
        mean, invstd = _vector(x, dtype=F32), _vector(x, dtype=F32)
        w = _vector(x, c["affine"])
        out["batch_norm_backward_reduce"].append(dict(grad_output=gy, input=x, mean=mean))
        out["batch_norm_backward_elemt"].append(dict(grad_output=gy, input=x, mean=mean, invstd=invstd, weight=w,
                                                     sum_dy=_vector(x, dtype=F32), sum_dy_xmu=_vector(x, dtype=F32),
                                                     count=x.numel() // x.shape[1]))
        out["batch_norm_backward"].append(dict(grad_output=gy, input=x, weight=w, mean=mean, invstd=invstd,
                                               training=c["training"], eps=1e-5))
    return out


@cases(VALID, "group_norm_forward", "group_norm_backward")
def _gn_valid():
    out = {"group_norm_forward": [], "group_norm_backward": []}
    for i, c in enumerate(sample(16, groups=(1, 2, 3, 6), affine=(False, True), **NORM_GRID)):
        x = _norm_input(c)
        g = c["groups"] if x.shape[1] % c["groups"] == 0 else 1
        fwd = dict(input=x, weight=_vector(x, c["affine"]), bias=_vector(x, c["affine"]), num_groups=g, eps=1e-5)
        out["group_norm_forward"].append(fwd)
        _, mean, rstd = ops.group_norm_forward(**fwd)
        gy = rand(x.shape, x.dtype, ("contiguous", "channels_last", "strided")[i % 3])
        out["group_norm_backward"].append(dict(grad_output=gy, input=x, weight=fwd["weight"], mean=mean, rstd=rstd,
                                               num_groups=g, eps=1e-5))
    return out


@cases(VALID, "layer_norm_forward", "layer_norm_backward")
def _ln_valid():
    out = {"layer_norm_forward": [], "layer_norm_backward": []}
    for i, c in enumerate(sample(16, trailing=(1, 2, 3), affine=(False, True), **NORM_GRID)):
        x = _norm_input(c)
        shape = list(x.shape[x.dim() - min(c["trailing"], x.dim()):])
        w = rand(shape, x.dtype) if c["affine"] else None
        fwd = dict(input=x, normalized_shape=shape, weight=w, bias=None if w is None else rand(shape, F32), eps=1e-5)
        out["layer_norm_forward"].append(fwd)
        _, mean, rstd = ops.layer_norm_forward(**fwd)
        gy = rand(x.shape, x.dtype, ("contiguous", "channels_last", "strided")[i % 3])
        out["layer_norm_backward"].append(dict(grad_output=gy, input=x, normalized_shape=shape, weight=w, mean=mean,
                                               rstd=rstd, eps=1e-5))
    return out


def _vector_spoils(b, name, extra=()):
    """A per-channel tensor spoiled: another size, 2-d, an integer dtype, on meta."""
    return [spoil(b, f"{name} size", **{name: lambda t: grown(t, 0)}),
            spoil(b, f"{name} 2-d", **{name: lambda t: t[None]}),
            spoil(b, f"{name} int32", **{name: as_int}), spoil(b, f"{name} on meta", **{name: meta_like}), *extra]


def _norm_input_spoils(b, others=()):
    """The input spoiled: 1-d, an integer dtype (with the tensors that must share its dtype)."""
    x = b["input"]
    return [spoil(b, "1-d input", input=x.flatten()[:5], **{o: (lambda t: t.flatten()[:5]) for o in others}),
            spoil(b, "input int32", input=as_int, **{o: as_int for o in others})]


def _like_input_spoils(b, name="grad_output"):
    return [spoil(b, f"{name} shape", **{name: lambda t: grown(t, 0)}),
            spoil(b, f"{name} dtype", **{name: other_float}), spoil(b, f"{name} on meta", **{name: meta_like})]


@cases(INVALID, "batch_norm_stats")
def _bn_stats_invalid():
    b = dict(input=rand([4, 3, 5]))
    return _norm_input_spoils(b) + [spoil(b, "0-d input", input=torch.tensor(1.0)),
                                    spoil(b, "input int64", input=lambda t: t.long()),
                                    spoil(b, "input bool", input=lambda t: t > 0.5),
                                    spoil(b, "input complex", input=lambda t: t.to(torch.complex64))]


@cases(INVALID, "batch_norm_elemt")
def _bn_elemt_invalid():
    x = rand([4, 3, 5])
    b = dict(input=x, weight=_vector(x), bias=_vector(x), mean=_vector(x, dtype=F32), invstd=_vector(x, dtype=F32))
    return _norm_input_spoils(b) + sum((_vector_spoils(b, n) for n in ("weight", "bias", "mean", "invstd")), [])


@cases(INVALID, "batch_norm_forward")
def _bn_forward_invalid():
    x = rand([4, 3, 5])
    b = dict(input=x, weight=_vector(x), bias=_vector(x), running_mean=_vector(x), running_var=_vector(x),
             training=True, eps=1e-5)
    return _norm_input_spoils(b) + sum((_vector_spoils(b, n) for n in ("weight", "bias", "running_mean",
                                                                          "running_var")), []) + [
        spoil(b, "running_mean without running_var", running_var=None),
        spoil(b, "running_var without running_mean", running_mean=None),
        spoil(b, "evaluation without running statistics", running_mean=None, running_var=None, training=False),
        spoil(b, "one value per channel", input=rand([1, 3]), **{n: rand([3]) for n in ("weight", "bias",
                                                                                            "running_mean",
                                                                                            "running_var")}),
        spoil(b, "one value per channel (3-d)", input=rand([1, 3, 1])),
    ]


@cases(INVALID, "batch_norm_update_stats")
def _bn_update_invalid():
    b = dict(running_mean=rand([3]), running_var=rand([3]), mean=rand([3]), var=rand([3]), count=5, momentum=0.1)
    return sum((_vector_spoils(b, n) for n in ("running_var", "mean", "var")), []) + [
        spoil(b, "running_mean 2-d", running_mean=lambda t: t[None]),
        spoil(b, "running_mean int32", running_mean=as_int),
        spoil(b, "count -1", count=-1),
        spoil(b, "expanded running_var", running_var=torch.ones(1).expand(3)),
        spoil(b, "expanded running_mean", running_mean=torch.zeros(1).expand(3)),
        spoil(b, "running_mean requires grad", running_mean=torch.zeros(3, requires_grad=True)),
    ]


@cases(INVALID, "batch_norm_backward_reduce", "batch_norm_backward_elemt", "batch_norm_backward")
def _bn_backward_invalid():
    x = rand([4, 3, 5])
    red = dict(grad_output=rand(x.shape), input=x, mean=_vector(x, dtype=F32))
    el = dict(red, invstd=_vector(x, dtype=F32), weight=_vector(x), sum_dy=_vector(x, dtype=F32),
              sum_dy_xmu=_vector(x, dtype=F32), count=20)
    bw = dict(grad_output=red["grad_output"], input=x, weight=_vector(x), mean=red["mean"], invstd=el["invstd"],
              training=True, eps=1e-5)
    return {
        "batch_norm_backward_reduce": _norm_input_spoils(red, ["grad_output"]) + _like_input_spoils(red)
        + _vector_spoils(red, "mean"),
        "batch_norm_backward_elemt": _norm_input_spoils(el, ["grad_output"]) + _like_input_spoils(el)
        + sum((_vector_spoils(el, n) for n in ("mean", "invstd", "weight", "sum_dy", "sum_dy_xmu")), [])
        + [spoil(el, "count -1", count=-1)],
        "batch_norm_backward": _norm_input_spoils(bw, ["grad_output"]) + _like_input_spoils(bw)
        + sum((_vector_spoils(bw, n) for n in ("weight", "mean", "invstd")), []),
    }


def _stats_spoils(b, names=("mean", "rstd")):
    """Saved statistics of another shape, or on meta (their dtype: EDGE_CASES)."""
    return sum(([spoil(b, f"{n} shape", **{n: lambda t: grown(t, 0)}), spoil(b, f"{n} rank", **{n: lambda t: t[None]}),
                 spoil(b, f"{n} on meta", **{n: meta_like})] for n in names), [])


@cases(INVALID, "group_norm_forward", "group_norm_backward")
def _gn_invalid():
    x = rand([2, 6, 5])
    fwd = dict(input=x, weight=_vector(x), bias=_vector(x), num_groups=3, eps=1e-5)
    _, mean, rstd = ops.group_norm_forward(**fwd)
    bwd = dict(grad_output=rand(x.shape), input=x, weight=fwd["weight"], mean=mean, rstd=rstd, num_groups=3, eps=1e-5)
    groups = [("num_groups 0", 0), ("num_groups 4 (no divisor)", 4)]
    return {
        "group_norm_forward": _norm_input_spoils(fwd) + [spoil(fwd, label, num_groups=g) for label, g in groups]
        + _vector_spoils(fwd, "weight") + _vector_spoils(fwd, "bias"),
        "group_norm_backward": _norm_input_spoils(bwd, ["grad_output"]) + _like_input_spoils(bwd)
        + [spoil(bwd, label, num_groups=g) for label, g in groups] + _vector_spoils(bwd, "weight")
        + _stats_spoils(bwd),
    }


@cases(INVALID, "layer_norm_forward", "layer_norm_backward")
def _ln_invalid():
    x = rand([2, 3, 5])
    fwd = dict(input=x, normalized_shape=[3, 5], weight=rand([3, 5]), bias=rand([3, 5]), eps=1e-5)
    _, mean, rstd = ops.layer_norm_forward(**fwd)
    bwd = dict(grad_output=rand(x.shape), input=x, normalized_shape=[3, 5], weight=fwd["weight"], mean=mean,
               rstd=rstd, eps=1e-5)
    shapes = [spoil(fwd, "normalized_shape not trailing", normalized_shape=[2, 3]),
              spoil(fwd, "normalized_shape longer than the input", normalized_shape=[1, 2, 3, 5]),
              spoil(fwd, "empty normalized_shape", normalized_shape=[])]
    return {
        "layer_norm_forward": shapes + [spoil(fwd, "input int32", input=as_int)]
        + sum(([spoil(fwd, f"{n} shape", **{n: lambda t: grown(t, 1)}), spoil(fwd, f"{n} int32", **{n: as_int}),
                spoil(fwd, f"{n} on meta", **{n: meta_like}), spoil(fwd, f"{n} flat", **{n: lambda t: t.flatten()})]
               for n in ("weight", "bias")), []),
        "layer_norm_backward": [(label, dict(bwd, normalized_shape=args["normalized_shape"])) for label, args in shapes]
        + _like_input_spoils(bwd) + [spoil(bwd, "weight shape", weight=lambda t: grown(t, 1)),
                                     spoil(bwd, "input int32", input=as_int, grad_output=as_int)]
        + _stats_spoils(bwd),
    }


# ---- calls the kernels once answered wrongly ----------------------------------------------------------
# (label, op, args, expected): "raises <class>" or "returns"; the kernel and the fakes must agree.
EDGE_CASES = [
    # The dilated kernel's extent overflows int64 (it wrapped around to 5: a (1, 1, 1) result).
    ("max_pool dilation 2**62 + 1", "max_pool_forward",
     dict(input=rand([1, 1, 5]), kernel_size=[5], stride=[1], padding=[0], dilation=[2**62 + 1], ceil_mode=False,
          minimum=False, padding_end=[]), "raises RuntimeError"),
    # A kernel of 2**62 taps (each window the whole input) is valid geometry (a per-tap buffer of
    # that size threw std::length_error).
    ("max_pool kernel 2**62", "max_pool_forward",
     dict(input=rand([1, 1, 5]), kernel_size=[2**62], stride=[1], padding=[2**61], dilation=[1], ceil_mode=False,
          minimum=False, padding_end=[]), "returns"),
    # A dilated kernel that no forward takes (its extent 2**63 overflows int64): the backward ops
    # checked only dilation * (kernel - 1).
    ("conv_input_backward dilation 2**63 - 1", "conv_input_backward",
     dict(grad_output=rand([1, 1, 3]), weight=rand([1, 1, 2]), input_size=[1, 1, 4], stride=[1], padding=[0],
          dilation=[2**63 - 1], groups=1, algorithm="auto"), "raises RuntimeError"),
    # padding + input overflows int64 (check_backward_extent let it wrap around).
    ("conv_input_backward padding 2**63 - 1", "conv_input_backward",
     dict(grad_output=rand([1, 1, 3]), weight=rand([1, 1, 1]), input_size=[1, 1, 5], stride=[1], padding=[2**63 - 1],
          dilation=[1], groups=1, algorithm="auto"), "raises RuntimeError"),
    # Layer norm over rows of 0 values has 3 rows (it counted 0: mean and rstd of shape (0,)).
    ("layer_norm rows of 0 values", "layer_norm_forward",
     dict(input=rand([3, 0]), normalized_shape=[0], weight=None, bias=None, eps=1e-5), "returns"),
    ("layer_norm_backward rows of 0 values", "layer_norm_backward",
     dict(grad_output=rand([3, 0]), input=rand([3, 0]), normalized_shape=[0], weight=None, mean=rand([3]),
          rstd=rand([3]), eps=1e-5), "returns"),
    # Group and layer norm's backward refuse saved statistics of another dtype (they took any).
    ("group_norm_backward int64 mean", "group_norm_backward",
     dict(grad_output=rand([2, 6, 5]), input=rand([2, 6, 5]), weight=None, mean=torch.zeros(2, 3, dtype=torch.long),
          rstd=rand([2, 3]), num_groups=3, eps=1e-5), "raises RuntimeError"),
    ("layer_norm_backward int64 rstd", "layer_norm_backward",
     dict(grad_output=rand([2, 5]), input=rand([2, 5]), normalized_shape=[5], weight=None, mean=rand([2]),
          rstd=torch.ones(2, dtype=torch.long), eps=1e-5), "raises RuntimeError"),
]


# ---- the tests --------------------------------------------------------------------------------------


def _sets(table, name):
    got = table[name]()
    return got[name] if isinstance(got, dict) else got


def test_every_op_has_cases():
    assert OP_NAMES and set(VALID) == set(OP_NAMES), sorted(set(OP_NAMES) ^ set(VALID))
    assert set(INVALID) == set(OP_NAMES), sorted(set(OP_NAMES) ^ set(INVALID))


def _mismatches(name, sets, expect_ok):
    """Labelled sets where a fake differs from the kernel (or the kernel does not do what the
    grid says: accept a valid set, refuse an invalid one)."""
    bad = []
    mode = fake_mode()
    for label, args in sets:
        real = run_real(name, args)
        if (real[0] == "ok") != expect_ok:
            bad.append(f"{label}: the kernel {'refuses' if expect_ok else 'accepts'} it: {real}")
            continue
        for how, fake in (("meta", run_meta(name, args)), ("FakeTensorMode", run_fake(name, args, mode))):
            if not _same_class(real, fake):
                bad.append(f"{label} [{how}]: kernel {real[:2]}, fake {fake}")
    return bad


@pytest.mark.parametrize("name", OP_NAMES)
def test_valid_sets_give_the_kernels_results(name):
    sets = [(f"valid #{i}", args) for i, args in enumerate(_sets(VALID, name))]
    assert len(sets) >= 5
    bad = _mismatches(name, sets, expect_ok=True)
    assert not bad, f"{len(bad)} of {len(sets)} sets:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", OP_NAMES)
def test_invalid_sets_are_refused_alike(name):
    sets = _sets(INVALID, name)
    assert len(sets) >= 5
    bad = _mismatches(name, sets, expect_ok=False)
    assert not bad, f"{len(bad)} of {len(sets)} sets:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", OP_NAMES)
def test_symbolic_sizes(name):
    """The fakes under symbolic sizes (torch.compile(dynamic=True)), on a few sets of each grid
    (a symbolic call costs some fifty times a plain one): a valid set's results have the kernel's
    sizes once the symbols take the real sizes; an invalid set is refused as with plain sizes
    (a check on SymInts must not pass silently)."""
    bad = []
    symbolic, plain = fake_mode(symbolic=True), fake_mode()
    args = _sets(VALID, name)[0]
    real, fake = run_real(name, args), run_fake(name, args, symbolic)
    if not _same_class(real, fake):
        bad.append(f"valid #0: kernel {real}, fake {fake}")
    invalid = _sets(INVALID, name)
    for label, args in invalid[len(invalid) // 2:][:1]:
        expected = run_fake(name, args, plain)
        if "Storage size calculation overflowed" in expected[2]:
            continue  # at::empty's check of concrete sizes; with symbolic ones, the allocation's at run time
        fake = run_fake(name, args, symbolic)
        if not _same_class(expected, fake):
            bad.append(f"{label}: plain {expected}, symbolic {fake}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("label, name, args, expected", EDGE_CASES, ids=[c[0] for c in EDGE_CASES])
def test_edge_cases(label, name, args, expected):
    fakes = run_meta(name, args), run_fake(name, args, fake_mode())
    for fake in fakes:
        assert (fake[0] == "ok") if expected == "returns" else (fake[0] == "raises" and expected.endswith(
            fake[1].__name__)), f"fake: {fake}"
    real = run_real(name, args)
    assert _same_class(real, fakes[1]), f"kernel: {real}; fake: {fakes[1]}"
