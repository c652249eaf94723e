// CPU kernels of the pool family.
//
// One engine for 1-d, 2-d and 3-d pooling (all seen as 3-d, see pool_geometry.h), with a
// reducer per mode: max / min (value and flat index of the winner), sum (avg), sum of
// powers (lp). Work is split over (batch, channel) planes with at::parallel_for; a task owns
// its output plane and, in the backward passes, its input-gradient plane, so nothing races
// and nothing needs atomics.
//
// Regular windows (kernel, stride, padding, dilation) run row by row: for one output row
// (fixed depth and height index) every kernel tap updates the whole row of outputs at once,
// reading the input with the stride (kernel widths 2 and 3: all width taps of an input row
// at once); the taps come in the window's scan order, so ties and NaNs resolve exactly as in
// torch's per-output loop (max: first maximum wins; a NaN wins, and a later NaN replaces an
// earlier one). These row loops are the hot loops and are marked TCO_VECTORIZE.
// Adaptive windows differ per output and use a plain per-output loop.
//
// channels_last 2-d inputs are pooled in that layout, the inner loops running along the
// channels (see the channels_last section), and give channels_last results.
//
// float16 and bfloat16 compute in float32.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "../cpu_vectorize.h"
#include "pool_common.h"
#include "pool_cpu.h"
#include "pool_ops.h"


