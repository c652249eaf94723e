// The runtime of the host emulation of CUDA (cuda_emulation.h says what is emulated and
// checked): launches, the fibers that run a block's threads, barriers, warp exchanges, shared
// memory, the launch status, and a census of the kernels launched.

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "cuda_emulation.h"

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

namespace tco_emu {
namespace {

// ---- context switches ----
// A fiber's saved context is its stack pointer: the callee-saved registers, the x87 control
// word and MXCSR are pushed on its own stack. glibc's swapcontext would also save the signal
// mask with a system call at every switch, and kernels switch at every shuffle.
#if defined(__x86_64__)
extern "C" void tco_emu_switch(void** save_sp, void* load_sp);
extern "C" void tco_emu_fiber_start();
asm(R"(
  .text
  .globl tco_emu_switch
  .type tco_emu_switch, @function
tco_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size tco_emu_switch, .-tco_emu_switch

  .globl tco_emu_fiber_start
  .type tco_emu_fiber_start, @function
tco_emu_fiber_start:
  movq %r12, %rdi
  callq *%r13
  ud2
  .size tco_emu_fiber_start, .-tco_emu_fiber_start
)");
#endif

// A saved execution context, and the switch from one to another.
#if defined(__x86_64__)
struct Context {
  void* sp = nullptr;
};
void switch_context(Context& save, Context& load) { tco_emu_switch(&save.sp, load.sp); }
#else
struct Context {
  ucontext_t uc;
};
void switch_context(Context& save, Context& load) { swapcontext(&save.uc, &load.uc); }
#endif

struct Fiber;
void fiber_main(Fiber* fiber);

enum class State { Runnable, AtBarrier, AtWarp, Exited };

struct Fiber {
  char* stack = nullptr;
  Context context;
  // identity
  uint3 tid{};
  int linear = 0;
  State state = State::Runnable;
  // where it waits (barrier or warp operation)
  const char* file = nullptr;
  int line = 0;
  // its warp operation
  unsigned mask = 0;
  ShuffleKind kind = ShuffleKind::Index;
  bool is_shuffle = false;
  int arg = 0, width = 32;
  uint64_t value = 0, result = 0;
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr size_t kRedZone = 64;
constexpr size_t kSharedLimit = 48 * 1024;  // per block without the opt-in attribute
constexpr unsigned char kPoison = 0xFF;

struct SharedAllocation {
  const void* tag;
  const char* file;
  int line;
  const char* name;
  size_t offset, size;  // of the data in the arena; red zones before and after
};

// What one OS thread needs to run blocks: fibers with their stacks, and the block's state.
struct Executor {
  std::vector<Fiber> fibers;
  int threads = 0;  // of the current block
  Fiber* current = nullptr;
  Context scheduler;
  void (*body)(void*) = nullptr;
  void* context = nullptr;
  // shared memory of the current block
  std::vector<unsigned char> arena;
  size_t arena_used = 0;
  std::vector<SharedAllocation> shared;
  size_t static_bytes = 0, dynamic_bytes = 0;
  void* dynamic = nullptr;
  // the first error of the current block
  std::string error;

  ~Executor() {
    for (Fiber& f : fibers)
      if (f.stack) munmap(f.stack, kStackBytes);
  }

  void fail(const std::string& message) {
    if (error.empty()) error = message;
  }

  // Hands control back to the scheduler; returns when the scheduler resumes this fiber.
  void yield() { switch_context(current->context, scheduler); }

  void resume(Fiber& f) {
    current = &f;
    threadIdx = f.tid;
    switch_context(scheduler, f.context);
    current = nullptr;
  }

