// Shared by the CPU and CUDA kernels of k-max pooling: the input seen as rows, and the
// order-preserving integer keys the selection works on. Free of torch headers (the .cu
// kernels include it).
//
// Both devices select the set torch.topk(k, dim) selects on that device: the k largest values,
// a NaN counting as larger than every number (all NaNs equal). The keys below order values as
// topk does on each device, so "the k-th largest key" is topk's threshold and equal keys are
// exactly topk's ties. float16 and bfloat16 widen to float exactly and use its keys.
#pragma once

#include <cstdint>
#include <cstring>

#include "../host_device.h"

namespace tco {

// The input viewed as (outer, length, inner), contiguous, with the pooled dimension in the
// middle: row (o, i) holds the elements o * length * inner + j * inner + i, j < length. The
// outputs (values and positions) are (outer, k, inner) in the same way.
struct KmaxShape {
  int64_t outer = 1;
  int64_t length = 1;
  int64_t inner = 1;
  int64_t k = 1;
  TCO_HOST_DEVICE int64_t rows() const { return outer * inner; }
};

namespace kmax {

// float -> uint32 whose unsigned order is topk's order of the floats (float16 and bfloat16
// widen to float exactly, so they use it too).
// The radix key of CUDA's topk (TopKTypeConfig in ATen's SortingRadixSelect.cuh): positive
// floats get the sign bit set (above all negatives), negative ones all bits flipped (a larger
// magnitude gives a smaller key), every NaN the largest key (above +inf, 0xFF800000). There
// -0.0 ranks just below +0.0. Branch-free (selects only), so that a loop of them vectorizes.
TCO_HOST_DEVICE uint32_t radix_key(float v) {
  uint32_t b;
#ifdef __CUDA_ARCH__
  b = __float_as_uint(v);
#else
  std::memcpy(&b, &v, sizeof b);
#endif
  const uint32_t key = b ^ (static_cast<uint32_t>(static_cast<int32_t>(b) >> 31) | 0x80000000u);
  return v != v ? 0xFFFFFFFFu : key;
}

TCO_HOST_DEVICE uint64_t radix_key(double v) {
  uint64_t b;
#ifdef __CUDA_ARCH__
  b = static_cast<uint64_t>(__double_as_longlong(v));
#else
  std::memcpy(&b, &v, sizeof b);
#endif
  const uint64_t key = b ^ (static_cast<uint64_t>(static_cast<int64_t>(b) >> 63) | (uint64_t(1) << 63));
  return v != v ? ~uint64_t(0) : key;
}

// The key of the CPU's topk, which compares values with > (TopKImpl.h): as radix_key, but
// -0.0 and +0.0 are one value.
TCO_HOST_DEVICE uint32_t compare_key(float v) { return radix_key(v == 0.0f ? 0.0f : v); }
TCO_HOST_DEVICE uint64_t compare_key(double v) { return radix_key(v == 0.0 ? 0.0 : v); }

}  // namespace kmax
}  // namespace tco