namespace tco {
namespace {

// Per output index along each dimension, its clipped window; per width tap that reads the
// input somewhere, the outputs it reaches (regular windows only). The other taps read only
// padding and are skipped, so the tables and the tap loops are bounded by the input and output
// sizes whatever the kernel size (a kernel of 2^31 with padding 2^30 is legal).
struct Tables {
  std::vector<PoolWindow> win[3];
  int64_t first_tap = 0;          // taps [first_tap, first_tap + tap_w.size()) read the input
  std::vector<PoolRange> tap_w;   // the outputs that each of them reaches
  PoolRange inner{0, 0};          // outputs along the width that every tap (of all K) reaches
};

Tables make_tables(const PoolGeometry& g) {
  Tables t;
  for (int d = 0; d < 3; ++d) {
    t.win[d].resize(g.out_size[d]);
    for (int64_t o = 0; o < g.out_size[d]; ++o) t.win[d][o] = pool_window(g, d, o);
  }
  if (!g.adaptive) {
    // Tap k reads input o * stride - pad + k * dilation for the outputs o in [0, out): some of
    // them lie in [0, in) iff pad - (out - 1) * stride <= k * dilation <= pad + in - 1.
    const int64_t K = g.kernel[2], dil = g.dilation[2];
    const int64_t lowest = g.pad[2] - (g.out_size[2] - 1) * g.stride[2];
    const int64_t first = lowest <= 0 ? 0 : (lowest + dil - 1) / dil;
    const int64_t last = std::min(K - 1, (g.pad[2] + g.in_size[2] - 1) / dil);
    t.first_tap = std::min(first, K);
    t.tap_w.resize(static_cast<size_t>(std::max<int64_t>(0, last - t.first_tap + 1)));
    for (size_t i = 0; i < t.tap_w.size(); ++i) t.tap_w[i] = pool_tap_outputs(g, 2, t.first_tap + int64_t(i));
    const bool all_taps_read = t.first_tap == 0 && static_cast<int64_t>(t.tap_w.size()) == K;
    t.inner = all_taps_read ? PoolRange{0, g.out_size[2]} : PoolRange{0, 0};
    for (const PoolRange& r : t.tap_w) {
      t.inner.lo = std::max(t.inner.lo, r.lo);
      t.inner.hi = std::min(t.inner.hi, r.hi);
    }
  }
  return t;
}

// Work per at::parallel_for task of the window passes: about 4K elements, less than the other
// passes' 32K because these loops are light per element and small layers gain from two cores.
constexpr int64_t kTaskElems = int64_t(1) << 12;

// ---------------------------------------------------------------------------------------
// Row kernels.

// Max (kMin = false) or min reduction of one tap row into (best, idx):
// for ow in [lo, hi): v = src[ow * step]; replace when v beats best or v is NaN.
template <bool kMin, typename acc_t, typename scalar_t, typename idx_t>
TCO_VECTORIZE void extreme_row(acc_t* __restrict best, idx_t* __restrict idx,
                               const scalar_t* __restrict src, idx_t src_idx, int64_t lo,
                               int64_t hi, int64_t step) {
#define TCO_EXTREME_BODY(STEP)                                                      \
  for (int64_t o = lo; o < hi; ++o) {                                               \
    const acc_t v = static_cast<acc_t>(src[o * (STEP)]);                            \
    const bool take = (kMin ? (v < best[o]) : (v > best[o])) || (v != v);          \
    best[o] = take ? v : best[o];                                                   \
    idx[o] = take ? static_cast<idx_t>(src_idx + o * (STEP)) : idx[o];              \
  }
  if (step == 1) {
    TCO_EXTREME_BODY(1)
  } else if (step == 2) {
    TCO_EXTREME_BODY(2)
  } else {
    TCO_EXTREME_BODY(step)
  }
#undef TCO_EXTREME_BODY
}

// Powers of the lp reduction: kPow 1 is x, 2 is x * x, 0 is pow(x, p).
template <int kPow, typename acc_t>
inline acc_t power(acc_t x, acc_t p) {
  if constexpr (kPow == 1) {
    return x;
  } else if constexpr (kPow == 2) {
    return x * x;
  } else {
    return std::pow(x, p);
  }
}

// acc[o] += src[o * step]^kPow for o in [lo, hi).
template <int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE void sum_row(acc_t* __restrict acc, const scalar_t* __restrict src, int64_t lo,
                           int64_t hi, int64_t step, acc_t p) {
  if (step == 1) {
    for (int64_t o = lo; o < hi; ++o) acc[o] += power<kPow>(static_cast<acc_t>(src[o]), p);
  } else if (step == 2) {
    for (int64_t o = lo; o < hi; ++o) acc[o] += power<kPow>(static_cast<acc_t>(src[o * 2]), p);
  } else {
    for (int64_t o = lo; o < hi; ++o) acc[o] += power<kPow>(static_cast<acc_t>(src[o * step]), p);
  }
}

// dst[o * step] += coef[o] * d(src[o * step]) for o in [lo, hi), where d is 1 (kPow 1: avg
// and lp with p = 1), x (kPow 2) or pow(x, p - 1) (kPow 0). src is unused for kPow 1.
template <int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE void scatter_row(acc_t* __restrict dst, const acc_t* __restrict coef,
                               const scalar_t* __restrict src, int64_t lo, int64_t hi,
                               int64_t step, acc_t p) {
#define TCO_SCATTER_BODY(STEP)                                                               \
  for (int64_t o = lo; o < hi; ++o) {                                                        \
    if constexpr (kPow == 1) {                                                               \
      dst[o * (STEP)] += coef[o];                                                            \
    } else if constexpr (kPow == 2) {                                                        \
      dst[o * (STEP)] += coef[o] * static_cast<acc_t>(src[o * (STEP)]);                      \
    } else {                                                                                 \
      dst[o * (STEP)] += coef[o] * std::pow(static_cast<acc_t>(src[o * (STEP)]), p - 1);     \
    }                                                                                        \
  }
  if (step == 1) {
    TCO_SCATTER_BODY(1)
  } else if (step == 2) {
    TCO_SCATTER_BODY(2)
  } else {
    TCO_SCATTER_BODY(step)
  }
#undef TCO_SCATTER_BODY
}

// ---------------------------------------------------------------------------------------
// Fused row kernels: all KW taps of one input row at once, for the outputs every tap
// reaches, so that each output is loaded and stored once per row instead of once per tap.
// S is the stride along the width (0: the runtime `step`). The taps still come in scan order.

template <int KW, int S, bool kMin, typename acc_t, typename scalar_t, typename idx_t>
TCO_VECTORIZE void extreme_row_fused(acc_t* __restrict best, idx_t* __restrict idx,
                                     const scalar_t* __restrict src, idx_t src_idx, int64_t lo,
                                     int64_t hi, int64_t step_rt, int64_t dil) {
  const int64_t step = S ? S : step_rt;
  for (int64_t o = lo; o < hi; ++o) {
    acc_t b = best[o];
    idx_t ix = idx[o];
#pragma GCC unroll 4
    for (int k = 0; k < KW; ++k) {
      const int64_t q = o * step + k * dil;
      const acc_t v = static_cast<acc_t>(src[q]);
      const bool take = (kMin ? (v < b) : (v > b)) || (v != v);
      b = take ? v : b;
      ix = take ? static_cast<idx_t>(src_idx + q) : ix;
    }
    best[o] = b;
    idx[o] = ix;
  }
}

// acc[o] += sum over the KW taps (dilation 1) of src^kPow.
template <int KW, int S, int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE void sum_row_fused(acc_t* __restrict acc, const scalar_t* __restrict src, int64_t lo,
                                 int64_t hi, int64_t step_rt, acc_t p) {
  const int64_t step = S ? S : step_rt;
  for (int64_t o = lo; o < hi; ++o) {
    acc_t s = 0;
#pragma GCC unroll 4
    for (int k = 0; k < KW; ++k) s += power<kPow>(static_cast<acc_t>(src[o * step + k]), p);
    acc[o] += s;
  }
}

// dst[o * step + k] += coef[o] * d(src[o * step + k]) for the KW taps (dilation 1).
template <int KW, int S, int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE void scatter_row_fused(acc_t* __restrict dst, const acc_t* __restrict coef,
                                     const scalar_t* __restrict src, int64_t lo, int64_t hi,
                                     int64_t step_rt, acc_t p) {
  const int64_t step = S ? S : step_rt;
  for (int64_t o = lo; o < hi; ++o) {
    const acc_t c = coef[o];
#pragma GCC unroll 4
    for (int k = 0; k < KW; ++k) {
      const int64_t q = o * step + k;
      if constexpr (kPow == 1) {
        dst[q] += c;
      } else if constexpr (kPow == 2) {
        dst[q] += c * static_cast<acc_t>(src[q]);
      } else {
        dst[q] += c * std::pow(static_cast<acc_t>(src[q]), p - 1);
      }
    }
  }
}

// Calls fn(std::integral_constant<int, KW>, std::integral_constant<int, S>) for the width
// kernel and stride of `g` when a fused kernel exists for that kernel width (2 or 3), and
// returns whether it did.
template <typename Fn>
inline bool with_fused(const PoolGeometry& g, Fn&& fn) {
  using std::integral_constant;
  const int64_t k = g.kernel[2], s = g.stride[2];
  if (k == 2) {
    if (s == 1) fn(integral_constant<int, 2>{}, integral_constant<int, 1>{});
    else if (s == 2) fn(integral_constant<int, 2>{}, integral_constant<int, 2>{});
    else fn(integral_constant<int, 2>{}, integral_constant<int, 0>{});
    return true;
  }
  if (k == 3) {
    if (s == 1) fn(integral_constant<int, 3>{}, integral_constant<int, 1>{});
    else if (s == 2) fn(integral_constant<int, 3>{}, integral_constant<int, 2>{});
    else fn(integral_constant<int, 3>{}, integral_constant<int, 0>{});
    return true;
  }
  return false;
}

// The width taps of one input row (flat offset `row` of input row (id, ih, 0)) over one
// output row: per_tap(kw, lo, hi, off) runs tap kw for outputs [lo, hi) (reading src + off
// at o * stride), fused(lo, hi, off) all taps at once for [lo, hi), the outputs every tap
// reaches. Each output sees its taps in scan order either way.
template <typename PerTap, typename Fused>
inline void for_row_taps(const PoolGeometry& g, const Tables& t, int64_t row, bool fusable,
                         PerTap&& per_tap, Fused&& fused) {
  const int64_t base = row - g.pad[2];
  const bool fuse = fusable && t.inner.lo < t.inner.hi;
  for (size_t i = 0; i < t.tap_w.size(); ++i) {
    const int64_t kw = t.first_tap + static_cast<int64_t>(i);
    const PoolRange r = t.tap_w[i];
    const int64_t off = base + kw * g.dilation[2];
    if (!fuse) {
      if (r.lo < r.hi) per_tap(kw, r.lo, r.hi, off);
      continue;
    }
    const int64_t a = std::min(r.hi, t.inner.lo), b = std::max(r.lo, t.inner.hi);
    if (r.lo < a) per_tap(kw, r.lo, a, off);
    if (b < r.hi) per_tap(kw, b, r.hi, off);
  }
  if (fuse) fused(t.inner.lo, t.inner.hi, base);
}

// Visits the taps of the (od, oh) window rows: fn(row_offset) with row_offset the flat index
// of input row (id, ih, 0), in scan order.
template <typename Fn>
inline void for_each_window_row(const PoolGeometry& g, const PoolWindow& wd, const PoolWindow& wh, Fn&& fn) {
  const int64_t H = g.in_size[1], W = g.in_size[2];
  for (int64_t kd = 0; kd < wd.count; ++kd) {
    const int64_t id = wd.start + kd * wd.step;
    for (int64_t kh = 0; kh < wh.count; ++kh) {
      const int64_t ih = wh.start + kh * wh.step;
      fn((id * H + ih) * W);
    }
  }
}

// Visits an adaptive window (unit steps) as contiguous spans of the input plane, in scan order:
// fn(flat index of the first tap, number of taps). A window row is one span; a window as wide as
// the input takes its rows of one depth index as a single span (global pooling: the plane).
template <typename Fn>
inline void for_each_adaptive_span(const PoolGeometry& g, const PoolWindow& wd, const PoolWindow& wh,
                                   const PoolWindow& ww, Fn&& fn) {
  const int64_t H = g.in_size[1], W = g.in_size[2];
  if (ww.start == 0 && ww.count == W) {
    for (int64_t kd = 0; kd < wd.count; ++kd) fn(((wd.start + kd) * H + wh.start) * W, wh.count * W);
    return;
  }
  for_each_window_row(g, wd, wh, [&](int64_t row) { fn(row + ww.start, ww.count); });
}

// Visits the taps of a 3-d window in scan order: fn(flat input index).
template <typename Fn>
inline void for_each_tap(const PoolGeometry& g, const PoolWindow& wd, const PoolWindow& wh,
                         const PoolWindow& ww, Fn&& fn) {
  for_each_window_row(g, wd, wh, [&](int64_t row) {
    for (int64_t kw = 0; kw < ww.count; ++kw) fn(row + ww.start + kw * ww.step);
  });
}

// ---------------------------------------------------------------------------------------
// Max / min.

// Start of an output row: no value yet, and the index of the first tap inside the input.
template <typename acc_t, typename idx_t>
TCO_VECTORIZE void init_row(acc_t* __restrict best, idx_t* __restrict idx, const idx_t* __restrict start_w,
                                 idx_t first_row, acc_t init, int64_t n) {
  for (int64_t o = 0; o < n; ++o) {
    best[o] = init;
    idx[o] = first_row + start_w[o];
  }
}

template <typename scalar_t, typename acc_t, typename idx_t>
TCO_VECTORIZE void store_row(scalar_t* __restrict out, int64_t* __restrict ind, const acc_t* __restrict best,
                                  const idx_t* __restrict idx, int64_t n) {
  for (int64_t o = 0; o < n; ++o) {
    out[o] = static_cast<scalar_t>(best[o]);
    ind[o] = static_cast<int64_t>(idx[o]);
  }
}

template <bool kMin, typename scalar_t, typename idx_t>
void extreme_forward(const scalar_t* in, scalar_t* out, int64_t* ind, const PoolGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tables t = make_tables(g);
  const int64_t H = g.in_size[1], W = g.in_size[2], oH = g.out_size[1], oW = g.out_size[2];
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  const acc_t init = kMin ? std::numeric_limits<acc_t>::infinity() : -std::numeric_limits<acc_t>::infinity();
  std::vector<idx_t> start_w(oW);
  for (int64_t ow = 0; ow < oW; ++ow) start_w[ow] = static_cast<idx_t>(t.win[2][ow].start);
  at::parallel_for(0, g.planes, grain_for(in_plane, kTaskElems), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> best(oW);
    std::vector<idx_t> idx(oW);
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* src = in + plane * in_plane;
      for (int64_t od = 0; od < g.out_size[0]; ++od) {
        const PoolWindow& wd = t.win[0][od];
        for (int64_t oh = 0; oh < oH; ++oh) {
          const PoolWindow& wh = t.win[1][oh];
          init_row<acc_t, idx_t>(best.data(), idx.data(), start_w.data(),
                                 static_cast<idx_t>((wd.start * H + wh.start) * W), init, oW);
          if (!g.adaptive) {
            for_each_window_row(g, wd, wh, [&](int64_t row) {
              for_row_taps(
                  g, t, row, g.kernel[2] == 2 || g.kernel[2] == 3,
                  [&](int64_t, int64_t lo, int64_t hi, int64_t off) {
                    extreme_row<kMin, acc_t, scalar_t, idx_t>(best.data(), idx.data(), src + off,
                                                              static_cast<idx_t>(off), lo, hi, g.stride[2]);
                  },
                  [&](int64_t lo, int64_t hi, int64_t off) {
                    with_fused(g, [&](auto kw, auto s) {
                      extreme_row_fused<decltype(kw)::value, decltype(s)::value, kMin, acc_t, scalar_t, idx_t>(
                          best.data(), idx.data(), src + off, static_cast<idx_t>(off), lo, hi, g.stride[2],
                          g.dilation[2]);
                    });
                  });
            });
          } else {
            for (int64_t ow = 0; ow < oW; ++ow) {
              for_each_tap(g, wd, wh, t.win[2][ow], [&](int64_t i) {
                const acc_t v = static_cast<acc_t>(src[i]);
                if ((kMin ? (v < best[ow]) : (v > best[ow])) || std::isnan(v)) {
                  best[ow] = v;
                  idx[ow] = static_cast<idx_t>(i);
                }
              });
            }
          }
          const int64_t o0 = plane * out_plane + (od * oH + oh) * oW;
          store_row<scalar_t, acc_t, idx_t>(out + o0, ind + o0, best.data(), idx.data(), oW);
        }
      }
    }
  });
}

