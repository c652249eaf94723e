// The CPU backend of the norm family (norm_backend.h) and the CPU registration of its ops.
//
// Every pass streams the data once. Reductions work on blocks that stay in L1 (kBlock values
// of a row, or kBlockValues values of an interleaved slab): a block is summed with kLanes
// independent accumulators (so the compiler vectorises the loop without reassociating), its
// mean taken, its squared deviations from that mean summed in a second sweep over the still
// cached block, and the block's (count, mean, m2) merged into the running ones in float64 with
// Chan's formula. That keeps the variance accurate for data far from zero (values around 1e4
// with a spread of 1 in float32), which E[x^2] - E[x]^2 is not.
//
// Parallel over rows, or over pieces of rows when there are fewer rows than threads (a few
// long rows of layer norm or of a small batch); partial results merge in a fixed order, so
// results do not depend on the thread count's timing.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../cpu_vectorize.h"
#include "norm_ops.h"

namespace tco {
namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kBlock = 2048;          // values of a row per block
constexpr int64_t kBlockValues = 8192;    // values per block of an interleaved slab
constexpr int64_t kMinPiece = 16384;      // smallest piece of a row given to one task
constexpr int64_t kGrainValues = 32768;   // values per task at least

// Count, mean and sum of squared deviations of a set of values, merged with Chan's formula.
struct Moments {
  double count = 0, mean = 0, m2 = 0;
  void merge(double n, double block_mean, double block_m2) {
    if (n == 0) return;
    const double total = count + n;
    const double delta = block_mean - mean;
    mean += delta * (n / total);
    m2 += block_m2 + delta * delta * (count * n / total);
    count = total;
  }
  void merge(const Moments& o) { merge(o.count, o.mean, o.m2); }
};

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE acc_t block_sum(const scalar_t* __restrict x, int64_t n) {
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) lane[l] += static_cast<acc_t>(x[i + l]);
  acc_t s = 0;
  for (; i < n; ++i) s += static_cast<acc_t>(x[i]);
  for (int64_t l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE acc_t block_m2(const scalar_t* __restrict x, int64_t n, acc_t mean) {
  acc_t lane[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int64_t l = 0; l < kLanes; ++l) {
      const acc_t d = static_cast<acc_t>(x[i + l]) - mean;
      lane[l] += d * d;
    }
  acc_t s = 0;
  for (; i < n; ++i) {
    const acc_t d = static_cast<acc_t>(x[i]) - mean;
    s += d * d;
  }
  for (int64_t l = 0; l < kLanes; ++l) s += lane[l];
  return s;
}

// Sums of dy * w and dy * w * (x - mean) over n values (w = 1 when null). OpenMP simd
// reductions rather than the kLanes accumulators of block_sum: with two lane arrays GCC
// vectorised the outer loop through permutes (a 40 KB clone at a third of the bandwidth).
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void block_grad_sums(const scalar_t* __restrict dy, const scalar_t* __restrict x,
                                   const acc_t* __restrict w, int64_t n, acc_t mean, acc_t& sum_dy,
                                   acc_t& sum_dy_xmu) {
  acc_t s1 = 0, s2 = 0;
  if (w == nullptr) {
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t g = static_cast<acc_t>(dy[i]);
      s1 += g;
      s2 += g * (static_cast<acc_t>(x[i]) - mean);
    }
  } else {
#pragma omp simd reduction(+ : s1, s2)
    for (int64_t i = 0; i < n; ++i) {
      const acc_t g = static_cast<acc_t>(dy[i]) * w[i];
      s1 += g;
      s2 += g * (static_cast<acc_t>(x[i]) - mean);
    }
  }
  sum_dy = s1;
  sum_dy_xmu = s2;
}

// Moments of n contiguous values, block by block.
template <typename acc_t, typename scalar_t>
Moments span_moments(const scalar_t* x, int64_t n) {
  Moments m;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t nb = std::min(kBlock, n - b);
    const acc_t mean = block_sum<acc_t>(x + b, nb) / static_cast<acc_t>(nb);
    m.merge(static_cast<double>(nb), static_cast<double>(mean), static_cast<double>(block_m2<acc_t>(x + b, nb, mean)));
  }
  return m;
}

// Sums of dy * w and dy * w * (x - mean) over n contiguous values (w null: 1), block by block:
// each block's in the compute type (block_grad_sums), the blocks' added in double.
template <typename acc_t, typename scalar_t>
void span_grad_sums(const scalar_t* dy, const scalar_t* x, const acc_t* w, int64_t n, acc_t mean, double& sum_dy,
                    double& sum_dy_xmu) {
  double a = 0, b = 0;
  for (int64_t i = 0; i < n; i += kBlock) {
    acc_t ba, bb;
    block_grad_sums<acc_t>(dy + i, x + i, w ? w + i : nullptr, std::min(kBlock, n - i), mean, ba, bb);
    a += ba;
    b += bb;
  }
  sum_dy = a;
  sum_dy_xmu = b;
}

