// Kernels with the bugs the host emulation must report (tests/test_cuda_emulation.py), and two
// correct ones as controls. Compiled only into the emulation: each is a launch that
// compute-sanitizer or the driver would flag on a GPU, or a wrong answer the emulation must show.

#include <cuda_runtime.h>

#include <cstring>

namespace {

__global__ void exit_before_barrier(float* out) {
  if (threadIdx.x == 5) return;
  __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void divergent_barriers(float* out) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void shuffle_with_exited_lane(float* out) {
  if (threadIdx.x == 3) return;
  out[threadIdx.x] = __shfl_down_sync(0xffffffffu, float(threadIdx.x), 1);
}

__global__ void shuffle_outside_mask(float* out) {
  if (threadIdx.x < 16) out[threadIdx.x] = __shfl_sync(0x0000ffffu, float(threadIdx.x), 20);
}

__global__ void shared_write_out_of_bounds(float* out) {
  __shared__ float cells[32];
  cells[threadIdx.x + 1] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = cells[threadIdx.x];
}

__global__ void shared_read_unwritten(float* out) {
  __shared__ float cells[32];
  if (threadIdx.x % 2 == 0) cells[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = cells[threadIdx.x];
}

// The classic warp reduction without __syncwarp between its steps: correct only where the lanes
// of a warp run in lock-step, which CUDA has not promised since Volta.
__global__ void lockstep_warp_sum(const float* in, float* out) {
  __shared__ float s[64];
  const unsigned t = threadIdx.x;
  s[t] = in[t];
  __syncthreads();
  if (t < 32) {
    s[t] += s[t + 32];
    s[t] += s[t + 16];
    s[t] += s[t + 8];
    s[t] += s[t + 4];
    s[t] += s[t + 2];
    s[t] += s[t + 1];
  }
  if (t == 0) out[0] = s[0];
}

// The same reduction written correctly: shuffles.
__global__ void shuffle_warp_sum(const float* in, float* out) {
  const unsigned t = threadIdx.x;
  __shared__ float s[2];
  float v = in[t];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (t % 32 == 0) s[t / 32] = v;
  __syncthreads();
  if (t == 0) out[0] = s[0] + s[1];
}

__global__ void __launch_bounds__(64) bounded_kernel(float* out) { out[threadIdx.x] = 1.0f; }

__global__ void large_shared(float* out) {
  __shared__ float cells[4096];  // 16 KiB, with 40 KiB of dynamic shared memory: over 48 KiB
  cells[threadIdx.x] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = cells[threadIdx.x];
}

}  // namespace

// Launches the canary `name` on `in` (64 floats) and `out` (64 floats); returns "" if the
// launch succeeded, else the emulation's message.
extern "C" const char* tco_emu_canary(const char* name, const float* in, float* out) {
  const auto is = [&](const char* n) { return std::strcmp(name, n) == 0; };
  if (is("exit_before_barrier")) exit_before_barrier<<<1, 32>>>(out);
  else if (is("divergent_barriers")) divergent_barriers<<<1, 32>>>(out);
  else if (is("shuffle_with_exited_lane")) shuffle_with_exited_lane<<<1, 32>>>(out);
  else if (is("shuffle_outside_mask")) shuffle_outside_mask<<<1, 32>>>(out);
  else if (is("shared_write_out_of_bounds")) shared_write_out_of_bounds<<<1, 32>>>(out);
  else if (is("shared_read_unwritten")) shared_read_unwritten<<<1, 32>>>(out);
  else if (is("lockstep_warp_sum")) lockstep_warp_sum<<<1, 64>>>(in, out);
  else if (is("shuffle_warp_sum")) shuffle_warp_sum<<<1, 64>>>(in, out);
  else if (is("too_many_threads")) bounded_kernel<<<1, 2048>>>(out);
  else if (is("over_launch_bounds")) bounded_kernel<<<1, 128>>>(out);
  else if (is("within_launch_bounds")) bounded_kernel<<<1, 64>>>(out);
  else if (is("too_much_shared")) large_shared<<<1, 32, 40 * 1024>>>(out);
  else return "unknown canary";
  const cudaError_t status = cudaGetLastError();
  return status == cudaSuccess ? "" : cudaGetErrorString(status);
}
