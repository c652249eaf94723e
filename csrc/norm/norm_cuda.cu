// CUDA kernels of the norm family. No torch header here (see norm_cuda.h); the glue is
// norm_cuda_ops.cpp.
//
// Two kinds of pass over an R x L matrix:
//  * Elementwise (affine, linear_grad, the split layer norm's output): a 2-d grid-stride loop
//    over (row, column), so that a row's or a column's coefficient comes from the loop
//    indices without a 64-bit division per element. Blocks are tx x ty with tx the columns
//    (a power of two up to kThreads covering L), so short rows still fill whole warps with
//    consecutive elements.
//  * Reductions, one result per group, written once for every pass as an "op" (the state V
//    of a partial result, how an element enters it, how two states combine, what is written
//    at the end; MomentsOp below is the simplest) run by one of two schemes:
//     - Planar (a group per row): one warp per row for rows up to kWarpRowMax; one block per
//       row for longer rows, or, when the rows are too few to fill the GPU, `chunks` blocks
//       per row writing partial states to the workspace, combined per row by a second kernel
//       (a warp per row). Ops with a row epilogue (layer norm) then make a second sweep of
//       the row in the same kernel, writing the output from the row's result.
//     - Interleaved (a group per column): tx x ty blocks, tx columns wide (coalesced reads
//       along a row), the ty row lanes striding through a slice of rows; a shared-memory tree
//       combines the row lanes of each column. When there are several slices (gridDim.y),
//       each writes its partial state and a second kernel combines them per column.
//   Every combination happens in a fixed order, so results are deterministic (no atomics).
// Means and variances combine (count, mean, m2) states with Chan's formula (cuda_common.cuh);
// half and bfloat16 data accumulate in float.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "../cuda_common.cuh"
#include "norm_cuda.h"

namespace tco::cuda_norm {
namespace {

using namespace tco::cuda;

constexpr int kWarpsPerBlock = kThreads / 32;
// Rows up to this length are reduced by one warp each (at most 32 elements per lane).
constexpr int64_t kWarpRowMax = 1024;
// A block of a split row reads at least this many elements (16 per thread), so that the
// partial states stay few next to the data.
constexpr int64_t kMinChunk = int64_t(kThreads) * 16;
// Blocks that keep a large GPU busy (an H100 holds 132 SMs x 8 blocks of kThreads); groups
// are split only while there are fewer blocks than this.
constexpr int64_t kTargetBlocks = 1024;
// Limit of gridDim.y.
constexpr int64_t kMaxGridY = 65535;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <typename I>
__host__ __device__ __forceinline__ I min_of(I a, I b) { return a < b ? a : b; }

__device__ __forceinline__ float rsqrt_of(float v) { return rsqrtf(v); }
__device__ __forceinline__ double rsqrt_of(double v) { return rsqrt(v); }

template <typename A>
__device__ __forceinline__ A mean_of(const MeanM2<A>& s) {
  return s.n > A(0) ? s.mean : A(NAN);  // an empty group has no mean
}

// Two running sums, the state of the gradient reductions. An aggregate: Sum2<A>{} is zero.
template <typename A>
struct Sum2 {
  A a, b;
};


// ---------------------------------------------------------------------------------------
// Reduction ops. Each has
//   A, V                       the accumulation type and the partial state; identity() the
//                              empty state; combine(a, b) merges two (a's elements first):
//                              from its base, MeanM2Reduction or Sum2Reduction;
//   Ctx context(group)         per-group values read once (not per element);
//   add(v, ctx, i, r, c)       element i = r * L + c (row r, column c) enters v;
//   finish(group, v)           writes the group's results;
//   kRowEpilogue               ops run over rows (Planar): after the reduction of row r, every
//                              thread of the row calls epilogue(row_coef(ctx, v), i, c) for
//                              the row's elements.

// Moments: (count, mean, m2) states merged with Chan's formula.
template <typename T>
struct MeanM2Reduction {
  using A = typename Num<T>::acc;
  using V = MeanM2<A>;
  static constexpr bool kRowEpilogue = false;
  __device__ static V identity() { return V{}; }
  __device__ static V combine(const V& a, const V& b) { return chan_combine(a, b); }
};

// Two plain sums.
template <typename T>
struct Sum2Reduction {
  using A = typename Num<T>::acc;
  using V = Sum2<A>;
  static constexpr bool kRowEpilogue = false;
  __device__ static V identity() { return V{}; }
  __device__ static V combine(const V& a, const V& b) { return {a.a + b.a, a.b + b.b}; }
};

// Shift of a group for the moments: its first element. Welford in float on data such as
// 1e4 +- 1e-2 keeps a running mean whose rounding (ulp(1e4) ~ 1e-3) is not small next to the
// deviations; on x - shift (exact for clustered data) the deviations keep their precision,
// and the shift is added back to the mean at the end. Every block of a split group reads
// the same shift, so partial states combine as they are.
template <typename T>
__device__ __forceinline__ typename Num<T>::acc group_shift(const T* x, int64_t first, int64_t group_size) {
  return group_size > 0 ? Num<T>::widen(x[first]) : typename Num<T>::acc(0);
}

// Mean and biased variance of each group.
template <typename T>
struct MomentsOp : MeanM2Reduction<T> {
  using typename MeanM2Reduction<T>::A;
  using typename MeanM2Reduction<T>::V;
  struct Ctx {
    A shift;
  };

