// The entries of the conv family's ops, once for every device (conv_ops.h).

#include "conv_ops.h"

#include <ATen/DeviceGuard.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <vector>

#include "../device_backends.h"
#include "conv_common.h"

namespace tco {
namespace {

const ConvBackend& backend_for(const at::Tensor& t) { return DeviceBackends<ConvBackend>::of(t, "convolution"); }

// (N, O, *out) for an nd-dimensional convolution.
std::vector<int64_t> output_shape(const ConvGeometry& g, size_t nd) {
  std::vector<int64_t> shape{g.batch, g.out_channels};
  for (size_t d = 3 - nd; d < 3; ++d) shape.push_back(g.out_size[d]);
  return shape;
}

at::Tensor conv_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                        at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm) {
  // The ATen calls below (GEMMs, copies) are implementation details, not graph nodes.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeometry g = forward_geometry(input, weight, bias, stride, padding, padding_end, dilation, groups);
  const ConvBackend& be = backend_for(input);
  ConvAlgorithm algo = resolve_algorithm(algorithm, g, input, be.shifted_applies);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  const at::Tensor x = input.contiguous(), w = weight.contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->contiguous();
  const std::vector<int64_t> shape = output_shape(g, stride.size());
  if (g.no_output()) return at::empty(shape, x.options());
  // With no input channels the output is the bias alone: nothing to unfold or multiply.
  if (g.in_channels == 0) algo = ConvAlgorithm::Direct;
  if (algo == ConvAlgorithm::Im2col) return be.im2col_forward(x, w, b, g).view(shape);
  if (algo == ConvAlgorithm::Shifted) return be.shifted_forward(x, w, b, g).view(shape);
  at::Tensor out = at::empty(shape, x.options());
  be.direct_forward(x, w, b, g, out);
  return out;
}

at::Tensor conv_input_backward(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups, c10::string_view algorithm) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeometry g = input_backward_geometry(grad_output, weight, input_size, stride, padding, dilation, groups);
  const ConvBackend& be = backend_for(grad_output);
  const ConvAlgorithm algo = resolve_algorithm(algorithm, g, grad_output, be.shifted_applies);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const at::Tensor gout = grad_output.contiguous(), w = weight.contiguous();
  if (g.no_input_gradient()) return at::zeros(input_size, gout.options());
  if (algo == ConvAlgorithm::Im2col) return be.im2col_input_backward(gout, w, g, input_size);
  if (algo == ConvAlgorithm::Shifted) return be.shifted_input_backward(gout, w, g).view(input_size);
  at::Tensor gin = at::empty(input_size, gout.options());
  be.direct_input_backward(gout, w, g, gin);
  return gin;
}

at::Tensor conv_weight_backward(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                                int64_t groups, c10::string_view algorithm) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const ConvGeometry g = weight_backward_geometry(grad_output, input, weight_size, stride, padding, dilation, groups);
  const ConvBackend& be = backend_for(grad_output);
  const ConvAlgorithm algo = resolve_algorithm(algorithm, g, input, be.shifted_applies);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  const at::Tensor gout = grad_output.contiguous(), x = input.contiguous();
  if (g.no_weight_gradient()) return at::zeros(weight_size, gout.options());
  if (algo == ConvAlgorithm::Im2col) return be.im2col_weight_backward(gout, x, g, weight_size);
  if (algo == ConvAlgorithm::Shifted) return be.shifted_weight_backward(gout, x, g).view(weight_size);
  at::Tensor gw = at::empty(weight_size, gout.options());
  be.direct_weight_backward(gout, x, g, gw);
  return gw;
}

}  // namespace

void register_conv_ops(torch::Library& m, const ConvBackend& backend) {
  DeviceBackends<ConvBackend>::add(backend);
  m.impl("conv_forward", TORCH_FN(conv_forward));
  m.impl("conv_input_backward", TORCH_FN(conv_input_backward));
  m.impl("conv_weight_backward", TORCH_FN(conv_weight_backward));
}

}  // namespace tco
