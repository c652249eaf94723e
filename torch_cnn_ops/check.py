"""Parity check: every op against its built-in twin (``python -m torch_cnn_ops check``).

Runs each op on random inputs in float64 and float32 and compares with torch's own
implementation. Returns the rows of a table; the CLI prints it and exits 1 on any failure.
"""

from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as torch_F
import torch.nn.grad as torch_grad

from . import functional as F
from . import grad
from .benchmark.local import tiled_grouped, unshared_einsum

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4}


def _conv_cases() -> List[Tuple[str, str, Callable[[torch.dtype], Tuple[torch.Tensor, torch.Tensor]]]]:
    cases = []
    # (nd, input shape, weight shape, stride, padding, dilation, groups)
    shapes = [
        (1, (2, 4, 17), (6, 2, 3), 2, 1, 1, 2),
        (2, (2, 4, 11, 9), (6, 4, 3, 2), 1, 1, 2, 1),
        (2, (2, 6, 12, 12), (6, 1, 3, 3), 2, 1, 1, 6),
        (3, (1, 3, 6, 7, 5), (4, 3, 2, 3, 2), 1, 1, 1, 1),
    ]
    for nd, xs, ws, s, p, d, g in shapes:
        conv = getattr(F, f"conv{nd}d")
        ref = getattr(torch_F, f"conv{nd}d")
        grad_in, grad_w = getattr(grad, f"conv{nd}d_input"), getattr(grad, f"conv{nd}d_weight")
        ref_in, ref_w = getattr(torch_grad, f"conv{nd}d_input"), getattr(torch_grad, f"conv{nd}d_weight")
        for algorithm in ("direct", "im2col", "shifted") if s == 1 else ("direct", "im2col"):

            def forward(dtype, conv=conv, ref=ref, xs=xs, ws=ws, s=s, p=p, d=d, g=g, algorithm=algorithm):
                x, w, b = torch.randn(xs, dtype=dtype), torch.randn(ws, dtype=dtype), torch.randn(ws[0], dtype=dtype)
                return conv(x, w, b, s, p, d, g, algorithm=algorithm), ref(x, w, b, s, p, d, g)

            cases.append((f"conv{nd}d", algorithm, forward))
        y_shape = ref(torch.zeros(xs), torch.zeros(ws), None, s, p, d, g).shape

        def input_grad(dtype, xs=xs, ws=ws, s=s, p=p, d=d, g=g, grad_in=grad_in, ref_in=ref_in, y_shape=y_shape):
            w, gy = torch.randn(ws, dtype=dtype), torch.randn(y_shape, dtype=dtype)
            return grad_in(xs, w, gy, s, p, d, g), ref_in(xs, w, gy, s, p, d, g)

        def weight_grad(dtype, xs=xs, ws=ws, s=s, p=p, d=d, g=g, grad_w=grad_w, ref_w=ref_w, y_shape=y_shape):
            x, gy = torch.randn(xs, dtype=dtype), torch.randn(y_shape, dtype=dtype)
            return grad_w(x, ws, gy, s, p, d, g), ref_w(x, ws, gy, s, p, d, g)

        cases.append((f"grad.conv{nd}d_input", "auto", input_grad))
        cases.append((f"grad.conv{nd}d_weight", "auto", weight_grad))
    return cases


