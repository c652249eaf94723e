#include "pool_common.h"

#include "../checks.h"

#include <ATen/ops/min.h>
#include <c10/core/WrapDimMinimal.h>
#include <c10/util/Exception.h>

#include <cmath>
#include <string>

namespace tco {
namespace {

void check_dtype(const char* op, const at::Tensor& t, const char* name) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "cnn_ops.", op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", st);
}

int64_t check_rank(const char* op, at::IntArrayRef sizes, const char* name, size_t nd) {
  TORCH_CHECK(nd >= 1 && nd <= 3, "cnn_ops.", op, ": expected 1, 2 or 3 spatial dimensions, got ", nd);
  TORCH_CHECK(sizes.size() == nd + 2, "cnn_ops.", op, ": expected a ", nd + 2, "-d ", name,
              " (batch, channels, ", nd, " spatial), got ", name, " of shape ", shape_str(sizes));
  return static_cast<int64_t>(nd);
}

// torch's pooling refuses an input with an empty channel or spatial dimension (only the batch
// may be empty); its adaptive average pooling in 1-d and 2-d accepts empty channels.
void check_non_batch_dims(const char* op, at::IntArrayRef sizes, bool channels) {
  bool empty = channels && sizes[1] == 0;
  for (size_t i = 2; i < sizes.size(); ++i) empty = empty || sizes[i] == 0;
  TORCH_CHECK(!empty, "cnn_ops.", op, ": expected the input's ", channels ? "non-batch" : "spatial",
              " dimensions to be non-empty, got input of shape ", shape_str(sizes));
}

// Fills everything but out_size from the arguments of a regular pooling.
void fill_window_args(const char* op, PoolGeometry& g, at::IntArrayRef in_sizes, at::IntArrayRef kernel_size,
                      at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                      bool ceil_mode, at::IntArrayRef padding_end) {
  const size_t nd = kernel_size.size();
  check_rank(op, in_sizes, "input", nd);
  TORCH_CHECK(stride.size() == nd && padding.size() == nd && dilation.size() == nd, "cnn_ops.", op,
              ": kernel_size ", shape_str(kernel_size), ", stride ", shape_str(stride), ", padding ",
              shape_str(padding), " and dilation ", shape_str(dilation),
              " must have one entry per spatial dimension");
  TORCH_CHECK(padding_end.empty() || padding_end.size() == nd, "cnn_ops.", op, ": padding_end ",
              shape_str(padding_end), " must be empty (padding on both sides) or have one entry per spatial ",
              "dimension, as kernel_size ", shape_str(kernel_size));
  if (padding_end.empty()) padding_end = padding;
  check_non_batch_dims(op, in_sizes, /*channels=*/true);
  g.planes = in_sizes[0] * in_sizes[1];
  for (size_t i = 0; i < nd; ++i) {
    const size_t d = 3 - nd + i;
    TORCH_CHECK(kernel_size[i] >= 1, "cnn_ops.", op, ": kernel_size must be at least 1, got ",
                shape_str(kernel_size));
    TORCH_CHECK(stride[i] >= 1, "cnn_ops.", op, ": stride must be at least 1, got ", shape_str(stride));
    TORCH_CHECK(dilation[i] >= 1, "cnn_ops.", op, ": dilation must be at least 1, got ",
                shape_str(dilation));
    TORCH_CHECK(padding[i] >= 0 && padding[i] <= kernel_size[i] / 2, "cnn_ops.", op,
                ": padding must be non-negative and at most half of kernel_size, got padding ",
                shape_str(padding), " with kernel_size ", shape_str(kernel_size));
    TORCH_CHECK(padding_end[i] >= 0 && padding_end[i] <= kernel_size[i] / 2, "cnn_ops.", op,
                ": padding_end must be non-negative and at most half of kernel_size, got padding_end ",
                shape_str(padding_end), " with kernel_size ", shape_str(kernel_size));
    g.in_size[d] = in_sizes[2 + i];
    g.kernel[d] = kernel_size[i];
    g.stride[d] = stride[i];
    g.pad[d] = padding[i];
    g.pad_end[d] = padding_end[i];
    g.dilation[d] = dilation[i];
    const std::string where = std::string("cnn_ops.") + op;
    const int64_t span = dilated_extent(where.c_str(), kernel_size[i], dilation[i]);
    const int64_t padded = padded_length(where.c_str(), in_sizes[2 + i], padding[i], padding_end[i]);
    TORCH_CHECK(padded >= span, "cnn_ops.", op,
                ": the (dilated) kernel is larger than the padded input in spatial dimension ", i,
                ": kernel_size ", kernel_size[i], " with dilation ", dilation[i], " spans ", span,
                " but the input of shape ", shape_str(in_sizes), " padded by (", padding[i], ", ",
                padding_end[i], ") is only ", padded, " long");
    g.out_size[d] = pool_out_size(in_sizes[2 + i], padding[i], padding_end[i], kernel_size[i], stride[i],
                                  dilation[i], ceil_mode);
    TORCH_CHECK(g.out_size[d] >= 1, "cnn_ops.", op, ": output size is too small: input of shape ",
                shape_str(in_sizes), " with kernel_size ", shape_str(kernel_size), ", stride ",
                shape_str(stride), ", padding ", shape_str(padding), " and dilation ",
                shape_str(dilation), " gives ", g.out_size[d], " outputs in spatial dimension ", i);
  }
}

}  // namespace

