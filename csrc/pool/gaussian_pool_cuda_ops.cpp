// CUDA implementations of the Gaussian pool ops: tensors in, launches of
// gaussian_pool_cuda.cu out. Argument checks are those of the CPU ops (pool_common.cpp).
// Results are NCHW-contiguous, as on the CPU.

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../compute_type.h"
#include "../cuda_glue.h"
#include "gaussian_pool.h"
#include "gaussian_pool_cuda.h"
#include "pool_common.h"

namespace tco {
namespace {

// The weight tables on the device, in the accumulation type of `t`.
at::Tensor device_weights(const PoolGeometry& g, double sigma, const at::Tensor& t) {
  const at::ScalarType acc = compute_type(t.scalar_type());
  const std::vector<double> w = gaussian_weights(g, sigma);
  return at::tensor(w, at::TensorOptions().dtype(at::kDouble)).to(t.device(), acc);
}

at::Tensor gaussian_pool_forward_cuda(const at::Tensor& input, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, double sigma) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_sigma("gaussian_pool", sigma);
  const PoolGeometry g = window_geometry("gaussian_pool", input, kernel_size, stride, padding,
                                         std::vector<int64_t>(kernel_size.size(), 1), false);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  at::Tensor out = at::empty(pool_output_shape(input.size(0), input.size(1), g, kernel_size.size()), x.options());
  if (out.numel() == 0) return out;
  const at::Tensor w = device_weights(g, sigma, x);
  C10_CUDA_CHECK(cuda_pool::gaussian_forward(cuda_dtype_of(x.scalar_type()), g, w.const_data_ptr(), x.const_data_ptr(),
                                             out.mutable_data_ptr(), current_cuda_stream()));
  return out;
}

at::Tensor gaussian_pool_backward_cuda(const at::Tensor& grad_output, at::IntArrayRef input_size,
                                       at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                       double sigma) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  check_sigma("gaussian_pool_backward", sigma);
  const PoolGeometry g = window_backward_geometry("gaussian_pool_backward", grad_output, input_size, kernel_size,
                                                  stride, padding, std::vector<int64_t>(kernel_size.size(), 1), false);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor gy = grad_output.contiguous();
  at::Tensor gin = at::empty(input_size, gy.options());
  if (gin.numel() == 0) return gin;
  const at::Tensor w = device_weights(g, sigma, gy);
  C10_CUDA_CHECK(cuda_pool::gaussian_backward(cuda_dtype_of(gy.scalar_type()), g, w.const_data_ptr(), gy.const_data_ptr(),
                                              gin.mutable_data_ptr(), current_cuda_stream()));
  return gin;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CUDA, m) {
  m.impl("gaussian_pool_forward", &tco::gaussian_pool_forward_cuda);
  m.impl("gaussian_pool_backward", &tco::gaussian_pool_backward_cuda);
}