def _local_cases() -> List[Tuple[str, str, Callable[[torch.dtype], Tuple[torch.Tensor, torch.Tensor]]]]:
    """Tiled convolution with tile 1 against conv, tiled 2x2 and unshared against the
    pure-PyTorch unfold + einsum formulations (forward, and the input and weight gradients)."""
    cases = []

    def tile_one_1d(dtype):
        x, w, b = torch.randn(2, 3, 17, dtype=dtype), torch.randn(4, 3, 3, dtype=dtype), torch.randn(4, dtype=dtype)
        return F.tiled_conv1d(x, w[None], b, 2, 1, 2), torch_F.conv1d(x, w, b, 2, 1, 2)

    def tile_one_2d(dtype):
        x, w, b = torch.randn(2, 3, 11, 9, dtype=dtype), torch.randn(4, 3, 3, 2, dtype=dtype), torch.randn(4, dtype=dtype)
        return F.tiled_conv2d(x, w[None, None], b, 1, (1, 2), (2, 1)), torch_F.conv2d(x, w, b, 1, (1, 2), (2, 1))

    def with_grads(ours_fn, ref_fn, x, w, b):
        outs = []
        for fn in (ours_fn, ref_fn):
            xs, ws = x.clone().requires_grad_(), w.clone().requires_grad_()
            y = fn(xs, ws, b)
            weights = 1 + torch.arange(y.numel(), dtype=y.dtype).view_as(y) % 3  # a cotangent that is not all ones
            gx, gw = torch.autograd.grad(y, (xs, ws), weights)
            outs.append(torch.cat([y.detach().flatten(), gx.flatten(), gw.flatten()]))
        return outs[0], outs[1]

    def tiled_2x2(dtype):
        x, w, b = torch.randn(2, 3, 8, 10, dtype=dtype), torch.randn(2, 2, 4, 3, 3, 3, dtype=dtype), torch.randn(4, dtype=dtype)
        return with_grads(lambda x, w, b: F.tiled_conv2d(x, w, b, padding=1),
                          lambda x, w, b: tiled_grouped(x, w, b, 3, 1), x, w, b)

    def unshared(dtype):
        x, w, b = torch.randn(2, 3, 7, 6, dtype=dtype), torch.randn(7, 6, 4, 3, 3, 3, dtype=dtype), torch.randn(4, 7, 6, dtype=dtype)
        return with_grads(lambda x, w, b: F.unshared_conv2d(x, w, b, padding=1),
                          lambda x, w, b: unshared_einsum(x, w, b, 3, 1), x, w, b)

    cases.append(("tiled_conv1d", "tile 1 vs conv1d", tile_one_1d))
    cases.append(("tiled_conv2d", "tile 1 vs conv2d", tile_one_2d))
    cases.append(("tiled_conv2d", "2x2 fwd+grads vs einsum", tiled_2x2))
    cases.append(("unshared_conv2d", "fwd+grads vs unfold+einsum", unshared))
    return cases


