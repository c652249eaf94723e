#include "conv_common.h"

#include <c10/util/safe_numerics.h>

#include "../checks.h"
#include "conv_winograd.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <vector>

namespace tco {

void check_dtype(const at::Tensor& t, const char* name, const char* op) {
  const auto st = t.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              op, ": ", name, " must be float32, float64, float16 or bfloat16, got ", st);
}

void check_same_kind(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                     const char* b_name, const char* op) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), op, ": ", a_name, " (", a.scalar_type(),
              ") and ", b_name, " (", b.scalar_type(), ") must have the same dtype");
  TORCH_CHECK(a.device() == b.device(), op, ": ", a_name, " (", a.device(), ") and ",
              b_name, " (", b.device(), ") must be on the same device");
}

int64_t forward_extent(const char* op, const ConvGeometry& c, int64_t d, int64_t i, int64_t pad_end,
                       at::IntArrayRef input_sizes) {
  const int64_t span = dilated_extent(op, c.kernel[d], c.dilation[d]);
  const int64_t padded = padded_length(op, c.in_size[d], c.pad[d], pad_end);
  TORCH_CHECK(padded >= span, op, ": the (dilated) kernel is larger than the padded input in spatial dimension ", i,
              ": kernel size ", c.kernel[d], " with dilation ", c.dilation[d], " spans ", span,
              " but the input of shape ", shape_str(input_sizes), " padded by (", c.pad[d], ", ", pad_end,
              ") is only ", padded, " long");
  return (padded - span) / c.stride[d] + 1;
}

void check_backward_extent(const char* op, const ConvGeometry& c, int64_t d, int64_t i,
                           at::IntArrayRef grad_output_sizes, at::IntArrayRef input_sizes) {
  const int64_t out = c.out_size[d];
  // The sizes any forward of this input takes: the dilated kernel, and the input padded by
  // `padding` in front and by up to max(padding, dilation * (kernel - 1)) behind.
  const int64_t full_pad = dilated_extent(op, c.kernel[d], c.dilation[d]) - 1;
  const int64_t max_pad_end = std::max(c.pad[d], full_pad);
  padded_length(op, c.in_size[d], c.pad[d], max_pad_end);
  // The last window starts at (out - 1) * stride and spans dilation * (kernel - 1) + 1; with a
  // trailing pad below stride it must reach the input's last position: out * stride + span > in + pad.
  int64_t reach = 0;
  const bool overflow = c10::mul_overflows(out, c.stride[d], &reach) || c10::add_overflows(reach, full_pad, &reach);
  TORCH_CHECK(c.in_size[d] >= 0 && out >= 1 && (overflow || reach >= c.in_size[d] + c.pad[d]), op,
              ": grad_output of shape ", shape_str(grad_output_sizes), " is too small in spatial dimension ", i,
              " for an input of size ", shape_str(input_sizes), ": a convolution with kernel size ", c.kernel[d],
              ", stride ", c.stride[d], ", padding ", c.pad[d], " and dilation ", c.dilation[d], " gives at least ",
              (c.in_size[d] + c.pad[d] - full_pad - 1) / c.stride[d] + 1, " outputs");
  TORCH_CHECK(out <= conv_out_size(c.in_size[d], c.pad[d], max_pad_end, c.kernel[d], c.stride[d], c.dilation[d]),
              op, ": grad_output of shape ", shape_str(grad_output_sizes), " is too large for an input of size ",
              shape_str(input_sizes), " with this kernel, stride and padding");
}