  const T* __restrict__ x;
  int64_t group_stride;  // index of group g's first element / g: L (Planar) or 1 (Interleaved)
  int64_t group_size;    // L (Planar) or R (Interleaved)
  A* __restrict__ mean;
  A* __restrict__ var;

  __device__ Ctx context(int64_t g) const { return {group_shift(x, g * group_stride, group_size)}; }
  __device__ void add(V& v, const Ctx& ctx, int64_t i, int64_t, int64_t) const {
    welford_add(v, Num<T>::widen(x[i]) - ctx.shift);
  }
  __device__ void finish(int64_t g, const V& v) const {
    mean[g] = mean_of(v) + context(g).shift;
    var[g] = v.m2 / v.n;  // 0 / 0 = NaN for an empty group
  }
};

// Per group: sum of dy and of dy * (x - mean[group]).
template <typename T>
struct GradSumsOp : Sum2Reduction<T> {
  using typename Sum2Reduction<T>::A;
  using typename Sum2Reduction<T>::V;
  struct Ctx {
    A mean;
  };

  const T* __restrict__ dy;
  const T* __restrict__ x;
  const A* __restrict__ mean;
  A* __restrict__ sum_dy;
  A* __restrict__ sum_dy_xmu;

  __device__ Ctx context(int64_t g) const { return {mean[g]}; }
  __device__ void add(V& v, const Ctx& ctx, int64_t i, int64_t, int64_t) const {
    const A d = Num<T>::widen(dy[i]);
    v.a += d;
    v.b += d * (Num<T>::widen(x[i]) - ctx.mean);
  }
  __device__ void finish(int64_t g, const V& v) const {
    sum_dy[g] = v.a;
    sum_dy_xmu[g] = v.b;
  }
};

// Layer norm forward of the rows: mean and rstd per row, then (epilogue) the output.
template <typename T>
struct LayerNormForwardOp : MeanM2Reduction<T> {
  using typename MeanM2Reduction<T>::A;
  using typename MeanM2Reduction<T>::V;
  struct Ctx {
    A shift;  // as in MomentsOp
  };
  struct Coef {
    A mean, rstd;
  };
  static constexpr bool kRowEpilogue = true;

  const T* __restrict__ x;
  int64_t K;                     // row length
  const A* __restrict__ weight;  // may be null (ones)
  const A* __restrict__ bias;    // may be null (zeros)
  A eps;
  T* __restrict__ y;
  A* __restrict__ mean;
  A* __restrict__ rstd;

