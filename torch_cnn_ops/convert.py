"""``convert``: swap the torch.nn layers of a model for their twins in ``torch_cnn_ops.nn``.

The table below maps a torch.nn class name to a function that builds the twin from the
original's attributes (every constructor argument, so ``padding_mode``, ``return_indices``,
``ceil_mode``, ``divisor_override``, ... are kept). The twin class is looked up by the same name
in ``torch_cnn_ops.nn`` when ``convert`` runs, so a family that is not there (yet) is left as
torch's (and reported as skipped).

A subclass of one of those torch.nn classes is converted like the class itself when it keeps
torch's code: see :func:`_overridden` for what counts as overriding.
"""

import copy
import functools
import warnings
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple, Union

import torch
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.utils import parametrize

from . import nn as tco_nn

__all__ = ["convert", "unconvert", "Replacement", "Skipped", "Report"]


class Replacement(NamedTuple):
    """One layer ``convert`` swapped: its qualified ``name`` in the model (``""`` for the model
    itself) and the classes before and after."""

    name: str
    original: type
    twin: type


class Skipped(NamedTuple):
    """One layer ``convert`` left as it was although its class derives from a torch.nn class
    that has a twin: its qualified ``name``, its class ``original`` and the ``reason``."""

    name: str
    original: type
    reason: str


class Report(list):
    """What ``convert(..., return_report=True)`` returns next to the model: a list of
    :class:`Replacement`, in module order, whose ``skipped`` attribute lists the layers left as
    they were, as :class:`Skipped` entries in module order."""

    def __init__(self, replaced=(), skipped=()):
        super().__init__(replaced)
        self.skipped: List[Skipped] = list(skipped)


# A builder takes the twin class, the original module and the factory arguments (device) of
# layers with parameters. Twins are built on the meta device where they can be: their own
# parameters are placeholders that the original's tensors replace at once, so building them
# costs no memory and no random initialisation.
_META = {"device": "meta"}


def _conv(cls, m, factory):
    return cls(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
               m.bias is not None, m.padding_mode, **factory)


def _max_pool(cls, m, factory):
    return cls(m.kernel_size, m.stride, m.padding, m.dilation, m.return_indices, m.ceil_mode)


def _avg_pool(cls, m, factory):
    extra = () if isinstance(m, torch.nn.AvgPool1d) else (m.divisor_override,)
    return cls(m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad, *extra)


def _lp_pool(cls, m, factory):
    return cls(m.norm_type, m.kernel_size, m.stride, m.ceil_mode)


def _adaptive_max_pool(cls, m, factory):
    return cls(m.output_size, m.return_indices)


def _adaptive_avg_pool(cls, m, factory):
    return cls(m.output_size)


def _no_bias(m, affine: bool):
    # An affine norm layer without bias (LayerNorm's `bias` argument dates from torch 2.1, that of
    # the batch, instance and group norms from 2.13); pass the flag only then, so that the call
    # also works on a torch whose constructor has no such argument.
    return {"bias": False} if affine and m.weight is not None and m.bias is None else {}


def _batch_norm(cls, m, factory):
    return cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, **factory,
               **_no_bias(m, m.affine))


def _sync_batch_norm(cls, m, factory):
    return cls(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats, m.process_group, **factory,
               **_no_bias(m, m.affine))


def _group_norm(cls, m, factory):
    return cls(m.num_groups, m.num_channels, m.eps, m.affine, **factory, **_no_bias(m, m.affine))


def _layer_norm(cls, m, factory):
    return cls(m.normalized_shape, m.eps, m.elementwise_affine, **factory, **_no_bias(m, m.elementwise_affine))


_BUILDERS: Dict[str, Callable] = {
    **{f"Conv{d}d": _conv for d in (1, 2, 3)},
    **{f"MaxPool{d}d": _max_pool for d in (1, 2, 3)},
    **{f"AvgPool{d}d": _avg_pool for d in (1, 2, 3)},
    **{f"LPPool{d}d": _lp_pool for d in (1, 2, 3)},
    **{f"AdaptiveMaxPool{d}d": _adaptive_max_pool for d in (1, 2, 3)},
    **{f"AdaptiveAvgPool{d}d": _adaptive_avg_pool for d in (1, 2, 3)},
    **{f"BatchNorm{d}d": _batch_norm for d in (1, 2, 3)},
    **{f"InstanceNorm{d}d": _batch_norm for d in (1, 2, 3)},  # the same constructor arguments
    "SyncBatchNorm": _sync_batch_norm,
    "GroupNorm": _group_norm,
    "LayerNorm": _layer_norm,
}

