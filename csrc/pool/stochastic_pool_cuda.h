// Launchers of the CUDA kernels of stochastic pooling (defined in stochastic_pool_cuda.cu),
// free of torch headers like pool_cuda.h. Layouts (contiguous): input and grad_input
// (planes, D, H, W); uniform, output, indices and grad_output (planes, oD, oH, oW).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "pool_cuda.h"
#include "pool_geometry.h"

namespace tco::cuda_pool {

// Training: per window, the first element whose cumulative sum exceeds u * (window sum)
// (the last positive one if rounding leaves none; the first element of an all-zero window).
cudaError_t stochastic_train(DType dtype, const PoolGeometry& g, const void* input, const void* uniform,
                             void* output, int64_t* indices, cudaStream_t stream);

// Eval: sum(x^2) / sum(x) per window (0 where sum(x) = 0).
cudaError_t stochastic_eval(DType dtype, const PoolGeometry& g, const void* input, void* output,
                            cudaStream_t stream);

// Eval gradient: per output the coefficients a = 2 gy / S1 and b = gy S2 / S1^2 (accumulation
// type, 2 * planes * out_plane entries of scratch given by the caller), then one thread per
// input element gathers x_i * sum(a) - sum(b) over the windows that contain it.
cudaError_t stochastic_eval_backward(DType dtype, const PoolGeometry& g, const void* grad_output, const void* input,
                                     void* coef_scratch, void* grad_input, cudaStream_t stream);

}  // namespace tco::cuda_pool
