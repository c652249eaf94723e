// The entries of the conv family's ops, once for every device (conv_ops.h).

#include "conv_ops.h"

#include <ATen/DeviceGuard.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/convolution.h>
#include <ATen/ops/convolution_backward.h>
#include <ATen/ops/empty.h>
#include <c10/core/DeviceGuard.h>
#include <c10/core/MemoryFormat.h>
#include <c10/util/strides.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <string>
#include <tuple>
#include <vector>

#include "../device_backends.h"
#include "conv_common.h"
#include "conv_winograd.h"

namespace tco {
namespace {

const ConvBackend& backend_for(const at::Tensor& t) { return DeviceBackends<ConvBackend>::of(t, "convolution"); }

// (N, O, *out) for an nd-dimensional convolution.
std::vector<int64_t> output_shape(const ConvGeometry& g, size_t nd) {
  std::vector<int64_t> shape{g.batch, g.out_channels};
  for (size_t d = 3 - nd; d < 3; ++d) shape.push_back(g.out_size[d]);
  return shape;
}

// The layout of a result, as torch's convolution chooses it: channels-last where either operand
// is laid out channels-last (4-d and 5-d tensors), else contiguous. A tensor that is both
// (size-1 dimensions) counts as contiguous. Unlike suggest_memory_format, whose guess on
// ambiguous strides has no exact twin in Python, this rule is the fake kernels' too.
at::MemoryFormat layout_of(const at::Tensor& t) {
  const at::MemoryFormat channels_last = t.dim() == 4   ? at::MemoryFormat::ChannelsLast
                                         : t.dim() == 5 ? at::MemoryFormat::ChannelsLast3d
                                                        : at::MemoryFormat::Contiguous;
  if (channels_last == at::MemoryFormat::Contiguous || t.is_contiguous()) return at::MemoryFormat::Contiguous;
  return t.is_contiguous(channels_last) ? channels_last : at::MemoryFormat::Contiguous;
}

at::MemoryFormat result_format(const at::Tensor& a, const at::Tensor& b) {
  const at::MemoryFormat fa = layout_of(a);
  if (fa != at::MemoryFormat::Contiguous) return fa;
  return b.dim() == a.dim() ? layout_of(b) : at::MemoryFormat::Contiguous;
}

// `t` with the strides at::empty gives its sizes in `format` (copied only where they differ), so
// that every algorithm and the fake kernels agree, down to shapes where several strides are valid
// for one layout (size-1 or empty dimensions).
at::Tensor in_format(const at::Tensor& t, at::MemoryFormat format) {
  std::vector<int64_t> strides;
  if (format == at::MemoryFormat::ChannelsLast) {
    strides = c10::get_channels_last_strides_2d(t.sizes());
  } else if (format == at::MemoryFormat::ChannelsLast3d) {
    strides = c10::get_channels_last_strides_3d(t.sizes());
  } else {
    const c10::DimVector contiguous = c10::contiguous_strides(t.sizes());
    strides.assign(contiguous.begin(), contiguous.end());
  }
  if (t.strides() == at::IntArrayRef(strides)) return t;
  return at::empty(t.sizes(), t.options().memory_format(format)).copy_(t);
}

// ---- ATen's convolution ("aten") ----
// ATen pads both ends of a dimension alike. Where the geometry's trailing pad differs (padding
// "same" with an even kernel, "full", asymmetric pads, or windows that leave the last rows
// unread), the input is padded explicitly instead, to the extent the windows span.
struct AtenPadding {
  c10::DimVector pad, stride, dilation, output_padding;  // inline storage: no allocation per call
  c10::DimVector padded_size;  // of the explicitly padded input; empty if ATen pads
  c10::DimVector pad_ends;     // constant_pad_nd's pads of it (last dimension first)
};

AtenPadding aten_padding(const ConvGeometry& g, at::IntArrayRef input_size) {
  const size_t nd = input_size.size() - 2;
  AtenPadding p;
  p.output_padding.assign(nd, 0);
  bool symmetric = true;
  for (size_t i = 0; i < nd; ++i) {
    const size_t d = 3 - nd + i;
    p.stride.push_back(g.stride[d]);
    p.dilation.push_back(g.dilation[d]);
    const int64_t reach = g.dilation[d] * (g.kernel[d] - 1) + 1;
    const int64_t spanned = g.in_size[d] + 2 * g.pad[d] - reach;
    symmetric = symmetric && spanned >= 0 && spanned / g.stride[d] + 1 == g.out_size[d];
  }
  if (symmetric) {
    for (size_t i = 0; i < nd; ++i) p.pad.push_back(g.pad[3 - nd + i]);
    return p;
  }
  p.pad.assign(nd, 0);
  p.padded_size.assign(input_size.begin(), input_size.end());
  p.pad_ends.resize(2 * nd);
  for (size_t i = 0; i < nd; ++i) {
    const size_t d = 3 - nd + i;
    const int64_t span = (g.out_size[d] - 1) * g.stride[d] + g.dilation[d] * (g.kernel[d] - 1) + 1;
    p.padded_size[2 + i] = std::max(g.in_size[d] + g.pad[d], span);
    p.pad_ends[2 * (nd - 1 - i)] = g.pad[d];
    p.pad_ends[2 * (nd - 1 - i) + 1] = p.padded_size[2 + i] - g.in_size[d] - g.pad[d];
  }
  return p;
}

at::Tensor aten_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        const ConvGeometry& g) {
  const AtenPadding p = aten_padding(g, input.sizes());
  const at::Tensor x = p.padded_size.empty() ? input : at::constant_pad_nd(input, p.pad_ends);
  return at::convolution(x, weight, bias, p.stride, p.pad, p.dilation, false, p.output_padding, g.groups);
}

at::Tensor aten_input_backward(const at::Tensor& grad_output, const at::Tensor& weight, const ConvGeometry& g,
                               at::IntArrayRef input_size, at::MemoryFormat format) {
  const AtenPadding p = aten_padding(g, input_size);
  // ATen reads only the sizes of the input for its gradient.
  const at::Tensor shape_of_input =
      at::empty(p.padded_size.empty() ? input_size : at::IntArrayRef(p.padded_size),
                grad_output.options().memory_format(format));
  at::Tensor gin = std::get<0>(at::convolution_backward(grad_output, shape_of_input, weight, std::nullopt, p.stride,
                                                        p.pad, p.dilation, false, p.output_padding, g.groups,
                                                        {true, false, false}));
  if (p.padded_size.empty()) return gin;
  const size_t nd = input_size.size() - 2;
  for (size_t i = 0; i < nd; ++i) gin = gin.narrow(static_cast<int64_t>(2 + i), g.pad[3 - nd + i], input_size[2 + i]);
  return gin;
}

at::Tensor aten_weight_backward(const at::Tensor& grad_output, const at::Tensor& input, const ConvGeometry& g,
                                at::IntArrayRef weight_size) {
  const AtenPadding p = aten_padding(g, input.sizes());
  const at::Tensor x = p.padded_size.empty() ? input : at::constant_pad_nd(input, p.pad_ends);
  // ATen reads only the sizes of the weight for its gradient.
  const at::Tensor shape_of_weight = at::empty(weight_size, grad_output.options());
  return std::get<1>(at::convolution_backward(grad_output, x, shape_of_weight, std::nullopt, p.stride, p.pad,
                                              p.dilation, false, p.output_padding, g.groups, {false, true, false}));
}

// ---- Winograd ----
// The input gradient is the forward convolution of grad_output with the weight transposed per
// group and rotated 180 degrees (winograd_input_gradient_geometry).
at::Tensor winograd_transposed_weight(const at::Tensor& weight, const ConvGeometry& g) {
  std::vector<int64_t> grouped{g.groups, g.out_per_group()}, sizes{g.in_channels, g.out_per_group()}, spatial;
  for (int64_t d = 2; d < weight.dim(); ++d) {
    grouped.push_back(weight.size(d));
    sizes.push_back(weight.size(d));
    spatial.push_back(d + 1);
  }
  grouped.insert(grouped.begin() + 2, g.in_per_group());
  return weight.reshape(grouped).transpose(1, 2).flip(spatial).reshape(sizes).contiguous();
}

// ---- the entries ----
// The algorithm of a forward convolution: the resolved `algorithm`, except that an output of
// the bias alone (no input channels, or an empty input plane: all windows in the padding)
// is the direct kernel's, which answers it without unfolding or multiplying (ATen refuses an
// empty plane).
ConvAlgorithm forward_algorithm(c10::string_view algorithm, const ConvGeometry& g, const at::Tensor& input,
                                const ConvBackend& be) {
  const ConvAlgorithm algo = resolve_algorithm(algorithm, g, input, be.shifted_applies, ConvPass::Forward);
  return g.in_channels == 0 || g.in_plane() == 0 ? ConvAlgorithm::Direct : algo;
}

std::string conv_algorithm(const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
                           at::IntArrayRef padding, at::IntArrayRef padding_end, at::IntArrayRef dilation,
                           int64_t groups, c10::string_view algorithm) {
  const ConvGeometry g = forward_geometry(input, weight, std::nullopt, stride, padding, padding_end, dilation, groups);
  return algorithm_name(forward_algorithm(algorithm, g, input, backend_for(input)));
}

at::Tensor conv_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                        at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm) {
  // The ATen calls below (GEMMs, copies) are implementation details, not graph nodes.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeometry g = forward_geometry(input, weight, bias, stride, padding, padding_end, dilation, groups);
  const ConvBackend& be = backend_for(input);
  const ConvAlgorithm algo = forward_algorithm(algorithm, g, input, be);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const at::MemoryFormat format = result_format(input, weight);
  const std::vector<int64_t> shape = output_shape(g, stride.size());
  if (g.no_output()) return at::empty(shape, input.options().memory_format(format));
  if (algo == ConvAlgorithm::Aten) return in_format(aten_forward(input, weight, bias, g), format);
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
  at::Tensor out;
  if (const int tile = winograd_tile(algo)) {
    const std::optional<at::Tensor> result = be.winograd_forward(x, w, b, g, tile);
    out = result ? result->view(shape) : aten_forward(input, weight, bias, g);
  } else if (algo == ConvAlgorithm::Im2col) {
    out = be.im2col_forward(x, w, b, g).view(shape);
  } else if (algo == ConvAlgorithm::Shifted) {
    out = be.shifted_forward(x, w, b, g).view(shape);
  } else {
    out = at::empty(shape, x.options());
    be.direct_forward(x, w, b, g, out);
  }
  return in_format(out, format);
}

