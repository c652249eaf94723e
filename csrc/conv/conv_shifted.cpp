#include "conv_shifted.h"

#include "conv_common.h"

#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
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

// The (C, Lw) views of a padded buffer (C, *padded grid) that the taps read, one per tap
// (made once per task: the buffer is reused for every sample and group).
std::vector<at::Tensor> shifted_views(const at::Tensor& padded, const PaddedGrid& p) {
  const at::Tensor flat = padded.view({padded.size(0), p.plane});
  std::vector<at::Tensor> views;
  views.reserve(p.offsets.size());
  for (const int64_t offset : p.offsets) {
    views.push_back(flat.as_strided({flat.size(0), p.wide}, {flat.stride(0), 1}, flat.storage_offset() + offset));
  }
  return views;
}

// The (O, Cg) matrices of a per-tap tensor (K, O, Cg), one per tap.
std::vector<at::Tensor> per_tap(const at::Tensor& t) {
  std::vector<at::Tensor> views;
  views.reserve(t.size(0));
  for (int64_t k = 0; k < t.size(0); ++k) views.push_back(t.select(0, k));
  return views;
}

// Runs fn(n, grp) over all (sample, group) tasks: in parallel on the CPU (each worker
// enters below-autograd dispatch itself: worker threads do not inherit the caller's), in
// order on other devices, where the ops are queued on one stream anyway.
template <typename Fn>
void for_each_task(const at::Tensor& like, const ConvGeometry& g, const Fn& fn) {
  const int64_t grain = like.is_cpu() ? 1 : std::numeric_limits<int64_t>::max();
  at::parallel_for(0, g.batch * g.groups, grain, [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    Fn local(fn);  // this worker's own buffers
    local.start();
    for (int64_t task = begin; task < end; ++task) local(task / g.groups, task % g.groups);
  });
}

// Weight as (kernel_volume, O, Cg): W_t is then a plain row-major (O, Cg) matrix.
at::Tensor weight_per_tap(const at::Tensor& weight, const ConvGeometry& g, at::ScalarType ct) {
  return weight.reshape({g.out_channels, g.in_per_group(), g.kernel_volume()}).permute({2, 0, 1}).to(ct).contiguous();
}

at::Tensor as_5d(const at::Tensor& t, const ConvGeometry& g, int64_t channels, const int64_t* size) {
  return t.reshape({g.batch, channels, size[0], size[1], size[2]});
}

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
  const at::ScalarType ct = compute_type(input.scalar_type());
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  const PaddedGrid p = padded_grid(g);
  const at::Tensor x = as_5d(input, g, g.in_channels, g.in_size);
  const at::Tensor w = weight_per_tap(weight, g, ct);
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_size[0], g.out_size[1], g.out_size[2]},
                             input.options());
  struct Task {
    const at::Tensor &x, &w;
    at::Tensor& out;
    const ConvGeometry& g;
    const PaddedGrid& p;
    at::ScalarType ct;
    int64_t Cg, Og;
    at::Tensor padded, wide;
    std::vector<at::Tensor> taps, w_taps;
    void start() {
      // Zeros once: the interior is overwritten by every task, the border stays zero.
      padded = at::zeros({Cg, p.size[0], p.size[1], p.size[2]}, x.options().dtype(ct));
      wide = at::empty({Og, p.wide}, x.options().dtype(ct));
      taps = shifted_views(padded, p);
      w_taps = per_tap(w);
    }
    void operator()(int64_t n, int64_t grp) {
      interior(padded, g, p).copy_(input_part(x.select(0, n).narrow(0, grp * Cg, Cg), g, p));
      // wide (Og x Lw) = sum over taps of W_t (Og x Cg) * shifted input (Cg x Lw, rows `plane` apart).
      for (size_t t = 0; t < taps.size(); ++t) {
        const at::Tensor w_t = w_taps[t].narrow(0, grp * Og, Og);
        if (t == 0) {
          at::mm_out(wide, w_t, taps[t]);
        } else {
          wide.addmm_(w_t, taps[t]);
        }
      }
      out.select(0, n).narrow(0, grp * Og, Og).copy_(real_columns(wide, g, p));
    }
  } task{x, w, out, g, p, ct, Cg, Og, {}, {}, {}, {}};
  for_each_task(input, g, task);
  if (bias.has_value() && bias->defined()) out.add_(bias->view({1, g.out_channels, 1, 1, 1}));
  return out;
}