// Splits R rows of L values into pieces for the tasks: a row is cut only when rows are too
// few to occupy the threads.
int64_t pieces_per_row(int64_t R, int64_t L) {
  const int64_t threads = at::get_num_threads();
  if (R >= 4 * threads || L < 2 * kMinPiece) return 1;
  return std::max<int64_t>(1, std::min((4 * threads + R - 1) / R, L / kMinPiece));
}

// Runs fn(row, begin, end) over every piece of every row in parallel and returns nothing;
// fn writes to its own slot (row * pieces + piece).
template <typename Fn>
void for_each_piece(int64_t R, int64_t L, int64_t pieces, const Fn& fn) {
  const int64_t piece_len = (L + pieces - 1) / pieces;
  const int64_t grain = std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, piece_len));
  at::parallel_for(0, R * pieces, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t r = t / pieces, p = t % pieces;
      const int64_t lo = p * piece_len, hi = std::min(L, lo + piece_len);
      fn(t, r, lo, hi);
    }
  });
}

// Row ranges of an interleaved R x L matrix, one per task (about one per thread).
template <typename Fn>
void for_each_row_range(int64_t R, int64_t L, const Fn& fn, int64_t& num_tasks) {
  const int64_t threads = at::get_num_threads();
  const int64_t by_work = std::max<int64_t>(1, R * L / kGrainValues);
  num_tasks = std::max<int64_t>(1, std::min({threads, by_work, R}));
  const int64_t rows_per_task = (R + num_tasks - 1) / num_tasks;
  num_tasks = (R + rows_per_task - 1) / rows_per_task;
  at::parallel_for(0, num_tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) fn(t, t * rows_per_task, std::min(R, (t + 1) * rows_per_task));
  });
}

// ---- interleaved (one group per column) reductions ----

// Column reductions of a block of an interleaved matrix (rows x L, one group per column).
// The rows are read in order, four at a time: each accumulator (in memory, L of them) is
// loaded and stored once per four rows rather than once per row. (Accumulators held in
// registers for a chunk of columns at a time made the reads strided, slower for L > 64.)
constexpr int64_t kRowStep = 4;

// Column means of `rows` rows. The sums are of the deviations from the block's first row:
// one accumulator per column adds thousands of values, and values far from zero (1e4 with a
// spread of 1) would lose their low digits in a float32 sum of the values themselves.
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void column_means(acc_t* __restrict mean, const scalar_t* __restrict x, int64_t rows, int64_t L) {
  for (int64_t c = 0; c < L; ++c) mean[c] = 0;
  int64_t r = 1;
  for (; r + kRowStep <= rows; r += kRowStep) {
    const scalar_t *__restrict r0 = x + r * L, *__restrict r1 = r0 + L, *__restrict r2 = r1 + L,
                   *__restrict r3 = r2 + L;
    for (int64_t c = 0; c < L; ++c) {
      const acc_t base = static_cast<acc_t>(x[c]);
      mean[c] += ((static_cast<acc_t>(r0[c]) - base) + (static_cast<acc_t>(r1[c]) - base)) +
                 ((static_cast<acc_t>(r2[c]) - base) + (static_cast<acc_t>(r3[c]) - base));
    }
  }
  for (; r < rows; ++r) {
    const scalar_t* __restrict row = x + r * L;
    for (int64_t c = 0; c < L; ++c) mean[c] += static_cast<acc_t>(row[c]) - static_cast<acc_t>(x[c]);
  }
  for (int64_t c = 0; c < L; ++c) mean[c] = static_cast<acc_t>(x[c]) + mean[c] / static_cast<acc_t>(rows);
}

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void column_m2(acc_t* __restrict m2, const acc_t* __restrict mean, const scalar_t* __restrict x,
                             int64_t rows, int64_t L) {
  for (int64_t c = 0; c < L; ++c) m2[c] = 0;
  int64_t r = 0;
  for (; r + kRowStep <= rows; r += kRowStep) {
    const scalar_t *__restrict r0 = x + r * L, *__restrict r1 = r0 + L, *__restrict r2 = r1 + L,
                   *__restrict r3 = r2 + L;
    for (int64_t c = 0; c < L; ++c) {
      const acc_t d0 = static_cast<acc_t>(r0[c]) - mean[c], d1 = static_cast<acc_t>(r1[c]) - mean[c];
      const acc_t d2 = static_cast<acc_t>(r2[c]) - mean[c], d3 = static_cast<acc_t>(r3[c]) - mean[c];
      m2[c] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
    }
  }
  for (; r < rows; ++r) {
    const scalar_t* __restrict row = x + r * L;
    for (int64_t c = 0; c < L; ++c) {
      const acc_t dv = static_cast<acc_t>(row[c]) - mean[c];
      m2[c] += dv * dv;
    }
  }
}