at::Tensor conv_input_backward(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups, c10::string_view algorithm) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeometry g = input_backward_geometry(grad_output, weight, input_size, stride, padding, dilation, groups);
  const ConvBackend& be = backend_for(grad_output);
  const ConvAlgorithm algo = resolve_algorithm(algorithm, g, grad_output, be.shifted_applies, ConvPass::InputGradient);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const at::MemoryFormat format = result_format(grad_output, weight);
  if (g.no_input_gradient()) return at::empty(input_size, grad_output.options().memory_format(format)).zero_();
  if (algo == ConvAlgorithm::Aten) {
    return in_format(aten_input_backward(grad_output, weight, g, input_size, format), format);
  }
  const at::Tensor gout = grad_output.contiguous(), w = weight.contiguous();
  at::Tensor gin;
  if (const int tile = winograd_tile(algo)) {
    const std::optional<at::Tensor> result =
        be.winograd_input_backward ? be.winograd_input_backward(gout, w, g, tile)
                                   : be.winograd_forward(gout, winograd_transposed_weight(w, g), std::nullopt,
                                                         winograd_input_gradient_geometry(g), tile);
    gin = result ? result->view(input_size) : aten_input_backward(grad_output, weight, g, input_size, format);
  } else if (algo == ConvAlgorithm::Im2col) {
    gin = be.im2col_input_backward(gout, w, g, input_size);
  } else if (algo == ConvAlgorithm::Shifted) {
    gin = be.shifted_input_backward(gout, w, g).view(input_size);
  } else {
    gin = at::empty(input_size, gout.options());
    be.direct_input_backward(gout, w, g, gin);
  }
  return in_format(gin, format);
}

