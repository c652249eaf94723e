// CUDA kernels of the conv family. No torch header here (see conv_cuda.h); the glue that
// turns tensors into these launches, and runs the GEMMs of the im2col algorithm through
// cuBLAS, is conv_cuda_ops.cpp.
//
// Every kernel computes one output element per thread (the weight gradient: one per block)
// in a grid-stride loop with 64-bit indices, in gather form: a thread sums everything that
// lands in its element and writes it once, so there are no atomics and results are
// deterministic. Threads with consecutive indices own neighbours along the innermost
// (width) dimension, so loads and stores are coalesced for stride 1.
//
// float16 and bfloat16 accumulate in float32; float32 and float64 in their own type.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "../cuda_common.cuh"
#include "conv_cuda.h"
#include "conv_geometry.h"
#include "conv_winograd.h"

namespace tco::cuda_conv {
namespace {

using namespace tco::cuda;



// Forward direction: calls f(tap, pos) for every kernel tap that output position
// (od, oh, ow) reads inside the input; pos is the flat index of that input position within
// one channel plane. Taps that fall in the padding are skipped.
template <typename F>
__device__ __forceinline__ void for_each_input_tap(const ConvGeometry& g, int64_t od, int64_t oh,
                                                   int64_t ow, F&& f) {
  const IndexRange rd = taps_inside(g, 0, od), rh = taps_inside(g, 1, oh), rw = taps_inside(g, 2, ow);
  for (int64_t kd = rd.lo; kd < rd.hi; ++kd) {
    const int64_t id = od * g.stride[0] + tap_offset(g, 0, kd);
    for (int64_t kh = rh.lo; kh < rh.hi; ++kh) {
      const int64_t ih = oh * g.stride[1] + tap_offset(g, 1, kh);
      const int64_t row = (id * g.in_size[1] + ih) * g.in_size[2];
      const int64_t tap_row = (kd * g.kernel[1] + kh) * g.kernel[2];
      for (int64_t kw = rw.lo; kw < rw.hi; ++kw) {
        f(tap_row + kw, row + ow * g.stride[2] + tap_offset(g, 2, kw));
      }
    }
  }
}

// Backward direction: calls f(tap, o) for every (kernel tap, output position) pair whose
// forward read is input position (id, ih, iw); o is the flat index of the output position
// within one channel plane. Along each dimension, tap k reaches output index
// (i - tap_offset(k)) / stride when that is a whole number inside [0, out_size).
template <typename F>
__device__ __forceinline__ void for_each_output_tap(const ConvGeometry& g, int64_t id, int64_t ih,
                                                    int64_t iw, F&& f) {
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
    const int64_t td = id - tap_offset(g, 0, kd);
    if (td < 0) break;  // tap offsets grow with k: no later tap reaches an output either
    if (td % g.stride[0] != 0 || td / g.stride[0] >= g.out_size[0]) continue;
    const int64_t od = td / g.stride[0];
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
      const int64_t th = ih - tap_offset(g, 1, kh);
      if (th < 0) break;
      if (th % g.stride[1] != 0 || th / g.stride[1] >= g.out_size[1]) continue;
      const int64_t oh = th / g.stride[1];
      const int64_t o_row = (od * g.out_size[1] + oh) * g.out_size[2];
      const int64_t tap_row = (kd * g.kernel[1] + kh) * g.kernel[2];
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
        const int64_t tw = iw - tap_offset(g, 2, kw);
        if (tw < 0) break;
        if (tw % g.stride[2] != 0 || tw / g.stride[2] >= g.out_size[2]) continue;
        f(tap_row + kw, o_row + tw / g.stride[2]);
      }
    }
  }
}

// Position of a flat index of a (batch, channels, D, H, W) tensor.
struct Position {
  int64_t n, c, d, h, w;
};

__device__ __forceinline__ Position unflatten(int64_t idx, int64_t channels, const int64_t* size) {
  Position p;
  p.w = idx % size[2];
  idx /= size[2];
  p.h = idx % size[1];
  idx /= size[1];
  p.d = idx % size[0];
  idx /= size[0];
  p.c = idx % channels;
  p.n = idx / channels;
  return p;
}