void fill_spatial_args(ConvGeometry& g, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups, const char* op) {
  const size_t nd = stride.size();
  TORCH_CHECK(nd >= 1 && nd <= 3, op, ": stride must have 1, 2 or 3 entries, got ",
              shape_str(stride));
  TORCH_CHECK(padding.size() == nd && dilation.size() == nd,
              op, ": stride ", shape_str(stride), ", padding ", shape_str(padding),
              " and dilation ", shape_str(dilation), " must have one entry per spatial dimension");
  TORCH_CHECK(groups >= 1, op, ": groups must be at least 1, got ", groups);
  g.groups = groups;
  const size_t first = 3 - nd;  // 1-d and 2-d map onto the trailing dimensions
  for (size_t i = 0; i < nd; ++i) {
    TORCH_CHECK(stride[i] >= 1, op, ": stride must be at least 1, got ", shape_str(stride));
    TORCH_CHECK(dilation[i] >= 1, op, ": dilation must be at least 1, got ",
                shape_str(dilation));
    TORCH_CHECK(padding[i] >= 0, op, ": padding must be non-negative, got ",
                shape_str(padding));
    g.stride[first + i] = stride[i];
    g.dilation[first + i] = dilation[i];
    g.pad[first + i] = padding[i];
  }
}

bool intel_cpu() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool intel = [] {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel") != 0;
  }();
  return intel;
#else
  return false;
#endif
}

namespace {

void fill_weight(ConvGeometry& g, at::IntArrayRef wsize, int64_t in_channels, const char* what) {
  const size_t nd = wsize.size() - 2;
  g.out_channels = wsize[0];
  g.in_channels = in_channels;
  TORCH_CHECK(in_channels % g.groups == 0, "cnn_ops.conv: ", what, " channels (", in_channels,
              ") must be divisible by groups (", g.groups, ")");
  TORCH_CHECK(g.out_channels >= 1 && g.out_channels % g.groups == 0,
              "cnn_ops.conv: weight.size(0) (out_channels = ", g.out_channels,
              ") must be a positive multiple of groups (", g.groups, "); weight shape ",
              shape_str(wsize));
  TORCH_CHECK(wsize[1] == in_channels / g.groups, "cnn_ops.conv: weight of shape ",
              shape_str(wsize), " expects ", wsize[1] * g.groups, " input channels (", wsize[1],
              " per group x ", g.groups, " groups), but the ", what, " has ", in_channels);
  for (size_t i = 0; i < nd; ++i) {
    TORCH_CHECK(wsize[2 + i] >= 1, "cnn_ops.conv: kernel sizes must be positive, weight shape ",
                shape_str(wsize));
    g.kernel[3 - nd + i] = wsize[2 + i];
  }
}

// A 2-d k x k kernel at stride 1 and dilation 1 (the layers the direct rules measured).
bool unit_square(const ConvGeometry& g, int64_t k) {
  return g.kernel[1] == k && g.kernel[2] == k && g.stride[1] == 1 && g.stride[2] == 1 && g.dilation[1] == 1 &&
         g.dilation[2] == 1;
}

// Whether auto runs a 2-d depthwise layer direct (the rule in conv_common.h): 3x3 kernels at
// unit stride and dilation on large planes.
bool direct_depthwise_2d_pays(const ConvGeometry& g) {
  return unit_square(g, 3) && g.out_plane() >= (g.batch == 1 ? kDirectDepthwiseMinPlaneAlone : kDirectDepthwiseMinPlane);
}

}  // namespace

const char* algorithm_name(ConvAlgorithm a) {
  switch (a) {
    case ConvAlgorithm::Direct: return "direct";
    case ConvAlgorithm::Im2col: return "im2col";
    case ConvAlgorithm::Shifted: return "shifted";
    case ConvAlgorithm::Aten: return "aten";
    case ConvAlgorithm::Winograd2: return "winograd_2x2";
    case ConvAlgorithm::Winograd4: return "winograd_4x4";
    case ConvAlgorithm::Winograd6: return "winograd_6x6";
  }
  return "";
}

