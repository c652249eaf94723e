"""torch.func against torch's twins: grad, vjp, jacrev, per-sample gradients (vmap over grad),
jvp, jacfwd, linearize and hessian of our modules and ops give the values torch's layers (or,
for the layers torch lacks, compositions of torch's ops) give, also for channels_last and
non-contiguous inputs; second derivatives in every combination of the modes; vmap of every op
equals a loop over the slices; torch.autograd.functional's vectorized jacobian and hessian;
batch norm in training mode behaves under the transforms as torch's does.

The op catalogue is OP_CASES of test_autograd_compose (every public functional, both modes of
the norms and of stochastic pooling, and the tco.grad functions, each with its reference).
"""

import copy

import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF
from conftest import (ref_gaussian_pool2d, ref_kmax_pool, ref_min_pool, ref_stochastic_pool2d_eval,
                      ref_stochastic_pool2d_train, ref_tiled_conv, ref_unshared_conv)
from test_autograd_compose import OP_CASES, math_reference
from torch.func import (functional_call, grad, hessian, jacfwd, jacrev, jvp, linearize, stack_module_state, vjp,
                        vmap)

import torch_cnn_ops as tco

D = torch.float64
# vmap runs our ops through functorch's per-slice fallback, which warns once per op; torch's
# 'same' padding with even kernels warns about its padded copy; torch.func scripts a helper
pytestmark = [pytest.mark.filterwarnings("ignore:There is a performance drop"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated"),  # inside torch.func
              pytest.mark.filterwarnings("ignore:Attempted to insert a get_attr Node"),  # linearize, torch ops too
              pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny shapes: one thread, so that a busy machine does not stall on thread synchronisation."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randn(*shape, seed=0, device="cpu"):
    return torch.randn(*shape, dtype=D, generator=torch.Generator().manual_seed(seed)).to(device)


def _close(a, b, what=""):
    """assert_close over (nested) tuples, lists and dicts of tensors."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), what
        for k in a:
            _close(a[k], b[k], f"{what}[{k}]")
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b)):
            _close(u, v, f"{what}[{i}]")
    else:
        torch.testing.assert_close(a, b, msg=lambda m: f"{what}: {m}")


# ---- modules against their torch.nn twins --------------------------------------------------------
# (id, builder(nn namespace) -> module, input shape, train mode)
MODULES = [
    ("Conv1d", lambda nn: nn.Conv1d(3, 4, 3, stride=2, padding=1), (3, 3, 7), False),
    ("Conv2d", lambda nn: nn.Conv2d(2, 4, 3, padding=1, groups=2), (3, 2, 4, 4), False),
    ("Conv2d-same", lambda nn: nn.Conv2d(2, 3, (2, 3), padding="same", dilation=(1, 2)), (2, 2, 4, 5), False),
    ("Conv3d", lambda nn: nn.Conv3d(2, 3, 2, stride=(1, 2, 1)), (2, 2, 3, 4, 3), False),
    ("Conv1d-reflect", lambda nn: nn.Conv1d(2, 3, 3, padding=2, padding_mode="reflect"), (3, 2, 6), False),
    ("Conv2d-circular", lambda nn: nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular", bias=False),
     (2, 2, 4, 3), False),
    ("MaxPool1d", lambda nn: nn.MaxPool1d(3, 2, 1), (3, 2, 7), False),
    ("MaxPool2d", lambda nn: nn.MaxPool2d(2, ceil_mode=True), (3, 2, 5, 5), False),
    ("MaxPool3d", lambda nn: nn.MaxPool3d(2), (2, 2, 2, 4, 4), False),
    ("AvgPool1d", lambda nn: nn.AvgPool1d(3, 2, 1), (3, 2, 7), False),
    ("AvgPool2d", lambda nn: nn.AvgPool2d(2, 1, 1, count_include_pad=False), (3, 2, 4, 4), False),
    ("AvgPool3d", lambda nn: nn.AvgPool3d(2, divisor_override=3), (2, 2, 2, 4, 4), False),
    ("LPPool1d", lambda nn: nn.LPPool1d(2, 3, 2), (3, 2, 7), False),
    ("LPPool2d", lambda nn: nn.LPPool2d(2, 2), (3, 2, 4, 4), False),
    ("LPPool3d", lambda nn: nn.LPPool3d(2, 2), (2, 2, 2, 4, 4), False),
    ("AdaptiveMaxPool1d", lambda nn: nn.AdaptiveMaxPool1d(3), (3, 2, 7), False),
    ("AdaptiveMaxPool2d", lambda nn: nn.AdaptiveMaxPool2d((2, 3)), (3, 2, 5, 5), False),
    ("AdaptiveMaxPool3d", lambda nn: nn.AdaptiveMaxPool3d(2), (2, 2, 3, 4, 4), False),
    ("AdaptiveAvgPool1d", lambda nn: nn.AdaptiveAvgPool1d(3), (3, 2, 7), False),
    ("AdaptiveAvgPool2d", lambda nn: nn.AdaptiveAvgPool2d((2, 3)), (3, 2, 5, 5), False),
    ("AdaptiveAvgPool3d", lambda nn: nn.AdaptiveAvgPool3d(2), (2, 2, 3, 4, 4), False),
    ("BatchNorm1d-eval", lambda nn: nn.BatchNorm1d(3), (4, 3), False),
    ("BatchNorm2d-eval", lambda nn: nn.BatchNorm2d(3), (3, 3, 2, 3), False),
    ("BatchNorm3d-eval", lambda nn: nn.BatchNorm3d(2, affine=False), (2, 2, 2, 2, 3), False),
    ("BatchNorm2d-untracked-train", lambda nn: nn.BatchNorm2d(3, track_running_stats=False), (3, 3, 2, 3), True),
    ("GroupNorm", lambda nn: nn.GroupNorm(2, 4), (3, 4, 2, 3), False),
    ("LayerNorm", lambda nn: nn.LayerNorm([3, 4]), (3, 2, 3, 4), False),
    ("InstanceNorm1d", lambda nn: nn.InstanceNorm1d(3, affine=True), (3, 3, 5), False),
    ("InstanceNorm2d", lambda nn: nn.InstanceNorm2d(2, affine=True), (3, 2, 3, 3), False),
    ("InstanceNorm3d-tracked-eval", lambda nn: nn.InstanceNorm3d(2, affine=True, track_running_stats=True),
     (2, 2, 2, 2, 3), False),
    ("model", lambda nn: tnn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), tnn.Tanh(),
                                        nn.MaxPool2d(2), nn.Conv2d(4, 3, 2), nn.GroupNorm(1, 3),
                                        nn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(3, 2)),
     (3, 2, 6, 6), False),
]
MODULE_IDS = [m[0] for m in MODULES]
# the layers that take an unbatched (C, *spatial) input, as torch's
UNBATCHED_OK = {"Conv1d", "Conv2d", "Conv3d", "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d",
                "AvgPool3d", "LPPool1d", "LPPool2d", "LPPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
                "AdaptiveMaxPool3d", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "InstanceNorm1d",
                "InstanceNorm2d", "InstanceNorm3d", "LayerNorm"}


def _module_twins(entry, device="cpu"):
    """(ours, torch's, params of each, input): the same parameters and buffers (non-trivial)."""
    _, build, shape, train = entry
    torch.manual_seed(5)
    theirs = build(tnn).to(device, D)
    ours = build(tco.nn).to(device, D)
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for name, b in theirs.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn_like(b) * 0.3)
            elif name.endswith("running_var"):
                b.copy_(torch.rand_like(b) + 0.5)
    ours.load_state_dict(theirs.state_dict())
    ours.train(train)
    theirs.train(train)
    x = _randn(*shape, seed=6, device=device)
    p_ours = {k: v.detach() for k, v in ours.named_parameters()}
    p_theirs = {k: v.detach() for k, v in theirs.named_parameters()}
    return ours, theirs, p_ours, p_theirs, x


def _loss(model):
    """A scalar with non-trivial second derivatives of the model's output."""
    def loss(params, x):
        out = functional_call(model, params, (x,))
        c = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view(out.shape)
        return (torch.tanh(out) * c).sum() + 0.1 * out.pow(2).sum()
    return loss


def _call(model):
    return lambda params, x: functional_call(model, params, (x,))


@pytest.mark.parametrize("entry", MODULES, ids=MODULE_IDS)
def test_module_grad_vjp_jacrev(entry, device):
    ours, theirs, po, pt, x = _module_twins(entry, device)
    _close(grad(_loss(ours), argnums=(0, 1))(po, x), grad(_loss(theirs), argnums=(0, 1))(pt, x), "grad")
    out_o, fn_o = vjp(_call(ours), po, x)
    out_t, fn_t = vjp(_call(theirs), pt, x)
    _close(out_o, out_t, "vjp output")
    ct = _randn(*out_t.shape, seed=7, device=device)
    _close(fn_o(ct), fn_t(ct), "vjp")
    _close(jacrev(_call(ours), argnums=(0, 1))(po, x), jacrev(_call(theirs), argnums=(0, 1))(pt, x), "jacrev")


@pytest.mark.parametrize("entry", MODULES, ids=MODULE_IDS)
def test_module_per_sample_grads(entry):
    """vmap(grad(loss), in_dims=(None, 0, 0))(params, x, y): the gradients of each sample's loss."""
    ours, theirs, po, pt, x = _module_twins(entry)

    def per_sample(model):
        def loss(params, xi, yi):
            out = functional_call(model, params, (xi.unsqueeze(0),))
            return (out - yi.unsqueeze(0)).pow(2).sum() + torch.tanh(out).pow(3).sum()
        return loss

    with torch.no_grad():
        y = _randn(*theirs(x).shape, seed=8)
    a = vmap(grad(per_sample(ours), argnums=(0, 1)), in_dims=(None, 0, 0))(po, x, y)
    b = vmap(grad(per_sample(theirs), argnums=(0, 1)), in_dims=(None, 0, 0))(pt, x, y)
    _close(a, b, "per-sample grads")
    if entry[0].split("-")[0] in UNBATCHED_OK:  # each sample given unbatched, (C, *spatial)
        def unbatched(model):
            return lambda params, xi, yi: torch.tanh(functional_call(model, params, (xi,)) - yi).pow(2).sum()

        _close(vmap(grad(unbatched(ours), argnums=(0, 1)), in_dims=(None, 0, 0))(po, x, y),
               vmap(grad(unbatched(theirs), argnums=(0, 1)), in_dims=(None, 0, 0))(pt, x, y),
               "per-sample grads, unbatched samples")


@pytest.mark.parametrize("entry", MODULES, ids=MODULE_IDS)
def test_module_jvp_jacfwd(entry, device):
    ours, theirs, po, pt, x = _module_twins(entry, device)
    tp = {k: _randn(*v.shape, seed=i + 20, device=device) for i, (k, v) in enumerate(pt.items())}
    tx = _randn(*x.shape, seed=9, device=device)
    _close(jvp(_call(ours), (po, x), (tp, tx)), jvp(_call(theirs), (pt, x), (tp, tx)), "jvp")
    _close(jacfwd(_call(ours), argnums=(0, 1))(po, x), jacfwd(_call(theirs), argnums=(0, 1))(pt, x), "jacfwd")


@pytest.mark.parametrize("entry", MODULES, ids=MODULE_IDS)
def test_module_hessian(entry):
    """torch.func.hessian (forward over reverse) of a scalar of the output, in the input and
    in the parameters."""
    ours, theirs, po, pt, x = _module_twins(entry)
    x = x[:2]
    _close(hessian(_loss(ours), argnums=1)(po, x), hessian(_loss(theirs), argnums=1)(pt, x), "hessian in x")
    if pt:
        _close(hessian(_loss(ours), argnums=0)(po, x), hessian(_loss(theirs), argnums=0)(pt, x), "hessian in params")


# ---- the layers torch lacks, against torch-op references ------------------------------------------
# (id, module, reference(params, x), input shape, positive input)
def _no_twin_modules():
    torch.manual_seed(3)
    return [
        ("MinPool2d", tco.nn.MinPool2d(3, 2, 1), lambda p, x: ref_min_pool(TF.max_pool2d, x, 3, 2, 1), (3, 2, 5, 5),
         False),
        ("MinPool1d", tco.nn.MinPool1d(2), lambda p, x: ref_min_pool(TF.max_pool1d, x, 2), (3, 2, 6), False),
        ("MinPool3d", tco.nn.MinPool3d(2, 1), lambda p, x: ref_min_pool(TF.max_pool3d, x, 2, 1), (2, 2, 3, 3, 3),
         False),
        ("AdaptiveMinPool2d", tco.nn.AdaptiveMinPool2d((2, 3)),
         lambda p, x: ref_min_pool(TF.adaptive_max_pool2d, x, (2, 3)), (3, 2, 5, 5), False),
        ("KMaxPool1d", tco.nn.KMaxPool1d(3), lambda p, x: ref_kmax_pool(x, 3), (3, 2, 7), False),
        ("DynamicKMaxPool1d", tco.nn.DynamicKMaxPool1d(2, 3, 2), lambda p, x: ref_kmax_pool(x, 3), (3, 2, 7), False),
        ("Maxout", tco.nn.Maxout(2), lambda p, x: x.unflatten(1, (2, 2)).amax(2), (3, 4, 3), False),
        ("GaussianPool2d", tco.nn.GaussianPool2d(3, 1, 1, sigma=0.7),
         lambda p, x: ref_gaussian_pool2d(x, 3, 1, 1, 0.7), (3, 2, 4, 4), False),
        ("StochasticPool2d-eval", tco.nn.StochasticPool2d(2).eval(),
         lambda p, x: ref_stochastic_pool2d_eval(x, 2), (3, 2, 4, 4), True),
        ("TiledConv1d", tco.nn.TiledConv1d(2, 3, 3, tile_size=2, padding=1).double(),
         lambda p, x: ref_tiled_conv(x, p["weight"], p["bias"], 1, 1), (3, 2, 6), False),
        ("TiledConv2d", tco.nn.TiledConv2d(2, 3, 2, tile_size=(2, 3), stride=(1, 2)).double(),
         lambda p, x: ref_tiled_conv(x, p["weight"], p["bias"], (1, 2), 0), (3, 2, 4, 5), False),
        ("UnsharedConv1d", tco.nn.UnsharedConv1d(2, 3, 3, input_size=6, stride=2).double(),
         lambda p, x: ref_unshared_conv(x, p["weight"], p["bias"], 2, 0), (3, 2, 6), False),
        ("LocallyConnected2d", tco.nn.LocallyConnected2d(2, 3, 2, input_size=(3, 4), padding=1).double(),
         lambda p, x: ref_unshared_conv(x, p["weight"], p["bias"], 1, 1), (3, 2, 3, 4), False),
        ("UnsharedConv2d-nobias", tco.nn.UnsharedConv2d(2, 2, 3, input_size=(4, 4), bias=False).double(),
         lambda p, x: ref_unshared_conv(x, p["weight"], None), (3, 2, 4, 4), False),
    ]


NO_TWIN = _no_twin_modules()
NO_TWIN_IDS = [m[0] for m in NO_TWIN]


def _no_twin(entry):
    _, module, ref, shape, positive = entry
    params = {k: v.detach() for k, v in module.named_parameters()}
    x = _randn(*shape, seed=10)
    if positive:
        x = x.abs() + 0.2
    return module, ref, params, x


def _ref_loss(ref):
    def loss(params, x):
        out = ref(params, x)
        c = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
        return (torch.tanh(out) * c).sum() + 0.1 * out.pow(2).sum()
    return loss


@pytest.mark.parametrize("entry", NO_TWIN, ids=NO_TWIN_IDS)
def test_no_twin_module_transforms(entry):
    module, ref, params, x = _no_twin(entry)
    _close(functional_call(module, params, (x,)), ref(params, x), "forward")
    # grad, and per-sample grads
    _close(grad(_loss(module), argnums=(0, 1))(params, x), grad(_ref_loss(ref), argnums=(0, 1))(params, x), "grad")

    def per_sample(f):
        return lambda p, xi: torch.tanh(f(p, xi.unsqueeze(0))).pow(2).sum()

    _close(vmap(grad(per_sample(_call(module)), argnums=(0, 1)), in_dims=(None, 0))(params, x),
           vmap(grad(per_sample(ref), argnums=(0, 1)), in_dims=(None, 0))(params, x), "vmap(grad)")
    # forward mode
    tp = {k: _randn(*v.shape, seed=i + 30) for i, (k, v) in enumerate(params.items())}
    tx = _randn(*x.shape, seed=11)
    _close(jvp(_call(module), (params, x), (tp, tx)), jvp(ref, (params, x), (tp, tx)), "jvp")
    _close(jacfwd(_call(module), argnums=(0, 1))(params, x[:2]), jacfwd(ref, argnums=(0, 1))(params, x[:2]),
           "jacfwd")
    _close(hessian(_loss(module), argnums=1)(params, x[:1]), hessian(_ref_loss(ref), argnums=1)(params, x[:1]),
           "hessian")


def test_stochastic_pool_training_transforms():
    """Training stochastic pooling with a seeded generator: grad, jvp and vmap(grad) (with
    randomness='same', every slice draws the same uniforms, as a loop with the same seed does)
    give the reference's values; with vmap's default randomness='error' it raises, as torch's
    random layers (dropout) do."""
    x = _randn(3, 2, 4, 4, seed=12).abs() + 0.2

    def ours(x):
        return tco.F.stochastic_pool2d(x, 2, generator=torch.Generator().manual_seed(4))

    def ref(x):
        return ref_stochastic_pool2d_train(x, 2, None, 4)

    def loss(f):
        return lambda x: (torch.tanh(f(x)) * torch.arange(f(x).numel(), dtype=D).view(f(x).shape)).sum()

    _close(grad(loss(ours))(x), grad(loss(ref))(x), "grad")
    tx = _randn(*x.shape, seed=13)
    _close(jvp(ours, (x,), (tx,)), jvp(ref, (x,), (tx,)), "jvp")
    xs = x.unsqueeze(1)  # a batch of single-sample batches
    a = vmap(grad(lambda t: torch.tanh(ours(t)).pow(2).sum()), randomness="same")(xs)
    b = torch.stack([grad(lambda t: torch.tanh(ref(t)).pow(2).sum())(t) for t in xs])
    _close(a, b, "vmap(grad), randomness='same'")
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda t: TF.dropout(t, 0.5, training=True))(xs)
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(lambda t: tco.F.stochastic_pool2d(t, 2))(xs)
    module = tco.nn.StochasticPool2d(2)  # training mode, global generator: vmap needs a randomness flag
    with pytest.raises(RuntimeError, match="randomness"):
        vmap(module)(xs)


# ---- every op: torch.func against its reference, vmap against a loop ---------------------------
def _expect_like(ref_call, our_call, compare):
    """Runs the reference; if it raises, ours must raise the same exception class (torch's
    behaviour), otherwise ours must give its values."""
    try:
        expected = ref_call()
    except Exception as e:  # torch does not support it: neither may we silently
        with pytest.raises(type(e)):
            our_call()
        return
    compare(our_call(), expected)


def _op_inputs(case):
    return [t.detach() for t in case.inputs()]


@pytest.mark.parametrize("case", OP_CASES, ids=lambda c: c.id)
def test_op_grad_jvp_match_reference(case):
    """torch.func.grad, jvp and linearize of every op (in all its tensor arguments) against its
    reference."""
    inputs = _op_inputs(case)
    argnums = tuple(range(len(inputs)))
    with torch.no_grad():
        out_shape = case.ref(*inputs).shape
    c = _randn(*out_shape, seed=14)

    def loss(f):
        return lambda *a: (torch.tanh(f(*a)) * c).sum()

    _expect_like(lambda: grad(loss(case.ref), argnums=argnums)(*inputs),
                 lambda: grad(loss(case.fn), argnums=argnums)(*inputs), lambda a, b: _close(a, b, "grad"))
    tangents = tuple(_randn(*t.shape, seed=40 + i) for i, t in enumerate(inputs))
    _expect_like(lambda: jvp(case.ref, tuple(inputs), tangents), lambda: jvp(case.fn, tuple(inputs), tangents),
                 lambda a, b: _close(a, b, "jvp"))
    # torch.func.linearize: the jvp traced once (make_fx over the tangent formulas), then replayed
    _expect_like(lambda: linearize(case.ref, *inputs)[1](*tangents),
                 lambda: linearize(case.fn, *inputs)[1](*tangents), lambda a, b: _close(a, b, "linearize"))
    # a tangent in one argument only (the others constant)
    for i in argnums:
        def only(f, i=i):
            return lambda t: f(*inputs[:i], t, *inputs[i + 1:])

        _expect_like(lambda: jvp(only(case.ref), (inputs[i],), (tangents[i],)),
                     lambda: jvp(only(case.fn), (inputs[i],), (tangents[i],)),
                     lambda a, b: _close(a, b, f"jvp in argument {i} only"))


def _in_dims_variants(case):
    """vmap over the first argument; for ops with several tensors also over each of the others
    (an ensemble of weights) and over all of them."""
    n = len(case.shapes)
    variants = [(0,) + (None,) * (n - 1)]
    for i in range(1, n):
        variants.append(tuple(0 if j == i else None for j in range(n)))
    if n > 1:
        variants.append((0,) * n)
    return variants


VMAP_CASES = [pytest.param(case, dims, id=f"{case.id}-{''.join('b' if d == 0 else '_' for d in dims)}")
              for case in OP_CASES for dims in _in_dims_variants(case)]


def _batched_inputs(case, in_dims, size=2):
    """Per argument: a stack of `size` different inputs where batched, the single input otherwise."""
    first = _op_inputs(case)
    stacks = []
    for i, (t, d) in enumerate(zip(first, in_dims)):
        if d is None:
            stacks.append(t)
        else:
            more = [t] + [_randn(*t.shape, seed=100 + 10 * i + k) for k in range(1, size)]
            if case.positive and i == 0:
                more = [t] + [m.abs() + 0.2 for m in more[1:]]
            stacks.append(torch.stack(more))
    return stacks


def _loop(fn, args, in_dims):
    size = next(a.shape[d] for a, d in zip(args, in_dims) if d is not None)
    return torch.stack([fn(*[a[k] if d is not None else a for a, d in zip(args, in_dims)]) for k in range(size)])


@pytest.mark.parametrize("case,in_dims", VMAP_CASES)
def test_vmap_matches_loop(case, in_dims):
    """vmap over an extra leading dimension equals the loop over the slices, of our op and of
    its reference; vmap(grad) likewise equals the loop of the reference's gradients."""
    args = _batched_inputs(case, in_dims)
    vmapped = vmap(case.fn, in_dims=in_dims, randomness="same")
    try:
        expected = vmap(case.ref, in_dims=in_dims, randomness="same")(*args)
    except Exception as e:  # torch refuses it (e.g. batch norm updating unbatched running statistics)
        with pytest.raises(type(e)):
            vmapped(*args)
        return
    got = vmapped(*args)
    _close(got, expected, "vmap vs the reference's vmap")
    _close(got, _loop(case.fn, args, in_dims), "vmap vs the loop of our op")

    argnums = tuple(range(len(args)))

    def loss(f):
        return lambda *a: torch.tanh(f(*a)).pow(2).sum()

    def ref_loop():
        per = [grad(loss(case.ref), argnums=argnums)(*[a[k] if d is not None else a for a, d in zip(args, in_dims)])
               for k in range(2)]
        # gradients of an unbatched argument are per slice too: vmap returns them stacked
        return tuple(torch.stack([p[i] for p in per]) for i in range(len(args)))

    _expect_like(ref_loop,
                 lambda: vmap(grad(loss(case.fn), argnums=argnums), in_dims=in_dims, randomness="same")(*args),
                 lambda a, b: _close(a, b, "vmap(grad)"))


# Training stochastic pooling draws random numbers: jacrev and jacfwd vmap without a
# randomness flag and refuse it (as torch's dropout); its transforms are tested above.
DETERMINISTIC_CASES = [c for c in OP_CASES if not c.id.startswith("stochastic_pool2d-train")]


@pytest.mark.parametrize("case", DETERMINISTIC_CASES, ids=lambda c: c.id)
def test_op_second_derivatives_every_mode(case):
    """The Hessian of a scalar through every op in all four compositions of the modes:
    jacfwd(jacrev) (torch.func.hessian), jacrev(jacfwd) (reverse over forward),
    jacfwd(jacfwd) and jacrev(jacrev), in every argument, against the reference. For the
    norms the reference is the normalisation written with elementary ops (torch's own
    batch_norm, instance_norm and layer_norm are wrong in the modes over forward)."""
    inputs = _op_inputs(case)
    argnums = tuple(range(len(inputs)))
    ref = math_reference(case)

    def scalar(f):
        return lambda *a: torch.tanh(f(*a)).pow(2).sum()

    expected = jacfwd(jacrev(scalar(ref), argnums=argnums), argnums=argnums)(*inputs)
    wrong = []
    for name, (outer, inner) in {"jacfwd(jacrev)": (jacfwd, jacrev), "jacrev(jacfwd)": (jacrev, jacfwd),
                                 "jacfwd(jacfwd)": (jacfwd, jacfwd), "jacrev(jacrev)": (jacrev, jacrev)}.items():
        try:
            _close(outer(inner(scalar(case.fn), argnums=argnums), argnums=argnums)(*inputs), expected, name)
        except AssertionError as e:
            wrong.append(str(e).splitlines()[0] + " " + " ".join(str(e).splitlines()[2:4]))
    assert not wrong, "\n".join(wrong)


def _flat(t):
    return [t] if isinstance(t, torch.Tensor) else [u for x in t for u in _flat(x)]


@pytest.mark.parametrize("case", DETERMINISTIC_CASES, ids=lambda c: c.id)
def test_op_autograd_functional_vectorized(case):
    """torch.autograd.functional.jacobian and hessian with vectorize=True (the backward run
    once over a batch of cotangents: autograd.grad(is_grads_batched=True), or forward mode
    over a batch of tangents), in both strategies. Wherever the reference computes them, ours
    must, with its values (torch's own max pooling fails the forward-mode strategies: no
    comparison there)."""
    inputs = tuple(_op_inputs(case))
    ref = math_reference(case)

    def scalar(f):
        return lambda *a: torch.tanh(f(*a)).pow(2).sum()

    af = torch.autograd.functional
    calls = {
        "jacobian, reverse mode": lambda f: af.jacobian(f, inputs, vectorize=True),
        "jacobian, forward mode": lambda f: af.jacobian(f, inputs, vectorize=True, strategy="forward-mode"),
        "hessian, reverse over reverse": lambda f: af.hessian(scalar(f), inputs, vectorize=True),
        "hessian, forward over reverse": lambda f: af.hessian(scalar(f), inputs, vectorize=True,
                                                              outer_jacobian_strategy="forward-mode"),
    }
    failures = []
    for name, call in calls.items():
        try:
            expected = _flat(call(ref))
        except RuntimeError:
            continue
        try:
            _close(_flat(call(case.fn)), expected, name)
        except (RuntimeError, AssertionError) as e:
            failures.append(f"{name}: {type(e).__name__}: {str(e).splitlines()[0]}")
    assert not failures, "\n".join(failures)


# ---- inputs in other layouts ---------------------------------------------------------------------
_W = _randn(4, 2, 3, 3, seed=50)
_TILE = _randn(2, 2, 3, 4, 2, 2, seed=51)
_LOCAL = {(5, 4): _randn(5, 4, 3, 4, 2, 2, seed=52), (4, 5): _randn(4, 5, 3, 4, 2, 2, seed=55)}


def _local(x):
    """The unshared weight for x's output size (2x2 kernel, no padding)."""
    return _LOCAL[(x.shape[-2] - 1, x.shape[-1] - 1)]


LAYOUT_OPS = {
    "conv2d": (lambda x: tco.F.conv2d(x, _W, padding=1, groups=2), lambda x: TF.conv2d(x, _W, padding=1, groups=2)),
    "max_pool2d": (lambda x: tco.F.max_pool2d(x, 2, 1), lambda x: TF.max_pool2d(x, 2, 1)),
    "min_pool2d": (lambda x: tco.F.min_pool2d(x, 3, 2, 1), lambda x: -TF.max_pool2d(-x, 3, 2, 1)),
    "avg_pool2d": (lambda x: tco.F.avg_pool2d(x, 3, 2, 1), lambda x: TF.avg_pool2d(x, 3, 2, 1)),
    "lp_pool2d": (lambda x: tco.F.lp_pool2d(x, 2, 2), lambda x: TF.lp_pool2d(x, 2, 2)),
    "adaptive_max_pool2d": (lambda x: tco.F.adaptive_max_pool2d(x, (2, 3)),
                            lambda x: TF.adaptive_max_pool2d(x, (2, 3))),
    "adaptive_avg_pool2d": (lambda x: tco.F.adaptive_avg_pool2d(x, (2, 3)),
                            lambda x: TF.adaptive_avg_pool2d(x, (2, 3))),
    "gaussian_pool2d": (lambda x: tco.F.gaussian_pool2d(x, 3, 1, 1, 0.9),
                        lambda x: ref_gaussian_pool2d(x, 3, 1, 1, 0.9)),
    "stochastic_pool2d-eval": (lambda x: tco.F.stochastic_pool2d(x.exp(), 2, training=False),
                               lambda x: ref_stochastic_pool2d_eval(x.exp(), 2)),
    "kmax_pool1d": (lambda x: tco.F.kmax_pool1d(x, 3), lambda x: ref_kmax_pool(x, 3)),
    "channel_max_pool": (lambda x: tco.F.channel_max_pool(x, 2), lambda x: x.unflatten(1, (2, 2)).amax(2)),
    "tiled_conv2d": (lambda x: tco.F.tiled_conv2d(x, _TILE, padding=1), lambda x: ref_tiled_conv(x, _TILE, None, 1, 1)),
    "unshared_conv2d": (lambda x: tco.F.unshared_conv2d(x, _local(x)), lambda x: ref_unshared_conv(x, _local(x))),
    "batch_norm-train": (lambda x: tco.F.batch_norm(x, None, None, training=True),
                         lambda x: TF.batch_norm(x, None, None, training=True)),
    "batch_norm-eval": (lambda x: tco.F.batch_norm(x, torch.full((4,), 0.2, dtype=D), torch.full((4,), 1.5, dtype=D)),
                        lambda x: TF.batch_norm(x, torch.full((4,), 0.2, dtype=D), torch.full((4,), 1.5, dtype=D))),
    "group_norm": (lambda x: tco.F.group_norm(x, 2), lambda x: TF.group_norm(x, 2)),
    "instance_norm": (lambda x: tco.F.instance_norm(x), lambda x: TF.instance_norm(x)),
    "layer_norm": (lambda x: tco.F.layer_norm(x, x.shape[-2:]), lambda x: TF.layer_norm(x, x.shape[-2:])),
}


@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
@pytest.mark.parametrize("name", list(LAYOUT_OPS))
def test_layouts_under_transforms(name, layout):
    """A channels_last or a transposed (non-contiguous) input: gradients, Hessian-vector
    products (double backward), tangents and vmap give the values of the reference on the
    contiguous input (values do not depend on the layout; torch's own group_norm refuses a
    channels_last input in forward mode, so the reference always gets a contiguous one)."""
    ours, ref = LAYOUT_OPS[name]
    base = _randn(3, 4, 6, 5, seed=53)
    if layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    else:
        base = base.transpose(2, 3).contiguous()  # (3, 4, 5, 6), the values of the view below
        x = _randn(3, 4, 6, 5, seed=53).transpose(2, 3)
    assert not x.is_contiguous()
    tx = _randn(*x.shape, seed=54)

    def loss(f):
        return lambda t: (torch.tanh(f(t)) ** 2).sum()

    _close(grad(loss(ours))(x), grad(loss(ref))(base), "grad")
    _close(jvp(ours, (x,), (tx,)), jvp(ref, (base,), (tx,)), "jvp")

    def hvp(f, t):
        t = t.detach().clone().requires_grad_()
        (g,) = torch.autograd.grad(loss(f)(t), t, create_graph=True)
        return torch.autograd.grad((g * tx).sum(), t)[0]

    _close(hvp(ours, x), hvp(ref, base), "double backward")
    xs = torch.stack([x, 2 * x])
    _close(vmap(ours)(xs), vmap(ref)(torch.stack([base, 2 * base])), "vmap")


# ---- batch norm in training mode: what torch does -----------------------------------------------
def _bn_pair(cls="BatchNorm2d", **kwargs):
    torch.manual_seed(0)
    theirs = getattr(tnn, cls)(3, dtype=D, **kwargs)
    ours = getattr(tco.nn, cls)(3, dtype=D, **kwargs)
    with torch.no_grad():
        theirs.weight.add_(torch.randn(3, dtype=D) * 0.3)
        theirs.bias.add_(torch.randn(3, dtype=D) * 0.3)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def _state(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def test_batch_norm_train_captured_buffers_raises_as_torch():
    """torch's BatchNorm in training mode under torch.func.grad (and jvp) raises, because it
    updates its captured running statistics in place; ours raises the same exception and, as
    torch's, leaves the module's state as it was."""
    x = _randn(4, 3, 2, 2, seed=15)
    for transform in ("grad", "jvp"):
        ours, theirs = _bn_pair()
        errors = []
        for m in (theirs, ours):
            params = {k: v.detach() for k, v in m.named_parameters()}
            with pytest.raises(Exception) as info:
                if transform == "grad":
                    grad(_loss(m))(params, x)
                else:
                    jvp(lambda xx: m(xx), (x,), (x,))
            errors.append(info.type)
        assert errors[1] is errors[0], f"{transform}: ours raised {errors[1]}, torch {errors[0]}"
        _close(_state(ours), _state(theirs), f"state after the failed {transform}")


def test_batch_norm_train_with_buffers_passed():
    """With the buffers passed to functional_call (the documented way), torch's training batch
    norm works under grad and moves the passed buffers; ours gives the same gradients and moves
    them alike."""
    x = _randn(4, 3, 2, 2, seed=16)
    ours, theirs = _bn_pair()
    results = []
    for m in (ours, theirs):
        params = {k: v.detach() for k, v in m.named_parameters()}
        buffers = {k: v.clone() for k, v in m.named_buffers()}

        def loss(p, b, xx):
            out = functional_call(m, (p, b), (xx,))
            return (torch.tanh(out) * torch.linspace(-1, 1, out.numel(), dtype=D).view(out.shape)).sum()

        g = grad(loss, argnums=(0, 2))(params, buffers, x)
        results.append((g, buffers))
    _close(results[0][0], results[1][0], "grad")
    _close(results[0][1], results[1][1], "buffers after the call")


@pytest.mark.parametrize("cls", ["BatchNorm1d", "BatchNorm2d"])
def test_batch_norm_untracked_train_transforms(cls):
    """track_running_stats=False: grad, jvp and vmap work in torch; ours gives its values."""
    ours, theirs = _bn_pair(cls, track_running_stats=False)
    shape = (4, 3) if cls == "BatchNorm1d" else (4, 3, 2, 2)
    x = _randn(*shape, seed=17)
    po = {k: v.detach() for k, v in ours.named_parameters()}
    pt = {k: v.detach() for k, v in theirs.named_parameters()}
    _close(grad(_loss(ours), argnums=(0, 1))(po, x), grad(_loss(theirs), argnums=(0, 1))(pt, x), "grad")
    tx = _randn(*shape, seed=18)
    _close(jvp(lambda xx: ours(xx), (x,), (tx,)), jvp(lambda xx: theirs(xx), (x,), (tx,)), "jvp")
    xs = torch.stack([x, _randn(*shape, seed=19)])
    _close(vmap(ours)(xs), vmap(theirs)(xs), "vmap")
    _close(vmap(grad(_loss(ours), argnums=(0, 1)), in_dims=(None, 0))(po, xs),
           vmap(grad(_loss(theirs), argnums=(0, 1)), in_dims=(None, 0))(pt, xs), "vmap(grad)")


def test_batch_norm_functional_train_captured_stats_as_torch():
    """F.batch_norm in training with captured running statistics: torch's works under grad
    and jvp (moving them), and raises under vmap (unbatched statistics updated in place,
    leaving them untouched); ours does the same."""
    x = _randn(4, 3, 2, 2, seed=20)
    tx = _randn(4, 3, 2, 2, seed=21)
    outcomes = []
    for bn in (TF.batch_norm, tco.F.batch_norm):
        rm, rv = torch.zeros(3, dtype=D), torch.ones(3, dtype=D)
        g = grad(lambda t: torch.tanh(bn(t, rm, rv, training=True)).pow(3).sum())(x)
        after_grad = (rm.clone(), rv.clone())
        t = jvp(lambda u: bn(u, rm, rv, training=True), (x,), (tx,))
        after_jvp = (rm.clone(), rv.clone())
        with pytest.raises(RuntimeError) as info:
            vmap(lambda u: bn(u, rm, rv, training=True))(x.unsqueeze(1))
        outcomes.append((g, after_grad, t, after_jvp, (rm.clone(), rv.clone()), info.type))
    _close(outcomes[1][:5], outcomes[0][:5], "values and running statistics")
    assert outcomes[1][5] is outcomes[0][5]


def test_batch_norm_train_ensemble_vmap():
    """Model ensembling (torch.func.stack_module_state + vmap) of BatchNorm in training mode:
    torch's batches the running statistics with the models and updates each; ours must too."""
    x = _randn(4, 3, 2, 2, seed=22)
    results = []
    for nn in (tnn, tco.nn):
        torch.manual_seed(1)
        models = [nn.BatchNorm2d(3, dtype=D) for _ in range(3)]
        with torch.no_grad():
            for m in models:
                m.weight.add_(torch.randn(3, dtype=D))
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        out = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)), in_dims=(0, 0, None))(params, buffers, x)
        results.append((out, buffers))
    _close(results[1], results[0], "ensemble outputs and buffers")


def test_batch_norm_eval_ensemble_and_per_sample():
    """Eval-mode batch norm (running statistics read, not written) under vmap of ensembles and
    per-sample gradients: torch's values."""
    x = _randn(4, 3, 2, 2, seed=23)
    results = []
    for nn in (tnn, tco.nn):
        torch.manual_seed(2)
        models = [nn.BatchNorm2d(3, dtype=D).eval() for _ in range(3)]
        with torch.no_grad():
            for m in models:
                m.running_mean.copy_(torch.randn(3, dtype=D))
                m.running_var.copy_(torch.rand(3, dtype=D) + 0.5)
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")
        out = vmap(lambda p, b, xx: functional_call(base, (p, b), (xx,)), in_dims=(0, 0, None))(params, buffers, x)

        def loss(p, b, xi):
            return torch.tanh(functional_call(base, (p, b), (xi.unsqueeze(0),))).pow(2).sum()

        one = {k: v[0] for k, v in params.items()}
        one_b = {k: v[0] for k, v in buffers.items()}
        per_sample = vmap(grad(loss, argnums=(0, 2)), in_dims=(None, None, 0))(one, one_b, x)
        results.append((out, per_sample))
    _close(results[1], results[0], "eval ensemble and per-sample grads")
