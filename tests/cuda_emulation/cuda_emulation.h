// Host emulation of the part of CUDA that the kernels in csrc/ use, so that the very same kernel
// sources run, with their glue, on CPU memory in the test suite. Included first by every kernel
// source that build.py generates from a .cu file; the test-only build (build.py) compiles them
// with the host compiler. Never part of the product.
//
// Emulated exactly: a launch runs its grid block by block (blockIdx, gridDim); the threads of a
// block run as cooperative fibers (threadIdx, blockDim) that switch only at __syncthreads,
// __syncwarp and the warp shuffles, so barriers and warp exchanges have their CUDA meaning and
// nothing holds by accident of ordering. Static and dynamic __shared__ memory is one allocation
// per block, poisoned (every byte 0xFF: NaN for floating types) before first use and fenced by
// poisoned red zones that are checked when the block ends. atomicAdd is atomic.
//
// Checked (an error of the launch, as compute-sanitizer or the driver would report it):
// launch configurations (zero or oversized grids and blocks, more threads than the kernel's
// __launch_bounds__, more than 48 KiB of shared memory); a thread that exits while others wait
// at a barrier, or that never reaches one the others reach; threads of a block waiting at
// different __syncthreads; a warp operation whose mask names an exited or absent lane, or whose
// lanes disagree on the mask; a shuffle that reads a lane outside its mask; writes outside a
// shared-memory allocation (found in the red zones).
//
// Not emulated: timing, occupancy, memory ordering and races between blocks (blocks run one after
// another), streams (every launch completes before it returns), global-memory bounds (build with
// AddressSanitizer for those), and every CUDA feature the kernels do not use.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

// The kernel sources are plain host code here: the execution-space keywords mean nothing.
#undef __global__
#undef __device__
#undef __host__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __launch_bounds__(...)

// The built-in variables of the running thread: set by the emulation before each fiber runs.
extern thread_local uint3 threadIdx;
extern thread_local uint3 blockIdx;
extern thread_local dim3 blockDim;
extern thread_local dim3 gridDim;
inline constexpr int warpSize = 32;

namespace tco_emu {

// ---- barriers and warp exchanges (emulation.cpp) ----
void sync_threads(const char* file, int line);
void sync_warp(unsigned mask, const char* file, int line);
enum class ShuffleKind { Index, Up, Down, Xor };
uint64_t shuffle(unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width, const char* file, int line);

template <typename T>
T shuffle_value(unsigned mask, T value, ShuffleKind kind, int arg, int width, const std::source_location& at) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "CUDA shuffles move at most 64 bits");
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = shuffle(mask, bits, kind, arg, width, at.file_name(), static_cast<int>(at.line()));
  std::memcpy(&value, &bits, sizeof(T));
  return value;
}

// ---- shared memory (emulation.cpp) ----
// The block's allocation for the __shared__ variable `name` declared at file:line with the type
// `tag` (one per declaration and instantiation, as CUDA allocates it), poisoned on first use.
void* shared_static(const void* tag, const char* name, const char* file, int line, size_t size, size_t align);
// The block's dynamic shared memory (the launch's byte count), poisoned.
void* shared_dynamic(const char* name, size_t align);

template <typename T>
struct TypeTag {
  static inline const char id = 0;
};
template <typename T>
T& shared_variable(const char* name, const char* file, int line) {
  return *static_cast<T*>(shared_static(&TypeTag<T>::id, name, file, line, sizeof(T), alignof(T)));
}
template <typename T>
T* shared_extern(const char* name, size_t align) {
  return static_cast<T*>(shared_dynamic(name, align));
}

// ---- launches (emulation.cpp) ----
struct Config {
  dim3 grid, block;
  size_t shared_bytes;
  cudaStream_t stream;
  Config(dim3 grid_, dim3 block_, size_t shared_bytes_ = 0, cudaStream_t stream_ = nullptr)
      : grid(grid_), block(block_), shared_bytes(shared_bytes_), stream(stream_) {}
};
// Runs `thread_body(context)` once for every thread of the grid; `max_threads` is the kernel's
// __launch_bounds__ (0: none). Errors become the launch's status (cudaGetLastError).
void run_grid(const Config& config, const char* kernel, const char* file, int max_threads,
              void (*thread_body)(void*), void* context);

// A launch `kernel<<<config>>>(args...)`: the arguments are evaluated once, as CUDA does, and
// every thread calls the kernel with its own copies of them.
template <typename Kernel, typename... Args>
void launch(const Config& config, const char* name, const char* file, int max_threads, Kernel kernel,
            Args&&... args) {
  struct Context {
    Kernel kernel;
    std::tuple<std::decay_t<Args>...> args;
  } context{kernel, {std::forward<Args>(args)...}};
  run_grid(config, name, file, max_threads, [](void* p) {
    Context& c = *static_cast<Context*>(p);
    std::apply([&](const auto&... a) { c.kernel(a...); }, c.args);
  }, &context);
}

template <typename T>
T atomic_add(T* address, T value) {
  return std::atomic_ref<T>(*address).fetch_add(value);
}

}  // namespace tco_emu

#define __syncthreads() ::tco_emu::sync_threads(__FILE__, __LINE__)
inline void __syncwarp(unsigned mask = 0xffffffffu,
                       const std::source_location at = std::source_location::current()) {
  ::tco_emu::sync_warp(mask, at.file_name(), static_cast<int>(at.line()));
}

template <typename T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = warpSize,
              const std::source_location at = std::source_location::current()) {
  return ::tco_emu::shuffle_value(mask, var, ::tco_emu::ShuffleKind::Index, src_lane, width, at);
}
template <typename T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                 const std::source_location at = std::source_location::current()) {
  return ::tco_emu::shuffle_value(mask, var, ::tco_emu::ShuffleKind::Up, static_cast<int>(delta), width, at);
}
template <typename T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize,
                   const std::source_location at = std::source_location::current()) {
  return ::tco_emu::shuffle_value(mask, var, ::tco_emu::ShuffleKind::Down, static_cast<int>(delta), width, at);
}
template <typename T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = warpSize,
                  const std::source_location at = std::source_location::current()) {
  return ::tco_emu::shuffle_value(mask, var, ::tco_emu::ShuffleKind::Xor, lane_mask, width, at);
}

inline float atomicAdd(float* address, float value) { return ::tco_emu::atomic_add(address, value); }
inline double atomicAdd(double* address, double value) { return ::tco_emu::atomic_add(address, value); }
inline int atomicAdd(int* address, int value) { return ::tco_emu::atomic_add(address, value); }
inline unsigned atomicAdd(unsigned* address, unsigned value) { return ::tco_emu::atomic_add(address, value); }
inline unsigned long long atomicAdd(unsigned long long* address, unsigned long long value) {
  return ::tco_emu::atomic_add(address, value);
}

// Device math the kernels call that the host library lacks or spells differently.
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
template <typename A, typename B, typename = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <typename A, typename B, typename = std::enable_if_t<std::is_integral_v<A> && std::is_integral_v<B>>>
std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