template <typename scalar_t>
void scatter_backward(const scalar_t* gout, const int64_t* ind, scalar_t* gin, const PoolGeometry& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  at::parallel_for(0, g.planes, grain_for(in_plane, kTaskElems), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::is_same_v<acc_t, scalar_t> ? 0 : in_plane);
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* gy = gout + plane * out_plane;
      const int64_t* ix = ind + plane * out_plane;
      scalar_t* gx = gin + plane * in_plane;
      acc_t* acc = std::is_same_v<acc_t, scalar_t> ? reinterpret_cast<acc_t*>(gx) : buf.data();
      std::fill(acc, acc + in_plane, acc_t(0));
      for (int64_t o = 0; o < out_plane; ++o) {
        const int64_t i = ix[o];
        TORCH_CHECK(i >= 0 && i < in_plane, "cnn_ops.max_pool_backward: index ", i,
                    " is outside the input plane of ", in_plane, " elements");
        acc[i] += static_cast<acc_t>(gy[o]);
      }
      if constexpr (!std::is_same_v<acc_t, scalar_t>) {
        for (int64_t i = 0; i < in_plane; ++i) gx[i] = static_cast<scalar_t>(acc[i]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------
// channels_last (NHWC, 2-d pooling only): the channels of one position are contiguous, so
// the inner loops run along the channels, whatever the window. Forward tasks are (sample,
// output row) pairs; backward tasks are samples, each owning its input-gradient sample.

template <bool kMin, typename acc_t, typename scalar_t, typename idx_t>
TCO_VECTORIZE void extreme_channels(acc_t* __restrict best, idx_t* __restrict idx,
                                         const scalar_t* __restrict src, idx_t pos, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    const acc_t v = static_cast<acc_t>(src[c]);
    const bool take = (kMin ? (v < best[c]) : (v > best[c])) || (v != v);
    best[c] = take ? v : best[c];
    idx[c] = take ? pos : idx[c];
  }
}

template <int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE void sum_channels(acc_t* __restrict acc, const scalar_t* __restrict src, int64_t C, acc_t p) {
  for (int64_t c = 0; c < C; ++c) acc[c] += power<kPow>(static_cast<acc_t>(src[c]), p);
}

template <int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE void scatter_channels(acc_t* __restrict dst, const acc_t* __restrict coef,
                                         const scalar_t* __restrict src, int64_t C, acc_t p) {
  for (int64_t c = 0; c < C; ++c) {
    if constexpr (kPow == 1) {
      dst[c] += coef[c];
    } else if constexpr (kPow == 2) {
      dst[c] += coef[c] * static_cast<acc_t>(src[c]);
    } else {
      dst[c] += coef[c] * std::pow(static_cast<acc_t>(src[c]), p - 1);
    }
  }
}

// Visits the taps of the (oh, ow) window of a 2-d pooling: fn(flat spatial position).
template <typename Fn>
inline void for_each_tap_2d(const PoolGeometry& g, const PoolWindow& wh, const PoolWindow& ww, Fn&& fn) {
  for (int64_t kh = 0; kh < wh.count; ++kh) {
    const int64_t row = (wh.start + kh * wh.step) * g.in_size[2];
    for (int64_t kw = 0; kw < ww.count; ++kw) fn(row + ww.start + kw * ww.step);
  }
}

template <bool kMin, typename scalar_t, typename idx_t>
void extreme_forward_cl(const scalar_t* in, scalar_t* out, int64_t* ind, const PoolGeometry& g, int64_t C) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tables t = make_tables(g);
  const int64_t N = g.planes / C, HW = g.in_plane(), oH = g.out_size[1], oW = g.out_size[2];
  const acc_t init = kMin ? std::numeric_limits<acc_t>::infinity() : -std::numeric_limits<acc_t>::infinity();
  at::parallel_for(0, N * oH, grain_for(oW * C * g.kernel_volume(), kTaskElems), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> best(C);
    std::vector<idx_t> idx(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / oH, oh = task % oH;
      const PoolWindow& wh = t.win[1][oh];
      const scalar_t* src = in + n * HW * C;
      for (int64_t ow = 0; ow < oW; ++ow) {
        const PoolWindow& ww = t.win[2][ow];
        std::fill(best.begin(), best.end(), init);
        std::fill(idx.begin(), idx.end(), static_cast<idx_t>(wh.start * g.in_size[2] + ww.start));
        for_each_tap_2d(g, wh, ww, [&](int64_t pos) {
          extreme_channels<kMin, acc_t, scalar_t, idx_t>(best.data(), idx.data(), src + pos * C,
                                                         static_cast<idx_t>(pos), C);
        });
        const int64_t o0 = (task * oW + ow) * C;
        store_row<scalar_t, acc_t, idx_t>(out + o0, ind + o0, best.data(), idx.data(), C);
      }
    }
  });
}

