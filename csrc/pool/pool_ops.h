// The window and adaptive pooling ops (max / min, avg, lp), once for every device: argument
// checks and geometry here (pool_ops.cpp), the passes over the data in a device backend
// (pool_cpu.cpp, pool_cuda_ops.cpp). Each device registers the ops for its dispatch key with
// register_pool_ops<its backend>().
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "pool_common.h"

namespace tco {

using Tensor2 = std::tuple<at::Tensor, at::Tensor>;

struct PoolBackend {
  // Max (or min) pooling over the windows of g: values and flat input-plane indices, in the
  // layout use_channels_last(input) chooses. nd: spatial dimensions of input.
  Tensor2 (*extreme_forward)(const at::Tensor& input, const PoolGeometry& g, int64_t nd, bool minimum);
  // grad_output scattered to the indices (input_size: the forward input's shape), in the
  // layout of the indices.
  at::Tensor (*scatter_backward)(const at::Tensor& grad_output, const at::Tensor& indices, const PoolGeometry& g,
                                 at::IntArrayRef input_size);
  // Window sums divided by g's divisor (avg), or the lp norm of the window (lp: x^p summed,
  // then the 1/p power) with p = norm_type.
  at::Tensor (*sum_forward)(const at::Tensor& input, const PoolGeometry& g, int64_t nd, bool lp, double norm_type);
  // Their gradient; input is null for avg (lp needs it).
  at::Tensor (*sum_backward)(const at::Tensor& grad_output, const at::Tensor* input, const PoolGeometry& g,
                             at::IntArrayRef input_size, bool lp, double norm_type);
};

// The CPU backend (pool_cpu.cpp).
const PoolBackend& cpu_pool_backend();

Tensor2 max_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef kernel_size,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode,
                         bool minimum);
Tensor2 adaptive_max_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef output_size,
                                  bool minimum);
at::Tensor max_pool_backward(const PoolBackend& be, const at::Tensor& grad_output, const at::Tensor& indices,
                             at::IntArrayRef input_size);
at::Tensor avg_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef kernel_size,
                            at::IntArrayRef stride, at::IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                            std::optional<int64_t> divisor_override);
at::Tensor avg_pool_backward(const PoolBackend& be, const at::Tensor& grad_output, at::IntArrayRef input_size,
                             at::IntArrayRef kernel_size, at::IntArrayRef stride, at::IntArrayRef padding,
                             bool ceil_mode, bool count_include_pad, std::optional<int64_t> divisor_override);
at::Tensor adaptive_avg_pool_forward(const PoolBackend& be, const at::Tensor& input, at::IntArrayRef output_size);
at::Tensor adaptive_avg_pool_backward(const PoolBackend& be, const at::Tensor& grad_output,
                                      at::IntArrayRef input_size);
at::Tensor lp_pool_forward(const PoolBackend& be, const at::Tensor& input, double norm_type,
                           at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode);
at::Tensor lp_pool_backward(const PoolBackend& be, const at::Tensor& grad_output, const at::Tensor& input,
                            double norm_type, at::IntArrayRef kernel_size, at::IntArrayRef stride, bool ceil_mode);

// Registers those ops for the library block `m` (one dispatch key) with the backend that
// `backend()` returns.
template <const PoolBackend& (*backend)()>
void register_pool_ops(torch::Library& m) {
  using IntArrayRef = at::IntArrayRef;
  m.impl("max_pool_forward", [](const at::Tensor& input, IntArrayRef kernel_size, IntArrayRef stride,
                                IntArrayRef padding, IntArrayRef dilation, bool ceil_mode, bool minimum) {
    return max_pool_forward(backend(), input, kernel_size, stride, padding, dilation, ceil_mode, minimum);
  });
  m.impl("adaptive_max_pool_forward", [](const at::Tensor& input, IntArrayRef output_size, bool minimum) {
    return adaptive_max_pool_forward(backend(), input, output_size, minimum);
  });
  m.impl("max_pool_backward", [](const at::Tensor& grad_output, const at::Tensor& indices, IntArrayRef input_size) {
    return max_pool_backward(backend(), grad_output, indices, input_size);
  });
  m.impl("avg_pool_forward", [](const at::Tensor& input, IntArrayRef kernel_size, IntArrayRef stride,
                                IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                std::optional<int64_t> divisor_override) {
    return avg_pool_forward(backend(), input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                            divisor_override);
  });
  m.impl("avg_pool_backward", [](const at::Tensor& grad_output, IntArrayRef input_size, IntArrayRef kernel_size,
                                 IntArrayRef stride, IntArrayRef padding, bool ceil_mode, bool count_include_pad,
                                 std::optional<int64_t> divisor_override) {
    return avg_pool_backward(backend(), grad_output, input_size, kernel_size, stride, padding, ceil_mode,
                             count_include_pad, divisor_override);
  });
  m.impl("adaptive_avg_pool_forward", [](const at::Tensor& input, IntArrayRef output_size) {
    return adaptive_avg_pool_forward(backend(), input, output_size);
  });
  m.impl("adaptive_avg_pool_backward", [](const at::Tensor& grad_output, IntArrayRef input_size) {
    return adaptive_avg_pool_backward(backend(), grad_output, input_size);
  });
  m.impl("lp_pool_forward", [](const at::Tensor& input, double norm_type, IntArrayRef kernel_size,
                               IntArrayRef stride, bool ceil_mode) {
    return lp_pool_forward(backend(), input, norm_type, kernel_size, stride, ceil_mode);
  });
  m.impl("lp_pool_backward", [](const at::Tensor& grad_output, const at::Tensor& input, double norm_type,
                                IntArrayRef kernel_size, IntArrayRef stride, bool ceil_mode) {
    return lp_pool_backward(backend(), grad_output, input, norm_type, kernel_size, stride, ceil_mode);
  });
}

}  // namespace tco
