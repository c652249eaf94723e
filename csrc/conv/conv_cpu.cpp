// The CPU backend of the conv family (conv_ops.h, whose entries check the arguments and answer
// the empty cases; the shifted-GEMM algorithm is conv_shifted.cpp, for every device).
//
// Two algorithms of its own:
//  * direct: loops over output planes and kernel taps; the innermost loop runs along an
//    output row, so it is a contiguous (for stride 1) multiply-add that the compiler
//    vectorises. Best when each group has few input channels (depthwise), where a GEMM
//    has too little depth to pay for an unfolded copy of the input. Kernels of width 3 at
//    unit stride along the width (3x3 depthwise) take a whole kernel row, or the whole
//    kernel, in one sweep (three_tap_plane, three_tap_columns). On (8, 32, 112x112)
//    depthwise 3x3, raw ops against torch's in the same run (steady allocator, 2 threads):
//    forward 1.21x -> 0.86-0.92x torch's time, input gradient 1.07x -> 0.80-0.88x, weight
//    gradient 1.46x -> 0.82-0.89x.
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
#include <type_traits>
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

// The three_tap passes: 2-d (or 1-d) kernels of width 3 at stride and dilation 1 along the
// width, as 3x3 depthwise layers have. Tap by tap, the direct loops sweep every row once per
// tap and the accumulator plane once per tap; these take a kernel row's three taps (and, for
// 3-row kernels with all three rows inside, the whole kernel) in one sweep, and treat the
// few outputs at a row's ends tap by tap.
bool three_taps(const ConvGeometry& g) {
  return g.kernel[0] == 1 && g.in_size[0] == 1 && g.kernel[2] == 3 && g.stride[2] == 1 && g.dilation[2] == 1;
}

// acc[i] += t[0] * src[i] + t[1] * src[i + 1] + t[2] * src[i + 2]: one kernel row.
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void three_tap_row(acc_t* __restrict acc, const scalar_t* __restrict src, const acc_t* __restrict t,
                                 int64_t n) {
  const acc_t t0 = t[0], t1 = t[1], t2 = t[2];
  for (int64_t i = 0; i < n; ++i)
    acc[i] += t0 * static_cast<acc_t>(src[i]) + t1 * static_cast<acc_t>(src[i + 1]) + t2 * static_cast<acc_t>(src[i + 2]);
}

// The same for three kernel rows over three consecutive source rows (src_step apart).
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void nine_tap_row(acc_t* __restrict acc, const scalar_t* __restrict src, int64_t src_step,
                                const acc_t* __restrict t, int64_t n) {
  const scalar_t* __restrict r0 = src;
  const scalar_t* __restrict r1 = src + src_step;
  const scalar_t* __restrict r2 = src + 2 * src_step;
  const acc_t t0 = t[0], t1 = t[1], t2 = t[2], t3 = t[3], t4 = t[4], t5 = t[5], t6 = t[6], t7 = t[7], t8 = t[8];
  for (int64_t i = 0; i < n; ++i)
    acc[i] += t0 * static_cast<acc_t>(r0[i]) + t1 * static_cast<acc_t>(r0[i + 1]) +
              t2 * static_cast<acc_t>(r0[i + 2]) + t3 * static_cast<acc_t>(r1[i]) +
              t4 * static_cast<acc_t>(r1[i + 1]) + t5 * static_cast<acc_t>(r1[i + 2]) +
              t6 * static_cast<acc_t>(r2[i]) + t7 * static_cast<acc_t>(r2[i + 1]) +
              t8 * static_cast<acc_t>(r2[i + 2]);
}

// p_k[i] += sum over rows r of gout[r * gout_step + i] * in[r * in_step + i + k], k = 0, 1, 2:
// the weight gradient's products, summed down the rows into a partial sum per column. A dot
// product per row ended each row in a horizontal sum that cost more than the row's products.
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void three_tap_columns(acc_t* __restrict p0, acc_t* __restrict p1, acc_t* __restrict p2,
                                     const scalar_t* __restrict gout, const scalar_t* __restrict in, int64_t n,
                                     int64_t rows, int64_t gout_step, int64_t in_step) {
  for (int64_t r = 0; r < rows; ++r, gout += gout_step, in += in_step)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t go = static_cast<acc_t>(gout[i]);
      p0[i] += go * static_cast<acc_t>(in[i]);
      p1[i] += go * static_cast<acc_t>(in[i + 1]);
      p2[i] += go * static_cast<acc_t>(in[i + 2]);
    }
}

