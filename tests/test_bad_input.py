"""Bad input: every family (conv, local, pool, norm) on each path a caller takes (the public
function of tco.F / tco.grad, the tco.nn module, the raw op torch.ops.cnn_ops.*, the raw op on
meta tensors and under FakeTensorMode) must raise a clear error of torch's class, naming the
argument and the shapes or values involved; never crash, hang, answer silently or change the
caller's tensors, parameters or buffers.

Each case runs in a forked grandchild of one child process (see the runner at the end), so that
a segfault, an abort or a hang fails that case alone. ``python tests/test_bad_input.py [WORD]``
prints every case's result, what it raised and what torch raised.
"""

import importlib.util
import json
import os
import re
import subprocess
import sys
from typing import NamedTuple, Optional

import pytest


class Case(NamedTuple):
    """``code``: statements run with ``torch``, ``tco``, ``F`` (tco.F), ``nn`` (tco.nn), ``grad``
    (tco.grad), ``ops`` (torch.ops.cnn_ops), ``TF`` / ``tnn`` / ``tgrad`` (torch's twins), ``r``
    (torch.randn), ``meta(*shape, dtype=)`` (an empty meta tensor), ``fake`` (a FakeTensorMode) and
    ``math`` in scope; the last line is the call that must raise, the lines before it the setup, whose
    tensors and modules (parameters and buffers) the failed call must leave unchanged.
    ``error``: the exception class's name. ``pattern``: a regex the message must contain.
    ``torch``: the same input given to torch's own layer (its last line must raise ``error`` too),
    or None where torch has no such layer or takes the input."""

    code: str
    error: str
    pattern: str
    torch: Optional[str] = None
    timeout: float = 60.0


# ``torch=TWIN``: torch's layer is the same code with tco's F / nn / grad replaced by torch's.
TWIN = "twin"
PATHS = {"F": "public function (tco.F, tco.grad)", "nn": "module (tco.nn)", "op": "raw op (torch.ops.cnn_ops)",
         "meta": "raw op on meta tensors", "fake": "under FakeTensorMode (torch.compile's tracing)"}


def _twin(code: str) -> str:
    return re.sub(r"(?<![\w.])(F|nn|grad)\.", lambda m: {"F": "TF.", "nn": "tnn.", "grad": "tgrad."}[m.group(1)], code)


def _table(family: str, rows) -> dict:
    """The cases of ``family`` from rows (path, name, code, error, pattern[, torch's code or TWIN])."""
    cases = {}
    for path, name, code, error, pattern, *rest in rows:
        assert path in PATHS, path
        torch_code = rest[0] if rest else None
        key = f"{family}-{path}-{name}"
        assert key not in cases, key
        cases[key] = Case(code, error, pattern, _twin(code) if torch_code == TWIN else torch_code)
    return cases


# ---- conv: F.conv1d/2d/3d (with padding="full" / "same", flip=True), tco.grad, nn.ConvNd, conv ops ---------
_X = "x = r(1, 2, 5, 5); w = r(3, 2, 3, 3)\n"  # a valid input and weight, checked unchanged after the call
_FWD = "ops.conv_forward({x}, {w}, {b}, {stride}, {pad}, {pad_end}, {dil}, {groups}, {algo})"


def _fwd(x="x", w="w", b="None", stride="[1, 1]", pad="[0, 0]", pad_end="[0, 0]", dil="[1, 1]", groups="1",
         algo="'auto'"):
    return _FWD.format(x=x, w=w, b=b, stride=stride, pad=pad, pad_end=pad_end, dil=dil, groups=groups, algo=algo)


_MX = "x = meta(1, 2, 5, 5); w = meta(3, 2, 3, 3)\n"

