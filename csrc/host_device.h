// Macros and index arithmetic shared by C++ and CUDA translation units. Kept free of torch
// headers so that .cu files that include it compile in about a second.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define TCO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TCO_HOST_DEVICE inline
#endif

namespace tco {

// ceil(a / b) for a >= 0, b >= 1.
TCO_HOST_DEVICE int64_t ceil_div_nonneg(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Half-open range [lo, hi) of indices (empty when lo == hi).
struct IndexRange {
  int64_t lo, hi;
};

// The j in [0, count) for which offset + j * step (step >= 1) lies in [0, size): the outputs
// that one kernel tap reaches (step = stride), or the taps of one output inside the input
// (step = dilation).
TCO_HOST_DEVICE IndexRange index_range(int64_t offset, int64_t step, int64_t size, int64_t count) {
  const int64_t lo = offset >= 0 ? 0 : ceil_div_nonneg(-offset, step);
  const int64_t last = size - 1 - offset;  // the largest j * step allowed
  int64_t hi = last < 0 ? 0 : last / step + 1;
  if (hi > count) hi = count;
  return {lo, hi < lo ? lo : hi};
}

}  // namespace tco