at::Tensor shifted_input_backward(const at::Tensor& grad_output, const at::Tensor& weight,
                                  const ConvGeometry& g) {
  const at::ScalarType ct = compute_type(grad_output.scalar_type());
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  const PaddedGrid p = padded_grid(g);
  const at::Tensor gy = as_5d(grad_output, g, g.out_channels, g.out_size);
  const at::Tensor w = weight_per_tap(weight, g, ct);
  // Input positions that no window reads (a negative trailing pad) get zero gradient.
  at::Tensor gin = at::zeros({g.batch, g.in_channels, g.in_size[0], g.in_size[1], g.in_size[2]},
                             grad_output.options());
  struct Task {
    const at::Tensor &gy, &w;
    at::Tensor& gin;
    const ConvGeometry& g;
    const PaddedGrid& p;
    at::ScalarType ct;
    int64_t Cg, Og;
    at::Tensor padded, wide;
    std::vector<at::Tensor> taps, w_taps;
    void start() {
      padded = at::empty({Cg, p.size[0], p.size[1], p.size[2]}, gy.options().dtype(ct));
      // Zeros once: the real columns are overwritten by every task, the rest stays zero.
      wide = at::zeros({Og, p.wide}, gy.options().dtype(ct));
      taps = shifted_views(padded, p);
      w_taps = per_tap(w);
    }
    void operator()(int64_t n, int64_t grp) {
      real_columns(wide, g, p).copy_(gy.select(0, n).narrow(0, grp * Og, Og));
      padded.zero_();
      // shifted grid (Cg x Lw, rows `plane` apart) += W_t^T (Cg x Og) * wide (Og x Lw), tap by tap.
      for (size_t t = 0; t < taps.size(); ++t) taps[t].addmm_(w_taps[t].narrow(0, grp * Og, Og).t(), wide);
      input_part(gin.select(0, n).narrow(0, grp * Cg, Cg), g, p).copy_(interior(padded, g, p));
    }
  } task{gy, w, gin, g, p, ct, Cg, Og, {}, {}, {}, {}};
  for_each_task(grad_output, g, task);
  return gin;
}

at::Tensor shifted_weight_backward(const at::Tensor& grad_output, const at::Tensor& input,
                                   const ConvGeometry& g) {
  const at::ScalarType ct = compute_type(grad_output.scalar_type());
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), K = g.kernel_volume();
  const PaddedGrid p = padded_grid(g);
  const at::Tensor gy = as_5d(grad_output, g, g.out_channels, g.out_size);
  const at::Tensor x = as_5d(input, g, g.in_channels, g.in_size);
  // One partial sum per thread, (K, O, Cg) each, added up at the end.
  const int64_t threads = input.is_cpu() ? at::get_num_threads() : 1;
  at::Tensor partial = at::zeros({threads, K, g.out_channels, Cg}, grad_output.options().dtype(ct));
  struct Task {
    const at::Tensor &gy, &x;
    at::Tensor& partial;
    const ConvGeometry& g;
    const PaddedGrid& p;
    at::ScalarType ct;
    int64_t Cg, Og, threads;
    at::Tensor padded, wide, acc;
    std::vector<at::Tensor> taps, acc_taps;
    void start() {
      padded = at::zeros({Cg, p.size[0], p.size[1], p.size[2]}, x.options().dtype(ct));
      wide = at::zeros({Og, p.wide}, x.options().dtype(ct));
      const int64_t thread = x.is_cpu() ? at::get_thread_num() : 0;
      TORCH_INTERNAL_ASSERT(thread >= 0 && thread < threads);
      acc = partial.select(0, thread);
      taps = shifted_views(padded, p);
      acc_taps = per_tap(acc);
    }
    void operator()(int64_t n, int64_t grp) {
      interior(padded, g, p).copy_(input_part(x.select(0, n).narrow(0, grp * Cg, Cg), g, p));
      real_columns(wide, g, p).copy_(gy.select(0, n).narrow(0, grp * Og, Og));
      // acc_t (Og x Cg) += wide (Og x Lw) * shifted input^T (Lw x Cg), tap by tap.
      for (size_t t = 0; t < taps.size(); ++t) acc_taps[t].narrow(0, grp * Og, Og).addmm_(wide, taps[t].t());
    }
  } task{gy, x, partial, g, p, ct, Cg, Og, threads, {}, {}, {}, {}, {}};
  for_each_task(input, g, task);
  at::Tensor gw = partial.sum(0);  // (K, O, Cg)
  return gw.permute({1, 2, 0}).contiguous().to(grad_output.scalar_type());
}

}  // namespace tco