  void start(Fiber& f) {
    if (!f.stack) {
      // A guard page below the stack turns an overflow into a fault rather than corruption.
      void* p = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        std::perror("tco_emu: stack");
        std::abort();
      }
      mprotect(p, static_cast<size_t>(sysconf(_SC_PAGESIZE)), PROT_NONE);
      f.stack = static_cast<char*>(p);
    }
#if defined(__x86_64__)
    // The frame tco_emu_switch pops: MXCSR and x87 control word, r15..r12, rbx, rbp, and the
    // return address (the start routine), which then finds the fiber in r12 and main in r13.
    uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack) + kStackBytes - 64) & ~uintptr_t(15);
    auto* slot = reinterpret_cast<uint64_t*>(top);
    *--slot = reinterpret_cast<uint64_t>(&tco_emu_fiber_start);
    *--slot = 0;                                          // rbp
    *--slot = 0;                                          // rbx
    *--slot = reinterpret_cast<uint64_t>(&f);             // r12
    *--slot = reinterpret_cast<uint64_t>(&fiber_main);    // r13
    *--slot = 0;                                          // r14
    *--slot = 0;                                          // r15
    --slot;
    uint32_t control[2];
    asm volatile("stmxcsr %0" : "=m"(control[0]));
    asm volatile("fnstcw %0" : "=m"(control[1]));
    std::memcpy(slot, control, sizeof(control));
    f.context.sp = slot;
#else
    getcontext(&f.context.uc);
    f.context.uc.uc_stack.ss_sp = f.stack;
    f.context.uc.uc_stack.ss_size = kStackBytes;
    f.context.uc.uc_link = nullptr;
    makecontext(&f.context.uc, reinterpret_cast<void (*)()>(&fiber_main), 1, &f);
#endif
  }

  // ---- shared memory ----
  void* allocate(size_t size, size_t align) {
    align = std::max<size_t>(align, 16);
    size_t offset = (arena_used + kRedZone + align - 1) / align * align;
    const size_t end = offset + size + kRedZone;
    if (end > arena.size()) {
      // Allocations never move once handed out: the arena is sized for the largest block.
      fail("shared memory: the emulation's arena is too small");
      return nullptr;
    }
    std::memset(arena.data() + arena_used, kPoison, end - arena_used);
    arena_used = end;
    return arena.data() + offset;
  }

  void begin_block(size_t dynamic_request) {
    arena_used = 0;
    shared.clear();
    static_bytes = 0;
    dynamic_bytes = dynamic_request;
    dynamic = allocate(dynamic_request, 16);
    if (dynamic) shared.push_back({nullptr, "", 0, "extern __shared__", size_t(static_cast<unsigned char*>(dynamic) - arena.data()), dynamic_request});
  }

  // Red zones untouched, and the block within the shared-memory limit.
  void end_block() {
    for (const SharedAllocation& a : shared) {
      const unsigned char* data = arena.data() + a.offset;
      bool ok = true;
      for (size_t i = 1; i <= kRedZone && ok; ++i) ok = data[-static_cast<ptrdiff_t>(i)] == kPoison;
      for (size_t i = 0; i < kRedZone && ok; ++i) ok = data[a.size + i] == kPoison;
      if (!ok) {
        std::ostringstream s;
        s << "shared memory written out of bounds of " << a.name << " (" << a.size << " bytes)";
        if (a.file && *a.file) s << " declared at " << a.file << ":" << a.line;
        fail(s.str());
      }
    }
    if (static_bytes + dynamic_bytes > kSharedLimit) {
      std::ostringstream s;
      s << "the block uses " << static_bytes << " bytes of static and " << dynamic_bytes
        << " bytes of dynamic shared memory, more than the " << kSharedLimit
        << " bytes a launch may use without cudaFuncAttributeMaxDynamicSharedMemorySize";
      fail(s.str());
    }
  }

  // ---- scheduling of one block ----
  std::string where(const Fiber& f) const {
    std::ostringstream s;
    s << "thread (" << f.tid.x << "," << f.tid.y << "," << f.tid.z << ")";
    if (f.state == State::AtBarrier || f.state == State::AtWarp) s << " at " << f.file << ":" << f.line;
    return s.str();
  }

