// CUDA implementations of the stochastic pool ops: tensors in, launches of
// stochastic_pool_cuda.cu out. Argument checks are those of the CPU ops (pool_common.cpp).
// Results are NCHW-contiguous, as on the CPU.

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../compute_type.h"
#include "../cuda_glue.h"
#include "pool_common.h"
#include "stochastic_pool_cuda.h"

namespace tco {
namespace {

PoolGeometry stochastic_geometry(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                                 at::IntArrayRef stride) {
  const std::vector<int64_t> zeros(kernel_size.size(), 0), ones(kernel_size.size(), 1);
  const PoolGeometry g = window_geometry(op, input, kernel_size, stride, zeros, ones, false);
  check_non_negative(op, input);
  return g;
}

std::tuple<at::Tensor, at::Tensor> stochastic_pool_forward_cuda(const at::Tensor& input, const at::Tensor& uniform,
                                                                at::IntArrayRef kernel_size, at::IntArrayRef stride) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const c10::cuda::CUDAGuard guard(input.device());
  const PoolGeometry g = stochastic_geometry("stochastic_pool", input, kernel_size, stride);
  const auto shape = pool_output_shape(input.size(0), input.size(1), g, kernel_size.size());
  check_uniform("stochastic_pool", uniform, input, shape);
  const at::Tensor x = input.contiguous(), u = uniform.contiguous();
  at::Tensor out = at::empty(shape, x.options());
  at::Tensor ind = at::empty(shape, x.options().dtype(at::kLong));
  C10_CUDA_CHECK(cuda_pool::stochastic_train(cuda_dtype_of(x.scalar_type()), g, x.const_data_ptr(), u.const_data_ptr(),
                                             out.mutable_data_ptr(), ind.mutable_data_ptr<int64_t>(),
                                             current_cuda_stream()));
  return {out, ind};
}

at::Tensor stochastic_pool_eval_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size,
                                             at::IntArrayRef stride) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const c10::cuda::CUDAGuard guard(input.device());
  const PoolGeometry g = stochastic_geometry("stochastic_pool", input, kernel_size, stride);
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(pool_output_shape(input.size(0), input.size(1), g, kernel_size.size()), x.options());
  C10_CUDA_CHECK(cuda_pool::stochastic_eval(cuda_dtype_of(x.scalar_type()), g, x.const_data_ptr(), out.mutable_data_ptr(),
                                            current_cuda_stream()));
  return out;
}

at::Tensor stochastic_pool_eval_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                              at::IntArrayRef kernel_size, at::IntArrayRef stride) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const std::vector<int64_t> zeros(kernel_size.size(), 0), ones(kernel_size.size(), 1);
  const PoolGeometry g = window_backward_geometry("stochastic_pool_eval_backward", grad_output, input.sizes(),
                                                  kernel_size, stride, zeros, ones, false);
  check_same_dtype_device("stochastic_pool_eval_backward", grad_output, input);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor gy = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gin = at::empty(input.sizes(), x.options());
  const at::ScalarType acc = compute_type(x.scalar_type());
  at::Tensor coef = at::empty({2 * g.planes * g.out_plane()}, x.options().dtype(acc));
  C10_CUDA_CHECK(cuda_pool::stochastic_eval_backward(cuda_dtype_of(x.scalar_type()), g, gy.const_data_ptr(),
                                                     x.const_data_ptr(), coef.mutable_data_ptr(),
                                                     gin.mutable_data_ptr(), current_cuda_stream()));
  return gin;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CUDA, m) {
  m.impl("stochastic_pool_forward", &tco::stochastic_pool_forward_cuda);
  m.impl("stochastic_pool_eval_forward", &tco::stochastic_pool_eval_forward_cuda);
  m.impl("stochastic_pool_eval_backward", &tco::stochastic_pool_eval_backward_cuda);
}
