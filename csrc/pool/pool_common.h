// Argument checks and geometry construction shared by the CPU and CUDA implementations of
// the pool ops, so that both devices reject bad input with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kmax_pool.h"
#include "pool_geometry.h"

namespace tco {

// Regular window pooling (max, min, avg, lp) of an (N, C, *spatial) input; nd =
// kernel_size.size(). Pass dilation of ones for avg and lp. `padding` is before the input and
// `padding_end` after it (empty: the same as before; TensorFlow's 'same' pads one more at the
// end). Checks kernel, stride and dilation >= 1, 0 <= padding <= kernel_size / 2 on each side
// and a positive output size.
PoolGeometry window_geometry(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, bool ceil_mode, at::IntArrayRef padding_end = {});

// The same for a backward pass: the input has `input_size`, and grad_output must have the
// shape the forward gives.
PoolGeometry window_backward_geometry(const char* op, const at::Tensor& grad_output,
                                      at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, bool ceil_mode,
                                      at::IntArrayRef padding_end = {});

// Adaptive pooling of an (N, C, *spatial) input to `output_size` (one entry per spatial
// dimension, each >= 0). The input's spatial dimensions must be non-empty, and its channels
// unless empty_channels_allowed (torch's adaptive average pooling in 1-d and 2-d).
PoolGeometry adaptive_geometry(const char* op, const at::Tensor& input, at::IntArrayRef output_size,
                               bool empty_channels_allowed = false);
PoolGeometry adaptive_backward_geometry(const char* op, const at::Tensor& grad_output,
                                        at::IntArrayRef input_size);

// Scatter through saved indices: grad_output and indices (N, C, *out), input_size (N, C, *in).
PoolGeometry scatter_geometry(const char* op, const at::Tensor& grad_output, const at::Tensor& indices,
                              at::IntArrayRef input_size);

// Sets divisor_override (non-zero, or absent; a negative one divides too, as torch) and
// count_include_pad.
void set_divisor(const char* op, PoolGeometry& g, bool count_include_pad,
                 std::optional<int64_t> divisor_override);

void check_norm_type(const char* op, double norm_type);
// Gaussian pooling: sigma must be positive and finite, and the kernel at most
// kMaxGaussianKernel taps long in each dimension.
constexpr int64_t kMaxGaussianKernel = int64_t(1) << 20;
void check_gaussian(const char* op, double sigma, at::IntArrayRef kernel_size);
// Stochastic pooling: the input must be non-negative (no NaN either); the uniform numbers
// must have the output's shape, and the input's dtype and device.
void check_non_negative(const char* op, const at::Tensor& input);
void check_uniform(const char* op, const at::Tensor& uniform, const at::Tensor& input, at::IntArrayRef output_shape);
void check_same_dtype_device(const char* op, const at::Tensor& grad_output, const at::Tensor& input);
void check_same_shape(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b,
                      const char* b_name);

// Whether a tensor is laid out channels_last and not also contiguous: a 4-d tensor whose
// channels_last strides are dense and whose NCHW ones are not. Such inputs are pooled in
// place and give channels_last outputs (the fake kernels in torch_cnn_ops/ops/pool.py
// follow the same rule).
bool use_channels_last(const at::Tensor& t);

// k-max pooling's argument checks (both devices): a float input of at least one dimension and
// 1 <= k <= input.size(dim). Returns the input seen as rows along the wrapped `dim`; *wrapped_dim
// receives that dimension.
KmaxShape kmax_forward_shape(const at::Tensor& input, int64_t k, int64_t dim, int64_t* wrapped_dim);
// Its backward: grad_output (float) and indices (int64, same shape and device) have the shape of
// input_size except along dim, where they hold k <= input_size[dim] entries.
KmaxShape kmax_backward_shape(const at::Tensor& grad_output, const at::Tensor& indices, int64_t dim,
                              at::IntArrayRef input_size);

// (N, C, *out) of a geometry for an nd-dimensional pooling.
std::vector<int64_t> pool_output_shape(int64_t batch, int64_t channels, const PoolGeometry& g, int64_t nd);

}  // namespace tco
