// CUDA implementations of the pool ops (CUDA dispatch key): tensors in, kernel launches of
// pool_cuda.cu out. Compiled by the host compiler only in CUDA builds; narrow headers keep it
// quick to build. Argument checks are those of the CPU ops (pool_common.cpp).

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../cuda_glue.h"
#include "pool_common.h"
#include "pool_cuda.h"

namespace tco {
namespace {

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

std::vector<int64_t> ones(size_t n) { return std::vector<int64_t>(n, 1); }

// The kernels work on NCHW-contiguous tensors; results take the layout that the CPU kernels
// and the fake kernels give (see use_channels_last).
at::Tensor in_layout(const at::Tensor& t, bool channels_last) {
  return channels_last ? t.contiguous(at::MemoryFormat::ChannelsLast) : t;
}

std::tuple<at::Tensor, at::Tensor> extreme_forward_entry(const at::Tensor& input, const PoolGeometry& g,
                                                         int64_t nd, bool minimum) {
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  const auto shape = pool_output_shape(input.size(0), input.size(1), g, nd);
  at::Tensor out = at::empty(shape, x.options());
  at::Tensor ind = at::empty(shape, x.options().dtype(at::kLong));
  C10_CUDA_CHECK(cuda_pool::extreme_forward(cuda_dtype_of(x.scalar_type()), g, minimum, x.const_data_ptr(),
                                            out.mutable_data_ptr(), ind.mutable_data_ptr<int64_t>(),
                                            current_cuda_stream()));
  const bool cl = use_channels_last(input);
  return {in_layout(out, cl), in_layout(ind, cl)};
}

std::tuple<at::Tensor, at::Tensor> max_pool_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                                         at::IntArrayRef stride, at::IntArrayRef padding,
                                                         at::IntArrayRef dilation, bool ceil_mode, bool minimum) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = window_geometry(minimum ? "min_pool" : "max_pool", input, kernel_size, stride, padding,
                                         dilation, ceil_mode);
  return extreme_forward_entry(input, g, static_cast<int64_t>(kernel_size.size()), minimum);
}

std::tuple<at::Tensor, at::Tensor> adaptive_max_pool_forward_cuda(const at::Tensor& input,
                                                                  at::IntArrayRef output_size, bool minimum) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g =
      adaptive_geometry(minimum ? "adaptive_min_pool" : "adaptive_max_pool", input, output_size);
  return extreme_forward_entry(input, g, static_cast<int64_t>(output_size.size()), minimum);
}

at::Tensor max_pool_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices,
                                  at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = scatter_geometry("max_pool_backward", grad_output, indices, input_size);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor gy = grad_output.contiguous(), ix = indices.contiguous();
  at::Tensor acc = at::zeros(input_size, gy.options().dtype(acc_type(gy.scalar_type())));
  C10_CUDA_CHECK(cuda_pool::scatter_add(cuda_dtype_of(gy.scalar_type()), g, gy.const_data_ptr(),
                                        ix.const_data_ptr<int64_t>(), acc.mutable_data_ptr(), current_cuda_stream()));
  return in_layout(acc.scalar_type() == gy.scalar_type() ? acc : acc.to(gy.scalar_type()),
                   use_channels_last(indices));
}

at::Tensor sum_forward_entry(const at::Tensor& input, const PoolGeometry& g, int64_t nd, bool lp, double norm_type) {
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(pool_output_shape(input.size(0), input.size(1), g, nd), x.options());
  C10_CUDA_CHECK(cuda_pool::sum_forward(cuda_dtype_of(x.scalar_type()), g, lp, norm_type, x.const_data_ptr(),
                                        out.mutable_data_ptr(), current_cuda_stream()));
  return in_layout(out, use_channels_last(input));
}