template <typename scalar_t>
void scatter_backward_cl(const scalar_t* gout, const int64_t* ind, scalar_t* gin, const PoolGeometry& g, int64_t C) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t N = g.planes / C, HW = g.in_plane(), oHW = g.out_plane();
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::is_same_v<acc_t, scalar_t> ? 0 : HW * C);
    for (int64_t n = begin; n < end; ++n) {
      scalar_t* gx = gin + n * HW * C;
      acc_t* acc = std::is_same_v<acc_t, scalar_t> ? reinterpret_cast<acc_t*>(gx) : buf.data();
      std::fill(acc, acc + HW * C, acc_t(0));
      const scalar_t* gy = gout + n * oHW * C;
      const int64_t* ix = ind + n * oHW * C;
      for (int64_t o = 0; o < oHW; ++o) {
        for (int64_t c = 0; c < C; ++c) {
          const int64_t i = ix[o * C + c];
          TORCH_CHECK(i >= 0 && i < HW, "cnn_ops.max_pool_backward: index ", i,
                      " is outside the input plane of ", HW, " elements");
          acc[i * C + c] += static_cast<acc_t>(gy[o * C + c]);
        }
      }
      if constexpr (!std::is_same_v<acc_t, scalar_t>) {
        for (int64_t i = 0; i < HW * C; ++i) gx[i] = static_cast<scalar_t>(acc[i]);
      }
    }
  });
}

