// Launchers of the CUDA kernels of k-max pooling (defined in kmax_pool_cuda.cu), free of torch
// headers like pool_cuda.h. Layouts (contiguous): input and grad_input (outer, length, inner);
// values, positions and grad_output (outer, k, inner) (see KmaxShape in kmax_pool.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kmax_pool.h"
#include "pool_cuda.h"

namespace tco::cuda_pool {

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

}  // namespace tco::cuda_pool
