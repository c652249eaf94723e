// Shared by the families' CUDA glue (*_cuda_ops.cpp, CUDA builds only): the launchers'
// element type of a tensor, the stream to launch on, and where the CUDA backends register.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/DeviceType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

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

// The device of the CUDA backends, and their registration block. The test suite's host
// emulation of the CUDA kernels (tests/cuda_emulation) builds this same glue with
// TCO_CUDA_EMULATION: there the backends serve CPU tensors in a namespace of their own, and the
// product's dispatch is untouched.
#ifdef TCO_CUDA_EMULATION
inline constexpr c10::DeviceType kCudaBackendDevice = c10::DeviceType::CPU;
#define TCO_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(cnn_ops_cuda_emulated, CPU, m)
#else
inline constexpr c10::DeviceType kCudaBackendDevice = c10::DeviceType::CUDA;
#define TCO_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(cnn_ops, CUDA, m)
#endif

}  // namespace tco
