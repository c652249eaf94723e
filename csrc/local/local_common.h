// Argument checks and geometry construction shared by the CPU and CUDA implementations of the
// local ops (local_forward, local_input_backward, local_weight_backward), so that both devices
// reject bad input with the same messages.
//
// Layouts: input (batch, in_channels, *spatial); weight (*grid, out_channels, in_channels,
// *kernel) where grid is the tile size (tiled) or the output size (unshared); bias
// (out_channels) or (out_channels, *output_size); output (batch, out_channels, *output_size).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>

#include "local_geometry.h"

namespace tco {

LocalGeometry local_forward_geometry(const at::Tensor& input, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef padding_end,
                                     at::IntArrayRef dilation);

LocalGeometry local_input_backward_geometry(const at::Tensor& grad_output, const at::Tensor& weight,
                                            at::IntArrayRef input_size, at::IntArrayRef stride,
                                            at::IntArrayRef padding, at::IntArrayRef dilation);

LocalGeometry local_weight_backward_geometry(const at::Tensor& grad_output, const at::Tensor& input,
                                             at::IntArrayRef weight_size, at::IntArrayRef stride,
                                             at::IntArrayRef padding, at::IntArrayRef dilation);

// Whether `bias` holds one value per output channel and position (rather than per channel).
bool bias_per_position(const at::Tensor& bias);

}  // namespace tco
