#!/usr/bin/env bash
# CI: build a wheel, install it into a fresh virtual environment (torch and the test tools come
# from the system's site-packages: nothing is downloaded) and run the test suite against the
# installed package from outside the source tree, so that a module or file missing from the
# wheel fails CI. The wheel reuses the objects of the build before it (build/).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

MAX_JOBS=${MAX_JOBS:-2} python3 -m pip wheel --quiet --no-build-isolation --no-deps -w "$work/dist" .
python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --no-deps "$work"/dist/torch_cnn_ops-*.whl
cd "$work"
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
import torch_cnn_ops
assert torch_cnn_ops.__file__.startswith(sys.argv[1]), f"imported {torch_cnn_ops.__file__}, not the wheel"
print(f"wheel: torch_cnn_ops {torch_cnn_ops.__version__} from {torch_cnn_ops.__file__}")
PY
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider "$repo/tests"