// ---------------------------------------------------------------------------------------
// Direct algorithm.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    direct_forward_kernel(const ConvGeometry g, const T* __restrict__ input,
                          const T* __restrict__ weight, const T* __restrict__ bias,
                          T* __restrict__ output) {
  using acc_t = typename Num<T>::acc;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane();
  const int64_t total = g.batch * g.out_channels * g.out_plane();
  TCO_GRID_STRIDE_LOOP(idx, total) {
    const Position p = unflatten(idx, g.out_channels, g.out_size);
    const int64_t oc = p.c;
    const T* in_g = input + (p.n * g.in_channels + oc / Og * Cg) * in_plane;
    const T* w_oc = weight + oc * Cg * K;
    acc_t acc = bias ? Num<T>::widen(bias[oc]) : acc_t(0);
    for_each_input_tap(g, p.d, p.h, p.w, [&](int64_t tap, int64_t pos) {
      for (int64_t ic = 0; ic < Cg; ++ic) {
        acc += Num<T>::widen(w_oc[ic * K + tap]) * Num<T>::widen(in_g[ic * in_plane + pos]);
      }
    });
    output[idx] = Num<T>::narrow(acc);
  }
}

// grad_input[n, c, i] = sum over the out channels oc of c's group and the (tap, o) pairs
// that read i: weight[oc, c % Cg, tap] * grad_output[n, oc, o].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    direct_input_backward_kernel(const ConvGeometry g, const T* __restrict__ grad_output,
                                 const T* __restrict__ weight, T* __restrict__ grad_input) {
  using acc_t = typename Num<T>::acc;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), out_plane = g.out_plane();
  const int64_t total = g.batch * g.in_channels * g.in_plane();
  TCO_GRID_STRIDE_LOOP(idx, total) {
    const Position p = unflatten(idx, g.in_channels, g.in_size);
    const int64_t grp = p.c / Cg, ic = p.c % Cg;
    const T* gout_g = grad_output + (p.n * g.out_channels + grp * Og) * out_plane;
    // weight[grp * Og + j, ic, tap] sits at w_g[j * Cg * K + tap].
    const T* w_g = weight + (grp * Og * Cg + ic) * K;
    acc_t acc = 0;
    for_each_output_tap(g, p.d, p.h, p.w, [&](int64_t tap, int64_t o) {
      for (int64_t j = 0; j < Og; ++j) {
        acc += Num<T>::widen(w_g[j * Cg * K + tap]) * Num<T>::widen(gout_g[j * out_plane + o]);
      }
    });
    grad_input[idx] = Num<T>::narrow(acc);
  }
}

// One block per weight element (oc, ic, tap): its threads stride over the batch and the
// box of output positions whose input, for this tap, is inside the input (no padding
// reads), then the block reduces.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    direct_weight_backward_kernel(const ConvGeometry g, const T* __restrict__ grad_output,
                                  const T* __restrict__ input, T* __restrict__ grad_weight) {
  using acc_t = typename Num<T>::acc;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), K = g.kernel_volume();
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const int64_t numel = g.out_channels * Cg * K;
  for (int64_t widx = blockIdx.x; widx < numel; widx += gridDim.x) {
    const int64_t tap = widx % K, ic = widx / K % Cg, oc = widx / K / Cg;
    const int64_t kw = tap % g.kernel[2], kh = tap / g.kernel[2] % g.kernel[1],
                  kd = tap / (g.kernel[2] * g.kernel[1]);
    const int64_t off_d = tap_offset(g, 0, kd), off_h = tap_offset(g, 1, kh),
                  off_w = tap_offset(g, 2, kw);
    const IndexRange rd = valid_outputs(g, 0, off_d), rh = valid_outputs(g, 1, off_h),
                     rw = valid_outputs(g, 2, off_w);
    const int64_t nd = rd.hi > rd.lo ? rd.hi - rd.lo : 0, nh = rh.hi > rh.lo ? rh.hi - rh.lo : 0,
                  nw = rw.hi > rw.lo ? rw.hi - rw.lo : 0;
    const int64_t total = g.batch * nd * nh * nw;  // zero when any extent is: no division by 0
    const T* gout_oc = grad_output + oc * out_plane;
    const T* in_c = input + (oc / Og * Cg + ic) * in_plane;
    acc_t acc = 0;
    for (int64_t j = threadIdx.x; j < total; j += blockDim.x) {
      int64_t r = j;
      const int64_t ow = rw.lo + r % nw;
      r /= nw;
      const int64_t oh = rh.lo + r % nh;
      r /= nh;
      const int64_t od = rd.lo + r % nd;
      const int64_t n = r / nd;
      const int64_t o = (od * g.out_size[1] + oh) * g.out_size[2] + ow;
      const int64_t i = ((od * g.stride[0] + off_d) * g.in_size[1] + oh * g.stride[1] + off_h) *
                            g.in_size[2] +
                        ow * g.stride[2] + off_w;
      acc += Num<T>::widen(gout_oc[n * g.out_channels * out_plane + o]) *
             Num<T>::widen(in_c[n * g.in_channels * in_plane + i]);
    }
    acc = block_sum(acc);
    if (threadIdx.x == 0) grad_weight[widx] = Num<T>::narrow(acc);
  }
}