at::Tensor conv_weight_backward(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, c10::string_view algorithm) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeometry g = weight_backward_geometry(grad_output, input, weight_size, stride, padding, dilation, groups);
  const ConvBackend& be = backend_for(grad_output);
  ConvAlgorithm algo = resolve_algorithm(algorithm, g, input, be.shifted_applies, ConvPass::WeightGradient);
  // An empty input plane (all windows in the padding) gives a zero gradient; ATen refuses it.
  if (g.in_plane() == 0) algo = ConvAlgorithm::Direct;
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const at::MemoryFormat format = result_format(grad_output, input);
  if (g.no_weight_gradient()) return at::empty(weight_size, grad_output.options().memory_format(format)).zero_();
  // Winograd's weight gradient where the device has one (the CPU) and it is the faster, else
  // ATen's; ATen's too where Winograd's comes out infinite or NaN.
  if (const int tile = winograd_tile(algo); tile != 0 && be.winograd_weight_backward) {
    const std::optional<at::Tensor> gw =
        be.winograd_weight_backward(grad_output.contiguous(), input.contiguous(), g, tile);
    if (gw) return in_format(gw->view(weight_size), format);
  }
  if (algo == ConvAlgorithm::Aten || winograd_tile(algo) != 0) {
    return in_format(aten_weight_backward(grad_output, input, g, weight_size), format);
  }
  const at::Tensor gout = grad_output.contiguous(), x = input.contiguous();
  at::Tensor gw;
  if (algo == ConvAlgorithm::Im2col) {
    gw = be.im2col_weight_backward(gout, x, g, weight_size);
  } else if (algo == ConvAlgorithm::Shifted) {
    gw = be.shifted_weight_backward(gout, x, g).view(weight_size);
  } else {
    gw = at::empty(weight_size, gout.options());
    be.direct_weight_backward(gout, x, g, gw);
  }
  return in_format(gw, format);
}

}  // namespace

