// The CUDA backend of the pool family (pool_ops.h, whose entries check the arguments, set the
// device and allocate the outputs): tensors in, launches of the kernels in pool_cuda.h out.
// The kernels work on NCHW-contiguous tensors (channels_last = false: the entries convert).
// Compiled by the host compiler only in CUDA builds; narrow headers keep it quick to build.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../compute_type.h"
#include "../cuda_glue.h"
#include "pool_cuda.h"
#include "pool_ops.h"

namespace tco {
namespace {

CudaDType dtype_of(const at::Tensor& t) { return cuda_dtype_of(t.scalar_type(), "cnn_ops pooling"); }

// Scratch in the accumulation type of t (float for the half types).
at::Tensor scratch(int64_t n, const at::Tensor& t) {
  return at::empty({n}, t.options().dtype(compute_type(t.scalar_type())));
}

void extreme_forward(const at::Tensor& x, const PoolGeometry& g, bool minimum, const at::Tensor& out,
                     const at::Tensor& ind) {
  C10_CUDA_CHECK(cuda_pool::extreme_forward(dtype_of(x), g, minimum, x.const_data_ptr(), out.mutable_data_ptr(),
                                            ind.mutable_data_ptr<int64_t>(), current_cuda_stream()));
}

void scatter_backward(const at::Tensor& gy, const at::Tensor& ix, const PoolGeometry& g, const at::Tensor& gin) {
  // Overlapping windows add to one element atomically, in the accumulation type.
  const bool direct = compute_type(gy.scalar_type()) == gy.scalar_type();
  const at::Tensor acc = direct ? gin : at::empty(gin.sizes(), gin.options().dtype(compute_type(gy.scalar_type())));
  acc.zero_();
  C10_CUDA_CHECK(cuda_pool::scatter_add(dtype_of(gy), g, gy.const_data_ptr(), ix.const_data_ptr<int64_t>(),
                                        acc.mutable_data_ptr(), current_cuda_stream()));
  if (!direct) gin.copy_(acc);
}

void sum_forward(const at::Tensor& x, const PoolGeometry& g, bool lp, double norm_type, const at::Tensor& out) {
  C10_CUDA_CHECK(cuda_pool::sum_forward(dtype_of(x), g, lp, norm_type, x.const_data_ptr(), out.mutable_data_ptr(),
                                        current_cuda_stream()));
}

void sum_backward(const at::Tensor& gy, const at::Tensor& x, const PoolGeometry& g, bool lp, double norm_type,
                  const at::Tensor& gin) {
  at::Tensor coef = scratch(g.planes * g.out_plane(), gy);
  C10_CUDA_CHECK(cuda_pool::sum_backward(dtype_of(gy), g, lp, norm_type, gy.const_data_ptr(),
                                         x.defined() ? x.const_data_ptr() : nullptr, coef.mutable_data_ptr(),
                                         gin.mutable_data_ptr(), current_cuda_stream()));
}

void kmax_forward(const at::Tensor& x, const KmaxShape& s, const at::Tensor& values, const at::Tensor& positions) {
  // The block's counters are 32-bit.
  TORCH_CHECK(s.length < std::numeric_limits<int32_t>::max(), "cnn_ops.kmax_pool (CUDA): the pooled dimension of size ",
              s.length, " is too long (at most 2^31 - 2 elements)");
  C10_CUDA_CHECK(cuda_pool::kmax_forward(dtype_of(x), s, x.const_data_ptr(), values.mutable_data_ptr(),
                                         positions.mutable_data_ptr<int64_t>(), current_cuda_stream()));
}

void kmax_backward(const at::Tensor& gy, const at::Tensor& positions, const KmaxShape& s, const at::Tensor& gin) {
  gin.zero_();
  C10_CUDA_CHECK(cuda_pool::kmax_backward(dtype_of(gy), s, gy.const_data_ptr(), positions.const_data_ptr<int64_t>(),
                                          gin.mutable_data_ptr(), current_cuda_stream()));
}

// The weight tables on the device, in the accumulation type of `t`.
at::Tensor device_weights(const std::vector<double>& weights, const at::Tensor& t) {
  return at::tensor(weights, at::TensorOptions().dtype(at::kDouble))
      .to(t.device(), compute_type(t.scalar_type()));
}

void gaussian_forward(const at::Tensor& x, const PoolGeometry& g, const std::vector<double>& weights,
                      const at::Tensor& out) {
  const at::Tensor w = device_weights(weights, x);
  C10_CUDA_CHECK(cuda_pool::gaussian_forward(dtype_of(x), g, w.const_data_ptr(), x.const_data_ptr(),
                                             out.mutable_data_ptr(), current_cuda_stream()));
}

void gaussian_backward(const at::Tensor& gy, const PoolGeometry& g, const std::vector<double>& weights,
                       const at::Tensor& gin) {
  const at::Tensor w = device_weights(weights, gy);
  C10_CUDA_CHECK(cuda_pool::gaussian_backward(dtype_of(gy), g, w.const_data_ptr(), gy.const_data_ptr(),
                                              gin.mutable_data_ptr(), current_cuda_stream()));
}

void stochastic_train(const at::Tensor& x, const at::Tensor& u, const PoolGeometry& g, const at::Tensor& out,
                      const at::Tensor& ind) {
  C10_CUDA_CHECK(cuda_pool::stochastic_train(dtype_of(x), g, x.const_data_ptr(), u.const_data_ptr(),
                                             out.mutable_data_ptr(), ind.mutable_data_ptr<int64_t>(),
                                             current_cuda_stream()));
}

void stochastic_eval(const at::Tensor& x, const PoolGeometry& g, const at::Tensor& out) {
  C10_CUDA_CHECK(cuda_pool::stochastic_eval(dtype_of(x), g, x.const_data_ptr(), out.mutable_data_ptr(),
                                            current_cuda_stream()));
}

void stochastic_eval_backward(const at::Tensor& gy, const at::Tensor& x, const PoolGeometry& g,
                              const at::Tensor& gin) {
  at::Tensor coef = scratch(3 * g.planes * g.out_plane(), x);  // a WindowGrad per output
  C10_CUDA_CHECK(cuda_pool::stochastic_eval_backward(dtype_of(x), g, gy.const_data_ptr(), x.const_data_ptr(),
                                                     coef.mutable_data_ptr(), gin.mutable_data_ptr(),
                                                     current_cuda_stream()));
}

const PoolBackend& cuda_pool_backend() {
  static const PoolBackend backend{kCudaBackendDevice,
                                   /*channels_last=*/false,
                                   &extreme_forward,
                                   &scatter_backward,
                                   &sum_forward,
                                   &sum_backward,
                                   &kmax_forward,
                                   &kmax_backward,
                                   &gaussian_forward,
                                   &gaussian_backward,
                                   &stochastic_train,
                                   &stochastic_eval,
                                   &stochastic_eval_backward};
  return backend;
}

}  // namespace
}  // namespace tco

TCO_CUDA_LIBRARY_IMPL(m) { tco::register_pool_ops(m, tco::cuda_pool_backend()); }