// Chan's merge of a block of nb rows into (count na) running per-column moments.
template <typename acc_t>
TCO_VECTORIZE void merge_columns(double* __restrict mean, double* __restrict m2, const acc_t* __restrict bmean,
                                 const acc_t* __restrict bm2, double na, double nb, int64_t L) {
  const double f = nb / (na + nb), g = na * nb / (na + nb);
  for (int64_t c = 0; c < L; ++c) {
    const double delta = static_cast<double>(bmean[c]) - mean[c];
    mean[c] += delta * f;
    m2[c] += static_cast<double>(bm2[c]) + delta * delta * g;
  }
}

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void column_grad_sums(acc_t* __restrict s1, acc_t* __restrict s2, const scalar_t* __restrict dy,
                                    const scalar_t* __restrict x, const acc_t* __restrict mean, int64_t rows,
                                    int64_t L) {
  for (int64_t c = 0; c < L; ++c) s1[c] = s2[c] = 0;
  int64_t r = 0;
  for (; r + kRowStep <= rows; r += kRowStep) {
    const scalar_t *__restrict g0 = dy + r * L, *__restrict g1 = g0 + L, *__restrict g2 = g1 + L,
                   *__restrict g3 = g2 + L;
    const scalar_t *__restrict v0 = x + r * L, *__restrict v1 = v0 + L, *__restrict v2 = v1 + L,
                   *__restrict v3 = v2 + L;
    for (int64_t c = 0; c < L; ++c) {
      const acc_t a0 = static_cast<acc_t>(g0[c]), a1 = static_cast<acc_t>(g1[c]);
      const acc_t a2 = static_cast<acc_t>(g2[c]), a3 = static_cast<acc_t>(g3[c]);
      s1[c] += (a0 + a1) + (a2 + a3);
      s2[c] += (a0 * (static_cast<acc_t>(v0[c]) - mean[c]) + a1 * (static_cast<acc_t>(v1[c]) - mean[c])) +
               (a2 * (static_cast<acc_t>(v2[c]) - mean[c]) + a3 * (static_cast<acc_t>(v3[c]) - mean[c]));
    }
  }
  for (; r < rows; ++r) {
    const scalar_t* __restrict g = dy + r * L;
    const scalar_t* __restrict v = x + r * L;
    for (int64_t c = 0; c < L; ++c) {
      const acc_t d = static_cast<acc_t>(g[c]);
      s1[c] += d;
      s2[c] += d * (static_cast<acc_t>(v[c]) - mean[c]);
    }
  }
}

int64_t block_rows(int64_t L) { return std::max<int64_t>(8, kBlockValues / std::max<int64_t>(1, L)); }

// ---- elementwise passes ----

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void affine_span(scalar_t* __restrict y, const scalar_t* __restrict x, int64_t n, acc_t scale,
                               acc_t shift) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) * scale + shift);
}

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void affine_row(scalar_t* __restrict y, const scalar_t* __restrict x, int64_t n,
                              const acc_t* __restrict scale, const acc_t* __restrict shift) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<scalar_t>(static_cast<acc_t>(x[i]) * scale[i] + shift[i]);
}

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void linear_span(scalar_t* __restrict dx, const scalar_t* __restrict dy, const scalar_t* __restrict x,
                               int64_t n, acc_t a, acc_t b, acc_t c) {
  if (x == nullptr) {
    for (int64_t i = 0; i < n; ++i) dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) * a);
  } else {
    for (int64_t i = 0; i < n; ++i)
      dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) * a + static_cast<acc_t>(x[i]) * b + c);
  }
}

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void linear_row(scalar_t* __restrict dx, const scalar_t* __restrict dy, const scalar_t* __restrict x,
                              int64_t n, const acc_t* __restrict a, const acc_t* __restrict b,
                              const acc_t* __restrict c) {
  if (x == nullptr) {
    for (int64_t i = 0; i < n; ++i) dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) * a[i]);
  } else {
    for (int64_t i = 0; i < n; ++i)
      dx[i] = static_cast<scalar_t>(static_cast<acc_t>(dy[i]) * a[i] + static_cast<acc_t>(x[i]) * b[i] + c[i]);
  }
}

// Elementwise passes over an R x L matrix: fn(row, lo, hi) for pieces of rows.
template <typename Fn>
void for_each_span(int64_t R, int64_t L, const Fn& fn) {
  const int64_t pieces = pieces_per_row(R, L);
  for_each_piece(R, L, pieces, [&](int64_t, int64_t r, int64_t lo, int64_t hi) { fn(r, lo, hi); });
}

#define TCO_NORM_DISPATCH(TYPE, NAME, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, TYPE, NAME, __VA_ARGS__)

// ---- the backend ----