std::optional<std::array<at::Tensor, 3>> aten_convolution_gradients(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm,
    std::array<bool, 3> wanted) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeometry g =
      input_backward_geometry(grad_output, weight, input.sizes(), stride, padding, dilation, groups);
  const ConvBackend& be = backend_for(grad_output);
  // As the ops resolve it: the input gradient's on grad_output, the weight gradient's on input.
  if (wanted[0] && (resolve_algorithm(algorithm, g, grad_output, be.shifted_applies, ConvPass::InputGradient) !=
                        ConvAlgorithm::Aten ||
                    g.no_input_gradient()))
    return std::nullopt;
  if (wanted[1] && (resolve_algorithm(algorithm, g, input, be.shifted_applies, ConvPass::WeightGradient) !=
                        ConvAlgorithm::Aten ||
                    g.no_weight_gradient() || g.in_plane() == 0))
    return std::nullopt;
  const AtenPadding p = aten_padding(g, input.sizes());
  if (!p.padded_size.empty()) return std::nullopt;
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const std::array<int64_t, 1> bias_size{weight.size(0)};  // (out_channels,)
  at::OptionalIntArrayRef bias_sizes;
  if (wanted[2]) bias_sizes = at::IntArrayRef(bias_size);
  auto [grad_input, grad_weight, grad_bias] = at::convolution_backward(
      grad_output, input, weight, bias_sizes, p.stride, p.pad, p.dilation, false, p.output_padding, g.groups, wanted);
  return std::array<at::Tensor, 3>{wanted[0] ? in_format(grad_input, result_format(grad_output, weight)) : at::Tensor(),
                                   wanted[1] ? in_format(grad_weight, result_format(grad_output, input)) : at::Tensor(),
                                   grad_bias};
}

void register_conv_ops(torch::Library& m, const ConvBackend& backend) {
  DeviceBackends<ConvBackend>::add(backend);
  m.impl("conv_algorithm", TORCH_FN(conv_algorithm));
  m.impl("conv_forward", TORCH_FN(conv_forward));
  m.impl("conv_input_backward", TORCH_FN(conv_input_backward));
  m.impl("conv_weight_backward", TORCH_FN(conv_weight_backward));
}

}  // namespace tco
