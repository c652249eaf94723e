// The CPU backend of the conv family (conv_ops.h, whose entries check the arguments and answer
// the empty cases; the shifted-GEMM algorithm is conv_shifted.cpp, for every device).
//
// Two algorithms of its own:
//  * direct: loops over output planes and kernel taps; the innermost loop runs along an
//    output row, so it is a contiguous (for stride 1) multiply-add that the compiler
//    vectorises. Best when each group has few input channels (depthwise), where a GEMM
//    has too little depth to pay for an unfolded copy of the input. Kernels of width 3 at
//    unit stride along the width (3x3 depthwise) take a kernel row's three taps in one sweep
//    over the row, forward and input gradient (three_tap_row): on (8, 32, 112x112) depthwise
//    3x3 the forward went from 1.21x to 0.80-0.89x torch's time, the input gradient from
//    1.07x to 0.82x (steady allocator, 2 threads).
//  * im2col: unfold the input of a chunk of samples into a (C/groups * kernel_volume,
//    samples * output_plane) matrix, then one GEMM per group through ATen's mm (BLAS).
//
// Backward passes:
//  * input: the transposed-kernel convolution. Direct: every output gradient is scattered
//    back through the kernel taps into the input plane it came from, which is the 'full'
//    correlation of the stride-dilated grad_output with the 180°-rotated, channel-swapped
//    kernel, without materialising the zeros. im2col: col = W^T @ grad_output, then col2im.
//  * weight: the correlation of the input with grad_output (a dot product per tap, or
//    grad_output @ col^T).
//
// float16 and bfloat16 accumulate in float32: the direct kernels keep float32 accumulators,
// the im2col path runs its GEMMs on float32 copies ("compute type").

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../cpu_vectorize.h"
#include "conv_common.h"
#include "conv_ops.h"
#include "conv_shifted.h"
#include "conv_winograd_cpu.h"
#include "im2col_cpu.h"

namespace tco {
namespace {

// ---------------------------------------------------------------------------------------
// Row kernels: the only loops that run per element. Marked for multi-versioning.

// sum_i a[i] * b[i * step]
template <typename acc_t, typename src_t>
TCO_VECTORIZE acc_t dot_strided(const src_t* __restrict a, const src_t* __restrict b, int64_t n,
                                int64_t step) {
  acc_t sum = 0;
  if (step == 1) {
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i) sum += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i]);
  } else {
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; ++i)
      sum += static_cast<acc_t>(a[i]) * static_cast<acc_t>(b[i * step]);
  }
  return sum;
}

// ---------------------------------------------------------------------------------------
// Direct algorithm.

// acc[i] += w0 * in[i] + w1 * in[i + 1] + w2 * in[i + 2]: the three taps of a kernel row at
// stride 1, in one sweep over the output row (tap by tap it took three).
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void three_tap_row(acc_t* __restrict acc, const scalar_t* __restrict in, acc_t w0, acc_t w1, acc_t w2,
                                 int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    acc[i] += w0 * static_cast<acc_t>(in[i]) + w1 * static_cast<acc_t>(in[i + 1]) + w2 * static_cast<acc_t>(in[i + 2]);
}

// The direct forward of one input plane into acc for 2-d kernels of width 3 at stride and
// dilation 1 along the width: the outputs whose three inputs lie inside the row in one
// three_tap_row call per kernel row, the few at the row's ends tap by tap.
template <typename acc_t, typename scalar_t>
void three_tap_plane(acc_t* acc, const scalar_t* in_c, const scalar_t* w_c, const ConvGeometry& g) {
  const int64_t H = g.in_size[1], W = g.in_size[2], oH = g.out_size[1], oW = g.out_size[2];
  const int64_t pad = g.pad[2];
  const int64_t lo = std::min(oW, pad), hi = std::max(lo, std::min(oW, W - 2 + pad));
  for (int64_t oh = 0; oh < oH; ++oh) {
    acc_t* acc_row = acc + oh * oW;
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
      const int64_t ih = oh * g.stride[1] + tap_offset(g, 1, kh);
      if (ih < 0 || ih >= H) continue;
      const scalar_t* in_row = in_c + ih * W;
      const scalar_t* wk = w_c + kh * 3;
      const acc_t w0 = static_cast<acc_t>(wk[0]), w1 = static_cast<acc_t>(wk[1]), w2 = static_cast<acc_t>(wk[2]);
      if (hi > lo) three_tap_row<acc_t, scalar_t>(acc_row + lo, in_row + lo - pad, w0, w1, w2, hi - lo);
      const auto ends = [&](int64_t o) {
        for (int64_t kw = 0; kw < 3; ++kw) {
          const int64_t i = o - pad + kw;
          if (i >= 0 && i < W) acc_row[o] += static_cast<acc_t>(wk[kw]) * static_cast<acc_t>(in_row[i]);
        }
      };
      for (int64_t o = 0; o < lo; ++o) ends(o);
      for (int64_t o = hi; o < oW; ++o) ends(o);
    }
  }
}