void moments_cpu(const at::Tensor& x, NormLayout layout, int64_t R, int64_t L, at::Tensor& mean, at::Tensor& var) {
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_moments_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    acc_t* pmean = mean.mutable_data_ptr<acc_t>();
    acc_t* pvar = var.mutable_data_ptr<acc_t>();
    if (layout == NormLayout::Planar) {
      const int64_t pieces = pieces_per_row(R, L);
      std::vector<Moments> part(R * pieces);
      for_each_piece(R, L, pieces, [&](int64_t t, int64_t r, int64_t lo, int64_t hi) {
        part[t] = span_moments<acc_t>(px + r * L + lo, hi - lo);
      });
      for (int64_t r = 0; r < R; ++r) {
        Moments m;
        for (int64_t p = 0; p < pieces; ++p) m.merge(part[r * pieces + p]);
        pmean[r] = static_cast<acc_t>(m.mean);
        pvar[r] = static_cast<acc_t>(m.count > 0 ? m.m2 / m.count : NAN);
      }
      return;
    }
    // Interleaved: each task keeps per-column moments of its rows, block by block.
    const int64_t threads = at::get_num_threads();
    std::vector<double> tmean(threads * L), tm2(threads * L), tcount(threads);
    int64_t num_tasks = 0;
    const int64_t brows = block_rows(L);
    for_each_row_range(R, L, [&](int64_t t, int64_t r0, int64_t r1) {
      std::vector<acc_t> bsum(L), bm2(L);
      double* m = tmean.data() + t * L;
      double* q = tm2.data() + t * L;
      double count = 0;
      for (int64_t r = r0; r < r1; r += brows) {
        const int64_t nb = std::min(brows, r1 - r);
        const scalar_t* block = px + r * L;
        column_means<acc_t>(bsum.data(), block, nb, L);
        column_m2<acc_t>(bm2.data(), bsum.data(), block, nb, L);
        merge_columns<acc_t>(m, q, bsum.data(), bm2.data(), count, static_cast<double>(nb), L);
        count += static_cast<double>(nb);
      }
      tcount[t] = count;
    }, num_tasks);
    for (int64_t c = 0; c < L; ++c) {
      Moments m;
      for (int64_t t = 0; t < num_tasks; ++t) m.merge(tcount[t], tmean[t * L + c], tm2[t * L + c]);
      pmean[c] = static_cast<acc_t>(m.mean);
      pvar[c] = static_cast<acc_t>(m.count > 0 ? m.m2 / m.count : NAN);
    }
  });
}

void affine_cpu(const at::Tensor& x, NormLayout layout, int64_t R, int64_t L, const at::Tensor& scale,
                const at::Tensor& shift, at::Tensor& y) {
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_affine_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    const acc_t* ps = scale.const_data_ptr<acc_t>();
    const acc_t* pt = shift.const_data_ptr<acc_t>();
    if (layout == NormLayout::Planar) {
      for_each_span(R, L, [&](int64_t r, int64_t lo, int64_t hi) {
        affine_span<acc_t>(py + r * L + lo, px + r * L + lo, hi - lo, ps[r], pt[r]);
      });
    } else {
      at::parallel_for(0, R, std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, L)),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t r = begin; r < end; ++r) affine_row<acc_t>(py + r * L, px + r * L, L, ps, pt);
                       });
    }
  });
}

void grad_sums_cpu(const at::Tensor& dy, const at::Tensor& x, NormLayout layout, int64_t R, int64_t L,
                   const at::Tensor& mean, at::Tensor& sum_dy, at::Tensor& sum_dy_xmu) {
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_grad_sums_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pg = dy.const_data_ptr<scalar_t>();
    const acc_t* pm = mean.const_data_ptr<acc_t>();
    acc_t* s1 = sum_dy.mutable_data_ptr<acc_t>();
    acc_t* s2 = sum_dy_xmu.mutable_data_ptr<acc_t>();
    if (layout == NormLayout::Planar) {
      const int64_t pieces = pieces_per_row(R, L);
      std::vector<double> p1(R * pieces), p2(R * pieces);
      for_each_piece(R, L, pieces, [&](int64_t t, int64_t r, int64_t lo, int64_t hi) {
        span_grad_sums<acc_t>(pg + r * L + lo, px + r * L + lo, static_cast<const acc_t*>(nullptr), hi - lo, pm[r],
                              p1[t], p2[t]);
      });
      for (int64_t r = 0; r < R; ++r) {
        double a = 0, b = 0;
        for (int64_t p = 0; p < pieces; ++p) {
          a += p1[r * pieces + p];
          b += p2[r * pieces + p];
        }
        s1[r] = static_cast<acc_t>(a);
        s2[r] = static_cast<acc_t>(b);
      }
      return;
    }
    const int64_t threads = at::get_num_threads();
    std::vector<double> t1(threads * L, 0.0), t2(threads * L, 0.0);
    int64_t num_tasks = 0;
    const int64_t brows = block_rows(L);
    for_each_row_range(R, L, [&](int64_t t, int64_t r0, int64_t r1) {
      std::vector<acc_t> b1(L), b2(L);
      double* a = t1.data() + t * L;
      double* b = t2.data() + t * L;
      for (int64_t r = r0; r < r1; r += brows) {
        const int64_t nb = std::min(brows, r1 - r);
        column_grad_sums<acc_t>(b1.data(), b2.data(), pg + r * L, px + r * L, pm, nb, L);
        for (int64_t c = 0; c < L; ++c) {
          a[c] += b1[c];
          b[c] += b2[c];
        }
      }
    }, num_tasks);
    for (int64_t c = 0; c < L; ++c) {
      double a = 0, b = 0;
      for (int64_t t = 0; t < num_tasks; ++t) {
        a += t1[t * L + c];
        b += t2[t * L + c];
      }
      s1[c] = static_cast<acc_t>(a);
      s2[c] = static_cast<acc_t>(b);
    }
  });
}

