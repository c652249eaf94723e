// The CUDA NormBackend (norm_backend.h): tensors in, launches of norm_cuda.cu out, and the
// registration of the norm ops for the CUDA dispatch key. Compiled by the host compiler only
// in CUDA builds; narrow headers keep it quick to build. The ops themselves (argument checks,
// layouts, the arithmetic on small per-channel tensors) are norm_ops.cpp's, shared with the
// CPU; the checks here only guard the kernels' memory accesses against a caller's mistake.

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../compute_type.h"
#include "../cuda_glue.h"
#include "norm_backend.h"
#include "norm_cuda.h"
#include "norm_ops.h"

namespace tco {

// The CUDA backend (its counterpart is cpu_norm_backend()).
const NormBackend& cuda_norm_backend();

namespace {

using cuda_norm::Layout;

Layout layout_of(NormLayout layout) { return layout == NormLayout::Planar ? Layout::Planar : Layout::Interleaved; }

// A data tensor: on the device of `ref`, `numel` elements of `ref`'s dtype, dense in memory
// from its data pointer on (the layout's order is the caller's: norm_ops.cpp hands over
// channels-last tensors and per-sample slices of them as Interleaved rows).
void check_data(const at::Tensor& t, const char* name, const at::Tensor& ref, int64_t numel) {
  TORCH_CHECK(t.defined() && t.device().type() == kCudaBackendDevice && t.device() == ref.device(), "cnn_ops.norm (CUDA): ", name,
              " must be a CUDA tensor on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type() && t.is_non_overlapping_and_dense() && t.numel() == numel,
              "cnn_ops.norm (CUDA): ", name, " must be a dense ", ref.scalar_type(), " tensor of ", numel,
              " elements, got ", t.scalar_type(), " ", t.sizes(), " with strides ", t.strides());
}

// A statistics / coefficient tensor: the compute type of `ref`, contiguous, `numel` elements.
void check_coef(const at::Tensor& t, const char* name, const at::Tensor& ref, int64_t numel) {
  const at::ScalarType ct = compute_type(ref.scalar_type());
  TORCH_CHECK(t.defined() && t.device().type() == kCudaBackendDevice && t.device() == ref.device(), "cnn_ops.norm (CUDA): ", name,
              " must be a CUDA tensor on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ct && t.is_contiguous() && t.numel() == numel, "cnn_ops.norm (CUDA): ", name,
              " must be a contiguous ", ct, " tensor of ", numel, " elements, got ", t.scalar_type(), " ",
              t.sizes());
}

// Optional coefficient: null when undefined.
const void* opt_coef(const at::Tensor& t, const char* name, const at::Tensor& ref, int64_t numel) {
  if (!t.defined()) return nullptr;
  check_coef(t, name, ref, numel);
  return t.const_data_ptr();
}

void* opt_coef_out(at::Tensor& t, const char* name, const at::Tensor& ref, int64_t numel) {
  if (!t.defined()) return nullptr;
  check_coef(t, name, ref, numel);
  return t.mutable_data_ptr();
}

// Scratch of `n` compute-type elements for the partial results of a reduction (none for 0).
at::Tensor workspace(const at::Tensor& ref, int64_t n) {
  return n > 0 ? at::empty({n}, ref.options().dtype(compute_type(ref.scalar_type()))) : at::Tensor();
}

void* ptr_or_null(at::Tensor& t) { return t.defined() ? t.mutable_data_ptr() : nullptr; }

int64_t groups(NormLayout layout, int64_t R, int64_t L) { return layout == NormLayout::Planar ? R : L; }

void moments(const at::Tensor& x, NormLayout layout, int64_t R, int64_t L, at::Tensor& mean, at::Tensor& var) {
  check_data(x, "x", x, R * L);
  check_coef(mean, "mean", x, groups(layout, R, L));
  check_coef(var, "var", x, groups(layout, R, L));
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor ws = workspace(x, cuda_norm::moments_workspace(layout_of(layout), R, L));
  C10_CUDA_CHECK(cuda_norm::moments(cuda_dtype_of(x.scalar_type()), layout_of(layout), R, L, x.const_data_ptr(),
                                    mean.mutable_data_ptr(), var.mutable_data_ptr(), ptr_or_null(ws),
                                    current_cuda_stream()));
}

void affine(const at::Tensor& x, NormLayout layout, int64_t R, int64_t L, const at::Tensor& scale,
            const at::Tensor& shift, at::Tensor& y) {
  check_data(x, "x", x, R * L);
  check_data(y, "y", x, R * L);
  check_coef(scale, "scale", x, groups(layout, R, L));
  check_coef(shift, "shift", x, groups(layout, R, L));
  const c10::cuda::CUDAGuard guard(x.device());
  C10_CUDA_CHECK(cuda_norm::affine(cuda_dtype_of(x.scalar_type()), layout_of(layout), R, L, x.const_data_ptr(),
                                   scale.const_data_ptr(), shift.const_data_ptr(), y.mutable_data_ptr(),
                                   current_cuda_stream()));
}

void grad_sums(const at::Tensor& dy, const at::Tensor& x, NormLayout layout, int64_t R, int64_t L,
               const at::Tensor& mean, at::Tensor& sum_dy, at::Tensor& sum_dy_xmu) {
  check_data(dy, "dy", dy, R * L);
  check_data(x, "x", dy, R * L);
  check_coef(mean, "mean", dy, groups(layout, R, L));
  check_coef(sum_dy, "sum_dy", dy, groups(layout, R, L));
  check_coef(sum_dy_xmu, "sum_dy_xmu", dy, groups(layout, R, L));
  const c10::cuda::CUDAGuard guard(dy.device());
  at::Tensor ws = workspace(dy, cuda_norm::grad_sums_workspace(layout_of(layout), R, L));
  C10_CUDA_CHECK(cuda_norm::grad_sums(cuda_dtype_of(dy.scalar_type()), layout_of(layout), R, L, dy.const_data_ptr(),
                                      x.const_data_ptr(), mean.const_data_ptr(), sum_dy.mutable_data_ptr(),
                                      sum_dy_xmu.mutable_data_ptr(), ptr_or_null(ws), current_cuda_stream()));
}

void linear_grad(const at::Tensor& dy, const at::Tensor& x, NormLayout layout, int64_t R, int64_t L,
                 const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, at::Tensor& dx) {
  check_data(dy, "dy", dy, R * L);
  check_data(dx, "dx", dy, R * L);
  check_coef(a, "a", dy, groups(layout, R, L));
  const void* b_ptr = opt_coef(b, "b", dy, groups(layout, R, L));
  const void* c_ptr = nullptr;
  const void* x_ptr = nullptr;
  if (b_ptr) {  // x is read only with b
    check_data(x, "x", dy, R * L);
    x_ptr = x.const_data_ptr();
    c_ptr = opt_coef(c, "c", dy, groups(layout, R, L));
  }
  const c10::cuda::CUDAGuard guard(dy.device());
  C10_CUDA_CHECK(cuda_norm::linear_grad(cuda_dtype_of(dy.scalar_type()), layout_of(layout), R, L, dy.const_data_ptr(),
                                        x_ptr, a.const_data_ptr(), b_ptr, c_ptr, dx.mutable_data_ptr(),
                                        current_cuda_stream()));
}

void layer_norm_forward(const at::Tensor& x, int64_t M, int64_t K, const at::Tensor& weight, const at::Tensor& bias,
                        double eps, at::Tensor& y, at::Tensor& mean, at::Tensor& rstd) {
  check_data(x, "x", x, M * K);
  check_data(y, "y", x, M * K);
  check_coef(mean, "mean", x, M);
  check_coef(rstd, "rstd", x, M);
  const void* w = opt_coef(weight, "weight", x, K);
  const void* b = opt_coef(bias, "bias", x, K);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor ws = workspace(x, cuda_norm::layer_norm_forward_workspace(M, K));
  C10_CUDA_CHECK(cuda_norm::layer_norm_forward(cuda_dtype_of(x.scalar_type()), M, K, x.const_data_ptr(), w, b, eps,
                                               y.mutable_data_ptr(), mean.mutable_data_ptr(),
                                               rstd.mutable_data_ptr(), ptr_or_null(ws), current_cuda_stream()));
}

void layer_norm_backward(const at::Tensor& dy, const at::Tensor& x, int64_t M, int64_t K, const at::Tensor& mean,
                         const at::Tensor& rstd, const at::Tensor& weight, at::Tensor& dx, at::Tensor& grad_weight,
                         at::Tensor& grad_bias) {
  check_data(dy, "dy", dy, M * K);
  check_data(x, "x", dy, M * K);
  check_data(dx, "dx", dy, M * K);
  check_coef(mean, "mean", dy, M);
  check_coef(rstd, "rstd", dy, M);
  const void* w = opt_coef(weight, "weight", dy, K);
  void* gw = opt_coef_out(grad_weight, "grad_weight", dy, K);
  void* gb = opt_coef_out(grad_bias, "grad_bias", dy, K);
  const c10::cuda::CUDAGuard guard(dy.device());
  at::Tensor ws = (gw || gb) ? workspace(dy, cuda_norm::layer_norm_backward_workspace(M, K)) : at::Tensor();
  C10_CUDA_CHECK(cuda_norm::layer_norm_backward(cuda_dtype_of(dy.scalar_type()), M, K, dy.const_data_ptr(),
                                                x.const_data_ptr(), mean.const_data_ptr(), rstd.const_data_ptr(), w,
                                                dx.mutable_data_ptr(), gw, gb, ptr_or_null(ws), current_cuda_stream()));
}

}  // namespace

const NormBackend& cuda_norm_backend() {
  // No per-channel or per-group passes: a block per row, and the rows combined per channel or
  // group, use the device.
  static const NormBackend backend{kCudaBackendDevice, &moments,  &affine,
                                   &grad_sums,         &linear_grad, &layer_norm_forward,
                                   &layer_norm_backward, nullptr, nullptr, nullptr, nullptr, nullptr};
  return backend;
}

}  // namespace tco

TCO_CUDA_LIBRARY_IMPL(m) { tco::register_norm_ops(m, tco::cuda_norm_backend()); }