# What a twin takes over from the original besides parameters and buffers: the hook
# dictionaries (shared, so handles the caller holds still remove them).
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called",
               "_forward_pre_hooks", "_forward_pre_hooks_with_kwargs", "_backward_hooks",
               "_backward_pre_hooks", "_state_dict_hooks", "_state_dict_pre_hooks",
               "_load_state_dict_pre_hooks", "_load_state_dict_post_hooks")

# Methods of torch's classes that a subclass may redefine and still be converted: they build or
# describe the layer, and a twin is built by its own constructor from the original's attributes.
_MAY_OVERRIDE = frozenset({"__init__", "__repr__", "extra_repr", "_get_name", "reset_parameters",
                           "reset_running_stats"})

# Instance attributes that are not carried to the twin: what Module.compile() stores, a compiled
# call of the original's own code.
_NOT_CARRIED = frozenset({"_compiled_call_impl"})

_TWINS_MODULE = tco_nn.__name__
_MISSING = object()


def _torch_base(cls: type) -> Optional[type]:
    """The first class in `cls`'s MRO that is a torch.nn class of the table, or None."""
    for c in cls.__mro__:
        if c.__name__ in _BUILDERS and getattr(torch.nn, c.__name__, None) is c:
            return c
    return None


def _lookup(cls: type, name: str):
    for c in cls.__mro__:
        if name in vars(c):
            return vars(c)[name]
    return _MISSING


@functools.lru_cache(maxsize=None)
def _methods(base: type) -> frozenset:
    """The methods (functions, static and class methods, properties) that torch's class `base`
    and its bases up to torch.nn.Module define, less those in _MAY_OVERRIDE."""
    return frozenset(name for c in base.__mro__ if c is not object for name, v in vars(c).items()
                     if callable(v) or isinstance(v, (staticmethod, classmethod, property))) - _MAY_OVERRIDE


def _overridden(cls: type, base: type) -> Tuple[str, ...]:
    """The methods of torch's class `base` that subclass `cls` redefines, ``forward`` first.

    Every method counts except those in _MAY_OVERRIDE: ``forward`` and what it calls
    (``_conv_forward`` of convolutions, ``_check_input_dim`` of batch norm, the
    ``_handle_no_batch_input`` / ``_apply_instance_norm`` of instance norm, ...), and also what
    state handling, hooks and device moves go through (``_load_from_state_dict``,
    ``get_extra_state``, ``_apply``, ``__call__``, ...), since the twin runs torch's or its own.
    """
    names = (n for n in _methods(base) if _lookup(cls, n) is not _lookup(base, n))
    return tuple(sorted(names, key=lambda n: (n != "forward", n)))


def _build(module: torch.nn.Module, base: type, twin_cls: type):
    builder = _BUILDERS[base.__name__]
    try:
        return builder(twin_cls, module, _META)
    except (NotImplementedError, RuntimeError):
        # A constructor that computes with its tensors cannot run on meta: build it for real.
        return builder(twin_cls, module, {})


def _twin_of(module: torch.nn.Module) -> Tuple[Optional[torch.nn.Module], Optional[str]]:
    """``(twin, None)`` with the twin of `module` carrying its tensors and attributes,
    ``(None, reason)`` for a layer of a class with a twin that is left as it is, and
    ``(None, None)`` for every other module."""
    cls = type(module)
    base = _torch_base(cls)
    if base is None or any(c.__module__ == _TWINS_MODULE or c.__module__.startswith(_TWINS_MODULE + ".")
                           for c in cls.__mro__):
        return None, None  # not a torch.nn layer with a twin, or a twin (or derived from one)
    name = base.__name__
    twin_cls = getattr(tco_nn, name, None)  # looked up now: families may land after this module
    if twin_cls is None:
        return None, f"torch_cnn_ops.nn has no {name}"
    if isinstance(module, LazyModuleMixin) and module.has_uninitialized_params():
        return None, f"{cls.__name__} is a lazy module whose parameters are not initialized yet"
    if parametrize.is_parametrized(module):
        return None, (f"{cls.__name__} has parametrizations ({', '.join(module.parametrizations)}) "
                      "from torch.nn.utils.parametrize")
    if cls is not base:
        overridden = _overridden(cls, base)
        if overridden:
            return None, f"{cls.__name__} overrides {', '.join(overridden)} of torch.nn.{name}"
    on_instance = sorted(n for n in module.__dict__ if n in _methods(base))
    if on_instance:
        return None, f"{', '.join(on_instance)} set on the instance"
    try:
        twin = _build(module, base, twin_cls)
    except (AttributeError, TypeError, ValueError) as e:
        return None, f"its twin could not be built from its attributes: {type(e).__name__}: {e}"
    if set(twin._parameters) != set(module._parameters) or set(twin._buffers) != set(module._buffers):
        # e.g. torch.nn.utils.weight_norm renames the weight; the twin could not hold that state.
        reason = (f"{cls.__name__} with parameters {sorted(module._parameters)} and buffers "
                  f"{sorted(module._buffers)} was left as it is: its twin holds "
                  f"{sorted(twin._parameters)} and {sorted(twin._buffers)}")
        warnings.warn(f"convert: {reason}", stacklevel=3)
        return None, reason
    _carry(module, twin)
    return twin, None


