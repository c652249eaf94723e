// The ops of the local family (tiled and unshared convolution), once for every device.
// local_ops.cpp holds each op's entry: the argument checks and geometry (local_common.cpp), the
// device guard and the empty cases. A device backend holds the passes over the data
// (local_cpu.cpp, local_cuda_ops.cpp); each device registers the ops for its dispatch key with
// register_local_ops(m, its backend).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <torch/library.h>

#include <optional>

#include "local_geometry.h"

namespace tco {

// The passes get the caller's tensors (they choose their layouts and compute type) and return
// the result of the given shape; no input or result is empty (the entries answer those cases).
struct LocalBackend {
  c10::DeviceType device;
  at::Tensor (*forward)(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        const LocalGeometry& g, at::IntArrayRef output_shape);
  at::Tensor (*input_backward)(const at::Tensor& grad_output, const at::Tensor& weight, const LocalGeometry& g,
                               at::IntArrayRef input_size);
  at::Tensor (*weight_backward)(const at::Tensor& grad_output, const at::Tensor& input, const LocalGeometry& g,
                                at::IntArrayRef weight_size);
};

void register_local_ops(torch::Library& m, const LocalBackend& backend);

}  // namespace tco
