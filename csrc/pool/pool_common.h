// Argument checks and geometry construction shared by the CPU and CUDA implementations of
// the pool ops, so that both devices reject bad input with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <tuple>
#include <vector>

#include "pool_geometry.h"

namespace tco {

// Regular window pooling (max, min, avg, lp) of an (N, C, *spatial) input; nd =
// kernel_size.size(). Pass dilation of ones for avg and lp. Checks kernel, stride and
// dilation >= 1, 0 <= padding <= kernel_size / 2 and a positive output size.
PoolGeometry window_geometry(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, bool ceil_mode);

// The same for a backward pass: the input has `input_size`, and grad_output must have the
// shape the forward gives.
PoolGeometry window_backward_geometry(const char* op, const at::Tensor& grad_output,
                                      at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, bool ceil_mode);

// Adaptive pooling of an (N, C, *spatial) input to `output_size` (one entry per spatial
// dimension, each >= 1... or 0 for an empty input dimension).
PoolGeometry adaptive_geometry(const char* op, const at::Tensor& input, at::IntArrayRef output_size);
PoolGeometry adaptive_backward_geometry(const char* op, const at::Tensor& grad_output,
                                        at::IntArrayRef input_size);

// Scatter through saved indices: grad_output and indices (N, C, *out), input_size (N, C, *in).
PoolGeometry scatter_geometry(const char* op, const at::Tensor& grad_output, const at::Tensor& indices,
                              at::IntArrayRef input_size);

// Sets divisor_override (> 0, or absent) and count_include_pad.
void set_divisor(const char* op, PoolGeometry& g, bool count_include_pad,
                 std::optional<int64_t> divisor_override);

void check_norm_type(const char* op, double norm_type);
// Gaussian pooling: sigma must be positive and finite.
void check_sigma(const char* op, double sigma);
void check_same_shape(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b,
                      const char* b_name);

// Whether a tensor is laid out channels_last and not also contiguous: a 4-d tensor whose
// channels_last strides are dense and whose NCHW ones are not. Such inputs are pooled in
// place and give channels_last outputs (the fake kernels in torch_cnn_ops/ops/pool.py
// follow the same rule).
bool use_channels_last(const at::Tensor& t);

// k-max pooling along `dim` (both devices, through ATen's topk, sort and gather): the k
// largest values in their original order (the set topk picks, ties included) and their
// positions along `dim`.
std::tuple<at::Tensor, at::Tensor> kmax_pool_forward_impl(const at::Tensor& input, int64_t k, int64_t dim);
// Its gradient: grad_output put back at the positions, zeros elsewhere.
at::Tensor kmax_pool_backward_impl(const at::Tensor& grad_output, const at::Tensor& indices, int64_t dim,
                                   at::IntArrayRef input_size);

// (N, C, *out) of a geometry for an nd-dimensional pooling.
std::vector<int64_t> pool_output_shape(int64_t batch, int64_t channels, const PoolGeometry& g, int64_t nd);

}  // namespace tco