// ---- planar data reduced per channel (batch norm of NCHW input) ----
// Channel c owns the rows n * C + c (n < N). A task takes whole channels and reads each
// channel's rows twice, the second time from cache (kChannelValues): the mean, then the squared
// deviations from it. Per-row results combined over the batch afterwards cost more than the
// data on small planes: MobileNet's (8, 576, 4x4) layers have 4608 rows of 16 values.

// Values per channel up to which the second pass finds them in L2.
constexpr int64_t kChannelValues = int64_t(1) << 16;

// Whether the per-channel passes serve N x C planes of L values: channels enough for every
// thread, and each channel's values cached between its two passes.
bool per_channel(int64_t N, int64_t C, int64_t L) {
  return N > 1 && C >= 2 * at::get_num_threads() && N * L <= kChannelValues;
}

// Sums over the N rows of one channel (row n at x + n * stride, L values each), in one call per
// channel: a call per row of a 4x4 plane cost as much as its arithmetic. Each kBlock of a row is
// summed in the compute type (as block_sum's blocks) and added in double. kDeviations: the sum
// of (x - mean)^2, else of x.
template <bool kDeviations, typename acc_t, typename scalar_t>
TCO_VECTORIZE double channel_sum(const scalar_t* __restrict x, int64_t N, int64_t stride, int64_t L, acc_t mean) {
  double total = 0;
  for (int64_t n = 0; n < N; ++n) {
    const scalar_t* __restrict row = x + n * stride;
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t e = std::min(L, b + kBlock);
      acc_t s = 0;
#pragma omp simd reduction(+ : s)
      for (int64_t i = b; i < e; ++i) {
        const acc_t d = static_cast<acc_t>(row[i]) - mean;
        s += kDeviations ? d * d : d;
      }
      total += static_cast<double>(s);
    }
  }
  return total;
}

// Sums of dy and of dy * (x - mean) over the rows of one channel.
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void channel_dy_sums(const scalar_t* __restrict dy, const scalar_t* __restrict x, int64_t N,
                                   int64_t stride, int64_t L, acc_t mean, double& sum_dy, double& sum_dy_xmu) {
  double t1 = 0, t2 = 0;
  for (int64_t n = 0; n < N; ++n) {
    const scalar_t* __restrict g = dy + n * stride;
    const scalar_t* __restrict v = x + n * stride;
    for (int64_t b = 0; b < L; b += kBlock) {
      const int64_t e = std::min(L, b + kBlock);
      acc_t s1 = 0, s2 = 0;
#pragma omp simd reduction(+ : s1, s2)
      for (int64_t i = b; i < e; ++i) {
        const acc_t d = static_cast<acc_t>(g[i]);
        s1 += d;
        s2 += d * (static_cast<acc_t>(v[i]) - mean);
      }
      t1 += static_cast<double>(s1);
      t2 += static_cast<double>(s2);
    }
  }
  sum_dy = t1;
  sum_dy_xmu = t2;
}

// dst = src * a + x * b + c over the rows of one channel; without x (null), dst = src * a + c
// (the affine of the forward: src the input, a the scale, c the shift).
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void channel_linear(scalar_t* __restrict dst, const scalar_t* __restrict src,
                                  const scalar_t* __restrict x, int64_t N, int64_t stride, int64_t L, acc_t a,
                                  acc_t b, acc_t c) {
  for (int64_t n = 0; n < N; ++n) {
    const int64_t o = n * stride;
    if (x == nullptr) {
      for (int64_t i = 0; i < L; ++i) dst[o + i] = static_cast<scalar_t>(static_cast<acc_t>(src[o + i]) * a + c);
    } else {
      for (int64_t i = 0; i < L; ++i)
        dst[o + i] =
            static_cast<scalar_t>(static_cast<acc_t>(src[o + i]) * a + static_cast<acc_t>(x[o + i]) * b + c);
    }
  }
}

template <typename Fn>
void for_each_channel(int64_t N, int64_t C, int64_t L, const Fn& fn) {
  at::parallel_for(0, C, std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, N * L)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t c = begin; c < end; ++c) fn(c);
                   });
}

bool channel_moments_cpu(const at::Tensor& x, int64_t N, int64_t C, int64_t L, at::Tensor& mean, at::Tensor& var) {
  if (!per_channel(N, C, L)) return false;
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_channel_moments_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    acc_t* pmean = mean.mutable_data_ptr<acc_t>();
    acc_t* pvar = var.mutable_data_ptr<acc_t>();
    const double count = static_cast<double>(N * L);
    for_each_channel(N, C, L, [&](int64_t c) {
      const acc_t m = static_cast<acc_t>(channel_sum<false>(px + c * L, N, C * L, L, acc_t(0)) / count);
      pmean[c] = m;
      pvar[c] = static_cast<acc_t>(channel_sum<true>(px + c * L, N, C * L, L, m) / count);
    });
  });
  return true;
}