namespace {

// Where auto runs winograd_2x2 for a 3x3 float32 layer on the CPU (the rule in
// conv_common.h): layers of 64 channels on planes of 14x14, or on Intel's CPUs the forward
// and input gradient of wider layers on planes of at least 28x28, with enough positions over
// the batch.
bool winograd_2x2_pays(const ConvGeometry& g, ConvPass pass) {
  const int64_t channels = std::min(g.in_per_group(), g.out_per_group());
  if (!intel_cpu()) return channels >= kWinogradMinChannels && g.out_plane() >= kWinogradMinPlane;
  return pass != ConvPass::WeightGradient && channels >= kWinogradIntelMinChannels &&
         g.out_size[1] >= kWinogradIntelMinSide && g.out_size[2] >= kWinogradIntelMinSide &&
         g.batch * g.out_plane() >= kWinogradIntelMinPositions;
}

// The tile of algorithm="winograd": F(4x4, 3x3), but F(2x2, 3x3) for 3x3 kernels on output
// planes of at most 14x14, where the 4x4 tile's transformed weight (4x the weight, against
// 16/9) and its tiles' reach past the plane (16x16 outputs for 14x14) cost more than its fewer
// multiplications saved. Forward, 2 threads, float32, Intel Xeon (AVX-512), time relative to
// torch's (4x4 / 2x2):
//   7x7 planes:   (8, 256) 1.88 / 1.37   (8, 512) 1.75 / 1.42   (1, 512) 4.97 / 2.62
//   14x14 planes: (8, 128) 1.09 / 1.06   (8, 256) 0.88 / 0.86   (8, 512) 0.81 / 0.78
//                 (1, 256) 2.61 / 1.34
//   16x16 planes: (8, 128) 0.76 / 0.93   20x20: (8, 64) 1.07 / 1.22   (8, 128) 0.81 / 0.94
//   28x28 planes: (8, 128) 0.64 / 0.88   (8, 256) 0.51 / 0.72   (32, 64) 0.87 / 1.11
//                 (1, 128) 1.02 / 1.00
//   56x56 planes: (8, 64) 0.83 / 1.09    (1, 64) 0.88 / 1.03
// Every pass of a layer takes the forward's tile (g is the forward's geometry in each).
ConvAlgorithm winograd_default_tile(const ConvGeometry& g) {
  return g.kernel[1] == 3 && g.kernel[2] == 3 && g.out_size[1] <= 14 && g.out_size[2] <= 14 ? ConvAlgorithm::Winograd2
                                                                                            : ConvAlgorithm::Winograd4;
}

}  // namespace

