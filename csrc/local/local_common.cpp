#include "local_common.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

#include "../conv/conv_common.h"

namespace tco {
namespace {

constexpr const char* kOp = "cnn_ops.local";

// Checks the weight's shape (*grid, out_channels, in_channels, *kernel) and fills grid,
// out_channels, in_channels and kernel.
void fill_weight(LocalGeometry& g, at::IntArrayRef wsize, int64_t nd, int64_t in_channels,
                 const char* what) {
  TORCH_CHECK(static_cast<int64_t>(wsize.size()) == 2 * nd + 2, kOp, ": expected a ", 2 * nd + 2,
              "-d weight (", nd, " tile or output sizes, out_channels, in_channels, ", nd,
              " kernel sizes) for a ", nd, "-d convolution, got weight of shape ", shape_str(wsize));
  ConvGeometry& c = g.conv;
  for (int64_t i = 0; i < nd; ++i) {
    TORCH_CHECK(wsize[i] >= 1, kOp, ": the weight's leading ", nd,
                " sizes (tile size, or output size for unshared) must be at least 1, got weight of shape ",
                shape_str(wsize));
    g.grid[3 - nd + i] = wsize[i];
  }
  c.out_channels = wsize[nd];
  c.in_channels = in_channels;
  c.groups = 1;
  TORCH_CHECK(c.out_channels >= 1, kOp, ": out_channels (weight.size(", nd,
              ")) must be positive, got weight of shape ", shape_str(wsize));
  TORCH_CHECK(wsize[nd + 1] == in_channels, kOp, ": weight of shape ", shape_str(wsize), " expects ",
              wsize[nd + 1], " input channels (weight.size(", nd + 1, ")), but the ", what, " has ",
              in_channels);
  for (int64_t i = 0; i < nd; ++i) {
    TORCH_CHECK(wsize[nd + 2 + i] >= 1, kOp, ": kernel sizes must be positive, got weight of shape ",
                shape_str(wsize));
    c.kernel[3 - nd + i] = wsize[nd + 2 + i];
  }
}

int64_t spatial_dims(at::IntArrayRef stride) { return static_cast<int64_t>(stride.size()); }

}  // namespace

bool bias_per_position(const at::Tensor& bias) { return bias.dim() > 1; }

LocalGeometry local_forward_geometry(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef padding_end,
                                     at::IntArrayRef dilation) {
  LocalGeometry g;
  ConvGeometry& c = g.conv;
  fill_spatial_args(c, stride, padding, dilation, 1, kOp);
  const int64_t nd = spatial_dims(stride);
  TORCH_CHECK(padding_end.size() == stride.size(), kOp, ": padding_end ", shape_str(padding_end),
              " must have one entry per spatial dimension");
  TORCH_CHECK(input.dim() == nd + 2, kOp, ": expected a ", nd + 2, "-d input (batch, channels, ", nd,
              " spatial) for a ", nd, "-d convolution, got input of shape ", shape_str(input.sizes()));
  check_dtype(input, "input", kOp);
  check_same_kind(input, "input", weight, "weight", kOp);
  c.batch = input.size(0);
  fill_weight(g, weight.sizes(), nd, input.size(1), "input");
  fill_forward_extents(kOp, c, input, padding_end);
  if (bias.has_value() && bias->defined()) {
    check_same_kind(input, "input", *bias, "bias", kOp);
    std::vector<int64_t> per_position{c.out_channels};
    for (int64_t d = 3 - nd; d < 3; ++d) per_position.push_back(c.out_size[d]);
    TORCH_CHECK(bias->sizes() == at::IntArrayRef{c.out_channels} || bias->sizes() == at::IntArrayRef(per_position),
                kOp, ": bias must have shape [", c.out_channels, "] (out_channels) or ",
                shape_str(per_position), " (out_channels, *output_size), got ", shape_str(bias->sizes()));
  }
  return g;
}

namespace {

// The geometry of a backward op: grad_output, and `other` (the weight for the input gradient,
// the input for the weight gradient); input_sizes (named input_name) and weight_sizes are the
// forward's.
LocalGeometry backward_geometry(const char* op, const at::Tensor& grad_output, const at::Tensor& other,
                                const char* other_name, const char* input_name, at::IntArrayRef input_sizes,
                                at::IntArrayRef weight_sizes, at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation) {
  LocalGeometry g;
  ConvGeometry& c = g.conv;
  fill_spatial_args(c, stride, padding, dilation, 1, kOp);
  const int64_t nd = spatial_dims(stride);
  TORCH_CHECK(static_cast<int64_t>(input_sizes.size()) == nd + 2 && grad_output.dim() == nd + 2, op, ": ",
              input_name, " ", shape_str(input_sizes), " and grad_output ", shape_str(grad_output.sizes()), " must have ", nd + 2,
              " dimensions");
  check_dtype(grad_output, "grad_output", kOp);
  check_same_kind(grad_output, "grad_output", other, other_name, kOp);
  c.batch = input_sizes[0];
  fill_weight(g, weight_sizes, nd, input_sizes[1], "input");
  fill_backward_extents(op, c, grad_output, input_sizes);
  return g;
}

}  // namespace

LocalGeometry local_input_backward_geometry(const at::Tensor& grad_output, const at::Tensor& weight,
                                            at::IntArrayRef input_size, at::IntArrayRef stride,
                                            at::IntArrayRef padding, at::IntArrayRef dilation) {
  return backward_geometry("cnn_ops.local_input_backward", grad_output, weight, "weight", "input_size", input_size,
                           weight.sizes(), stride, padding, dilation);
}

LocalGeometry local_weight_backward_geometry(const at::Tensor& grad_output, const at::Tensor& input,
                                             at::IntArrayRef weight_size, at::IntArrayRef stride,
                                             at::IntArrayRef padding, at::IntArrayRef dilation) {
  return backward_geometry("cnn_ops.local_weight_backward", grad_output, input, "input", "input", input.sizes(),
                           weight_size, stride, padding, dilation);
}

}  // namespace tco
