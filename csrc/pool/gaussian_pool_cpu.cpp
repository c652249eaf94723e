// CPU kernels of Gaussian pooling (see gaussian_pool.h for the weights).
//
// Forward: row by row, each tap of the window adding its weighted input row to a whole
// output row (the padding adds zeros). Backward: the transposed weighted window, each output
// row's gradient added back to its taps' input rows. Work is split over (batch, channel)
// planes, a task owning its output and input-gradient planes, so nothing races; float16 and
// bfloat16 compute in float32.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../cpu_vectorize.h"
#include "gaussian_pool.h"
#include "pool_common.h"

namespace tco {
namespace {

int64_t grain_for(int64_t plane_elems) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(plane_elems, 1));
}

// acc[o] += c * src[o * step] for o in [lo, hi) (one width tap of one output row).
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void axpy_row(acc_t* __restrict acc, const scalar_t* __restrict src, int64_t lo, int64_t hi,
                            int64_t step, acc_t c) {
  if (step == 1) {
    for (int64_t o = lo; o < hi; ++o) acc[o] += c * static_cast<acc_t>(src[o]);
  } else {
    for (int64_t o = lo; o < hi; ++o) acc[o] += c * static_cast<acc_t>(src[o * step]);
  }
}

// dst[o * step] += c * src[o] for o in [lo, hi) (the transpose of axpy_row).
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void scatter_row(acc_t* __restrict dst, const scalar_t* __restrict src, int64_t lo, int64_t hi,
                               int64_t step, acc_t c) {
  if (step == 1) {
    for (int64_t o = lo; o < hi; ++o) dst[o] += c * static_cast<acc_t>(src[o]);
  } else {
    for (int64_t o = lo; o < hi; ++o) dst[o * step] += c * static_cast<acc_t>(src[o]);
  }
}

// Row by row, as the sum pooling of pool_cpu.cpp: for one output row every tap (kd, kh, kw)
// whose input row lies inside adds its weighted, strided input row to the whole output row.
template <typename scalar_t>
void gaussian_forward(const scalar_t* in, scalar_t* out, const PoolGeometry& g, const std::vector<double>& weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const std::vector<acc_t> w(weights.begin(), weights.end());
  const acc_t* wd_tab = w.data();
  const acc_t* wh_tab = wd_tab + g.kernel[0];
  const acc_t* ww_tab = wh_tab + g.kernel[1];
  const int64_t H = g.in_size[1], W = g.in_size[2], oW = g.out_size[2], sw = g.stride[2];
  std::vector<PoolRange> tap_w(g.kernel[2]);
  for (int64_t k = 0; k < g.kernel[2]; ++k) tap_w[k] = pool_tap_outputs(g, 2, k);
  at::parallel_for(0, g.planes, grain_for(g.out_plane() * g.kernel_volume()), [&](int64_t p0, int64_t p1) {
    std::vector<acc_t> acc(oW);
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* src = in + p * g.in_plane();
      scalar_t* dst = out + p * g.out_plane();
      for (int64_t od = 0; od < g.out_size[0]; ++od) {
        const PoolWindow wd = pool_window(g, 0, od);
        const int64_t rd = od * g.stride[0] - g.pad[0];
        for (int64_t oh = 0; oh < g.out_size[1]; ++oh) {
          const PoolWindow wh = pool_window(g, 1, oh);
          const int64_t rh = oh * g.stride[1] - g.pad[1];
          std::fill(acc.begin(), acc.end(), acc_t(0));
          for (int64_t id = wd.start; id < wd.start + wd.count; ++id) {
            for (int64_t ih = wh.start; ih < wh.start + wh.count; ++ih) {
              const acc_t c = wd_tab[id - rd] * wh_tab[ih - rh];
              const scalar_t* row = src + (id * H + ih) * W;
              for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
                const PoolRange r = tap_w[kw];
                // input column of output o: o * sw - pad + kw
                axpy_row(acc.data(), row + kw - g.pad[2], r.lo, r.hi, sw, c * ww_tab[kw]);
              }
            }
          }
          scalar_t* out_row = dst + (od * g.out_size[1] + oh) * oW;
          for (int64_t o = 0; o < oW; ++o) out_row[o] = static_cast<scalar_t>(acc[o]);
        }
      }
    }
  });
}

