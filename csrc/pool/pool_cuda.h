// Launchers of the CUDA kernels of the pool family (defined in pool_cuda.cu).
//
// Kept free of torch headers so that pool_cuda.cu compiles in about a second: the kernels
// take raw pointers, a PoolGeometry and a stream; pool_cuda_ops.cpp turns tensors into these
// arguments.
//
// Layouts (all contiguous): input and grad_input (planes, D, H, W); output, grad_output and
// indices (planes, oD, oH, oW). 1-d and 2-d pooling use sizes of 1 in the leading spatial
// dimensions, as PoolGeometry does.
//
// Every launcher returns the launch status (cudaGetLastError()); it launches nothing, and
// returns cudaSuccess, when there is no element to compute.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../cuda_dtype.h"

#include "pool_geometry.h"

namespace tco::cuda_pool {

// Element type of the tensors. Float16 and BFloat16 compute in float32.
using DType = ::tco::CudaDType;

// Max (minimum = false) or min over each window (regular or adaptive, from g.adaptive):
// output values and the flat index of the winner within its input plane (int64). Ties keep
// the first in scan order; a NaN wins, a later NaN replacing an earlier one (torch's rule).
cudaError_t extreme_forward(DType dtype, const PoolGeometry& g, bool minimum, const void* input,
                            void* output, int64_t* indices, cudaStream_t stream);

// grad_acc (planes, in_plane) of the accumulation type (float; double for Double), zeroed by
// the caller, receives grad_output added at the indices (atomically).
cudaError_t scatter_add(DType dtype, const PoolGeometry& g, const void* grad_output,
                        const int64_t* indices, void* grad_acc, cudaStream_t stream);

// Window sums: avg (lp = false) -> sum / divisor; lp -> (sum(x^p) / divisor * kernel_volume)^(1/p).
cudaError_t sum_forward(DType dtype, const PoolGeometry& g, bool lp, double norm_type,
                        const void* input, void* output, cudaStream_t stream);

// Input gradient of the window sums: first the per-output coefficient (accumulation type,
// planes * out_plane entries, scratch given by the caller), then one thread per input
// element gathers the coefficients of the windows it lies in. `input` is needed for lp only.
cudaError_t sum_backward(DType dtype, const PoolGeometry& g, bool lp, double norm_type,
                         const void* grad_output, const void* input, void* coef_scratch,
                         void* grad_input, cudaStream_t stream);

}  // namespace tco::cuda_pool
