"""torch.fx support: our functions as leaves of symbolic tracing.

``torch.fx.symbolic_trace`` runs a forward with ``torch.fx.Proxy`` objects in place of tensors
and records what is done to them. Our functionals check their arguments and branch on shapes
in Python, which a Proxy cannot answer, and end in ``torch.ops.cnn_ops`` calls that need real
tensors. A function decorated with :func:`leaf` therefore records itself as one
``call_function`` node, whose target is the function itself, whenever any of its arguments
is a Proxy (also inside a list, tuple or dict, while a ``torch.fx.Tracer`` traces); the traced
``GraphModule`` calls it with real tensors later.

``torch.fx.wrap`` makes leaves too, but only by patching the globals of the module that calls
it while a trace runs, so a call through another name (``tco.F.conv2d``, a module's
``F.max_pool2d``) is traced into. Looking at the arguments works however the function is
reached, and for every tracer that hands out Proxies.
"""

import functools
import inspect
import linecache
import types
from typing import Any, Callable, Optional, TypeVar

import torch
from torch._C import _has_torch_function
from torch.fx import Proxy, _symbolic_trace
from torch.fx.node import Node

__all__ = ["leaf", "named_leaf", "find_proxy", "traced_attr", "untraced"]

_Fn = TypeVar("_Fn", bound=Callable[..., Any])

# torch.fx.Tracer.trace sets _symbolic_trace._is_fx_tracing_flag while it runs (torch 1.13 on).
# Were it gone, every call would search its arguments: slower, never wrong.
if not hasattr(_symbolic_trace, "_is_fx_tracing_flag"):
    _symbolic_trace = types.SimpleNamespace(_is_fx_tracing_flag=True)  # noqa: F811


def untraced(*values) -> bool:
    """Whether a call with these arguments runs a leaf's body rather than recording it: no
    ``torch.fx.Tracer`` traces and none of them overrides ``__torch_function__`` (a Proxy, a
    tensor subclass); the test of :func:`leaf`'s wrapper. For callers that skip the wrapper on
    their hot path."""
    return not (_symbolic_trace._is_fx_tracing_flag or _has_torch_function(values))


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
    returns the Proxy of a ``call_function`` node whose target is the decorated function (the
    node holds every parameter, defaults filled in: positional ones as ``args``, keyword-only
    ones as ``kwargs``); otherwise it runs ``fn``. Name, docstring, module, ``__wrapped__``
    and so the signature are ``fn``'s, so the node's target is importable by the name the
    function is public under.

    Cost per call: the arguments are searched for a Proxy, lists, tuples and dicts included,
    only while a ``torch.fx.Tracer`` traces (torch's ``_is_fx_tracing_flag``). At other times
    (a graph built by hand with Proxies of a ``GraphAppendingTracer``, say) a Proxy is found
    as an argument itself, by torch's C check for ``__torch_function__`` overrides, which
    passes plain tensors and Python values at once. ``torch.compile`` traces through both
    checks (dynamo folds them to constants), so the graph does not break.

    The wrapper is compiled with ``fn``'s own parameter list, so that a call costs one more
    Python call with the same arguments: a generic ``*args, **kwargs`` wrapper costs about as
    much again to pack and unpack keyword arguments, several tenths of a microsecond.
    Functions with ``*args`` or ``**kwargs`` get the generic one.
    """
    wrapper = _explicit_wrapper(fn)
    if wrapper is None:
        wrapper = _generic_wrapper(fn)
    return functools.update_wrapper(wrapper, fn)  # type: ignore[return-value]


def named_leaf(fn: _Fn, name: str, doc: Optional[str] = None) -> _Fn:
    """:func:`leaf` of ``fn`` under the public ``name`` and docstring ``doc``, for a function that
    one factory makes for several public functions (``conv1d`` to ``conv3d``, say, differing
    only in the number of spatial dimensions). Name and qualified name are set before
    :func:`leaf` copies them, so that the node's target, ``help()`` and pickling find the function
    by the name its module publishes it under; the signature is ``fn``'s own parameter list."""
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return leaf(fn)


def _generic_wrapper(fn):
    def wrapper(*args, **kwargs):
        if (_symbolic_trace._is_fx_tracing_flag or _has_torch_function(args)
                or (kwargs and _has_torch_function(list(kwargs.values())))):
            proxy = find_proxy((*args, *kwargs.values()))
            if proxy is not None:
                return proxy.tracer.create_proxy("call_function", wrapper, args, kwargs)
        return fn(*args, **kwargs)

    return wrapper


_HELPERS = ("_fn", "_leaf", "_proxy", "_symbolic_trace", "_has_torch_function", "_find_proxy")


def _explicit_wrapper(fn):
    """The wrapper of :func:`leaf` as a function with ``fn``'s parameters (names, kinds and the
    very default objects), or None where ``fn`` has ``*args`` or ``**kwargs``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name in _HELPERS for p in params):
        return None
    namespace = {"_fn": fn, "_symbolic_trace": _symbolic_trace, "_has_torch_function": _has_torch_function,
                 "_find_proxy": find_proxy}
    header, positional, keyword = [], [], []
    for i, p in enumerate(params):
        if p.kind is p.KEYWORD_ONLY and not keyword:
            if positional and params[i - 1].kind is p.POSITIONAL_ONLY:
                header.append("/")
            header.append("*")
        elif p.kind is p.POSITIONAL_OR_KEYWORD and i > 0 and params[i - 1].kind is p.POSITIONAL_ONLY:
            header.append("/")
        entry = p.name
        if p.default is not p.empty:
            namespace[f"_default{i}"] = p.default
            entry += f"=_default{i}"
        header.append(entry)
        (keyword if p.kind is p.KEYWORD_ONLY else positional).append(p.name)
    if params and params[-1].kind is params[-1].POSITIONAL_ONLY:
        header.append("/")
    every = "(" + "".join(f"{n}, " for n in positional + keyword) + ")"
    args = "(" + "".join(f"{n}, " for n in positional) + ")"
    kwargs = "{" + ", ".join(f"{n!r}: {n}" for n in keyword) + "}"
    call = ", ".join(positional + [f"{n}={n}" for n in keyword])
    source = (
        f"def {fn.__name__}({', '.join(header)}):\n"
        f"    if _symbolic_trace._is_fx_tracing_flag or _has_torch_function({every}):\n"
        f"        _proxy = _find_proxy({every})\n"
        f"        if _proxy is not None:\n"
        f"            return _proxy.tracer.create_proxy('call_function', _leaf, {args}, {kwargs})\n"
        f"    return _fn({call})\n"
    )
    filename = f"<fx leaf {fn.__module__}.{fn.__qualname__}>"
    exec(compile(source, filename, "exec"), namespace)
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)  # for tracebacks
    wrapper = namespace[fn.__name__]
    namespace["_leaf"] = wrapper
    return wrapper


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
