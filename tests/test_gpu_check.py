"""scripts/gpu_check.sh and its benchmark (torch_cnn_ops/benchmark/gpu.py), tried where no GPU
is needed: the script's syntax, the benchmark on the CPU (wall clock, tiny shapes), the CUDA
timer's rounds with stand-in events, and the whole script without its build, on a few test
cases, with the benchmark on the CPU, down to the merged summary and gpu_check.json.

The repository's files are found from this file's path, so the tests also run against an
installed wheel from outside the source tree (.ci/wheel_check.sh).
"""

import importlib.machinery
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import torch_cnn_ops
from torch_cnn_ops.benchmark import gpu

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "gpu_check.sh"
FAMILIES = ("conv", "local", "pool", "norm")


def _env(**extra):
    """The environment of a child process that imports the torch_cnn_ops this test imported."""
    env = dict(os.environ)
    package_root = str(Path(torch_cnn_ops.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _check_rows(result):
    """A measured row (both passes) for every family, with positive times and ratios."""
    rows = result["rows"]
    assert not [r for r in rows if "error" in r], [r for r in rows if "error" in r]
    for family in FAMILIES:
        for mode in gpu.PASSES:
            measured = [r for r in rows if r["family"] == family and r["pass"] == mode]
            assert measured, f"no {mode} row for {family}"
            for r in measured:
                assert r["baseline ms"] > 0 and r["ours ms"] > 0 and r["ours/baseline"] > 0, r
    for r in rows:
        if r["family"] in ("pool", "norm"):
            assert r["ours GB/s"] > 0 and r["ours % copy"] > 0, r
    assert result["copy"]["GB/s"] > 0
    for family in FAMILIES:
        assert f"\n{family} " in "\n" + result["table"], result["table"]


def test_script_syntax():
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not there (the tests were copied without the repository)")
    done = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_benchmark_on_cpu(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, "-m", "torch_cnn_ops.benchmark.gpu", "--device", "cpu", "--sizes", "tiny",
         "--threads", "1", "--case-budget", "0.02", "--budget", "60", "--json", str(out)],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["sizes"] == "tiny" and result["timer"] == "wall clock"
    assert not result["skipped"]
    _check_rows(result)
    assert "copy bandwidth" in done.stdout and result["table"] in done.stdout


def test_benchmark_budget_skips_cases():
    result = gpu.run("cpu", tiny=True, families=["pool", "norm"], case_budget_s=0.01, budget_s=1e-9,
                     verbose=False)
    assert not result["rows"]
    assert any(s.startswith("pool ") for s in result["skipped"])
    assert any(s.startswith("norm ") for s in result["skipped"])


class _StandInEvent:
    """torch.cuda.Event's timing interface on the wall clock."""

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end):
        return 1e3 * (end.t - self.t)


def test_event_timer_rounds(monkeypatch):
    """The CUDA timer's warm-up, batches and interleaved rounds, with events on the wall clock
    (its name lacks "cuda", so that the CUDA test step of gpu_check.sh leaves it out)."""
    monkeypatch.setattr(torch.cuda, "Event", _StandInEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    calls = {"slow": 0, "fast": 0}

    def slow():
        calls["slow"] += 1
        time.sleep(0.002)

    def fast():
        calls["fast"] += 1
        time.sleep(0.0005)

    times, ratios = gpu.cuda_compare_times({"slow": slow, "fast": fast}, "slow", budget_s=0.05,
                                           target_ms=1.0)
    assert times["slow"] > times["fast"] > 0
    assert ratios["slow"] == 1.0 and 0 < ratios["fast"] < 1
    assert calls["fast"] > calls["slow"]  # batches of the faster function hold more calls


def _built_in_place():
    """Whether the source tree holds an extension built for this interpreter (gpu_check.sh
    --no-build imports the package from the source tree)."""
    package = REPO / "torch_cnn_ops"
    return any((package / f"_C{suffix}").exists() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def test_gpu_check_without_build(tmp_path):
    if not SCRIPT.exists():
        pytest.skip(f"{SCRIPT} is not there (the tests were copied without the repository)")
    if not _built_in_place():
        pytest.skip("no extension built in place in the source tree for gpu_check.sh --no-build")
    # A few quick test cases, from one file (PYTEST_ADDOPTS: collecting the whole suite takes
    # 10-20 s here), skipped where no GPU is visible (the emulation is off, so that nothing is
    # built); the benchmark on the CPU with tiny shapes.
    env = dict(os.environ, PYTHON=sys.executable, TCO_CUDA_EMULATION="0", GPU_CHECK_OUT=str(tmp_path),
               GPU_CHECK_TIMEOUT="240", GPU_CHECK_BENCH_BUDGET="60", PYTEST_ADDOPTS="tests/test_pool.py")
    done = subprocess.run(
        ["bash", str(SCRIPT), "--no-build", "--tests", "cuda and test_pool and max_pool", "--bench-device", "cpu"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert summary["pytest_status"] == 0 and summary["tests"] >= 1, summary
    assert summary["failures"] == 0 and summary["errors"] == 0, summary
    assert summary["tests_expression"] == "cuda and test_pool and max_pool"
    assert summary["bench_status"] == 0 and summary["bench_row_errors"] == 0, summary
    assert summary["benchmark"]["device"] == "cpu"
    bench = json.loads((tmp_path / "gpu_check_bench.json").read_text())
    _check_rows(bench)
    assert summary["benchmark"]["rows"] == bench["rows"]
    # the one-screen summary: the test counts, the copy bandwidth and the benchmark's table
    assert "== summary" in done.stdout
    assert "copy_GB/s" in done.stdout and bench["table"] in done.stdout
    for name in ("gpu_check_tests.log", "gpu_check_tests.xml", "gpu_check_bench.log"):
        assert (tmp_path / name).exists(), name
