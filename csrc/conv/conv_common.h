// Argument checks and geometry construction shared by the CPU and CUDA implementations of
// the conv ops, so that both devices reject bad input with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string_view>

#include "conv_geometry.h"

namespace tco {

enum class ConvAlgorithm { Direct, Im2col, Shifted };

// Parses "direct" / "im2col" / "shifted" / "auto" and resolves "auto" for the geometry.
// The "auto" rule:
//  * direct when each group sees one input channel (depthwise convolutions and their
//    channel multipliers): a GEMM would have the depth of one kernel only;
//  * on the CPU, shifted (conv_shifted.h) for unit-stride kernels larger than 1x1 with at
//    least kShiftedMinInPerGroup input channels per group and kShiftedMinPlane outputs per
//    channel: one GEMM per tap of depth in_channels/groups, no unfolded copy (on small
//    planes the padded grid's extra columns cost more than the unfold saves);
//  * im2col + GEMM otherwise (strided convolutions, few channels, 1x1 kernels, which
//    read the input as it is).
// The thresholds come from benchmarks/bench_conv.py on a 2-core CPU (forward+backward):
// with 3 input channels and a 5x5 kernel im2col is about 3x faster than direct and 2x
// faster than shifted; with 64 channels on 56x56 shifted is about 10% faster than im2col,
// on 28x28 they tie, on 14x14 with 256 channels im2col is 10% faster.
// An explicit "shifted" with a stride other than 1 is an error.
// `like` is the tensor the op computes on: its device and dtype enter the rule.
ConvAlgorithm resolve_algorithm(std::string_view algorithm, const ConvGeometry& g, const at::Tensor& like);
constexpr int64_t kDirectMaxInPerGroup = 1;
constexpr int64_t kShiftedMinInPerGroup = 16;
constexpr int64_t kShiftedMinPlane = 256;

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