// The destinations i in [lo, hi) of a row whose three sources i + shift .. i + shift + 2 lie
// inside the source row.
IndexRange with_three_sources(int64_t width, int64_t src_width, int64_t shift) {
  const int64_t lo = std::clamp<int64_t>(-shift, 0, width);
  return {lo, std::max(lo, std::min(width, src_width - 2 - shift))};
}

// The outputs of a row whose three inputs lie inside it (weight gradient).
IndexRange outputs_with_three_inputs(const ConvGeometry& g) {
  return with_three_sources(g.out_size[2], g.in_size[2], -g.pad[2]);
}

// Forward and input gradient of one plane pair, as one correlation of width 3:
//   acc[d][i] += sum_j sum_t taps[j * 3 + t] * src[source_row(d, j)][i + shift + t]
// over the destination rows d and the kernel rows j whose source row lies inside the plane
// (source_row answers -1 otherwise). Forward: destination = output, source = input, taps =
// the kernel, shift = -pad. Input gradient: destination = input, source = output gradient,
// taps = the kernel reversed (rotated 180°), shift = pad - 2.
template <typename acc_t, typename scalar_t, typename SourceRow>
void three_tap_plane(acc_t* acc, int64_t rows, int64_t width, const scalar_t* src, int64_t src_width,
                     int64_t shift, const acc_t* taps, int64_t kernel_rows, SourceRow&& source_row) {
  const IndexRange mid = with_three_sources(width, src_width, shift);
  const int64_t lo = mid.lo, hi = mid.hi;
  // Whether destination row d takes all three kernel rows, from consecutive source rows.
  const auto whole_kernel = [&](int64_t d) {
    const int64_t first = source_row(d, 0);
    return kernel_rows == 3 && first >= 0 && source_row(d, 1) == first + 1 && source_row(d, 2) == first + 2;
  };
  // Where destination and source rows are equally wide and a run of whole-kernel rows reads
  // one source row further per row, the run's columns [lo, hi) and their sources lie at one
  // fixed distance in the flat planes: one nine_tap_row sweeps the run without a vector tail
  // per row. It is right everywhere but in the columns outside [lo, hi), where it wraps into
  // the neighbouring rows; those are kept before and put back after.
  int64_t run_lo = 0;
  while (run_lo < rows && !whole_kernel(run_lo)) ++run_lo;
  int64_t run_hi = run_lo;
  while (run_hi < rows && whole_kernel(run_hi) && source_row(run_hi, 0) == source_row(run_lo, 0) + run_hi - run_lo)
    ++run_hi;
  if (width != src_width || hi <= lo || run_hi - run_lo < 2) run_lo = run_hi = rows;
  if (run_hi > run_lo) {
    std::vector<acc_t> kept;
    kept.reserve((run_hi - run_lo) * (width - (hi - lo)));
    for (int64_t d = run_lo; d < run_hi; ++d) {
      kept.insert(kept.end(), acc + d * width, acc + d * width + lo);
      kept.insert(kept.end(), acc + d * width + hi, acc + (d + 1) * width);
    }
    nine_tap_row<acc_t, scalar_t>(acc + run_lo * width + lo, src + source_row(run_lo, 0) * src_width + lo + shift,
                                  src_width, taps, (run_hi - 1 - run_lo) * width + hi - lo);
    const acc_t* from = kept.data();
    for (int64_t d = run_lo; d < run_hi; ++d, from += lo + width - hi) {
      std::copy_n(from, lo, acc + d * width);
      std::copy_n(from + lo, width - hi, acc + d * width + hi);
    }
  }
  for (int64_t d = 0; d < rows; ++d) {
    acc_t* acc_row = acc + d * width;
    const bool whole = whole_kernel(d), swept = d >= run_lo && d < run_hi;
    if (whole && !swept && hi > lo)
      nine_tap_row<acc_t, scalar_t>(acc_row + lo, src + source_row(d, 0) * src_width + lo + shift, src_width, taps,
                                    hi - lo);
    for (int64_t j = 0; j < kernel_rows; ++j) {
      const int64_t s = source_row(d, j);
      if (s < 0) continue;
      const scalar_t* src_row = src + s * src_width;
      const acc_t* t = taps + j * 3;
      if (hi > lo && !whole) three_tap_row<acc_t, scalar_t>(acc_row + lo, src_row + lo + shift, t, hi - lo);
      const auto ends = [&](int64_t i) {
        for (int64_t k = 0; k < 3; ++k) {
          const int64_t x = i + shift + k;
          if (x >= 0 && x < src_width) acc_row[i] += t[k] * static_cast<acc_t>(src_row[x]);
        }
      };
      for (int64_t i = 0; i < lo; ++i) ends(i);
      for (int64_t i = hi; i < width; ++i) ends(i);
    }
  }
}