ConvAlgorithm resolve_algorithm(std::string_view algorithm, const ConvGeometry& g, const at::Tensor& like,
                                bool (*shifted_applies)(const ConvGeometry&, int64_t), ConvPass pass) {
  if (algorithm == "direct") return ConvAlgorithm::Direct;
  if (algorithm == "aten") return ConvAlgorithm::Aten;
  if (algorithm == "im2col") return ConvAlgorithm::Im2col;
  const ConvAlgorithm winograd = algorithm == "winograd"       ? winograd_default_tile(g)
                                 : algorithm == "winograd_4x4" ? ConvAlgorithm::Winograd4
                                 : algorithm == "winograd_2x2" ? ConvAlgorithm::Winograd2
                                 : algorithm == "winograd_6x6" ? ConvAlgorithm::Winograd6
                                                               : ConvAlgorithm::Direct;
  if (winograd_tile(winograd) != 0) {
    TORCH_CHECK(winograd_applies(g), "cnn_ops.conv: algorithm='", std::string(algorithm),
                "' needs a 1-d or 2-d convolution with stride 1, dilation 1 and a 3, 1x3, 3x1 or 3x3 kernel, "
                "got (depth, height, width) kernel ", shape_str(c10::IntArrayRef(g.kernel, 3)), ", stride ",
                shape_str(c10::IntArrayRef(g.stride, 3)), ", dilation ", shape_str(c10::IntArrayRef(g.dilation, 3)),
                "; use 'auto' for the others");
    return winograd;
  }
  if (algorithm == "shifted") {
    TORCH_CHECK(g.stride[0] == 1 && g.stride[1] == 1 && g.stride[2] == 1,
                "cnn_ops.conv: algorithm='shifted' needs stride 1 in every dimension; use 'im2col' "
                "or 'auto' for strided convolutions");
    // Half and bfloat16 compute in float32: the buffers hold at least 4-byte values.
    const int64_t elem_size = std::max<int64_t>(4, like.element_size());
    return shifted_applies && shifted_applies(g, elem_size) ? ConvAlgorithm::Shifted : ConvAlgorithm::Im2col;
  }
  TORCH_CHECK(algorithm == "auto",
              "cnn_ops.conv: algorithm must be 'auto', 'direct', 'im2col', 'shifted', 'aten', 'winograd', "
              "'winograd_2x2', 'winograd_4x4' or 'winograd_6x6', got '",
              std::string(algorithm), "'");
  if (!shifted_applies) return ConvAlgorithm::Aten;
  // Channels-last operands would pay Winograd's conversion each way; other layouts (an expanded
  // grad_output, a slice) are made contiguous first, a copy the other algorithms make too.
  const bool channels_last = like.dim() == 4 && !like.is_contiguous() && like.is_contiguous(at::MemoryFormat::ChannelsLast);
  if (like.scalar_type() == at::kFloat && !channels_last && winograd_applies(g) && g.kernel[1] == 3 &&
      g.kernel[2] == 3 && winograd_2x2_pays(g, pass)) {
    return ConvAlgorithm::Winograd2;
  }
  if (g.in_per_group() == 1 && g.groups > 1) {
    if (like.dim() != 4 || direct_depthwise_2d_pays(g)) return ConvAlgorithm::Direct;
    const bool direct_weight = pass == ConvPass::WeightGradient && unit_square(g, 5) &&
                               g.out_plane() >= kDirectDepthwiseWeightMinPlane;
    return direct_weight ? ConvAlgorithm::Direct : ConvAlgorithm::Aten;
  }
  if (g.in_per_group() == 1) return ConvAlgorithm::Im2col;
  if (like.dim() == 4 && like.scalar_type() == at::kFloat && !channels_last && g.groups > 1 && unit_square(g, 3) &&
      intel_cpu()) {  // grouped layers of few channels per group (see above)
    if (g.in_per_group() == kDirectGroupedChannels) return ConvAlgorithm::Direct;
    if (pass == ConvPass::WeightGradient && g.in_per_group() <= kDirectGroupedWeightMaxChannels &&
        g.out_plane() >= kDirectGroupedWeightMinPlane) {
      return ConvAlgorithm::Direct;
    }
  }
  if (g.kernel_volume() > 1) return ConvAlgorithm::Aten;
  if (g.stride[0] > 1 || g.stride[1] > 1 || g.stride[2] > 1) return ConvAlgorithm::Im2col;
  if (like.dim() == 3 && like.scalar_type() == at::kFloat && g.groups == 1 && intel_cpu() &&
      g.in_channels * g.out_channels <= kIm2col1dMaxChannelProduct) {
    return ConvAlgorithm::Im2col;  // a 1-d 1x1 layer (see above)
  }
  return ConvAlgorithm::Aten;
}

void fill_forward_extents(const char* op, ConvGeometry& c, const at::Tensor& input, at::IntArrayRef padding_end) {
  const int64_t nd = static_cast<int64_t>(padding_end.size());
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t d = 3 - nd + i;
    TORCH_CHECK(padding_end[i] >= 0, op, ": padding must be non-negative, got padding_end ", shape_str(padding_end));
    c.in_size[d] = input.size(2 + i);
    c.out_size[d] = forward_extent(op, c, d, i, padding_end[i], input.sizes());
  }
}

