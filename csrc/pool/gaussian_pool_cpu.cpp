// CPU kernels of Gaussian pooling (see gaussian_pool.h for the weights).
//
// Forward: one output at a time, a weighted sum over its window clipped to the input (the
// padding adds zeros). Backward: the transposed weighted window, as a gather: each input
// element sums grad_output times the weight it had in every window that contains it, so a
// task owns its input-gradient plane and nothing races. Work is split over (batch, channel)
// planes; float16 and bfloat16 compute in float32.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "gaussian_pool.h"
#include "pool_common.h"

namespace tco {
namespace {

int64_t grain_for(int64_t plane_elems) {
  return std::max<int64_t>(1, (int64_t(1) << 15) / std::max<int64_t>(plane_elems, 1));
}

template <typename scalar_t>
void gaussian_forward(const scalar_t* in, scalar_t* out, const PoolGeometry& g, const std::vector<double>& weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const std::vector<acc_t> w(weights.begin(), weights.end());
  const acc_t* wd_tab = w.data();
  const acc_t* wh_tab = wd_tab + g.kernel[0];
  const acc_t* ww_tab = wh_tab + g.kernel[1];
  const int64_t H = g.in_size[1], W = g.in_size[2];
  at::parallel_for(0, g.planes, grain_for(g.out_plane() * g.kernel_volume()), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* src = in + p * g.in_plane();
      scalar_t* dst = out + p * g.out_plane();
      for (int64_t od = 0; od < g.out_size[0]; ++od) {
        const PoolWindow wd = pool_window(g, 0, od);
        const int64_t rd = od * g.stride[0] - g.pad[0];
        for (int64_t oh = 0; oh < g.out_size[1]; ++oh) {
          const PoolWindow wh = pool_window(g, 1, oh);
          const int64_t rh = oh * g.stride[1] - g.pad[1];
          for (int64_t ow = 0; ow < g.out_size[2]; ++ow) {
            const PoolWindow ww = pool_window(g, 2, ow);
            const int64_t rw = ow * g.stride[2] - g.pad[2];
            acc_t acc = 0;
            for (int64_t id = wd.start; id < wd.start + wd.count; ++id) {
              for (int64_t ih = wh.start; ih < wh.start + wh.count; ++ih) {
                const scalar_t* row = src + (id * H + ih) * W;
                const acc_t* wrow = ww_tab - rw;
                acc_t racc = 0;
                for (int64_t iw = ww.start; iw < ww.start + ww.count; ++iw) {
                  racc += wrow[iw] * static_cast<acc_t>(row[iw]);
                }
                acc += wd_tab[id - rd] * wh_tab[ih - rh] * racc;
              }
            }
            dst[(od * g.out_size[1] + oh) * g.out_size[2] + ow] = static_cast<scalar_t>(acc);
          }
        }
      }
    }
  });
}

template <typename scalar_t>
void gaussian_backward(const scalar_t* gout, scalar_t* gin, const PoolGeometry& g, const std::vector<double>& weights) {
  using acc_t = at::opmath_type<scalar_t>;
  const std::vector<acc_t> w(weights.begin(), weights.end());
  const acc_t* wd_tab = w.data();
  const acc_t* wh_tab = wd_tab + g.kernel[0];
  const acc_t* ww_tab = wh_tab + g.kernel[1];
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  at::parallel_for(0, g.planes, grain_for(g.in_plane() * g.kernel_volume()), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const scalar_t* src = gout + p * g.out_plane();
      scalar_t* dst = gin + p * g.in_plane();
      for (int64_t id = 0; id < g.in_size[0]; ++id) {
        const PoolRange rd = pool_outputs_near(g, 0, id);
        for (int64_t ih = 0; ih < g.in_size[1]; ++ih) {
          const PoolRange rh = pool_outputs_near(g, 1, ih);
          for (int64_t iw = 0; iw < g.in_size[2]; ++iw) {
            const PoolRange rw = pool_outputs_near(g, 2, iw);
            acc_t acc = 0;
            for (int64_t od = rd.lo; od < rd.hi; ++od) {
              const acc_t a = wd_tab[id + g.pad[0] - od * g.stride[0]];
              for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
                const acc_t b = a * wh_tab[ih + g.pad[1] - oh * g.stride[1]];
                const scalar_t* row = src + (od * oH + oh) * oW;
                for (int64_t ow = rw.lo; ow < rw.hi; ++ow) {
                  acc += b * ww_tab[iw + g.pad[2] - ow * g.stride[2]] * static_cast<acc_t>(row[ow]);
                }
              }
            }
            dst[(id * g.in_size[1] + ih) * g.in_size[2] + iw] = static_cast<scalar_t>(acc);
          }
        }
      }
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