  __device__ Ctx context(int64_t r) const { return {group_shift(x, r * K, K)}; }
  __device__ void add(V& v, const Ctx& ctx, int64_t i, int64_t, int64_t) const {
    welford_add(v, Num<T>::widen(x[i]) - ctx.shift);
  }
  // The output uses x - mean with the rounded mean, as torch does, in both the fused and the
  // split paths, so that both give the same values.
  __device__ Coef row_coef(const Ctx& ctx, const V& v) const {
    return {mean_of(v) + ctx.shift, rsqrt_of(v.m2 / v.n + eps)};
  }
  __device__ void finish(int64_t r, const V& v) const {
    const Coef k = row_coef(context(r), v);
    mean[r] = k.mean;
    rstd[r] = k.rstd;
  }
  __device__ void epilogue(const Coef& k, int64_t i, int64_t c) const {
    A out = (Num<T>::widen(x[i]) - k.mean) * k.rstd;
    if (weight) out *= weight[c];
    if (bias) out += bias[c];
    y[i] = Num<T>::narrow(out);
  }
};

// Layer norm backward, per row: with g = dy * weight, a = sum(g) and b = sum(g * (x - mean)),
// then (epilogue) dx = rstd * (g - a / K - (x - mean) * rstd^2 * b / K).
template <typename T>
struct LayerNormBackwardRowOp : Sum2Reduction<T> {
  using typename Sum2Reduction<T>::A;
  using typename Sum2Reduction<T>::V;
  struct Ctx {
    A mean, rstd;
  };
  struct Coef {
    A mean, rstd, ca, cb;  // dx = rstd * g - ca - (x - mean) * cb
  };
  static constexpr bool kRowEpilogue = true;

  const T* __restrict__ dy;
  const T* __restrict__ x;
  const A* __restrict__ mean;
  const A* __restrict__ rstd;
  const A* __restrict__ weight;  // may be null (ones)
  A inv_K;
  T* __restrict__ dx;

  __device__ A g_at(int64_t i, int64_t c) const {
    const A d = Num<T>::widen(dy[i]);
    return weight ? d * weight[c] : d;
  }
  __device__ Ctx context(int64_t r) const { return {mean[r], rstd[r]}; }
  __device__ void add(V& v, const Ctx& ctx, int64_t i, int64_t, int64_t c) const {
    const A g = g_at(i, c);
    v.a += g;
    v.b += g * (Num<T>::widen(x[i]) - ctx.mean);
  }
  __device__ Coef row_coef(const Ctx& ctx, const V& v) const {
    const A rs = ctx.rstd;
    return {ctx.mean, rs, rs * v.a * inv_K, rs * rs * rs * v.b * inv_K};
  }
  __device__ void finish(int64_t, const V&) const {}  // the row's results are dx only
  __device__ void epilogue(const Coef& k, int64_t i, int64_t c) const {
    dx[i] = Num<T>::narrow(k.rstd * g_at(i, c) - k.ca - (Num<T>::widen(x[i]) - k.mean) * k.cb);
  }
};

// Layer norm backward, per column j: grad_weight[j] = sum of dy * (x - mean) * rstd over
// the rows, grad_bias[j] = sum of dy (either may be null).
template <typename T>
struct LayerNormBackwardColumnOp : Sum2Reduction<T> {
  using typename Sum2Reduction<T>::A;
  using typename Sum2Reduction<T>::V;
  struct Ctx {};

  const T* __restrict__ dy;
  const T* __restrict__ x;
  const A* __restrict__ mean;
  const A* __restrict__ rstd;
  A* __restrict__ grad_weight;
  A* __restrict__ grad_bias;