PoolGeometry window_geometry(const char* op, const at::Tensor& input, at::IntArrayRef kernel_size,
                             at::IntArrayRef stride, at::IntArrayRef padding,
                             at::IntArrayRef dilation, bool ceil_mode, at::IntArrayRef padding_end) {
  check_dtype(op, input, "input");
  PoolGeometry g;
  fill_window_args(op, g, input.sizes(), kernel_size, stride, padding, dilation, ceil_mode, padding_end);
  return g;
}

PoolGeometry window_backward_geometry(const char* op, const at::Tensor& grad_output,
                                      at::IntArrayRef input_size, at::IntArrayRef kernel_size,
                                      at::IntArrayRef stride, at::IntArrayRef padding,
                                      at::IntArrayRef dilation, bool ceil_mode, at::IntArrayRef padding_end) {
  check_dtype(op, grad_output, "grad_output");
  PoolGeometry g;
  fill_window_args(op, g, input_size, kernel_size, stride, padding, dilation, ceil_mode, padding_end);
  const int64_t nd = static_cast<int64_t>(kernel_size.size());
  const auto expected = pool_output_shape(input_size[0], input_size[1], g, nd);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef(expected), "cnn_ops.", op, ": grad_output of shape ",
              shape_str(grad_output.sizes()), " does not match the output shape ", shape_str(expected),
              " of input_size ", shape_str(input_size));
  return g;
}

PoolGeometry adaptive_geometry(const char* op, const at::Tensor& input, at::IntArrayRef output_size,
                               bool empty_channels_allowed) {
  check_dtype(op, input, "input");
  const size_t nd = output_size.size();
  check_rank(op, input.sizes(), "input", nd);
  check_non_batch_dims(op, input.sizes(), /*channels=*/!empty_channels_allowed || nd == 3);
  PoolGeometry g;
  g.adaptive = true;
  g.planes = input.size(0) * input.size(1);
  for (size_t i = 0; i < nd; ++i) {
    const size_t d = 3 - nd + i;
    TORCH_CHECK(output_size[i] >= 0, "cnn_ops.", op, ": output_size must be non-negative, got ",
                shape_str(output_size));
    g.in_size[d] = input.size(2 + i);
    g.out_size[d] = output_size[i];
  }
  return g;
}

