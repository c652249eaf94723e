"""Shared machinery of the test suite: devices, seeding, random inputs and tolerances.

Every family's tests reuse these helpers, so that they all run on the same devices and
compare against references with the same, dtype-based tolerances.
"""

import pytest
import torch

# ---- devices ------------------------------------------------------------------------------
# CUDA cases are always collected and run wherever a GPU is visible; on a machine without one
# they are reported as skipped (the only skip this suite allows).
HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device visible")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


@pytest.fixture(params=DEVICES)
def device(request):
    """The device a value test runs on: "cpu", and "cuda" where a GPU is visible."""
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    """A fixed seed for every test, so that failures reproduce."""
    torch.manual_seed(0)
    yield


# ---- dtypes and tolerances ----------------------------------------------------------------
FLOAT_DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
LOW_PRECISION_DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# (rtol, atol) per dtype of the tensor under test, for a comparison against a float64
# reference computed from the very same (already rounded) inputs. The absolute tolerance is
# multiplied by the largest magnitude of the reference (at least 1), so it stands for "a few
# units in the last place of the result's scale": float32 and the half types accumulate in
# float32 and round once at the end, which these bounds allow with a margin; a wrong index or a
# missing term is off by O(1) relative to the scale and fails by orders of magnitude.
_TOLERANCES = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (1e-5, 1e-5),
    torch.bfloat16: (2 * 2.0**-7, 2 * 2.0**-7),  # 2 eps of bfloat16
    torch.float16: (2 * 2.0**-10, 2 * 2.0**-10),  # 2 eps of float16
}


def tolerances(dtype):
    """(rtol, atol) for results of `dtype` compared with a float64 reference (atol before scaling)."""
    return _TOLERANCES[dtype]


def assert_close_to_reference(actual, expected, dtype=None, msg=""):
    """Checks `actual` (of `dtype`, any device) against a reference computed in float64.

    `dtype` defaults to `actual.dtype`; it picks the tolerances. Shapes must match exactly.
    """
    assert actual is not None, f"{msg}: got None"
    dtype = actual.dtype if dtype is None else dtype
    actual64 = actual.detach().to("cpu", torch.float64)
    expected64 = expected.detach().to("cpu", torch.float64)
    assert actual64.shape == expected64.shape, f"{msg}: shape {tuple(actual64.shape)} != {tuple(expected64.shape)}"
    rtol, atol = tolerances(dtype)
    scale = max(1.0, expected64.abs().max().item()) if expected64.numel() else 1.0
    torch.testing.assert_close(
        actual64, expected64, rtol=rtol, atol=atol * scale, msg=lambda m: f"{msg} ({dtype}): {m}"
    )


# ---- random inputs ------------------------------------------------------------------------
def randn(*shape, dtype=torch.float64, device="cpu", requires_grad=False):
    """Normal random values drawn in float64 on the CPU (so that they are the same on every
    device), rounded to `dtype` and moved to `device`."""
    t = torch.randn(*shape, dtype=torch.float64).to(dtype).to(device)
    return t.requires_grad_(requires_grad)


def as_reference(t, requires_grad=None):
    """A float64 CPU copy of `t` (a leaf) for computing references; keeps `requires_grad` unless told."""
    if t is None:
        return None
    rg = t.requires_grad if requires_grad is None else requires_grad
    return t.detach().to("cpu", torch.float64).clone().requires_grad_(rg)
