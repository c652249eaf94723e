// CUDA implementations of the k-max pool ops: tensors in, launches of kmax_pool_cuda.cu out.
// Argument checks are those of the CPU ops (kmax_forward_shape / kmax_backward_shape in
// pool_common.cpp). Results are contiguous, as on the CPU.

#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <limits>
#include <tuple>
#include <vector>

#include "../cuda_glue.h"
#include "kmax_pool_cuda.h"
#include "pool_common.h"

namespace tco {
namespace {

std::tuple<at::Tensor, at::Tensor> kmax_pool_forward_cuda(const at::Tensor& input, int64_t k, int64_t dim) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  int64_t d = 0;
  const KmaxShape s = kmax_forward_shape(input, k, dim, &d);
  // The block's counters are 32-bit.
  TORCH_CHECK(s.length < std::numeric_limits<int32_t>::max(), "cnn_ops.kmax_pool (CUDA): dimension ", dim,
              " of size ", s.length, " is too long (at most 2^31 - 2 elements)");
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous();
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[d] = k;
  at::Tensor values = at::empty(shape, x.options());
  at::Tensor positions = at::empty(shape, x.options().dtype(at::kLong));
  C10_CUDA_CHECK(cuda_pool::kmax_forward(cuda_dtype_of(x.scalar_type(), "kmax_pool"), s, x.const_data_ptr(), values.mutable_data_ptr(),
                                         positions.mutable_data_ptr<int64_t>(), current_cuda_stream()));
  return {values, positions};
}

at::Tensor kmax_pool_backward_cuda(const at::Tensor& grad_output, const at::Tensor& indices, int64_t dim,
                                   at::IntArrayRef input_size) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const KmaxShape s = kmax_backward_shape(grad_output, indices, dim, input_size);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor gy = grad_output.contiguous(), pos = indices.contiguous();
  at::Tensor grad_input = at::zeros(input_size, gy.options());
  C10_CUDA_CHECK(cuda_pool::kmax_backward(cuda_dtype_of(gy.scalar_type(), "kmax_pool_backward"), s, gy.const_data_ptr(),
                                          pos.const_data_ptr<int64_t>(), grad_input.mutable_data_ptr(),
                                          current_cuda_stream()));
  return grad_input;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CUDA, m) {
  m.impl("kmax_pool_forward", &tco::kmax_pool_forward_cuda);
  m.impl("kmax_pool_backward", &tco::kmax_pool_backward_cuda);
}
