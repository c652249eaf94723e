"""``summary``: a per-layer table of output shapes, parameters, multiply-adds and receptive fields.

The model runs once, in eval mode and without autograd, on a dummy batch (of one unless the
input size includes a larger batch) or on the input it is given; forward hooks on its leaf
modules record each call. Conventions:

- ``output_shape`` leaves out the batch dimension; a layer returning several tensors (e.g.
  ``MaxPool2d(return_indices=True)``) reports its first.
- ``macs`` (multiply-adds) count the whole batch that ran, as torchinfo does (for a batch of one:
  per sample); per layer: convolutions ``out.numel() * in_channels / groups *
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
from typing import Dict, List, Optional, Sequence, Tuple, Union

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
    (no batch dimension), own ``params``, ``macs`` (for the whole batch) and ``receptive_field``
    (one size per spatial dimension of the input)."""

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
        total_macs: the sum of the rows' ``macs``, for the whole batch.
        input_size: the input's size without the batch dimension.
        batch_size: the size of the batch that ran (its dimension 0).
    """

    rows: List[SummaryRow]
    total_params: int
    trainable_params: int
    total_macs: int
    input_size: Tuple[int, ...]
    batch_size: int = 1

    def __str__(self) -> str:
        body = [[r.name, r.type, _dims(r.output_shape), f"{r.params:,}", f"{r.macs:,}", _dims(r.receptive_field)]
                for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in body]) for i, c in enumerate(_COLUMNS)]
        right = {3, 4}  # numbers are right-aligned

        def line(cells):
            return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(line(_COLUMNS))
        out = [line(_COLUMNS), rule, *(line(row).rstrip() for row in body), rule]
        out.append(f"input: {_dims(self.input_size)} (batch of {self.batch_size})")
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


def _run(model: torch.nn.Module, x: Tensor) -> List[SummaryRow]:
    """Runs `model` on `x` (batch first) with forward hooks on its leaf modules; the rows."""
    spatial = tuple(x.shape[2:])
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

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in model.modules()
               if not any(True for _ in m.children())]
    try:
        with torch.no_grad(), tracker:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return rows


def _message(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


_AUTO = "auto"


def summary(model: torch.nn.Module, input_size: Optional[Sequence[int]] = None, *,
            input_data: Optional[Tensor] = None, batch_dim: Union[str, int, None] = _AUTO,
            dtype: Optional[torch.dtype] = None, device=None) -> Summary:
    """Runs ``model`` once on an input and tabulates its leaf layers.

    The input is either ``input_data``, used as is, or a tensor of size ``input_size`` (a batch of
    one added in front when ``input_size`` leaves the batch out) of uniform random values (from a
    private generator: the global random state is not touched), of the dtype and device of the
    model's first parameter unless ``dtype`` / ``device`` say otherwise. The model runs in eval
    mode under ``torch.no_grad()`` (so running statistics are not updated) and every module's
    mode is restored afterwards. The rows' ``output_shape`` and the summary's ``input_size``
    leave out the batch dimension, whichever convention the input came in; ``macs`` count the
    whole batch that ran (as torchinfo does): per sample when ``input_size`` leaves the batch
    out, ``N`` times that for a batch of ``N``. See the module's documentation for how MACs and
    receptive fields are counted.

    Whether ``input_size`` includes the batch dimension is ``batch_dim``'s to say, as in
    torchinfo: ``batch_dim=0`` reads it as ``(C, *spatial)``, without the batch (a batch of one is
    added at dimension 0); ``batch_dim=None`` as ``(N, C, *spatial)``, with it (torchinfo's
    default). The default, ``"auto"``, tries ``(1, *input_size)`` first, so ``(3, 32, 32)`` keeps
    meaning one 3x32x32 image, and when the model fails on that, ``input_size`` as it is, so
    torchinfo's ``(1, 3, 224, 224)`` or ``(8, 3, 32, 32)`` work too. A model that accepts both
    (e.g. one made of ``Linear`` layers only, which take any leading dimensions) is read the
    first way: pass ``batch_dim=None`` there to say that ``input_size`` holds the batch.

    Args:
        model: any module taking one tensor.
        input_size: the input's size, ``(C, *spatial)`` or ``(N, C, *spatial)`` (see above), e.g.
            ``(3, 32, 32)`` or ``(1, 3, 32, 32)``; a ``torch.Size`` too.
        input_data: instead of ``input_size``, the input itself, ``(N, C, *spatial)``, batch
            first; its dtype and device are used as they are.
        batch_dim: ``"auto"`` (default), ``0`` or ``None``, for ``input_size`` only (see above).
        dtype, device: of the input made from ``input_size``.

    Returns:
        A :class:`Summary`.

    Raises:
        TypeError: ``model`` is not a module; neither or both of ``input_size`` and
            ``input_data`` are given; ``input_size`` is not a sequence of ints; ``input_data`` is
            not a tensor or comes with ``dtype`` or ``device``.
        ValueError: ``input_size`` has sizes below 1, ``batch_dim`` is none of the above, or
            the model does not run on the input (in every reading of ``input_size`` that
            ``batch_dim`` allows); the message names the sizes tried and the model's error,
            which is also chained as the cause.

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
        >>> s = tco.summary(torch.nn.Conv2d(3, 10, 5, padding=2), (8, 3, 32, 32))
        >>> s.input_size, s.batch_size, s.rows[0].output_shape, s.total_macs
        ((3, 32, 32), 8, (10, 32, 32), 6144000)
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"summary: expected a torch.nn.Module, got {type(model).__name__}")
    if (input_size is None) == (input_data is None):
        raise TypeError("summary: pass exactly one of input_size and input_data, got "
                        + ("both" if input_data is not None else "neither"))
    if input_data is not None:
        if not isinstance(input_data, Tensor):
            raise TypeError(f"summary: input_data must be a Tensor, got {type(input_data).__name__}")
        if dtype is not None or device is not None:
            raise TypeError("summary: dtype and device apply to the input made from input_size; "
                            "input_data is used as it is")
        if batch_dim not in (_AUTO, None):
            raise ValueError(f"summary: input_data is batch first, (N, C, *spatial); batch_dim={batch_dim!r} "
                             "does not apply to it")
        if input_data.dim() < 2:
            raise ValueError(f"summary: input_data must be (N, C, *spatial), got size {tuple(input_data.shape)}")
        subject = f"input_data of size {tuple(input_data.shape)}"
        attempts = [(lambda: input_data, "")]
    else:
        try:
            size = tuple(input_size)
        except TypeError:
            raise TypeError(f"summary: input_size must be a sequence of ints, (C, *spatial) or "
                            f"(N, C, *spatial), got {input_size!r}") from None
        if not size or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
            raise ValueError(f"summary: input_size must be positive ints, (C, *spatial) or (N, C, *spatial), "
                             f"got {input_size!r}")
        if not (batch_dim == _AUTO or batch_dim is None or (type(batch_dim) is int and batch_dim == 0)):
            raise ValueError(f"summary: batch_dim must be 'auto', 0 (input_size without the batch dimension) "
                             f"or None (input_size with it, batch first), got {batch_dim!r}")
        if batch_dim is None and len(size) < 2:
            raise ValueError(f"summary: with batch_dim=None, input_size is (N, C, *spatial), got {input_size!r}")
        ref = _reference_tensor(model)
        dtype = dtype if dtype is not None else (ref.dtype if ref is not None else torch.get_default_dtype())
        device = device if device is not None else (ref.device if ref is not None else "cpu")

        def make(shape):
            gen = torch.Generator().manual_seed(0)
            return torch.rand(shape, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype)

        subject = f"input_size {size}"
        attempts = []
        if batch_dim is not None:
            attempts.append((lambda: make((1, *size)), f"read as (C, *spatial), without the batch dimension "
                                                        f"(an input of size {(1, *size)}; "))
        if batch_dim is None or (batch_dim == _AUTO and len(size) >= 2):
            attempts.append((lambda: make(size), "read as (N, C, *spatial), with the batch dimension ("))

    modes = {m: m.training for m in model.modules()}
    errors = []
    rows = None
    try:
        model.eval()
        for make_input, what in attempts:  # inputs made one at a time: each may be large
            x = make_input()
            try:
                rows = _run(model, x)
                break
            except torch.cuda.OutOfMemoryError:
                raise
            except (RuntimeError, ValueError, IndexError) as e:
                errors.append((what, e))
    finally:
        for m, training in modes.items():
            m.training = training
    if rows is None:
        tried = [f"{how}{_message(e)})" if how else f"({_message(e)})" for how, e in errors]
        tried = f", neither {tried[0]}, nor {tried[1]}" if len(tried) == 2 else f" {tried[0]}"
        raise ValueError(f"summary: the model does not run on {subject}{tried}") from errors[0][1]
    params = {id(p): p for p in model.parameters()}.values()
    return Summary(rows=rows, total_params=sum(p.numel() for p in params),
                   trainable_params=sum(p.numel() for p in params if p.requires_grad),
                   total_macs=sum(r.macs for r in rows), input_size=tuple(x.shape[1:]),
                   batch_size=x.shape[0])
