// Shared by the pool family's CUDA glue (*_cuda_ops.cpp, CUDA builds only): the element type
// of a tensor for the torch-free launchers, and the stream to launch on.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include "pool_cuda.h"

namespace tco::cuda_pool {

// The launchers' DType of `t` (the argument checks in pool_common.cpp have already rejected
// other dtypes; `op` names the op if one slips through).
inline DType dtype_of(at::ScalarType t, const char* op) {
  switch (t) {
    case at::kFloat: return DType::Float;
    case at::kDouble: return DType::Double;
    case at::kHalf: return DType::Half;
    case at::kBFloat16: return DType::BFloat16;
    default: TORCH_CHECK(false, "cnn_ops.", op, " (CUDA): unsupported dtype ", t);
  }
}

inline cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace tco::cuda_pool
