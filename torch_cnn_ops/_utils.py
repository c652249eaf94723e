"""Argument normalisation shared by the functional API and the modules.

The rules are those of torch's argument parser for ``int`` and ``int[N]`` arguments, so
that our twins take and refuse what torch's functions do, with the same exception classes:

* an int is a Python int (not a bool), a NumPy integer or an integer tensor of one element
  (anything ``operator.index`` takes, bools excepted); anything else (a float, even ``2.0``,
  a bool, a string, None) is a ``TypeError``;
* an ``int[N]`` is one int (repeated) or a list / tuple of ints; a sequence of one is
  repeated too; a sequence of another length is a ``RuntimeError``, as torch's kernels raise
  for it;
* an int outside int64 (``2**63``, ``-2**63 - 1``) is a ``ValueError``, as torch's parser's
  "Overflow when unpacking long long" (the dispatcher would refuse it with a message about a
  list of another type);
* a bool argument (``ceil_mode``, ``count_include_pad``) must be a bool: torch's parser
  refuses ``0`` and ``1`` with a ``TypeError``.
"""

import operator
from typing import Sequence, Tuple, Union

IntOrTuple = Union[int, Sequence[int]]


def _where(fn: str) -> str:
    return f"{fn}(): " if fn else ""


def _kind(value) -> str:
    return f"{value!r} of type {type(value).__name__}"


_INT64_MIN, _INT64_END = -(2**63), 2**63


def _int64(value: int, name: str, fn: str, whole=None) -> int:
    """``value`` once it fits in int64, torch's integer type; a ValueError naming the argument otherwise."""
    if _INT64_MIN <= value < _INT64_END:
        return value
    shown = "" if whole is None or whole is value else f" (in {whole!r})"
    raise ValueError(f"{_where(fn)}argument '{name}' must fit in int64, got {value}{shown}")


def as_int(value, name: str, fn: str = "") -> int:
    """``value`` as an int, as torch's parser takes an ``int`` argument; a TypeError otherwise."""
    if type(value) is int:
        return _int64(value, name, fn)
    if not isinstance(value, bool):
        try:
            index = operator.index(value)
        except TypeError:
            pass
        else:
            return _int64(index, name, fn)
    raise TypeError(f"{_where(fn)}argument '{name}' must be an int, got {_kind(value)}")


def as_bool(value, name: str, fn: str = "") -> bool:
    """``value``, once it is a bool (torch's parser refuses ints, NumPy bools and tensors)."""
    if value is True or value is False:
        return value
    raise TypeError(f"{_where(fn)}argument '{name}' must be a bool, got {_kind(value)}")


def ntuple(value: IntOrTuple, n: int, name: str, fn: str = "") -> Tuple[int, ...]:
    """``value`` as an n-tuple of ints: an int is repeated, a sequence must have 1 (repeated)
    or n entries. A value or entry that is no int is a TypeError, a sequence of another length
    a RuntimeError; both messages name the argument, the function ``fn`` and the value."""
    kind = type(value)
    if kind is int and _INT64_MIN <= value < _INT64_END:
        return (value,) * n
    if (kind is tuple or kind is list) and len(value) == n:
        for v in value:
            if type(v) is not int or not _INT64_MIN <= v < _INT64_END:
                break
        else:
            return tuple(value)
    return _ntuple_slow(value, n, name, fn)


def _ntuple_slow(value, n: int, name: str, fn: str) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)):
        if isinstance(value, bool):
            raise TypeError(f"{_where(fn)}argument '{name}' must be an int or a tuple of {n} ints, got {_kind(value)}")
        try:
            index = operator.index(value)
        except TypeError:
            raise TypeError(f"{_where(fn)}argument '{name}' must be an int or a tuple of {n} ints, "
                            f"got {_kind(value)}") from None
        return (_int64(index, name, fn),) * n
    values = []
    for i, v in enumerate(value):
        if type(v) is not int:
            if isinstance(v, bool):
                v = None
            else:
                try:
                    v = operator.index(v)
                except TypeError:
                    v = None
            if v is None:
                raise TypeError(f"{_where(fn)}argument '{name}' must be an int or a tuple of {n} ints, got "
                                f"{value!r} whose entry {i} is {_kind(value[i])}")
        values.append(_int64(v, name, fn, value))
    return repeat_single(values, n, name, fn, value)


def repeat_single(values, n: int, name: str, fn: str, value) -> Tuple[int, ...]:
    """The entries ``values`` of the sequence argument ``value`` as an n-tuple: one entry is
    repeated, n are kept; any other number is torch's RuntimeError naming the argument."""
    if len(values) == 1:
        return tuple(values) * n
    if len(values) != n:
        raise RuntimeError(f"{_where(fn)}argument '{name}' must be an int or a tuple of {n} ints, got "
                           f"{len(values)} values: {value!r}")
    return tuple(values)


def batched(name: str, nd: int, input, details: str = ""):
    """``(input with a batch dimension, whether it was unbatched)`` for an input of ``nd``
    spatial dimensions, batched ``(N, C, *spatial)`` or unbatched ``(C, *spatial)``; any other
    rank is torch's RuntimeError, with ``details`` after the input's shape."""
    dim = input.dim()
    if dim == nd + 1:
        return input.unsqueeze(0), True
    if dim != nd + 2:
        raise RuntimeError(f"{name}(): expected a {nd + 1}-d (unbatched) or {nd + 2}-d (batched) input, "
                           f"got input of shape {tuple(input.shape)}{details}")
    return input, False


def check_floating(name: str, input, *params) -> None:
    """torch's NotImplementedError for an integer input of an op that has only floating-point
    kernels (ours are float32, float64, float16 and bfloat16). With parameters of another dtype
    than the input's, torch raises its dtype-mismatch RuntimeError first, which the op gives."""
    if input.is_floating_point() or any(p is not None and p.dtype != input.dtype for p in params):
        return
    raise NotImplementedError(f"{name}(): not implemented for input of dtype {input.dtype} (input of shape "
                              f"{tuple(input.shape)}): the input must be float32, float64, float16 or bfloat16")
