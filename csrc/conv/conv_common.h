// Argument checks and geometry construction shared by the CPU and CUDA implementations of
// the conv ops, so that both devices reject bad input with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>

#include "conv_geometry.h"

namespace tco {

enum class ConvAlgorithm { Direct, Im2col };

// Parses "direct" / "im2col" / "auto" and resolves "auto" for the given geometry.
// The "auto" rule: the direct kernel when each group sees at most `kDirectMaxInPerGroup`
// input channels (depthwise and near-depthwise convolutions, where a GEMM has too little
// depth to pay for the unfolded copy), im2col + GEMM otherwise.
ConvAlgorithm resolve_algorithm(std::string_view algorithm, const ConvGeometry& g);
constexpr int64_t kDirectMaxInPerGroup = 4;

ConvGeometry forward_geometry(const at::Tensor& input, const at::Tensor& weight,
                              const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                              at::IntArrayRef padding, at::IntArrayRef padding_end,
                              at::IntArrayRef dilation, int64_t groups);

ConvGeometry input_backward_geometry(const at::Tensor& grad_output, const at::Tensor& weight,
                                     at::IntArrayRef input_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation,
                                     int64_t groups);

ConvGeometry weight_backward_geometry(const at::Tensor& grad_output, const at::Tensor& input,
                                      at::IntArrayRef weight_size, at::IntArrayRef stride,
                                      at::IntArrayRef padding, at::IntArrayRef dilation,
                                      int64_t groups);

}  // namespace tco
