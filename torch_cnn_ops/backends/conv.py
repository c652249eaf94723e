"""Convolution algorithms: autotuning and a record of the algorithm each call runs.

As ``torch.backends.cudnn.benchmark`` for cuDNN:

* ``benchmark`` (default False): when True, the first convolution call with
  ``algorithm="auto"`` for each key (the input's and weight's sizes and strides, hence their
  layouts; dtype; device; stride, padding, dilation and groups; whether there is a bias and
  whether autograd records the call) times every applicable algorithm once (the forward, and
  both gradients where autograd records the call) and caches the fastest; later calls with
  that key run it. The candidates are the algorithms accurate to float32 tolerances: aten,
  im2col, shifted, winograd_2x2 and, with at most 16 input channels per group, direct
  (winograd_4x4 and winograd_6x6 trade accuracy for speed and run only when asked for). The
  cache is shared by all threads and filled under a lock. Calls in traced or compiled code
  (torch.compile, torch.jit tracing, torch.func transforms, fake or meta tensors) keep
  ``"auto"``'s rule.
* ``record()``: a context manager that collects, for every convolution call of this thread in
  it, the algorithm its forward ran (``"auto"`` resolved, by the rule or the benchmark). The
  rule resolves each pass on its own: on the CPU, depthwise 5x5 layers at stride 1 on planes
  of 14x14 or more (on Intel's CPUs also grouped 3x3 ones of 3 or 4 channels per group) run
  their weight gradient ``direct`` while the forward runs ``aten``; a benchmark's choice
  serves all three passes.
* ``algorithm_for(input, weight, ...)``: the algorithm a call with these arguments runs now.
* ``cache()`` and ``clear_cache()``: the benchmark's choices.

Example::

    >>> tco.backends.conv.benchmark = True
    >>> with tco.backends.conv.record() as calls:
    ...     y = model(x)
    >>> [c.algorithm for c in calls]
    ['winograd_2x2', 'shifted', ...]
"""

import threading
import time
from contextlib import contextmanager
from typing import Dict, Iterator, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["benchmark", "record", "ConvCall", "algorithm_for", "cache", "clear_cache"]

benchmark: bool = False

# Tried in this order; where two are equally fast the earlier is kept.
CANDIDATES = ("aten", "winograd_2x2", "shifted", "im2col", "direct")
# The direct kernels loop over kernel taps per input channel: with more channels per group they
# run tens of times torch's time (csrc/conv/conv_common.h), not worth timing.
DIRECT_MAX_CHANNELS = 16

_lock = threading.Lock()
_cache: Dict[tuple, str] = {}
_local = threading.local()  # .recorders: the lists of this thread's open record() blocks
# The number of open record() blocks in all threads: while none is open, calls need not look
# at this thread's (torch_cnn_ops.functional.conv's fast path).
_open_records = 0


class ConvCall(NamedTuple):
    """One convolution call seen by ``record()``."""

    input_shape: Tuple[int, ...]
    weight_shape: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[Tuple[int, ...], Tuple[int, ...]]  # (leading pads, trailing pads)
    dilation: Tuple[int, ...]
    groups: int
    requested: str  # the ``algorithm`` argument
    algorithm: str  # what the forward ran
    tuned: bool  # chosen by the benchmark


@contextmanager
def record() -> Iterator[List[ConvCall]]:
    """Collects a ``ConvCall`` for every convolution call of this thread inside the block."""
    global _open_records
    calls: List[ConvCall] = []
    stack = _local.__dict__.setdefault("recorders", [])
    stack.append(calls)
    with _lock:
        _open_records += 1
    try:
        yield calls
    finally:
        del stack[next(i for i, c in enumerate(stack) if c is calls)]  # by identity: equal lists may nest
        with _lock:
            _open_records -= 1


def cache() -> Dict[tuple, str]:
    """A copy of the benchmark's choices, by key."""
    with _lock:
        return dict(_cache)


def clear_cache() -> None:
    with _lock:
        _cache.clear()


def _args(stride, pad_lo, pad_hi, dilation, groups) -> tuple:
    return list(stride), list(pad_lo), list(pad_hi), list(dilation), groups