template <typename acc_t, typename scalar_t>
void three_tap_forward(acc_t* acc, const scalar_t* in_c, const acc_t* taps, const ConvGeometry& g) {
  const int64_t H = g.in_size[1];
  three_tap_plane<acc_t, scalar_t>(acc, g.out_size[1], g.out_size[2], in_c, g.in_size[2], -g.pad[2], taps, g.kernel[1],
                                   [&](int64_t oh, int64_t kh) {
                                     const int64_t ih = oh * g.stride[1] + tap_offset(g, 1, kh);
                                     return ih >= 0 && ih < H ? ih : int64_t(-1);
                                   });
}

// `taps` is the kernel reversed: kernel row j of it is row kH - 1 - j of the kernel, mirrored.
template <typename acc_t, typename scalar_t>
void three_tap_input_backward(acc_t* acc, const scalar_t* gout_c, const acc_t* taps, const ConvGeometry& g) {
  const int64_t kH = g.kernel[1], oH = g.out_size[1];
  three_tap_plane<acc_t, scalar_t>(acc, g.in_size[1], g.in_size[2], gout_c, g.out_size[2], g.pad[2] - 2, taps, kH,
                                   [&](int64_t ih, int64_t j) {
                                     const int64_t at = ih - tap_offset(g, 1, kH - 1 - j);  // oh * stride
                                     // (no division at unit stride: it is called a few times per row)
                                     const int64_t oh = g.stride[1] == 1 ? at : at / g.stride[1];
                                     return at >= 0 && oh * g.stride[1] == at && oh < oH ? oh : int64_t(-1);
                                   });
}

// Weight gradient of one (output-gradient plane, input plane) pair: tap (kh, kw) gathers
// gout[o] * in[o - pad + kw] along each row pair. The outputs whose three inputs lie inside
// their row add into `columns` (kernel rows x 3 x their count, see three_tap_columns), the
// few at the rows' ends into `taps` (the filter's kernel_volume taps) directly.
template <typename acc_t, typename scalar_t>
void three_tap_weight_backward(acc_t* taps, acc_t* columns, const scalar_t* gout_c, const scalar_t* in_c,
                               const ConvGeometry& g) {
  const int64_t W = g.in_size[2], oW = g.out_size[2], pad = g.pad[2];
  const IndexRange mid = outputs_with_three_inputs(g);
  const int64_t n = mid.hi - mid.lo;
  for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
    const int64_t offset = tap_offset(g, 1, kh);
    const IndexRange rows = valid_outputs(g, 1, offset);
    if (rows.lo >= rows.hi) continue;
    const scalar_t* gout_rows = gout_c + rows.lo * oW;
    const scalar_t* in_rows = in_c + (rows.lo * g.stride[1] + offset) * W;
    acc_t* p = columns + kh * 3 * n;
    if (n > 0)
      three_tap_columns<acc_t, scalar_t>(p, p + n, p + 2 * n, gout_rows + mid.lo, in_rows + mid.lo - pad, n,
                                         rows.hi - rows.lo, oW, g.stride[1] * W);
    for (int64_t r = 0; r < rows.hi - rows.lo; ++r) {
      const scalar_t* gout_row = gout_rows + r * oW;
      const scalar_t* in_row = in_rows + r * g.stride[1] * W;
      const auto ends = [&](int64_t o) {
        for (int64_t kw = 0; kw < 3; ++kw) {
          const int64_t i = o - pad + kw;
          if (i >= 0 && i < W) taps[kh * 3 + kw] += static_cast<acc_t>(gout_row[o]) * static_cast<acc_t>(in_row[i]);
        }
      };
      for (int64_t o = 0; o < mid.lo; ++o) ends(o);
      for (int64_t o = mid.hi; o < oW; ++o) ends(o);
    }
  }
}

// The plane a direct task accumulates into: the destination plane itself where it holds the
// accumulator type (float, double), else a buffer of the thread's, converted into the
// destination at the end. Copying a float buffer out took a fifth of 3x3 depthwise time.
template <typename acc_t, typename scalar_t>
class AccumulatorPlane {
 public:
  static constexpr bool in_place = std::is_same_v<acc_t, scalar_t>;
  explicit AccumulatorPlane(int64_t size) : size_(size), buffer_(in_place ? 0 : size) {}
  void start(scalar_t* destination, acc_t value) {
    if constexpr (in_place) {
      plane_ = destination;
    } else {
      plane_ = buffer_.data();
    }
    std::fill_n(plane_, size_, value);
  }
  acc_t* data() const { return plane_; }
  void finish(scalar_t* destination) const {
    if constexpr (!in_place) std::copy(buffer_.begin(), buffer_.end(), destination);
  }

