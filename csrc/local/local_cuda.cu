// CUDA kernels of the local family (tiled and unshared convolution). No torch header here
// (see local_cuda.h); local_cuda_ops.cpp turns tensors into these launches.
//
// Gather form throughout: each thread (for long weight-gradient sums, each block) owns one
// element of the result, sums everything that lands in it and writes it once, so there are
// no atomics and results are deterministic. The weight cell of an output position comes
// from LocalGeometry::cell_of, the rule shared with the CPU kernels; the weight is never
// expanded to one kernel per position. Indices are 64-bit and loops grid-stride, so any
// size is correct whatever the grid.
//
// float16 and bfloat16 accumulate in float32; float32 and float64 in their own type.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "../host_device.h"
#include "../cuda_common.cuh"
#include "local_cuda.h"
#include "local_geometry.h"

namespace tco::cuda_local {
namespace {

using namespace tco::cuda;

// Weight-gradient sums longer than this get a block of threads each rather than one thread.
constexpr int64_t kThreadSumMax = 128;


// ---------------------------------------------------------------------------------------
// Forward: one thread per output element; consecutive threads own neighbouring positions, so
// input loads are coalesced for stride 1 and, for tiled convolution, the weight loads of a
// warp hit only the few kernels of the tile.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const LocalGeometry g, const T* __restrict__ input, const T* __restrict__ weight,
                   const T* __restrict__ bias, bool bias_per_position, T* __restrict__ output) {
  using acc_t = typename Num<T>::acc;
  const ConvGeometry& c = g.conv;
  const int64_t O = c.out_channels, C = c.in_channels, K = c.kernel_volume();
  const int64_t L = c.out_plane(), in_plane = c.in_plane();
  const int64_t total = c.batch * O * L;
  TCO_GRID_STRIDE_LOOP(idx, total) {
    const int64_t p = idx % L, o = (idx / L) % O, n = idx / (L * O);
    const int64_t ow = p % c.out_size[2], oh = (p / c.out_size[2]) % c.out_size[1],
                  od = p / (c.out_size[2] * c.out_size[1]);
    const T* w = weight + (g.cell_of(od, oh, ow) * O + o) * C * K;
    const T* x = input + n * C * in_plane;
    acc_t acc = bias ? Num<T>::widen(bias[bias_per_position ? o * L + p : o]) : acc_t(0);
    const IndexRange rd = taps_inside(c, 0, od), rh = taps_inside(c, 1, oh), rw = taps_inside(c, 2, ow);
    for (int64_t kd = rd.lo; kd < rd.hi; ++kd) {
      const int64_t id = od * c.stride[0] + tap_offset(c, 0, kd);
      for (int64_t kh = rh.lo; kh < rh.hi; ++kh) {
        const int64_t ih = oh * c.stride[1] + tap_offset(c, 1, kh);
        const int64_t row = (id * c.in_size[1] + ih) * c.in_size[2];
        const int64_t tap_row = (kd * c.kernel[1] + kh) * c.kernel[2];
        for (int64_t kw = rw.lo; kw < rw.hi; ++kw) {
          const int64_t pos = row + ow * c.stride[2] + tap_offset(c, 2, kw), tap = tap_row + kw;
          for (int64_t ic = 0; ic < C; ++ic) {
            acc += Num<T>::widen(w[ic * K + tap]) * Num<T>::widen(x[ic * in_plane + pos]);
          }
        }
      }
    }
    output[idx] = Num<T>::narrow(acc);
  }
}

// ---------------------------------------------------------------------------------------
// Input gradient: one thread per input element, gathering over the (tap, position) pairs
// whose forward read is this element. Along each dimension, tap k reaches output index
// (i - tap_offset(k)) / stride when that is a whole number inside [0, out_size).

template <typename T>
__global__ void __launch_bounds__(kThreads)
    input_backward_kernel(const LocalGeometry g, const T* __restrict__ grad_output,
                          const T* __restrict__ weight, T* __restrict__ grad_input) {
  using acc_t = typename Num<T>::acc;
  const ConvGeometry& c = g.conv;
  const int64_t O = c.out_channels, C = c.in_channels, K = c.kernel_volume();
  const int64_t L = c.out_plane(), in_plane = c.in_plane();
  const int64_t total = c.batch * C * in_plane;
  TCO_GRID_STRIDE_LOOP(idx, total) {
    const int64_t i = idx % in_plane, ic = (idx / in_plane) % C, n = idx / (in_plane * C);
    const int64_t iw = i % c.in_size[2], ih = (i / c.in_size[2]) % c.in_size[1],
                  id = i / (c.in_size[2] * c.in_size[1]);
    const T* gy = grad_output + n * O * L;
    acc_t acc = 0;
    for (int64_t kd = 0; kd < c.kernel[0]; ++kd) {
      const int64_t td = id - tap_offset(c, 0, kd);
      if (td < 0) break;  // tap offsets grow with k: no later tap reaches an output either
      if (td % c.stride[0] != 0 || td / c.stride[0] >= c.out_size[0]) continue;
      const int64_t od = td / c.stride[0];
      for (int64_t kh = 0; kh < c.kernel[1]; ++kh) {
        const int64_t th = ih - tap_offset(c, 1, kh);
        if (th < 0) break;
        if (th % c.stride[1] != 0 || th / c.stride[1] >= c.out_size[1]) continue;
        const int64_t oh = th / c.stride[1];
        for (int64_t kw = 0; kw < c.kernel[2]; ++kw) {
          const int64_t tw = iw - tap_offset(c, 2, kw);
          if (tw < 0) break;
          if (tw % c.stride[2] != 0 || tw / c.stride[2] >= c.out_size[2]) continue;
          const int64_t ow = tw / c.stride[2];
          const int64_t p = (od * c.out_size[1] + oh) * c.out_size[2] + ow;
          const int64_t tap = (kd * c.kernel[1] + kh) * c.kernel[2] + kw;
          const T* w = weight + g.cell_of(od, oh, ow) * O * C * K + ic * K + tap;
          for (int64_t o = 0; o < O; ++o) {
            acc += Num<T>::widen(w[o * C * K]) * Num<T>::widen(gy[o * L + p]);
          }
        }
      }
    }
    grad_input[idx] = Num<T>::narrow(acc);
  }
}

// ---------------------------------------------------------------------------------------
// Weight gradient: element (cell, o, ic, tap) sums grad_output[n, o, p] * input[n, ic, in(p, tap)]
// over the samples n and the cell's positions p, which form the strided convolution
// cell_geometry(g, cell).

// The j-th term (j < batch * cell positions) of weight-gradient element (cell, o, ic, tap);
// zero where the tap reads padding.
template <typename T>
__device__ __forceinline__ typename Num<T>::acc weight_term(const LocalGeometry& g, const ConvGeometry& cg,
                                                            const int64_t* first, int64_t o, int64_t ic,
                                                            int64_t kd, int64_t kh, int64_t kw, int64_t j,
                                                            const T* __restrict__ grad_output,
                                                            const T* __restrict__ input) {
  const ConvGeometry& c = g.conv;
  const int64_t Lc = cg.out_plane();
  const int64_t q = j % Lc, n = j / Lc;
  const int64_t qw = q % cg.out_size[2], qh = (q / cg.out_size[2]) % cg.out_size[1],
                qd = q / (cg.out_size[2] * cg.out_size[1]);
  const int64_t id = qd * cg.stride[0] + tap_offset(cg, 0, kd), ih = qh * cg.stride[1] + tap_offset(cg, 1, kh),
                iw = qw * cg.stride[2] + tap_offset(cg, 2, kw);
  if (id < 0 || id >= c.in_size[0] || ih < 0 || ih >= c.in_size[1] || iw < 0 || iw >= c.in_size[2]) {
    return typename Num<T>::acc(0);
  }
  const int64_t p = ((first[0] + qd * g.grid[0]) * c.out_size[1] + first[1] + qh * g.grid[1]) * c.out_size[2] +
                    first[2] + qw * g.grid[2];
  const T gy = grad_output[(n * c.out_channels + o) * c.out_plane() + p];
  const T x = input[(n * c.in_channels + ic) * c.in_plane() + (id * c.in_size[1] + ih) * c.in_size[2] + iw];
  return Num<T>::widen(gy) * Num<T>::widen(x);
}

struct WeightIndex {
  int64_t cell, o, ic, kd, kh, kw;
};

__device__ __forceinline__ WeightIndex weight_index(const ConvGeometry& c, int64_t e) {
  WeightIndex w;
  w.kw = e % c.kernel[2];
  e /= c.kernel[2];
  w.kh = e % c.kernel[1];
  e /= c.kernel[1];
  w.kd = e % c.kernel[0];
  e /= c.kernel[0];
  w.ic = e % c.in_channels;
  e /= c.in_channels;
  w.o = e % c.out_channels;
  w.cell = e / c.out_channels;
  return w;
}

// One thread per weight element: short sums (unshared convolution: the batch only).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    weight_backward_thread_kernel(const LocalGeometry g, const T* __restrict__ grad_output,
                                  const T* __restrict__ input, T* __restrict__ grad_weight) {
  using acc_t = typename Num<T>::acc;
  const int64_t total = g.cells() * g.cell_size();
  TCO_GRID_STRIDE_LOOP(e, total) {
    const WeightIndex w = weight_index(g.conv, e);
    const ConvGeometry cg = cell_geometry(g, w.cell);
    int64_t first[3];
    cell_origin(g, w.cell, first);
    const int64_t terms = g.conv.batch * cg.out_plane();
    acc_t acc = 0;
    for (int64_t j = 0; j < terms; ++j) {
      acc += weight_term(g, cg, first, w.o, w.ic, w.kd, w.kh, w.kw, j, grad_output, input);
    }
    grad_weight[e] = Num<T>::narrow(acc);
  }
}

