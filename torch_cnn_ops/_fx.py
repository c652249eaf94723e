"""torch.fx support: our functions as leaves of symbolic tracing.

``torch.fx.symbolic_trace`` runs a forward with ``torch.fx.Proxy`` objects in place of tensors
and records what is done to them. Our functionals check their arguments and branch on shapes
in Python, which a Proxy cannot answer, and end in ``torch.ops.cnn_ops`` calls that need real
tensors. A function decorated with :func:`leaf` therefore records itself as one
``call_function`` node, whose target is the function itself, whenever any of its arguments
(also inside a list, tuple or dict) is a Proxy; the traced ``GraphModule`` calls it with real
tensors later.

``torch.fx.wrap`` makes leaves too, but only by patching the globals of the module that calls
it while a trace runs, so a call through another name (``tco.F.conv2d``, a module's
``F.max_pool2d``) is traced into. Looking at the arguments works however the function is
reached, and for every tracer that hands out Proxies.
"""

import functools
from typing import Any, Callable, Optional, TypeVar

import torch
from torch._C import _has_torch_function
from torch.fx import Proxy, _symbolic_trace
from torch.fx.node import Node

__all__ = ["leaf", "find_proxy", "traced_attr"]

_Fn = TypeVar("_Fn", bound=Callable[..., Any])


def find_proxy(values) -> Optional[Proxy]:
    """The first ``torch.fx.Proxy`` among ``values``, looking into lists, tuples and dicts; or None."""
    for value in values:
        if isinstance(value, Proxy):
            return value
        if isinstance(value, (list, tuple)):
            found = find_proxy(value)
        elif isinstance(value, dict):
            found = find_proxy(value.values())
        else:
            continue
        if found is not None:
            return found
    return None


def leaf(fn: _Fn) -> _Fn:
    """Makes ``fn`` a leaf of torch.fx tracing: called with a Proxy among its arguments, it
    returns the Proxy of a ``call_function`` node whose target is the decorated function;
    otherwise it runs ``fn``. Name, docstring, signature (``__wrapped__``) and module are
    ``fn``'s, so the node's target is importable by the name the function is public under.

    Cost per call: the arguments are searched for a Proxy, lists, tuples and dicts included,
    only while a ``torch.fx.Tracer`` traces (torch's ``_is_fx_tracing_flag``). At other times
    (a graph built by hand with Proxies of a ``GraphAppendingTracer``, say) a Proxy is found
    as an argument itself, by torch's C check for ``__torch_function__`` overrides, which
    passes plain tensors and Python values at once. ``torch.compile`` traces through both
    checks (dynamo folds them to constants), so the graph does not break.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        if (_symbolic_trace._is_fx_tracing_flag or _has_torch_function(args)
                or (kwargs and _has_torch_function(list(kwargs.values())))):
            proxy = find_proxy((*args, *kwargs.values()))
            if proxy is not None:
                return proxy.tracer.create_proxy("call_function", wrapper, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def traced_attr(module: torch.nn.Module, name: str, like: Any) -> Any:
    """``getattr(module, name)``; while ``like`` is a Proxy and that attribute a tensor, a
    Proxy of a ``get_attr`` node that reads it instead.

    torch.fx hands a module's buffers to its forward as the tensors themselves (unless the
    tracer sets ``proxy_buffer_attributes``), so reading a buffer's value in Python, or
    passing it alone to a leaf, would happen once while tracing instead of every time the graph
    runs. Through this Proxy, leaves that take the buffer are recorded and read it at run time.
    """
    value = getattr(module, name)
    if not isinstance(like, Proxy) or not isinstance(value, torch.Tensor):
        return value
    tracer = like.tracer
    node = tracer.create_arg(value)  # a get_attr node for the module's buffer
    return tracer.proxy(node) if isinstance(node, Node) else value