  // Completes the warp operation of `f`'s group once every lane of its mask has arrived.
  void try_release_warp(Fiber& f) {
    const int warp_base = f.linear / 32 * 32;
    const int warp_lanes = std::min(32, threads - warp_base);
    for (int lane = 0; lane < 32; ++lane) {
      if (!(f.mask >> lane & 1u)) continue;
      if (lane >= warp_lanes) {
        fail(where(f) + ": warp operation names lane " + std::to_string(lane) + ", which the block does not have");
        return;
      }
      const Fiber& other = fibers[warp_base + lane];
      if (other.state == State::Exited) {
        fail(where(f) + ": warp operation names lane " + std::to_string(lane) + ", which has exited");
        return;
      }
      if (other.state != State::AtWarp) return;  // not arrived yet
    }
    for (int lane = 0; lane < 32; ++lane) {
      if (!(f.mask >> lane & 1u)) continue;
      const Fiber& other = fibers[warp_base + lane];
      if (other.mask != f.mask || other.is_shuffle != f.is_shuffle || other.file != f.file || other.line != f.line) {
        fail(where(f) + " and " + where(other) + " meet in one warp operation with different masks or sites");
        return;
      }
    }
    for (int lane = 0; lane < 32; ++lane) {
      if (!(f.mask >> lane & 1u)) continue;
      Fiber& g = fibers[warp_base + lane];
      if (g.is_shuffle) {
        const int width = g.width;
        if (width <= 0 || width > 32 || (width & (width - 1)) != 0) {
          fail(where(g) + ": shuffle width " + std::to_string(width) + " is not a power of two up to 32");
          return;
        }
        const int start = lane & ~(width - 1);
        int src = lane;
        switch (g.kind) {
          case ShuffleKind::Index: src = start + ((g.arg % width) + width) % width; break;
          case ShuffleKind::Up: src = lane - g.arg >= start ? lane - g.arg : lane; break;
          case ShuffleKind::Down: src = lane + g.arg < start + width ? lane + g.arg : lane; break;
          case ShuffleKind::Xor: src = (lane ^ g.arg) < start + width ? (lane ^ g.arg) : lane; break;
        }
        if (!(g.mask >> src & 1u)) {
          fail(where(g) + ": shuffle reads lane " + std::to_string(src) + ", which is not in its mask");
          return;
        }
        g.result = fibers[warp_base + src].value;
      }
    }
    for (int lane = 0; lane < 32; ++lane)
      if (f.mask >> lane & 1u) fibers[warp_base + lane].state = State::Runnable;
  }

  // Releases a barrier every live thread waits at; else reports why the block cannot go on.
  void resolve_blocked() {
    const Fiber* exited = nullptr;
    const Fiber* at_barrier = nullptr;
    const Fiber* at_warp = nullptr;
    for (int i = 0; i < threads; ++i) {
      const Fiber& f = fibers[i];
      if (f.state == State::Exited && !exited) exited = &f;
      if (f.state == State::AtBarrier && !at_barrier) at_barrier = &f;
      if (f.state == State::AtWarp && !at_warp) at_warp = &f;
    }
    if (at_warp) {
      fail(where(*at_warp) + ": waits at a warp operation that lanes of its mask never reach" +
           (at_barrier ? " (" + where(*at_barrier) + " waits at a barrier)" : std::string()));
      return;
    }
    if (!at_barrier) return;
    if (exited) {
      fail(where(*exited) + " exited while " + where(*at_barrier) + " waits at __syncthreads");
      return;
    }
    for (int i = 0; i < threads; ++i) {
      const Fiber& f = fibers[i];
      if (f.file != at_barrier->file || f.line != at_barrier->line) {
        fail(where(*at_barrier) + " and " + where(f) + " wait at different __syncthreads");
        return;
      }
    }
    for (int i = 0; i < threads; ++i) fibers[i].state = State::Runnable;
  }

