// The entries of the local family's ops, once for every device (local_ops.h).

#include "local_ops.h"

#include <ATen/DeviceGuard.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/core/DeviceGuard.h>
#include <c10/util/Exception.h>

#include <vector>

#include "../device_backends.h"
#include "local_common.h"

namespace tco {
namespace {

const LocalBackend& backend_for(const at::Tensor& t) {
  return DeviceBackends<LocalBackend>::of(t, "tiled / unshared convolution");
}

at::Tensor local_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef padding_end,
                         at::IntArrayRef dilation) {
  // The ATen calls of the passes (copies, GEMMs) are implementation details, not graph nodes.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LocalGeometry g = local_forward_geometry(input, weight, bias, stride, padding, padding_end, dilation);
  const ConvGeometry& c = g.conv;
  const LocalBackend& be = backend_for(input);
  const c10::OptionalDeviceGuard guard(at::device_of(input));
  std::vector<int64_t> shape{c.batch, c.out_channels};
  for (size_t d = 3 - stride.size(); d < 3; ++d) shape.push_back(c.out_size[d]);
  if (c.no_output()) return at::empty(shape, input.options());
  return be.forward(input, weight, bias, g, shape);
}

at::Tensor local_input_backward(const at::Tensor& grad_output, const at::Tensor& weight, at::IntArrayRef input_size,
                                at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LocalGeometry g = local_input_backward_geometry(grad_output, weight, input_size, stride, padding, dilation);
  const LocalBackend& be = backend_for(grad_output);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  if (g.conv.no_input_gradient()) return at::zeros(input_size, grad_output.options());
  return be.input_backward(grad_output, weight, g, input_size);
}

at::Tensor local_weight_backward(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef weight_size,
                                 at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LocalGeometry g = local_weight_backward_geometry(grad_output, input, weight_size, stride, padding, dilation);
  const LocalBackend& be = backend_for(grad_output);
  const c10::OptionalDeviceGuard guard(at::device_of(grad_output));
  if (g.conv.no_weight_gradient()) return at::zeros(weight_size, grad_output.options());
  return be.weight_backward(grad_output, input, g, weight_size);
}

}  // namespace

void register_local_ops(torch::Library& m, const LocalBackend& backend) {
  DeviceBackends<LocalBackend>::add(backend);
  m.impl("local_forward", TORCH_FN(local_forward));
  m.impl("local_input_backward", TORCH_FN(local_input_backward));
  m.impl("local_weight_backward", TORCH_FN(local_weight_backward));
}

}  // namespace tco
