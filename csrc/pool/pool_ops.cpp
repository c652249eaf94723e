// The window and adaptive pooling ops, once for every device (pool_ops.h): checks and
// geometry (pool_common.cpp), then the device backend's pass.

#include "pool_ops.h"

#include <ATen/core/LegacyTypeDispatch.h>

#include <vector>

namespace tco {
namespace {

std::vector<int64_t> ones(size_t n) { return std::vector<int64_t>(n, 1); }
std::vector<int64_t> zeros(size_t n) { return std::vector<int64_t>(n, 0); }

}  // namespace

Tensor2 max_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                         bool minimum) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = window_geometry(minimum ? "min_pool" : "max_pool", input, kernel_size, stride, padding,
                                         dilation, ceil_mode);
  return be.extreme_forward(input, g, static_cast<int64_t>(kernel_size.size()), minimum);
}

Tensor2 adaptive_max_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef output_size,
                                  bool minimum) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_geometry(minimum ? "adaptive_min_pool" : "adaptive_max_pool", input, output_size);
  return be.extreme_forward(input, g, static_cast<int64_t>(output_size.size()), minimum);
}

at::Tensor max_pool_backward(const PoolBackend& be, const at::Tensor& grad_output, const at::Tensor& indices,
                             at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = scatter_geometry("max_pool_backward", grad_output, indices, input_size);
  return be.scatter_backward(grad_output, indices, g, input_size);
}

at::Tensor avg_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                            std::optional<int64_t> divisor_override) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  PoolGeometry g = window_geometry("avg_pool", input, kernel_size, stride, padding, ones(kernel_size.size()), ceil_mode);
  set_divisor("avg_pool", g, count_include_pad, divisor_override);
  return be.sum_forward(input, g, static_cast<int64_t>(kernel_size.size()), false, 1.0);
}

at::Tensor avg_pool_backward(const PoolBackend& be, const at::Tensor& grad_output, at::IntArrayRef input_size,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                             bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  PoolGeometry g = window_backward_geometry("avg_pool_backward", grad_output, input_size, kernel_size, stride,
                                            padding, ones(kernel_size.size()), ceil_mode);
  set_divisor("avg_pool_backward", g, count_include_pad, divisor_override);
  return be.sum_backward(grad_output, nullptr, g, input_size, false, 1.0);
}

at::Tensor adaptive_avg_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef output_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_geometry("adaptive_avg_pool", input, output_size, /*empty_channels_allowed=*/true);
  return be.sum_forward(input, g, static_cast<int64_t>(output_size.size()), false, 1.0);
}

at::Tensor adaptive_avg_pool_backward(const PoolBackend& be, const at::Tensor& grad_output,
                                      at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_backward_geometry("adaptive_avg_pool_backward", grad_output, input_size);
  return be.sum_backward(grad_output, nullptr, g, input_size, false, 1.0);
}

at::Tensor lp_pool_forward(const PoolBackend& be, const at::Tensor& input, double norm_type,
                           at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_norm_type("lp_pool", norm_type);
  const size_t nd = kernel_size.size();
  const PoolGeometry g = window_geometry("lp_pool", input, kernel_size, stride, zeros(nd), ones(nd), ceil_mode);
  return be.sum_forward(input, g, static_cast<int64_t>(nd), true, norm_type);
}

at::Tensor lp_pool_backward(const PoolBackend& be, const at::Tensor& grad_output, const at::Tensor& input,
                            double norm_type, at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_norm_type("lp_pool_backward", norm_type);
  const size_t nd = kernel_size.size();
  TORCH_CHECK(input.scalar_type() == grad_output.scalar_type() && input.device() == grad_output.device(),
              "cnn_ops.lp_pool_backward: input (", input.scalar_type(), ", ", input.device(), ") and grad_output (",
              grad_output.scalar_type(), ", ", grad_output.device(), ") must have the same dtype and device");
  const PoolGeometry g = window_backward_geometry("lp_pool_backward", grad_output, input.sizes(), kernel_size,
                                                  stride, zeros(nd), ones(nd), ceil_mode);
  return be.sum_backward(grad_output, &input, g, input.sizes(), true, norm_type);
}

}  // namespace tco
