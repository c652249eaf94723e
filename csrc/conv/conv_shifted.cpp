#include "conv_shifted.h"

#include "conv_common.h"

#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/addmm_cpu_dispatch.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/mm_cpu_dispatch.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <limits>
#include <vector>

namespace tco {
namespace {

// Per-thread buffers above this size make the algorithm fall back to im2col, whose
// buffers are bounded whatever the input size.
constexpr int64_t kBufferBudgetBytes = int64_t(64) << 20;

// Sizes of the padded grid. With unit stride, out = padded - dilation * (k - 1), so the
// padded extent follows from the output; its trailing pad is whatever remains.
struct PaddedGrid {
  int64_t size[3];  // Dp, Hp, Wp
  int64_t plane;    // Dp * Hp * Wp
  int64_t wide;     // Lw: columns of the wide output, up to the last real output + 1
  std::vector<int64_t> offsets;  // flat offset of each kernel tap
};

PaddedGrid padded_grid(const ConvGeometry& g) {
  PaddedGrid p;
  for (int d = 0; d < 3; ++d) p.size[d] = g.out_size[d] + g.dilation[d] * (g.kernel[d] - 1);
  p.plane = p.size[0] * p.size[1] * p.size[2];
  p.wide = ((g.out_size[0] - 1) * p.size[1] + (g.out_size[1] - 1)) * p.size[2] + g.out_size[2];
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd)
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh)
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw)
        p.offsets.push_back(((kd * g.dilation[0]) * p.size[1] + kh * g.dilation[1]) * p.size[2] +
                            kw * g.dilation[2]);
  return p;
}

// The part of the padded grid (C, Dp, Hp, Wp) that holds the input (C, D, H, W). A trailing
// pad can be negative in a backward call whose grad_output skipped the last input rows:
// those rows are then left out.
at::Tensor interior(const at::Tensor& padded, const ConvGeometry& g, const PaddedGrid& p) {
  at::Tensor t = padded;
  for (int d = 0; d < 3; ++d) {
    const int64_t len = std::min(g.in_size[d], p.size[d] - g.pad[d]);
    t = t.narrow(1 + d, g.pad[d], std::max<int64_t>(len, 0));
  }
  return t;
}

at::Tensor input_part(const at::Tensor& x, const ConvGeometry& g, const PaddedGrid& p) {
  at::Tensor t = x;
  for (int d = 0; d < 3; ++d) {
    const int64_t len = std::min(g.in_size[d], p.size[d] - g.pad[d]);
    t = t.narrow(1 + d, 0, std::max<int64_t>(len, 0));
  }
  return t;
}

// Columns of the wide output (rows of length Wp) that are real outputs, as (C, oD, oH, oW).
at::Tensor real_columns(const at::Tensor& wide, const ConvGeometry& g, const PaddedGrid& p) {
  const int64_t C = wide.size(0);
  return wide.as_strided({C, g.out_size[0], g.out_size[1], g.out_size[2]},
                         {wide.stride(0), p.size[1] * p.size[2], p.size[2], 1}, wide.storage_offset());
}

// The views of a padded buffer (C, nb samples' padded grids, flat) that the taps read, one per
// tap: (C, (nb - 1) * P + Lw), rows nb * P apart. One GEMM per tap then serves nb samples: the
// columns between two samples' real outputs are computed and cropped, as within a sample.
std::vector<at::Tensor> shifted_views(const at::Tensor& padded, const PaddedGrid& p) {
  const at::Tensor flat = padded.view({padded.size(0), -1});
  const int64_t samples = flat.size(1) / p.plane;
  std::vector<at::Tensor> views;
  views.reserve(p.offsets.size());
  for (const int64_t offset : p.offsets) {
    views.push_back(flat.as_strided({flat.size(0), (samples - 1) * p.plane + p.wide}, {flat.stride(0), 1},
                                    flat.storage_offset() + offset));
  }
  return views;
}

// c = a @ b, or c += a @ b when `accumulate`. On the CPU this calls ATen's CPU kernel without
// the dispatcher (a few microseconds per call, which show on small planes: a task makes one
// GEMM per tap); elsewhere it goes through the dispatcher.
void matmul_into(at::Tensor& c, const at::Tensor& a, const at::Tensor& b, bool accumulate) {
  if (c.is_cpu()) {
    if (accumulate) {
      at::cpu::addmm_(c, a, b);
    } else {
      at::cpu::mm_out(c, a, b);
    }
  } else if (accumulate) {
    c.addmm_(a, b);
  } else {
    at::mm_out(c, a, b);
  }
}