// ---------------------------------------------------------------------------------------
// Sums: avg (kPow 1, lp false), lp (any kPow, lp true).
//
// avg: out = sum / divisor (0 for a window entirely in the padding), torch's divisor rule.
// lp:  out = (sum(x^p) / divisor * kernel_volume)^(1/p), as torch's
//      sign(avg) * relu(|avg|) * kernel_volume then ^(1/p).

template <typename acc_t>
struct SumFinish {
  bool lp;
  acc_t p;
  acc_t kvol;
  // The value of the output from the window sum and divisor.
  acc_t value(acc_t sum, int64_t div) const {
    const acc_t avg = sum / static_cast<acc_t>(div);
    if (!lp) return avg;
    const acc_t base = avg * kvol;
    return p == acc_t(2) ? std::sqrt(base) : std::pow(base, acc_t(1) / p);
  }
  // d out / d sum-term times the upstream gradient: what each tap's power derivative is
  // multiplied by. avg: gy / divisor. lp: gy * base^(1/p - 1) * kvol / divisor (0 where the
  // sum is 0, as torch's relu gives), the factor p of d(x^p) cancelling the 1/p of the root.
  acc_t coef(acc_t gy, acc_t sum, int64_t div) const {
    if (!lp) return gy / static_cast<acc_t>(div);
    const acc_t base = sum / static_cast<acc_t>(div) * kvol;
    if (base == acc_t(0)) return acc_t(0);
    const acc_t scale = p == acc_t(2) ? acc_t(1) / std::sqrt(base) : std::pow(base, acc_t(1) / p - acc_t(1));
    return gy * scale * kvol / static_cast<acc_t>(div);
  }
};

// Sum of the powers of n contiguous values (vectorised: the order of the additions is the
// compiler's, within float rounding of the sequential sum).
template <int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE acc_t span_sum(const scalar_t* __restrict src, int64_t n, acc_t p) {
  acc_t s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += power<kPow>(static_cast<acc_t>(src[i]), p);
  return s;
}

// dst[i] += coef * d(x^p)/dx / p over n contiguous values (the gradient of a span_sum).
template <int kPow, typename acc_t, typename scalar_t>
TCO_VECTORIZE void span_scatter(acc_t* __restrict dst, acc_t coef, const scalar_t* __restrict src, int64_t n,
                                acc_t p) {
  for (int64_t i = 0; i < n; ++i) {
    if constexpr (kPow == 1) {
      dst[i] += coef;
    } else if constexpr (kPow == 2) {
      dst[i] += coef * static_cast<acc_t>(src[i]);
    } else {
      dst[i] += coef * std::pow(static_cast<acc_t>(src[i]), p - 1);
    }
  }
}

// Adaptive pooling to one output per plane, whose window is the whole (non-empty) plane.
// Its divisor is the plane's size.
inline bool global_pooling(const PoolGeometry& g) {
  return g.adaptive && g.out_plane() == 1 && g.in_plane() > 0 && g.divisor_override == 0;
}

