// The shifted-GEMM algorithm of the conv family, for unit-stride convolutions.
//
// With the input zero-padded once into P = Dp * Hp * Wp values per channel, the output
// computed on the padded grid ("wide" output, row length Wp instead of oW) is
//   Y_wide[:, j] = sum over taps t of  W_t @ X_pad[:, j + offset_t]
// where W_t is the (out x in) matrix of one kernel tap and offset_t = (kd*Hp + kh)*Wp + kw
// (times the dilation). X_pad[:, offset_t : offset_t + Lw] is an ordinary strided matrix
// (row stride P, unit column stride), so each tap is one GEMM on a pointer-shifted view:
// no unfolded copy of the input, kernel_volume times smaller than im2col's, and the
// columns that fall in the pad are cropped away afterwards. The two gradients are the
// adjoints, again one GEMM per tap:
//   grad X_pad[:, offset_t : offset_t + Lw] += W_t^T @ grad Y_wide
//   grad W_t = grad Y_wide @ X_pad[:, offset_t : offset_t + Lw]^T
// Written with ATen ops only, so the same code runs on every device; on the CPU the
// (sample, group) tasks run in parallel, each with single-threaded GEMMs and its own
// buffers (one padded input and one wide output per thread).
#pragma once

#include <ATen/core/Tensor.h>

#include "conv_geometry.h"

namespace tco {

// Whether the shifted algorithm applies: unit stride in every dimension and per-thread
// buffers of bounded size.
bool shifted_applies(const ConvGeometry& g, int64_t elem_size);

at::Tensor shifted_forward(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const ConvGeometry& g);
at::Tensor shifted_input_backward(const at::Tensor& grad_output, const at::Tensor& weight,
                                  const ConvGeometry& g);
at::Tensor shifted_weight_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                   const ConvGeometry& g);

}  // namespace tco