bool channel_affine_cpu(const at::Tensor& x, int64_t N, int64_t C, int64_t L, const at::Tensor& scale,
                        const at::Tensor& shift, at::Tensor& y) {
  if (!per_channel(N, C, L)) return false;
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_channel_affine_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    const acc_t *ps = scale.const_data_ptr<acc_t>(), *pt = shift.const_data_ptr<acc_t>();
    // Rows in memory order (row r is channel r % C): one stream, which the prefetcher follows
    // when the data is not cached (channel by channel, a 4x4 plane's row is one cache line).
    at::parallel_for(0, N * C, std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, L)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t r = begin; r < end; ++r)
                         affine_span<acc_t>(py + r * L, px + r * L, L, ps[r % C], pt[r % C]);
                     });
  });
  return true;
}

bool channel_backward_cpu(const at::Tensor& dy, const at::Tensor& x, int64_t N, int64_t C, int64_t L,
                          const at::Tensor& mean, const at::Tensor& invstd, const at::Tensor& weight, bool training,
                          at::Tensor& sum_dy, at::Tensor& sum_dy_xmu, at::Tensor& dx) {
  if (!per_channel(N, C, L)) return false;
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_channel_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pg = dy.const_data_ptr<scalar_t>();
    scalar_t* pdx = dx.defined() ? dx.mutable_data_ptr<scalar_t>() : nullptr;
    const acc_t* pm = mean.const_data_ptr<acc_t>();
    const acc_t* pr = invstd.defined() ? invstd.const_data_ptr<acc_t>() : nullptr;
    const acc_t* pw = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
    acc_t* s1 = sum_dy.mutable_data_ptr<acc_t>();
    acc_t* s2 = sum_dy_xmu.mutable_data_ptr<acc_t>();
    const acc_t inv_n = static_cast<acc_t>(1.0 / static_cast<double>(N * L));
    for_each_channel(N, C, L, [&](int64_t c) {
      double a = 0, b = 0;
      channel_dy_sums<acc_t>(pg + c * L, px + c * L, N, C * L, L, pm[c], a, b);
      s1[c] = static_cast<acc_t>(a);
      s2[c] = static_cast<acc_t>(b);
      if (pdx == nullptr) return;  // the sums only
      const acc_t w = pw ? pw[c] : acc_t(1);
      if (training) {
        const auto k = input_grad_coefficient<acc_t>(pm[c], pr[c], w, s1[c], s2[c], inv_n);
        channel_linear<acc_t>(pdx + c * L, pg + c * L, px + c * L, N, C * L, L, k.a, k.b, k.c);
      } else {  // constant statistics: dx = dy * invstd * weight
        channel_linear<acc_t>(pdx + c * L, pg + c * L, static_cast<const scalar_t*>(nullptr), N, C * L, L,
                              pr[c] * w, acc_t(0), acc_t(0));
      }
    });
  });
  return true;
}

// ---- group norm, one (sample, group) at a time ----
//
// NCHW data holds each group's values contiguously (C / G planes). A task takes whole groups:
// their statistics (or gradient sums) are read from memory once and the pass that writes y
// (or dx) finds them in cache. As two passes over the whole tensor (moments, then affine)
// the forward read its input twice from memory: 1.3-1.4x torch's time on (32, 64, 56x56) in 8
// groups and on (8, 32, 16x16).

// Whether the per-group passes serve N * G groups: whole groups per task, enough of them for
// every thread (fewer groups take the row passes, which split a row between tasks).
bool per_group(int64_t groups) { return groups >= 4 * at::get_num_threads(); }

template <typename Fn>
void for_each_group(int64_t groups, int64_t group_values, const Fn& fn) {
  at::parallel_for(0, groups, std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, group_values)),
                   [&](int64_t begin, int64_t end) {
                     for (int64_t r = begin; r < end; ++r) fn(r);
                   });
}

bool group_norm_forward_cpu(const at::Tensor& x, int64_t N, int64_t C, int64_t S, int64_t G,
                            const at::Tensor& weight, const at::Tensor& bias, double eps, at::Tensor& y,
                            at::Tensor& mean, at::Tensor& rstd) {
  if (!per_group(N * G)) return false;
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_group_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    acc_t* pmean = mean.mutable_data_ptr<acc_t>();
    acc_t* prstd = rstd.mutable_data_ptr<acc_t>();
    const acc_t* pw = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
    const acc_t* pb = bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr;
    const int64_t per = C / G, L = per * S;  // channels and values per group
    for_each_group(N * G, L, [&](int64_t r) {
      const Moments m = span_moments<acc_t>(px + r * L, L);
      const acc_t mu = static_cast<acc_t>(m.mean);
      const acc_t rs = acc_t(1) / std::sqrt(static_cast<acc_t>(m.m2 / m.count) + static_cast<acc_t>(eps));
      pmean[r] = mu;
      prstd[r] = rs;
      const int64_t c0 = (r % G) * per;
      for (int64_t j = 0; j < per; ++j) {
        const acc_t scale = pw ? rs * pw[c0 + j] : rs;
        const acc_t shift = (pb ? pb[c0 + j] : acc_t(0)) - mu * scale;
        affine_span<acc_t>(py + r * L + j * S, px + r * L + j * S, S, scale, shift);
      }
    });
  });
  return true;
}

