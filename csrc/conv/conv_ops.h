// The ops of the conv family, once for every device. conv_ops.cpp holds each op's entry: the
// argument checks and geometry (conv_common.cpp), the algorithm, the device guard, the empty
// cases, the output allocation of the direct kernels, the layout of the result (channels-last
// as torch's) and ATen's own convolution (algorithm "aten"). A device backend holds the direct
// kernels, the im2col + GEMM algorithm and, on the CPU, the shifted-GEMM algorithm
// (conv_cpu.cpp with conv_shifted.cpp, conv_cuda_ops.cpp); each device registers the ops for
// its dispatch key with register_conv_ops(m, its backend).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <torch/library.h>

#include <array>
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
  // The shifted algorithm (unit stride), where the device has one; nullptr elsewhere, where
  // an explicit 'shifted' runs as 'im2col' (the same GEMMs, unfolded), as it does where
  // shifted_applies is false.
  bool (*shifted_applies)(const ConvGeometry& g, int64_t elem_size);
  at::Tensor (*shifted_forward)(const at::Tensor& input, const at::Tensor& weight,
                                const std::optional<at::Tensor>& bias, const ConvGeometry& g);
  at::Tensor (*shifted_input_backward)(const at::Tensor& grad_output, const at::Tensor& weight, const ConvGeometry& g);
  at::Tensor (*shifted_weight_backward)(const at::Tensor& grad_output, const at::Tensor& input, const ConvGeometry& g);
  // Winograd's F(tile x tile, 3 x 3) forward (conv_winograd.h) for g where winograd_applies:
  // the result (N, O, out_plane), or std::nullopt where an output is infinite or NaN (the
  // entry then recomputes it with ATen's convolution, so that NaN and infinity land where
  // torch puts them: Winograd's transforms spread them over a tile). Where the device has no
  // winograd_input_backward, the input gradient runs it on the transposed problem.
  std::optional<at::Tensor> (*winograd_forward)(const at::Tensor& input, const at::Tensor& weight,
                                                const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                                                int tile);
  // Winograd's weight gradient, or std::nullopt where ATen's is faster or a value is infinite
  // or NaN (the entry then runs ATen's); nullptr where the device has none.
  std::optional<at::Tensor> (*winograd_weight_backward)(const at::Tensor& grad_output, const at::Tensor& input,
                                                        const ConvGeometry& g, int tile);
  // Winograd's input gradient from the forward's weight as it is (g: the forward's geometry),
  // std::nullopt as winograd_forward; nullptr where the device has none (the entry then runs
  // winograd_forward on the weight transposed and rotated).
  std::optional<at::Tensor> (*winograd_input_backward)(const at::Tensor& grad_output, const at::Tensor& weight,
                                                       const ConvGeometry& g, int tile);
};

// Registers the family's ops for the library block `m` (the backend's dispatch key), their
// entries running the passes of `backend`.
void register_conv_ops(torch::Library& m, const ConvBackend& backend);

// The gradients of a convolution marked in `wanted` (conv_input_backward's result, conv_weight_backward's
// and the bias's, grad_output summed per channel; undefined where not wanted) in one call of
// ATen's convolution_backward, where the wanted backward ops would run ATen's without an
// explicitly padded input; std::nullopt elsewhere (the caller runs the ops). For the autograd
// of conv_forward in plain eager code.
std::optional<std::array<at::Tensor, 3>> aten_convolution_gradients(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, c10::string_view algorithm,
    std::array<bool, 3> wanted);

}  // namespace tco