// The (O, Cg) matrices of a per-tap tensor (K, O, Cg), one per tap.
std::vector<at::Tensor> per_tap(const at::Tensor& t) {
  std::vector<at::Tensor> views;
  views.reserve(t.size(0));
  for (int64_t k = 0; k < t.size(0); ++k) views.push_back(t.select(0, k));
  return views;
}

// Tasks are (chunk of samples, group) pairs; the chunks split the batch evenly. There are at
// least as many tasks as threads, in a multiple of them so that every thread gets an equal
// share; beyond that, chunks as large as keep a task's buffers within a core's L2 cache
// (kCacheBytes): small planes then make fewer, larger GEMMs (each call costs a few
// microseconds of dispatch), while large planes, whose GEMMs are long anyway, stay in cache.
constexpr int64_t kCacheBytes = int64_t(1) << 20;

struct Chunks {
  int64_t count;        // chunks of the batch
  int64_t max_samples;  // samples in the largest chunk: the buffers' size
};

Chunks sample_chunks(const at::Tensor& like, const ConvGeometry& g, const PaddedGrid& p) {
  const int64_t per_sample =
      (g.in_per_group() + g.out_per_group()) * p.plane * at::elementSize(compute_type(like.scalar_type()));
  const int64_t by_cache = std::max<int64_t>(1, kCacheBytes / std::max<int64_t>(per_sample, 1));
  const int64_t threads = like.is_cpu() ? at::get_num_threads() : 1;
  const int64_t batch = std::max<int64_t>(g.batch, 1);
  const int64_t per_round = std::clamp<int64_t>((threads + g.groups - 1) / g.groups, 1, batch);
  const int64_t rounds = ((batch + per_round - 1) / per_round + by_cache - 1) / by_cache;
  const int64_t count = std::min(batch, per_round * rounds);
  return {count, (batch + count - 1) / count};
}

// Runs fn(n0, n, grp) over the tasks (samples [n0, n0 + n) of `chunks`, one group): in parallel
// on the CPU (each worker enters below-autograd dispatch itself: worker threads do not inherit
// the caller's), in order on other devices, where the ops are queued on one stream anyway.
template <typename Fn>
void for_each_task(const at::Tensor& like, const ConvGeometry& g, const Chunks& chunks, const Fn& fn) {
  const int64_t grain = like.is_cpu() ? 1 : std::numeric_limits<int64_t>::max();
  at::parallel_for(0, chunks.count * g.groups, grain, [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Fn local(fn);  // this worker's own buffers
    local.start();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t chunk = task / g.groups;
      const int64_t n0 = chunk * g.batch / chunks.count, n1 = (chunk + 1) * g.batch / chunks.count;
      local(n0, n1 - n0, task % g.groups);
    }
  });
}

// Weight as (kernel_volume, O, Cg): W_t is then a plain row-major (O, Cg) matrix.
at::Tensor weight_per_tap(const at::Tensor& weight, const ConvGeometry& g, at::ScalarType ct) {
  return weight.reshape({g.out_channels, g.in_per_group(), g.kernel_volume()}).permute({2, 0, 1}).to(ct).contiguous();
}

at::Tensor as_5d(const at::Tensor& t, const ConvGeometry& g, int64_t channels, const int64_t* size) {
  return t.reshape({g.batch, channels, size[0], size[1], size[2]});
}

// One worker's buffers (for_each_task makes them per worker), for nb samples: the padded input
// grids (Cg, nb, *padded grid) with the views that the taps read, and the wide outputs
// (Og, nb * P), sample j's at columns j * P. A buffer is zeroed once where the tasks leave a
// part of it unwritten.
struct Workspace {
  at::Tensor padded, wide;
  std::vector<at::Tensor> taps;