namespace {

// A gradient's geometry read off grad_output (N, C, *out) and input_size (N, C, *in): 1 to 3
// spatial dimensions, each non-empty (no forward pools an empty one; an empty output, as
// output_size 0 gives, has an all-zero gradient).
PoolGeometry gradient_geometry(const char* op, const at::Tensor& grad_output, at::IntArrayRef input_size) {
  TORCH_CHECK(input_size.size() >= 3 && input_size.size() <= 5, "cnn_ops.", op,
              ": input_size must have 1, 2 or 3 spatial dimensions after (batch, channels), got ",
              shape_str(input_size));
  TORCH_CHECK(grad_output.dim() == static_cast<int64_t>(input_size.size()) &&
                  grad_output.size(0) == input_size[0] && grad_output.size(1) == input_size[1],
              "cnn_ops.", op, ": grad_output of shape ", shape_str(grad_output.sizes()),
              " does not match input_size ", shape_str(input_size));
  const size_t nd = input_size.size() - 2;
  PoolGeometry g;
  g.planes = input_size[0] * input_size[1];
  for (size_t i = 0; i < nd; ++i) {
    const size_t d = 3 - nd + i;
    TORCH_CHECK(input_size[2 + i] >= 1, "cnn_ops.", op, ": empty spatial size in input_size ",
                shape_str(input_size));
    g.in_size[d] = input_size[2 + i];
    g.out_size[d] = grad_output.size(2 + i);
  }
  return g;
}

}  // namespace

PoolGeometry adaptive_backward_geometry(const char* op, const at::Tensor& grad_output,
                                        at::IntArrayRef input_size) {
  check_dtype(op, grad_output, "grad_output");
  PoolGeometry g = gradient_geometry(op, grad_output, input_size);
  g.adaptive = true;
  return g;
}

PoolGeometry scatter_geometry(const char* op, const at::Tensor& grad_output, const at::Tensor& indices,
                              at::IntArrayRef input_size) {
  check_dtype(op, grad_output, "grad_output");
  TORCH_CHECK(indices.scalar_type() == at::kLong, "cnn_ops.", op, ": indices must be int64, got ",
              indices.scalar_type());
  check_same_shape(op, grad_output, "grad_output", indices, "indices");
  TORCH_CHECK(grad_output.device() == indices.device(), "cnn_ops.", op, ": grad_output (",
              grad_output.device(), ") and indices (", indices.device(), ") must be on the same device");
  return gradient_geometry(op, grad_output, input_size);
}

void set_divisor(const char* op, PoolGeometry& g, bool count_include_pad,
                 std::optional<int64_t> divisor_override) {
  g.count_include_pad = count_include_pad;
  if (divisor_override.has_value()) {
    TORCH_CHECK(*divisor_override != 0, "cnn_ops.", op, ": divisor_override must be non-zero");
    g.divisor_override = *divisor_override;
  }
}

void check_norm_type(const char* op, double norm_type) {
  // An infinite norm is the window's largest magnitude: the public lp_pool functions take it to
  // max pooling of |x|, as torch's do; the power formula of this op would give 1.
  TORCH_CHECK(norm_type > 0 && std::isfinite(norm_type), "cnn_ops.", op,
              ": norm_type must be positive and finite, got ", norm_type);
}

void check_gaussian(const char* op, double sigma, at::IntArrayRef kernel_size) {
  TORCH_CHECK(sigma > 0 && std::isfinite(sigma), "cnn_ops.", op, ": sigma must be positive and finite, got ", sigma);
  // The weights are tabulated per tap (gaussian_weights): a bound on the table, not on the
  // input's size.
  for (const int64_t k : kernel_size) {
    TORCH_CHECK(k <= kMaxGaussianKernel, "cnn_ops.", op, ": kernel_size ", shape_str(kernel_size),
                " has more than ", kMaxGaussianKernel, " taps in a dimension (its weight table would not fit)");
  }
}

void check_non_negative(const char* op, const at::Tensor& input) {
  if (input.numel() == 0) return;
  const double lowest = at::min(input).item<double>();
  TORCH_CHECK(lowest >= 0, "cnn_ops.", op,
              ": the input must be non-negative (stochastic pooling samples with probabilities "
              "proportional to the activations), got a minimum of ", lowest);
}

void check_uniform(const char* op, const at::Tensor& uniform, const at::Tensor& input, at::IntArrayRef output_shape) {
  TORCH_CHECK(uniform.sizes() == output_shape, "cnn_ops.", op, ": uniform of shape ", shape_str(uniform.sizes()),
              " must have the output's shape ", shape_str(output_shape));
  TORCH_CHECK(uniform.scalar_type() == input.scalar_type() && uniform.device() == input.device(), "cnn_ops.", op,
              ": uniform (", uniform.scalar_type(), ", ", uniform.device(), ") must have the dtype and device of "
              "the input (", input.scalar_type(), ", ", input.device(), ")");
}

