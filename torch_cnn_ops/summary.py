"""``summary``: a per-layer table of output shapes, parameters, multiply-adds and receptive fields.

The model runs once, in eval mode and without autograd, on a dummy batch of one; forward hooks
on its leaf modules record each call. Conventions:

- ``output_shape`` leaves out the batch dimension; a layer returning several tensors (e.g.
  ``MaxPool2d(return_indices=True)``) reports its first.
- ``macs`` (multiply-adds, for a batch of one): convolutions ``out.numel() * in_channels / groups *
  prod(kernel_size)`` (transposed: ``in.numel() * out_channels / groups * prod(kernel_size)``),
  tiled and unshared convolutions ``out.numel() * in_channels * prod(kernel_size)``, ``Linear``
  ``out.numel() * in_features``; biases are additions and not counted. Normalization layers count
  one multiply-add per output element (in eval mode the normalisation and affine map fold into
  one scale and shift per element; the statistics of training mode are not counted). Pooling,
  activations, dropout and every other layer count 0.
- ``receptive_field``: per spatial dimension of the input, the size of the input window that one
  output element of the layer can see, ``1 + sum((k_l - 1) * prod(strides before l))`` over the
  layers ``l`` on the path from the input, with ``k_l`` the effective kernel size
  ``dilation * (kernel_size - 1) + 1`` (padding counts as input, so it can exceed the image).
  Convolutions (plain, tiled, unshared) and window pooling use their ``kernel_size``, ``stride`` and
  ``dilation``; adaptive pooling its largest window and stride ``in // out``; a ``Linear`` layer
  sees at least the whole input; every other layer and every tensor operation between layers
  (residual additions, concatenations, ``torch.flatten``, ...) keeps the largest receptive field
  of its inputs. In a residual network the main path's field is thus the one carried on at
  each addition (the shortcut's is never larger). Transposed convolutions keep their input's
  field.
- ``total_params`` counts every parameter of the model once (``sum(p.numel() for p in
  model.parameters())``), also those of layers that did not run; ``total_macs`` sums the rows, so a
  layer called twice counts twice.
"""

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from .nn.local import _LocalConvNd

__all__ = ["summary", "Summary", "SummaryRow"]

_NORM_NAMES = {"BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "GroupNorm", "LayerNorm",
               "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LocalResponseNorm", "RMSNorm"}
_NORM_BASES = (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm, torch.nn.LayerNorm)
_ADAPTIVE_POOLS = (torch.nn.modules.pooling._AdaptiveAvgPoolNd, torch.nn.modules.pooling._AdaptiveMaxPoolNd)


@dataclass
class SummaryRow:
    """One call of a leaf layer: its qualified ``name``, class name ``type``, ``output_shape``
    (no batch dimension), own ``params``, ``macs`` and ``receptive_field`` (one size per spatial
    dimension of the input)."""

    name: str
    type: str
    output_shape: Tuple[int, ...]
    params: int
    macs: int
    receptive_field: Tuple[int, ...]


@dataclass
class Summary:
    """What :func:`summary` returns; ``str(s)`` is the table.

    Attributes:
        rows: a :class:`SummaryRow` per leaf-layer call, in execution order.
        total_params, trainable_params: parameters of the model (each counted once).
        total_macs: the sum of the rows' ``macs``.
        input_size: the input's size without the batch dimension.
    """

    rows: List[SummaryRow]
    total_params: int
    trainable_params: int
    total_macs: int
    input_size: Tuple[int, ...]

    def __str__(self) -> str:
        body = [[r.name, r.type, _dims(r.output_shape), f"{r.params:,}", f"{r.macs:,}", _dims(r.receptive_field)]
                for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in body]) for i, c in enumerate(_COLUMNS)]
        right = {3, 4}  # numbers are right-aligned

        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(line(_COLUMNS))
        out = [line(_COLUMNS), rule, *(line(row).rstrip() for row in body), rule]
        out.append(f"input: {_dims(self.input_size)} (batch of 1)")
        out.append(f"total params: {self.total_params:,} (trainable: {self.trainable_params:,})")
        out.append(f"total MACs: {self.total_macs:,}")
        return "\n".join(out)


