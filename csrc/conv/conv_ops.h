// The ops of the conv family, once for every device. conv_ops.cpp holds each op's entry: the
// argument checks and geometry (conv_common.cpp), the algorithm, the device guard, the empty
// cases, the output allocation of the direct kernels, and the shifted-GEMM algorithm (ATen ops
// only, conv_shifted.cpp). A device backend holds the direct kernels and the im2col + GEMM
// algorithm (conv_cpu.cpp, conv_cuda_ops.cpp); each device registers the ops for its dispatch
// key with register_conv_ops(m, its backend).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <torch/library.h>

#include <optional>

#include "conv_geometry.h"

namespace tco {

// Tensors come contiguous; none is empty (the entries answer those cases). The direct passes
// write every element of the output the entry allocated; the im2col passes return the result
// (N, O, out_plane) / input_size / weight_size, choosing their own buffers and compute type.
struct ConvBackend {
  c10::DeviceType device;
  void (*direct_forward)(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                         const ConvGeometry& g, const at::Tensor& output);
  void (*direct_input_backward)(const at::Tensor& grad_output, const at::Tensor& weight, const ConvGeometry& g,
                                const at::Tensor& grad_input);
  void (*direct_weight_backward)(const at::Tensor& grad_output, const at::Tensor& input, const ConvGeometry& g,
                                 const at::Tensor& grad_weight);
  at::Tensor (*im2col_forward)(const at::Tensor& input, const at::Tensor& weight,
                               const std::optional<at::Tensor>& bias, const ConvGeometry& g);
  at::Tensor (*im2col_input_backward)(const at::Tensor& grad_output, const at::Tensor& weight, const ConvGeometry& g,
                                      at::IntArrayRef input_size);
  at::Tensor (*im2col_weight_backward)(const at::Tensor& grad_output, const at::Tensor& input, const ConvGeometry& g,
                                       at::IntArrayRef weight_size);
};

// Registers the family's ops for the library block `m` (the backend's dispatch key), their
// entries running the passes of `backend`.
void register_conv_ops(torch::Library& m, const ConvBackend& backend);

}  // namespace tco
