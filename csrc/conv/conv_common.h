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
// The "auto" rule: the direct kernel when each group sees one input channel (depthwise
// convolutions and their channel multipliers), where a GEMM would have the depth of one
// kernel only and the unfolded copy costs more than it saves; im2col + GEMM otherwise.
// Measured on the benchmark shapes (benchmarks/bench_conv.py): with 3 input channels and a
// 5x5 kernel, im2col is already about 3x faster than direct.
ConvAlgorithm resolve_algorithm(std::string_view algorithm, const ConvGeometry& g);
constexpr int64_t kDirectMaxInPerGroup = 1;

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