 private:
  int64_t size_;
  std::vector<acc_t> buffer_;
  acc_t* plane_ = nullptr;
};

template <typename scalar_t>
void direct_forward(const scalar_t* in, const scalar_t* w, const scalar_t* bias, scalar_t* out,
                    const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t O = g.out_channels, Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  const bool rows_of_three = three_taps(g);
  at::parallel_for(0, g.batch * O, 1, [&](int64_t begin, int64_t end) {
    AccumulatorPlane<acc_t, scalar_t> acc(out_plane);
    std::vector<acc_t> taps(rows_of_three ? K : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / O, oc = task % O, grp = oc / Og;
      acc.start(out + task * out_plane, bias ? static_cast<acc_t>(bias[oc]) : acc_t(0));
      for (int64_t ic = 0; ic < Cg; ++ic) {
        const scalar_t* in_c = in + (n * g.in_channels + grp * Cg + ic) * in_plane;
        const scalar_t* w_c = w + (oc * Cg + ic) * K;
        if (rows_of_three) {
          std::transform(w_c, w_c + K, taps.begin(), [](scalar_t v) { return static_cast<acc_t>(v); });
          three_tap_forward<acc_t, scalar_t>(acc.data(), in_c, taps.data(), g);
          continue;
        }
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          axpy<acc_t, scalar_t>(acc.data() + o, 1, in_c + i, g.stride[2], static_cast<acc_t>(w_c[tap]), count);
        });
      }
      acc.finish(out + task * out_plane);
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
    AccumulatorPlane<acc_t, scalar_t> acc(in_plane);
    std::vector<acc_t> taps(rows_of_three ? K : 0);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / C, c = task % C, grp = c / Cg, ic = c % Cg;
      acc.start(gin + task * in_plane, acc_t(0));
      for (int64_t oc = grp * Og; oc < (grp + 1) * Og; ++oc) {
        const scalar_t* gout_c = gout + (n * g.out_channels + oc) * out_plane;
        const scalar_t* w_c = w + (oc * Cg + ic) * K;
        if (rows_of_three) {
          std::transform(w_c, w_c + K, taps.rbegin(), [](scalar_t v) { return static_cast<acc_t>(v); });
          three_tap_input_backward<acc_t, scalar_t>(acc.data(), gout_c, taps.data(), g);
          continue;
        }
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          axpy<acc_t, scalar_t>(acc.data() + i, g.stride[2], gout_c + o, 1, static_cast<acc_t>(w_c[tap]), count);
        });
      }
      acc.finish(gin + task * in_plane);
    }
  });
}

template <typename scalar_t>
void direct_weight_backward(const scalar_t* gout, const scalar_t* in, scalar_t* gw,
                            const ConvGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane(), out_plane = g.out_plane();
  const bool rows_of_three = three_taps(g);
  // One task per (out channel, in channel of its group) pair: it owns K weight entries.
  at::parallel_for(0, g.out_channels * Cg, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(K);
    // The per-column partial sums of the three_tap pass: 3 per kernel tap row and column.
    const IndexRange mid = rows_of_three ? outputs_with_three_inputs(g) : IndexRange{0, 0};
    const int64_t columns_per_tap = mid.hi - mid.lo;
    std::vector<acc_t> columns(K * columns_per_tap);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t oc = task / Cg, ic = task % Cg, grp = oc / Og;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      std::fill(columns.begin(), columns.end(), acc_t(0));
      for (int64_t n = 0; n < g.batch; ++n) {
        const scalar_t* gout_c = gout + (n * g.out_channels + oc) * out_plane;
        const scalar_t* in_c = in + (n * g.in_channels + grp * Cg + ic) * in_plane;
        if (rows_of_three) {
          three_tap_weight_backward<acc_t, scalar_t>(acc.data(), columns.data(), gout_c, in_c, g);
          continue;
        }
        for_each_tap_row(g, [&](int64_t tap, int64_t o, int64_t i, int64_t count) {
          acc[tap] += dot_strided<acc_t, scalar_t>(gout_c + o, in_c + i, count, g.stride[2]);
        });
      }
      for (int64_t tap = 0; tap < K; ++tap)
        for (int64_t i = 0; i < columns_per_tap; ++i) acc[tap] += columns[tap * columns_per_tap + i];
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
                                   &winograd_weight_backward_cpu, &winograd_input_backward_cpu};
  return backend;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) { tco::register_conv_ops(m, tco::cpu_conv_backend()); }