// Window sums of one output row into acc[0, oW).
template <int kPow, typename scalar_t, typename acc_t>
inline void row_sums(const scalar_t* src, acc_t* acc, const PoolGeometry& g, const Tables& t,
                     const PoolWindow& wd, const PoolWindow& wh, acc_t p) {
  const int64_t oW = g.out_size[2];
  std::fill(acc, acc + oW, acc_t(0));
  if (!g.adaptive) {
    const bool fusable = g.dilation[2] == 1 && (g.kernel[2] == 2 || g.kernel[2] == 3);
    for_each_window_row(g, wd, wh, [&](int64_t row) {
      for_row_taps(
          g, t, row, fusable,
          [&](int64_t, int64_t lo, int64_t hi, int64_t off) {
            sum_row<kPow, acc_t, scalar_t>(acc, src + off, lo, hi, g.stride[2], p);
          },
          [&](int64_t lo, int64_t hi, int64_t off) {
            with_fused(g, [&](auto kw, auto s) {
              sum_row_fused<decltype(kw)::value, decltype(s)::value, kPow, acc_t, scalar_t>(acc, src + off, lo, hi,
                                                                                           g.stride[2], p);
            });
          });
    });
  } else {
    for (int64_t ow = 0; ow < oW; ++ow) {
      acc_t s = 0;
      for_each_adaptive_span(g, wd, wh, t.win[2][ow],
                             [&](int64_t i, int64_t n) { s += span_sum<kPow, acc_t>(src + i, n, p); });
      acc[ow] = s;
    }
  }
}

template <int kPow, typename scalar_t>
void sum_forward(const scalar_t* in, scalar_t* out, const PoolGeometry& g, const SumFinish<at::opmath_type<scalar_t>>& fin) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  if (global_pooling(g)) {
    // One sum per plane, without the window loops (their cost per plane is that of the sum of a
    // 4x4 plane: SE blocks pool thousands of such planes).
    at::parallel_for(0, g.planes, grain_for(in_plane, kTaskElems), [&](int64_t begin, int64_t end) {
      for (int64_t plane = begin; plane < end; ++plane)
        out[plane] = static_cast<scalar_t>(fin.value(span_sum<kPow, acc_t>(in + plane * in_plane, in_plane, fin.p),
                                                     in_plane));
    });
    return;
  }
  const Tables t = make_tables(g);
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  at::parallel_for(0, g.planes, grain_for(in_plane, kTaskElems), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(oW);
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* src = in + plane * in_plane;
      for (int64_t od = 0; od < g.out_size[0]; ++od) {
        const PoolWindow& wd = t.win[0][od];
        for (int64_t oh = 0; oh < oH; ++oh) {
          const PoolWindow& wh = t.win[1][oh];
          row_sums<kPow>(src, acc.data(), g, t, wd, wh, fin.p);
          scalar_t* dst = out + plane * out_plane + (od * oH + oh) * oW;
          for (int64_t ow = 0; ow < oW; ++ow) {
            const PoolWindow& ww = t.win[2][ow];
            const bool empty = wd.count == 0 || wh.count == 0 || ww.count == 0;
            dst[ow] = empty ? scalar_t(0) : static_cast<scalar_t>(fin.value(acc[ow], pool_divisor(g, wd, wh, ww)));
          }
        }
      }
    }
  });
}

// Input gradient of avg (input may be null) and lp (input needed to recompute the sums).
template <int kPow, typename scalar_t>
void sum_backward(const scalar_t* gout, const scalar_t* in, scalar_t* gin, const PoolGeometry& g,
                  const SumFinish<at::opmath_type<scalar_t>>& fin) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
  if (global_pooling(g)) {
    at::parallel_for(0, g.planes, grain_for(in_plane, kTaskElems), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> buf(std::is_same_v<acc_t, scalar_t> ? 0 : in_plane);
      for (int64_t plane = begin; plane < end; ++plane) {
        const scalar_t* src = in ? in + plane * in_plane : nullptr;
        scalar_t* gx = gin + plane * in_plane;
        acc_t* acc = std::is_same_v<acc_t, scalar_t> ? reinterpret_cast<acc_t*>(gx) : buf.data();
        const acc_t sum = fin.lp ? span_sum<kPow, acc_t>(src, in_plane, fin.p) : acc_t(0);
        std::fill(acc, acc + in_plane, acc_t(0));
        span_scatter<kPow, acc_t>(acc, fin.coef(static_cast<acc_t>(gout[plane]), sum, in_plane), src, in_plane, fin.p);
        if constexpr (!std::is_same_v<acc_t, scalar_t>) {
          for (int64_t i = 0; i < in_plane; ++i) gx[i] = static_cast<scalar_t>(acc[i]);
        }
      }
    });
    return;
  }
  const Tables t = make_tables(g);
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  at::parallel_for(0, g.planes, grain_for(in_plane, kTaskElems), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::is_same_v<acc_t, scalar_t> ? 0 : in_plane);
    std::vector<acc_t> sums(oW), coef(oW);
    for (int64_t plane = begin; plane < end; ++plane) {
      const scalar_t* src = in ? in + plane * in_plane : nullptr;
      scalar_t* gx = gin + plane * in_plane;
      acc_t* acc = std::is_same_v<acc_t, scalar_t> ? reinterpret_cast<acc_t*>(gx) : buf.data();
      std::fill(acc, acc + in_plane, acc_t(0));
      for (int64_t od = 0; od < g.out_size[0]; ++od) {
        const PoolWindow& wd = t.win[0][od];
        for (int64_t oh = 0; oh < oH; ++oh) {
          const PoolWindow& wh = t.win[1][oh];
          if (fin.lp) row_sums<kPow>(src, sums.data(), g, t, wd, wh, fin.p);
          const scalar_t* gy = gout + plane * out_plane + (od * oH + oh) * oW;
          for (int64_t ow = 0; ow < oW; ++ow) {
            const PoolWindow& ww = t.win[2][ow];
            const bool empty = wd.count == 0 || wh.count == 0 || ww.count == 0;
            coef[ow] = empty ? acc_t(0) : fin.coef(static_cast<acc_t>(gy[ow]), fin.lp ? sums[ow] : acc_t(0),
                                                   pool_divisor(g, wd, wh, ww));
          }
          if (!g.adaptive) {
            const bool fusable = g.dilation[2] == 1 && (g.kernel[2] == 2 || g.kernel[2] == 3);
            for_each_window_row(g, wd, wh, [&](int64_t row) {
              for_row_taps(
                  g, t, row, fusable,
                  [&](int64_t, int64_t lo, int64_t hi, int64_t off) {
                    scatter_row<kPow, acc_t, scalar_t>(acc + off, coef.data(), src ? src + off : nullptr, lo, hi,
                                                       g.stride[2], fin.p);
                  },
                  [&](int64_t lo, int64_t hi, int64_t off) {
                    with_fused(g, [&](auto kw, auto s) {
                      scatter_row_fused<decltype(kw)::value, decltype(s)::value, kPow, acc_t, scalar_t>(
                          acc + off, coef.data(), src ? src + off : nullptr, lo, hi, g.stride[2], fin.p);
                    });
                  });
            });
          } else {
            for (int64_t ow = 0; ow < oW; ++ow) {
              for_each_adaptive_span(g, wd, wh, t.win[2][ow], [&](int64_t i, int64_t n) {
                span_scatter<kPow, acc_t>(acc + i, coef[ow], src ? src + i : nullptr, n, fin.p);
              });
            }
          }
        }
      }
      if constexpr (!std::is_same_v<acc_t, scalar_t>) {
        for (int64_t i = 0; i < in_plane; ++i) gx[i] = static_cast<scalar_t>(acc[i]);
      }
    }
  });
}

