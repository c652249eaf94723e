#!/usr/bin/env bash
# The CUDA check for a machine with a GPU: builds the extension in place with the CUDA kernels,
# runs every CUDA test case on the device (the same cases the host emulation runs without one),
# times each family (conv, local, pool, norm) against torch's built-ins on the device
# (torch_cnn_ops/benchmark/gpu.py: CUDA events, forward and forward + backward, GB/s against
# the copy bandwidth), and prints a one-screen summary, also written to gpu_check.json.
#
#   bash scripts/gpu_check.sh            # build, test, benchmark
#   bash scripts/gpu_check.sh --no-build # test and benchmark the extension already built in place
#
# Options (any order):
#   --no-build           use the extension already built in place
#   --no-bench           leave out the benchmark
#   --tests EXPR         the pytest -k expression of the test step (default: cuda)
#   --bench-device DEV   cuda, cpu (wall clock, tiny shapes: a try of the plumbing without a GPU)
#                        or auto (default: cuda when visible)
#
# Environment: TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default: the machine's cores),
# GPU_CHECK_TIMEOUT (seconds for the tests, default 300), GPU_CHECK_BENCH_BUDGET (seconds for
# the benchmark, default 90; cases left after it are skipped), GPU_CHECK_BENCH_TIMEOUT (seconds
# before the benchmark is stopped, default the budget + 60; the rows measured by then are
# kept), GPU_CHECK_OUT (the folder of the logs and JSON files, default the repository root),
# PYTHON (default python3).
#
# Exit status: the test step's (pytest's; 124 when it timed out), else 3 when the benchmark
# failed (an error in one of its rows, or stopped by its timeout), else 0. 1: the build failed.
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