  Workspace() = default;
  Workspace(const ConvGeometry& g, const PaddedGrid& p, int64_t nb, const at::TensorOptions& options,
            bool zero_padded, bool zero_wide) {
    const std::vector<int64_t> grid{g.in_per_group(), nb, p.size[0], p.size[1], p.size[2]};
    const std::vector<int64_t> rows{g.out_per_group(), nb * p.plane};
    padded = zero_padded ? at::zeros(grid, options) : at::empty(grid, options);
    wide = zero_wide ? at::zeros(rows, options) : at::empty(rows, options);
    taps = shifted_views(padded, p);
  }

  // The columns of the wide rows and of the tap views that `count` samples use.
  static int64_t columns(const PaddedGrid& p, int64_t count) { return (count - 1) * p.plane + p.wide; }
  // Sample j's padded grid (Cg, Dp, Hp, Wp), and its wide output (Og, Lw).
  at::Tensor grid(int64_t j) const { return padded.select(1, j); }
  at::Tensor outputs(const PaddedGrid& p, int64_t j) const { return wide.narrow(1, j * p.plane, p.wide); }
};

// What the tasks of one call share (the geometry, the padded grid, the largest chunk), and a
// worker's workspace, made by start().
struct TaskBase {
  const ConvGeometry& g;
  const PaddedGrid& p;
  int64_t nb;
  Workspace ws;
};

}  // namespace

bool shifted_applies(const ConvGeometry& g, int64_t elem_size) {
  for (int d = 0; d < 3; ++d)
    if (g.stride[d] != 1) return false;
  if (g.out_plane() == 0) return false;
  const PaddedGrid p = padded_grid(g);
  const int64_t bytes = (g.in_per_group() * p.plane + g.out_per_group() * p.wide) * elem_size;
  return bytes <= kBufferBudgetBytes;
}

at::Tensor shifted_forward(const at::Tensor& input, const at::Tensor& weight,
                           const std::optional<at::Tensor>& bias, const ConvGeometry& g) {
  const PaddedGrid p = padded_grid(g);
  const Chunks chunks = sample_chunks(input, g, p);
  const at::Tensor x = as_5d(input, g, g.in_channels, g.in_size);
  const at::Tensor w = weight_per_tap(weight, g, compute_type(input.scalar_type()));
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_size[0], g.out_size[1], g.out_size[2]},
                             input.options());
  struct Task : TaskBase {
    const at::Tensor &x, &w, &out;
    std::vector<at::Tensor> w_taps;
    void start() {
      // The interior of each padded grid is overwritten by every task, its border stays zero.
      ws = Workspace(g, p, nb, w.options(), /*zero_padded=*/true, /*zero_wide=*/false);
      w_taps = per_tap(w);
    }
    void operator()(int64_t n0, int64_t count, int64_t grp) {
      const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), cols = Workspace::columns(p, count);
      for (int64_t j = 0; j < count; ++j) {
        interior(ws.grid(j), g, p).copy_(input_part(x.select(0, n0 + j).narrow(0, grp * Cg, Cg), g, p));
      }
      // wide (Og x cols) = sum over taps of W_t (Og x Cg) * shifted input (Cg x cols).
      at::Tensor wide = ws.wide.narrow(1, 0, cols);
      for (size_t t = 0; t < ws.taps.size(); ++t) {
        matmul_into(wide, w_taps[t].narrow(0, grp * Og, Og), ws.taps[t].narrow(1, 0, cols), /*accumulate=*/t > 0);
      }
      for (int64_t j = 0; j < count; ++j) {
        out.select(0, n0 + j).narrow(0, grp * Og, Og).copy_(real_columns(ws.outputs(p, j), g, p));
      }
    }
  } task{{g, p, chunks.max_samples, {}}, x, w, out, {}};
  for_each_task(input, g, chunks, task);
  if (bias.has_value() && bias->defined()) out.add_(bias->view({1, g.out_channels, 1, 1, 1}));
  return out;
}