def _pool_cases() -> List[Tuple[str, str, Callable[[torch.dtype], Tuple[torch.Tensor, torch.Tensor]]]]:
    """Pooling ops against torch.nn.functional (min pooling against -max_pool(-x)): values,
    indices (as floats, exact) and input gradients."""
    cases = []
    shapes = {1: (2, 3, 17), 2: (2, 3, 11, 9), 3: (1, 2, 6, 7, 5)}

    def add(name, variant, ours_fn, ref_fn, nd, positive=False):
        def values(dtype, nd=nd, ours_fn=ours_fn, ref_fn=ref_fn):
            x = torch.randn(shapes[nd], dtype=dtype)
            x = x.abs() if positive else x
            ours, ref = ours_fn(x), ref_fn(x)
            if isinstance(ours, tuple):
                return torch.cat([ours[0].flatten(), ours[1].flatten().to(dtype)]), torch.cat(
                    [ref[0].flatten(), ref[1].flatten().to(dtype)])
            return ours, ref

        def gradient(dtype, nd=nd, ours_fn=ours_fn, ref_fn=ref_fn):
            x = torch.randn(shapes[nd], dtype=dtype)
            x = (x.abs() if positive else x).requires_grad_()
            first = lambda y: y[0] if isinstance(y, tuple) else y  # noqa: E731
            out = first(ours_fn(x))
            gy = torch.randn_like(out)
            (ours,) = torch.autograd.grad(out, x, gy)
            (ref,) = torch.autograd.grad(first(ref_fn(x)), x, gy)
            return ours, ref

        cases.append((name, variant, values))
        cases.append((name, variant + " grad", gradient))

    def neg_max(nd, *args, **kwargs):
        def ref(x):
            out = getattr(torch_F, f"max_pool{nd}d")(-x, *args, **kwargs)
            return (-out[0], out[1]) if isinstance(out, tuple) else -out
        return ref

    for nd in (1, 2, 3):
        max_args = (3, 2, 1, 1, True)
        add(f"max_pool{nd}d", "k3 s2 p1 ceil", lambda x, nd=nd: getattr(F, f"max_pool{nd}d")(x, *max_args, return_indices=True),
            lambda x, nd=nd: getattr(torch_F, f"max_pool{nd}d")(x, *max_args, return_indices=True), nd)
        add(f"min_pool{nd}d", "k2 d2", lambda x, nd=nd: getattr(F, f"min_pool{nd}d")(x, 2, 1, 0, 2, return_indices=True),
            neg_max(nd, 2, 1, 0, 2, return_indices=True), nd)
        avg_args = (3, 2, 1, True, False) if nd == 1 else (3, 2, 1, True, False, 5)  # + divisor_override
        add(f"avg_pool{nd}d", "k3 s2 p1 ceil", lambda x, nd=nd, a=avg_args: getattr(F, f"avg_pool{nd}d")(x, *a),
            lambda x, nd=nd, a=avg_args: getattr(torch_F, f"avg_pool{nd}d")(x, *a), nd)
        add(f"lp_pool{nd}d", "p2 k2", lambda x, nd=nd: getattr(F, f"lp_pool{nd}d")(x, 2, 2),
            lambda x, nd=nd: getattr(torch_F, f"lp_pool{nd}d")(x, 2, 2), nd)
        add(f"lp_pool{nd}d", "p1.5 k3 s2 ceil", lambda x, nd=nd: getattr(F, f"lp_pool{nd}d")(x, 1.5, 3, 2, True),
            lambda x, nd=nd: getattr(torch_F, f"lp_pool{nd}d")(x, 1.5, 3, 2, True), nd, positive=True)
        size = (4, 3, 2)[:nd]
        add(f"adaptive_max_pool{nd}d", str(size),
            lambda x, nd=nd, size=size: getattr(F, f"adaptive_max_pool{nd}d")(x, size, return_indices=True),
            lambda x, nd=nd, size=size: getattr(torch_F, f"adaptive_max_pool{nd}d")(x, size, return_indices=True), nd)
        add(f"adaptive_min_pool{nd}d", str(size), lambda x, nd=nd, size=size: getattr(F, f"adaptive_min_pool{nd}d")(x, size),
            lambda x, nd=nd, size=size: -getattr(torch_F, f"adaptive_max_pool{nd}d")(-x, size), nd)
        add(f"adaptive_avg_pool{nd}d", str(size), lambda x, nd=nd, size=size: getattr(F, f"adaptive_avg_pool{nd}d")(x, size),
            lambda x, nd=nd, size=size: getattr(torch_F, f"adaptive_avg_pool{nd}d")(x, size), nd)
    add("kmax_pool1d", "k=5", lambda x: F.kmax_pool1d(x, 5),
        lambda x: x.gather(-1, x.topk(5, -1).indices.sort(-1).values), 1)
    add("dynamic_kmax_pool1d", "layer 1 of 3, k_top 3", lambda x: F.dynamic_kmax_pool1d(x, 1, 3, 3),
        lambda x: x.gather(-1, x.topk(12, -1).indices.sort(-1).values), 1)
    add("channel_max_pool", "pool_size=3", lambda x: F.channel_max_pool(x, 3),
        lambda x: x.unflatten(1, (x.shape[1] // 3, 3)).amax(2), 2)
    add("gaussian_pool2d", "k3 s2 p1 sigma 1.5", lambda x: F.gaussian_pool2d(x, 3, 2, 1, 1.5),
        lambda x: torch_F.conv2d(x, _gaussian_kernel(3, 1.5, x), stride=2, padding=1, groups=x.shape[1]), 2)
    add("stochastic_pool2d", "eval k3 s2", lambda x: F.stochastic_pool2d(x, 3, 2, training=False),
        lambda x: _stochastic_eval(x, 3, 2), 2, positive=True)
    return cases


def _stochastic_eval(x, k, s):
    """Eval-mode stochastic pooling by unfold: sum(x^2) / sum(x) per window."""
    n, c, h, w = x.shape
    windows = torch_F.unfold(x.reshape(n * c, 1, h, w), k, stride=s)
    out = (windows * windows).sum(1) / windows.sum(1)
    return out.view(n, c, (h - k) // s + 1, (w - k) // s + 1)


def _gaussian_kernel(k, sigma, x):
    """The depthwise (C, 1, k, k) kernel equal to Gaussian pooling: the normalised Gaussian of
    the distance to the window's centre."""
    d = torch.arange(k, dtype=torch.float64) - (k - 1) / 2
    w = torch.exp(-d * d / (2 * sigma**2))
    w = w / w.sum()
    return torch.outer(w, w).to(x.dtype).expand(x.shape[1], 1, k, k)


def _tile(v, shape):
    """A tensor of `shape` filled with repeats of the vector v (differentiable in v)."""
    n = shape[0] * shape[1]
    return v.repeat((n + v.numel() - 1) // v.numel())[:n].view(shape)


def _norm_cases() -> List[Tuple[str, str, Callable[[torch.dtype], Tuple[torch.Tensor, torch.Tensor]]]]:
    """Normalization against torch.nn.functional: outputs with the updated running statistics
    (training) and the gradients of input, weight and bias."""
    cases = []
    shape = (4, 6, 5, 7)

    def add(name, variant, ours_fn, ref_fn, with_stats=False):
        def values(dtype, ours_fn=ours_fn, ref_fn=ref_fn):
            x, w, b = torch.randn(shape, dtype=dtype) * 2 + 1, torch.randn(6, dtype=dtype), torch.randn(6, dtype=dtype)
            stats = [torch.rand(6, dtype=dtype), torch.rand(6, dtype=dtype) + 0.5]
            ref_stats = [t.clone() for t in stats]
            ours, ref = ours_fn(x, w, b, *stats), ref_fn(x, w, b, *ref_stats)
            if with_stats:
                return torch.cat([ours.flatten(), *stats]), torch.cat([ref.flatten(), *ref_stats])
            return ours, ref

        def gradient(dtype, ours_fn=ours_fn, ref_fn=ref_fn):
            x = (torch.randn(shape, dtype=dtype) * 2 + 1).requires_grad_()
            w, b = torch.randn(6, dtype=dtype, requires_grad=True), torch.randn(6, dtype=dtype, requires_grad=True)
            stats = [torch.rand(6, dtype=dtype), torch.rand(6, dtype=dtype) + 0.5]
            out = ours_fn(x, w, b, *[t.clone() for t in stats])
            gy = torch.randn_like(out)
            ours = torch.autograd.grad(out, (x, w, b), gy)
            ref = torch.autograd.grad(ref_fn(x, w, b, *stats), (x, w, b), gy)
            return torch.cat([g.flatten() for g in ours]), torch.cat([g.flatten() for g in ref])

        cases.append((name, variant, values))
        cases.append((name, variant + " grad", gradient))

    for fn, ref in ((F.batch_norm, torch_F.batch_norm),):
        add("batch_norm", "training", lambda x, w, b, rm, rv, fn=fn: fn(x, rm, rv, w, b, True, 0.1, 1e-5),
            lambda x, w, b, rm, rv, ref=ref: ref(x, rm, rv, w, b, True, 0.1, 1e-5), with_stats=True)
        add("batch_norm", "training channels_last",
            lambda x, w, b, rm, rv, fn=fn: fn(x.contiguous(memory_format=torch.channels_last), rm, rv, w, b, True),
            lambda x, w, b, rm, rv, ref=ref: ref(x, rm, rv, w, b, True), with_stats=True)
        add("batch_norm", "eval", lambda x, w, b, rm, rv, fn=fn: fn(x, rm, rv, w, b, False),
            lambda x, w, b, rm, rv, ref=ref: ref(x, rm, rv, w, b, False))
    add("instance_norm", "with running stats",
        lambda x, w, b, rm, rv: F.instance_norm(x, rm, rv, w, b, True),
        lambda x, w, b, rm, rv: torch_F.instance_norm(x, rm, rv, w, b, True), with_stats=True)
    add("group_norm", "3 groups", lambda x, w, b, rm, rv: F.group_norm(x, 3, w, b),
        lambda x, w, b, rm, rv: torch_F.group_norm(x, 3, w, b))
    add("layer_norm", "last 2 dims",
        lambda x, w, b, rm, rv: F.layer_norm(x, (5, 7), _tile(w, (5, 7)), _tile(b, (5, 7))),
        lambda x, w, b, rm, rv: torch_F.layer_norm(x, (5, 7), _tile(w, (5, 7)), _tile(b, (5, 7))))
    return cases


def run_check(seed: int = 0) -> List[Dict[str, object]]:
    torch.manual_seed(seed)
    rows = []
    for name, variant, case in _conv_cases() + _local_cases() + _pool_cases() + _norm_cases():
        for dtype in (torch.float64, torch.float32):
            ours, ref = case(dtype)
            error = ((ours - ref).abs().max() / ref.abs().max().clamp_min(1)).item() if ref.numel() else 0.0
            ok = ours.shape == ref.shape and error <= TOLERANCE[dtype]
            rows.append({"op": name, "variant": variant, "dtype": str(dtype).replace("torch.", ""),
                         "max rel error": error, "tolerance": TOLERANCE[dtype], "result": "pass" if ok else "FAIL"})
    return rows
