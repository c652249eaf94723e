// Launchers of the CUDA kernels of the norm family (defined in norm_cuda.cu): the passes of a
// NormBackend (norm_backend.h) on raw pointers. Free of torch headers so that norm_cuda.cu
// compiles quickly; norm_cuda_ops.cpp turns tensors into these arguments.
//
// Data (x, dy, y, dx) are contiguous R x L matrices of `dtype`; statistics, coefficients and
// sums are contiguous arrays of the compute type (float for Float, Half and BFloat16, double
// for Double), one entry per group: a row (Planar, length R) or a column (Interleaved,
// length L). Sizes and indices are 64-bit.
//
// Reductions (moments, grad_sums, the layer norm passes) split long groups over several
// blocks whose partial results go to a scratch buffer given by the caller (`workspace`, of
// the compute type, at least *_workspace(...) elements; may be null when that is 0), then a
// second kernel combines them in a fixed order: every result is deterministic.
//
// Every launcher returns the launch status (cudaGetLastError()); it launches nothing, and
// returns cudaSuccess, when there is no output element to write. A group with no element
// gets a NaN mean and variance (moments, layer norm) or zero sums (grad_sums, the weight and
// bias gradients).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "../cuda_dtype.h"

namespace tco::cuda_norm {

// Element type of the data. Float16 and BFloat16 compute in float32.
using DType = ::tco::CudaDType;

// Which way a group runs through the matrix (NormLayout of norm_backend.h).
enum class Layout { Planar, Interleaved };

// Compute-type elements of workspace that each reduction needs (0: none).
int64_t moments_workspace(Layout layout, int64_t R, int64_t L);
int64_t grad_sums_workspace(Layout layout, int64_t R, int64_t L);
int64_t layer_norm_forward_workspace(int64_t M, int64_t K);
int64_t layer_norm_backward_workspace(int64_t M, int64_t K);

// Mean and biased variance of each group.
cudaError_t moments(DType dtype, Layout layout, int64_t R, int64_t L, const void* x, void* mean, void* var,
                    void* workspace, cudaStream_t stream);

// y = x * scale[group] + shift[group].
cudaError_t affine(DType dtype, Layout layout, int64_t R, int64_t L, const void* x, const void* scale,
                   const void* shift, void* y, cudaStream_t stream);

// Per group: sum_dy = sum of dy, sum_dy_xmu = sum of dy * (x - mean[group]).
cudaError_t grad_sums(DType dtype, Layout layout, int64_t R, int64_t L, const void* dy, const void* x,
                      const void* mean, void* sum_dy, void* sum_dy_xmu, void* workspace, cudaStream_t stream);

// dx = dy * a[group] + x * b[group] + c[group]; with b null, dx = dy * a and x is not read
// (c null counts as zeros).
cudaError_t linear_grad(DType dtype, Layout layout, int64_t R, int64_t L, const void* dy, const void* x,
                        const void* a, const void* b, const void* c, void* dx, cudaStream_t stream);

// Layer norm of the M rows of x (M x K): mean and rstd = 1 / sqrt(var + eps) per row and
// y = (x - mean) * rstd * weight[j] + bias[j]; weight and bias (K) may be null (1 and 0).
cudaError_t layer_norm_forward(DType dtype, int64_t M, int64_t K, const void* x, const void* weight,
                               const void* bias, double eps, void* y, void* mean, void* rstd, void* workspace,
                               cudaStream_t stream);

// Its gradients: dx (M x K), grad_weight[j] = sum over rows of dy * (x - mean) * rstd and
// grad_bias[j] = sum of dy (K each; either may be null, not computed). weight may be null.
cudaError_t layer_norm_backward(DType dtype, int64_t M, int64_t K, const void* dy, const void* x,
                                const void* mean, const void* rstd, const void* weight, void* dx,
                                void* grad_weight, void* grad_bias, void* workspace, cudaStream_t stream);

}  // namespace tco::cuda_norm