bool group_norm_backward_cpu(const at::Tensor& dy, const at::Tensor& x, int64_t N, int64_t C, int64_t S,
                             int64_t G, const at::Tensor& mean, const at::Tensor& rstd, const at::Tensor& weight,
                             at::Tensor& sum_dy, at::Tensor& sum_dy_xmu, at::Tensor& dx) {
  if (!per_group(N * G)) return false;
  TCO_NORM_DISPATCH(x.scalar_type(), "norm_group_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pg = dy.const_data_ptr<scalar_t>();
    scalar_t* pdx = dx.mutable_data_ptr<scalar_t>();
    const acc_t* pm = mean.const_data_ptr<acc_t>();
    const acc_t* pr = rstd.const_data_ptr<acc_t>();
    const acc_t* pw = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
    acc_t* s1 = sum_dy.mutable_data_ptr<acc_t>();
    acc_t* s2 = sum_dy_xmu.mutable_data_ptr<acc_t>();
    const int64_t per = C / G, L = per * S;
    const double inv_m = 1.0 / static_cast<double>(L);
    for_each_group(N * G, L, [&](int64_t r) {
      const acc_t mu = pm[r], rs = pr[r];
      const int64_t c0 = (r % G) * per;
      double A = 0, B = 0;  // sums over the group of w[c] * dy and w[c] * dy * (x - mean)
      for (int64_t j = 0; j < per; ++j) {
        const int64_t o = r * L + j * S;
        double a = 0, b = 0;
        span_grad_sums<acc_t>(pg + o, px + o, static_cast<const acc_t*>(nullptr), S, mu, a, b);
        s1[r * per + j] = static_cast<acc_t>(a);
        s2[r * per + j] = static_cast<acc_t>(b);
        const double w = pw ? static_cast<double>(pw[c0 + j]) : 1.0;
        A += w * a;
        B += w * b;
      }
      const double rsd = rs;
      const acc_t kb = static_cast<acc_t>(-rsd * rsd * rsd * B * inv_m);
      const acc_t kc = static_cast<acc_t>(-rsd * A * inv_m) - kb * mu;
      for (int64_t j = 0; j < per; ++j) {
        const int64_t o = r * L + j * S;
        linear_span<acc_t>(pdx + o, pg + o, px + o, S, pw ? rs * pw[c0 + j] : rs, kb, kc);
      }
    });
  });
  return true;
}

void linear_grad_cpu(const at::Tensor& dy, const at::Tensor& x, NormLayout layout, int64_t R, int64_t L,
                     const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, at::Tensor& dx) {
  TCO_NORM_DISPATCH(dy.scalar_type(), "norm_linear_grad_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const bool with_x = b.defined();
    const scalar_t* px = with_x ? x.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* pg = dy.const_data_ptr<scalar_t>();
    scalar_t* pd = dx.mutable_data_ptr<scalar_t>();
    const acc_t* pa = a.const_data_ptr<acc_t>();
    const acc_t* pb = with_x ? b.const_data_ptr<acc_t>() : nullptr;
    const acc_t* pc = with_x ? c.const_data_ptr<acc_t>() : nullptr;
    if (layout == NormLayout::Planar) {
      for_each_span(R, L, [&](int64_t r, int64_t lo, int64_t hi) {
        const int64_t o = r * L + lo;
        linear_span<acc_t>(pd + o, pg + o, with_x ? px + o : nullptr, hi - lo, pa[r], with_x ? pb[r] : acc_t(0),
                           with_x ? pc[r] : acc_t(0));
      });
    } else {
      at::parallel_for(0, R, std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, L)),
                       [&](int64_t begin, int64_t end) {
                         for (int64_t r = begin; r < end; ++r)
                           linear_row<acc_t>(pd + r * L, pg + r * L, with_x ? px + r * L : nullptr, L, pa, pb, pc);
                       });
    }
  });
}

// ---- layer norm ----

template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void layer_norm_row(scalar_t* __restrict y, const scalar_t* __restrict x, int64_t K, acc_t mean,
                                  acc_t rstd, const acc_t* __restrict w, const acc_t* __restrict b) {
  for (int64_t j = 0; j < K; ++j) {
    acc_t v = (static_cast<acc_t>(x[j]) - mean) * rstd;
    if (w) v *= w[j];
    if (b) v += b[j];
    y[j] = static_cast<scalar_t>(v);
  }
}

