// The ops of the norm family (schemas in csrc/registration.cpp), written once for every
// device on top of a NormBackend (norm_backend.h). Each device registers them for its
// dispatch key with register_norm_ops<its backend>().
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "norm_backend.h"

namespace tco {

using OptTensor = std::optional<at::Tensor>;
using Tensor2 = std::tuple<at::Tensor, at::Tensor>;
using Tensor3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Tensor2 batch_norm_stats(const NormBackend& be, const at::Tensor& input);
at::Tensor batch_norm_elemt(const NormBackend& be, const at::Tensor& input, const OptTensor& weight,
                            const OptTensor& bias, const at::Tensor& mean, const at::Tensor& invstd);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> batch_norm_forward(
    const NormBackend& be, const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
    const OptTensor& running_mean, const OptTensor& running_var, bool training, double eps);
// Device-independent (ATen ops on C-sized tensors).
void batch_norm_update_stats(const at::Tensor& running_mean, const at::Tensor& running_var, const at::Tensor& mean,
                             const at::Tensor& var, int64_t count, double momentum);
Tensor2 batch_norm_backward_reduce(const NormBackend& be, const at::Tensor& grad_output, const at::Tensor& input,
                                   const at::Tensor& mean);
at::Tensor batch_norm_backward_elemt(const NormBackend& be, const at::Tensor& grad_output, const at::Tensor& input,
                                     const at::Tensor& mean, const at::Tensor& invstd, const OptTensor& weight,
                                     const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu, int64_t count);
Tensor3 batch_norm_backward(const NormBackend& be, const at::Tensor& grad_output, const at::Tensor& input,
                            const OptTensor& weight, const at::Tensor& mean, const at::Tensor& invstd,
                            bool training, double eps);
Tensor3 group_norm_forward(const NormBackend& be, const at::Tensor& input, const OptTensor& weight,
                           const OptTensor& bias, int64_t num_groups, double eps);
Tensor3 group_norm_backward(const NormBackend& be, const at::Tensor& grad_output, const at::Tensor& input,
                            const OptTensor& weight, const at::Tensor& mean, const at::Tensor& rstd,
                            int64_t num_groups, double eps);
Tensor3 layer_norm_forward(const NormBackend& be, const at::Tensor& input, at::IntArrayRef normalized_shape,
                           const OptTensor& weight, const OptTensor& bias, double eps);
Tensor3 layer_norm_backward(const NormBackend& be, const at::Tensor& grad_output, const at::Tensor& input,
                            at::IntArrayRef normalized_shape, const OptTensor& weight, const at::Tensor& mean,
                            const at::Tensor& rstd, double eps);

// Registers every norm op for the library block `m` (one dispatch key) with the backend
// that `backend()` returns.
template <const NormBackend& (*backend)()>
void register_norm_ops(torch::Library& m) {
  m.impl("batch_norm_stats", [](const at::Tensor& input) { return batch_norm_stats(backend(), input); });
  m.impl("batch_norm_elemt", [](const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
                                const at::Tensor& mean, const at::Tensor& invstd) {
    return batch_norm_elemt(backend(), input, weight, bias, mean, invstd);
  });
  m.impl("batch_norm_forward",
         [](const at::Tensor& input, const OptTensor& weight, const OptTensor& bias, const OptTensor& running_mean,
            const OptTensor& running_var, bool training, double eps) {
           return batch_norm_forward(backend(), input, weight, bias, running_mean, running_var, training, eps);
         });
  m.impl("batch_norm_update_stats", &batch_norm_update_stats);
  m.impl("batch_norm_backward_reduce",
         [](const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean) {
           return batch_norm_backward_reduce(backend(), grad_output, input, mean);
         });
  m.impl("batch_norm_backward_elemt",
         [](const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& mean, const at::Tensor& invstd,
            const OptTensor& weight, const at::Tensor& sum_dy, const at::Tensor& sum_dy_xmu, int64_t count) {
           return batch_norm_backward_elemt(backend(), grad_output, input, mean, invstd, weight, sum_dy,
                                            sum_dy_xmu, count);
         });
  m.impl("batch_norm_backward",
         [](const at::Tensor& grad_output, const at::Tensor& input, const OptTensor& weight, const at::Tensor& mean,
            const at::Tensor& invstd, bool training, double eps) {
           return batch_norm_backward(backend(), grad_output, input, weight, mean, invstd, training, eps);
         });
  m.impl("group_norm_forward", [](const at::Tensor& input, const OptTensor& weight, const OptTensor& bias,
                                  int64_t num_groups, double eps) {
    return group_norm_forward(backend(), input, weight, bias, num_groups, eps);
  });
  m.impl("group_norm_backward",
         [](const at::Tensor& grad_output, const at::Tensor& input, const OptTensor& weight, const at::Tensor& mean,
            const at::Tensor& rstd, int64_t num_groups, double eps) {
           return group_norm_backward(backend(), grad_output, input, weight, mean, rstd, num_groups, eps);
         });
  m.impl("layer_norm_forward", [](const at::Tensor& input, at::IntArrayRef normalized_shape,
                                  const OptTensor& weight, const OptTensor& bias, double eps) {
    return layer_norm_forward(backend(), input, normalized_shape, weight, bias, eps);
  });
  m.impl("layer_norm_backward",
         [](const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef normalized_shape,
            const OptTensor& weight, const at::Tensor& mean, const at::Tensor& rstd, double eps) {
           return layer_norm_backward(backend(), grad_output, input, normalized_shape, weight, mean, rstd, eps);
         });
}

}  // namespace tco
