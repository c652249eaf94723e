"""Bad input on the raw ops and the public functions: a clear error of torch's class naming the
argument, never a crash, a silent answer or a changed tensor.

The cases run in a child process, so that a crash (a segfault in a kernel) fails the test
instead of ending the test run.
"""

import json
import subprocess
import sys
import textwrap

import pytest

# name -> (code run with torch, tco, F = tco.F and ops = torch.ops.cnn_ops in scope; the
# exception class it must raise; a pattern its message must contain; code that must then be
# true (the state the failed call must have left alone), or None).
CASES = {
    "adaptive-avg-backward-6-spatial": (
        "ops.adaptive_avg_pool_backward(torch.rand(1, 1, 2, 2, 2, 2, 2, 2), [1, 1] + [4] * 6)",
        "RuntimeError", "input_size must have 1, 2 or 3 spatial dimensions", None),
    "adaptive-avg-backward-4-spatial": (
        "ops.adaptive_avg_pool_backward(torch.rand(1, 1, 2, 2, 2, 2), [1, 1] + [4] * 4)",
        "RuntimeError", "input_size", None),
    "conv-padding-overflow": (
        "F.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3), padding=2**63 - 1)",
        "RuntimeError", "overflows", None),
    "conv-dilation-overflow": (
        "F.conv2d(torch.randn(1, 1, 4, 4), torch.randn(1, 1, 3, 3), dilation=2**62)",
        "RuntimeError", "overflows", None),
    "local-dilation-overflow": (
        "F.tiled_conv2d(torch.randn(1, 2, 4, 4), torch.randn(2, 2, 3, 2, 3, 3), dilation=2**62)",
        "RuntimeError", "overflows", None),
    "conv-weight-backward-grad-output-too-small": (
        "ops.conv_weight_backward(torch.randn(2, 6, 5, 6), torch.randn(2, 4, 8, 8), [6, 4, 3, 3], [1, 1], [0, 0],"
        " [1, 1], 1, 'auto')",
        "RuntimeError", "grad_output of shape .* too small", None),
    "conv-input-backward-grad-output-too-small": (
        "ops.conv_input_backward(torch.randn(2, 6, 5, 6), torch.randn(6, 4, 3, 3), [2, 4, 8, 8], [1, 1], [0, 0],"
        " [1, 1], 1, 'auto')",
        "RuntimeError", "grad_output of shape .* too small", None),
    "conv-input-backward-strided-too-small": (
        "ops.conv_input_backward(torch.randn(2, 6, 3, 3), torch.randn(6, 4, 3, 3), [2, 4, 9, 9], [2, 2], [0, 0],"
        " [1, 1], 1, 'auto')",
        "RuntimeError", "too small", None),
    "local-weight-backward-grad-output-too-small": (
        "ops.local_weight_backward(torch.randn(1, 3, 1, 2), torch.randn(1, 2, 4, 4), [2, 2, 3, 2, 3, 3], [1, 1],"
        " [0, 0], [1, 1])",
        "RuntimeError", "too small", None),
    "batch-norm-expanded-running-var": (
        "m = torch.zeros(3); v = torch.ones(1).expand(3)\n"
        "F.batch_norm(torch.randn(4, 3), m, v, training=True)",
        "RuntimeError", "running_var.*must not share memory",
        "torch.equal(m, torch.zeros(3)) and torch.equal(v, torch.ones(3))"),
    "batch-norm-running-mean-requires-grad": (
        "m = torch.zeros(3, requires_grad=True); v = torch.ones(3)\n"
        "F.batch_norm(torch.randn(4, 3), m, v, training=True)",
        "RuntimeError", "running_mean.*must not require grad",
        "torch.equal(m.detach(), torch.zeros(3)) and torch.equal(v, torch.ones(3))"),
    "batch-norm-meta-weight": (
        "F.batch_norm(torch.randn(4, 3), None, None, torch.ones(3, device='meta'), None, training=True)",
        "RuntimeError", "device meta is not on the expected device cpu", None),
    "group-norm-meta-weight": (
        "F.group_norm(torch.randn(4, 3, 5), 1, torch.ones(3, device='meta'))",
        "RuntimeError", "device meta is not on the expected device cpu", None),
    "layer-norm-meta-bias": (
        "F.layer_norm(torch.randn(4, 3, 5), (5,), None, torch.ones(5, device='meta'))",
        "RuntimeError", "device meta is not on the expected device cpu", None),
    "maxout-dim-out-of-range": (
        "F.channel_max_pool(torch.randn(2, 4, 3), 2, dim=4)", "IndexError", "out of range", None),
}

_CHILD = """
import json, re, sys, torch, torch_cnn_ops as tco
F, ops = tco.F, torch.ops.cnn_ops
results = {}
for name, (code, expected, pattern, state) in json.loads(sys.argv[1]).items():
    scope = {"torch": torch, "tco": tco, "F": F, "ops": ops}
    try:
        exec(code, scope)
        results[name] = "no error"
    except Exception as e:
        if type(e).__name__ != expected:
            results[name] = f"{type(e).__name__}: {e}"
        elif not re.search(pattern, str(e)):
            results[name] = f"message {str(e)!r} does not match {pattern!r}"
        elif state is not None and not eval(state, scope):
            results[name] = "the failed call changed a tensor"
        else:
            results[name] = "ok"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results():
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(_CHILD), json.dumps(CASES)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, f"the child process died (code {run.returncode}):\n{run.stderr[-2000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_raises_cleanly(results, name):
    assert results[name] == "ok", results[name]


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