// One block per weight element: long sums (tiled convolution: batch x positions of a cell).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    weight_backward_block_kernel(const LocalGeometry g, const T* __restrict__ grad_output,
                                 const T* __restrict__ input, T* __restrict__ grad_weight) {
  using acc_t = typename Num<T>::acc;
  const int64_t total = g.cells() * g.cell_size();
  for (int64_t e = blockIdx.x; e < total; e += gridDim.x) {
    const WeightIndex w = weight_index(g.conv, e);
    const ConvGeometry cg = cell_geometry(g, w.cell);
    int64_t first[3];
    cell_origin(g, w.cell, first);
    const int64_t terms = g.conv.batch * cg.out_plane();
    acc_t acc = 0;
    for (int64_t j = threadIdx.x; j < terms; j += blockDim.x) {
      acc += weight_term(g, cg, first, w.o, w.ic, w.kd, w.kh, w.kw, j, grad_output, input);
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) grad_weight[e] = Num<T>::narrow(acc);
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------
// Launchers.

cudaError_t forward(DType dtype, const LocalGeometry& g, const void* input, const void* weight,
                    const void* bias, bool bias_per_position, void* output, cudaStream_t stream) {
  const int64_t total = g.conv.batch * g.conv.out_channels * g.conv.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    forward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(input), static_cast<const T*>(weight), static_cast<const T*>(bias),
        bias_per_position, static_cast<T*>(output));
  });
}

cudaError_t input_backward(DType dtype, const LocalGeometry& g, const void* grad_output,
                           const void* weight, void* grad_input, cudaStream_t stream) {
  const int64_t total = g.conv.batch * g.conv.in_channels * g.conv.in_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    input_backward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(grad_output), static_cast<const T*>(weight), static_cast<T*>(grad_input));
  });
}

cudaError_t weight_backward(DType dtype, const LocalGeometry& g, const void* grad_output,
                            const void* input, void* grad_weight, cudaStream_t stream) {
  const int64_t total = g.cells() * g.cell_size();
  if (total == 0) return cudaSuccess;
  const int64_t terms = g.conv.batch * g.positions_per_cell();
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* gy = static_cast<const T*>(grad_output);
    const T* x = static_cast<const T*>(input);
    T* gw = static_cast<T*>(grad_weight);
    if (terms <= kThreadSumMax) {
      weight_backward_thread_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(g, gy, x, gw);
    } else {
      const unsigned blocks = static_cast<unsigned>(std::min(total, kMaxBlocks));
      weight_backward_block_kernel<T><<<blocks, kThreads, 0, stream>>>(g, gy, x, gw);
    }
  });
}

}  // namespace tco::cuda_local