// The direct input gradient of one output-gradient plane into acc (an input plane) for the
// same kernels: input i of a row receives w[kw] * gout[i + pad - kw], the three taps reversed,
// in one three_tap_row call per kernel row for the inputs whose three outputs lie inside.
template <typename acc_t, typename scalar_t>
void three_tap_plane_backward(acc_t* acc, const scalar_t* gout_c, const scalar_t* w_c, const ConvGeometry& g) {
  const int64_t H = g.in_size[1], W = g.in_size[2], oH = g.out_size[1], oW = g.out_size[2];
  const int64_t pad = g.pad[2];
  const int64_t lo = std::clamp<int64_t>(2 - pad, 0, W), hi = std::max(lo, std::min(W, oW - pad));
  for (int64_t oh = 0; oh < oH; ++oh) {
    const scalar_t* gout_row = gout_c + oh * oW;
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
      const int64_t ih = oh * g.stride[1] + tap_offset(g, 1, kh);
      if (ih < 0 || ih >= H) continue;
      acc_t* acc_row = acc + ih * W;
      const scalar_t* wk = w_c + kh * 3;
      const acc_t w0 = static_cast<acc_t>(wk[0]), w1 = static_cast<acc_t>(wk[1]), w2 = static_cast<acc_t>(wk[2]);
      if (hi > lo) three_tap_row<acc_t, scalar_t>(acc_row + lo, gout_row + lo + pad - 2, w2, w1, w0, hi - lo);
      const auto ends = [&](int64_t i) {
        for (int64_t kw = 0; kw < 3; ++kw) {
          const int64_t o = i + pad - kw;
          if (o >= 0 && o < oW) acc_row[i] += static_cast<acc_t>(wk[kw]) * static_cast<acc_t>(gout_row[o]);
        }
      };
      for (int64_t i = 0; i < lo; ++i) ends(i);
      for (int64_t i = hi; i < W; ++i) ends(i);
    }
  }
}

// Whether the three_tap passes apply: 1-d or 2-d kernels of width 3, stride and dilation 1
// along the width.
bool three_taps(const ConvGeometry& g) {
  return g.kernel[0] == 1 && g.in_size[0] == 1 && g.kernel[2] == 3 && g.stride[2] == 1 && g.dilation[2] == 1;
}

template <typename scalar_t>
void direct_forward(const scalar_t* in, const scalar_t* w, const scalar_t* bias, scalar_t* out,
                    const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t O = g.out_channels, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  const bool rows_of_three = three_taps(g);
  at::parallel_for(0, g.batch * O, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(out_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / O, oc = task % O, grp = oc / Og;
      std::fill(acc.begin(), acc.end(), bias ? static_cast<acc_t>(bias[oc]) : acc_t(0));
      for (int64_t ic = 0; ic < Cg; ++ic) {
        const scalar_t* in_c = in + (n * g.in_channels + grp * Cg + ic) * in_plane;
        const scalar_t* w_c = w + (oc * Cg + ic) * K;
        if (rows_of_three) {
          three_tap_plane<acc_t, scalar_t>(acc.data(), in_c, w_c, g);
          continue;
        }
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          axpy<acc_t, scalar_t>(acc.data() + o, 1, in_c + i, g.stride[2], static_cast<acc_t>(w_c[tap]), count);
        });
      }
      std::copy(acc.begin(), acc.end(), out + task * out_plane);
    }
  });
}

