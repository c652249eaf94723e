// Argument checks and geometry construction shared by the CPU and CUDA implementations of
// the conv ops, so that both devices reject bad input with the same messages.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <optional>
#include <string>
#include <string_view>

#include "../checks.h"
#include "../compute_type.h"
#include "conv_geometry.h"

namespace tco {

// Helpers of the argument checks, shared with the families built on ConvGeometry (local).
// `op` prefixes every message ("cnn_ops.conv", ...).

// t is float32, float64, float16 or bfloat16.
void check_dtype(const at::Tensor& t, const char* name, const char* op = "cnn_ops.conv");
// a and b have the same dtype and device.
void check_same_kind(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                     const char* b_name, const char* op = "cnn_ops.conv");
// Checks the per-dimension arguments (one entry each per spatial dimension, 1 to 3 of them)
// and fills g's stride, pad, dilation and groups; 1-d and 2-d map onto the trailing dimensions.
// The output size along spatial dimension d (the i-th of the input) of a forward convolution
// of c.in_size[d] positions padded by (c.pad[d], pad_end), for c's kernel, stride and
// dilation: refused when the dilated kernel is larger than the padded input, with size
// arithmetic that refuses int64 overflow (torch refuses such sizes too). Convolution and
// tiled / unshared convolution share it.
int64_t forward_extent(const char* op, const ConvGeometry& c, int64_t d, int64_t i, int64_t pad_end,
                       at::IntArrayRef input_sizes);

// The backward ops take grad_output's spatial size as the output size (their trailing pad is
// implied by it): along dimension d it must be one that a forward convolution of c.in_size[d]
// positions gives for some trailing pad: at least one output, the last window reaching the
// input's last position, and no more outputs than the largest trailing pad of any padding mode
// ('full': dilation * (kernel - 1)) gives.
void check_backward_extent(const char* op, const ConvGeometry& c, int64_t d, int64_t i,
                           at::IntArrayRef grad_output_sizes, at::IntArrayRef input_sizes);

// Fills c's spatial input and output sizes for a forward op (forward_extent per dimension), the
// other fields set; padding_end has one entry per spatial dimension.
void fill_forward_extents(const char* op, ConvGeometry& c, const at::Tensor& input, at::IntArrayRef padding_end);

// The same for a backward op: grad_output's batch and channels must be c's, its spatial sizes
// become the output sizes (check_backward_extent), input_sizes gives the input's.
void fill_backward_extents(const char* op, ConvGeometry& c, const at::Tensor& grad_output,
                           at::IntArrayRef input_sizes);

void fill_spatial_args(ConvGeometry& g, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups, const char* op = "cnn_ops.conv");

enum class ConvAlgorithm { Direct, Im2col, Shifted };

// Parses "direct" / "im2col" / "shifted" / "auto" and resolves "auto" for the geometry.
// The "auto" rule:
//  * direct when each group sees one input channel (depthwise convolutions and their
//    channel multipliers): a GEMM would have the depth of one kernel only;
//  * where the device has it (the CPU), shifted (conv_shifted.h) for unit-stride kernels larger than 1x1 with at
//    least kShiftedMinInPerGroup input channels per group and kShiftedMinPlane outputs per
//    channel: one GEMM per tap of depth in_channels/groups, no unfolded copy (on small
//    planes the padded grid's extra columns cost more than the unfold saves);
//  * im2col + GEMM otherwise (strided convolutions, few channels, 1x1 kernels, which
//    read the input as it is).
// The thresholds come from the conv benchmark (python -m torch_cnn_ops bench conv) on a 2-core CPU (forward+backward):
// with 3 input channels and a 5x5 kernel im2col is about 3x faster than direct and 2x
// faster than shifted; with 64 channels on 56x56 shifted is about 10% faster than im2col,
// on 28x28 they tie, on 14x14 with 256 channels im2col is 10% faster.
// An explicit "shifted" with a stride other than 1 is an error; on a device without the
// shifted algorithm (`shifted_applies` nullptr) it runs as im2col.
// `like` is the tensor the op computes on: its dtype enters the rule.
ConvAlgorithm resolve_algorithm(std::string_view algorithm, const ConvGeometry& g, const at::Tensor& like,
                                bool (*shifted_applies)(const ConvGeometry&, int64_t));
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
