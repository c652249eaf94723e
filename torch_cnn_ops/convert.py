"""``convert``: swap the torch.nn layers of a model for their twins in ``torch_cnn_ops.nn``.

The table below maps a torch.nn class name to a function that builds the twin from the
original's attributes (every constructor argument, so ``padding_mode``, ``return_indices``,
``ceil_mode``, ``divisor_override``, ... are kept). The twin class is looked up by the same name
in ``torch_cnn_ops.nn`` when ``convert`` runs, so a family that is not there (yet) is simply
left as torch's.
"""

import copy
import warnings
from typing import Callable, Dict, List, NamedTuple, Tuple, Union

import torch

from . import nn as tco_nn

__all__ = ["convert", "Replacement"]


class Replacement(NamedTuple):
    """One layer ``convert`` swapped: its qualified ``name`` in the model (``""`` for the model
    itself) and the classes before and after."""

    name: str
    original: type
    twin: type


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
    # torch >= 2.7 can drop the bias of an affine norm layer; pass the flag only then, so that
    # the call also works on older torch and on twins that mirror an older constructor.
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


def _twin_of(module: torch.nn.Module):
    """The twin of `module`, carrying its tensors, or None when there is none to make."""
    name = type(module).__name__
    builder = _BUILDERS.get(name)
    # Exactly the torch.nn class: a subclass (ours included) may have its own forward or state.
    if builder is None or type(module) is not getattr(torch.nn, name, None):
        return None
    twin_cls = getattr(tco_nn, name, None)  # looked up now: families may land after this module
    if twin_cls is None:
        return None
    try:
        twin = builder(twin_cls, module, _META)
    except (NotImplementedError, RuntimeError):
        # A constructor that computes with its tensors cannot run on meta: build it for real.
        twin = builder(twin_cls, module, {})
    if set(twin._parameters) != set(module._parameters) or set(twin._buffers) != set(module._buffers):
        # e.g. torch.nn.utils.weight_norm renames the weight; the twin could not hold that state.
        warnings.warn(f"convert: {name} with parameters {sorted(module._parameters)} and buffers "
                      f"{sorted(module._buffers)} was left as torch's: its twin holds "
                      f"{sorted(twin._parameters)} and {sorted(twin._buffers)}", stacklevel=3)
        return None
    # The very tensors, not copies: requires_grad, device, dtype and optimizer references stay.
    twin._parameters.update(module._parameters)
    twin._buffers.update(module._buffers)
    twin._non_persistent_buffers_set = set(module._non_persistent_buffers_set)
    for attr in _HOOK_DICTS:
        if attr in module.__dict__:
            setattr(twin, attr, module.__dict__[attr])
    twin.training = module.training
    return twin


def _convert(module: torch.nn.Module, prefix: str, memo: Dict[int, torch.nn.Module],
             report: List[Replacement]) -> torch.nn.Module:
    key = id(module)
    if key in memo:  # a layer used at several places stays one (shared) layer
        return memo[key]
    twin = _twin_of(module)
    if twin is not None:
        report.append(Replacement(prefix, type(module), type(twin)))
        memo[key] = twin
        return twin
    memo[key] = module
    for child_name, child in list(module._modules.items()):
        if child is not None:
            new = _convert(child, f"{prefix}.{child_name}" if prefix else child_name, memo, report)
            if new is not child:
                module._modules[child_name] = new
    return module


def convert(model: torch.nn.Module, inplace: bool = False, *, return_report: bool = False
            ) -> Union[torch.nn.Module, Tuple[torch.nn.Module, List[Replacement]]]:
    """Replaces every torch.nn layer that has a twin in :mod:`torch_cnn_ops.nn` by that twin.

    Converted: ``Conv1d/2d/3d`` (every ``padding_mode``), ``MaxPool``, ``AvgPool``, ``LPPool``,
    ``AdaptiveMaxPool`` and ``AdaptiveAvgPool`` in 1d/2d/3d and, where ``torch_cnn_ops.nn`` has
    them, ``BatchNorm1d/2d/3d``, ``SyncBatchNorm``, ``GroupNorm``, ``LayerNorm`` and
    ``InstanceNorm1d/2d/3d``. Only instances of exactly those classes are replaced (a subclass may
    change the forward); everything else, and every module's own code, stays. A twin takes every
    constructor argument, the parameters and buffers themselves (so ``requires_grad``, device and
    dtype), the training flag and the hooks of the layer it replaces; outputs and gradients equal
    the original's up to rounding. A layer used at several places becomes one twin used there.

    Args:
        model: any module (a layer on its own is converted too: use the returned object).
        inplace: ``False`` converts a ``copy.deepcopy`` and leaves ``model`` untouched; ``True``
            replaces the layers inside ``model`` itself, so optimizers built on its parameters
            keep working.
        return_report: also return the list of :class:`Replacement` (``name``, ``original`` and
            ``twin`` class) of the layers replaced, in module order.

    Returns:
        The converted model, or ``(model, report)`` with ``return_report=True``.

    Example::

        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2))
        >>> fast, report = tco.convert(net, return_report=True)
        >>> [(r.name, r.twin.__name__) for r in report]
        [('0', 'Conv2d'), ('2', 'MaxPool2d')]
        >>> type(fast[0]).__module__, type(net[0]).__module__
        ('torch_cnn_ops.nn.conv', 'torch.nn.modules.conv')
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"convert: expected a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(inplace, bool):
        raise TypeError(f"convert: inplace must be a bool, got {type(inplace).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report: List[Replacement] = []
    converted = _convert(model, "", {}, report)
    return (converted, report) if return_report else converted