template <typename scalar_t>
void direct_input_backward(const scalar_t* gout, const scalar_t* w, scalar_t* gin,
                           const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = g.in_channels, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  const bool rows_of_three = three_taps(g);
  // One task per input plane: every write of a task lands in its own plane, so no races.
  at::parallel_for(0, g.batch * C, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(in_plane);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / C, c = task % C, grp = c / Cg, ic = c % Cg;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t oc = grp * Og; oc < (grp + 1) * Og; ++oc) {
        const scalar_t* gout_c = gout + (n * g.out_channels + oc) * out_plane;
        const scalar_t* w_c = w + (oc * Cg + ic) * K;
        if (rows_of_three) {
          three_tap_plane_backward<acc_t, scalar_t>(acc.data(), gout_c, w_c, g);
          continue;
        }
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          axpy<acc_t, scalar_t>(acc.data() + i, g.stride[2], gout_c + o, 1, static_cast<acc_t>(w_c[tap]), count);
        });
      }
      std::copy(acc.begin(), acc.end(), gin + task * in_plane);
    }
  });
}

template <typename scalar_t>
void direct_weight_backward(const scalar_t* gout, const scalar_t* in, scalar_t* gw,
                            const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  // One task per (out channel, in channel of its group) pair: it owns K weight entries.
  at::parallel_for(0, g.out_channels * Cg, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(K);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t oc = task / Cg, ic = task % Cg, grp = oc / Og;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* gout_c = gout + (n * g.out_channels + oc) * out_plane;
        const scalar_t* in_c = in + (n * g.in_channels + grp * Cg + ic) * in_plane;
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          acc[tap] += dot_strided<acc_t, scalar_t>(gout_c + o, in_c + i, count, g.stride[2]);
        });
      }
      std::copy(acc.begin(), acc.end(), gw + task * K);
    }
  });
}

// ---------------------------------------------------------------------------------------
// im2col algorithm, blocked by output columns.
//
// Unfolding a whole sample writes kernel_volume copies of its input (58 MB for a batch of
// 8 x 64 x 56 x 56 with a 3x3 kernel) that the GEMM then reads back from memory. Instead,
// each task (one sample and group) walks its output columns in blocks whose unfolded slab
// fits in the core's L2 cache, and multiplies each slab while it is still there. Tasks run
// in parallel, each GEMM on one thread, so there is no synchronisation inside a task and
// the extra memory is one slab per thread, whatever the batch size.

constexpr int64_t kSlabBytes = int64_t(1) << 20;
constexpr int64_t kMaxSlabBytes = int64_t(4) << 20;
constexpr int64_t kMinBlockColumns = 256;

// Columns per block: the slab (col_rows x block) fits in L2 (kSlabBytes) when that still
// leaves the GEMM kMinBlockColumns columns of width; deep kernels (256 channels x 3x3) take
// wider slabs, up to kMaxSlabBytes, which then live in L3.
int64_t column_block(const ConvGeometry& g, int64_t elem_size) {
  const int64_t L = g.out_plane(), row_bytes = std::max<int64_t>(g.col_rows() * elem_size, 1);
  int64_t b = std::max(kSlabBytes / row_bytes, std::min(kMinBlockColumns, kMaxSlabBytes / row_bytes));
  b = std::max<int64_t>(16, b / 16 * 16);
  return std::max<int64_t>(1, std::min(b, L));
}

// A 1x1 kernel with unit stride and no padding reads the input as it is: no unfold needed.
bool is_pointwise(const ConvGeometry& g) {
  for (int d = 0; d < 3; ++d)
    if (g.kernel[d] != 1 || g.stride[d] != 1 || g.pad[d] != 0) return false;
  return true;
}