_COLUMNS = ("layer", "type", "output shape", "params", "MACs", "receptive field")


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape) if len(shape) else "-"


class _FieldTracker(TorchFunctionMode):
    """Carries (receptive field, jump) from the inputs to the outputs of every tensor operation.

    The jump is the distance, in input pixels, between neighbouring elements of a tensor: the
    product of the strides before it. Tensors are keyed by id and kept alive until the end, so
    an id is never reused for another tensor.
    """

    def __init__(self, input: Tensor, nd: int):
        super().__init__()
        self.fields: Dict[int, Tuple[Tensor, Tuple[int, ...], Tuple[int, ...]]] = {}
        self.last = ((1,) * nd, (1,) * nd)
        self.set(input, *self.last)

    def set(self, t: Tensor, rf, jump) -> None:
        self.fields[id(t)] = (t, tuple(rf), tuple(jump))

    def of(self, values) -> Optional[Tuple[Tuple[int, ...], Tuple[int, ...]]]:
        found = [self.fields[id(v)][1:] for v in tree_flatten(values)[0]
                 if isinstance(v, Tensor) and id(v) in self.fields]
        if not found:
            return None
        rf = tuple(max(f[0][d] for f in found) for d in range(len(found[0][0])))
        jump = tuple(max(f[1][d] for f in found) for d in range(len(found[0][1])))
        return rf, jump

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        carried = self.of((args, kwargs))
        if carried is not None:
            for t in tree_flatten(out)[0]:
                if isinstance(t, Tensor):
                    self.set(t, *carried)
        return out


