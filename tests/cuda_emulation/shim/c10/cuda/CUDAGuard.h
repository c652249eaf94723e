// Host emulation (tests/cuda_emulation): the emulated kernels run on CPU tensors, which need no
// device guard.
#pragma once

#include <c10/core/Device.h>

namespace c10::cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};

}  // namespace c10::cuda