// Runs fn(n, grp, c0, c1, slab) over every (sample, group) task in parallel and every column
// block of it in order; `slab` is the calling thread's (col_rows x block) buffer, filled
// with the unfolded block when `unfold` is set. For a pointwise convolution of matching
// dtype the "slab" is a view of the input itself.
template <typename Fn>
void for_each_block(const at::Tensor& input, const ConvGeometry& g, at::ScalarType ct, bool unfold,
                    Fn&& fn) {
  const int64_t L = g.out_plane(), CK = g.col_rows(), Cg = g.in_per_group();
  const int64_t block = column_block(g, at::elementSize(ct));
  const bool view_input = unfold && is_pointwise(g) && input.scalar_type() == ct;
  at::parallel_for(0, g.batch * g.groups, 1, [&](int64_t begin, int64_t end) {
    // Dispatcher state is thread-local and worker threads do not inherit the caller's.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor slab;
    if (!view_input) slab = at::empty({CK, block}, input.options().dtype(ct));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / g.groups, grp = task % g.groups;
      for (int64_t c0 = 0; c0 < L; c0 += block) {
        const int64_t c1 = std::min(L, c0 + block);
        at::Tensor cols;
        if (view_input) {
          cols = input.view({g.batch, g.in_channels, L}).select(0, n).narrow(0, grp * Cg, Cg).narrow(1, c0, c1 - c0);
        } else {
          cols = slab.narrow(1, 0, c1 - c0);
          if (unfold) {
            AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnn_ops_im2col", [&] {
              using src_t = scalar_t;
              AT_DISPATCH_FLOATING_TYPES(ct, "cnn_ops_im2col_col", [&] {
                im2col_block<src_t, scalar_t>(
                    input.const_data_ptr<src_t>() + (n * g.in_channels + grp * Cg) * g.in_plane(),
                    cols.data_ptr<scalar_t>(), cols.stride(0), c0, c1, g);
              });
            });
          }
        }
        fn(n, grp, c0, c1, cols);
      }
    }
  });
}

// Columns [c0, c1) of sample n, channels of group grp, of a (N, channels, L) tensor.
at::Tensor columns_of(const at::Tensor& t, int64_t n, int64_t grp, int64_t per_group, int64_t c0,
                      int64_t c1) {
  return t.select(0, n).narrow(0, grp * per_group, per_group).narrow(1, c0, c1 - c0);
}

at::Tensor im2col_forward(const at::Tensor& input, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const ConvGeometry& g) {
  const at::ScalarType ct = compute_type(input.scalar_type());
  const int64_t Og = g.out_per_group(), L = g.out_plane();
  at::Tensor out = at::empty({g.batch, g.out_channels, L}, input.options());
  const at::Tensor w = weight.to(ct).reshape({g.out_channels, g.col_rows()});
  const bool direct_store = ct == input.scalar_type();
  for_each_block(input, g, ct, /*unfold=*/true, [&](int64_t n, int64_t grp, int64_t c0, int64_t c1,
                                                    const at::Tensor& cols) {
    at::Tensor dst = columns_of(out, n, grp, Og, c0, c1);
    const at::Tensor w_g = w.narrow(0, grp * Og, Og);
    if (direct_store) {
      at::mm_out(dst, w_g, cols);
    } else {
      dst.copy_(at::mm(w_g, cols));
    }
  });
  if (bias.has_value() && bias->defined()) out.add_(bias->view({1, g.out_channels, 1}));
  return out;
}

at::Tensor im2col_input_backward(const at::Tensor& gout, const at::Tensor& weight,
                                 const ConvGeometry& g, at::IntArrayRef input_size) {
  const at::ScalarType ct = compute_type(gout.scalar_type());
  const int64_t Og = g.out_per_group(), Cg = g.in_per_group(), L = g.out_plane();
  const at::Tensor w = weight.to(ct).reshape({g.out_channels, g.col_rows()});
  const at::Tensor gy = gout.view({g.batch, g.out_channels, L}).to(ct);
  at::Tensor gin = at::zeros({g.batch, g.in_channels, g.in_plane()}, gout.options().dtype(ct));
  // Tasks are whole (sample, group) pairs, so the col2im scatter of one task never meets
  // another task's writes.
  for_each_block(gout, g, ct, /*unfold=*/false, [&](int64_t n, int64_t grp, int64_t c0, int64_t c1,
                                                    at::Tensor& slab) {
    at::mm_out(slab, w.narrow(0, grp * Og, Og).t(), columns_of(gy, n, grp, Og, c0, c1));
    AT_DISPATCH_FLOATING_TYPES(ct, "cnn_ops_col2im", [&] {
      col2im_block<scalar_t>(slab.const_data_ptr<scalar_t>(), slab.stride(0), c0, c1,
                             gin.data_ptr<scalar_t>() + (n * g.in_channels + grp * Cg) * g.in_plane(), g);
    });
  });
  return gin.view(input_size).to(gout.scalar_type());
}