  __device__ Ctx context(int64_t) const { return {}; }
  __device__ void add(V& v, const Ctx&, int64_t i, int64_t r, int64_t) const {
    const A d = Num<T>::widen(dy[i]);
    if (grad_weight) v.a += d * (Num<T>::widen(x[i]) - mean[r]) * rstd[r];
    v.b += d;
  }
  __device__ void finish(int64_t c, const V& v) const {
    if (grad_weight) grad_weight[c] = v.a;
    if (grad_bias) grad_bias[c] = v.b;
  }
};

// ---------------------------------------------------------------------------------------
// Reduction kernels.

// Planar, rows up to kWarpRowMax: one warp per row.
template <typename Op>
__global__ void __launch_bounds__(kThreads) planar_warp_kernel(Op op, int64_t R, int64_t L) {
  using V = typename Op::V;
  const auto combine = [&op](const V& a, const V& b) { return op.combine(a, b); };
  const int lane = threadIdx.x % 32;
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  // The row is the same for the 32 lanes of a warp, so the shuffles see whole warps.
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; r < R; r += stride) {
    const auto ctx = op.context(r);
    const int64_t base = r * L;
    V v = op.identity();
    for (int64_t c = lane; c < L; c += 32) op.add(v, ctx, base + c, r, c);
    v = warp_reduce(v, combine);
    if (lane == 0) op.finish(r, v);
    if constexpr (Op::kRowEpilogue) {
      const auto coef = op.row_coef(ctx, shfl_any(v, 0));
      for (int64_t c = lane; c < L; c += 32) op.epilogue(coef, base + c, c);
    }
  }
}

// Planar, longer rows: block `unit` reduces chunk unit % chunks of row unit / chunks
// (columns [k * chunk_len, (k + 1) * chunk_len) within L). With one chunk per row it finishes
// the row (and runs the epilogue); otherwise it writes its partial state to partial[unit].
template <typename Op>
__global__ void __launch_bounds__(kThreads)
    planar_block_kernel(Op op, int64_t R, int64_t L, int64_t chunks, int64_t chunk_len, typename Op::V* partial) {
  using V = typename Op::V;
  const auto combine = [&op](const V& a, const V& b) { return op.combine(a, b); };
  // `unit` is the same for the whole block, so every thread reaches the barriers.
  for (int64_t unit = blockIdx.x; unit < R * chunks; unit += gridDim.x) {
    const int64_t r = unit / chunks;
    const int64_t c0 = (unit % chunks) * chunk_len, c1 = min_of(L, c0 + chunk_len);
    const auto ctx = op.context(r);
    const int64_t base = r * L;
    V v = op.identity();
    for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) op.add(v, ctx, base + c, r, c);
    v = block_reduce(v, combine, op.identity());
    if (chunks > 1) {
      if (threadIdx.x == 0) partial[unit] = v;
      continue;
    }
    if (threadIdx.x == 0) op.finish(r, v);
    if constexpr (Op::kRowEpilogue) {
      // Overwritten by thread 0 only after the next block_reduce's barriers.
      __shared__ V row_total;
      if (threadIdx.x == 0) row_total = v;
      __syncthreads();
      const auto coef = op.row_coef(ctx, row_total);
      for (int64_t c = threadIdx.x; c < L; c += blockDim.x) op.epilogue(coef, base + c, c);
    }
  }
}

// Planar, second stage: one warp per row combines the row's `chunks` partial states.
template <typename Op>
__global__ void __launch_bounds__(kThreads)
    planar_combine_kernel(Op op, int64_t R, int64_t chunks, const typename Op::V* partial) {
  using V = typename Op::V;
  const auto combine = [&op](const V& a, const V& b) { return op.combine(a, b); };
  const int lane = threadIdx.x % 32;
  const int64_t stride = int64_t(gridDim.x) * kWarpsPerBlock;
  for (int64_t r = int64_t(blockIdx.x) * kWarpsPerBlock + threadIdx.x / 32; r < R; r += stride) {
    V v = op.identity();
    for (int64_t k = lane; k < chunks; k += 32) v = op.combine(v, partial[r * chunks + k]);
    v = warp_reduce(v, combine);
    if (lane == 0) op.finish(r, v);
  }
}

