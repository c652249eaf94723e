// Shared by the families' CUDA glue (*_cuda_ops.cpp, CUDA builds only): the launchers'
// element type of a tensor, and the stream to launch on.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>

#include "cuda_dtype.h"

namespace tco {

// The argument checks of every op have rejected other dtypes already; `op` names the op
// should one slip through.
inline CudaDType cuda_dtype_of(at::ScalarType t, const char* op = "cnn_ops") {
  switch (t) {
    case at::kFloat: return CudaDType::Float;
    case at::kDouble: return CudaDType::Double;
    case at::kHalf: return CudaDType::Half;
    case at::kBFloat16: return CudaDType::BFloat16;
    default: TORCH_CHECK(false, op, " (CUDA): unsupported dtype ", t);
  }
}

inline cudaStream_t current_cuda_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

}  // namespace tco