template <int kPow, typename scalar_t>
void sum_forward_cl(const scalar_t* in, scalar_t* out, const PoolGeometry& g, int64_t C,
                    const SumFinish<at::opmath_type<scalar_t>>& fin) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tables t = make_tables(g);
  const int64_t N = g.planes / C, HW = g.in_plane(), oH = g.out_size[1], oW = g.out_size[2];
  const PoolWindow& wd = t.win[0][0];
  at::parallel_for(0, N * oH, grain_for(oW * C * g.kernel_volume(), kTaskElems), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / oH, oh = task % oH;
      const PoolWindow& wh = t.win[1][oh];
      const scalar_t* src = in + n * HW * C;
      for (int64_t ow = 0; ow < oW; ++ow) {
        const PoolWindow& ww = t.win[2][ow];
        scalar_t* dst = out + (task * oW + ow) * C;
        if (wh.count == 0 || ww.count == 0) {
          std::fill(dst, dst + C, scalar_t(0));
          continue;
        }
        std::fill(acc.begin(), acc.end(), acc_t(0));
        for_each_tap_2d(g, wh, ww, [&](int64_t pos) { sum_channels<kPow, acc_t, scalar_t>(acc.data(), src + pos * C, C, fin.p); });
        const int64_t div = pool_divisor(g, wd, wh, ww);
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<scalar_t>(fin.value(acc[c], div));
      }
    }
  });
}

template <int kPow, typename scalar_t>
void sum_backward_cl(const scalar_t* gout, const scalar_t* in, scalar_t* gin, const PoolGeometry& g, int64_t C,
                     const SumFinish<at::opmath_type<scalar_t>>& fin) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tables t = make_tables(g);
  const int64_t N = g.planes / C, HW = g.in_plane(), oH = g.out_size[1], oW = g.out_size[2];
  const PoolWindow& wd = t.win[0][0];
  at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> buf(std::is_same_v<acc_t, scalar_t> ? 0 : HW * C);
    std::vector<acc_t> sums(C), coef(C);
    for (int64_t n = begin; n < end; ++n) {
      scalar_t* gx = gin + n * HW * C;
      acc_t* acc = std::is_same_v<acc_t, scalar_t> ? reinterpret_cast<acc_t*>(gx) : buf.data();
      std::fill(acc, acc + HW * C, acc_t(0));
      const scalar_t* src = in ? in + n * HW * C : nullptr;
      for (int64_t oh = 0; oh < oH; ++oh) {
        const PoolWindow& wh = t.win[1][oh];
        for (int64_t ow = 0; ow < oW; ++ow) {
          const PoolWindow& ww = t.win[2][ow];
          if (wh.count == 0 || ww.count == 0) continue;
          const int64_t div = pool_divisor(g, wd, wh, ww);
          const scalar_t* gy = gout + ((n * oH + oh) * oW + ow) * C;
          if (fin.lp) {
            std::fill(sums.begin(), sums.end(), acc_t(0));
            for_each_tap_2d(g, wh, ww, [&](int64_t pos) { sum_channels<kPow, acc_t, scalar_t>(sums.data(), src + pos * C, C, fin.p); });
          }
          for (int64_t c = 0; c < C; ++c) coef[c] = fin.coef(static_cast<acc_t>(gy[c]), sums[c], div);
          for_each_tap_2d(g, wh, ww, [&](int64_t pos) {
            scatter_channels<kPow, acc_t, scalar_t>(acc + pos * C, coef.data(), src ? src + pos * C : nullptr, C, fin.p);
          });
        }
      }
      if constexpr (!std::is_same_v<acc_t, scalar_t>) {
        for (int64_t i = 0; i < HW * C; ++i) gx[i] = static_cast<scalar_t>(acc[i]);
      }
    }
  });
}

