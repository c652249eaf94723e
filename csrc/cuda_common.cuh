// Device helpers shared by the CUDA kernels of every family. Free of torch headers, like the
// .cu files that include it, so that nvcc stays fast.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

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

// Warp shuffles of any trivially copyable value (a scalar or a small struct of them), moved as
// 32-bit words, so that the reductions below serve structs such as MeanM2.
template <typename V, typename ShuffleWord>
__device__ __forceinline__ V shuffle_words(V v, const ShuffleWord& shuffle) {
  static_assert(std::is_trivially_copyable_v<V> && sizeof(V) % 4 == 0, "shuffled as 32-bit words");
  unsigned w[sizeof(V) / 4];
  memcpy(w, &v, sizeof(V));
  for (unsigned& word : w) word = shuffle(word);
  memcpy(&v, w, sizeof(V));
  return v;
}
template <typename V>
__device__ __forceinline__ V shfl_down_any(V v, int offset) {
  return shuffle_words(v, [offset](unsigned w) { return __shfl_down_sync(0xffffffffu, w, offset); });
}
template <typename V>
__device__ __forceinline__ V shfl_any(V v, int src_lane) {
  return shuffle_words(v, [src_lane](unsigned w) { return __shfl_sync(0xffffffffu, w, src_lane); });
}

// Reduction of v over the warp with combine(a, b) (associative; the order is fixed, so the
// result is deterministic); valid in lane 0. Every lane of the warp must call it.
template <typename V, typename Combine>
__device__ __forceinline__ V warp_reduce(V v, const Combine& combine) {
  for (int offset = 16; offset > 0; offset /= 2) v = combine(v, shfl_down_any(v, offset));
  return v;
}

// Reduction over a 1-d block (blockDim.x a multiple of 32, at most kThreads): warps first, then
// the first warp over the warps' results; valid in thread 0. `identity` is the empty value
// (combine(identity, v) == v). Every thread of the block must call it.
template <typename V, typename Combine>
__device__ V block_reduce(V v, const Combine& combine, const V& identity) {
  __shared__ V partial[kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  v = warp_reduce(v, combine);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < static_cast<int>(blockDim.x / 32) ? partial[lane] : identity;
    v = warp_reduce(v, combine);
  }
  __syncthreads();  // `partial` is rewritten by the next call
  return v;
}

// Reduction over threadIdx.y for each threadIdx.x of a 2-d block (blockDim.y a power of two,
// blockDim.x * blockDim.y at most kThreads): a pairwise tree in shared memory, in a fixed
// order; valid in the threads with threadIdx.y == 0. For column reductions, where the
// threads of one threadIdx.x hold partial results of one column. Every thread must call it.
template <typename V, typename Combine>
__device__ V block_column_reduce(V v, const Combine& combine) {
  __shared__ V cell[kThreads];
  const int i = threadIdx.y * blockDim.x + threadIdx.x;
  cell[i] = v;
  __syncthreads();
  for (int half = blockDim.y / 2; half > 0; half /= 2) {
    // Rows [0, half) read rows [half, 2 * half): no cell is read and written in one step.
    if (static_cast<int>(threadIdx.y) < half) {
      v = combine(v, cell[i + half * blockDim.x]);
      cell[i] = v;
    }
    __syncthreads();
  }
  return v;
}

// Count, mean and sum of squared deviations from the mean (m2) of a set of values: the state
// of a numerically stable variance. Values enter one by one (Welford's update); two sets
// merge with Chan et al.'s formula. Deviations are always taken from a running mean, never
// as E[x^2] - E[x]^2, which cancels catastrophically for data far from zero (1e4 +- 1e-2 in
// float). The count is of the accumulation type, as the merge needs it as a weight anyway.
// An aggregate (no constructor), so it may live in __shared__ memory; MeanM2<A>{} is empty.
template <typename A>
struct MeanM2 {
  A n, mean, m2;
};

template <typename A>
__device__ __forceinline__ void welford_add(MeanM2<A>& s, A x) {
  s.n += A(1);
  const A d = x - s.mean;
  s.mean += d / s.n;
  s.m2 += d * (x - s.mean);
}

// An empty side returns the other unchanged (a large mean would otherwise give inf * 0).
template <typename A>
__device__ __forceinline__ MeanM2<A> chan_combine(const MeanM2<A>& a, const MeanM2<A>& b) {
  if (b.n == A(0)) return a;
  if (a.n == A(0)) return b;
  const A n = a.n + b.n;
  const A d = b.mean - a.mean;
  const A fb = b.n / n;
  return {n, a.mean + d * fb, a.m2 + b.m2 + d * d * a.n * fb};
}

}  // namespace tco::cuda

#define TCO_GRID_STRIDE_LOOP(i, n)                                                     \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += int64_t(blockDim.x) * gridDim.x)

namespace tco::cuda {

// Grid-stride loop over the elements of `planes` planes of sizes (D, H, W):
// visit(i, p, d, h, w) with the flat index i, its plane p and its position (d, h, w).
template <typename Visit>
__device__ __forceinline__ void for_each_position(int64_t planes, const int64_t* size, const Visit& visit) {
  TCO_GRID_STRIDE_LOOP(i, planes * size[0] * size[1] * size[2]) {
    int64_t rest = i;
    const int64_t w = rest % size[2];
    rest /= size[2];
    const int64_t h = rest % size[1];
    rest /= size[1];
    visit(i, rest / size[0], rest % size[0], h, w);
  }
}

}  // namespace tco::cuda