at::Tensor im2col_weight_backward(const at::Tensor& gout, const at::Tensor& input,
                                  const ConvGeometry& g, at::IntArrayRef weight_size) {
  const at::ScalarType ct = compute_type(gout.scalar_type());
  const int64_t Og = g.out_per_group(), L = g.out_plane();
  const at::Tensor gy = gout.view({g.batch, g.out_channels, L}).to(ct);
  // One partial sum per thread, added up at the end: threads never write the same memory.
  const int64_t threads = at::get_num_threads();
  at::Tensor partial = at::zeros({threads, g.out_channels, g.col_rows()}, gout.options().dtype(ct));
  for_each_block(input, g, ct, /*unfold=*/true, [&](int64_t n, int64_t grp, int64_t c0, int64_t c1,
                                                    const at::Tensor& cols) {
    const int64_t thread = at::get_thread_num();
    TORCH_INTERNAL_ASSERT(thread >= 0 && thread < threads);
    at::Tensor acc = partial.select(0, thread).narrow(0, grp * Og, Og);
    acc.addmm_(columns_of(gy, n, grp, Og, c0, c1), cols.t());
  });
  at::Tensor gw = partial.select(0, 0);
  for (int64_t t = 1; t < threads; ++t) gw.add_(partial.select(0, t));
  return gw.view(weight_size).to(gout.scalar_type());
}

// ---------------------------------------------------------------------------------------
// The direct passes of the CPU backend.

#define TCO_CONV_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void direct_forward_pass(const at::Tensor& x, const at::Tensor& w, const std::optional<at::Tensor>& b,
                         const ConvGeometry& g, const at::Tensor& out) {
  TCO_CONV_DISPATCH(x.scalar_type(), "cnn_ops_conv_forward", [&] {
    direct_forward<scalar_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                             b ? b->const_data_ptr<scalar_t>() : nullptr, out.mutable_data_ptr<scalar_t>(), g);
  });
}

void direct_input_backward_pass(const at::Tensor& gout, const at::Tensor& w, const ConvGeometry& g,
                                const at::Tensor& gin) {
  TCO_CONV_DISPATCH(gout.scalar_type(), "cnn_ops_conv_input_backward", [&] {
    direct_input_backward<scalar_t>(gout.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                    gin.mutable_data_ptr<scalar_t>(), g);
  });
}

void direct_weight_backward_pass(const at::Tensor& gout, const at::Tensor& x, const ConvGeometry& g,
                                 const at::Tensor& gw) {
  TCO_CONV_DISPATCH(gout.scalar_type(), "cnn_ops_conv_weight_backward", [&] {
    direct_weight_backward<scalar_t>(gout.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                     gw.mutable_data_ptr<scalar_t>(), g);
  });
}

const ConvBackend& cpu_conv_backend() {
  static const ConvBackend backend{c10::DeviceType::CPU,          &direct_forward_pass,
                                   &direct_input_backward_pass,   &direct_weight_backward_pass,
                                   &im2col_forward,               &im2col_input_backward,
                                   &im2col_weight_backward,       &shifted_applies,
                                   &shifted_forward,              &shifted_input_backward,
                                   &shifted_weight_backward,      &winograd_forward_cpu,
                                   &winograd_weight_backward_cpu};
  return backend;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) { tco::register_conv_ops(m, tco::cpu_conv_backend()); }