// ---------------------------------------------------------------------------------------
// im2col algorithm. The flat index of the column matrix (layout in conv_cuda.h) is the
// thread index, so writes are contiguous.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    im2col_kernel(const ConvGeometry g, const T* __restrict__ input,
                  typename Num<T>::acc* __restrict__ col) {
  using acc_t = typename Num<T>::acc;
  const int64_t K = g.kernel_volume(), L = g.out_plane();
  const int64_t total = g.in_channels * K * g.batch * L;
  TCO_GRID_STRIDE_LOOP(idx, total) {
    int64_t r = idx;
    const int64_t o = r % L;
    r /= L;
    const int64_t s = r % g.batch;
    r /= g.batch;
    const int64_t tap = r % K, c = r / K;
    const int64_t ow = o % g.out_size[2], oh = o / g.out_size[2] % g.out_size[1],
                  od = o / (g.out_size[2] * g.out_size[1]);
    const int64_t kw = tap % g.kernel[2], kh = tap / g.kernel[2] % g.kernel[1],
                  kd = tap / (g.kernel[2] * g.kernel[1]);
    const int64_t id = od * g.stride[0] + tap_offset(g, 0, kd);
    const int64_t ih = oh * g.stride[1] + tap_offset(g, 1, kh);
    const int64_t iw = ow * g.stride[2] + tap_offset(g, 2, kw);
    acc_t v = 0;
    if (id >= 0 && id < g.in_size[0] && ih >= 0 && ih < g.in_size[1] && iw >= 0 &&
        iw < g.in_size[2]) {
      v = Num<T>::widen(
          input[(((s * g.in_channels + c) * g.in_size[0] + id) * g.in_size[1] + ih) * g.in_size[2] + iw]);
    }
    col[idx] = v;
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    col2im_kernel(const ConvGeometry g, const typename Num<T>::acc* __restrict__ col,
                  T* __restrict__ grad_input) {
  using acc_t = typename Num<T>::acc;
  const int64_t K = g.kernel_volume(), L = g.out_plane(), cols = g.batch * L;
  const int64_t total = g.batch * g.in_channels * g.in_plane();
  TCO_GRID_STRIDE_LOOP(idx, total) {
    const Position p = unflatten(idx, g.in_channels, g.in_size);
    const acc_t* col_c = col + p.c * K * cols + p.n * L;  // row (c, tap 0), sample n's columns
    acc_t acc = 0;
    for_each_output_tap(g, p.d, p.h, p.w,
                        [&](int64_t tap, int64_t o) { acc += col_c[tap * cols + o]; });
    grad_input[idx] = Num<T>::narrow(acc);
  }
}

// ---------------------------------------------------------------------------------------
// Winograd (plan and layouts: conv_winograd.h). One thread per (channel, tile), consecutive
// threads on consecutive tiles, so that the rows of V and M are read and written coalesced.
// The transforms' coefficients come with the plan (a kernel argument), in double, rounded to
// the compute type as they are used.

// U[grp][xi * aw + nu][o][c] = sum over taps (a, b) of G_h[xi][a] G_w[nu][b] weight[oc][c][a][b].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    winograd_weight_kernel(const ConvGeometry g, const WinogradPlan p, const T* __restrict__ weight,
                           typename Num<T>::acc* __restrict__ u) {
  using acc_t = typename Num<T>::acc;
  const int ah = p.dim[0].alpha, aw = p.dim[1].alpha;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), kh = g.kernel[1], kw = g.kernel[2];
  TCO_GRID_STRIDE_LOOP(idx, g.out_channels * Cg) {
    const int64_t oc = idx / Cg, c = idx % Cg, grp = oc / Og, o = oc % Og;
    const T* f = weight + idx * kh * kw;
    for (int xi = 0; xi < ah; ++xi) {
      for (int nu = 0; nu < aw; ++nu) {
        acc_t s = 0;
        for (int64_t a = 0; a < kh; ++a)
          for (int64_t b = 0; b < kw; ++b)
            s += static_cast<acc_t>(p.dim[0].g[xi][a] * p.dim[1].g[nu][b]) * Num<T>::widen(f[a * kw + b]);
        u[((grp * ah * aw + xi * aw + nu) * Og + o) * Cg + c] = s;
      }
    }
  }
}

