#!/usr/bin/env bash
# Compile check of the CUDA sources, for machines without a GPU (CI, this dev box).
#
# Each csrc/**/*.cu is compiled by nvcc with the flags torch.utils.cpp_extension uses for
# it (output discarded), and each csrc/**/*_cuda_ops.cpp (the torch-facing glue) by the
# host compiler, against torch's headers and the CUDA toolkit's. Nothing is linked or run.
#
# Environment: CUDA_HOME (the toolkit; else nvcc on PATH, else /usr/local/cuda),
# PYTHON (default python3: its torch's headers), CXX (default g++), SKIP_CUDA_CHECK=1 (exit 0
# without nvcc), GLUE_ONLY=1 (the glue only: the host compiler and the toolkit's headers, no
# nvcc; e.g. against another torch's headers with PYTHON, as CI does for the oldest torch).
# (The CUDA headers that torch's CUDA wheels install, nvidia/cu*/include, lack nvcc's crt/.)
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
CXX="${CXX:-g++}"
GLUE_ONLY="${GLUE_ONLY:-0}"

NVCC=""
if [[ -n "${CUDA_HOME:-}" && -x "${CUDA_HOME}/bin/nvcc" ]]; then
  NVCC="${CUDA_HOME}/bin/nvcc"
elif command -v nvcc >/dev/null 2>&1; then
  NVCC="$(command -v nvcc)"
elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
  NVCC=/usr/local/cuda/bin/nvcc
fi
if [[ -z "$NVCC" && "$GLUE_ONLY" != "1" ]]; then
  if [[ "${SKIP_CUDA_CHECK:-0}" == "1" ]]; then
    echo "check_cuda: nvcc not found; skipped (SKIP_CUDA_CHECK=1)"
    exit 0
  fi
  echo "check_cuda: nvcc not found (set CUDA_HOME or put nvcc on PATH; SKIP_CUDA_CHECK=1 to skip)" >&2
  exit 1
fi

TORCH_INFO="$("$PYTHON" -c '
import torch
from torch.utils.cpp_extension import include_paths
print(torch.__version__)
print("\n".join(include_paths()))')" || {
  echo "check_cuda: cannot import torch with $PYTHON (set PYTHON)" >&2
  exit 1
}
mapfile -t TORCH_INFO_LINES <<< "$TORCH_INFO"
TORCH_VERSION="${TORCH_INFO_LINES[0]}"
TORCH_INCLUDES=("${TORCH_INFO_LINES[@]:1}")

# Headers for the host compiler: the toolkit's include folder. nvcc on PATH may be a
# wrapper script outside the toolkit, hence the fallbacks.
CUDA_INCLUDE=""
for dir in "${CUDA_HOME:-}/include" ${NVCC:+"$(dirname "$(dirname "$(readlink -f "$NVCC")")")/include"} \
           /usr/local/cuda/include; do
  if [[ -f "$dir/cuda_runtime_api.h" ]]; then
    CUDA_INCLUDE="$dir"
    break
  fi
done
if [[ -z "$CUDA_INCLUDE" ]]; then
  echo "check_cuda: cannot find the CUDA headers (cuda_runtime_api.h); set CUDA_HOME" >&2
  exit 1
fi

# The CPU wheel of torch lacks this generated header, which c10/cuda/CUDAMacros.h includes.
STUB_DIR="$(mktemp -d)"
trap 'rm -rf "$STUB_DIR"' EXIT
mkdir -p "$STUB_DIR/c10/cuda/impl"
echo "#define C10_CUDA_BUILD_SHARED_LIBS" > "$STUB_DIR/c10/cuda/impl/cuda_cmake_macros.h"

INCLUDES=()
# -isystem: warnings inside torch and CUDA headers are not ours to fix.
for dir in "${TORCH_INCLUDES[@]}"; do INCLUDES+=(-isystem "$dir"); done
INCLUDES+=(-isystem "$STUB_DIR" -isystem "$CUDA_INCLUDE")

# Flags of setup.py plus the ones torch.utils.cpp_extension adds to every nvcc call.
NVCC_FLAGS=(-O3 -std=c++20 --expt-relaxed-constexpr -arch=sm_90
  -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
  -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__
  -DTCO_WITH_CUDA=1 -Xcompiler -fPIC,-Wall,-Wextra)
CXX_FLAGS=(-std=c++20 -fsyntax-only -Wall -Wextra -DTCO_WITH_CUDA=1 -DTORCH_API_INCLUDE_EXTENSION_H)

CU_FILES=()
if [[ "$GLUE_ONLY" != "1" ]]; then
  mapfile -t CU_FILES < <(find csrc -name '*.cu' | sort)
fi
mapfile -t GLUE_FILES < <(find csrc -name '*_cuda_ops.cpp' | sort)
if [[ ${#CU_FILES[@]} -eq 0 && ${#GLUE_FILES[@]} -eq 0 ]]; then
  echo "check_cuda: no CUDA sources found under csrc/" >&2
  exit 1
fi

failed=0
run() {
  local file="$1"
  shift
  local start=$EPOCHREALTIME
  if "$@"; then
    local ms=$(( (${EPOCHREALTIME/./} - ${start/./}) / 1000 ))
    printf 'check_cuda: ok   %-36s %d.%03d s\n' "$file" $((ms / 1000)) $((ms % 1000))
  else
    echo "check_cuda: FAIL $file"
    failed=1
  fi
}

echo "check_cuda: torch $TORCH_VERSION ($PYTHON), CUDA headers $CUDA_INCLUDE, host compiler $CXX"
if [[ ${#CU_FILES[@]} -gt 0 ]]; then
  echo "check_cuda: nvcc $NVCC ($("$NVCC" --version | tail -n 1))"
fi
for f in ${CU_FILES[@]+"${CU_FILES[@]}"}; do
  run "$f" "$NVCC" -c -o /dev/null "${NVCC_FLAGS[@]}" "${INCLUDES[@]}" "$f"
done
for f in "${GLUE_FILES[@]}"; do
  run "$f" "$CXX" "${CXX_FLAGS[@]}" "${INCLUDES[@]}" "$f"
done
exit "$failed"
