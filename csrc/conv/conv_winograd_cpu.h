// The Winograd pass of the CPU backend (conv_winograd_cpu.cpp; the plan: conv_winograd.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "conv_winograd.h"

namespace tco {

// output = conv(input, weight) + bias for g (winograd_applies) with F(tile x tile, 3 x 3),
// as (N, O, 1, oH, oW); std::nullopt where an output is infinite or NaN: Winograd's
// transforms mix every input of a tile into every output of it, so the caller recomputes
// such a result the direct way (NaN and infinity then land where torch puts them).
std::optional<at::Tensor> winograd_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                                               int tile);

// The input gradient of the same convolution, (N, C, 1, H, W): the forward pass of the
// transposed problem (winograd_input_gradient_geometry), reading `weight` (the forward's)
// transposed and rotated in place; std::nullopt as above.
std::optional<at::Tensor> winograd_input_backward_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                                      const ConvGeometry& g, int tile);

// The weight gradient of the same convolution, (O, C / groups, 1, kH, kW): Winograd's
// transforms of the input and of grad_output, one GEMM per transformed element over the
// tiles, and the adjoint of the weight transform; std::nullopt where ATen's weight gradient
// is the faster (winograd_weight_gradient_pays) and where a value is infinite or NaN: the
// caller then runs ATen's.
std::optional<at::Tensor> winograd_weight_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                       const ConvGeometry& g, int tile);

}  // namespace tco