void fill_backward_extents(const char* op, ConvGeometry& c, const at::Tensor& grad_output,
                           at::IntArrayRef input_sizes) {
  TORCH_CHECK(grad_output.size(0) == c.batch && grad_output.size(1) == c.out_channels, op, ": grad_output of shape ",
              shape_str(grad_output.sizes()), " does not match batch ", c.batch, " and out_channels ",
              c.out_channels);
  const int64_t nd = grad_output.dim() - 2;
  for (int64_t i = 0; i < nd; ++i) {
    const int64_t d = 3 - nd + i;
    c.in_size[d] = input_sizes[2 + i];
    c.out_size[d] = grad_output.size(2 + i);
    check_backward_extent(op, c, d, i, grad_output.sizes(), input_sizes);
  }
}

ConvGeometry forward_geometry(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef padding_end,
                              at::IntArrayRef dilation, int64_t groups) {
  ConvGeometry g;
  fill_spatial_args(g, stride, padding, dilation, groups);
  const int64_t nd = static_cast<int64_t>(stride.size());
  TORCH_CHECK(padding_end.size() == stride.size(), "cnn_ops.conv: padding_end ",
              shape_str(padding_end), " must have one entry per spatial dimension");
  TORCH_CHECK(input.dim() == nd + 2, "cnn_ops.conv", nd, "d: expected a ", nd + 2,
              "-d input (batch, channels, ", nd, " spatial), got input of shape ",
              shape_str(input.sizes()));
  TORCH_CHECK(weight.dim() == nd + 2, "cnn_ops.conv", nd, "d: expected a ", nd + 2,
              "-d weight (out_channels, in_channels/groups, ", nd, " kernel sizes), got weight of shape ",
              shape_str(weight.sizes()));
  check_dtype(input, "input");
  check_same_kind(input, "input", weight, "weight");
  g.batch = input.size(0);
  fill_weight(g, weight.sizes(), input.size(1), "input");
  if (bias.has_value() && bias->defined()) {
    check_same_kind(input, "input", *bias, "bias");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.out_channels, "cnn_ops.conv: bias must have shape [",
                g.out_channels, "] (out_channels), got ", shape_str(bias->sizes()));
  }
  fill_forward_extents("cnn_ops.conv", g, input, padding_end);
  return g;
}

namespace {

// The geometry of a backward op: grad_output, and `other` (the weight for the input gradient,
// the input for the weight gradient), whose sizes give the forward's with the op's `size_name`
// argument `given` (input_size or weight_size).
ConvGeometry backward_geometry(const char* op, const at::Tensor& grad_output, const at::Tensor& other,
                               const char* other_name, const char* size_name, at::IntArrayRef given,
                               at::IntArrayRef input_sizes, at::IntArrayRef weight_sizes, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  ConvGeometry g;
  fill_spatial_args(g, stride, padding, dilation, groups);
  const int64_t nd = static_cast<int64_t>(stride.size());
  TORCH_CHECK(static_cast<int64_t>(given.size()) == nd + 2 && grad_output.dim() == nd + 2 && other.dim() == nd + 2, op,
              ": ", size_name, " ", shape_str(given), ", grad_output ", shape_str(grad_output.sizes()), " and ",
              other_name, " ", shape_str(other.sizes()), " must all have ", nd + 2, " dimensions");
  check_dtype(grad_output, "grad_output");
  check_same_kind(grad_output, "grad_output", other, other_name);
  g.batch = input_sizes[0];
  fill_weight(g, weight_sizes, input_sizes[1], "input");
  fill_backward_extents(op, g, grad_output, input_sizes);
  return g;
}

}  // namespace

ConvGeometry input_backward_geometry(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups) {
  return backward_geometry("cnn_ops.conv_input_backward", grad_output, weight, "weight", "input_size", input_size,
                           input_size, weight.sizes(), stride, padding, dilation, groups);
}

ConvGeometry weight_backward_geometry(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups) {
  return backward_geometry("cnn_ops.conv_weight_backward", grad_output, input, "input", "weight_size", weight_size,
                           input.sizes(), weight_size, stride, padding, dilation, groups);
}

}  // namespace tco