// V[grp][xi * aw + nu][c][t] = (B_h^T d B_w)[xi][nu] for the input patch d of tile t.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    winograd_input_kernel(const ConvGeometry g, const WinogradPlan p, const T* __restrict__ input,
                          typename Num<T>::acc* __restrict__ v) {
  using acc_t = typename Num<T>::acc;
  const int ah = p.dim[0].alpha, aw = p.dim[1].alpha;
  const int64_t per_sample = p.tiles_per_sample(), tiles = g.batch * per_sample, Cg = g.in_per_group();
  const int64_t H = g.in_size[1], W = g.in_size[2];
  TCO_GRID_STRIDE_LOOP(idx, g.in_channels * tiles) {
    const int64_t ch = idx / tiles, t = idx % tiles, n = t / per_sample;
    const int64_t th = t % per_sample / p.tiles_w, tw = t % p.tiles_w;
    const T* plane = input + (n * g.in_channels + ch) * g.in_plane();
    const int64_t h0 = th * p.dim[0].m - g.pad[1], w0 = tw * p.dim[1].m - g.pad[2];
    // Along the height first: rows[xi][j] = sum_i B_h^T[xi][i] d[i][j].
    acc_t rows[kWinogradMaxAlpha][kWinogradMaxAlpha];
    for (int xi = 0; xi < ah; ++xi)
      for (int j = 0; j < aw; ++j) rows[xi][j] = 0;
    for (int i = 0; i < ah; ++i) {
      const int64_t h = h0 + i;
      if (h < 0 || h >= H) continue;
      for (int j = 0; j < aw; ++j) {
        const int64_t w = w0 + j;
        if (w < 0 || w >= W) continue;
        const acc_t x = Num<T>::widen(plane[h * W + w]);
        for (int xi = 0; xi < ah; ++xi) {
          const double c = p.dim[0].bt[xi][i];
          if (c != 0) rows[xi][j] += static_cast<acc_t>(c) * x;
        }
      }
    }
    acc_t* out = v + ((ch / Cg) * ah * aw * Cg + ch % Cg) * tiles + t;
    for (int xi = 0; xi < ah; ++xi) {
      for (int nu = 0; nu < aw; ++nu) {
        acc_t s = 0;
        for (int j = 0; j < aw; ++j) {
          const double c = p.dim[1].bt[nu][j];
          if (c != 0) s += static_cast<acc_t>(c) * rows[xi][j];
        }
        out[(xi * aw + nu) * Cg * tiles] = s;
      }
    }
  }
}

// output[n][oc] over tile t = bias + (A_h^T M A_w) for M[grp][.][o][t], cropped to the plane.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    winograd_output_kernel(const ConvGeometry g, const WinogradPlan p, const typename Num<T>::acc* __restrict__ m,
                           const T* __restrict__ bias, T* __restrict__ output) {
  using acc_t = typename Num<T>::acc;
  const int ah = p.dim[0].alpha, aw = p.dim[1].alpha, mh = p.dim[0].m, mw = p.dim[1].m;
  const int64_t per_sample = p.tiles_per_sample(), tiles = g.batch * per_sample, Og = g.out_per_group();
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  TCO_GRID_STRIDE_LOOP(idx, g.out_channels * tiles) {
    const int64_t oc = idx / tiles, t = idx % tiles, n = t / per_sample;
    const int64_t th = t % per_sample / p.tiles_w, tw = t % p.tiles_w;
    const acc_t* src = m + ((oc / Og) * ah * aw * Og + oc % Og) * tiles + t;
    // Along the width first: cols[xi][j] = sum_nu M[xi][nu] A_w^T[j][nu].
    acc_t cols[kWinogradMaxAlpha][kWinogradMaxAlpha - 2];
    for (int xi = 0; xi < ah; ++xi) {
      for (int j = 0; j < mw; ++j) cols[xi][j] = 0;
      for (int nu = 0; nu < aw; ++nu) {
        const acc_t x = src[(xi * aw + nu) * Og * tiles];
        for (int j = 0; j < mw; ++j) {
          const double c = p.dim[1].at[j][nu];
          if (c != 0) cols[xi][j] += static_cast<acc_t>(c) * x;
        }
      }
    }
    const acc_t b = bias ? Num<T>::widen(bias[oc]) : acc_t(0);
    T* plane = output + (n * g.out_channels + oc) * g.out_plane();
    for (int i = 0; i < mh && th * mh + i < oH; ++i) {
      for (int j = 0; j < mw && tw * mw + j < oW; ++j) {
        acc_t s = b;
        for (int xi = 0; xi < ah; ++xi) {
          const double c = p.dim[0].at[i][xi];
          if (c != 0) s += static_cast<acc_t>(c) * cols[xi][j];
        }
        plane[(th * mh + i) * oW + tw * mw + j] = Num<T>::narrow(s);
      }
    }
  }
}

