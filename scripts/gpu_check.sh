#!/usr/bin/env bash
# The CUDA check for a machine with a GPU: builds the extension in place with the CUDA kernels,
# runs every CUDA test case on the device (the same cases the host emulation runs without one),
# and prints a one-screen summary, also written to gpu_check.json.
#
#   bash scripts/gpu_check.sh            # build, then test
#   bash scripts/gpu_check.sh --no-build # test the extension already built in place
#
# Environment: TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default: the machine's cores),
# GPU_CHECK_TIMEOUT (seconds for the tests, default 300).
set -uo pipefail
cd "$(dirname "$0")/.."

build=1
[[ "${1:-}" == "--no-build" ]] && build=0
PYTHON="${PYTHON:-python3}"
started=$SECONDS

if [[ $build == 1 ]]; then
  echo "== build (FORCE_CUDA=1, TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0})"
  if ! FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$PYTHON" setup.py build_ext --inplace > gpu_check_build.log 2>&1; then
    tail -n 40 gpu_check_build.log
    echo "gpu_check: the build failed (gpu_check_build.log)"
    exit 1
  fi
fi
build_s=$((SECONDS - started))

echo "== CUDA test cases"
PYTHONPATH=. "$PYTHON" - <<'EOF'
import torch
print("torch", torch.__version__, "CUDA", torch.version.cuda,
      "device:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none (the host emulation runs the cases)")
EOF
PYTHONPATH=. timeout "${GPU_CHECK_TIMEOUT:-300}" "$PYTHON" -m pytest -q -k cuda -p no:cacheprovider \
  -o junit_family=xunit1 --junitxml=gpu_check_tests.xml > gpu_check_tests.log 2>&1
status=$?
tail -n 3 gpu_check_tests.log

BUILD_S=$build_s STATUS=$status "$PYTHON" - <<'EOF'
import json, os, xml.etree.ElementTree as ET

summary = {"build_seconds": int(os.environ["BUILD_S"]), "pytest_status": int(os.environ["STATUS"])}
try:
    root = ET.parse("gpu_check_tests.xml").getroot()
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
json.dump(summary, open("gpu_check.json", "w"), indent=2)
print("== summary")
for k, v in summary.items():
    if k != "first_failures":
        print(f"{k:16s} {v}")
for line in summary.get("first_failures", []):
    print("FAILED", line)
EOF
exit $status
