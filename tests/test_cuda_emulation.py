"""The host emulation of the CUDA kernels (tests/cuda_emulation) reports what compute-sanitizer
or the driver would, and shows the wrong answers of code that relies on what CUDA does not
promise: each canary kernel (cuda_emulation/canaries.cu) has one such bug."""

import re

import pytest
import torch

import cuda_emulation
from conftest import EMULATE_CUDA

pytestmark = pytest.mark.skipif(not EMULATE_CUDA, reason="the emulation runs where no GPU is visible")

VALUES = torch.arange(64, dtype=torch.float32) / 8


@pytest.mark.parametrize("name,pattern", [
    ("exit_before_barrier", r"thread \(5,0,0\) exited while thread \(0,0,0\) at .*canaries.cu:\d+ waits at __syncthreads"),
    ("divergent_barriers", r"wait at different __syncthreads"),
    ("shuffle_with_exited_lane", r"names lane 3, which has exited"),
    ("shuffle_outside_mask", r"shuffle reads lane 20, which is not in its mask"),
    ("shared_write_out_of_bounds", r"shared memory written out of bounds of cells \(128 bytes\)"),
    ("too_many_threads", r"invalid launch: .*block \(2048,1,1\).*more than 1024 threads"),
    ("over_launch_bounds", r"more threads per block than the kernel's __launch_bounds__ \(64\)"),
    ("too_much_shared", r"16384 bytes of static and 40960 bytes of dynamic shared memory"),
])
def test_reports_the_bug(name, pattern):
    message, _ = cuda_emulation.run_canary(name, VALUES)
    assert message, f"{name}: the emulation reported nothing"
    assert re.search(pattern, message), message
    assert name in message or "canaries.cu" in message  # the kernel or its file is named


def test_unwritten_shared_memory_reads_as_nan():
    message, out = cuda_emulation.run_canary("shared_read_unwritten", VALUES)
    assert message == ""
    assert torch.equal(out[:32:2], torch.ones(16)) and bool(out[1:32:2].isnan().all())


def test_lockstep_warp_reduction_is_wrong_and_shuffles_are_right():
    expected = VALUES.sum().item()
    message, out = cuda_emulation.run_canary("lockstep_warp_sum", VALUES)
    assert message == "" and out[0].item() != pytest.approx(expected)
    message, out = cuda_emulation.run_canary("shuffle_warp_sum", VALUES)
    assert message == "" and out[0].item() == pytest.approx(expected)
    message, out = cuda_emulation.run_canary("within_launch_bounds", VALUES)
    assert message == "" and torch.equal(out, torch.ones(64))


def test_errors_reach_the_caller_as_runtime_errors():
    # An invalid launch inside an op: the glue's status check raises with the emulation's text.
    message, _ = cuda_emulation.run_canary("too_many_threads", VALUES)
    assert "cudaErrorInvalidConfiguration" not in message  # the text, not the name
    with cuda_emulation.EmulatedCuda():
        out = torch.ops.cnn_ops.max_pool_forward(torch.randn(1, 2, 4, 4), [2, 2], [2, 2], [0, 0], [1, 1], False, False)
    assert out[0].shape == (1, 2, 2, 2)
