// Launchers of the CUDA kernels of the pool family: window and adaptive pooling (pool_cuda.cu),
// k-max (kmax_pool_cuda.cu), Gaussian (gaussian_pool_cuda.cu) and stochastic pooling
// (stochastic_pool_cuda.cu).
//
// Kept free of torch headers so that the .cu files compile quickly: the kernels take raw
// pointers, a geometry and a stream; pool_cuda_ops.cpp (the CUDA backend) turns tensors into
// these arguments.
//
// Layouts (all contiguous): input and grad_input (planes, D, H, W); output, grad_output,
// indices and uniform (planes, oD, oH, oW). 1-d and 2-d pooling use sizes of 1 in the leading
// spatial dimensions, as PoolGeometry does. k-max: input and grad_input (outer, length, inner);
// values, positions and grad_output (outer, k, inner) (KmaxShape in kmax_pool.h).
//
// Every launcher returns the launch status (cudaGetLastError()); it launches nothing, and
// returns cudaSuccess, when there is no element to compute.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../cuda_dtype.h"
#include "kmax_pool.h"
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

// ---- k-max pooling ----

// One block per row: the k largest values in their original order and their positions along
// the row. The set is the one torch.topk selects on CUDA: its radix keys (kmax::radix_key, so
// -0.0 ranks below +0.0), all elements above the k-th largest key, then as many copies of
// that key as are needed, the first ones in row order (topk's gather order). Rows must have
// fewer than 2^31 elements (the glue checks).
cudaError_t kmax_forward(DType dtype, const KmaxShape& s, const void* input, void* values, int64_t* positions,
                         cudaStream_t stream);

// grad_input, zeroed by the caller, receives grad_output at the positions (distinct within a
// row, so plain stores). Positions outside [0, length) are skipped.
cudaError_t kmax_backward(DType dtype, const KmaxShape& s, const void* grad_output, const int64_t* positions,
                          void* grad_input, cudaStream_t stream);

// ---- Gaussian pooling: `weights` is the device copy of gaussian_weights (gaussian_pool.h) in
// the accumulation type (float; double for Double). ----

// One thread per output: the weighted sum over its window.
cudaError_t gaussian_forward(DType dtype, const PoolGeometry& g, const void* weights, const void* input,
                             void* output, cudaStream_t stream);

// One thread per input element: the weighted sum of grad_output over the windows that
// contain it (a gather, deterministic).
cudaError_t gaussian_backward(DType dtype, const PoolGeometry& g, const void* weights, const void* grad_output,
                              void* grad_input, cudaStream_t stream);

// ---- stochastic pooling ----

// Training: per window, the first element whose cumulative sum exceeds u * (window sum)
// (the last positive one if rounding leaves none; the first element of an all-zero window).
cudaError_t stochastic_train(DType dtype, const PoolGeometry& g, const void* input, const void* uniform,
                             void* output, int64_t* indices, cudaStream_t stream);

// Eval: sum(x^2) / sum(x) per window (0 where sum(x) = 0).
cudaError_t stochastic_eval(DType dtype, const PoolGeometry& g, const void* input, void* output,
                            cudaStream_t stream);

// Eval gradient: per output its WindowGrad (stochastic_pool.h: three numbers of the
// accumulation type, 3 * planes * out_plane entries of scratch given by the caller), then one
// thread per input element sums their values at x_i over the windows that contain it.
cudaError_t stochastic_eval_backward(DType dtype, const PoolGeometry& g, const void* grad_output, const void* input,
                                     void* coef_scratch, void* grad_input, cudaStream_t stream);

}  // namespace tco::cuda_pool