def _carry(module: torch.nn.Module, new: torch.nn.Module, not_carried: frozenset = frozenset()) -> None:
    """Gives `new` (just built from `module`'s constructor arguments) `module`'s state: the very
    parameters and buffers, not copies (requires_grad, device, dtype and optimizer references
    stay), submodules, hooks, the training flag, and every other instance attribute `module` has
    and `new` does not (set by a subclass's constructor or by the user, e.g. ``layer.tag = 3``;
    the same objects), except those in `not_carried`."""
    new._parameters.update(module._parameters)
    new._buffers.update(module._buffers)
    new._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    new._modules.update(module._modules)  # submodules a subclass added (converted by the caller)
    for attr in _HOOK_DICTS:
        if attr in module.__dict__:
            setattr(new, attr, module.__dict__[attr])
    new.training = module.training
    for key, value in module.__dict__.items():
        if key not in new.__dict__ and key not in _NOT_CARRIED and key not in not_carried:
            new.__dict__[key] = value


def _convert(module: torch.nn.Module, prefix: str, memo: Dict[int, torch.nn.Module], report: Report,
             swap: Callable = _twin_of) -> torch.nn.Module:
    """Replaces `module` and its submodules by what `swap` gives (``(new, None)``, ``(None,
    reason)`` for a layer left as it is, ``(None, None)`` for other modules)."""
    key = id(module)
    if key in memo:  # a layer used at several places stays one (shared) layer
        return memo[key]
    twin, reason = swap(module)
    if twin is not None:
        report.append(Replacement(prefix, type(module), type(twin)))
        module = twin
    elif reason is not None:
        report.skipped.append(Skipped(prefix, type(module), reason))
    memo[key] = module
    for child_name, child in list(module._modules.items()):
        if child is not None:
            new = _convert(child, f"{prefix}.{child_name}" if prefix else child_name, memo, report, swap)
            if new is not child:
                module._modules[child_name] = new
    return module


