// The CUDA backend of the local ops (local_ops.h, whose entries check the arguments, set the
// device and answer the empty cases): tensors in, kernel launches of local_cuda.cu out.
// Compiled by the host compiler only in CUDA builds; narrow headers keep it quick to build.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include "../cuda_glue.h"
#include "local_common.h"
#include "local_cuda.h"
#include "local_ops.h"

namespace tco {
namespace {

at::Tensor forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                   const LocalGeometry& g, at::IntArrayRef shape) {
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
  at::Tensor out = at::empty(shape, x.options());
  C10_CUDA_CHECK(cuda_local::forward(cuda_dtype_of(x.scalar_type()), g, x.const_data_ptr(), w.const_data_ptr(),
                                     b ? b->const_data_ptr() : nullptr, b && bias_per_position(*b),
                                     out.mutable_data_ptr(), current_cuda_stream()));
  return out;
}

at::Tensor input_backward(const at::Tensor& grad_output, const at::Tensor& weight, const LocalGeometry& g,
                          at::IntArrayRef input_size) {
  const at::Tensor gout = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor gin = at::empty(input_size, gout.options());  // the kernel writes every element
  C10_CUDA_CHECK(cuda_local::input_backward(cuda_dtype_of(gout.scalar_type()), g, gout.const_data_ptr(),
                                            w.const_data_ptr(), gin.mutable_data_ptr(), current_cuda_stream()));
  return gin;
}

at::Tensor weight_backward(const at::Tensor& grad_output, const at::Tensor& input, const LocalGeometry& g,
                           at::IntArrayRef weight_size) {
  const at::Tensor gout = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw = at::empty(weight_size, gout.options());  // the kernel writes every element
  C10_CUDA_CHECK(cuda_local::weight_backward(cuda_dtype_of(gout.scalar_type()), g, gout.const_data_ptr(),
                                             x.const_data_ptr(), gw.mutable_data_ptr(), current_cuda_stream()));
  return gw;
}

const LocalBackend& cuda_local_backend() {
  static const LocalBackend backend{kCudaBackendDevice, &forward, &input_backward, &weight_backward};
  return backend;
}

}  // namespace
}  // namespace tco

TCO_CUDA_LIBRARY_IMPL(m) { tco::register_local_ops(m, tco::cuda_local_backend()); }