// Interleaved: block (tile, slice) reduces columns [tile * tx, (tile + 1) * tx) over rows
// [slice * rows_per_slice, (slice + 1) * rows_per_slice) within R. With one slice it
// finishes the columns; otherwise slice s writes column c's partial state to
// partial[s * L + c].
template <typename Op>
__global__ void __launch_bounds__(kThreads) column_kernel(Op op, int64_t R, int64_t L, int64_t tiles,
                                                          int64_t rows_per_slice, typename Op::V* partial) {
  using V = typename Op::V;
  const auto combine = [&op](const V& a, const V& b) { return op.combine(a, b); };
  const int64_t r0 = int64_t(blockIdx.y) * rows_per_slice, r1 = min_of(R, r0 + rows_per_slice);
  // `tile` is the same for the whole block, so every thread reaches the barriers.
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t c = tile * blockDim.x + threadIdx.x;
    V v = op.identity();
    if (c < L) {
      const auto ctx = op.context(c);
      for (int64_t r = r0 + threadIdx.y; r < r1; r += blockDim.y) op.add(v, ctx, r * L + c, r, c);
    }
    v = block_column_reduce(v, combine);
    if (threadIdx.y == 0 && c < L) {
      if (gridDim.y > 1) {
        partial[int64_t(blockIdx.y) * L + c] = v;
      } else {
        op.finish(c, v);
      }
    }
  }
}

// Interleaved, second stage: the `slices` partial states of each column, row lanes striding
// through the slices, then the same tree over the lanes.
template <typename Op>
__global__ void __launch_bounds__(kThreads)
    column_combine_kernel(Op op, int64_t L, int64_t tiles, int64_t slices, const typename Op::V* partial) {
  using V = typename Op::V;
  const auto combine = [&op](const V& a, const V& b) { return op.combine(a, b); };
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const int64_t c = tile * blockDim.x + threadIdx.x;
    V v = op.identity();
    if (c < L) {
      for (int64_t s = threadIdx.y; s < slices; s += blockDim.y) v = op.combine(v, partial[s * L + c]);
    }
    v = block_column_reduce(v, combine);
    if (threadIdx.y == 0 && c < L) op.finish(c, v);
  }
}

// ---------------------------------------------------------------------------------------
// Launch plans (host). The workspace sizes come from the same plans as the launches.

struct PlanarPlan {
  bool warp_rows;     // one warp per row
  int64_t chunks;     // blocks per row otherwise (> 1: partial states and a second kernel)
  int64_t chunk_len;  // columns per chunk
};

PlanarPlan planar_plan(int64_t R, int64_t L, bool may_split) {
  PlanarPlan p{L <= kWarpRowMax, 1, L};
  if (p.warp_rows || !may_split || R <= 0 || R >= kTargetBlocks) return p;
  const int64_t chunks = std::min(ceil_div(L, kMinChunk), ceil_div(kTargetBlocks, R));
  if (chunks <= 1) return p;
  p.chunk_len = ceil_div(L, chunks);
  p.chunks = ceil_div(L, p.chunk_len);  // no empty chunk; still >= 2 as chunk_len < L
  return p;
}

int64_t planar_partials(int64_t R, int64_t L, bool may_split) {
  const PlanarPlan p = planar_plan(R, L, may_split);
  return p.chunks > 1 ? R * p.chunks : 0;
}

struct ColumnPlan {
  int tx, ty;              // block: tx columns x ty row lanes, powers of two, tx * ty <= kThreads
  int64_t tiles;           // column tiles of tx
  int64_t slices;          // row slices (gridDim.y; > 1: partial states and a second kernel)
  int64_t rows_per_slice;  // >= 1
};

