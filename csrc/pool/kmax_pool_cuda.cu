// CUDA kernels of k-max pooling. No torch header here (see pool_cuda.h); the tensors come
// from pool_cuda_ops.cpp.
//
// Forward: one block per row (blocks stride over the rows).
//  1. Radix select of the k-th largest key, 8 bits a pass from the top: a shared histogram of
//     the current digit among the keys that match the digits chosen so far, then warp 0 finds
//     the digit that holds the k-th largest and how many of the selected ones it must still
//     supply. After the last digit, the key T is known, and `need`: how many elements equal
//     to T belong to the result (those above T all do).
//  2. Ordered compaction: the row in tiles of blockDim elements; a block prefix sum of the
//     packed counts (above T, equal to T) gives each taken element its output slot, so the
//     values come out in their original order, ties taken first-in-row as topk's gather does.
// The row's keys are kept in shared memory when they fit, so the input is read once.
// Backward: a scatter through the positions into the zeroed gradient (no atomics: positions
// within a row are distinct).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "../cuda_common.cuh"
#include "kmax_pool.h"
#include "pool_cuda.h"

namespace tco::cuda_pool {
namespace {

using namespace tco::cuda;

constexpr int kDigitBits = 8;
constexpr int kBuckets = 1 << kDigitBits;
static_assert(kThreads == kBuckets, "one histogram bucket per thread");
// Keys cached in shared memory up to this many bytes: with the kernel's static shared memory
// (the histogram, the scan's warp totals and two words: 1,068 bytes) within the 48 KiB a block
// may use without opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize).
constexpr int64_t kMaxCacheBytes = 46 * 1024;

template <typename T>
using key_t = std::conditional_t<std::is_same_v<T, double>, uint64_t, uint32_t>;

template <typename T>
__device__ __forceinline__ key_t<T> key_of(T v) {
  return kmax::radix_key(Num<T>::widen(v));  // float16 / bfloat16 widen exactly
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    kmax_forward_kernel(KmaxShape s, bool cached, const T* __restrict__ in, T* __restrict__ out,
                        int64_t* __restrict__ positions) {
  using K = key_t<T>;
  extern __shared__ __align__(16) unsigned char cache_bytes[];
  K* cache = reinterpret_cast<K*>(cache_bytes);
  __shared__ unsigned hist[kBuckets];
  __shared__ unsigned chosen_digit, chosen_need;

  const int64_t L = s.length, inner = s.inner, k = s.k;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  for (int64_t r = blockIdx.x; r < s.rows(); r += gridDim.x) {
    const int64_t o = r / inner, i = r % inner;
    const T* src = in + o * L * inner + i;
    if (cached) {
      for (int64_t j = tid; j < L; j += blockDim.x) cache[j] = key_of(src[j * inner]);
      __syncthreads();
    }
    const auto key_at = [&](int64_t j) { return cached ? cache[j] : key_of(src[j * inner]); };

    // 1. Radix select. With k == length everything is taken: threshold 0 (no key is below it).
    K threshold = 0;
    unsigned need = static_cast<unsigned>(k);
    if (k < L) {
      K mask = 0;
      for (int shift = int(sizeof(K)) * 8 - kDigitBits; shift >= 0; shift -= kDigitBits) {
        hist[tid] = 0;
        __syncthreads();
        for (int64_t j = tid; j < L; j += blockDim.x) {
          const K key = key_at(j);
          if ((key & mask) == threshold) atomicAdd(&hist[(key >> shift) & (kBuckets - 1)], 1u);
        }
        __syncthreads();
        if (warp == 0) {
          // Lane l owns the digits 255 - 8l down to 248 - 8l; an exclusive prefix over the
          // lanes counts the matching keys above its digits.
          unsigned c[kBuckets / 32], sum = 0;
          for (int q = 0; q < kBuckets / 32; ++q) {
            c[q] = hist[kBuckets - 1 - (kBuckets / 32) * lane - q];
            sum += c[q];
          }
          unsigned incl = sum;
          for (int offset = 1; offset < 32; offset *= 2) {
            const unsigned other = __shfl_up_sync(0xffffffffu, incl, offset);
            if (lane >= offset) incl += other;
          }
          unsigned above = incl - sum;
          if (above < need && need <= incl) {  // exactly one lane
            for (int q = 0; q < kBuckets / 32; ++q) {
              if (above + c[q] >= need) {
                chosen_digit = kBuckets - 1 - (kBuckets / 32) * lane - q;
                chosen_need = need - above;
                break;
              }
              above += c[q];
            }
          }
        }
        __syncthreads();
        threshold |= K(chosen_digit) << shift;
        mask |= K(kBuckets - 1) << shift;
        need = chosen_need;
        // chosen_* and hist are rewritten only after the next pass's first barrier.
      }
    } else {
      need = static_cast<unsigned>(L);
    }

    // 2. Ordered compaction. Per tile, counts (above, equal) packed as (low, high) 16 bits:
    // at most blockDim each.
    T* dst = out + o * k * inner + i;
    int64_t* pos = positions + o * k * inner + i;
    unsigned above_before_tile = 0, equal_before_tile = 0;
    for (int64_t base = 0; base < L; base += blockDim.x) {
      const int64_t j = base + tid;
      const K key = j < L ? key_at(j) : K(0);
      const bool above = j < L && key > threshold, equal = j < L && key == threshold;
      unsigned tile_total;
      const unsigned before =
          block_exclusive_scan(unsigned(above) | (unsigned(equal) << 16), &tile_total);
      const unsigned above_before = above_before_tile + (before & 0xFFFFu);
      const unsigned equal_before = equal_before_tile + (before >> 16);
      if (above || (equal && equal_before < need)) {
        const int64_t slot = above_before + min(equal_before, need);
        dst[slot * inner] = src[j * inner];
        pos[slot * inner] = j;
      }
      above_before_tile += tile_total & 0xFFFFu;
      equal_before_tile += tile_total >> 16;
    }
    __syncthreads();  // the cache is refilled for the next row
  }
}

template <typename T>
__global__ void kmax_scatter_kernel(KmaxShape s, const T* __restrict__ gout, const int64_t* __restrict__ positions,
                                    T* __restrict__ gin) {
  const int64_t per_slab = s.k * s.inner;
  TCO_GRID_STRIDE_LOOP(e, s.outer * per_slab) {
    const int64_t o = e / per_slab, i = e % s.inner;
    const int64_t p = positions[e];
    if (p >= 0 && p < s.length) gin[(o * s.length + p) * s.inner + i] = gout[e];
  }
}

}  // namespace

cudaError_t kmax_forward(DType dtype, const KmaxShape& s, const void* input, void* values, int64_t* positions,
                         cudaStream_t stream) {
  if (s.rows() == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min(s.rows(), kMaxBlocks));
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    const int64_t cache_bytes = s.length * int64_t(sizeof(key_t<T>));
    const bool cached = cache_bytes <= kMaxCacheBytes;
    kmax_forward_kernel<T><<<blocks, kThreads, cached ? cache_bytes : 0, stream>>>(
        s, cached, static_cast<const T*>(input), static_cast<T*>(values), positions);
  });
}

cudaError_t kmax_backward(DType dtype, const KmaxShape& s, const void* grad_output, const int64_t* positions,
                          void* grad_input, cudaStream_t stream) {
  const int64_t total = s.outer * s.k * s.inner;
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    kmax_scatter_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(s, static_cast<const T*>(grad_output),
                                                                        positions, static_cast<T*>(grad_input));
  });
}

}  // namespace tco::cuda_pool
