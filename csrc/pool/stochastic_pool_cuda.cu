// CUDA kernels of stochastic pooling. No torch header here (see pool_cuda.h); the tensors
// come from pool_cuda_ops.cpp. Same window math and pick rule as the CPU
// kernels, in grid-stride loops with 64-bit indices.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "../cuda_common.cuh"
#include "pool_geometry.h"
#include "pool_cuda.h"
#include "stochastic_pool.h"

namespace tco::cuda_pool {
namespace {

using namespace tco::cuda;

template <typename T>
__global__ void train_kernel(PoolGeometry g, const T* __restrict__ in, const T* __restrict__ uniform,
                             T* __restrict__ out, int64_t* __restrict__ ind) {
  using A = typename Num<T>::acc;
  for_each_position(g.planes, g.out_size, [&](int64_t o, int64_t p, int64_t od, int64_t oh, int64_t ow) {
    const T* src = in + p * g.in_plane();
    const int64_t pick =
        stochastic_pick(g, od, oh, ow, Num<T>::widen(uniform[o]), [src](int64_t i) { return Num<T>::widen(src[i]); });
    out[o] = src[pick];
    ind[o] = pick;
  });
}

template <typename T>
__global__ void eval_kernel(PoolGeometry g, const T* __restrict__ in, T* __restrict__ out) {
  using A = typename Num<T>::acc;
  for_each_position(g.planes, g.out_size, [&](int64_t o, int64_t p, int64_t od, int64_t oh, int64_t ow) {
    const T* src = in + p * g.in_plane();
    const auto m = window_moments<A>(g, od, oh, ow, [src](int64_t i) { return Num<T>::widen(src[i]); });
    out[o] = Num<T>::narrow(m.mean_by_weight());
  });
}

template <typename T>
__global__ void eval_coef_kernel(PoolGeometry g, const T* __restrict__ gout, const T* __restrict__ in,
                                 WindowGrad<typename Num<T>::acc>* __restrict__ coef) {
  using A = typename Num<T>::acc;
  for_each_position(g.planes, g.out_size, [&](int64_t o, int64_t p, int64_t od, int64_t oh, int64_t ow) {
    const T* src = in + p * g.in_plane();
    const auto m = window_moments<A>(g, od, oh, ow, [src](int64_t i) { return Num<T>::widen(src[i]); });
    coef[o] = m.grad(Num<T>::widen(gout[o]));
  });
}

template <typename T>
__global__ void eval_gather_kernel(PoolGeometry g, const WindowGrad<typename Num<T>::acc>* __restrict__ coef,
                                   const T* __restrict__ in,
                                   T* __restrict__ gin) {
  using A = typename Num<T>::acc;
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  for_each_position(g.planes, g.in_size, [&](int64_t i, int64_t p, int64_t id, int64_t ih, int64_t iw) {
    const PoolRange rd = pool_outputs_near(g, 0, id), rh = pool_outputs_near(g, 1, ih),
                    rw = pool_outputs_near(g, 2, iw);
    const int64_t base = p * g.out_plane();
    const A x = Num<T>::widen(in[i]);
    A sum = 0;
    for (int64_t od = rd.lo; od < rd.hi; ++od)
      for (int64_t oh = rh.lo; oh < rh.hi; ++oh)
        for (int64_t ow = rw.lo; ow < rw.hi; ++ow) {
          const int64_t o = base + (od * oH + oh) * oW + ow;
          sum += coef[o].at(x);
        }
    gin[i] = Num<T>::narrow(sum);
  });
}

}  // namespace

cudaError_t stochastic_train(DType dtype, const PoolGeometry& g, const void* input, const void* uniform,
                             void* output, int64_t* indices, cudaStream_t stream) {
  const int64_t total = g.planes * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    train_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(input), static_cast<const T*>(uniform), static_cast<T*>(output), indices);
  });
}

cudaError_t stochastic_eval(DType dtype, const PoolGeometry& g, const void* input, void* output,
                            cudaStream_t stream) {
  const int64_t total = g.planes * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    eval_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(g, static_cast<const T*>(input),
                                                               static_cast<T*>(output));
  });
}

cudaError_t stochastic_eval_backward(DType dtype, const PoolGeometry& g, const void* grad_output, const void* input,
                                     void* coef_scratch, void* grad_input, cudaStream_t stream) {
  const int64_t outs = g.planes * g.out_plane(), ins = g.planes * g.in_plane();
  if (ins == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = typename Num<T>::acc;
    auto* coef = static_cast<WindowGrad<A>*>(coef_scratch);
    if (outs > 0) {
      eval_coef_kernel<T><<<blocks_for(outs), kThreads, 0, stream>>>(g, static_cast<const T*>(grad_output),
                                                                     static_cast<const T*>(input), coef);
    }
    eval_gather_kernel<T><<<blocks_for(ins), kThreads, 0, stream>>>(g, coef, static_cast<const T*>(input),
                                                                    static_cast<T*>(grad_input));
  });
}

}  // namespace tco::cuda_pool
