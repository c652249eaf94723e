// Launchers of the CUDA kernels of Gaussian pooling (defined in gaussian_pool_cuda.cu), free
// of torch headers like pool_cuda.h. Layouts (contiguous): input and grad_input (planes, D,
// H, W); output and grad_output (planes, oD, oH, oW). `weights` is the device copy of
// gaussian_weights (gaussian_pool.h) in the accumulation type (float; double for Double).
#pragma once

#include <cuda_runtime_api.h>

#include "pool_cuda.h"
#include "pool_geometry.h"

namespace tco::cuda_pool {

// One thread per output: the weighted sum over its window.
cudaError_t gaussian_forward(DType dtype, const PoolGeometry& g, const void* weights, const void* input,
                             void* output, cudaStream_t stream);

// One thread per input element: the weighted sum of grad_output over the windows that
// contain it (a gather, deterministic).
cudaError_t gaussian_backward(DType dtype, const PoolGeometry& g, const void* weights, const void* grad_output,
                              void* grad_input, cudaStream_t stream);

}  // namespace tco::cuda_pool
