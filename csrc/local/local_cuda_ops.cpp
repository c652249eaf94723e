// CUDA implementations of the local ops (CUDA dispatch key): tensors in, kernel launches of
// local_cuda.cu out. Compiled by the host compiler only in CUDA builds; narrow headers keep
// it quick to build. Argument checks are those of the CPU ops (local_common.cpp).

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <vector>

#include "../cuda_glue.h"
#include "local_common.h"
#include "local_cuda.h"

namespace tco {
namespace {

at::Tensor local_forward_cuda(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef padding_end, at::IntArrayRef dilation) {
  const LocalGeometry g = local_forward_geometry(input, weight, bias, stride, padding, padding_end, dilation);
  const c10::cuda::CUDAGuard guard(input.device());
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
  std::vector<int64_t> shape{g.conv.batch, g.conv.out_channels};
  for (int64_t d = 3 - static_cast<int64_t>(stride.size()); d < 3; ++d) shape.push_back(g.conv.out_size[d]);
  at::Tensor out = at::empty(shape, x.options());
  C10_CUDA_CHECK(cuda_local::forward(cuda_dtype_of(x.scalar_type()), g, x.const_data_ptr(), w.const_data_ptr(),
                                     b ? b->const_data_ptr() : nullptr, b && bias_per_position(*b),
                                     out.mutable_data_ptr(), current_cuda_stream()));
  return out;
}

at::Tensor local_input_backward_cuda(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation) {
  const LocalGeometry g =
      local_input_backward_geometry(grad_output, weight, input_size, stride, padding, dilation);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor gout = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor gin = at::empty(input_size, gout.options());  // the kernel writes every element
  C10_CUDA_CHECK(cuda_local::input_backward(cuda_dtype_of(gout.scalar_type()), g, gout.const_data_ptr(),
                                            w.const_data_ptr(), gin.mutable_data_ptr(), current_cuda_stream()));
  return gin;
}

at::Tensor local_weight_backward_cuda(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation) {
  const LocalGeometry g =
      local_weight_backward_geometry(grad_output, input, weight_size, stride, padding, dilation);
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor gout = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw = at::empty(weight_size, gout.options());  // the kernel writes every element
  C10_CUDA_CHECK(cuda_local::weight_backward(cuda_dtype_of(gout.scalar_type()), g, gout.const_data_ptr(),
                                             x.const_data_ptr(), gw.mutable_data_ptr(), current_cuda_stream()));
  return gw;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CUDA, m) {
  m.impl("local_forward", &tco::local_forward_cuda);
  m.impl("local_input_backward", &tco::local_input_backward_cuda);
  m.impl("local_weight_backward", &tco::local_weight_backward_cuda);
}