  void run_block() {
    for (int i = 0; i < threads; ++i) {
      Fiber& f = fibers[i];
      f.linear = i;
      f.tid = {static_cast<unsigned>(i % blockDim.x), static_cast<unsigned>(i / blockDim.x % blockDim.y),
               static_cast<unsigned>(i / (blockDim.x * blockDim.y))};
      f.state = State::Runnable;
      start(f);
    }
    for (;;) {
      bool ran = false;
      for (int i = 0; i < threads && error.empty(); ++i) {
        Fiber& f = fibers[i];
        if (f.state != State::Runnable) continue;
        ran = true;
        resume(f);
        if (f.state == State::AtWarp) try_release_warp(f);
      }
      if (!error.empty()) return;
      if (ran) continue;
      bool all_exited = true;
      for (int i = 0; i < threads; ++i) all_exited = all_exited && fibers[i].state == State::Exited;
      if (all_exited) return;
      resolve_blocked();
      if (!error.empty()) return;
    }
  }
};

thread_local Executor* executor = nullptr;

Executor& running(const char* what) {
  if (!executor || !executor->current) {
    std::fprintf(stderr, "tco_emu: %s called outside a kernel\n", what);
    std::abort();
  }
  return *executor;
}

void fiber_main(Fiber* fiber) {
  Executor& e = *executor;
  e.body(e.context);
  fiber->state = State::Exited;
  e.yield();
  std::abort();  // an exited fiber is never resumed
}

// ---- launch status and census ----
thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_message;
std::mutex census_mutex;
std::map<std::string, long long> census;

void set_error(cudaError_t code, const std::string& message) {
  if (last_error == cudaSuccess) last_error = code;
  last_message = message;
}

}  // namespace

void sync_threads(const char* file, int line) {
  Executor& e = running("__syncthreads");
  Fiber& f = *e.current;
  f.state = State::AtBarrier;
  f.file = file;
  f.line = line;
  e.yield();
}

namespace {
uint64_t warp_operation(bool is_shuffle, unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width,
                        const char* file, int line) {
  Executor& e = running("a warp operation");
  Fiber& f = *e.current;
  if (!(mask >> (f.linear % 32) & 1u)) {
    e.fail(e.where(f) + " at " + file + ":" + std::to_string(line) + ": a warp operation whose mask " +
           std::to_string(mask) + " leaves out the calling lane");
  }
  f.state = State::AtWarp;
  f.is_shuffle = is_shuffle;
  f.mask = mask;
  f.kind = kind;
  f.arg = arg;
  f.width = width;
  f.value = bits;
  f.file = file;
  f.line = line;
  e.yield();
  return f.result;
}
}  // namespace

void sync_warp(unsigned mask, const char* file, int line) {
  warp_operation(false, mask, 0, ShuffleKind::Index, 0, 32, file, line);
}

uint64_t shuffle(unsigned mask, uint64_t bits, ShuffleKind kind, int arg, int width, const char* file, int line) {
  return warp_operation(true, mask, bits, kind, arg, width, file, line);
}

void* shared_static(const void* tag, const char* name, const char* file, int line, size_t size, size_t align) {
  Executor& e = running("__shared__");
  for (const SharedAllocation& a : e.shared)
    if (a.tag == tag && a.line == line && std::strcmp(a.name, name) == 0 && std::strcmp(a.file, file) == 0)
      return e.arena.data() + a.offset;
  void* p = e.allocate(size, align);
  if (!p) {
    e.yield();  // the block has failed: never resumed
  }
  e.shared.push_back({tag, file, line, name, size_t(static_cast<unsigned char*>(p) - e.arena.data()), size});
  e.static_bytes += size;
  return p;
}

void* shared_dynamic(const char* /*name*/, size_t align) {
  Executor& e = running("extern __shared__");
  if (reinterpret_cast<uintptr_t>(e.dynamic) % align != 0) e.fail("dynamic shared memory misaligned");
  return e.dynamic;
}

