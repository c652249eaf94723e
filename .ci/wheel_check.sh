#!/usr/bin/env bash
# CI: the wheel, built with Clang against the oldest torch supported, installed into a fresh
# virtual environment and tested from outside the source tree. One step covers three things:
#
# * the wheel install path: the tests import the installed package, so a module or file
#   missing from the wheel fails them;
# * the oldest torch: the X.Y of pyproject.toml's `torch>=X.Y`, installed as torch==X.Y.0 with
#   the test tools into a virtual environment without the system's site-packages (on Linux
#   torch's PyPI wheel is a CUDA build: about 4.7 GB with its nvidia packages, and it runs on
#   CPUs too). The CUDA glue (csrc/**/*_cuda_ops.cpp) is compile-checked against its headers
#   first (.ci/check_cuda.sh, GLUE_ONLY=1), since the GPU machines run that torch;
# * Clang: the wheel is built with CC=clang CXX=clang++ (or $WHEEL_CC / $WHEEL_CXX), the C++
#   kernels only (FORCE_CUDA=0: that torch has CUDA, and nvcc may be on the machine).
#
# The wheel is built from a copy of the source tree (tracked and untracked, not ignored files),
# so that the build/ folder of an editable install is left alone, and the tests run from that
# copy: it holds no extension built in place (that of an editable install is for another torch),
# and the CUDA emulation of the tests is built there too.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { echo "wheel_check: $* ($(date +%T))"; }

oldest=$(sed -n 's/^dependencies = \["torch>=\([0-9]*\.[0-9]*\)".*/\1/p' pyproject.toml)
if [[ -z "$oldest" ]]; then
  echo "wheel_check: pyproject.toml's dependencies do not start with torch>=X.Y" >&2
  exit 1
fi
cc=${WHEEL_CC:-clang}
cxx=${WHEEL_CXX:-clang++}

step "a fresh virtual environment with torch==$oldest.0 and the test tools"
python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet "torch==$oldest.0" numpy scipy pytest expecttest ninja scikit-learn tqdm matplotlib \
  onnx onnxscript onnxruntime setuptools wheel
"$py" -c 'import sys, torch; print(f"wheel_check: torch {torch.__version__}, Python {sys.version.split()[0]}")'

step "the CUDA glue against torch $oldest's headers ($cxx)"
CXX="$cxx" GLUE_ONLY=1 PYTHON="$py" bash .ci/check_cuda.sh

step "the wheel ($cc / $cxx, FORCE_CUDA=0)"
mkdir "$work/src"
git ls-files -z --cached --others --exclude-standard --deduplicate |
  while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done | xargs -0 cp --parents -t "$work/src"
(cd "$work/src" && CC="$cc" CXX="$cxx" FORCE_CUDA=0 MAX_JOBS=${MAX_JOBS:-2} \
  "$py" -m pip wheel --quiet --no-build-isolation --no-deps -w "$work/dist" .)
"$py" -m pip install --quiet --no-deps "$work"/dist/torch_cnn_ops-*.whl

step "the tests against the installed wheel"
cd "$work"
"$work/venv/bin/python" - "$work/venv" <<'PY'
import sys
import torch_cnn_ops
assert torch_cnn_ops.__file__.startswith(sys.argv[1]), f"imported {torch_cnn_ops.__file__}, not the wheel"
print(f"wheel: torch_cnn_ops {torch_cnn_ops.__version__} from {torch_cnn_ops.__file__}")
PY
"$py" -m pytest -q -p no:cacheprovider "$work/src/tests"
step "done"
