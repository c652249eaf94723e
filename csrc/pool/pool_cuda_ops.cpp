// The CUDA backend of the window / adaptive pooling ops (pool_ops.h, which holds the ops and
// their checks for both devices): tensors in, kernel launches of pool_cuda.cu out. Compiled
// by the host compiler only in CUDA builds; narrow headers keep it quick to build.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "../compute_type.h"
#include "../cuda_glue.h"
#include "pool_common.h"
#include "pool_cuda.h"
#include "pool_ops.h"

namespace tco {
namespace {

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

at::Tensor scatter_backward_entry(const at::Tensor& grad_output, const at::Tensor& indices, const PoolGeometry& g,
                                  at::IntArrayRef input_size) {
  const c10::cuda::CUDAGuard guard(grad_output.device());
  const at::Tensor gy = grad_output.contiguous(), ix = indices.contiguous();
  at::Tensor acc = at::zeros(input_size, gy.options().dtype(compute_type(gy.scalar_type())));
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
  at::Tensor coef = at::empty({g.planes * g.out_plane()}, gy.options().dtype(compute_type(gy.scalar_type())));
  C10_CUDA_CHECK(cuda_pool::sum_backward(cuda_dtype_of(gy.scalar_type()), g, lp, norm_type, gy.const_data_ptr(),
                                         x.defined() ? x.const_data_ptr() : nullptr, coef.mutable_data_ptr(),
                                         gin.mutable_data_ptr(), current_cuda_stream()));
  return in_layout(gin, use_channels_last(input ? *input : grad_output));
}

}  // namespace

// The CUDA backend of the window / adaptive pooling ops (pool_ops.h).
const PoolBackend& cuda_pool_backend() {
  static const PoolBackend backend{&extreme_forward_entry, &scatter_backward_entry, &sum_forward_entry,
                                   &sum_backward_entry};
  return backend;
}

}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CUDA, m) { tco::register_pool_ops<&tco::cuda_pool_backend>(m); }