void run_grid(const Config& config, const char* kernel, const char* file, int max_threads,
              void (*thread_body)(void*), void* context) {
  std::ostringstream where;
  where << kernel << " (" << file << ")";
  const dim3 g = config.grid, b = config.block;
  const unsigned long long threads = 1ull * b.x * b.y * b.z;
  std::string bad;
  if (g.x == 0 || g.y == 0 || g.z == 0 || b.x == 0 || b.y == 0 || b.z == 0) bad = "an empty grid or block";
  else if (b.x > 1024 || b.y > 1024 || b.z > 64 || threads > 1024) bad = "a block of more than 1024 threads";
  else if (max_threads > 0 && threads > static_cast<unsigned long long>(max_threads))
    bad = "more threads per block than the kernel's __launch_bounds__ (" + std::to_string(max_threads) + ")";
  else if (g.x > 2147483647u || g.y > 65535 || g.z > 65535) bad = "a grid beyond the device limits";
  else if (config.shared_bytes > kSharedLimit) bad = "more dynamic shared memory than a launch may ask for";
  if (!bad.empty()) {
    std::ostringstream s;
    s << where.str() << ": invalid launch: grid (" << g.x << "," << g.y << "," << g.z << "), block (" << b.x << ","
      << b.y << "," << b.z << "), " << config.shared_bytes << " bytes of shared memory: " << bad;
    set_error(cudaErrorInvalidConfiguration, s.str());
    return;
  }
  {
    std::lock_guard<std::mutex> lock(census_mutex);
    ++census[std::string(file) + "::" + kernel];
  }
  // One executor per OS thread, kept between launches with its fibers' stacks.
  static thread_local Executor local;
  executor = &local;
  if (local.fibers.size() < threads) local.fibers.resize(threads);
  local.threads = static_cast<int>(threads);
  local.arena.resize(2 * kSharedLimit + 64 * kRedZone + 4096);
  local.body = thread_body;
  local.context = context;
  local.error.clear();
  const dim3 saved_grid = gridDim, saved_block = blockDim;
  const uint3 saved_block_idx = blockIdx;
  gridDim = g;
  blockDim = b;
  for (unsigned z = 0; z < g.z && local.error.empty(); ++z)
    for (unsigned y = 0; y < g.y && local.error.empty(); ++y)
      for (unsigned x = 0; x < g.x && local.error.empty(); ++x) {
        blockIdx = {x, y, z};
        local.begin_block(config.shared_bytes);
        local.run_block();
        if (local.error.empty()) local.end_block();
        if (!local.error.empty()) {
          std::ostringstream s;
          s << where.str() << ", block (" << x << "," << y << "," << z << "): " << local.error;
          local.error = s.str();
        }
      }
  gridDim = saved_grid;
  blockDim = saved_block;
  blockIdx = saved_block_idx;
  executor = nullptr;
  if (!local.error.empty()) set_error(cudaErrorLaunchFailure, local.error);
}

}  // namespace tco_emu

// ---- the CUDA runtime calls the kernels and the glue make ----
// (The extension is linked with -Bsymbolic, so that these answer its calls even in a process
// where a CUDA build of torch has loaded the real runtime.)
extern "C" {

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = tco_emu::last_error;
  tco_emu::last_error = cudaSuccess;
  return e;
}

cudaError_t cudaPeekAtLastError(void) { return tco_emu::last_error; }

const char* cudaGetErrorString(cudaError_t error) {
  if (error == cudaSuccess) return "no error";
  return tco_emu::last_message.empty() ? "error" : tco_emu::last_message.c_str();
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaError";
  }
}

// The census of launched kernels: "file::kernel count" lines, for the test report.
size_t tco_emu_census(char* buffer, size_t size) {
  std::ostringstream s;
  {
    std::lock_guard<std::mutex> lock(tco_emu::census_mutex);
    for (const auto& [name, count] : tco_emu::census) s << name << " " << count << "\n";
  }
  const std::string text = s.str();
  if (buffer && size > 0) {
    const size_t n = std::min(size - 1, text.size());
    std::memcpy(buffer, text.data(), n);
    buffer[n] = '\0';
  }
  return text.size();
}

}  // extern "C"