at::Tensor shifted_input_backward(const at::Tensor& grad_output, const at::Tensor& weight,
                                  const ConvGeometry& g) {
  const PaddedGrid p = padded_grid(g);
  const Chunks chunks = sample_chunks(grad_output, g, p);
  const at::Tensor gy = as_5d(grad_output, g, g.out_channels, g.out_size);
  const at::Tensor w = weight_per_tap(weight, g, compute_type(grad_output.scalar_type()));
  // Input positions that no window reads (a negative trailing pad) get zero gradient.
  at::Tensor gin = at::zeros({g.batch, g.in_channels, g.in_size[0], g.in_size[1], g.in_size[2]},
                             grad_output.options());
  struct Task : TaskBase {
    const at::Tensor &gy, &w, &gin;
    std::vector<at::Tensor> w_taps;
    void start() {
      // The real columns of the wide rows are overwritten by every task, the rest stays zero.
      ws = Workspace(g, p, nb, w.options(), /*zero_padded=*/false, /*zero_wide=*/true);
      w_taps = per_tap(w);
    }
    void operator()(int64_t n0, int64_t count, int64_t grp) {
      const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), cols = Workspace::columns(p, count);
      for (int64_t j = 0; j < count; ++j) {
        real_columns(ws.outputs(p, j), g, p).copy_(gy.select(0, n0 + j).narrow(0, grp * Og, Og));
      }
      ws.padded.zero_();
      // shifted grids (Cg x cols) += W_t^T (Cg x Og) * wide (Og x cols), tap by tap.
      const at::Tensor wide = ws.wide.narrow(1, 0, cols);
      for (size_t t = 0; t < ws.taps.size(); ++t) {
        at::Tensor tap = ws.taps[t].narrow(1, 0, cols);
        matmul_into(tap, w_taps[t].narrow(0, grp * Og, Og).t(), wide, /*accumulate=*/true);
      }
      for (int64_t j = 0; j < count; ++j) {
        input_part(gin.select(0, n0 + j).narrow(0, grp * Cg, Cg), g, p).copy_(interior(ws.grid(j), g, p));
      }
    }
  } task{{g, p, chunks.max_samples, {}}, gy, w, gin, {}};
  for_each_task(grad_output, g, chunks, task);
  return gin;
}

at::Tensor shifted_weight_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                   const ConvGeometry& g) {
  const PaddedGrid p = padded_grid(g);
  const Chunks chunks = sample_chunks(input, g, p);
  const at::Tensor gy = as_5d(grad_output, g, g.out_channels, g.out_size);
  const at::Tensor x = as_5d(input, g, g.in_channels, g.in_size);
  // One partial sum per thread, (K, O, Cg) each, added up at the end.
  const int64_t threads = input.is_cpu() ? at::get_num_threads() : 1;
  at::Tensor partial = at::zeros({threads, g.kernel_volume(), g.out_channels, g.in_per_group()},
                                 grad_output.options().dtype(compute_type(grad_output.scalar_type())));
  struct Task : TaskBase {
    const at::Tensor &gy, &x, &partial;
    std::vector<at::Tensor> acc_taps;
    void start() {
      // Both are overwritten in part by every task (the padded interiors, the real columns).
      ws = Workspace(g, p, nb, partial.options(), /*zero_padded=*/true, /*zero_wide=*/true);
      const int64_t thread = x.is_cpu() ? at::get_thread_num() : 0;
      TORCH_INTERNAL_ASSERT(thread >= 0 && thread < partial.size(0));
      acc_taps = per_tap(partial.select(0, thread));
    }
    void operator()(int64_t n0, int64_t count, int64_t grp) {
      const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), cols = Workspace::columns(p, count);
      for (int64_t j = 0; j < count; ++j) {
        interior(ws.grid(j), g, p).copy_(input_part(x.select(0, n0 + j).narrow(0, grp * Cg, Cg), g, p));
        real_columns(ws.outputs(p, j), g, p).copy_(gy.select(0, n0 + j).narrow(0, grp * Og, Og));
      }
      // acc_t (Og x Cg) += wide (Og x cols) * shifted input^T (cols x Cg), tap by tap.
      const at::Tensor wide = ws.wide.narrow(1, 0, cols);
      for (size_t t = 0; t < ws.taps.size(); ++t) {
        at::Tensor acc = acc_taps[t].narrow(0, grp * Og, Og);
        matmul_into(acc, wide, ws.taps[t].narrow(1, 0, cols).t(), /*accumulate=*/true);
      }
    }
  } task{{g, p, chunks.max_samples, {}}, gy, x, partial, {}};
  for_each_task(input, g, chunks, task);
  at::Tensor gw = partial.sum(0);  // (K, O, Cg)
  return gw.permute({1, 2, 0}).contiguous().to(grad_output.scalar_type());
}

}  // namespace tco
