// CUDA kernels of the pool family. No torch header here (see pool_cuda.h); the glue is
// pool_cuda_ops.cpp.
//
// Forward kernels compute one output element per thread, walking its window in scan order
// (the same PoolWindow math as the CPU kernels), in grid-stride loops with 64-bit indices.
// The avg / lp input gradient is a gather (one thread per input element, summing the
// coefficients of the windows that contain it), so it is deterministic; the max / min input
// gradient scatters through the saved indices with atomicAdd, as torch's does.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "../cuda_common.cuh"
#include "pool_cuda.h"
#include "pool_geometry.h"

namespace tco::cuda_pool {
namespace {

using namespace tco::cuda;

template <typename A>
__device__ __forceinline__ bool is_nan(A v) { return v != v; }


template <typename T, bool kMin>
__global__ void extreme_forward_kernel(PoolGeometry g, const T* __restrict__ in, T* __restrict__ out,
                                       int64_t* __restrict__ ind) {
  using A = typename Num<T>::acc;
  const int64_t H = g.in_size[1], W = g.in_size[2];
  for_each_position(g.planes, g.out_size, [&](int64_t o, int64_t p, int64_t od, int64_t oh, int64_t ow) {
    const PoolWindow wd = pool_window(g, 0, od), wh = pool_window(g, 1, oh), ww = pool_window(g, 2, ow);
    const T* src = in + p * g.in_plane();
    A best = kMin ? A(INFINITY) : A(-INFINITY);
    int64_t best_i = (wd.start * H + wh.start) * W + ww.start;
    for (int64_t kd = 0; kd < wd.count; ++kd) {
      const int64_t id = wd.start + kd * wd.step;
      for (int64_t kh = 0; kh < wh.count; ++kh) {
        const int64_t row = (id * H + wh.start + kh * wh.step) * W;
        for (int64_t kw = 0; kw < ww.count; ++kw) {
          const int64_t i = row + ww.start + kw * ww.step;
          const A v = Num<T>::widen(src[i]);
          if ((kMin ? (v < best) : (v > best)) || is_nan(v)) {
            best = v;
            best_i = i;
          }
        }
      }
    }
    out[o] = Num<T>::narrow(best);
    ind[o] = best_i;
  });
}

template <typename T>
__global__ void scatter_add_kernel(PoolGeometry g, const T* __restrict__ gout, const int64_t* __restrict__ ind,
                                   typename Num<T>::acc* __restrict__ acc) {
  const int64_t out_plane = g.out_plane(), in_plane = g.in_plane();
  TCO_GRID_STRIDE_LOOP(o, g.planes * out_plane) {
    const int64_t i = ind[o];
    if (i >= 0 && i < in_plane) atomicAdd(acc + (o / out_plane) * in_plane + i, Num<T>::widen(gout[o]));
  }
}

template <typename A>
__device__ __forceinline__ A lp_power(A x, A p) {
  return p == A(2) ? x * x : (p == A(1) ? x : pow(x, p));
}

template <typename T>
__device__ __forceinline__ typename Num<T>::acc window_sum(const PoolGeometry& g, const T* src, bool lp,
                                                           typename Num<T>::acc norm, const PoolWindow& wd,
                                                           const PoolWindow& wh, const PoolWindow& ww) {
  using A = typename Num<T>::acc;
  const int64_t H = g.in_size[1], W = g.in_size[2];
  A sum = 0;
  for (int64_t kd = 0; kd < wd.count; ++kd) {
    const int64_t id = wd.start + kd * wd.step;
    for (int64_t kh = 0; kh < wh.count; ++kh) {
      const int64_t row = (id * H + wh.start + kh * wh.step) * W;
      for (int64_t kw = 0; kw < ww.count; ++kw) {
        const A v = Num<T>::widen(src[row + ww.start + kw * ww.step]);
        sum += lp ? lp_power(v, norm) : v;
      }
    }
  }
  return sum;
}

template <typename T>
__global__ void sum_forward_kernel(PoolGeometry g, bool lp, typename Num<T>::acc norm, const T* __restrict__ in,
                                   T* __restrict__ out) {
  using A = typename Num<T>::acc;
  const A kvol = A(g.kernel_volume());
  for_each_position(g.planes, g.out_size, [&](int64_t o, int64_t p, int64_t od, int64_t oh, int64_t ow) {
    const PoolWindow wd = pool_window(g, 0, od), wh = pool_window(g, 1, oh), ww = pool_window(g, 2, ow);
    if (wd.count == 0 || wh.count == 0 || ww.count == 0) {
      out[o] = Num<T>::narrow(A(0));
      return;
    }
    const A sum = window_sum(g, in + p * g.in_plane(), lp, norm, wd, wh, ww);
    const A avg = sum / A(pool_divisor(g, wd, wh, ww));
    out[o] = Num<T>::narrow(lp ? pow(avg * kvol, A(1) / norm) : avg);
  });
}

// Per-output coefficient of the backward: avg gy / divisor; lp gy * base^(1/p - 1) * kvol /
// divisor with base = sum / divisor * kvol (0 where base is 0).
template <typename T>
__global__ void sum_coef_kernel(PoolGeometry g, bool lp, typename Num<T>::acc norm, const T* __restrict__ gout,
                                const T* __restrict__ in, typename Num<T>::acc* __restrict__ coef) {
  using A = typename Num<T>::acc;
  const A kvol = A(g.kernel_volume());
  for_each_position(g.planes, g.out_size, [&](int64_t o, int64_t p, int64_t od, int64_t oh, int64_t ow) {
    const PoolWindow wd = pool_window(g, 0, od), wh = pool_window(g, 1, oh), ww = pool_window(g, 2, ow);
    if (wd.count == 0 || wh.count == 0 || ww.count == 0) {
      coef[o] = A(0);
      return;
    }
    const A div = A(pool_divisor(g, wd, wh, ww));
    const A gy = Num<T>::widen(gout[o]);
    if (!lp) {
      coef[o] = gy / div;
      return;
    }
    const A base = window_sum(g, in + p * g.in_plane(), true, norm, wd, wh, ww) / div * kvol;
    coef[o] = base == A(0) ? A(0) : gy * pow(base, A(1) / norm - A(1)) * kvol / div;
  });
}

template <typename T>
__global__ void sum_gather_kernel(PoolGeometry g, bool lp, typename Num<T>::acc norm,
                                  const typename Num<T>::acc* __restrict__ coef, const T* __restrict__ in,
                                  T* __restrict__ gin) {
  using A = typename Num<T>::acc;
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  for_each_position(g.planes, g.in_size, [&](int64_t i, int64_t p, int64_t id, int64_t ih, int64_t iw) {
    const PoolRange rd = pool_outputs_near(g, 0, id), rh = pool_outputs_near(g, 1, ih), rw = pool_outputs_near(g, 2, iw);
    const A* c = coef + p * g.out_plane();
    A acc = 0;
    for (int64_t od = rd.lo; od < rd.hi; ++od) {
      if (!pool_window_has(pool_window(g, 0, od), id)) continue;
      for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
        if (!pool_window_has(pool_window(g, 1, oh), ih)) continue;
        for (int64_t ow = rw.lo; ow < rw.hi; ++ow) {
          if (!pool_window_has(pool_window(g, 2, ow), iw)) continue;
          acc += c[(od * oH + oh) * oW + ow];
        }
      }
    }
    if (lp && norm != A(1)) {
      const A x = Num<T>::widen(in[i]);
      acc *= norm == A(2) ? x : pow(x, norm - A(1));
    }
    gin[i] = Num<T>::narrow(acc);
  });
}

}  // namespace

