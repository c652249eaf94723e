// CUDA kernels of Gaussian pooling. No torch header here (see pool_cuda.h); the tensors come
// from pool_cuda_ops.cpp. Same window math as the CPU kernels (pool_geometry.h), in
// grid-stride loops with 64-bit indices.

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


template <typename T>
__global__ void gaussian_forward_kernel(PoolGeometry g, const typename Num<T>::acc* __restrict__ w,
                                        const T* __restrict__ in, T* __restrict__ out) {
  using A = typename Num<T>::acc;
  const A* wd_tab = w;
  const A* wh_tab = wd_tab + g.kernel[0];
  const A* ww_tab = wh_tab + g.kernel[1];
  const int64_t H = g.in_size[1], W = g.in_size[2];
  for_each_position(g.planes, g.out_size, [&](int64_t o, int64_t p, int64_t od, int64_t oh, int64_t ow) {
    const PoolWindow wd = pool_window(g, 0, od), wh = pool_window(g, 1, oh), ww = pool_window(g, 2, ow);
    const int64_t rd = od * g.stride[0] - g.pad[0], rh = oh * g.stride[1] - g.pad[1],
                  rw = ow * g.stride[2] - g.pad[2];
    const T* src = in + p * g.in_plane();
    A acc = 0;
    for (int64_t id = wd.start; id < wd.start + wd.count; ++id) {
      for (int64_t ih = wh.start; ih < wh.start + wh.count; ++ih) {
        const T* row = src + (id * H + ih) * W;
        A racc = 0;
        for (int64_t iw = ww.start; iw < ww.start + ww.count; ++iw) racc += ww_tab[iw - rw] * Num<T>::widen(row[iw]);
        acc += wd_tab[id - rd] * wh_tab[ih - rh] * racc;
      }
    }
    out[o] = Num<T>::narrow(acc);
  });
}

template <typename T>
__global__ void gaussian_backward_kernel(PoolGeometry g, const typename Num<T>::acc* __restrict__ w,
                                         const T* __restrict__ gout, T* __restrict__ gin) {
  using A = typename Num<T>::acc;
  const A* wd_tab = w;
  const A* wh_tab = wd_tab + g.kernel[0];
  const A* ww_tab = wh_tab + g.kernel[1];
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  for_each_position(g.planes, g.in_size, [&](int64_t i, int64_t p, int64_t id, int64_t ih, int64_t iw) {
    const PoolRange rd = pool_outputs_near(g, 0, id), rh = pool_outputs_near(g, 1, ih),
                    rw = pool_outputs_near(g, 2, iw);
    const T* src = gout + p * g.out_plane();
    A acc = 0;
    for (int64_t od = rd.lo; od < rd.hi; ++od) {
      const A a = wd_tab[id + g.pad[0] - od * g.stride[0]];
      for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
        const A b = a * wh_tab[ih + g.pad[1] - oh * g.stride[1]];
        const T* row = src + (od * oH + oh) * oW;
        for (int64_t ow = rw.lo; ow < rw.hi; ++ow) {
          acc += b * ww_tab[iw + g.pad[2] - ow * g.stride[2]] * Num<T>::widen(row[ow]);
        }
      }
    }
    gin[i] = Num<T>::narrow(acc);
  });
}

}  // namespace

cudaError_t gaussian_forward(DType dtype, const PoolGeometry& g, const void* weights, const void* input,
                             void* output, cudaStream_t stream) {
  const int64_t total = g.planes * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Num<T>::acc;
    gaussian_forward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const A*>(weights), static_cast<const T*>(input), static_cast<T*>(output));
  });
}

cudaError_t gaussian_backward(DType dtype, const PoolGeometry& g, const void* weights, const void* grad_output,
                              void* grad_input, cudaStream_t stream) {
  const int64_t total = g.planes * g.in_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Num<T>::acc;
    gaussian_backward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const A*>(weights), static_cast<const T*>(grad_output), static_cast<T*>(grad_input));
  });
}

}  // namespace tco::cuda_pool