void layer_norm_forward_cpu(const at::Tensor& x, int64_t M, int64_t K, const at::Tensor& weight,
                            const at::Tensor& bias, double eps, at::Tensor& y, at::Tensor& mean, at::Tensor& rstd) {
  TCO_NORM_DISPATCH(x.scalar_type(), "layer_norm_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    scalar_t* py = y.mutable_data_ptr<scalar_t>();
    const acc_t* pw = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
    const acc_t* pb = bias.defined() ? bias.const_data_ptr<acc_t>() : nullptr;
    acc_t* pmean = mean.mutable_data_ptr<acc_t>();
    acc_t* prstd = rstd.mutable_data_ptr<acc_t>();
    at::parallel_for(0, M, std::max<int64_t>(1, kGrainValues / std::max<int64_t>(1, K)),
                     [&](int64_t begin, int64_t end) {
                       for (int64_t r = begin; r < end; ++r) {
                         const Moments m = span_moments<acc_t>(px + r * K, K);
                         const acc_t mu = static_cast<acc_t>(m.mean);
                         const acc_t rs = static_cast<acc_t>(1.0 / std::sqrt(m.m2 / m.count + eps));
                         pmean[r] = mu;
                         prstd[r] = rs;
                         layer_norm_row<acc_t>(py + r * K, px + r * K, K, mu, rs, pw, pb);
                       }
                     });
  });
}

// dx = rstd * (dy * w - a / K - (x - mean) * rstd^2 * b / K) with a = sum(dy * w),
// b = sum(dy * w * (x - mean)); grad_weight += dy * (x - mean) * rstd, grad_bias += dy.
template <typename acc_t, typename scalar_t>
TCO_VECTORIZE void layer_norm_backward_row(scalar_t* __restrict dx, double* __restrict gw, double* __restrict gb,
                                           const scalar_t* __restrict dy, const scalar_t* __restrict x, int64_t K,
                                           acc_t mean, acc_t rstd, acc_t ka, acc_t kb, const acc_t* __restrict w) {
  for (int64_t j = 0; j < K; ++j) {
    const acc_t g = static_cast<acc_t>(dy[j]);
    const acc_t xmu = static_cast<acc_t>(x[j]) - mean;
    dx[j] = static_cast<scalar_t>(rstd * ((w ? g * w[j] : g) - ka - xmu * kb));
    gw[j] += static_cast<double>(g * xmu * rstd);
    gb[j] += static_cast<double>(g);
  }
}

void layer_norm_backward_cpu(const at::Tensor& dy, const at::Tensor& x, int64_t M, int64_t K, const at::Tensor& mean,
                             const at::Tensor& rstd, const at::Tensor& weight, at::Tensor& dx,
                             at::Tensor& grad_weight, at::Tensor& grad_bias) {
  TCO_NORM_DISPATCH(x.scalar_type(), "layer_norm_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pg = dy.const_data_ptr<scalar_t>();
    scalar_t* pd = dx.mutable_data_ptr<scalar_t>();
    const acc_t* pw = weight.defined() ? weight.const_data_ptr<acc_t>() : nullptr;
    const acc_t* pmean = mean.const_data_ptr<acc_t>();
    const acc_t* prstd = rstd.const_data_ptr<acc_t>();
    const int64_t threads = at::get_num_threads();
    std::vector<double> tw(threads * K, 0.0), tb(threads * K, 0.0);
    int64_t num_tasks = 0;
    for_each_row_range(M, K, [&](int64_t t, int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const acc_t mu = pmean[r], rs = prstd[r];
        double a = 0, b = 0;
        span_grad_sums<acc_t>(pg + r * K, px + r * K, pw, K, mu, a, b);
        const acc_t ka = static_cast<acc_t>(a / K), kb = static_cast<acc_t>(b / K * rs * rs);
        layer_norm_backward_row<acc_t>(pd + r * K, tw.data() + t * K, tb.data() + t * K, pg + r * K, px + r * K, K,
                                       mu, rs, ka, kb, pw);
      }
    }, num_tasks);
    acc_t* gw = grad_weight.mutable_data_ptr<acc_t>();
    acc_t* gb = grad_bias.mutable_data_ptr<acc_t>();
    for (int64_t j = 0; j < K; ++j) {
      double a = 0, b = 0;
      for (int64_t t = 0; t < num_tasks; ++t) {
        a += tw[t * K + j];
        b += tb[t * K + j];
      }
      gw[j] = static_cast<acc_t>(a);
      gb[j] = static_cast<acc_t>(b);
    }
  });
}

}  // namespace

const NormBackend& cpu_norm_backend() {
  static const NormBackend backend{c10::DeviceType::CPU,    &moments_cpu,           &affine_cpu,
                                   &grad_sums_cpu,            &linear_grad_cpu,       &layer_norm_forward_cpu,
                                   &layer_norm_backward_cpu, &channel_moments_cpu,   &channel_affine_cpu,
                                   &channel_backward_cpu,    &group_norm_forward_cpu, &group_norm_backward_cpu};
  return backend;
}

}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) { tco::register_norm_ops(m, tco::cpu_norm_backend()); }