cudaError_t extreme_forward(DType dtype, const PoolGeometry& g, bool minimum, const void* input, void* output,
                            int64_t* indices, cudaStream_t stream) {
  const int64_t total = g.planes * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    if (minimum) {
      extreme_forward_kernel<T, true><<<blocks_for(total), kThreads, 0, stream>>>(
          g, static_cast<const T*>(input), static_cast<T*>(output), indices);
    } else {
      extreme_forward_kernel<T, false><<<blocks_for(total), kThreads, 0, stream>>>(
          g, static_cast<const T*>(input), static_cast<T*>(output), indices);
    }
  });
}

cudaError_t scatter_add(DType dtype, const PoolGeometry& g, const void* grad_output, const int64_t* indices,
                        void* grad_acc, cudaStream_t stream) {
  const int64_t total = g.planes * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    scatter_add_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(grad_output), indices, static_cast<typename Num<T>::acc*>(grad_acc));
  });
}

cudaError_t sum_forward(DType dtype, const PoolGeometry& g, bool lp, double norm_type, const void* input,
                        void* output, cudaStream_t stream) {
  const int64_t total = g.planes * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Num<T>::acc;
    sum_forward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(g, lp, A(norm_type),
                                                                      static_cast<const T*>(input),
                                                                      static_cast<T*>(output));
  });
}

cudaError_t sum_backward(DType dtype, const PoolGeometry& g, bool lp, double norm_type, const void* grad_output,
                         const void* input, void* coef_scratch, void* grad_input, cudaStream_t stream) {
  const int64_t outs = g.planes * g.out_plane(), ins = g.planes * g.in_plane();
  if (ins == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Num<T>::acc;
    A* coef = static_cast<A*>(coef_scratch);
    if (outs > 0) {
      sum_coef_kernel<T><<<blocks_for(outs), kThreads, 0, stream>>>(
          g, lp, A(norm_type), static_cast<const T*>(grad_output), static_cast<const T*>(input), coef);
    }
    sum_gather_kernel<T><<<blocks_for(ins), kThreads, 0, stream>>>(g, lp, A(norm_type), coef,
                                                                   static_cast<const T*>(input),
                                                                   static_cast<T*>(grad_input));
  });
}

}  // namespace tco::cuda_pool
