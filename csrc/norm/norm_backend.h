// The device layer of the norm family: a handful of memory-bound passes from which every
// norm (batch, instance, group, layer) is assembled. norm_ops.cpp holds the ops themselves
// (argument checks, layouts, the per-channel arithmetic on small tensors, running
// statistics), once for both devices; each device supplies a NormBackend (norm_cpu.cpp,
// norm_cuda_ops.cpp).
//
// Every pass sees its data as a contiguous R x L matrix in one of two layouts:
//  * Planar: one group of values per row (the (n, c) planes of an NCHW tensor, the (n, g)
//    groups of group norm, the rows of layer norm); per-row coefficients, length R.
//  * Interleaved: one group per column (channels-last tensors and (N, C) inputs, where the
//    channel is the fastest index); per-column coefficients, length L.
//
// Data tensors (x, dy, y, dx) have the input's dtype (float32, float64, float16, bfloat16).
// Statistics and coefficients (mean, var, scale, shift, a, b, c, sums) are contiguous 1-d
// tensors of the compute type: float32 for float32, float16 and bfloat16 inputs (half types
// accumulate in float32), float64 for float64. Outputs are allocated by the caller.
// Indices are 64-bit: R * L may exceed 2^31.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>

#include <cstdint>

namespace tco {

enum class NormLayout { Planar, Interleaved };

struct NormBackend {
  c10::DeviceType device;
  // Mean and biased variance of each group (row or column), computed in one pass over x by
  // blocks whose sums are combined with Chan's formula (stable for large means: the
  // deviations are taken from each block's mean, never as E[x^2] - E[x]^2).
  void (*moments)(const at::Tensor& x, NormLayout layout, int64_t R, int64_t L, at::Tensor& mean,
                  at::Tensor& var);
  // y = x * scale + shift with per-group scale and shift.
  void (*affine)(const at::Tensor& x, NormLayout layout, int64_t R, int64_t L, const at::Tensor& scale,
                 const at::Tensor& shift, at::Tensor& y);
  // Per group: sum_dy = sum of dy, sum_dy_xmu = sum of dy * (x - mean[group]).
  void (*grad_sums)(const at::Tensor& dy, const at::Tensor& x, NormLayout layout, int64_t R, int64_t L,
                    const at::Tensor& mean, at::Tensor& sum_dy, at::Tensor& sum_dy_xmu);
  // dx = dy * a + x * b + c with per-group a, b, c. When b is undefined (c too), dx = dy * a
  // and x is not read (x may be undefined).
  void (*linear_grad)(const at::Tensor& dy, const at::Tensor& x, NormLayout layout, int64_t R, int64_t L,
                      const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, at::Tensor& dx);
  // Layer norm of the rows of x (M x K): mean and rstd = 1 / sqrt(var + eps) per row (M),
  // y = (x - mean) * rstd * weight[j] + bias[j]; weight and bias (K, compute type) may be
  // undefined (1 and 0).
  void (*layer_norm_forward)(const at::Tensor& x, int64_t M, int64_t K, const at::Tensor& weight,
                             const at::Tensor& bias, double eps, at::Tensor& y, at::Tensor& mean,
                             at::Tensor& rstd);
  // Its gradients in one pass after the per-row sums: dx (M x K, input dtype),
  // grad_weight[j] = sum over rows of dy * (x - mean) * rstd and grad_bias[j] = sum of dy
  // (K, compute type). weight may be undefined (ones).
  void (*layer_norm_backward)(const at::Tensor& dy, const at::Tensor& x, int64_t M, int64_t K,
                              const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& weight,
                              at::Tensor& dx, at::Tensor& grad_weight, at::Tensor& grad_bias);
  // Planar data (N x C rows of L values, as NCHW) per channel, channel c being the rows
  // n * C + c: mean and biased variance, each of length C. A backend
  // may decline a shape (false; nullptr: always): the caller then works per row (and combines
  // the rows of each channel).
  bool (*channel_moments)(const at::Tensor& x, int64_t N, int64_t C, int64_t L, at::Tensor& mean, at::Tensor& var);
  // y = x * scale[c] + shift[c] on planar data, with per-channel scale and shift (no per-row copies).
  bool (*channel_affine)(const at::Tensor& x, int64_t N, int64_t C, int64_t L, const at::Tensor& scale,
                         const at::Tensor& shift, at::Tensor& y);
  // Batch norm's backward of planar data in one pass per channel: its grad sums (of grad_sums,
  // length C), then dx, written while the channel's values are cached: in training
  // dx = dy * a + x * b + c with the channel's input_grad_coefficient, in eval (constant
  // statistics) dx = dy * invstd * weight. weight (C, compute type) may be undefined (ones). With
  // dx undefined, the sums only (invstd, weight and training unread). A backend may decline a
  // shape (false; nullptr: always).
  bool (*channel_backward)(const at::Tensor& dy, const at::Tensor& x, int64_t N, int64_t C, int64_t L,
                           const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& weight, bool training,
                           at::Tensor& sum_dy, at::Tensor& sum_dy_xmu, at::Tensor& dx);
  // Group norm of planar data (N x C planes of S values, as NCHW; group g of sample n is channels
  // g * C / G to (g + 1) * C / G - 1, contiguous) one group at a time, so that the pass writing y
  // finds the group's values cached: mean and rstd = 1 / sqrt(var + eps) per (n, g) (N * G), and
  // y = (x - mean) * rstd * weight[c] + bias[c]. weight and bias (C, compute type) may be
  // undefined (1 and 0). A backend may decline a shape (false; nullptr: always): the caller then
  // runs moments and affine over the whole tensor.
  bool (*group_norm_forward)(const at::Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G,
                             const at::Tensor& weight, const at::Tensor& bias, double eps, at::Tensor& y,
                             at::Tensor& mean, at::Tensor& rstd);
  // Its input gradient the same way: per (n, c) the sums of dy and dy * (x - mean[n, g]) (N * C,
  // for the caller's weight and bias gradients), then dx (group_norm_backward's formula in
  // norm_ops.cpp) while the group's dy and x are cached. weight may be undefined (ones).
  bool (*group_norm_backward)(const at::Tensor& dy, const at::Tensor& x, int64_t N, int64_t C, int64_t S,
                              int64_t G, const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& weight,
                              at::Tensor& sum_dy, at::Tensor& sum_dy_xmu, at::Tensor& dx);
};

// The coefficients of training batch norm's input gradient for one channel of n values:
//   dx = invstd * w * (dy - sum_dy / n - (x - mean) * invstd^2 * sum_dy_xmu / n)
//      = dy * a + x * b + c,  a = invstd * w,  b = -a * invstd^2 * sum_dy_xmu / n,
//                             c = -a * sum_dy / n - b * mean.
template <typename T>
struct InputGradCoefficients {
  T a, b, c;
};

template <typename T>
InputGradCoefficients<T> input_grad_coefficient(T mean, T invstd, T weight, T sum_dy, T sum_dy_xmu, T inv_n) {
  const T a = invstd * weight;
  const T b = -a * invstd * invstd * sum_dy_xmu * inv_n;
  return {a, b, -a * sum_dy * inv_n - b * mean};
}

// The CPU backend (norm_cpu.cpp).
const NormBackend& cpu_norm_backend();

}  // namespace tco