at::Tensor sum_backward_entry(const at::Tensor& grad_output, const at::Tensor* input, const PoolGeometry& g,
                              at::IntArrayRef input_size, bool lp, double norm_type) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor gy = grad_output.contiguous();
  const at::Tensor x = input ? input->contiguous() : at::Tensor();
  at::Tensor gin = at::empty(input_size, gy.options());
  at::Tensor coef = at::empty({g.planes * g.out_plane()}, gy.options().dtype(acc_type(gy.scalar_type())));
  C10_CUDA_CHECK(cuda_pool::sum_backward(cuda_dtype_of(gy.scalar_type()), g, lp, norm_type, gy.const_data_ptr(),
                                         x.defined() ? x.const_data_ptr() : nullptr, coef.mutable_data_ptr(),
                                         gin.mutable_data_ptr(), current_cuda_stream()));
  return in_layout(gin, use_channels_last(input ? *input : grad_output));
}

at::Tensor avg_pool_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                 at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                 std::optional<int64_t> divisor_override) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  PoolGeometry g = window_geometry("avg_pool", input, kernel_size, stride, padding, ones(kernel_size.size()), ceil_mode);
  set_divisor("avg_pool", g, count_include_pad, divisor_override);
  return sum_forward_entry(input, g, static_cast<int64_t>(kernel_size.size()), false, 1.0);
}

at::Tensor avg_pool_backward_cuda(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                  at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                  bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  PoolGeometry g = window_backward_geometry("avg_pool_backward", grad_output, input_size, kernel_size, stride,
                                            padding, ones(kernel_size.size()), ceil_mode);
  set_divisor("avg_pool_backward", g, count_include_pad, divisor_override);
  return sum_backward_entry(grad_output, nullptr, g, input_size, false, 1.0);
}

at::Tensor adaptive_avg_pool_forward_cuda(const at::Tensor& input, at::IntArrayRef output_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_geometry("adaptive_avg_pool", input, output_size);
  return sum_forward_entry(input, g, static_cast<int64_t>(output_size.size()), false, 1.0);
}

at::Tensor adaptive_avg_pool_backward_cuda(const at::Tensor& grad_output, at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const PoolGeometry g = adaptive_backward_geometry("adaptive_avg_pool_backward", grad_output, input_size);
  return sum_backward_entry(grad_output, nullptr, g, input_size, false, 1.0);
}

at::Tensor lp_pool_forward_cuda(const at::Tensor& input, double norm_type, at::IntArrayRef kernel_size,
                                at::IntArrayRef stride, bool ceil_mode) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_norm_type("lp_pool", norm_type);
  const size_t nd = kernel_size.size();
  const PoolGeometry g = window_geometry("lp_pool", input, kernel_size, stride, std::vector<int64_t>(nd, 0),
                                         ones(nd), ceil_mode);
  return sum_forward_entry(input, g, static_cast<int64_t>(nd), true, norm_type);
}

at::Tensor lp_pool_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input, double norm_type,
                                 at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_norm_type("lp_pool_backward", norm_type);
  const size_t nd = kernel_size.size();
  TORCH_CHECK(input.scalar_type() == grad_output.scalar_type() && input.device() == grad_output.device(),
              "cnn_ops.lp_pool_backward: input (", input.scalar_type(), ", ", input.device(), ") and grad_output (",
              grad_output.scalar_type(), ", ", grad_output.device(), ") must have the same dtype and device");
  const PoolGeometry g = window_backward_geometry("lp_pool_backward", grad_output, input.sizes(), kernel_size,
                                                  stride, std::vector<int64_t>(nd, 0), ones(nd), ceil_mode);
  return sum_backward_entry(grad_output, &input, g, input.sizes(), true, norm_type);
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CUDA, m) {
  m.impl("max_pool_forward", &tco::max_pool_forward_cuda);
  m.impl("adaptive_max_pool_forward", &tco::adaptive_max_pool_forward_cuda);
  m.impl("max_pool_backward", &tco::max_pool_backward_cuda);
  m.impl("avg_pool_forward", &tco::avg_pool_forward_cuda);
  m.impl("avg_pool_backward", &tco::avg_pool_backward_cuda);
  m.impl("adaptive_avg_pool_forward", &tco::adaptive_avg_pool_forward_cuda);
  m.impl("adaptive_avg_pool_backward", &tco::adaptive_avg_pool_backward_cuda);
  m.impl("lp_pool_forward", &tco::lp_pool_forward_cuda);
  m.impl("lp_pool_backward", &tco::lp_pool_backward_cuda);
}
