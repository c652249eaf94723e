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
#include <ATen/core/Tensor.h>

#include <algorithm>
#include <vector>

#include "../cpu_vectorize.h"
#include "gaussian_pool.h"
#include "pool_cpu.h"

namespace tco {
namespace {

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
                axpy(acc.data() + r.lo, 1, row + kw - g.pad[2] + r.lo * sw, sw, c * ww_tab[kw], r.hi - r.lo);
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
                axpy(row + kw - g.pad[2] + r.lo * sw, sw, gy_row + r.lo, 1, c * ww_tab[kw], r.hi - r.lo);
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

}  // namespace

void gaussian_forward_cpu(const at::Tensor& input, const PoolGeometry& g, const std::vector<double>& weights,
                          const at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnn_ops_gaussian_pool_forward", [&] {
    gaussian_forward<scalar_t>(input.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>(), g, weights);
  });
}

void gaussian_backward_cpu(const at::Tensor& grad_output, const PoolGeometry& g, const std::vector<double>& weights,
                           const at::Tensor& grad_input) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad_output.scalar_type(),
                                  "cnn_ops_gaussian_pool_backward", [&] {
    gaussian_backward<scalar_t>(grad_output.const_data_ptr<scalar_t>(), grad_input.mutable_data_ptr<scalar_t>(), g,
                                weights);
  });
}

}  // namespace tco