def _tuple(value, n: int) -> Tuple[int, ...]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _layer_field(m: torch.nn.Module, x: Optional[Tensor], out: Tensor, rf, jump, input_size):
    """(rf, jump) of the output of leaf layer `m`, given those of its input."""
    nd = len(rf)
    if nd == 0:
        return rf, jump
    if isinstance(m, (torch.nn.Linear, torch.nn.Bilinear)):
        return tuple(max(r, s) for r, s in zip(rf, input_size)), jump
    if isinstance(m, _ADAPTIVE_POOLS) and x is not None and min(out.dim(), x.dim()) > 2:
        knd = min(nd, out.dim() - 2, x.dim() - 2)  # the dimensions after batch and channels
        sizes_in, sizes_out = x.shape[-knd:], out.shape[-knd:]
        kernel = [max(math.ceil((i + 1) * n / o) - (i * n) // o for i in range(o)) for n, o in zip(sizes_in, sizes_out)]
        stride = [max(1, n // o) for n, o in zip(sizes_in, sizes_out)]
        dilation = [1] * knd
    elif getattr(m, "kernel_size", None) is not None and not getattr(m, "transposed", False):
        k = m.kernel_size
        knd = len(k) if isinstance(k, (tuple, list)) else max(1, min(nd, out.dim() - 2))
        kernel = _tuple(k, knd)
        stride = _tuple(getattr(m, "stride", None) or k, knd)
        dilation = _tuple(getattr(m, "dilation", 1), knd)
    else:
        return rf, jump
    rf, jump = list(rf), list(jump)
    for i in range(min(knd, nd)):
        d = nd - min(knd, nd) + i  # a kernel acts on the last dimensions
        j = knd - min(knd, nd) + i
        rf[d] += (dilation[j] * (kernel[j] - 1)) * jump[d]
        jump[d] *= stride[j]
    return tuple(rf), tuple(jump)


def _macs(m: torch.nn.Module, x: Optional[Tensor], out: Tensor) -> int:
    if isinstance(m, torch.nn.modules.conv._ConvNd):
        k = math.prod(m.kernel_size)
        if m.transposed:
            return 0 if x is None else x.numel() * (m.out_channels // m.groups) * k
        return out.numel() * (m.in_channels // m.groups) * k
    if isinstance(m, _LocalConvNd):
        return out.numel() * m.in_channels * math.prod(m.kernel_size)
    if isinstance(m, torch.nn.Linear):
        return out.numel() * m.in_features
    if isinstance(m, _NORM_BASES) or type(m).__name__ in _NORM_NAMES:
        return out.numel()
    return 0


def _reference_tensor(model: torch.nn.Module) -> Optional[Tensor]:
    for t in model.parameters():
        return t
    for t in model.buffers():
        if t.is_floating_point():
            return t
    return None


def summary(model: torch.nn.Module, input_size: Sequence[int], *, dtype: Optional[torch.dtype] = None,
            device=None) -> Summary:
    """Runs ``model`` once on a dummy input and tabulates its leaf layers.

    The input is a batch of one, ``(1, *input_size)``, of uniform random values (from a private
    generator: the global random state is not touched), of the dtype and device of the model's
    first parameter unless ``dtype`` / ``device`` say otherwise. The model runs in eval mode
    under ``torch.no_grad()`` (so running statistics are not updated) and every module's mode is
    restored afterwards. See the module's documentation for how MACs and receptive fields are
    counted.

    Args:
        model: any module taking one tensor.
        input_size: ``(C, *spatial)``, without the batch dimension, e.g. ``(3, 32, 32)``.

    Returns:
        A :class:`Summary`.

    Example::

        >>> s = tco.summary(torch.nn.Conv2d(3, 10, 5, padding=2), (3, 32, 32))
        >>> r = s.rows[0]
        >>> r.output_shape, r.params, r.macs, r.receptive_field
        ((10, 32, 32), 760, 768000, (5, 5))
        >>> print(s)  # doctest: +SKIP
        layer  type    output shape  params     MACs  receptive field
        -------------------------------------------------------------
               Conv2d  10x32x32         760  768,000  5x5
        -------------------------------------------------------------
        input: 3x32x32 (batch of 1)
        total params: 760 (trainable: 760)
        total MACs: 768,000
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"summary: expected a torch.nn.Module, got {type(model).__name__}")
    try:
        size = tuple(input_size)
    except TypeError:
        raise TypeError(f"summary: input_size must be a sequence of ints (C, *spatial), got {input_size!r}") from None
    if not size or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        raise ValueError(f"summary: input_size must be positive ints (C, *spatial) without the batch "
                         f"dimension, got {input_size!r}")
    ref = _reference_tensor(model)
    dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
    device = device if device is not None else (ref.device if ref is not None else "cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, *size), generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)

    spatial = size[1:]
    tracker = _FieldTracker(x, len(spatial))
    rows: List[SummaryRow] = []
    names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}

    def hook(module, args, kwargs, output):
        first_in = next((t for t in tree_flatten((args, kwargs))[0] if isinstance(t, Tensor)), None)
        first_out = next((t for t in tree_flatten(output)[0] if isinstance(t, Tensor)), None)
        if first_out is None:
            return
        rf, jump = tracker.of((args, kwargs)) or tracker.last
        rf, jump = _layer_field(module, first_in, first_out, rf, jump, spatial)
        tracker.last = (rf, jump)
        for t in tree_flatten(output)[0]:
            if isinstance(t, Tensor):
                tracker.set(t, rf, jump)
        rows.append(SummaryRow(
            name=names.get(id(module), ""), type=type(module).__name__,
            output_shape=tuple(first_out.shape[1:]),
            params=sum(p.numel() for p in module.parameters(recurse=False)),
            macs=int(_macs(module, first_in, first_out)), receptive_field=rf))

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()
               if not any(True for _ in m.children())]
    try:
        model.eval()
        with torch.no_grad(), tracker:
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, training in modes.items():
            m.training = training
    params = {id(p): p for p in model.parameters()}.values()
    return Summary(rows=rows, total_params=sum(p.numel() for p in params),
                   trainable_params=sum(p.numel() for p in params if p.requires_grad),
                   total_macs=sum(r.macs for r in rows), input_size=size)