build=1
bench=1
tests_expr=cuda
bench_device=auto
while [[ $# -gt 0 ]]; do
  case "$1" in
    --no-build) build=0 ;;
    --no-bench) bench=0 ;;
    --tests)
      [[ $# -ge 2 ]] || { echo "gpu_check: --tests needs an expression" >&2; exit 2; }
      tests_expr=$2
      shift ;;
    --bench-device)
      if [[ $# -lt 2 || ! "$2" =~ ^(auto|cuda|cpu)$ ]]; then
        echo "gpu_check: --bench-device takes auto, cuda or cpu" >&2
        exit 2
      fi
      bench_device=$2
      shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
  esac
  shift
done
PYTHON="${PYTHON:-python3}"
out="${GPU_CHECK_OUT:-.}"
mkdir -p "$out" || { echo "gpu_check: cannot create $out" >&2; exit 2; }
bench_budget="${GPU_CHECK_BENCH_BUDGET:-90}"
if [[ ! "$bench_budget" =~ ^[0-9]+(\.[0-9]+)?$ ]]; then
  echo "gpu_check: GPU_CHECK_BENCH_BUDGET must be a number of seconds" >&2
  exit 2
fi
bench_timeout="${GPU_CHECK_BENCH_TIMEOUT:-$((${bench_budget%.*} + 60))}"
started=$SECONDS

if [[ $build == 1 ]]; then
  echo "== build (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
  if ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PYTHON" setup.py build_ext --inplace > "$out/gpu_check_build.log" 2>&1; then
    tail -n 40 "$out/gpu_check_build.log"
    echo "gpu_check: the build failed ($out/gpu_check_build.log)"
    exit 1
  fi
fi
build_s=$((SECONDS - started))

echo "== CUDA test cases (pytest -k '$tests_expr')"
PYTHONPATH=. "$PYTHON" - <<'EOF'
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda,
      "device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none (the host emulation runs the cases)")
EOF
tests_started=$SECONDS
PYTHONPATH=. timeout "${GPU_CHECK_TIMEOUT:-300}" "$PYTHON" -m pytest -q -k "$tests_expr" -p no:cacheprovider \
  -o junit_family=xunit1 --junitxml="$out/gpu_check_tests.xml" > "$out/gpu_check_tests.log" 2>&1
status=$?
tests_s=$((SECONDS - tests_started))
tail -n 3 "$out/gpu_check_tests.log"

bench_status=-1  # not run
bench_s=0
rm -f "$out/gpu_check_bench.json"
if [[ $bench == 1 ]]; then
  echo "== benchmark (device $bench_device, budget ${bench_budget} s; log: $out/gpu_check_bench.log)"
  bench_started=$SECONDS
  PYTHONPATH=. timeout "$bench_timeout" "$PYTHON" -m torch_cnn_ops.benchmark.gpu --device "$bench_device" \
    --budget "$bench_budget" --json "$out/gpu_check_bench.json" > "$out/gpu_check_bench.log" 2>&1
  bench_status=$?
  bench_s=$((SECONDS - bench_started))
  if [[ $bench_status != 0 ]]; then
    tail -n 5 "$out/gpu_check_bench.log"
  fi
fi

OUT="$out" BUILD_S=$build_s TESTS_S=$tests_s STATUS=$status BENCH_STATUS=$bench_status BENCH_S=$bench_s \
TESTS_EXPR="$tests_expr" "$PYTHON" - <<'EOF'
import json, os, xml.etree.ElementTree as ET

out = os.environ["OUT"]
summary = {"build_seconds": int(os.environ["BUILD_S"]), "pytest_status": int(os.environ["STATUS"]),
           "tests_expression": os.environ["TESTS_EXPR"], "tests_seconds": int(os.environ["TESTS_S"])}
try:
    root = ET.parse(os.path.join(out, "gpu_check_tests.xml")).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    summary.update({k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")})
    failed = []
    for case in suite.iter("testcase"):
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        if problem is not None:
            failed.append(f"{case.get('classname')}::{case.get('name')}: {problem.get('message', '')[:200]}")
    summary["first_failures"] = failed[:10]
except (OSError, ET.ParseError) as e:
    summary["report_error"] = str(e)

bench_status = int(os.environ["BENCH_STATUS"])
bench = None
if bench_status != -1:
    summary["bench_status"] = bench_status
    summary["bench_seconds"] = int(os.environ["BENCH_S"])
    if bench_status in (124, 137):
        summary["bench_note"] = "stopped by GPU_CHECK_BENCH_TIMEOUT: the rows measured by then are kept"
    try:
        with open(os.path.join(out, "gpu_check_bench.json")) as f:
            bench = json.load(f)
    except (OSError, ValueError) as e:
        summary["bench_error"] = f"no benchmark results: {e}"
if bench is not None:
    copy = bench.get("copy", {})
    summary["bench_device"] = f"{bench.get('device')} ({bench.get('timer')}, {bench.get('sizes')} shapes)"
    summary["copy_GB/s"] = round(copy["GB/s"], 1) if "GB/s" in copy else copy.get("error")
    summary["bench_rows"] = len(bench.get("rows", []))
    summary["bench_row_errors"] = sum("error" in r for r in bench.get("rows", []))
    if bench.get("skipped"):
        summary["bench_skipped"] = len(bench["skipped"])
summary_file = dict(summary)
if bench is not None:
    summary_file["benchmark"] = {k: v for k, v in bench.items() if k != "table"}
with open(os.path.join(out, "gpu_check.json"), "w") as f:
    json.dump(summary_file, f, indent=2)

print("== summary")
for k, v in summary.items():
    if k != "first_failures":
        print(f"{k:18s} {v}")
for line in summary.get("first_failures", []):
    print("FAILED", line)
if bench is not None:
    print("-- benchmark: ms of the baseline; ours/base below 1: faster than it. Notes: pool, norm: our GB/s,\n"
          "   fwd / f+b (compulsory traffic; % of the copy's); conv: f+b time of our other algorithms over the baseline's")
    print(bench.get("table", "(no rows)"))
    for s in bench.get("skipped", [])[:5]:
        print("skipped:", s)
EOF
if [[ $status != 0 ]]; then
  exit $status
fi
if [[ $bench_status != -1 && $bench_status != 0 ]]; then
  exit 3
fi
exit 0
