// Host emulation (tests/cuda_emulation): CUDA status checks, with the emulation's message
// (which names the kernel, the block and what went wrong).
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#define C10_CUDA_CHECK(EXPR)                                                                      \
  do {                                                                                            \
    const cudaError_t tco_emu_status = (EXPR);                                                   \
    TORCH_CHECK(tco_emu_status == cudaSuccess, "CUDA error (host emulation): ", cudaGetErrorName(tco_emu_status), \
                ": ", cudaGetErrorString(tco_emu_status));                                        \
  } while (0)

#define C10_CUDA_KERNEL_LAUNCH_CHECK() C10_CUDA_CHECK(cudaGetLastError())
