// Launchers of the CUDA kernels of the local family (defined in local_cuda.cu).
//
// Kept free of torch headers so that local_cuda.cu compiles in seconds: the kernels take raw
// pointers, a LocalGeometry and a stream; local_cuda_ops.cpp turns tensors into these
// arguments.
//
// Layouts (all contiguous): input and grad_input (batch, in_channels, D, H, W); output and
// grad_output (batch, out_channels, oD, oH, oW); weight (cells, out_channels, in_channels,
// kD, kH, kW) with cells = grid[0] * grid[1] * grid[2] (the leading grid dimensions of the
// op's weight, flattened); bias (out_channels) or (out_channels, oD, oH, oW). 1-d and 2-d
// convolutions use sizes of 1 in the leading spatial dimensions, as ConvGeometry does.
//
// Every launcher writes every element of its result, returns the launch status
// (cudaGetLastError()), and launches nothing when there is no element to compute.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../cuda_dtype.h"

#include "local_geometry.h"

namespace tco::cuda_local {

// Element type of the tensors. Float16 and BFloat16 accumulate in float32.
using DType = ::tco::CudaDType;

// output = local convolution of input with weight, plus bias (null for none; per output
// channel, or per channel and position when bias_per_position).
cudaError_t forward(DType dtype, const LocalGeometry& g, const void* input, const void* weight,
                    const void* bias, bool bias_per_position, void* output, cudaStream_t stream);

// grad_input = for every input element, the sum over the (position, tap) pairs that read
// it and the output channels of weight[cell(position)] * grad_output.
cudaError_t input_backward(DType dtype, const LocalGeometry& g, const void* grad_output,
                           const void* weight, void* grad_input, cudaStream_t stream);

// grad_weight = for every cell, the correlation of input with grad_output over the cell's
// positions and the batch.
cudaError_t weight_backward(DType dtype, const LocalGeometry& g, const void* grad_output,
                            const void* input, void* grad_weight, cudaStream_t stream);

}  // namespace tco::cuda_local