CONV = _table("conv", [
    # -- the public functions
    ("F", "input-1d", _X + "F.conv2d(r(5), w)", "RuntimeError", r"input of shape \(5,\)", TWIN),
    ("F", "input-0d", _X + "F.conv2d(torch.tensor(1.0), w)", "RuntimeError", r"input of shape \(\)", TWIN),
    ("F", "weight-3d", _X + "F.conv2d(x, r(3, 2, 3))", "RuntimeError", r"weight of shape \(3, 2, 3\)", TWIN),
    ("F", "empty-spatial", _X + "F.conv2d(r(1, 2, 0, 5), w)", "RuntimeError", r"kernel.*larger.*input", TWIN),
    ("F", "zero-kernel", _X + "F.conv2d(x, r(3, 2, 0, 3))", "RuntimeError", r"kernel size.*\[3, 2, 0, 3\]", TWIN),
    ("F", "kernel-larger-than-input", _X + "F.conv2d(r(1, 2, 2, 2), w)", "RuntimeError", r"kernel.*larger.*input",
     TWIN),
    ("F", "stride-0", _X + "F.conv2d(x, w, stride=0)", "RuntimeError", r"stride must be at least 1.*0", TWIN),
    ("F", "stride-negative", _X + "F.conv2d(x, w, stride=(1, -2))", "RuntimeError", r"stride.*-2", TWIN),
    ("F", "stride-float", _X + "F.conv2d(x, w, stride=1.5)", "TypeError", r"'stride'.*1\.5", TWIN),
    ("F", "stride-bool", _X + "F.conv2d(x, w, stride=True)", "TypeError", r"'stride'.*True", TWIN),
    ("F", "stride-3-entries", _X + "F.conv2d(x, w, stride=[1, 1, 1])", "RuntimeError", r"'stride'.*3 values",
     TWIN),
    ("F", "padding-negative", _X + "F.conv2d(x, w, padding=-1)", "RuntimeError", r"negative padding.*-1", TWIN),
    ("F", "padding-2**62", _X + "F.conv2d(x, w, padding=2**62)", "RuntimeError", r"padd.*overflows", TWIN),
    ("F", "padding-2**63-1", _X + "F.conv2d(x, w, padding=2**63 - 1)", "RuntimeError", r"padd.*overflows", TWIN),
    ("F", "padding-2**64", _X + "F.conv2d(x, w, padding=2**64)", "ValueError", r"padding.*18446744073709551616",
     TWIN),
    ("F", "dilation-0", _X + "F.conv2d(x, w, dilation=(1, 0))", "RuntimeError", r"dilation must be at least 1",
     TWIN),
    ("F", "dilation-2**62", _X + "F.conv2d(x, w, dilation=2**62)", "RuntimeError", r"overflows"),
    ("F", "groups-not-dividing-input", _X + "F.conv2d(r(1, 3, 5, 5), r(4, 1, 3, 3), groups=2)", "RuntimeError",
     r"input channels \(3\).*groups \(2\)", TWIN),
    ("F", "groups-not-dividing-output", _X + "F.conv2d(r(1, 4, 5, 5), w, groups=2)", "RuntimeError",
     r"groups.*\[3, 2, 3, 3\]", TWIN),
    ("F", "groups-1.5", _X + "F.conv2d(x, w, groups=1.5)", "TypeError", r"'groups'.*1\.5", TWIN),
    ("F", "groups-0", _X + "F.conv2d(x, w, groups=0)", "RuntimeError", r"groups must be at least 1", TWIN),
    ("F", "weight-channels", _X + "F.conv2d(x, r(3, 4, 3, 3))", "RuntimeError", r"\[3, 4, 3, 3\].*2", TWIN),
    ("F", "bias-shape", _X + "F.conv2d(x, w, r(4))", "RuntimeError", r"bias.*\[3\].*\[4\]", TWIN),
    ("F", "input-not-tensor", _X + "F.conv2d([[1.0]], w)", "TypeError", r"input.*list", TWIN),
    # torch convolves integers and complex numbers (and raises NotImplementedError for bools); our
    # kernels are floating-point only and refuse every other dtype with a RuntimeError naming it
    # (a known difference, tests/test_torch_rules.py)
    ("F", "bool-input", _X + "F.conv2d(x.bool(), w.bool())", "RuntimeError", r"float32.*got Bool"),
    ("F", "int-input", _X + "F.conv2d(x.long(), w.long())", "RuntimeError", r"float32.*got Long"),
    ("F", "complex-input", _X + "F.conv2d(x.cfloat(), w.cfloat())", "RuntimeError", r"float32.*got ComplexFloat"),
    ("F", "dtype-mismatch", _X + "F.conv2d(x.double(), w)", "RuntimeError", r"Double|float64", TWIN),
    ("F", "bias-dtype-mismatch", _X + "F.conv2d(x, w, r(3).double())", "RuntimeError", r"bias.*Double|bias.*float64",
     TWIN),
    # torch computes garbage from a meta weight with a CPU input (uninitialised memory)
    ("F", "meta-weight-cpu-input", _X + "F.conv2d(x, w.to('meta'))", "RuntimeError", r"meta.*cpu|cpu.*meta"),
    ("F", "padding-unknown-string", _X + "F.conv2d(x, w, padding='bogus')", "RuntimeError", r"padding.*'bogus'",
     TWIN),
    ("F", "full-dilation-overflow", _X + "F.conv2d(x, w, padding='full', dilation=2**62)", "RuntimeError",
     r"overflows"),
    ("F", "flip-weight-3d", _X + "F.conv2d(x, r(3, 2, 3), flip=True)", "RuntimeError", r"weight of shape \(3, 2, 3\)"),
    ("F", "flip-kernel-larger-than-input", "x = r(1, 2, 3); w = r(3, 2, 5)\nF.conv1d(x, w, flip=True)",
     "RuntimeError", r"kernel.*larger.*input"),
    ("F", "algorithm-unknown", _X + "F.conv2d(x, w, algorithm='fast')", "ValueError", r"algorithm.*'fast'"),
    ("F", "shifted-strided", _X + "F.conv2d(x, w, stride=2, algorithm='shifted')", "RuntimeError",
     r"shifted.*stride"),
    ("F", "winograd-strided", _X + "F.conv2d(x, w, stride=2, algorithm='winograd')", "RuntimeError",
     r"'winograd' needs .*stride 1.*stride \[1, 2, 2\]"),
    ("F", "winograd-5x5", "x = r(1, 2, 5, 5); w = r(3, 2, 5, 5)\nF.conv2d(x, w, algorithm='winograd_2x2')",
     "RuntimeError", r"kernel \[1, 5, 5\]"),
    ("F", "grad-input-size-rank", _X + "grad.conv2d_input((1, 2, 5), w, r(1, 3, 3, 3))", "RuntimeError",
     r"input_size.*4.*\(1, 2, 5\)", TWIN),
    ("F", "grad-input-grad-output-size", _X + "grad.conv2d_input((1, 2, 5, 5), w, r(1, 3, 2, 3))", "RuntimeError",
     r"grad_output of shape \(1, 3, 2, 3\)", TWIN),
    ("F", "grad-input-negative-size", _X + "grad.conv2d_input((1, 2, -5, 5), w, r(1, 3, 3, 3))", "RuntimeError",
     r"input_size.*\(1, 2, -5, 5\)", TWIN),
    ("F", "grad-input-size-float", _X + "grad.conv2d_input((1, 2, 5.0, 5), w, r(1, 3, 3, 3))", "TypeError",
     r"input_size.*5\.0", TWIN),
    ("F", "grad-weight-grad-output-size", _X + "grad.conv2d_weight(x, (3, 2, 3, 3), r(1, 3, 2, 3))", "RuntimeError",
     r"grad_output of shape \(1, 3, 2, 3\)", TWIN),
    # torch.nn.grad.conv2d_weight sums a grad_output of another batch size without a word
    ("F", "grad-weight-batch-mismatch", _X + "grad.conv2d_weight(x, (3, 2, 3, 3), r(2, 3, 3, 3))", "RuntimeError",
     r"grad_output.*\[2, 3, 3, 3\]"),
    # torch.nn.grad passes its arguments to ATen's convolution_backward, whose schema refuses them
    ("F", "grad-weight-groups-1.5", _X + "grad.conv2d_weight(x, (3, 2, 3, 3), r(1, 3, 3, 3), groups=1.5)",
     "RuntimeError", r"'groups'.*1\.5", TWIN),
    ("F", "grad-input-padding-2**64", _X + "grad.conv2d_input((1, 2, 5, 5), w, r(1, 3, 3, 3), padding=2**64)",
     "RuntimeError", r"'padding'.*18446744073709551616", TWIN),
    # -- the modules
    ("nn", "input-channels", "m = nn.Conv2d(2, 3, 3)\nm(r(1, 4, 5, 5))", "RuntimeError",
     r"weight of shape \[3, 2, 3, 3\].*input has 4", TWIN),
    ("nn", "input-rank", "m = nn.Conv2d(2, 3, 3)\nm(r(1, 1, 2, 5, 5))", "RuntimeError", r"input of shape", TWIN),
    ("nn", "kernel-larger-than-input", "m = nn.Conv2d(2, 3, 3)\nm(r(1, 2, 2, 2))", "RuntimeError",
     r"kernel.*larger.*input", TWIN),
    ("nn", "empty-spatial-3d", "m = nn.Conv3d(2, 3, 1)\nm(r(1, 2, 0, 4, 4))", "RuntimeError",
     r"kernel.*larger.*\[1, 2, 0, 4, 4\]", TWIN),
    ("nn", "double-input", "m = nn.Conv2d(2, 3, 3)\nm(r(1, 2, 5, 5).double())", "RuntimeError", r"Double|float64",
     TWIN),
    ("nn", "int-input", "m = nn.Conv2d(2, 3, 3)\nm(torch.ones(1, 2, 5, 5, dtype=torch.long))", "RuntimeError",
     r"Long|int64", TWIN),
    # torch.nn.Conv2d computes garbage from a meta input with CPU parameters
    ("nn", "meta-input", "m = nn.Conv2d(2, 3, 3)\nm(meta(1, 2, 5, 5))", "RuntimeError", r"meta.*cpu|cpu.*meta"),
    ("nn", "reflect-padding-too-large", "m = nn.Conv2d(2, 3, 3, padding=5, padding_mode='reflect')\nm(r(1, 2, 5, 5))",
     "RuntimeError", r"[Pp]adding size", TWIN),
    ("nn", "groups-not-dividing", "nn.Conv2d(3, 4, 3, groups=2)", "ValueError", r"in_channels.*groups", TWIN),
    ("nn", "algorithm-unknown", "nn.Conv2d(2, 3, 3, algorithm='fast')", "ValueError", r"algorithm.*'fast'"),
    ("nn", "full-dilation-overflow", "m = nn.Conv2d(2, 3, 3, padding='full', dilation=2**62)\nm(r(1, 2, 5, 5))",
     "RuntimeError", r"overflows"),
    ("nn", "flip-kernel-larger-than-input", "m = nn.Conv1d(2, 3, 5, flip=True)\nm(r(1, 2, 3))", "RuntimeError",
     r"kernel.*larger.*input"),
    ("nn", "weight-replaced-3d", "m = nn.Conv2d(2, 3, 3)\nm.weight = torch.nn.Parameter(r(3, 2, 3))\nm(r(1, 2, 5, 5))",
     "RuntimeError", r"weight of shape \(3, 2, 3\)", TWIN),
    # -- the raw ops
    ("op", "stride-1-entry", _X + _fwd(stride="[1]"), "RuntimeError", r"padding.*dilation.*entr|entries"),
    ("op", "stride-4-entries", _X + _fwd(stride="[1] * 4", pad="[0] * 4", pad_end="[0] * 4", dil="[1] * 4"),
     "RuntimeError", r"stride must have 1, 2 or 3 entries"),
    ("op", "stride-0", _X + _fwd(stride="[0, 1]"), "RuntimeError", r"stride must be at least 1.*\[0, 1\]"),
    ("op", "padding-negative", _X + _fwd(pad="[-1, 0]"), "RuntimeError", r"padding must be non-negative.*-1"),
    ("op", "padding-end-negative", _X + _fwd(pad_end="[0, -1]"), "RuntimeError", r"padding_end.*-1"),
    ("op", "padding-2**62", _X + _fwd(pad="[2**62, 0]", pad_end="[2**62, 0]"), "RuntimeError", r"overflows"),
    ("op", "dilation-2**62", _X + _fwd(dil="[2**62, 1]"), "RuntimeError", r"overflows"),
    ("op", "groups-0", _X + _fwd(groups="0"), "RuntimeError", r"groups must be at least 1, got 0"),
    ("op", "groups-not-dividing", _X + _fwd(x="r(1, 3, 5, 5)", w="r(4, 1, 3, 3)", groups="2"), "RuntimeError",
     r"3.*groups"),
    ("op", "bias-shape", _X + _fwd(b="r(3, 1)"), "RuntimeError", r"bias must have shape \[3\]"),
    ("op", "input-3d", _X + _fwd(x="r(2, 5, 5)"), "RuntimeError", r"4-d input.*\[2, 5, 5\]"),
    ("op", "int-input", _X + _fwd(x="x.long()", w="w.long()"), "RuntimeError", r"Long"),
    ("op", "complex-input", _X + _fwd(x="x.cdouble()", w="w.cdouble()"), "RuntimeError", r"ComplexDouble"),
    ("op", "dtype-mismatch", _X + _fwd(x="x.double()"), "RuntimeError", r"Double.*Float|Float.*Double"),
    ("op", "algorithm-unknown", _X + _fwd(algo="'fast'"), "RuntimeError", r"algorithm.*'fast'"),
    ("op", "shifted-strided", _X + _fwd(stride="[2, 2]", algo="'shifted'"), "RuntimeError", r"shifted.*stride"),
    ("op", "winograd-dilated", _X + _fwd(x="r(1, 2, 7, 7)", dil="[2, 2]", algo="'winograd'"), "RuntimeError",
     r"'winograd' needs .*dilation \[1, 2, 2\]"),
    ("op", "kernel-larger-than-input", _X + _fwd(x="r(1, 2, 2, 2)"), "RuntimeError", r"kernel.*larger.*input"),
    ("op", "input-backward-size-rank",
     _X + "ops.conv_input_backward(r(1, 3, 3, 3), w, [1, 2, 5], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"input_size"),
    ("op", "input-backward-negative-size",
     _X + "ops.conv_input_backward(r(1, 3, 3, 3), w, [1, 2, -5, 5], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"-5"),
    ("op", "input-backward-batch-mismatch",
     _X + "ops.conv_input_backward(r(2, 3, 3, 3), w, [1, 2, 5, 5], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"grad_output.*\[2, 3, 3, 3\]"),
    ("op", "weight-backward-size-channels",
     _X + "ops.conv_weight_backward(r(1, 3, 3, 3), x, [3, 4, 3, 3], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"\[3, 4, 3, 3\]"),
    ("op", "weight-backward-grad-output-channels",
     _X + "ops.conv_weight_backward(r(1, 4, 3, 3), x, [3, 2, 3, 3], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"grad_output.*\[1, 4, 3, 3\]"),
    ("op", "weight-backward-grad-output-too-small",
     "gy = r(2, 6, 5, 6); x = r(2, 4, 8, 8)\n"
     "ops.conv_weight_backward(gy, x, [6, 4, 3, 3], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"grad_output of shape .* too small"),
    ("op", "input-backward-grad-output-too-small",
     "gy = r(2, 6, 5, 6); w = r(6, 4, 3, 3)\n"
     "ops.conv_input_backward(gy, w, [2, 4, 8, 8], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"grad_output of shape .* too small"),
    ("op", "input-backward-strided-too-small",
     "gy = r(2, 6, 3, 3); w = r(6, 4, 3, 3)\n"
     "ops.conv_input_backward(gy, w, [2, 4, 9, 9], [2, 2], [0, 0], [1, 1], 1, 'auto')", "RuntimeError", r"too small"),
    # -- the raw ops on meta tensors: the fake kernels must refuse what the kernels refuse
    ("meta", "input-1d", _MX + _fwd(x="meta(5)"), "RuntimeError", r"4-d input"),
    ("meta", "groups-not-dividing", _MX + _fwd(x="meta(1, 3, 5, 5)", w="meta(4, 1, 3, 3)", groups="2"),
     "RuntimeError", r"3.*groups"),
    ("meta", "kernel-larger-than-input", _MX + _fwd(x="meta(1, 2, 2, 2)"), "RuntimeError", r"kernel.*larger.*input"),
    ("meta", "stride-0", _MX + _fwd(stride="[0, 1]"), "RuntimeError", r"stride must be at least 1"),
    ("meta", "padding-negative", _MX + _fwd(pad="[-1, 0]"), "RuntimeError", r"padding must be non-negative"),
    ("meta", "padding-2**62", _MX + _fwd(pad="[2**62, 0]", pad_end="[2**62, 0]"), "RuntimeError", r"overflows"),
    ("meta", "groups-0", _MX + _fwd(groups="0"), "RuntimeError", r"groups must be at least 1"),
    ("meta", "bias-shape", _MX + _fwd(b="meta(4)"), "RuntimeError", r"bias must have shape \[3\]"),
    ("meta", "int-input", _MX + _fwd(x="meta(1, 2, 5, 5, dtype=torch.long)", w="meta(3, 2, 3, 3, dtype=torch.long)"),
     "RuntimeError", r"Long"),
    ("meta", "cpu-input-meta-weight", _MX + _fwd(x="r(1, 2, 5, 5)"), "RuntimeError", r"meta.*cpu|cpu.*meta"),
    ("meta", "input-backward-batch-mismatch",
     _MX + "ops.conv_input_backward(meta(2, 3, 3, 3), w, [1, 2, 5, 5], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"grad_output"),
    ("meta", "input-backward-negative-size",
     _MX + "ops.conv_input_backward(meta(1, 3, 3, 3), w, [1, 2, -5, 5], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"-5"),
    ("meta", "weight-backward-size-channels",
     _MX + "ops.conv_weight_backward(meta(1, 3, 3, 3), x, [3, 4, 3, 3], [1, 1], [0, 0], [1, 1], 1, 'auto')",
     "RuntimeError", r"\[3, 4, 3, 3\]"),
    # -- FakeTensorMode (torch.compile's tracing): the same fake kernels, through the public function too
    ("fake", "groups-not-dividing",
     "with fake: " + _fwd(x="torch.empty(1, 3, 5, 5)", w="torch.empty(4, 1, 3, 3)", groups="2"), "RuntimeError",
     r"3.*groups"),
    ("fake", "kernel-larger-than-input",
     "with fake: F.conv2d(torch.empty(1, 2, 2, 2), torch.empty(3, 2, 3, 3))", "RuntimeError",
     r"kernel.*larger.*input"),
    ("fake", "dilation-overflow",
     "with fake: F.conv2d(torch.empty(1, 2, 5, 5), torch.empty(3, 2, 3, 3), dilation=2**62)", "RuntimeError",
     r"overflows"),
])


# ---- local: F.tiled_conv1d/2d, F.unshared_conv1d/2d, nn.TiledConvNd / UnsharedConvNd, local ops -----------
# torch has no such layer; where a case has a twin in torch's convolution (a tile of one kernel is
# a convolution), ``torch`` is that convolution.
_LX = "x = r(1, 2, 5, 5); w = r(2, 2, 3, 2, 3, 3)\n"  # a tile of 2 x 2 kernels, 3 output channels
_UX = "x = r(1, 2, 5, 5); w = r(3, 3, 3, 2, 3, 3)\n"  # one kernel per position of the 3 x 3 output
_LMX = "x = meta(1, 2, 5, 5); w = meta(2, 2, 3, 2, 3, 3)\n"
_LFWD = "ops.local_forward({x}, {w}, {b}, {stride}, {pad}, {pad_end}, {dil})"


def _lfwd(x="x", w="w", b="None", stride="[1, 1]", pad="[0, 0]", pad_end="[0, 0]", dil="[1, 1]"):
    return _LFWD.format(x=x, w=w, b=b, stride=stride, pad=pad, pad_end=pad_end, dil=dil)


def _conv_twin(call: str) -> str:
    """torch's convolution given the same input and arguments: a weight of one 3 x 2 x 3 x 3 kernel."""
    return "x = r(1, 2, 5, 5); w = r(3, 2, 3, 3)\n" + call


LOCAL = _table("local", [
    # -- the public functions
    ("F", "input-1d", _LX + "F.tiled_conv2d(r(5), w)", "RuntimeError", r"input of shape \(5,\)",
     _conv_twin("TF.conv2d(r(5), w)")),
    ("F", "input-0d", _LX + "F.tiled_conv2d(torch.tensor(1.0), w)", "RuntimeError", r"input of shape \(\)"),
    ("F", "weight-5d", _LX + "F.tiled_conv2d(x, r(2, 3, 2, 3, 3))", "RuntimeError",
     r"weight must have 6 dimensions.*\(2, 3, 2, 3, 3\)"),
    ("F", "tile-size-0", _LX + "F.tiled_conv2d(x, r(0, 2, 3, 2, 3, 3))", "RuntimeError",
     r"tile size.*\(0, 2, 3, 2, 3, 3\)"),
    ("F", "input-channels", _LX + "F.tiled_conv2d(r(1, 4, 5, 5), w)", "RuntimeError",
     r"4 channels.*\(1, 4, 5, 5\).*in_channels = 2", _conv_twin("TF.conv2d(r(1, 4, 5, 5), w)")),
    ("F", "kernel-larger-than-input", _LX + "F.tiled_conv2d(r(1, 2, 2, 2), w)", "RuntimeError",
     r"kernel.*larger.*input", _conv_twin("TF.conv2d(r(1, 2, 2, 2), w)")),
    ("F", "empty-spatial", _LX + "F.tiled_conv2d(r(1, 2, 0, 5), w)", "RuntimeError", r"kernel.*larger.*input",
     _conv_twin("TF.conv2d(r(1, 2, 0, 5), w)")),
    ("F", "zero-kernel", _LX + "F.tiled_conv2d(x, r(2, 2, 3, 2, 0, 3))", "RuntimeError",
     r"kernel sizes must be positive.*\[2, 2, 3, 2, 0, 3\]", _conv_twin("TF.conv2d(x, r(3, 2, 0, 3))")),
    ("F", "stride-0", _LX + "F.tiled_conv2d(x, w, stride=0)", "RuntimeError", r"stride must be at least 1.*0",
     _conv_twin("TF.conv2d(x, w, stride=0)")),
    ("F", "stride-negative", _LX + "F.unshared_conv1d(r(1, 2, 5), r(3, 3, 2, 3), stride=-1)", "RuntimeError",
     r"stride must be at least 1.*-1", "TF.conv1d(r(1, 2, 5), r(3, 2, 3), stride=-1)"),
    ("F", "stride-float", _LX + "F.tiled_conv2d(x, w, stride=1.5)", "TypeError", r"'stride'.*1\.5",
     _conv_twin("TF.conv2d(x, w, stride=1.5)")),
    ("F", "stride-bool", _LX + "F.tiled_conv2d(x, w, stride=True)", "TypeError", r"'stride'.*True",
     _conv_twin("TF.conv2d(x, w, stride=True)")),
    ("F", "padding-negative", _LX + "F.tiled_conv2d(x, w, padding=-1)", "RuntimeError", r"negative padding.*-1",
     _conv_twin("TF.conv2d(x, w, padding=-1)")),
    ("F", "padding-2**62", _LX + "F.tiled_conv2d(x, w, padding=2**62)", "RuntimeError", r"overflows",
     _conv_twin("TF.conv2d(x, w, padding=2**62)")),
    ("F", "padding-2**64", _LX + "F.tiled_conv2d(x, w, padding=2**64)", "ValueError",
     r"padding.*18446744073709551616", _conv_twin("TF.conv2d(x, w, padding=2**64)")),
    ("F", "dilation-0", _LX + "F.tiled_conv2d(x, w, dilation=0)", "RuntimeError", r"dilation must be at least 1",
     _conv_twin("TF.conv2d(x, w, dilation=0)")),
    ("F", "dilation-2**62", _LX + "F.tiled_conv2d(r(1, 2, 4, 4), w, dilation=2**62)", "RuntimeError", r"overflows"),
    ("F", "full-dilation-overflow", _LX + "F.tiled_conv2d(x, w, padding='full', dilation=2**62)", "RuntimeError",
     r"overflows"),
    ("F", "unshared-grid", _UX + "F.unshared_conv2d(x, r(2, 2, 3, 2, 3, 3))", "RuntimeError",
     r"weight must have shape \(3, 3, 3, 2, 3, 3\)"),
    ("F", "unshared-grid-with-stride", _UX + "F.unshared_conv2d(x, w, stride=2)", "RuntimeError",
     r"weight must have shape \(2, 2, 3, 2, 3, 3\)"),
    ("F", "bias-shape", _LX + "F.tiled_conv2d(x, w, r(4))", "RuntimeError", r"bias must have shape \(3,\).*\(4,\)",
     _conv_twin("TF.conv2d(x, w, r(4))")),
    ("F", "unshared-bias-shape", _UX + "F.unshared_conv2d(x, w, r(3, 2, 2))", "RuntimeError",
     r"bias must have shape \(3,\) or \(3, 3, 3\).*\(3, 2, 2\)"),
    ("F", "input-not-tensor", _LX + "F.tiled_conv2d([[1.0]], w)", "TypeError", r"input.*list",
     _conv_twin("TF.conv2d([[1.0]], w)")),
    # floating-point kernels only, as the convolution's (a RuntimeError naming the dtype)
    ("F", "bool-input", _LX + "F.tiled_conv2d(x.bool(), w.bool())", "RuntimeError", r"float32.*got Bool"),
    ("F", "int-input", _LX + "F.tiled_conv2d(x.int(), w.int())", "RuntimeError", r"float32.*got Int"),
    ("F", "complex-input", _LX + "F.unshared_conv2d(x.cfloat(), r(3, 3, 3, 2, 3, 3).cfloat())", "RuntimeError",
     r"float32.*got ComplexFloat"),
    ("F", "dtype-mismatch", _LX + "F.tiled_conv2d(x.double(), w)", "RuntimeError", r"Double.*Float|Float.*Double",
     _conv_twin("TF.conv2d(x.double(), w)")),
    ("F", "meta-weight-cpu-input", _LX + "F.tiled_conv2d(x, w.to('meta'))", "RuntimeError", r"meta.*cpu|cpu.*meta"),
    # -- the modules
    ("nn", "input-channels", "m = nn.TiledConv2d(2, 3, 3, tile_size=2)\nm(r(1, 4, 5, 5))", "RuntimeError",
     r"4 channels.*\(1, 4, 5, 5\)", "m = tnn.Conv2d(2, 3, 3)\nm(r(1, 4, 5, 5))"),
    ("nn", "input-rank", "m = nn.TiledConv1d(2, 3, 3, tile_size=2)\nm(r(1, 1, 2, 5))", "RuntimeError",
     r"input of shape \(1, 1, 2, 5\)", "m = tnn.Conv1d(2, 3, 3)\nm(r(1, 1, 2, 5))"),
    ("nn", "kernel-larger-than-input", "m = nn.TiledConv2d(2, 3, 3, tile_size=2)\nm(r(1, 2, 2, 2))", "RuntimeError",
     r"kernel.*larger.*input", "m = tnn.Conv2d(2, 3, 3)\nm(r(1, 2, 2, 2))"),
    ("nn", "unshared-input-size", "m = nn.UnsharedConv2d(2, 3, 3, input_size=(5, 5))\nm(r(1, 2, 6, 6))",
     "ValueError", r"spatial size \(5, 5\).*\(1, 2, 6, 6\)"),
    ("nn", "unshared-no-output", "nn.UnsharedConv2d(2, 3, 3, input_size=(2, 2))", "ValueError",
     r"input_size \(2, 2\).*no output"),
    ("nn", "kernel-size-0", "nn.TiledConv2d(2, 3, 0, tile_size=2)", "ValueError", r"kernel_size must be at least 1"),
    ("nn", "tile-size-0", "nn.TiledConv2d(2, 3, 3, tile_size=(2, 0))", "ValueError", r"tile_size.*\(2, 0\)"),
    ("nn", "stride-float", "nn.TiledConv2d(2, 3, 3, tile_size=2, stride=1.5)", "TypeError", r"'stride'.*1\.5"),
    ("nn", "padding-unknown-string", "nn.TiledConv2d(2, 3, 3, tile_size=2, padding='bogus')", "ValueError",
     r"'bogus'", "tnn.Conv2d(2, 3, 3, padding='bogus')"),
    ("nn", "in-channels-0", "nn.TiledConv1d(0, 3, 3, tile_size=2)", "ValueError", r"in_channels.*0"),
    ("nn", "double-input", "m = nn.TiledConv2d(2, 3, 3, tile_size=2)\nm(r(1, 2, 5, 5).double())", "RuntimeError",
     r"Double.*Float|Float.*Double", "m = tnn.Conv2d(2, 3, 3)\nm(r(1, 2, 5, 5).double())"),
    ("nn", "int-input", "m = nn.UnsharedConv2d(2, 3, 3, input_size=5)\nm(torch.ones(1, 2, 5, 5, dtype=torch.long))",
     "RuntimeError", r"Long", "m = tnn.Conv2d(2, 3, 3)\nm(torch.ones(1, 2, 5, 5, dtype=torch.long))"),
    ("nn", "meta-input", "m = nn.TiledConv2d(2, 3, 3, tile_size=2)\nm(meta(1, 2, 5, 5))", "RuntimeError",
     r"meta.*cpu|cpu.*meta"),
    ("nn", "bias-replaced", "m = nn.TiledConv2d(2, 3, 3, tile_size=2)\nm.bias = torch.nn.Parameter(r(4))\n"
     "m(r(1, 2, 5, 5))", "RuntimeError", r"bias must have shape \(3,\).*\(4,\)"),
    # -- the raw ops
    ("op", "stride-1-entry", _LX + _lfwd(stride="[1]"), "RuntimeError", r"stride|padding|dilation"),
    ("op", "stride-0", _LX + _lfwd(stride="[1, 0]"), "RuntimeError", r"stride must be at least 1.*\[1, 0\]"),
    ("op", "padding-negative", _LX + _lfwd(pad="[-1, 0]"), "RuntimeError", r"padding must be non-negative.*-1"),
    ("op", "padding-end-negative", _LX + _lfwd(pad_end="[0, -1]"), "RuntimeError", r"padding_end.*-1"),
    ("op", "padding-2**62", _LX + _lfwd(pad="[2**62, 0]", pad_end="[2**62, 0]"), "RuntimeError", r"overflows"),
    ("op", "weight-5d", _LX + _lfwd(w="r(2, 3, 2, 3, 3)"), "RuntimeError", r"6-d weight.*\[2, 3, 2, 3, 3\]"),
    ("op", "tile-size-0", _LX + _lfwd(w="r(2, 0, 3, 2, 3, 3)"), "RuntimeError", r"leading.*\[2, 0, 3, 2, 3, 3\]"),
    ("op", "input-channels", _LX + _lfwd(x="r(1, 4, 5, 5)"), "RuntimeError", r"\[2, 2, 3, 2, 3, 3\].*4"),
    ("op", "bias-shape", _LX + _lfwd(b="r(3, 2)"), "RuntimeError", r"bias.*\[3, 2\]"),
    ("op", "input-3d", _LX + _lfwd(x="r(2, 5, 5)"), "RuntimeError", r"4-d input.*\[2, 5, 5\]"),
    ("op", "int-input", _LX + _lfwd(x="x.long()", w="w.long()"), "RuntimeError", r"Long"),
    ("op", "dtype-mismatch", _LX + _lfwd(w="w.double()"), "RuntimeError", r"Double.*Float|Float.*Double"),
    ("op", "kernel-larger-than-input", _LX + _lfwd(x="r(1, 2, 2, 2)"), "RuntimeError", r"kernel.*larger.*input"),
    ("op", "input-backward-size-rank",
     _LX + "ops.local_input_backward(r(1, 3, 3, 3), w, [1, 2, 5], [1, 1], [0, 0], [1, 1])", "RuntimeError",
     r"input_size.*\[1, 2, 5\]"),
    ("op", "input-backward-batch-mismatch",
     _LX + "ops.local_input_backward(r(2, 3, 3, 3), w, [1, 2, 5, 5], [1, 1], [0, 0], [1, 1])", "RuntimeError",
     r"grad_output.*\[2, 3, 3, 3\]"),
    ("op", "input-backward-negative-size",
     _LX + "ops.local_input_backward(r(1, 3, 3, 3), w, [1, 2, -5, 5], [1, 1], [0, 0], [1, 1])", "RuntimeError",
     r"-5"),
    ("op", "weight-backward-size-channels",
     _LX + "ops.local_weight_backward(r(1, 3, 3, 3), x, [2, 2, 3, 4, 3, 3], [1, 1], [0, 0], [1, 1])",
     "RuntimeError", r"\[2, 2, 3, 4, 3, 3\]"),
    ("op", "weight-backward-grad-output-too-small",
     "gy = r(1, 3, 1, 2); x = r(1, 2, 4, 4)\n"
     "ops.local_weight_backward(gy, x, [2, 2, 3, 2, 3, 3], [1, 1], [0, 0], [1, 1])", "RuntimeError", r"too small"),
    # -- the raw ops on meta tensors
    ("meta", "input-1d", _LMX + _lfwd(x="meta(5)"), "RuntimeError", r"4-d input"),
    ("meta", "input-channels", _LMX + _lfwd(x="meta(1, 4, 5, 5)"), "RuntimeError", r"\[2, 2, 3, 2, 3, 3\].*4"),
    ("meta", "stride-0", _LMX + _lfwd(stride="[1, 0]"), "RuntimeError", r"stride must be at least 1"),
    ("meta", "kernel-larger-than-input", _LMX + _lfwd(x="meta(1, 2, 2, 2)"), "RuntimeError",
     r"kernel.*larger.*input"),
    ("meta", "padding-negative", _LMX + _lfwd(pad="[-1, 0]"), "RuntimeError", r"padding must be non-negative"),
    ("meta", "tile-size-0", _LMX + _lfwd(w="meta(2, 0, 3, 2, 3, 3)"), "RuntimeError", r"leading"),
    ("meta", "bias-shape", _LMX + _lfwd(b="meta(3, 2)"), "RuntimeError", r"bias.*\[3, 2\]"),
    ("meta", "int-input", _LMX + _lfwd(x="meta(1, 2, 5, 5, dtype=torch.long)", w="meta(2, 2, 3, 2, 3, 3, "
                                                                                "dtype=torch.long)"),
     "RuntimeError", r"Long"),
    ("meta", "cpu-input-meta-weight", _LMX + _lfwd(x="r(1, 2, 5, 5)"), "RuntimeError", r"meta.*cpu|cpu.*meta"),
    ("meta", "input-backward-batch-mismatch",
     _LMX + "ops.local_input_backward(meta(2, 3, 3, 3), w, [1, 2, 5, 5], [1, 1], [0, 0], [1, 1])", "RuntimeError",
     r"grad_output"),
    ("meta", "weight-backward-size-channels",
     _LMX + "ops.local_weight_backward(meta(1, 3, 3, 3), x, [2, 2, 3, 4, 3, 3], [1, 1], [0, 0], [1, 1])",
     "RuntimeError", r"\[2, 2, 3, 4, 3, 3\]"),
    # -- FakeTensorMode
    ("fake", "input-channels", "with fake: " + _lfwd(x="torch.empty(1, 4, 5, 5)", w="torch.empty(2, 2, 3, 2, 3, 3)"),
     "RuntimeError", r"\[2, 2, 3, 2, 3, 3\].*4"),
    ("fake", "kernel-larger-than-input",
     "with fake: F.tiled_conv2d(torch.empty(1, 2, 2, 2), torch.empty(2, 2, 3, 2, 3, 3))", "RuntimeError",
     r"kernel.*larger.*input"),
    ("fake", "stride-0", "with fake: " + _lfwd(x="torch.empty(1, 2, 5, 5)", w="torch.empty(2, 2, 3, 2, 3, 3)",
                                               stride="[0, 1]"), "RuntimeError", r"stride must be at least 1"),
])


# ---- pool: max / min / avg / lp / adaptive / k-max / dynamic k-max / channel / gaussian / stochastic ------
_PX = "x = r(1, 1, 4, 4)\n"
_P1 = "x = r(2, 3, 5)\n"
_K6 = r"size of dimension -1 \(5\).*k = 6"  # k = 6 along a dimension of 5
_MAXP = "ops.max_pool_forward({x}, {k}, {s}, {p}, {d}, False, False)"


def _maxp(x="x", k="[2, 2]", s="[2, 2]", p="[0, 0]", d="[1, 1]"):
    return _MAXP.format(x=x, k=k, s=s, p=p, d=d)


POOL = _table("pool", [
    # -- the public functions
    ("F", "max-input-1d", _PX + "F.max_pool2d(r(4), 2)", "RuntimeError", r"input of shape \(4,\)", TWIN),
    ("F", "max-kernel-0", _PX + "F.max_pool2d(x, 0)", "RuntimeError", r"kernel_size must be at least 1.*0", TWIN),
    ("F", "max-kernel-negative", _PX + "F.max_pool2d(x, (2, -1))", "RuntimeError", r"kernel_size.*-1", TWIN),
    ("F", "max-kernel-float", _PX + "F.max_pool2d(x, 2.0)", "TypeError", r"'kernel_size'.*2\.0", TWIN),
    ("F", "max-kernel-bool", _PX + "F.max_pool2d(x, True)", "TypeError", r"'kernel_size'.*True", TWIN),
    ("F", "max-stride-0", _PX + "F.max_pool2d(x, 2, stride=0)", "RuntimeError", r"stride must be at least 1",
     TWIN),
    ("F", "max-padding-over-half", _PX + "F.max_pool2d(x, 2, padding=2)", "RuntimeError",
     r"pad.*half.*kernel", TWIN),
    ("F", "max-dilation-0", _PX + "F.max_pool2d(x, 2, dilation=0)", "RuntimeError", r"dilation must be at least 1",
     TWIN),
    ("F", "max-dilation-2**62", _PX + "F.max_pool2d(x, 2, dilation=2**62)", "RuntimeError", r"dilation|overflow",
     TWIN),
    ("F", "max-kernel-larger-than-input", _PX + "F.max_pool2d(x, 5)", "RuntimeError", r"kernel.*larger.*input",
     TWIN),
    ("F", "max-empty-spatial", _PX + "F.max_pool2d(r(1, 1, 0, 4), 2)", "RuntimeError", r"\[1, 1, 0, 4\]", TWIN),
    ("F", "max-empty-channels", _PX + "F.max_pool2d(r(1, 0, 4, 4), 2)", "RuntimeError", r"\[1, 0, 4, 4\]", TWIN),
    ("F", "max-ceil-mode-int", _PX + "F.max_pool2d(x, 2, ceil_mode=1)", "TypeError", r"'ceil_mode'", TWIN),
    ("F", "max-complex-input", _PX + "F.max_pool2d(x.cfloat(), 2)", "RuntimeError", r"ComplexFloat|complex64"),
    # torch takes integer max pooling; our kernels are floating-point only (module docstring)
    ("F", "max-int-input", _PX + "F.max_pool2d(x.long(), 2)", "RuntimeError", r"Long|int64"),
    # torch's max_pool1d takes minutes for such a kernel; ours must refuse it at once (with a
    # padding that makes it legal, it pools at once: test_pool.py, huge kernels)
    ("F", "max1d-kernel-2**31", "x = r(1, 1, 10)\nF.max_pool1d(x, 2**31)", "RuntimeError",
     r"kernel is larger.*kernel_size 2147483648"),
    ("F", "min-padding-over-half", _PX + "F.min_pool2d(x, 3, padding=2)", "RuntimeError", r"pad.*half.*kernel"),
    ("F", "min3d-kernel-4-entries", "x = r(1, 1, 4, 4, 4)\nF.min_pool3d(x, [2, 2, 2, 2])", "RuntimeError",
     r"'kernel_size'.*4 values"),
    ("F", "avg-int-input", _PX + "F.avg_pool2d(x.long(), 2)", "NotImplementedError", r"torch\.int64"),
    ("F", "avg-divisor-0", _PX + "F.avg_pool2d(x, 2, divisor_override=0)", "RuntimeError", r"divisor", TWIN),
    ("F", "avg-divisor-float", _PX + "F.avg_pool2d(x, 2, divisor_override=1.5)", "TypeError",
     r"'divisor_override'.*1\.5", TWIN),
    ("F", "avg-padding-over-half", _PX + "F.avg_pool2d(x, 2, padding=(0, 2))", "RuntimeError", r"pad.*half", TWIN),
    ("F", "avg-count-include-pad-int", _PX + "F.avg_pool2d(x, 2, count_include_pad=1)", "TypeError",
     r"'count_include_pad'", TWIN),
    ("F", "avg3d-kernel-4-entries", "x = r(1, 1, 4, 4, 4)\nF.avg_pool3d(x, [2, 2, 2, 2])", "RuntimeError",
     r"kernel_size", TWIN),
    ("F", "lp-norm-type-0", _PX + "F.lp_pool2d(x, 0, 2)", "ZeroDivisionError", r"norm_type", TWIN),
    ("F", "lp-kernel-larger-than-input", "x = r(1, 1, 3)\nF.lp_pool1d(x, 2, 5)", "RuntimeError",
     r"kernel.*larger.*input", TWIN),
    ("F", "lp-norm-type-string", _PX + "F.lp_pool2d(x, 'two', 2)", "TypeError", r"norm_type.*'two'"),
    ("F", "adaptive-avg-negative-size", _PX + "F.adaptive_avg_pool2d(x, (-1, 2))", "RuntimeError",
     r"output_size.*-1", TWIN),
    ("F", "adaptive-max-3-sizes", _PX + "F.adaptive_max_pool2d(x, (1, 2, 3))", "RuntimeError", r"output_size",
     TWIN),
    ("F", "adaptive-avg-empty-spatial", _PX + "F.adaptive_avg_pool2d(r(1, 1, 0, 4), 2)", "RuntimeError",
     r"\[1, 1, 0, 4\]", TWIN),
    ("F", "adaptive-max-empty-spatial", _PX + "F.adaptive_max_pool2d(r(1, 1, 0, 4), 2)", "RuntimeError",
     r"\[1, 1, 0, 4\]", TWIN),
    ("F", "adaptive-max-int-input", _PX + "F.adaptive_max_pool2d(x.long(), 2)", "NotImplementedError", r"int64",
     TWIN),
    ("F", "adaptive-min1d-size-float", _P1 + "F.adaptive_min_pool1d(x, 2.0)", "TypeError", r"'output_size'.*2\.0",
     "TF.adaptive_max_pool1d(r(2, 3, 5), 2.0)"),
    ("F", "adaptive-max3d-input-1d", "x = r(4)\nF.adaptive_max_pool3d(x, 2)", "RuntimeError", r"input of shape \(4,\)",
     TWIN),
    ("F", "kmax-k-larger-than-length", _P1 + "F.kmax_pool1d(x, 6)", "RuntimeError", _K6,
     "torch.topk(r(2, 3, 5), 6)"),
    # k and dim as torch.topk takes them: the same error as topk's
    *[("F", f"kmax-{name}", _P1 + f"F.kmax_pool1d(x, {args})", error, pattern, f"torch.topk(r(2, 3, 5), {args})")
      for name, args, error, pattern in [("k-negative", "-1", "RuntimeError", r"k.*-1"),
                                         ("k-float", "1.5", "TypeError", r"k.*1\.5"),
                                         ("dim-out-of-range", "2, dim=3", "IndexError", r"range.*3"),
                                         ("dim-float", "2, dim=1.0", "TypeError", r"dim.*1\.0")]],
    ("F", "kmax-int-input", _P1 + "F.kmax_pool1d(x.long(), 2)", "RuntimeError", r"Long|int64"),
    ("F", "dynamic-kmax-layer-0", _P1 + "F.dynamic_kmax_pool1d(x, 0, 3, 2)", "ValueError", r"layer=0"),
    ("F", "dynamic-kmax-k-top-larger-than-length", _P1 + "F.dynamic_kmax_pool1d(x, 3, 3, 6)", "RuntimeError",
     _K6),
    ("F", "dynamic-kmax-dim-out-of-range", _P1 + "F.dynamic_kmax_pool1d(x, 1, 3, 2, dim=3)", "IndexError",
     r"range.*3", "torch.topk(r(2, 3, 5), 2, dim=3)"),
    ("F", "channel-not-dividing", _P1 + "F.channel_max_pool(x, 2)", "ValueError", r"\(3\).*pool_size \(2\)"),
    ("F", "channel-pool-size-0", _P1 + "F.channel_max_pool(x, 0)", "ValueError", r"pool_size.*0"),
    ("F", "channel-pool-size-float", _P1 + "F.channel_max_pool(x, 1.5)", "TypeError", r"pool_size.*1\.5"),
    ("F", "channel-dim-out-of-range", _P1 + "F.channel_max_pool(x, 2, dim=4)", "IndexError", r"out of range"),
    *[("F", f"gaussian-sigma-{name}", _PX + f"F.gaussian_pool2d(x, 3, sigma={sigma})", "ValueError", pattern)
      for name, sigma, pattern in [("0", "0.0", r"sigma.*0\.0"), ("negative", "-1", r"sigma.*-1"),
                                   ("inf", "math.inf", r"sigma.*inf"), ("nan", "math.nan", r"sigma.*nan")]],
    ("F", "gaussian-kernel-0", _PX + "F.gaussian_pool2d(x, 0)", "RuntimeError", r"kernel_size must be at least 1"),
    ("F", "gaussian-kernel-larger-than-input", _PX + "F.gaussian_pool2d(x, 5)", "RuntimeError",
     r"kernel.*larger.*input"),
    ("F", "gaussian-int-input", _PX + "F.gaussian_pool2d(x.int(), 3)", "NotImplementedError", r"torch\.int32"),
    ("F", "stochastic-negative-input", "x = -torch.rand(1, 2, 4, 4)\nF.stochastic_pool2d(x, 2)", "RuntimeError",
     r"non-negative"),
    ("F", "stochastic-negative-input-eval", "x = -torch.rand(1, 2, 4, 4)\nF.stochastic_pool2d(x, 2, training=False)",
     "RuntimeError", r"non-negative"),
    ("F", "stochastic-int-input", "x = torch.ones(1, 2, 4, 4, dtype=torch.int32)\nF.stochastic_pool2d(x, 2)",
     "NotImplementedError", r"torch\.int32.*\(1, 2, 4, 4\)"),
    ("F", "stochastic-kernel-0", "x = torch.rand(1, 2, 4, 4)\nF.stochastic_pool2d(x, 0)", "RuntimeError",
     r"kernel_size must be at least 1"),
    ("F", "stochastic-stride-negative", "x = torch.rand(1, 2, 4, 4)\nF.stochastic_pool2d(x, 2, stride=-1)",
     "RuntimeError", r"stride must be at least 1"),
    # -- the modules
    ("nn", "max-kernel-0", "m = nn.MaxPool2d(0)\nm(r(1, 1, 4, 4))", "RuntimeError", r"kernel_size.*0", TWIN),
    ("nn", "min-input-rank", "m = nn.MinPool2d(2)\nm(r(1, 1, 1, 4, 4))", "RuntimeError",
     r"input of shape \(1, 1, 1, 4, 4\)"),
    ("nn", "avg-divisor-0", "m = nn.AvgPool2d(2, divisor_override=0)\nm(r(1, 1, 4, 4))", "RuntimeError",
     r"divisor", TWIN),
    ("nn", "lp-norm-type-0", "m = nn.LPPool2d(0, 2)\nm(r(1, 1, 4, 4))", "ZeroDivisionError", r"norm_type", TWIN),
    ("nn", "adaptive-avg-negative-size", "m = nn.AdaptiveAvgPool2d((-1, 2))\nm(r(1, 1, 4, 4))", "RuntimeError",
     r"output_size.*-1", TWIN),
    ("nn", "adaptive-min3d-input-1d", "m = nn.AdaptiveMinPool3d(2)\nm(r(4))", "RuntimeError", r"input of shape \(4,\)",
     "m = tnn.AdaptiveMaxPool3d(2)\nm(r(4))"),
    ("nn", "kmax-k-larger-than-length", "m = nn.KMaxPool1d(6)\nm(r(2, 3, 5))", "RuntimeError", _K6),
    ("nn", "dynamic-kmax-layer-0", "nn.DynamicKMaxPool1d(0, 3, 2)", "ValueError", r"layer=0"),
    ("nn", "maxout-not-dividing", "m = nn.Maxout(2)\nm(r(2, 3, 5))", "ValueError", r"\(3\).*pool_size \(2\)"),
    ("nn", "maxout-pool-size-float", "nn.Maxout(1.5)", "TypeError", r"pool_size.*1\.5"),
    ("nn", "gaussian-sigma-0", "nn.GaussianPool2d(3, sigma=0)", "ValueError", r"sigma"),
    ("nn", "gaussian-sigma-inf", "nn.GaussianPool2d(3, sigma=math.inf)", "ValueError", r"sigma.*inf"),
    ("nn", "gaussian-kernel-larger-than-input", "m = nn.GaussianPool2d(5)\nm(r(1, 1, 4, 4))", "RuntimeError",
     r"kernel.*larger.*input"),
    ("nn", "stochastic-negative-input", "m = nn.StochasticPool2d(2)\nx = -torch.rand(1, 2, 4, 4)\nm(x)",
     "RuntimeError", r"non-negative"),
    ("nn", "stochastic-int-input", "m = nn.StochasticPool2d(2)\nx = torch.ones(1, 2, 4, 4, dtype=torch.int64)\nm(x)",
     "NotImplementedError", r"torch\.int64"),
    # -- the raw ops
    ("op", "max-kernel-1-entry", _PX + _maxp(k="[2]"), "RuntimeError", r"3-d input.*\[1, 1, 4, 4\]"),
    ("op", "max-4-spatial", "x = r(1, 1, 2, 2, 2, 2)\n" + _maxp(k="[1] * 4", s="[1] * 4", p="[0] * 4", d="[1] * 4"),
     "RuntimeError", r"1, 2 or 3 spatial dimensions, got 4"),
    ("op", "max-kernel-0", _PX + _maxp(k="[0, 2]"), "RuntimeError", r"kernel_size must be at least 1.*\[0, 2\]"),
    ("op", "max-stride-0", _PX + _maxp(s="[2, 0]"), "RuntimeError", r"stride must be at least 1.*\[2, 0\]"),
    ("op", "max-padding-negative", _PX + _maxp(p="[-1, 0]"), "RuntimeError", r"pad.*-1"),
    ("op", "max-dilation-0", _PX + _maxp(d="[0, 1]"), "RuntimeError", r"dilation must be at least 1"),
    ("op", "gaussian-kernel-2**25", _PX + "ops.gaussian_pool_forward(x, [1, 2**25], [1, 1], [0, 2**24], 1.0)",
     "RuntimeError", r"kernel_size \[1, 33554432\] has more than 1048576 taps"),
    ("op", "max-int-input", _PX + _maxp(x="x.int()"), "RuntimeError", r"Int"),
    ("op", "max-backward-indices-dtype", "gy = r(1, 1, 2, 2); i = torch.zeros(1, 1, 2, 2, dtype=torch.int32)\n"
     "ops.max_pool_backward(gy, i, [1, 1, 4, 4])", "RuntimeError", r"indices must be int64"),
    ("op", "max-backward-index-out-of-range", "gy = r(1, 1, 2, 2); i = torch.full((1, 1, 2, 2), 16)\n"
     "ops.max_pool_backward(gy, i, [1, 1, 4, 4])", "RuntimeError", r"index 16"),
    ("op", "max-backward-shape-mismatch", "gy = r(1, 1, 2, 2); i = torch.zeros(1, 1, 2, 3, dtype=torch.long)\n"
     "ops.max_pool_backward(gy, i, [1, 1, 4, 4])", "RuntimeError", r"\[1, 1, 2, 2\].*\[1, 1, 2, 3\]"),
    ("op", "max-backward-input-size-batch", "gy = r(1, 1, 2, 2); i = torch.zeros(1, 1, 2, 2, dtype=torch.long)\n"
     "ops.max_pool_backward(gy, i, [2, 1, 4, 4])", "RuntimeError", r"input_size.*\[2, 1, 4, 4\]"),
    ("op", "avg-divisor-0", _PX + "ops.avg_pool_forward(x, [2, 2], [2, 2], [0, 0], False, True, 0)", "RuntimeError",
     r"divisor_override must be non-zero"),
    ("op", "avg-backward-grad-output-shape", "gy = r(1, 1, 3, 3)\n"
     "ops.avg_pool_backward(gy, [1, 1, 4, 4], [2, 2], [2, 2], [0, 0], False, True, None)", "RuntimeError",
     r"grad_output of shape \[1, 1, 3, 3\]"),
    ("op", "adaptive-avg-negative-size", _PX + "ops.adaptive_avg_pool_forward(x, [-1, 2])", "RuntimeError",
     r"output_size must be non-negative.*-1"),
    ("op", "adaptive-avg-backward-6-spatial",
     "gy = r(1, 1, 2, 2, 2, 2, 2, 2)\nops.adaptive_avg_pool_backward(gy, [1, 1] + [4] * 6)", "RuntimeError",
     r"input_size must have 1, 2 or 3 spatial dimensions"),
    ("op", "adaptive-avg-backward-4-spatial", "gy = r(1, 1, 2, 2, 2, 2)\n"
     "ops.adaptive_avg_pool_backward(gy, [1, 1] + [4] * 4)", "RuntimeError", r"input_size"),
    ("op", "max-backward-empty-input-size", "gy = r(1, 1, 2, 2); i = torch.zeros(1, 1, 2, 2, "
     "dtype=torch.long)\nops.max_pool_backward(gy, i, [1, 1, 0, 4])", "RuntimeError", r"input_size.*\[1, 1, 0, 4\]"),
    *[("op", f"lp-norm-type-{name}", _PX + f"ops.lp_pool_forward(x, {p}, [2, 2], [2, 2], False)", "RuntimeError",
       f"norm_type must be positive and finite, got {shown}")
      for name, p, shown in [("0", "0.0", "0"), ("negative", "-2.0", "-2"), ("nan", "math.nan", "nan")]],
    ("op", "lp-backward-input-shape", "gy = r(1, 1, 2, 2); x = r(1, 1, 6, 6)\n"
     "ops.lp_pool_backward(gy, x, 2.0, [2, 2], [2, 2], False)", "RuntimeError", r"grad_output of shape \[1, 1, 2, 2\]"),
    ("op", "kmax-k-larger-than-length", _P1 + "ops.kmax_pool_forward(x, 6, -1)", "RuntimeError", _K6),
    ("op", "kmax-k-0", _P1 + "ops.kmax_pool_forward(x, 0, -1)", "RuntimeError", r"k must be between 1"),
    ("op", "kmax-dim-out-of-range", _P1 + "ops.kmax_pool_forward(x, 2, 3)", "IndexError", r"range.*3"),
    ("op", "kmax-0d-input", "x = torch.tensor(1.0)\nops.kmax_pool_forward(x, 1, -1)", "RuntimeError",
     r"at least one dimension"),
    ("op", "kmax-backward-index-out-of-range", "gy = r(2, 3, 2); i = torch.full((2, 3, 2), 5)\n"
     "ops.kmax_pool_backward(gy, i, -1, [2, 3, 5])", "RuntimeError", r"index 5"),
    ("op", "kmax-backward-shape-mismatch", "gy = r(2, 3, 2); i = torch.zeros(2, 3, 3, dtype=torch.long)\n"
     "ops.kmax_pool_backward(gy, i, -1, [2, 3, 5])", "RuntimeError", r"\[2, 3, 2\].*\[2, 3, 3\]"),
    ("op", "kmax-backward-input-size-rank", "gy = r(2, 3, 2); i = torch.zeros(2, 3, 2, dtype=torch.long)\n"
     "ops.kmax_pool_backward(gy, i, -1, [6, 5])", "RuntimeError", r"input_size.*\[6, 5\]"),
    *[("op", f"gaussian-sigma-{name}", _PX + f"ops.gaussian_pool_forward(x, [3, 3], [1, 1], [0, 0], {sigma})",
       "RuntimeError", f"sigma must be positive and finite, got {name}")
      for name, sigma in [("0", "0.0"), ("inf", "math.inf"), ("nan", "math.nan")]],
    ("op", "gaussian-backward-input-size", "gy = r(1, 1, 2, 2)\n"
     "ops.gaussian_pool_backward(gy, [1, 1, 5, 5], [3, 3], [1, 1], [0, 0], 1.0)", "RuntimeError",
     r"grad_output of shape \[1, 1, 2, 2\]"),
    ("op", "stochastic-uniform-shape", "x = torch.rand(1, 2, 4, 4); u = torch.rand(1, 2, 3, 3)\n"
     "ops.stochastic_pool_forward(x, u, [2, 2], [2, 2])", "RuntimeError", r"uniform of shape \[1, 2, 3, 3\]"),
    ("op", "stochastic-uniform-dtype", "x = torch.rand(1, 2, 4, 4); u = torch.rand(1, 2, 2, 2).double()\n"
     "ops.stochastic_pool_forward(x, u, [2, 2], [2, 2])", "RuntimeError", r"uniform.*Double"),
    ("op", "stochastic-negative-input", "x = -torch.rand(1, 2, 4, 4); u = torch.rand(1, 2, 2, 2)\n"
     "ops.stochastic_pool_forward(x, u, [2, 2], [2, 2])", "RuntimeError", r"non-negative"),
    ("op", "stochastic-eval-backward-shape", "gy = r(1, 2, 3, 3); x = torch.rand(1, 2, 4, 4)\n"
     "ops.stochastic_pool_eval_backward(gy, x, [2, 2], [2, 2])", "RuntimeError",
     r"grad_output of shape \[1, 2, 3, 3\]"),
    # -- the raw ops on meta tensors
    ("meta", "max-kernel-0", "x = meta(1, 1, 4, 4)\n" + _maxp(k="[0, 2]"), "RuntimeError",
     r"kernel_size must be at least 1"),
    ("meta", "max-stride-0", "x = meta(1, 1, 4, 4)\n" + _maxp(s="[2, 0]"), "RuntimeError",
     r"stride must be at least 1"),
    ("meta", "max-padding-over-half", "x = meta(1, 1, 4, 4)\n" + _maxp(p="[2, 0]"), "RuntimeError", r"pad.*half"),
    ("meta", "max-kernel-larger-than-input", "x = meta(1, 1, 4, 4)\n" + _maxp(k="[5, 5]"), "RuntimeError",
     r"kernel.*larger.*input"),
    ("meta", "max-int-input", "x = meta(1, 1, 4, 4, dtype=torch.int32)\n" + _maxp(), "RuntimeError", r"Int"),
    ("meta", "max-backward-indices-dtype", "gy = meta(1, 1, 2, 2); i = meta(1, 1, 2, 2, dtype=torch.int32)\n"
     "ops.max_pool_backward(gy, i, [1, 1, 4, 4])", "RuntimeError", r"indices must be int64"),
    ("meta", "avg-divisor-0", "x = meta(1, 1, 4, 4)\nops.avg_pool_forward(x, [2, 2], [2, 2], [0, 0], False, True, 0)",
     "RuntimeError", r"divisor_override must be non-zero"),
    ("meta", "adaptive-avg-negative-size", "x = meta(1, 1, 4, 4)\nops.adaptive_avg_pool_forward(x, [-1, 2])",
     "RuntimeError", r"output_size must be non-negative"),
    ("meta", "lp-norm-type-0", "x = meta(1, 1, 4, 4)\nops.lp_pool_forward(x, 0.0, [2, 2], [2, 2], False)",
     "RuntimeError", r"norm_type must be positive"),
    ("meta", "kmax-k-larger-than-length", "x = meta(2, 3, 5)\nops.kmax_pool_forward(x, 6, -1)", "RuntimeError",
     _K6),
    ("meta", "kmax-dim-out-of-range", "x = meta(2, 3, 5)\nops.kmax_pool_forward(x, 2, 3)", "IndexError",
     r"[Dd]imension out of range.*3"),
    ("meta", "gaussian-sigma-0", "x = meta(1, 1, 4, 4)\nops.gaussian_pool_forward(x, [3, 3], [1, 1], [0, 0], 0.0)",
     "RuntimeError", r"sigma must be positive"),
    ("meta", "stochastic-uniform-shape", "x = meta(1, 2, 4, 4); u = meta(1, 2, 3, 3)\n"
     "ops.stochastic_pool_forward(x, u, [2, 2], [2, 2])", "RuntimeError", r"uniform of shape \[1, 2, 3, 3\]"),
    ("meta", "cpu-grad-output-meta-indices", "gy = r(1, 1, 2, 2); i = meta(1, 1, 2, 2, dtype=torch.long)\n"
     "ops.max_pool_backward(gy, i, [1, 1, 4, 4])", "RuntimeError", r"meta.*cpu|cpu.*meta"),
    # -- FakeTensorMode
    ("fake", "max-kernel-larger-than-input", "with fake: F.max_pool2d(torch.empty(1, 1, 4, 4), 5)", "RuntimeError",
     r"kernel.*larger.*input"),
    ("fake", "kmax-k-larger-than-length", "with fake: F.kmax_pool1d(torch.empty(2, 3, 5), 6)", "RuntimeError",
     _K6),
    ("fake", "avg-divisor-0", "with fake: F.avg_pool2d(torch.empty(1, 1, 4, 4), 2, divisor_override=0)",
     "RuntimeError", r"divisor"),
])


# ---- norm: batch / instance / group / layer norm, BatchNormNd, SyncBatchNorm (CPU, no process group) -------
# The setup binds the running statistics, so that the runner checks that the failed call left them alone.
_NX = "x = r(4, 3, 5); rm = torch.zeros(3); rv = torch.ones(3)\n"
_GX = "x = r(4, 6, 5)\n"
_BNF = "ops.batch_norm_forward({x}, {w}, {b}, {rm}, {rv}, {training}, 1e-5)"


def _bnf(x="x", w="None", b="None", rm="rm", rv="rv", training="True"):
    return _BNF.format(x=x, w=w, b=b, rm=rm, rv=rv, training=training)


_UPD = "ops.batch_norm_update_stats({rm}, {rv}, {mean}, {var}, {count}, 0.1)"


def _upd(rm="rm", rv="rv", mean="torch.ones(3)", var="torch.ones(3)", count="20"):
    return _UPD.format(rm=rm, rv=rv, mean=mean, var=var, count=count)


NORM = _table("norm", [
    # -- the public functions
    ("F", "batch-weight-shape", _NX + "F.batch_norm(x, rm, rv, r(4), training=True)", "RuntimeError",
     r"weight.*\[3\].*\[4\]|weight.*\(4,\).*3", TWIN),
    ("F", "batch-bias-shape", _NX + "F.batch_norm(x, rm, rv, None, r(3, 1), training=True)", "RuntimeError",
     r"bias.*\[3, 1\]|bias.*\(3, 1\)"),
    ("F", "batch-running-mean-shape", _NX + "rm = torch.zeros(4)\nF.batch_norm(x, rm, rv, training=True)",
     "RuntimeError", r"running_mean.*\[3\].*\[4\]|running_mean.*\(4,\)", TWIN),
    ("F", "batch-running-var-shape-eval", _NX + "rv = torch.ones(2)\nF.batch_norm(x, rm, rv)", "RuntimeError",
     r"running_var.*\[2\]|running_var.*\(2,\)", TWIN),
    ("F", "batch-running-mean-only", _NX + "F.batch_norm(x, rm, None, training=True)", "ValueError",
     r"running_mean and running_var", TWIN),
    ("F", "batch-eval-without-running-stats", _NX + "F.batch_norm(x, None, None)", "RuntimeError",
     r"running_mean", TWIN),
    ("F", "batch-int-input", _NX + "F.batch_norm(x.long(), rm, rv, training=True)", "NotImplementedError",
     r"torch\.int64", TWIN),
    ("F", "batch-complex-input", _NX + "F.batch_norm(x.cfloat(), rm, rv, training=True)", "NotImplementedError",
     r"torch\.complex64", TWIN),
    ("F", "batch-running-stats-int", _NX + "rm = torch.zeros(3).long(); rv = torch.ones(3).long()\n"
     "F.batch_norm(x, rm, rv, training=True)", "RuntimeError", r"running_mean.*Long|Long.*running_mean", TWIN),
    ("F", "batch-running-stats-meta", _NX + "F.batch_norm(x, rm.to('meta'), rv.to('meta'), training=True)",
     "RuntimeError", r"meta.*cpu|cpu.*meta", TWIN),
    ("F", "batch-meta-weight", _NX + "F.batch_norm(x, None, None, torch.ones(3, device='meta'), None, training=True)",
     "RuntimeError", r"device meta is not on the expected device cpu", TWIN),
    ("F", "batch-expanded-running-var", _NX + "rv = torch.ones(1).expand(3)\nF.batch_norm(x, rm, rv, training=True)",
     "RuntimeError", r"running_var.*must not share memory"),
    ("F", "batch-overlapping-running-mean", _NX + "rm = torch.zeros(2).as_strided((3,), (0,))\n"
     "F.batch_norm(x, rm, rv, training=True)", "RuntimeError", r"running_mean.*must not share memory"),
    ("F", "batch-running-mean-requires-grad", _NX + "rm = torch.zeros(3, requires_grad=True)\n"
     "F.batch_norm(x, rm, rv, training=True)", "RuntimeError", r"running_mean.*must not require grad", TWIN),
    ("F", "batch-one-value-per-channel", _NX + "F.batch_norm(r(1, 3), rm, rv, training=True)", "ValueError",
     r"more than 1 value per channel", TWIN),
    ("F", "batch-eps-negative", _NX + "F.batch_norm(x, rm, rv, eps=-1.0)", "ValueError", r"eps.*-1", TWIN),
    ("F", "batch-momentum-none", _NX + "F.batch_norm(x, rm, rv, training=True, momentum=None)", "TypeError",
     r"momentum", TWIN),
    ("F", "batch-input-1d", _NX + "F.batch_norm(r(4), rm, rv, training=True)", "RuntimeError",
     r"running_mean.*\(3,\).*\(4,\)", TWIN),
    ("F", "instance-weight-shape", _NX + "F.instance_norm(x, weight=r(4))", "RuntimeError",
     r"weight of shape \(4,\).*\(4, 3, 5\)", TWIN),
    ("F", "instance-running-mean-shape", _NX + "rm = torch.zeros(4); rv = torch.ones(4)\nF.instance_norm(x, rm, rv)",
     "RuntimeError", r"running_mean of shape \(4,\).*\(4, 3, 5\)", TWIN),
    ("F", "instance-expanded-running-var", _NX + "rv = torch.ones(1).expand(3)\nF.instance_norm(x, rm, rv)",
     "RuntimeError", r"running_var.*share memory|running_var.*single memory location", TWIN),
    ("F", "instance-running-mean-requires-grad", _NX + "rm = torch.zeros(3, requires_grad=True)\n"
     "F.instance_norm(x, rm, rv)", "RuntimeError", r"running_mean.*require", TWIN),
    ("F", "instance-int-input", _NX + "F.instance_norm(x.long())", "NotImplementedError", r"torch\.int64", TWIN),
    ("F", "instance-running-mean-only", _NX + "F.instance_norm(x, rm, None)", "ValueError",
     r"running_mean and running_var", TWIN),
    ("F", "instance-one-spatial-element", _NX + "F.instance_norm(r(4, 3, 1), rm, rv)", "ValueError",
     r"more than 1 spatial element", TWIN),
    ("F", "group-not-dividing", _GX + "F.group_norm(x, 4)", "RuntimeError", r"\[4, 6, 5\].*4|6 channels.*4", TWIN),
    ("F", "group-num-groups-0", _GX + "F.group_norm(x, 0)", "ZeroDivisionError", r"num_groups", TWIN),
    ("F", "group-num-groups-float", _GX + "F.group_norm(x, 1.5)", "TypeError", r"'num_groups'.*1\.5", TWIN),
    ("F", "group-weight-shape", _GX + "F.group_norm(x, 2, r(5))", "RuntimeError", r"weight.*\[5\]|weight.*\(5,\)",
     TWIN),
    ("F", "group-int-input", _GX + "F.group_norm(x.long(), 2)", "NotImplementedError", r"torch\.int64", TWIN),
    ("F", "group-meta-weight", _GX + "F.group_norm(x, 1, torch.ones(6, device='meta'))", "RuntimeError",
     r"device meta is not on the expected device cpu"),
    ("F", "group-input-1d", _GX + "F.group_norm(r(6), 2)", "RuntimeError", r"\(6,\)", TWIN),
    ("F", "layer-shape-mismatch", _NX + "F.layer_norm(x, (4,))", "RuntimeError", r"\[4, 3, 5\].*normalized_shape \[4\]",
     TWIN),
    ("F", "layer-shape-empty", _NX + "F.layer_norm(x, ())", "RuntimeError", r"normalized_shape", TWIN),
    ("F", "layer-shape-float", _NX + "F.layer_norm(x, (1.5,))", "TypeError", r"'normalized_shape'.*1\.5", TWIN),
    ("F", "layer-shape-negative", _NX + "F.layer_norm(x, (-5,))", "RuntimeError", r"normalized_shape.*-5", TWIN),
    ("F", "layer-weight-shape", _NX + "F.layer_norm(x, (5,), r(4))", "RuntimeError", r"weight.*\[4\]|weight.*\(4,\)",
     TWIN),
    ("F", "layer-int-input", _NX + "F.layer_norm(x.long(), (5,))", "NotImplementedError", r"torch\.int64", TWIN),
    ("F", "layer-complex-input", _NX + "F.layer_norm(x.cfloat(), (5,))", "NotImplementedError", r"torch\.complex64",
     TWIN),
    ("F", "layer-eps-string", _NX + "F.layer_norm(x, (5,), eps='a')", "TypeError", r"'eps'", TWIN),
    ("F", "layer-meta-bias", _NX + "F.layer_norm(x, (5,), None, torch.ones(5, device='meta'))", "RuntimeError",
     r"device meta is not on the expected device cpu"),
    # -- the modules
    ("nn", "batch-channels", "m = nn.BatchNorm1d(3)\nm(r(4, 4, 5))", "RuntimeError",
     r"weight must have shape \[4\].*\[4, 4, 5\].*got \[3\]", TWIN),
    ("nn", "batch-rank", "m = nn.BatchNorm2d(3)\nm(r(4, 3, 5))", "ValueError", r"4D input \(got 3D input\)", TWIN),
    ("nn", "batch-one-value-per-channel", "m = nn.BatchNorm1d(3)\nm(r(1, 3))", "ValueError",
     r"more than 1 value per channel", TWIN),
    ("nn", "batch-int-input", "m = nn.BatchNorm1d(3)\nm(torch.ones(4, 3, dtype=torch.long))", "NotImplementedError",
     r"torch\.int64", TWIN),
    ("nn", "batch-meta-input", "m = nn.BatchNorm1d(3)\nm(meta(4, 3))", "RuntimeError", r"meta.*cpu|cpu.*meta", TWIN),
    ("nn", "batch-expanded-running-var", "m = nn.BatchNorm1d(3)\nm.running_var = torch.ones(1).expand(3)\n"
     "m(r(4, 3))", "RuntimeError", r"running_var.*must not share memory"),
    ("nn", "batch-running-mean-requires-grad", "m = nn.BatchNorm1d(3)\nm.running_mean.requires_grad_()\n"
     "m(r(4, 3))", "RuntimeError", r"running_mean.*must not require grad"),
    ("nn", "batch-momentum-none-channels", "m = nn.BatchNorm1d(3, momentum=None)\nm(r(4, 4))", "RuntimeError",
     r"weight must have shape \[4\].*\[4, 4\].*got \[3\]", TWIN),
    ("nn", "sync-channels", "m = nn.SyncBatchNorm(3)\nm(r(4, 4, 5))", "RuntimeError",
     r"weight must have shape \[4\].*\[4, 4, 5\].*got \[3\]",
     "m = tnn.BatchNorm1d(3)\nm(r(4, 4, 5))"),
    ("nn", "sync-input-1d", "m = nn.SyncBatchNorm(3)\nm(r(3))", "ValueError", r"at least 2D input \(got 1D", TWIN),
    ("nn", "sync-no-channels", "m = nn.SyncBatchNorm(3)\nm(r(4, 0))", "ValueError", r"non-zero", TWIN),
    ("nn", "sync-one-value-per-channel", "m = nn.SyncBatchNorm(3)\nm(r(1, 3))", "ValueError",
     r"more than 1 value per channel", "m = tnn.BatchNorm1d(3)\nm(r(1, 3))"),
    ("nn", "sync-expanded-running-mean", "m = nn.SyncBatchNorm(3)\nm.running_mean = torch.zeros(1).expand(3)\n"
     "m(r(4, 3))", "RuntimeError", r"running_mean.*must not share memory"),
    ("nn", "group-constructor", "nn.GroupNorm(4, 6)", "ValueError", r"\(6\).*\(4\)", TWIN),
    ("nn", "group-channels", "m = nn.GroupNorm(2, 4)\nm(r(2, 6, 5))", "RuntimeError", r"weight.*\[4\]|\(2, 6, 5\)",
     TWIN),
    ("nn", "layer-shape", "m = nn.LayerNorm(5)\nm(r(2, 4))", "RuntimeError", r"\[2, 4\].*normalized_shape \[5\]", TWIN),
    ("nn", "instance-affine-channels", "m = nn.InstanceNorm1d(3, affine=True)\nm(r(2, 4, 5))", "ValueError",
     r"num_features \(3\).*4", TWIN),
    ("nn", "instance-one-spatial-element", "m = nn.InstanceNorm1d(3, track_running_stats=True)\nm(r(2, 3, 1))",
     "ValueError", r"more than 1 spatial element", TWIN),
    ("nn", "instance-rank", "m = nn.InstanceNorm2d(3)\nm(r(5))", "ValueError", r"3D or 4D input \(got 1D", TWIN),
    ("nn", "instance-running-stats-channels", "m = nn.InstanceNorm1d(3, track_running_stats=True)\nm(r(2, 4, 5))",
     "RuntimeError", r"running_mean of shape \(3,\).*\(2, 4, 5\)", TWIN),
    # -- the raw ops
    ("op", "batch-weight-shape", _NX + _bnf(w="r(4)"), "RuntimeError", r"weight must have shape \[3\].*\[4\]"),
    ("op", "batch-running-var-missing", _NX + _bnf(rv="None"), "RuntimeError", r"running_mean.*running_var"),
    ("op", "batch-eval-without-running-stats", _NX + _bnf(rm="None", rv="None", training="False"), "RuntimeError",
     r"running"),
    ("op", "batch-int-input", _NX + _bnf(x="x.long()"), "RuntimeError", r"Long"),
    ("op", "batch-input-1d", _NX + _bnf(x="r(4)"), "RuntimeError", r"\(N, C, \*\).*\[4\]"),
    ("op", "update-stats-running-mean-shape", _NX + "rm = torch.zeros(4)\n" + _upd(), "RuntimeError",
     r"running_mean.*\[4\]"),
    ("op", "update-stats-mean-shape", _NX + _upd(mean="torch.ones(4)"), "RuntimeError", r"mean.*\[4\]"),
    ("op", "update-stats-count-negative", _NX + _upd(count="-1"), "RuntimeError", r"count must be non-negative"),
    ("op", "update-stats-expanded", _NX + "rv = torch.ones(1).expand(3)\n" + _upd(), "RuntimeError",
     r"running_var.*must not share memory"),
    ("op", "update-stats-requires-grad", _NX + "rm = torch.zeros(3, requires_grad=True)\n" + _upd(), "RuntimeError",
     r"running_mean.*must not require grad"),
    ("op", "stats-int-input", _NX + "ops.batch_norm_stats(x.int())", "RuntimeError", r"Int"),
    ("op", "elemt-invstd-shape", _NX + "ops.batch_norm_elemt(x, None, None, torch.zeros(3), torch.ones(4))",
     "RuntimeError", r"invstd.*\[4\]"),
    ("op", "backward-reduce-shape", _NX + "ops.batch_norm_backward_reduce(r(4, 3, 6), x, torch.zeros(3))",
     "RuntimeError", r"grad_output.*\[4, 3, 6\]"),
    ("op", "backward-elemt-sum-shape", _NX + "ops.batch_norm_backward_elemt(r(4, 3, 5), x, torch.zeros(3), "
     "torch.ones(3), None, torch.zeros(2), torch.zeros(3), 20)", "RuntimeError", r"sum_dy.*\[2\]"),
    ("op", "backward-grad-output-shape", _NX + "ops.batch_norm_backward(r(4, 3, 6), x, None, torch.zeros(3), "
     "torch.ones(3), True, 1e-5)", "RuntimeError", r"grad_output.*\[4, 3, 6\]"),
    ("op", "group-num-groups-0", _GX + "ops.group_norm_forward(x, None, None, 0, 1e-5)", "RuntimeError",
     r"num_groups must be positive, got 0"),
    ("op", "group-not-dividing", _GX + "ops.group_norm_forward(x, None, None, 4, 1e-5)", "RuntimeError",
     r"6 channels.*4"),
    ("op", "group-backward-mean-shape", _GX + "ops.group_norm_backward(r(4, 6, 5), x, None, torch.zeros(4, 3), "
     "torch.ones(4, 2), 2, 1e-5)", "RuntimeError", r"mean must have shape \[4, 2\]"),
    ("op", "layer-shape-mismatch", _NX + "ops.layer_norm_forward(x, [4], None, None, 1e-5)", "RuntimeError",
     r"normalized_shape.*\[4\]"),
    ("op", "layer-shape-empty", _NX + "ops.layer_norm_forward(x, [], None, None, 1e-5)", "RuntimeError",
     r"normalized_shape must have at least one dimension"),
    ("op", "layer-backward-rstd-shape", _NX + "ops.layer_norm_backward(r(4, 3, 5), x, [5], None, torch.zeros(12), "
     "torch.ones(11), 1e-5)", "RuntimeError", r"rstd.*\[12\]"),
    # -- the raw ops on meta tensors
    ("meta", "batch-weight-shape", "x = meta(4, 3, 5); rm = meta(3); rv = meta(3)\n" + _bnf(w="meta(4)"),
     "RuntimeError", r"weight must have shape \[3\]"),
    ("meta", "batch-int-input", "x = meta(4, 3, 5, dtype=torch.long); rm = meta(3); rv = meta(3)\n" + _bnf(),
     "RuntimeError", r"Long"),
    ("meta", "update-stats-mean-shape", "rm = meta(3); rv = meta(3)\n" + _upd(mean="meta(4)", var="meta(3)"),
     "RuntimeError", r"mean.*\[4\]"),
    ("meta", "update-stats-count-negative", "rm = meta(3); rv = meta(3)\n" + _upd(mean="meta(3)", var="meta(3)",
                                                                                  count="-1"),
     "RuntimeError", r"count must be non-negative"),
    ("meta", "group-not-dividing", "x = meta(4, 6, 5)\nops.group_norm_forward(x, None, None, 4, 1e-5)",
     "RuntimeError", r"6 channels.*4"),
    ("meta", "group-num-groups-0", "x = meta(4, 6, 5)\nops.group_norm_forward(x, None, None, 0, 1e-5)",
     "RuntimeError", r"num_groups must be positive"),
    ("meta", "layer-shape-mismatch", "x = meta(4, 3, 5)\nops.layer_norm_forward(x, [4], None, None, 1e-5)",
     "RuntimeError", r"normalized_shape.*\[4\]"),
    ("meta", "stats-input-1d", "x = meta(4)\nops.batch_norm_stats(x)", "RuntimeError", r"\(N, C, \*\).*\[4\]"),
    ("meta", "cpu-input-meta-running-mean", _NX + _bnf(rm="meta(3)", rv="meta(3)"), "RuntimeError",
     r"meta.*cpu|cpu.*meta"),
    # -- FakeTensorMode
    ("fake", "batch-weight-shape", "with fake: F.batch_norm(torch.empty(4, 3, 5), None, None, torch.empty(4), "
     "training=True)", "RuntimeError", r"weight.*\[3\]|weight.*\(4,\)"),
    ("fake", "group-not-dividing", "with fake: F.group_norm(torch.empty(4, 6, 5), 4)", "RuntimeError",
     r"6 channels.*4"),
    ("fake", "layer-shape-mismatch", "with fake: F.layer_norm(torch.empty(4, 3, 5), (4,))", "RuntimeError",
     r"normalized_shape.*\[4\]"),
])

CASES = {**CONV, **LOCAL, **POOL, **NORM}

# ---- the runner ---------------------------------------------------------------------------------
# One child process (the "zygote") imports torch and the library once, then forks one grandchild
# per case, so that a case costs a fork (milliseconds) and not an import (seconds), and a crash,
# abort or hang ends that grandchild only. torch.set_num_threads(1) before anything runs keeps
# OpenMP from starting a thread pool, which a forked child could not use.
_ZYGOTE = r'''
import json, math, os, re, resource, select, signal, sys, time
import torch
torch.set_num_threads(1)
import torch_cnn_ops as tco
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

FakeTensorMode()  # its first construction imports for a second: once here, not in every grandchild

PARALLEL = int(sys.argv[1])
CASES = json.load(sys.stdin)
# A case may allocate what a wrong size asks for: the address space of a grandchild is capped,
# so that an absurd allocation fails in the case (a wrong message) instead of in the machine.
_HEADROOM = 4 << 30


def _scope():
    def meta(*shape, dtype=torch.float32):
        return torch.empty(shape, dtype=dtype, device="meta")
    return {"torch": torch, "tco": tco, "F": tco.F, "nn": tco.nn, "grad": tco.grad, "ops": torch.ops.cnn_ops,
            "TF": torch.nn.functional, "tnn": torch.nn, "tgrad": torch.nn.grad, "r": torch.randn, "meta": meta,
            "fake": FakeTensorMode(), "math": math}


def _tensors(scope):
    """The caller's state a failed call must leave alone: every tensor bound in the case's scope
    (also inside lists and tuples), and every parameter and buffer of its modules."""
    found = {}
    for key, value in scope.items():
        if isinstance(value, torch.Tensor):
            found[key] = value
        elif isinstance(value, (list, tuple)):
            found.update({f"{key}[{i}]": v for i, v in enumerate(value) if isinstance(v, torch.Tensor)})
        elif isinstance(value, torch.nn.Module):
            found.update({f"{key}.{n}": v for n, v in value.state_dict(keep_vars=True).items()})
    return found


def _state(t):
    values = None
    if t.device.type != "meta" and not isinstance(t, FakeTensor):
        values = t.detach().clone()
    return (tuple(t.shape), t.stride(), t.storage_offset(), t.dtype, str(t.device), t.requires_grad), values


def _same(a, b):
    if a[0] != b[0]:
        return False
    if a[1] is None or b[1] is None:
        return a[1] is None and b[1] is None
    x, y = a[1], b[1]
    if x.is_floating_point() or x.is_complex():
        return bool(((x == y) | (x.isnan() & y.isnan())).all())
    return torch.equal(x, y)


def _describe(e):
    return f"{type(e).__name__}: {str(e)[:1500]}"


def _run(case):
    *setup, call = case["code"].rstrip().split("\n")
    scope = _scope()
    exec("\n".join(setup), scope)
    before = {k: _state(t) for k, t in _tensors(scope).items()}
    error = None
    try:
        exec(call, scope)
    except Exception as e:
        error = e
    out = {"got": None if error is None else _describe(error), "torch": None}
    expected, pattern = case["error"], case["pattern"]
    if error is None:
        out["result"] = f"no error: expected {expected} matching {pattern!r}"
    elif type(error).__name__ != expected or not re.search(pattern, str(error), re.S):
        out["result"] = f"expected {expected} matching {pattern!r}, got {_describe(error)}"
    else:
        after = _tensors(scope)
        changed = [k for k, s in before.items() if k not in after or not _same(s, _state(after[k]))]
        out["result"] = f"the failed call changed {', '.join(changed)}" if changed else "ok"
    if case["torch"] is not None:
        # torch's own layer on the same input must raise the class the case expects
        try:
            exec(case["torch"], _scope())
            out["torch"] = "no error"
        except Exception as e:
            out["torch"] = _describe(e)
            if type(e).__name__ != expected and out["result"] == "ok":
                out["result"] = f"torch raises {type(e).__name__}, not {expected}: {str(e)[:300]}"
        if out["torch"] == "no error" and out["result"] == "ok":
            out["result"] = "torch raises no error for this input"
    return out


def _grandchild(case, fd):
    limit = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE") + _HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    start = time.monotonic()
    try:
        out = _run(case)
    except BaseException as e:
        out = {"result": f"the case itself failed: {_describe(e)}"}
    out["seconds"] = round(time.monotonic() - start, 3)
    with os.fdopen(fd, "wb") as f:
        f.write(json.dumps(out).encode())


results, pending, running = {}, list(CASES.items()), {}
while pending or running:
    while pending and len(running) < PARALLEL:
        name, case = pending.pop(0)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            _grandchild(case, write_fd)
            os._exit(0)
        os.close(write_fd)
        running[read_fd] = [name, pid, time.monotonic() + case["timeout"], b""]
    ready, _, _ = select.select(list(running), [], [], 0.2)
    for fd in ready:
        chunk = os.read(fd, 1 << 16)
        if chunk:
            running[fd][3] += chunk
            continue
        name, pid, _, data = running.pop(fd)
        os.close(fd)
        status = os.waitpid(pid, 0)[1]
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            results[name] = {"result": f"crashed with signal {sig} ({signal.Signals(sig).name})"}
        elif not data:
            results[name] = {"result": f"exited with code {os.WEXITSTATUS(status)} and no result"}
        else:
            results[name] = json.loads(data)
    now = time.monotonic()
    for fd, (name, pid, deadline, _) in list(running.items()):
        if now > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
            del running[fd]
            results[name] = {"result": f"hang: no result after {CASES[name]['timeout']} s (killed)"}
print(json.dumps(results))
'''


def run_cases(cases: dict, parallel: int = 2) -> dict:
    """name -> {"result": "ok" or what went wrong, "got": what the call raised, "torch": what
    torch raised, "seconds"} for every case, each run in a forked grandchild of one child."""
    # The child imports the torch_cnn_ops this process would (the source tree, or an installed wheel).
    root = os.path.dirname(os.path.dirname(importlib.util.find_spec("torch_cnn_ops").origin))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
    payload = json.dumps({name: case._asdict() for name, case in cases.items()})
    run = subprocess.run([sys.executable, "-c", _ZYGOTE, str(parallel)], input=payload, capture_output=True, text=True,
                         env=env, timeout=1200)
    assert run.returncode == 0, f"the child process died (code {run.returncode}):\n{run.stderr[-3000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    return run_cases({**CASES, **{name: case for name, (case, _) in _CANARIES.items()}})


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(results, name):
    assert results[name]["result"] == "ok", results[name]


# Cases that must fail, one per way a case can fail: the runner has to report each as such
# (a runner that passed everything would pass this file too).
_CANARIES = {
    "canary-segfault": (Case("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)", "RuntimeError", "."),
                        r"crashed with signal 11 \(SIGSEGV\)"),
    "canary-abort": (Case("import os\nos.abort()", "RuntimeError", "."), r"crashed with signal 6 \(SIGABRT\)"),
    "canary-hang": (Case("import time\ntime.sleep(30)", "RuntimeError", ".", timeout=1.0), r"hang"),
    "canary-no-error": (Case("F.conv2d(r(1, 2, 5, 5), r(3, 2, 3, 3))", "RuntimeError", "."), r"no error"),
    "canary-wrong-class": (Case("int('x')", "RuntimeError", "."), r"got ValueError"),
    "canary-wrong-message": (Case("raise RuntimeError('abc')", "RuntimeError", "xyz"), r"got RuntimeError: abc"),
    "canary-mutation": (Case("t = torch.zeros(3)\nt.add_(1); raise RuntimeError('late')", "RuntimeError", "late"),
                        r"changed t"),
    "canary-module-buffer": (Case("m = tnn.BatchNorm1d(3)\nm(r(1, 3))", "ValueError", "more than 1 value"),
                             r"changed m\.num_batches_tracked"),
    "canary-torch-class": (Case("raise ValueError('x')", "ValueError", "x", torch="int([])"),
                           r"torch raises TypeError"),
}


def test_runner_reports_each_failure(results):
    for name, (_, expected) in _CANARIES.items():
        assert re.search(expected, results[name]["result"]), (name, results[name])


def test_every_family_covers_every_path():
    for family in ("conv", "local", "pool", "norm"):
        names = [n for n in CASES if n.startswith(family + "-")]
        assert len(names) >= 20, (family, len(names))
        for path in PATHS:
            assert any(n.startswith(f"{family}-{path}-") for n in names), (family, path)


def test_legal_backward_output_sizes_still_pass():
    # Every output size a forward convolution gives for some trailing pad is accepted by the
    # backward ops (the new lower bound refuses only sizes no forward gives).
    import torch
    import torch_cnn_ops  # noqa: F401

    ops = torch.ops.cnn_ops
    w = torch.randn(3, 2, 3, 3)
    for size in range(3, 10):
        for stride in (1, 2, 3):
            for pad, pad_end in ((0, 0), (1, 1), (0, 2), (1, 0)):
                x = torch.randn(1, 2, size, size)
                y = ops.conv_forward(x, w, None, [stride] * 2, [pad] * 2, [pad_end] * 2, [1, 1], 1, "auto")
                gx = ops.conv_input_backward(torch.ones_like(y), w, list(x.shape), [stride] * 2, [pad] * 2, [1, 1],
                                             1, "auto")
                gw = ops.conv_weight_backward(torch.ones_like(y), x, list(w.shape), [stride] * 2, [pad] * 2, [1, 1],
                                              1, "auto")
                assert gx.shape == x.shape and gw.shape == w.shape


def test_strided_running_statistics_move_as_torchs():
    # Not bad input: a strided (non-contiguous, not overlapping) running statistic is updated in
    # place through the view, as torch's batch and instance norm do, rather than refused.
    import torch
    import torch_cnn_ops as tco

    x = torch.randn(4, 3, 5, dtype=torch.float64)
    for name in ("batch_norm", "instance_norm"):
        ours = (torch.rand(6, dtype=torch.float64), torch.rand(6, dtype=torch.float64) + 1)
        theirs, before = tuple(t.clone() for t in ours), ours[0].clone()
        getattr(tco.F, name)(x, ours[0][::2], ours[1][::2], None, None, True, 0.3)
        getattr(torch.nn.functional, name)(x, theirs[0][::2], theirs[1][::2], None, None, True, 0.3)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, msg=name)
        assert not torch.equal(ours[0][::2], before[::2]) and torch.equal(ours[0][1::2], before[1::2]), name


if __name__ == "__main__":
    # python tests/test_bad_input.py [WORD]: every case (whose name contains WORD) and its result
    chosen = {n: c for n, c in CASES.items() if len(sys.argv) < 2 or sys.argv[1] in n}
    for name, out in run_cases(chosen).items():
        print(f"{'ok  ' if out['result'] == 'ok' else 'FAIL'} {name} ({out.get('seconds')} s)")
        if out["result"] != "ok":
            print(f"     {out['result']}")
        print(f"     got:   {out.get('got')}\n     torch: {out.get('torch')}")