// The transpose, row by row: each output row's gradient, weighted, is added back to the
// input rows of its taps. A task owns its input-gradient plane (accumulated in acc_t).
template <typename scalar_t>
void gaussian_backward(const scalar_t* gout, scalar_t* gin, const PoolGeometry& g, const std::vector<double>& weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const std::vector<acc_t> w(weights.begin(), weights.end());
  const acc_t* wd_tab = w.data();
  const acc_t* wh_tab = wd_tab + g.kernel[0];
  const acc_t* ww_tab = wh_tab + g.kernel[1];
  const int64_t H = g.in_size[1], W = g.in_size[2], oW = g.out_size[2], sw = g.stride[2];
  std::vector<PoolRange> tap_w(g.kernel[2]);
  for (int64_t k = 0; k < g.kernel[2]; ++k) tap_w[k] = pool_tap_outputs(g, 2, k);
  at::parallel_for(0, g.planes, grain_for(g.in_plane() * g.kernel_volume()), [&](int64_t p0, int64_t p1) {
    std::vector<acc_t> acc(g.in_plane());
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* src = gout + p * g.out_plane();
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t od = 0; od < g.out_size[0]; ++od) {
        const PoolWindow wd = pool_window(g, 0, od);
        const int64_t rd = od * g.stride[0] - g.pad[0];
        for (int64_t oh = 0; oh < g.out_size[1]; ++oh) {
          const PoolWindow wh = pool_window(g, 1, oh);
          const int64_t rh = oh * g.stride[1] - g.pad[1];
          const scalar_t* gy_row = src + (od * g.out_size[1] + oh) * oW;
          for (int64_t id = wd.start; id < wd.start + wd.count; ++id) {
            for (int64_t ih = wh.start; ih < wh.start + wh.count; ++ih) {
              const acc_t c = wd_tab[id - rd] * wh_tab[ih - rh];
              acc_t* row = acc.data() + (id * H + ih) * W;
              for (int64_t kw = 0; kw < g.kernel[2]; ++kw) {
                const PoolRange r = tap_w[kw];
                scatter_row(row + kw - g.pad[2], gy_row, r.lo, r.hi, sw, c * ww_tab[kw]);
              }
            }
          }
        }
      }
      scalar_t* dst = gin + p * g.in_plane();
      for (int64_t i = 0; i < g.in_plane(); ++i) dst[i] = static_cast<scalar_t>(acc[i]);
    }
  });
}

at::Tensor gaussian_pool_forward_cpu(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, double sigma) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_sigma("gaussian_pool", sigma);
  const PoolGeometry g = window_geometry("gaussian_pool", input, kernel_size, stride, padding,
                                         std::vector<int64_t>(kernel_size.size(), 1), false);
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(pool_output_shape(input.size(0), input.size(1), g, kernel_size.size()), x.options());
  if (g.planes == 0 || g.out_plane() == 0) return out;
  const std::vector<double> w = gaussian_weights(g, sigma);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "cnn_ops_gaussian_pool_forward", [&] {
    gaussian_forward<scalar_t>(x.const_data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g, w);
  });
  return out;
}

at::Tensor gaussian_pool_backward_cpu(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                      at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                      double sigma) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_sigma("gaussian_pool_backward", sigma);
  const PoolGeometry g = window_backward_geometry("gaussian_pool_backward", grad_output, input_size, kernel_size,
                                                  stride, padding, std::vector<int64_t>(kernel_size.size(), 1), false);
  const at::Tensor gy = grad_output.contiguous();
  at::Tensor gin = at::empty(input_size, gy.options());
  if (g.planes == 0 || g.in_plane() == 0) return gin;
  const std::vector<double> w = gaussian_weights(g, sigma);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gy.scalar_type(), "cnn_ops_gaussian_pool_backward", [&] {
    gaussian_backward<scalar_t>(gy.const_data_ptr<scalar_t>(), gin.data_ptr<scalar_t>(), g, w);
  });
  return gin;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) {
  m.impl("gaussian_pool_forward", &tco::gaussian_pool_forward_cpu);
  m.impl("gaussian_pool_backward", &tco::gaussian_pool_backward_cpu);
}