ColumnPlan column_plan(int64_t R, int64_t L) {
  ColumnPlan p{1, 1, 0, 1, 1};
  while (p.tx < 32 && p.tx < L) p.tx *= 2;
  while (p.ty < kThreads / p.tx && p.ty < R) p.ty *= 2;
  p.tiles = ceil_div(L, p.tx);
  // Each row lane of a slice reads at least 16 rows.
  const int64_t want =
      std::min(ceil_div(R, int64_t(p.ty) * 16), ceil_div(kTargetBlocks, std::max<int64_t>(p.tiles, 1)));
  const int64_t slices = std::clamp<int64_t>(want, 1, kMaxGridY);
  p.rows_per_slice = std::max<int64_t>(1, ceil_div(R, slices));
  p.slices = std::max<int64_t>(1, ceil_div(R, p.rows_per_slice));  // no empty slice
  return p;
}

int64_t column_partials(int64_t R, int64_t L) {
  if (L <= 0) return 0;
  const ColumnPlan p = column_plan(R, L);
  return p.slices > 1 ? p.slices * L : 0;
}

unsigned warp_row_blocks(int64_t R) {
  return static_cast<unsigned>(std::clamp<int64_t>(ceil_div(R, kWarpsPerBlock), 1, kMaxBlocks));
}

// Reduces the R rows (group = row); R > 0.
template <typename Op>
void reduce_rows(const Op& op, int64_t R, int64_t L, const PlanarPlan& p, void* workspace, cudaStream_t stream) {
  using V = typename Op::V;
  if (p.warp_rows) {
    planar_warp_kernel<<<warp_row_blocks(R), kThreads, 0, stream>>>(op, R, L);
    return;
  }
  V* partial = static_cast<V*>(workspace);
  const auto blocks = static_cast<unsigned>(std::min(R * p.chunks, kMaxBlocks));
  planar_block_kernel<<<blocks, kThreads, 0, stream>>>(op, R, L, p.chunks, p.chunk_len, partial);
  if (p.chunks > 1) planar_combine_kernel<<<warp_row_blocks(R), kThreads, 0, stream>>>(op, R, p.chunks, partial);
}

// Reduces the L columns (group = column); L > 0.
template <typename Op>
void reduce_columns(const Op& op, int64_t R, int64_t L, void* workspace, cudaStream_t stream) {
  using V = typename Op::V;
  const ColumnPlan p = column_plan(R, L);
  V* partial = static_cast<V*>(workspace);
  const dim3 block(p.tx, p.ty);
  const auto gx = static_cast<unsigned>(std::min(p.tiles, kMaxBlocks));
  column_kernel<<<dim3(gx, static_cast<unsigned>(p.slices)), block, 0, stream>>>(op, R, L, p.tiles,
                                                                                p.rows_per_slice, partial);
  if (p.slices > 1) column_combine_kernel<<<gx, block, 0, stream>>>(op, L, p.tiles, p.slices, partial);
}

// ---------------------------------------------------------------------------------------
// Elementwise passes: f(i, r, c) for every element i = r * L + c.

template <typename F>
__global__ void __launch_bounds__(kThreads) elementwise_kernel(F f, int64_t R, int64_t L) {
  for (int64_t r = int64_t(blockIdx.y) * blockDim.y + threadIdx.y; r < R; r += int64_t(gridDim.y) * blockDim.y) {
    for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < L; c += int64_t(gridDim.x) * blockDim.x) {
      f(r * L + c, r, c);
    }
  }
}

// R * L > 0.
template <typename F>
void launch_elementwise(const F& f, int64_t R, int64_t L, cudaStream_t stream) {
  int tx = 1;
  while (tx < kThreads && tx < L) tx *= 2;
  const int ty = kThreads / tx;
  const int64_t gy = std::min(ceil_div(R, ty), kMaxGridY);
  const int64_t gx = std::min(ceil_div(L, tx), std::max<int64_t>(1, kMaxBlocks / gy));
  elementwise_kernel<<<dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy)), dim3(tx, ty), 0, stream>>>(f, R,
                                                                                                             L);
}