def _swap_layers(fn: str, model, inplace, return_report: bool, swap: Callable):
    """convert / unconvert (`fn`, for the messages): the argument checks, the copy, the walk."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"{fn}: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"{fn}: inplace must be a bool, got {type(inplace).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report = Report()
    converted = _convert(model, "", {}, report, swap)
    return (converted, report) if return_report else converted


def convert(model: torch.nn.Module, inplace: bool = False, *, return_report: bool = False
            ) -> Union[torch.nn.Module, Tuple[torch.nn.Module, Report]]:
    """Replaces every torch.nn layer that has a twin in :mod:`torch_cnn_ops.nn` by that twin.

    Converted: ``Conv1d/2d/3d`` (every ``padding_mode``), ``MaxPool``, ``AvgPool``, ``LPPool``,
    ``AdaptiveMaxPool`` and ``AdaptiveAvgPool`` in 1d/2d/3d and, where ``torch_cnn_ops.nn`` has
    them, ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, ``GroupNorm``, ``LayerNorm`` and
    ``InstanceNorm1d/2d/3d``, and their subclasses that keep torch's code: a subclass is converted
    when it redefines no method of torch's class other than ``__init__``, ``__repr__``,
    ``extra_repr``, ``_get_name``, ``reset_parameters`` and ``reset_running_stats`` (so
    ``forward`` and what it calls, such as ``_conv_forward`` or ``_check_input_dim``, are
    torch's), e.g. torchvision's ``Conv3DSimple(nn.Conv3d)``, which only has its own constructor.
    A subclass that redefines more, a layer with such a method set on the instance, a
    parametrized or uninitialized lazy layer, one whose parameters the twin cannot hold (e.g.
    after ``torch.nn.utils.weight_norm``, which also warns) and a class whose twin is missing stay
    as they are and are reported as skipped. Everything else, and every module's own code, stays.

    A twin is an instance of the twin class itself (``type(layer) is tco.nn.Conv3d``). It takes
    every constructor argument, the parameters and buffers themselves (so ``requires_grad``,
    device and dtype), the training flag, the hooks and the other instance attributes of the
    layer it replaces (e.g. ``layer.tag = 3``, or what a subclass's constructor stored; the same
    objects, except names the twin itself uses), and submodules a subclass added; methods and
    class attributes a subclass defines are not carried over. Outputs and gradients equal the
    original's up to rounding. A layer used at several places becomes one twin used there.

    Args:
        model: any module (a layer on its own is converted too: use the returned object).
        inplace: ``False`` converts a ``copy.deepcopy`` and leaves ``model`` untouched; ``True``
            replaces the layers inside ``model`` itself, so optimizers built on its parameters
            keep working.
        return_report: also return a :class:`Report`: the list of :class:`Replacement`
            (``name``, ``original`` and ``twin`` class) of the layers replaced, in module order,
            whose ``skipped`` attribute lists the layers left as they were, as :class:`Skipped`
            (``name``, ``original`` class and ``reason``).

    Returns:
        The converted model, or ``(model, report)`` with ``return_report=True``.

    Example::

        >>> class Conv3DSimple(torch.nn.Conv3d):
        ...     def __init__(self, in_planes, out_planes):
        ...         super().__init__(in_planes, out_planes, 3, padding=1, bias=False)
        >>> class Scaled(torch.nn.Conv2d):
        ...     def forward(self, x):
        ...         return 2 * super().forward(x)
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        >>> fast, report = tco.convert(net, return_report=True)
        >>> [(r.name, r.twin.__name__) for r in report]
        [('0', 'Conv2d'), ('2', 'MaxPool2d')]
        >>> type(fast[0]).__module__, type(net[0]).__module__
        ('torch_cnn_ops.nn.conv', 'torch.nn.modules.conv')
        >>> fast, report = tco.convert(torch.nn.Sequential(Conv3DSimple(3, 4), Scaled(3, 3, 1)), return_report=True)
        >>> [(r.name, r.original.__name__, r.twin.__name__) for r in report]
        [('0', 'Conv3DSimple', 'Conv3d')]
        >>> [(s.name, s.reason) for s in report.skipped]
        [('1', 'Scaled overrides forward of torch.nn.Conv2d')]
    """
    return _swap_layers("convert", model, inplace, return_report, _twin_of)


def _original_of(module: torch.nn.Module) -> Tuple[Optional[torch.nn.Module], Optional[str]]:
    """The torch.nn layer of a twin (``_twin_of`` the other way), or why there is none."""
    cls = type(module)
    name = cls.__name__
    torch_cls = getattr(torch.nn, name, None)
    if not (cls.__module__.startswith(_TWINS_MODULE + ".") and name in _BUILDERS and torch_cls is not None
            and getattr(tco_nn, name, None) is cls):
        return None, None  # not a twin (a subclass of one, or another module)
    if getattr(module, "flip", False):
        return None, f"{name} with flip=True (true convolution) has no torch.nn twin"
    padding = getattr(module, "padding", None)
    if isinstance(padding, str) and "Pool" in name:
        return None, f"{name} with padding={padding!r} has no torch.nn twin (torch's pooling takes no padding string)"
    if padding == "full":
        return None, f"{name} with padding='full' has no torch.nn twin"
    if padding == "same" and any(s != 1 for s in getattr(module, "stride", (1,))):
        return None, f"{name} with padding='same' and a stride has no torch.nn twin"
    try:
        original = _build(module, torch_cls, torch_cls)
    except (AttributeError, TypeError, ValueError) as e:
        return None, f"torch.nn.{name} could not be built from its attributes: {type(e).__name__}: {e}"
    # What the twin's own constructor sets (algorithm, flip, ...) stays behind; what the user or
    # convert carried over goes along.
    twin_own = frozenset(vars(_build(module, torch_cls, cls))) - frozenset(vars(original))
    _carry(module, original, twin_own)
    return original, None


def unconvert(model: torch.nn.Module, inplace: bool = False, *, return_report: bool = False
              ) -> Union[torch.nn.Module, Tuple[torch.nn.Module, Report]]:
    """The reverse of :func:`convert`: replaces every twin layer of :mod:`torch_cnn_ops.nn` that
    has a torch.nn class of the same name by that class, for tools that accept only torch's
    layers. The new layer takes the twin's constructor arguments, its very parameters and
    buffers, hooks, training flag and other instance attributes (as ``convert`` does); the
    twin's own arguments (``algorithm``) are dropped, so torch's algorithm runs. Layers that use
    what torch lacks (``flip=True``, ``padding="full"``, ``padding="same"`` with a stride or in pooling),
    subclasses of twins and the families torch has no class for (tiled and unshared
    convolution, min, k-max, stochastic and Gaussian pooling) stay as they are; the first are
    reported as skipped. ``unconvert(convert(model))`` gives back torch's classes with the same
    state and outputs.

    Args and returns: as :func:`convert` (``return_report=True`` adds a :class:`Report` whose
    entries' ``original`` is the twin class and ``twin`` the torch.nn class).
    """
    return _swap_layers("unconvert", model, inplace, return_report, _original_of)