#undef TCO_GRID_STRIDE_LOOP

}  // namespace

// Launchers: each calls its kernel for the element type of `dtype` (dispatch_float_types).

cudaError_t direct_forward(DType dtype, const ConvGeometry& g, const void* input,
                           const void* weight, const void* bias, void* output,
                           cudaStream_t stream) {
  const int64_t total = g.batch * g.out_channels * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    direct_forward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(input), static_cast<const T*>(weight),
        static_cast<const T*>(bias), static_cast<T*>(output));
  });
}

cudaError_t direct_input_backward(DType dtype, const ConvGeometry& g, const void* grad_output,
                                  const void* weight, void* grad_input, cudaStream_t stream) {
  const int64_t total = g.batch * g.in_channels * g.in_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    direct_input_backward_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(grad_output), static_cast<const T*>(weight),
        static_cast<T*>(grad_input));
  });
}

cudaError_t direct_weight_backward(DType dtype, const ConvGeometry& g, const void* grad_output,
                                   const void* input, void* grad_weight, cudaStream_t stream) {
  const int64_t numel = g.out_channels * g.in_per_group() * g.kernel_volume();
  if (numel == 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>(std::min(numel, kMaxBlocks));
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    direct_weight_backward_kernel<T><<<blocks, kThreads, 0, stream>>>(
        g, static_cast<const T*>(grad_output), static_cast<const T*>(input),
        static_cast<T*>(grad_weight));
  });
}

cudaError_t im2col(DType dtype, const ConvGeometry& g, const void* input, void* col,
                   cudaStream_t stream) {
  const int64_t total = g.in_channels * g.kernel_volume() * g.batch * g.out_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename Num<T>::acc;
    im2col_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const T*>(input), static_cast<acc_t*>(col));
  });
}

cudaError_t col2im(DType dtype, const ConvGeometry& g, const void* col, void* grad_input,
                   cudaStream_t stream) {
  const int64_t total = g.batch * g.in_channels * g.in_plane();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename Num<T>::acc;
    col2im_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, static_cast<const acc_t*>(col), static_cast<T*>(grad_input));
  });
}

cudaError_t winograd_weight_transform(DType dtype, const ConvGeometry& g, const WinogradPlan& p, const void* weight,
                                      void* u, cudaStream_t stream) {
  const int64_t total = g.out_channels * g.in_per_group();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename Num<T>::acc;
    winograd_weight_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(g, p, static_cast<const T*>(weight),
                                                                         static_cast<acc_t*>(u));
  });
}

cudaError_t winograd_input_transform(DType dtype, const ConvGeometry& g, const WinogradPlan& p, const void* input,
                                     void* v, cudaStream_t stream) {
  const int64_t total = g.in_channels * g.batch * p.tiles_per_sample();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename Num<T>::acc;
    winograd_input_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(g, p, static_cast<const T*>(input),
                                                                        static_cast<acc_t*>(v));
  });
}

cudaError_t winograd_output_transform(DType dtype, const ConvGeometry& g, const WinogradPlan& p, const void* m,
                                      const void* bias, void* output, cudaStream_t stream) {
  const int64_t total = g.out_channels * g.batch * p.tiles_per_sample();
  if (total == 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using acc_t = typename Num<T>::acc;
    winograd_output_kernel<T><<<blocks_for(total), kThreads, 0, stream>>>(
        g, p, static_cast<const acc_t*>(m), static_cast<const T*>(bias), static_cast<T*>(output));
  });
}

}  // namespace tco::cuda_conv