template <typename T>
struct AffineFn {
  using A = typename Num<T>::acc;
  bool planar;
  const T* __restrict__ x;
  const A* __restrict__ scale;
  const A* __restrict__ shift;
  T* __restrict__ y;
  __device__ void operator()(int64_t i, int64_t r, int64_t c) const {
    const int64_t g = planar ? r : c;
    y[i] = Num<T>::narrow(Num<T>::widen(x[i]) * scale[g] + shift[g]);
  }
};

template <typename T>
struct LinearGradFn {
  using A = typename Num<T>::acc;
  bool planar;
  const T* __restrict__ dy;
  const T* __restrict__ x;
  const A* __restrict__ a;
  const A* __restrict__ b;  // null: dx = dy * a, x unread
  const A* __restrict__ c;  // null: zeros
  T* __restrict__ dx;
  __device__ void operator()(int64_t i, int64_t r, int64_t col) const {
    const int64_t g = planar ? r : col;
    A v = Num<T>::widen(dy[i]) * a[g];
    if (b) v += Num<T>::widen(x[i]) * b[g] + (c ? c[g] : A(0));
    dx[i] = Num<T>::narrow(v);
  }
};

// The output of a layer norm whose rows were reduced in chunks (mean and rstd written).
template <typename T>
struct LayerNormApplyFn {
  LayerNormForwardOp<T> op;
  __device__ void operator()(int64_t i, int64_t r, int64_t c) const { op.epilogue({op.mean[r], op.rstd[r]}, i, c); }
};

// ---------------------------------------------------------------------------------------

template <typename T>
using acc_t = typename Num<T>::acc;

}  // namespace

int64_t moments_workspace(Layout layout, int64_t R, int64_t L) {
  return 3 * (layout == Layout::Planar ? planar_partials(R, L, true) : column_partials(R, L));
}

int64_t grad_sums_workspace(Layout layout, int64_t R, int64_t L) {
  return 2 * (layout == Layout::Planar ? planar_partials(R, L, true) : column_partials(R, L));
}

int64_t layer_norm_forward_workspace(int64_t M, int64_t K) { return 3 * planar_partials(M, K, true); }

int64_t layer_norm_backward_workspace(int64_t M, int64_t K) { return 2 * column_partials(M, K); }

cudaError_t moments(DType dtype, Layout layout, int64_t R, int64_t L, const void* x, void* mean, void* var,
                    void* workspace, cudaStream_t stream) {
  const bool planar = layout == Layout::Planar;
  if ((planar ? R : L) <= 0) return cudaSuccess;
  if (!workspace && moments_workspace(layout, R, L) > 0) return cudaErrorInvalidValue;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const MomentsOp<T> op{{}, static_cast<const T*>(x), planar ? L : 1, planar ? L : R, static_cast<A*>(mean),
                          static_cast<A*>(var)};
    if (planar) {
      reduce_rows(op, R, L, planar_plan(R, L, true), workspace, stream);
    } else {
      reduce_columns(op, R, L, workspace, stream);
    }
  });
}

cudaError_t affine(DType dtype, Layout layout, int64_t R, int64_t L, const void* x, const void* scale,
                   const void* shift, void* y, cudaStream_t stream) {
  if (R <= 0 || L <= 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const AffineFn<T> f{layout == Layout::Planar, static_cast<const T*>(x), static_cast<const A*>(scale),
                        static_cast<const A*>(shift), static_cast<T*>(y)};
    launch_elementwise(f, R, L, stream);
  });
}

