// Device helpers shared by the CUDA kernels of every family. Free of torch headers, like the
// .cu files that include it, so that nvcc stays fast.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>

namespace tco::cuda {

constexpr int kThreads = 256;
// Grid-stride loops make any grid correct; this cap only bounds the launch.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;

// Blocks of kThreads for `work` elements (at least one, at most kMaxBlocks).
inline unsigned blocks_for(int64_t work) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min((work + kThreads - 1) / kThreads, kMaxBlocks)));
}

// Accumulation type and explicit conversions (torch builds with __CUDA_NO_HALF_CONVERSIONS__,
// so half and bfloat16 have no implicit ones): half and bfloat16 accumulate in float.
template <typename T>
struct Num {
  using acc = T;
  static __device__ __forceinline__ acc widen(T x) { return x; }
  static __device__ __forceinline__ T narrow(acc x) { return x; }
};
template <>
struct Num<__half> {
  using acc = float;
  static __device__ __forceinline__ float widen(__half x) { return __half2float(x); }
  static __device__ __forceinline__ __half narrow(float x) { return __float2half_rn(x); }
};
template <>
struct Num<__nv_bfloat16> {
  using acc = float;
  static __device__ __forceinline__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ __nv_bfloat16 narrow(float x) { return __float2bfloat16_rn(x); }
};

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most kThreads); the result is valid in
// thread 0. Every thread of the block must call it.
template <typename acc_t>
__device__ acc_t block_sum(acc_t v) {
  __shared__ acc_t partial[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : acc_t(0);
    v = warp_sum(v);
  }
  __syncthreads();  // `partial` is rewritten by the next call
  return v;
}

// Exclusive prefix sum over the block (blockDim.x a multiple of 32, at most kThreads), in
// thread order; *total receives the block's sum in every thread. Every thread of the block
// must call it.
template <typename T>
__device__ T block_exclusive_scan(T v, T* total) {
  __shared__ T warp_prefix[kThreads / 32 + 1];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
  T incl = v;
  for (int offset = 1; offset < 32; offset *= 2) {
    const T other = __shfl_up_sync(0xffffffffu, incl, offset);
    if (lane >= offset) incl += other;
  }
  if (lane == 31) warp_prefix[warp] = incl;
  __syncthreads();
  if (warp == 0) {
    const T w = lane < warps ? warp_prefix[lane] : T(0);
    T w_incl = w;
    for (int offset = 1; offset < 32; offset *= 2) {
      const T other = __shfl_up_sync(0xffffffffu, w_incl, offset);
      if (lane >= offset) w_incl += other;
    }
    if (lane < warps) warp_prefix[lane] = w_incl - w;
    if (lane == warps - 1) warp_prefix[kThreads / 32] = w_incl;
  }
  __syncthreads();
  const T result = warp_prefix[warp] + incl - v;
  *total = warp_prefix[kThreads / 32];
  __syncthreads();  // `warp_prefix` is rewritten by the next call
  return result;
}

// Calls f(T{}) with the element type T that `dtype` names (any enum with the enumerators
// Float, Double, Half and BFloat16) and returns the launch status.
template <typename DTypeEnum, typename F>
cudaError_t dispatch_float_types(DTypeEnum dtype, F&& f) {
  switch (dtype) {
    case DTypeEnum::Float: f(float{}); break;
    case DTypeEnum::Double: f(double{}); break;
    case DTypeEnum::Half: f(__half{}); break;
    case DTypeEnum::BFloat16: f(__nv_bfloat16{}); break;
  }
  return cudaGetLastError();
}

}  // namespace tco::cuda

#define TCO_GRID_STRIDE_LOOP(i, n)                                                     \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)
