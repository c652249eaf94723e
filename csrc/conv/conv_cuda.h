// Launchers of the CUDA kernels of the conv family (defined in conv_cuda.cu).
//
// Kept free of torch headers so that conv_cuda.cu compiles in about a second: the kernels
// take raw pointers, a ConvGeometry and a stream; conv_cuda_ops.cpp turns tensors into
// these arguments.
//
// Layouts (all contiguous): input and grad_input (batch, in_channels, D, H, W); output and
// grad_output (batch, out_channels, oD, oH, oW); weight (out_channels, in_channels / groups,
// kD, kH, kW); bias (out_channels). 1-d and 2-d convolutions use sizes of 1 in the leading
// spatial dimensions, as ConvGeometry does.
//
// Every launcher returns the launch status (cudaGetLastError()); it launches nothing, and
// returns cudaSuccess, when there is no element to compute.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../cuda_dtype.h"

#include "conv_geometry.h"
#include "conv_winograd.h"

namespace tco::cuda_conv {

// Element type of the tensors. Float16 and BFloat16 accumulate in float32; so do their
// im2col buffers (see `im2col`).
using DType = ::tco::CudaDType;

// ---- direct algorithm ----

// output = conv(input, weight) + bias. `bias` may be null.
cudaError_t direct_forward(DType dtype, const ConvGeometry& g, const void* input,
                           const void* weight, const void* bias, void* output,
                           cudaStream_t stream);

// grad_input = the transposed-kernel convolution of grad_output. Writes every element.
cudaError_t direct_input_backward(DType dtype, const ConvGeometry& g, const void* grad_output,
                                  const void* weight, void* grad_input, cudaStream_t stream);

// grad_weight = the correlation of input with grad_output, summed over the batch. Writes
// every element.
cudaError_t direct_weight_backward(DType dtype, const ConvGeometry& g, const void* grad_output,
                                   const void* input, void* grad_weight, cudaStream_t stream);

// ---- im2col algorithm ----
//
// The column matrix of `g.batch` samples (pass a geometry whose batch is the size of the
// chunk, and pointers to the chunk's first sample) has in_channels * kernel_volume rows and
// batch * out_plane columns, contiguous: element (c * kernel_volume + tap, s * out_plane + o)
// is input channel c of sample s at the position that kernel tap `tap` of output position
// `o` reads (zero in the padding). Rows of group `grp` are the block
// [grp * col_rows(), (grp + 1) * col_rows()), so the matrix viewed as
// (groups, col_rows(), batch * out_plane) feeds one batched GEMM over the groups.
//
// Its element type is the compute type: float for Half and BFloat16, the input's type
// otherwise.

cudaError_t im2col(DType dtype, const ConvGeometry& g, const void* input, void* col,
                   cudaStream_t stream);

// The adjoint of im2col: grad_input (of dtype, g.batch samples) receives, for every input
// element, the sum of the column entries that im2col would have copied it into. Writes every
// element (it overwrites, it does not add).
cudaError_t col2im(DType dtype, const ConvGeometry& g, const void* col, void* grad_input,
                   cudaStream_t stream);

// ---- Winograd (the plan and the layouts of U, V and M: conv_winograd.h) ----
// U, V and M hold the compute type. Each launcher covers the g.batch samples at its pointers.

// U (groups, alpha^2, O/groups, C/groups) from the weight.
cudaError_t winograd_weight_transform(DType dtype, const ConvGeometry& g, const WinogradPlan& p, const void* weight,
                                      void* u, cudaStream_t stream);

// V (groups, alpha^2, C/groups, tiles) from the input.
cudaError_t winograd_input_transform(DType dtype, const ConvGeometry& g, const WinogradPlan& p, const void* input,
                                     void* v, cudaStream_t stream);

// output = the output transform of M (groups, alpha^2, O/groups, tiles) + bias (may be null);
// writes every element.
cudaError_t winograd_output_transform(DType dtype, const ConvGeometry& g, const WinogradPlan& p, const void* m,
                                      const void* bias, void* output, cudaStream_t stream);

}  // namespace tco::cuda_conv