def algorithm_for(input: Tensor, weight: Tensor, stride, pad_lo, pad_hi, dilation, groups: int,
                  algorithm: str = "auto", bias: Optional[Tensor] = None) -> str:
    """The algorithm that ``torch.ops.cnn_ops.conv_forward`` with these arguments runs now
    (``"auto"`` resolved by its rule, or by the benchmark where ``benchmark`` is on; the padding
    as the op takes it: per dimension the leading and the trailing pads)."""
    args = _args(stride, pad_lo, pad_hi, dilation, groups)
    if benchmark and algorithm == "auto" and _plain(input, weight, bias):
        algorithm = _tuned(input, weight, bias, args)
    return torch.ops.cnn_ops.conv_algorithm(input, weight, *args, algorithm)


def _active() -> bool:
    """Whether convolution calls must come here (cheap: checked on every call)."""
    return benchmark or (_open_records > 0 and bool(getattr(_local, "recorders", None)))


def _plain(*tensors: Optional[Tensor]) -> bool:
    """Real tensors in eager code: what can be timed and recorded."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        return False
    for t in tensors:
        if t is None:
            continue
        if isinstance(t, torch._subclasses.FakeTensor) or t.device.type == "meta":
            return False
        if torch._C._functorch.is_functorch_wrapped_tensor(t):
            return False
    return True


def _resolve(input, weight, bias, stride, pad_lo, pad_hi, dilation, groups, algorithm) -> str:
    """The algorithm one call passes to the op (the benchmark's choice for "auto" where it is on),
    recorded where a record() block is open."""
    if not _plain(input, weight, bias):
        return algorithm
    args = _args(stride, pad_lo, pad_hi, dilation, groups)
    tuned = benchmark and algorithm == "auto"
    chosen = _tuned(input, weight, bias, args) if tuned else algorithm
    recorders = getattr(_local, "recorders", None)
    if recorders:
        ran = torch.ops.cnn_ops.conv_algorithm(input, weight, *args, chosen)
        call = ConvCall(tuple(input.shape), tuple(weight.shape), tuple(stride), (tuple(pad_lo), tuple(pad_hi)),
                        tuple(dilation), groups, algorithm, ran, tuned)
        for calls in recorders:
            calls.append(call)
    return chosen


def _tuned(input, weight, bias, args) -> str:
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (input, weight, bias))
    key = (tuple(input.shape), input.stride(), tuple(weight.shape), weight.stride(), input.dtype, input.device,
           bias is not None, grad, tuple(map(tuple, args[:4])), args[4])
    with _lock:
        if key not in _cache:
            _cache[key] = _fastest(input.detach(), weight.detach(), None if bias is None else bias.detach(), args,
                                   grad)
        return _cache[key]


def _fastest(input, weight, bias, args, grad) -> str:
    ops = torch.ops.cnn_ops
    stride, pad_lo, _, dilation, groups = args
    timings: Dict[str, float] = {}
    with torch.no_grad():
        grad_output = torch.ones_like(ops.conv_forward(input, weight, bias, *args, "aten"))
        for candidate in CANDIDATES:
            try:  # refused where it does not apply (shifted with a stride, Winograd off 3x3)
                ran = ops.conv_algorithm(input, weight, *args, candidate)
            except RuntimeError:
                continue
            if ran in timings or (ran == "direct" and weight.shape[1] > DIRECT_MAX_CHANNELS):
                continue  # the same as an earlier candidate (CUDA runs shifted as im2col), or too slow

            def step(algorithm=ran):
                ops.conv_forward(input, weight, bias, *args, algorithm)
                if grad:
                    ops.conv_input_backward(grad_output, weight, list(input.shape), stride, pad_lo, dilation, groups,
                                            algorithm)
                    ops.conv_weight_backward(grad_output, input, list(weight.shape), stride, pad_lo, dilation,
                                             groups, algorithm)

            timings[ran] = _seconds(step, input.device)
    return min(timings, key=timings.get)


def _seconds(step, device, repeats: int = 3) -> float:
    """The fastest of `repeats` timed runs, after one untimed."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    step()
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        best = min(best, time.perf_counter() - start)
    return best