cudaError_t grad_sums(DType dtype, Layout layout, int64_t R, int64_t L, const void* dy, const void* x,
                      const void* mean, void* sum_dy, void* sum_dy_xmu, void* workspace, cudaStream_t stream) {
  const bool planar = layout == Layout::Planar;
  if ((planar ? R : L) <= 0) return cudaSuccess;
  if (!workspace && grad_sums_workspace(layout, R, L) > 0) return cudaErrorInvalidValue;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const GradSumsOp<T> op{{}, static_cast<const T*>(dy), static_cast<const T*>(x), static_cast<const A*>(mean),
                           static_cast<A*>(sum_dy), static_cast<A*>(sum_dy_xmu)};
    if (planar) {
      reduce_rows(op, R, L, planar_plan(R, L, true), workspace, stream);
    } else {
      reduce_columns(op, R, L, workspace, stream);
    }
  });
}

cudaError_t linear_grad(DType dtype, Layout layout, int64_t R, int64_t L, const void* dy, const void* x,
                        const void* a, const void* b, const void* c, void* dx, cudaStream_t stream) {
  if (R <= 0 || L <= 0) return cudaSuccess;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const LinearGradFn<T> f{layout == Layout::Planar, static_cast<const T*>(dy), static_cast<const T*>(x),
                            static_cast<const A*>(a), static_cast<const A*>(b), static_cast<const A*>(c),
                            static_cast<T*>(dx)};
    launch_elementwise(f, R, L, stream);
  });
}

cudaError_t layer_norm_forward(DType dtype, int64_t M, int64_t K, const void* x, const void* weight,
                               const void* bias, double eps, void* y, void* mean, void* rstd, void* workspace,
                               cudaStream_t stream) {
  if (M <= 0) return cudaSuccess;
  const PlanarPlan plan = planar_plan(M, K, true);
  if (!workspace && plan.chunks > 1) return cudaErrorInvalidValue;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const LayerNormForwardOp<T> op{{}, static_cast<const T*>(x), K, static_cast<const A*>(weight),
                                   static_cast<const A*>(bias), static_cast<A>(eps), static_cast<T*>(y),
                                   static_cast<A*>(mean), static_cast<A*>(rstd)};
    // One chunk per row: the reduction kernel writes y itself (its epilogue).
    reduce_rows(op, M, K, plan, workspace, stream);
    if (plan.chunks > 1) launch_elementwise(LayerNormApplyFn<T>{op}, M, K, stream);
  });
}

cudaError_t layer_norm_backward(DType dtype, int64_t M, int64_t K, const void* dy, const void* x,
                                const void* mean, const void* rstd, const void* weight, void* dx,
                                void* grad_weight, void* grad_bias, void* workspace, cudaStream_t stream) {
  if (K <= 0) return cudaSuccess;
  const bool column_sums = grad_weight || grad_bias;
  if (column_sums && !workspace && layer_norm_backward_workspace(M, K) > 0) return cudaErrorInvalidValue;
  return dispatch_float_types(dtype, [&](auto tag) {
    using T = decltype(tag);
    using A = acc_t<T>;
    const auto* dy_t = static_cast<const T*>(dy);
    const auto* x_t = static_cast<const T*>(x);
    const auto* mean_a = static_cast<const A*>(mean);
    const auto* rstd_a = static_cast<const A*>(rstd);
    if (M > 0) {
      // Rows are not split: dx needs the row sums before it is written, in the same kernel.
      const LayerNormBackwardRowOp<T> row_op{{}, dy_t, x_t, mean_a, rstd_a, static_cast<const A*>(weight),
                                             A(1) / static_cast<A>(K), static_cast<T*>(dx)};
      reduce_rows(row_op, M, K, planar_plan(M, K, false), nullptr, stream);
    }
    if (column_sums) {
      const LayerNormBackwardColumnOp<T> col_op{{}, dy_t, x_t, mean_a, rstd_a, static_cast<A*>(grad_weight),
                                                static_cast<A*>(grad_bias)};
      reduce_columns(col_op, M, K, workspace, stream);
    }
  });
}

}  // namespace tco::cuda_norm