void check_same_dtype_device(const char* op, const at::Tensor& grad_output, const at::Tensor& input) {
  TORCH_CHECK(input.scalar_type() == grad_output.scalar_type() && input.device() == grad_output.device(),
              "cnn_ops.", op, ": input (", input.scalar_type(), ", ", input.device(), ") and grad_output (",
              grad_output.scalar_type(), ", ", grad_output.device(), ") must have the same dtype and device");
}

void check_same_shape(const char* op, const at::Tensor& a, const char* a_name, const at::Tensor& b,
                      const char* b_name) {
  TORCH_CHECK(a.sizes() == b.sizes(), "cnn_ops.", op, ": ", a_name, " of shape ", shape_str(a.sizes()),
              " and ", b_name, " of shape ", shape_str(b.sizes()), " must have the same shape");
}

namespace {

// (outer, length, inner) of `sizes` around dimension d.
KmaxShape rows_around(at::IntArrayRef sizes, int64_t d, int64_t k) {
  KmaxShape s;
  for (int64_t i = 0; i < d; ++i) s.outer *= sizes[i];
  s.length = sizes[d];
  for (int64_t i = d + 1; i < static_cast<int64_t>(sizes.size()); ++i) s.inner *= sizes[i];
  s.k = k;
  return s;
}

}  // namespace

KmaxShape kmax_forward_shape(const at::Tensor& input, int64_t k, int64_t dim, int64_t* wrapped_dim) {
  check_dtype("kmax_pool", input, "input");
  TORCH_CHECK(input.dim() >= 1, "cnn_ops.kmax_pool: input must have at least one dimension");
  const int64_t d = c10::maybe_wrap_dim(dim, input.dim());
  TORCH_CHECK(k >= 1 && k <= input.size(d), "cnn_ops.kmax_pool: k must be between 1 and the size of dimension ",
              dim, " (", input.size(d), ") of the input of shape ", shape_str(input.sizes()), ", got k = ", k);
  *wrapped_dim = d;
  return rows_around(input.sizes(), d, k);
}

KmaxShape kmax_backward_shape(const at::Tensor& grad_output, const at::Tensor& indices, int64_t dim,
                              at::IntArrayRef input_size) {
  const char* op = "kmax_pool_backward";
  check_dtype(op, grad_output, "grad_output");
  check_same_shape(op, grad_output, "grad_output", indices, "indices");
  TORCH_CHECK(indices.scalar_type() == at::kLong, "cnn_ops.", op, ": indices must be int64, got ",
              indices.scalar_type());
  TORCH_CHECK(grad_output.device() == indices.device(), "cnn_ops.", op, ": grad_output (", grad_output.device(),
              ") and indices (", indices.device(), ") must be on the same device");
  TORCH_CHECK(static_cast<int64_t>(input_size.size()) == grad_output.dim() && grad_output.dim() >= 1, "cnn_ops.",
              op, ": input_size ", shape_str(input_size), " and grad_output of shape ",
              shape_str(grad_output.sizes()), " must have the same number (at least one) of dimensions");
  const int64_t d = c10::maybe_wrap_dim(dim, grad_output.dim());
  for (int64_t i = 0; i < grad_output.dim(); ++i) {
    TORCH_CHECK(i == d ? grad_output.size(i) >= 1 && grad_output.size(i) <= input_size[i]
                       : grad_output.size(i) == input_size[i],
                "cnn_ops.", op, ": grad_output of shape ", shape_str(grad_output.sizes()),
                " does not fit input_size ", shape_str(input_size), " (equal sizes except along dim ", dim,
                ", where it holds between 1 and input_size[dim] entries)");
  }
  return rows_around(input_size, d, grad_output.size(d));
}

bool use_channels_last(const at::Tensor& t) {
  return t.dim() == 4 && t.is_contiguous(at::MemoryFormat::ChannelsLast) && !t.is_contiguous();
}

std::vector<int64_t> pool_output_shape(int64_t batch, int64_t channels, const PoolGeometry& g, int64_t nd) {
  std::vector<int64_t> shape{batch, channels};
  for (int64_t d = 3 - nd; d < 3; ++d) shape.push_back(g.out_size[d]);
  return shape;
}

}  // namespace tco