// Runs fn.template operator()<kPow>() with the power kind of norm_type.
template <typename Fn>
void with_power(double norm_type, Fn&& fn) {
  if (norm_type == 1.0) {
    fn(std::integral_constant<int, 1>{});
  } else if (norm_type == 2.0) {
    fn(std::integral_constant<int, 2>{});
  } else {
    fn(std::integral_constant<int, 0>{});
  }
}

// ---------------------------------------------------------------------------------------
// The CPU backend of the window / adaptive pooling ops (pool_ops.h).

#define TCO_POOL_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

void extreme_forward_pass(const at::Tensor& x, const PoolGeometry& g, bool minimum, const at::Tensor& out,
                          const at::Tensor& ind) {
  const bool cl = use_channels_last(x);  // the layout the entry chose
  const bool small = g.in_plane() < std::numeric_limits<int32_t>::max();
  const int64_t C = x.size(1);
  TCO_POOL_DISPATCH(x.scalar_type(), "cnn_ops_max_pool_forward", [&] {
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    int64_t* ix = ind.mutable_data_ptr<int64_t>();
    auto run = [&](auto is_min, auto idx_tag) {
      constexpr bool kMin = decltype(is_min)::value;
      using idx_t = decltype(idx_tag);
      if (cl) {
        extreme_forward_cl<kMin, scalar_t, idx_t>(src, dst, ix, g, C);
      } else {
        extreme_forward<kMin, scalar_t, idx_t>(src, dst, ix, g);
      }
    };
    using yes = std::true_type;
    using no = std::false_type;
    if (minimum) {
      if (small) run(yes{}, int32_t{}); else run(yes{}, int64_t{});
    } else {
      if (small) run(no{}, int32_t{}); else run(no{}, int64_t{});
    }
  });
}

void scatter_backward_pass(const at::Tensor& gy, const at::Tensor& ix, const PoolGeometry& g, const at::Tensor& gin) {
  const bool cl = use_channels_last(gin);  // the layout the entry chose
  TCO_POOL_DISPATCH(gy.scalar_type(), "cnn_ops_max_pool_backward", [&] {
    if (cl) {
      scatter_backward_cl<scalar_t>(gy.const_data_ptr<scalar_t>(), ix.const_data_ptr<int64_t>(),
                                    gin.mutable_data_ptr<scalar_t>(), g, gin.size(1));
    } else {
      scatter_backward<scalar_t>(gy.const_data_ptr<scalar_t>(), ix.const_data_ptr<int64_t>(),
                                 gin.mutable_data_ptr<scalar_t>(), g);
    }
  });
}

void sum_forward_pass(const at::Tensor& x, const PoolGeometry& g, bool lp, double norm_type, const at::Tensor& out) {
  const bool cl = use_channels_last(x);  // the layout the entry chose
  TCO_POOL_DISPATCH(x.scalar_type(), "cnn_ops_sum_pool_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const SumFinish<acc_t> fin{lp, static_cast<acc_t>(norm_type), static_cast<acc_t>(g.kernel_volume())};
    with_power(lp ? norm_type : 1.0, [&](auto pow_kind) {
      constexpr int kPow = decltype(pow_kind)::value;
      if (cl) {
        sum_forward_cl<kPow, scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g, x.size(1),
                                       fin);
      } else {
        sum_forward<kPow, scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g, fin);
      }
    });
  });
}

void sum_backward_pass(const at::Tensor& gy, const at::Tensor& x, const PoolGeometry& g, bool lp, double norm_type,
                       const at::Tensor& gin) {
  const bool cl = use_channels_last(gin);  // the layout the entry chose
  TCO_POOL_DISPATCH(gy.scalar_type(), "cnn_ops_sum_pool_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const SumFinish<acc_t> fin{lp, static_cast<acc_t>(norm_type), static_cast<acc_t>(g.kernel_volume())};
    const scalar_t* src = x.defined() ? x.const_data_ptr<scalar_t>() : nullptr;
    with_power(lp ? norm_type : 1.0, [&](auto pow_kind) {
      constexpr int kPow = decltype(pow_kind)::value;
      if (cl) {
        sum_backward_cl<kPow, scalar_t>(gy.const_data_ptr<scalar_t>(), src, gin.mutable_data_ptr<scalar_t>(), g,
                                        gin.size(1), fin);
      } else {
        sum_backward<kPow, scalar_t>(gy.const_data_ptr<scalar_t>(), src, gin.mutable_data_ptr<scalar_t>(), g, fin);
      }
    });
  });
}

}  // namespace

const PoolBackend& cpu_pool_backend() {
  static const PoolBackend backend{c10::DeviceType::CPU,
                                   /*channels_last=*/true,
                                   &extreme_forward_pass,
                                   &scatter_backward_pass,
                                   &sum_forward_pass,
                                   &sum_backward_pass,
                                   &kmax_forward_cpu,
                                   &kmax_backward_cpu,
                                   &gaussian_forward_cpu,
                                   &gaussian_backward_cpu,
                                   &stochastic_train_cpu,
                                   &stochastic_eval_cpu,
                                   &stochastic_eval_backward_cpu};
  return backend;
}

}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) { tco::register_pool_ops(m, tco::cpu_pool_backend()); }
