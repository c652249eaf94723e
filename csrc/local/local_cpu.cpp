// The CPU backend of the local family (local_ops.h): tiled and unshared (locally connected)
// convolution.
//
// One engine serves both through the rule of local_geometry.h (output position -> weight
// cell). Two ways to cut the work, chosen by the number of output positions per cell:
//
//  * by cells (tiled convolution: many positions share a kernel). The outputs of one cell
//    form an ordinary strided convolution (cell_geometry), so each (sample, cell) pair is
//    the conv family's column-blocked im2col + GEMM: unfold a block of the cell's output
//    columns into a slab that fits in L2, multiply by the cell's kernel, scatter the result
//    to the cell's output positions.
//  * by positions (unshared convolution: one kernel per position, or a tile at least as
//    large as the output). The weight, out_channels x in_channels x kernel per position,
//    is the large tensor here and a GEMM per position would have only `batch` columns, so
//    each position's unfolded columns (all samples) are gathered into a small per-thread
//    buffer and vectorised micro-kernels run along the rows of the position's weight, which
//    is read once per pass, front to back (see "By positions" below). The input gradient
//    of neighbouring positions overlaps, so positions run in bands of output rows: all even
//    bands in parallel, then all odd ones.
//
// Memory: besides the result, the extra memory is a buffer of about kSlabBytes (by cells)
// or of batch x in_channels x kernel_volume values (by positions) per thread, an
// (out_channels, position, sample) copy of the output or its gradient in the by-positions
// path, a float32 copy of the weight and of the input gradient for float16 / bfloat16, and,
// for the weight gradient of the by-cells path when there are fewer cells than threads, one
// partial weight gradient per extra thread. Never the unfolded input of the whole batch.
//
// The by-cells GEMMs run single-threaded inside at::parallel_for tasks, through at::mm (the BLAS
// that libtorch links).
// float16 and bfloat16 are computed in float32 (buffers, products and accumulators).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "../conv/conv_common.h"
#include "../conv/im2col_cpu.h"
#include "local_common.h"
#include "local_ops.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace tco {
namespace {

// ---------------------------------------------------------------------------------------
// Single-threaded row-major GEMM: C (m x n) = op(A) (m x k) @ op(B) (k x n) + beta * C, with
// op(A) = A^T when `ta` (A is then stored k x m); lda, ldb, ldc are row strides. beta is 0
// (C is overwritten, it may hold garbage) or 1.

template <typename T>
void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const T* a, int64_t lda, const T* b,
          int64_t ldb, T beta, T* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    if (beta == T(0)) {
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, T(0));
    }
    return;
  }
  // Through ATen's matrix product (its CPU BLAS, called single-threaded inside our tasks).
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const at::Tensor A = ta ? at::from_blob(const_cast<T*>(a), {k, m}, {lda, 1}, options).t()
                          : at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, options);
  const at::Tensor B = tb ? at::from_blob(const_cast<T*>(b), {n, k}, {ldb, 1}, options).t()
                          : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, options);
  at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, options);
  if (beta == T(0)) {
    at::mm_out(C, A, B);
  } else {
    C.addmm_(A, B);
  }
}

// Slabs are sized to stay in a core's L2 cache while they are multiplied.
constexpr int64_t kSlabBytes = int64_t(1) << 20;

// at::empty, advising the kernel to back large tensors with transparent huge pages. The
// unshared weight gradient is the size of the weight (116 MB for 64 -> 64 channels, 3x3, on
// 28x28 positions); measured on 4 KiB pages, first touching such a fresh tensor costs three
// times as long as writing it (page faults), with huge pages about the same.
at::Tensor empty_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  const size_t bytes = t.nbytes();
  if (bytes >= 4 * kHuge) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
    const uintptr_t lo = (begin + kHuge - 1) & ~(kHuge - 1), hi = (begin + bytes) & ~(kHuge - 1);
    if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // advice only: errors are harmless
  }
#endif
  return t;
}

at::Tensor zeros_large(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return empty_large(sizes, options).zero_();
}

// at::parallel_for grain: tasks of less than kMinParallelWork multiply-adds in all run on
// the calling thread. Waking a team of threads costs more than small problems take, and far
// more when a core is busy with another process and a worker waits for it.
constexpr int64_t kMinParallelWork = int64_t(1) << 18;

int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, kMinParallelWork / std::max<int64_t>(work_per_task, 1));
}

// The by-positions path serves geometries where each weight cell has at most one output
// position (unshared convolution, or a tile at least as large as the output); every other
// geometry goes by cells.
bool by_positions(const LocalGeometry& g) { return g.positions_per_cell() <= 1; }

// ---------------------------------------------------------------------------------------
// By cells.

// Columns per block of a cell's output plane (at least 16, so each GEMM keeps some width).
int64_t cell_block(const LocalGeometry& g, int64_t plane, int64_t elem_size) {
  int64_t b = kSlabBytes / std::max<int64_t>(g.conv.col_rows() * elem_size, 1);
  b = std::max<int64_t>(16, b);
  return std::max<int64_t>(1, std::min(b, plane));
}

// Calls fn(j, q, count, step) for the output columns [c0, c1) of cell `cell` (geometry gc):
// block columns j .. j + count - 1 (counted from c0) are the positions q, q + step, ... of
// the whole output plane.
template <typename Fn>
void for_each_cell_segment(const LocalGeometry& g, const ConvGeometry& gc, int64_t cell, int64_t c0,
                           int64_t c1, Fn&& fn) {
  int64_t first[3];
  cell_origin(g, cell, first);
  const int64_t oH = g.conv.out_size[1], oW = g.conv.out_size[2];
  for_each_row_segment(gc, c0, c1, [&](int64_t od, int64_t oh, int64_t a, int64_t b, int64_t col) {
    const int64_t q =
        ((first[0] + od * g.grid[0]) * oH + first[1] + oh * g.grid[1]) * oW + first[2] + a * g.grid[2];
    fn(col - c0, q, b - a, g.grid[2]);
  });
}

// Bias of output channel o at output position q (none, per channel or per position).
template <typename acc_t>
struct BiasRef {
  const acc_t* data = nullptr;
  bool per_position = false;
  int64_t plane = 0;
  acc_t at(int64_t o, int64_t q) const {
    if (!data) return acc_t(0);
    return per_position ? data[o * plane + q] : data[o];
  }
};

template <typename scalar_t, typename acc_t>
void cells_forward(const scalar_t* x, const acc_t* w, BiasRef<acc_t> bias, scalar_t* out,
                   const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  const int64_t cells = g.cells(), in_sample = c.in_channels * c.in_plane();
  const int64_t work = O * CK * g.positions_per_cell();
  at::parallel_for(0, N * cells, grain_for(work), [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // worker threads start without it
    std::vector<acc_t> slab, y;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / cells, cell = task % cells;
      const ConvGeometry gc = cell_geometry(g, cell);
      const int64_t Lc = gc.out_plane();
      if (Lc == 0) continue;
      const int64_t block = cell_block(g, Lc, sizeof(acc_t));
      slab.resize(CK * block);
      y.resize(O * block);
      for (int64_t c0 = 0; c0 < Lc; c0 += block) {
        const int64_t c1 = std::min(Lc, c0 + block), cols = c1 - c0;
        im2col_block<scalar_t, acc_t>(x + n * in_sample, slab.data(), cols, c0, c1, gc);
        gemm<acc_t>(false, false, O, cols, CK, w + cell * O * CK, CK, slab.data(), cols, 0, y.data(), cols);
        for_each_cell_segment(g, gc, cell, c0, c1, [&](int64_t j, int64_t q, int64_t count, int64_t step) {
          for (int64_t o = 0; o < O; ++o) {
            const acc_t* src = y.data() + o * cols + j;
            scalar_t* dst = out + (n * O + o) * L + q;
            for (int64_t i = 0; i < count; ++i) {
              dst[i * step] = static_cast<scalar_t>(src[i] + bias.at(o, q + i * step));
            }
          }
        });
      }
    }
  });
}

// grad_output of sample n at the block's positions, as an (O x cols) matrix.
template <typename scalar_t, typename acc_t>
void gather_cell_grad(const scalar_t* gout_n, acc_t* gy, int64_t cols, const LocalGeometry& g,
                      const ConvGeometry& gc, int64_t cell, int64_t c0, int64_t c1) {
  const int64_t O = g.conv.out_channels, L = g.conv.out_plane();
  for_each_cell_segment(g, gc, cell, c0, c1, [&](int64_t j, int64_t q, int64_t count, int64_t step) {
    for (int64_t o = 0; o < O; ++o) {
      const scalar_t* src = gout_n + o * L + q;
      acc_t* dst = gy + o * cols + j;
      for (int64_t i = 0; i < count; ++i) dst[i] = static_cast<acc_t>(src[i * step]);
    }
  });
}

// grad_input (in the compute type, zero on entry) += the transposed-kernel convolution of
// grad_output, one task per sample (tasks never write the same sample).
template <typename scalar_t, typename acc_t>
void cells_input_backward(const scalar_t* gout, const acc_t* w, acc_t* gin, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  const int64_t cells = g.cells(), in_sample = c.in_channels * c.in_plane();
  at::parallel_for(0, c.batch, grain_for(O * CK * L), [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::vector<acc_t> slab, gy;
    for (int64_t n = begin; n < end; ++n) {
      for (int64_t cell = 0; cell < cells; ++cell) {
        const ConvGeometry gc = cell_geometry(g, cell);
        const int64_t Lc = gc.out_plane();
        if (Lc == 0) continue;
        const int64_t block = cell_block(g, Lc, sizeof(acc_t));
        slab.resize(CK * block);
        gy.resize(O * block);
        for (int64_t c0 = 0; c0 < Lc; c0 += block) {
          const int64_t c1 = std::min(Lc, c0 + block), cols = c1 - c0;
          gather_cell_grad(gout + n * O * L, gy.data(), cols, g, gc, cell, c0, c1);
          gemm<acc_t>(true, false, CK, cols, O, w + cell * O * CK, CK, gy.data(), cols, 0, slab.data(), cols);
          col2im_block<acc_t>(slab.data(), cols, c0, c1, gin + n * in_sample, gc);
        }
      }
    }
  });
}

// grad_weight (cells x O x CK, compute type) = sum over samples of grad_output @ col^T per
// cell. Tasks are (cell, slice of the batch); with fewer cells than threads the batch is cut
// into `splits` slices, each summed into its own copy of the weight gradient (`partial`,
// splits x cells x O x CK, zero on entry), added up by the caller.
template <typename scalar_t, typename acc_t>
void cells_weight_backward(const scalar_t* gout, const scalar_t* x, acc_t* partial, int64_t splits,
                           const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  const int64_t cells = g.cells(), in_sample = c.in_channels * c.in_plane();
  const int64_t work = O * CK * g.positions_per_cell() * N / splits;
  at::parallel_for(0, cells * splits, grain_for(work), [&](int64_t begin, int64_t end) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::vector<acc_t> slab, gy;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t cell = task % cells, split = task / cells;
      const ConvGeometry gc = cell_geometry(g, cell);
      const int64_t Lc = gc.out_plane();
      if (Lc == 0) continue;
      const int64_t block = cell_block(g, Lc, sizeof(acc_t));
      slab.resize(CK * block);
      gy.resize(O * block);
      acc_t* gw = partial + (split * cells + cell) * O * CK;
      for (int64_t n = split * N / splits; n < (split + 1) * N / splits; ++n) {
        for (int64_t c0 = 0; c0 < Lc; c0 += block) {
          const int64_t c1 = std::min(Lc, c0 + block), cols = c1 - c0;
          im2col_block<scalar_t, acc_t>(x + n * in_sample, slab.data(), cols, c0, c1, gc);
          gather_cell_grad(gout + n * O * L, gy.data(), cols, g, gc, cell, c0, c1);
          gemm<acc_t>(false, true, O, CK, cols, gy.data(), cols, slab.data(), cols, 1, gw, CK);
        }
      }
    }
  });
}

// ---------------------------------------------------------------------------------------
// By positions (unshared convolution). A GEMM per position has only `batch` columns, too
// narrow for BLAS to run near memory speed (measured: batched 64 x 576 @ 576 x 8 products
// at a third of the bandwidth of reading the weight once), so this path has its own
// micro-kernels. For each position, the unfolded input of every sample is gathered into a
// per-thread (samples x CK) buffer straight from the input, and the kernels run along the
// rows of the position's (O x CK) weight, which is read once per position and pass, front
// to back. Samples go in groups of kLanes; the gradient of the output is used transposed to
// (O, position, sample) so that a position's gradients are contiguous.

constexpr int64_t kLanes = 8;

int64_t padded_batch(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// kLanes values as one vector (GCC vector extension: each TCO_VECTORIZE clone lowers it to
// its own registers, e.g. one AVX register of 8 floats). Writing the micro-kernels with it
// fixes the axis of vectorisation, which the auto-vectoriser picks badly for these loops.
template <typename T>
struct LaneVector {
  typedef T type __attribute__((vector_size(kLanes * sizeof(T))));
};
template <typename T>
using lanes_t = typename LaneVector<T>::type;

// (By reference rather than by value: a vector return value's ABI differs between clones.)
template <typename T>
inline void load_lanes(lanes_t<T>& v, const T* p) {
  std::memcpy(&v, p, sizeof(v));
}

template <typename T>
inline void store_lanes(T* p, const lanes_t<T>& v) {
  std::memcpy(p, &v, sizeof(v));
}

template <typename T>
inline T sum_lanes(const lanes_t<T>& v) {
  T s = 0;
  for (int i = 0; i < kLanes; ++i) s += v[i];
  return s;
}

// The micro-kernels keep kLanes independent accumulators in flight (one per sample): a
// multiply-add waits for the previous one into the same accumulator (about 4 cycles on
// current x86 cores), so fewer chains would leave the FMA units idle.

// y[o * ldy + l] = sum_k w[o * CK + k] * xT[l * ldt + k] for l < kLanes: one position's
// forward product for kLanes samples (xT: their unfolded columns, one row per sample).
template <typename T>
TCO_VECTORIZE void lanes_forward(const T* __restrict w, int64_t O, int64_t CK, const T* __restrict xT,
                                 int64_t ldt, T* __restrict y, int64_t ldy) {
  using V = lanes_t<T>;
  for (int64_t o = 0; o < O; ++o) {
    const T* wo = w + o * CK;
    V a[kLanes] = {};
    int64_t k = 0;
    for (; k + kLanes <= CK; k += kLanes) {
      V wv;
      load_lanes(wv, wo + k);
#pragma GCC unroll 8
      for (int l = 0; l < kLanes; ++l) {
        V xv;
        load_lanes(xv, xT + l * ldt + k);
        a[l] += wv * xv;
      }
    }
    for (int l = 0; l < kLanes; ++l) {
      T s = sum_lanes<T>(a[l]);
      for (int64_t kk = k; kk < CK; ++kk) s += wo[kk] * xT[l * ldt + kk];
      y[o * ldy + l] = s;
    }
  }
}

// gT[l * ldg + k] = sum_o w[o * CK + k] * gy[o * kLanes + l]: one position's input-gradient
// columns for kLanes samples (gT: one row per sample), from their output gradients gy.
template <typename T>
TCO_VECTORIZE void lanes_input_backward(const T* __restrict w, int64_t O, int64_t CK, const T* __restrict gy,
                                        T* __restrict gT, int64_t ldg) {
  using V = lanes_t<T>;
  int64_t k = 0;
  for (; k + kLanes <= CK; k += kLanes) {
    V a[kLanes] = {};
    for (int64_t o = 0; o < O; ++o) {
      V wv;
      load_lanes(wv, w + o * CK + k);
      const T* g = gy + o * kLanes;
#pragma GCC unroll 8
      for (int l = 0; l < kLanes; ++l) a[l] += g[l] * wv;
    }
#pragma GCC unroll 8
    for (int l = 0; l < kLanes; ++l) store_lanes(gT + l * ldg + k, a[l]);
  }
  for (; k < CK; ++k) {
    for (int l = 0; l < kLanes; ++l) {
      T s = 0;
      for (int64_t o = 0; o < O; ++o) s += w[o * CK + k] * gy[o * kLanes + l];
      gT[l * ldg + k] = s;
    }
  }
}

// gw[o * CK + k] (+)= sum_l gy[o * kLanes + l] * xT[l * ldt + k]: one position's kernel
// gradient from kLanes samples.
template <typename T>
TCO_VECTORIZE void lanes_weight_backward(const T* __restrict gy, int64_t O, int64_t CK, const T* __restrict xT,
                                         int64_t ldt, T* __restrict gw, bool accumulate) {
  using V = lanes_t<T>;
  constexpr int kChains = 8;                   // independent accumulators, as above
  constexpr int64_t kStep = kChains * kLanes;  // kernel entries per pass
  for (int64_t o = 0; o < O; ++o) {
    const T* b = gy + o * kLanes;
    T* row = gw + o * CK;
    int64_t k = 0;
    for (; k + kStep <= CK; k += kStep) {
      V a[kChains] = {};
      if (accumulate) {
#pragma GCC unroll 8
        for (int r = 0; r < kChains; ++r) load_lanes(a[r], row + k + r * kLanes);
      }
      for (int l = 0; l < kLanes; ++l) {
        const T* xl = xT + l * ldt + k;
#pragma GCC unroll 8
        for (int r = 0; r < kChains; ++r) {
          V xv;
          load_lanes(xv, xl + r * kLanes);
          a[r] += b[l] * xv;
        }
      }
#pragma GCC unroll 8
      for (int r = 0; r < kChains; ++r) store_lanes(row + k + r * kLanes, a[r]);
    }
    for (; k + kLanes <= CK; k += kLanes) {
      V a = {};
      if (accumulate) load_lanes(a, row + k);
      for (int l = 0; l < kLanes; ++l) {
        V xv;
        load_lanes(xv, xT + l * ldt + k);
        a += b[l] * xv;
      }
      store_lanes(row + k, a);
    }
    for (; k < CK; ++k) {
      T a = accumulate ? row[k] : T(0);
      for (int l = 0; l < kLanes; ++l) a += b[l] * xT[l * ldt + k];
      row[k] = a;
    }
  }
}

// The kernel taps of output position q that read inside the input: (tap, input position
// within a channel plane). Taps in the padding are left out.
struct TapRef {
  int64_t tap, pos;
};

void position_taps(const ConvGeometry& c, int64_t q, std::vector<TapRef>& taps) {
  taps.clear();
  const int64_t ow = q % c.out_size[2], oh = (q / c.out_size[2]) % c.out_size[1],
                od = q / (c.out_size[2] * c.out_size[1]);
  for (int64_t kd = 0; kd < c.kernel[0]; ++kd) {
    const int64_t id = od * c.stride[0] + tap_offset(c, 0, kd);
    if (id < 0 || id >= c.in_size[0]) continue;
    for (int64_t kh = 0; kh < c.kernel[1]; ++kh) {
      const int64_t ih = oh * c.stride[1] + tap_offset(c, 1, kh);
      if (ih < 0 || ih >= c.in_size[1]) continue;
      for (int64_t kw = 0; kw < c.kernel[2]; ++kw) {
        const int64_t iw = ow * c.stride[2] + tap_offset(c, 2, kw);
        if (iw < 0 || iw >= c.in_size[2]) continue;
        taps.push_back({(kd * c.kernel[1] + kh) * c.kernel[2] + kw, (id * c.in_size[1] + ih) * c.in_size[2] + iw});
      }
    }
  }
}

// xT[n * CK + c * K + tap] = input[n, c, window tap of position q] (zero in the padding), for
// n < batch; rows past the batch stay as they are (zero).
template <typename scalar_t, typename acc_t>
void gather_position_columns(const scalar_t* x, const std::vector<TapRef>& taps, acc_t* xT,
                             const ConvGeometry& c) {
  const int64_t C = c.in_channels, K = c.kernel_volume(), plane = c.in_plane();
  const bool whole_window = static_cast<int64_t>(taps.size()) == K;
  for (int64_t n = 0; n < c.batch; ++n) {
    for (int64_t ic = 0; ic < C; ++ic) {
      const scalar_t* src = x + (n * C + ic) * plane;
      acc_t* dst = xT + (n * C + ic) * K;
      if (!whole_window) std::fill(dst, dst + K, acc_t(0));
      for (const TapRef& t : taps) dst[t.tap] = static_cast<acc_t>(src[t.pos]);
    }
  }
}

// The adjoint: gin[n, c, window tap of position q] += gT[n * CK + c * K + tap].
template <typename acc_t>
void scatter_position_columns(const acc_t* gT, const std::vector<TapRef>& taps, acc_t* gin,
                              const ConvGeometry& c) {
  const int64_t C = c.in_channels, K = c.kernel_volume(), plane = c.in_plane();
  for (int64_t n = 0; n < c.batch; ++n) {
    for (int64_t ic = 0; ic < C; ++ic) {
      acc_t* dst = gin + (n * C + ic) * plane;
      const acc_t* src = gT + (n * C + ic) * K;
      for (const TapRef& t : taps) dst[t.pos] += src[t.tap];
    }
  }
}

// Flat weight cell of flat output position q.
int64_t cell_of_position(const LocalGeometry& g, int64_t q) {
  const int64_t oH = g.conv.out_size[1], oW = g.conv.out_size[2];
  return g.cell_of(q / (oW * oH), (q / oW) % oH, q % oW);
}

// The output gradient of position q from gyt (O, L, N) in groups of lanes:
// gy[(grp * O + o) * kLanes + l] is sample grp * kLanes + l (zero past the batch).
template <typename acc_t>
void gather_position_grad(const acc_t* gyt, int64_t q, acc_t* gy, const LocalGeometry& g) {
  const int64_t N = g.conv.batch, O = g.conv.out_channels, L = g.conv.out_plane();
  for (int64_t grp = 0; grp * kLanes < N; ++grp) {
    const int64_t lanes = std::min(kLanes, N - grp * kLanes);
    for (int64_t o = 0; o < O; ++o) {
      const acc_t* src = gyt + (o * L + q) * N + grp * kLanes;
      acc_t* dst = gy + (grp * O + o) * kLanes;
      std::copy(src, src + lanes, dst);
      std::fill(dst + lanes, dst + kLanes, acc_t(0));
    }
  }
}

// yt (O, L, N) = per position q: weight[cell(q)] @ unfolded input of q.
template <typename scalar_t, typename acc_t>
void positions_forward(const scalar_t* x, const acc_t* w, acc_t* yt, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  at::parallel_for(0, L, grain_for(O * CK * NP), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xT(NP * CK, acc_t(0)), y(O * kLanes);
    std::vector<TapRef> taps;
    for (int64_t q = begin; q < end; ++q) {
      position_taps(c, q, taps);
      gather_position_columns(x, taps, xT.data(), c);
      const acc_t* wq = w + cell_of_position(g, q) * O * CK;
      for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
        lanes_forward<acc_t>(wq, O, CK, xT.data() + n0 * CK, CK, y.data(), kLanes);
        const int64_t lanes = std::min(kLanes, N - n0);
        for (int64_t o = 0; o < O; ++o) {
          std::copy(y.data() + o * kLanes, y.data() + o * kLanes + lanes, yt + (o * L + q) * N + n0);
        }
      }
    }
  });
}

// Output bands for the input gradient: runs of `height` indices along the outermost output
// dimension of size > 1. The inputs read by band i and band i + 2 are disjoint, so all even
// bands can scatter in parallel, then all odd ones.
struct Bands {
  int64_t height, count, inner;  // inner: positions per index along the banded dimension
};

Bands output_bands(const ConvGeometry& c) {
  int dim = 2;
  for (int d = 0; d < 3; ++d) {
    if (c.out_size[d] > 1) {
      dim = d;
      break;
    }
  }
  // Band i covers output indices [i * h, (i + 1) * h) and reads input indices up to
  // ((i + 1) * h - 1) * s - pad + reach; band i + 2 starts at (i + 2) * h * s - pad. They are
  // apart when (h + 1) * s > reach, which h = max(1, reach / s) satisfies.
  const int64_t reach = c.dilation[dim] * (c.kernel[dim] - 1);
  const int64_t height = std::max<int64_t>(1, reach / c.stride[dim]);
  int64_t inner = 1;
  for (int d = dim + 1; d < 3; ++d) inner *= c.out_size[d];
  return {height, (c.out_size[dim] + height - 1) / height, inner};
}

// gin (N, C, plane, compute type, zero on entry) += per position q: weight[cell(q)]^T @
// grad_output of q, folded back onto the input positions it came from.
template <typename acc_t>
void positions_input_backward(const acc_t* gyt, const acc_t* w, acc_t* gin, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  const Bands bands = output_bands(c);
  const int64_t band_positions = bands.height * bands.inner;
  for (int64_t parity = 0; parity < 2; ++parity) {
    const int64_t count = (bands.count - parity + 1) / 2;  // bands parity, parity + 2, ...
    at::parallel_for(0, count, grain_for(O * CK * NP * band_positions), [&](int64_t begin, int64_t end) {
      std::vector<acc_t> gT(NP * CK), gy(O * NP);
      std::vector<TapRef> taps;
      for (int64_t i = begin; i < end; ++i) {
        const int64_t band = 2 * i + parity;
        for (int64_t q = band * band_positions; q < std::min(L, (band + 1) * band_positions); ++q) {
          position_taps(c, q, taps);
          gather_position_grad(gyt, q, gy.data(), g);
          const acc_t* wq = w + cell_of_position(g, q) * O * CK;
          for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
            lanes_input_backward<acc_t>(wq, O, CK, gy.data() + n0 * O, gT.data() + n0 * CK, CK);
          }
          scatter_position_columns(gT.data(), taps, gin, c);
        }
      }
    });
  }
}

// gw (cells x O x CK) = per position q: grad_output of q @ (unfolded input of q)^T. Each
// cell has at most one position here, so tasks write disjoint cells; cells without a
// position must be zero on entry.
template <typename scalar_t, typename acc_t>
void positions_weight_backward(const acc_t* gyt, const scalar_t* x, acc_t* gw, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  at::parallel_for(0, L, grain_for(O * CK * NP), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> xT(NP * CK, acc_t(0)), gy(O * NP);
    std::vector<TapRef> taps;
    for (int64_t q = begin; q < end; ++q) {
      position_taps(c, q, taps);
      gather_position_columns(x, taps, xT.data(), c);
      gather_position_grad(gyt, q, gy.data(), g);
      acc_t* gwq = gw + cell_of_position(g, q) * O * CK;
      for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
        lanes_weight_backward<acc_t>(gy.data() + n0 * O, O, CK, xT.data() + n0 * CK, CK, gwq, n0 > 0);
      }
    }
  });
}

// (N, channels, plane) -> (channels, plane, N) in the compute type.
at::Tensor sample_innermost(const at::Tensor& t, int64_t channels, int64_t plane, at::ScalarType ct) {
  at::Tensor out = empty_large({channels, plane, t.size(0)}, t.options().dtype(ct));
  out.permute({2, 0, 1}).copy_(t.reshape({t.size(0), channels, plane}));
  return out;
}

// (channels, plane, N) -> (N, channels, *spatial) in `dtype`.
at::Tensor sample_outermost(const at::Tensor& t, at::IntArrayRef shape, at::ScalarType dtype) {
  at::Tensor out = empty_large(shape, t.options().dtype(dtype));
  out.view({shape[0], t.size(0), t.size(1)}).copy_(t.permute({2, 0, 1}));
  return out;
}

// ---------------------------------------------------------------------------------------
// The passes of the CPU backend (local_ops.h).

at::Tensor forward_pass(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        const LocalGeometry& g, at::IntArrayRef shape) {
  const ConvGeometry& c = g.conv;
  const at::ScalarType st = input.scalar_type(), ct = compute_type(st);
  const at::Tensor w = weight.to(ct).contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->to(ct).contiguous();

  if (by_positions(g)) {
    const at::Tensor x = input.contiguous();
    at::Tensor yt = empty_large({c.out_channels, c.out_plane(), c.batch}, input.options().dtype(ct));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "cnn_ops_local_forward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      positions_forward<scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<acc_t>(),
                                         yt.data_ptr<acc_t>(), g);
    });
    if (b) yt.add_(b->view({c.out_channels, bias_per_position(*b) ? c.out_plane() : 1, 1}));
    return sample_outermost(yt, shape, st);
  }
  const at::Tensor x = input.contiguous();
  at::Tensor out = empty_large(shape, input.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "cnn_ops_local_forward", [&] {
    using acc_t = at::opmath_type<scalar_t>;  // the compute type
    BiasRef<acc_t> bref;
    if (b) bref = {b->const_data_ptr<acc_t>(), bias_per_position(*b), c.out_plane()};
    cells_forward<scalar_t, acc_t>(x.const_data_ptr<scalar_t>(), w.const_data_ptr<acc_t>(), bref,
                                   out.data_ptr<scalar_t>(), g);
  });
  return out;
}

at::Tensor input_backward_pass(const at::Tensor& grad_output, const at::Tensor& weight, const LocalGeometry& g,
                               at::IntArrayRef input_size) {
  const ConvGeometry& c = g.conv;
  const at::ScalarType st = grad_output.scalar_type(), ct = compute_type(st);
  const at::Tensor w = weight.to(ct).contiguous();
  if (by_positions(g)) {
    const at::Tensor gyt = sample_innermost(grad_output, c.out_channels, c.out_plane(), ct);
    at::Tensor gin = zeros_large(input_size, gyt.options());
    AT_DISPATCH_FLOATING_TYPES(ct, "cnn_ops_local_input_backward", [&] {
      positions_input_backward<scalar_t>(gyt.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                         gin.data_ptr<scalar_t>(), g);
    });
    return gin.to(st);
  }
  const at::Tensor gout = grad_output.contiguous();
  at::Tensor gin = zeros_large(input_size, gout.options().dtype(ct));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "cnn_ops_local_input_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cells_input_backward<scalar_t, acc_t>(gout.const_data_ptr<scalar_t>(), w.const_data_ptr<acc_t>(),
                                          gin.data_ptr<acc_t>(), g);
  });
  return gin.to(st);
}

at::Tensor weight_backward_pass(const at::Tensor& grad_output, const at::Tensor& input, const LocalGeometry& g,
                                at::IntArrayRef weight_size) {
  const ConvGeometry& c = g.conv;
  const at::ScalarType st = grad_output.scalar_type(), ct = compute_type(st);
  const at::TensorOptions ct_options = grad_output.options().dtype(ct);
  if (by_positions(g)) {
    const at::Tensor x = input.contiguous();
    const at::Tensor gyt = sample_innermost(grad_output, c.out_channels, c.out_plane(), ct);
    // Cells beyond the output (a grid larger than it) get no position and stay zero.
    const bool all_cells_used = g.cells() == c.out_plane();
    at::Tensor gw = all_cells_used ? empty_large(weight_size, ct_options) : zeros_large(weight_size, ct_options);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "cnn_ops_local_weight_backward", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      positions_weight_backward<scalar_t, acc_t>(gyt.const_data_ptr<acc_t>(), x.const_data_ptr<scalar_t>(),
                                                 gw.data_ptr<acc_t>(), g);
    });
    return gw.to(st);
  }
  const at::Tensor gout = grad_output.contiguous(), x = input.contiguous();
  const int64_t threads = at::get_num_threads();
  const int64_t splits = std::clamp<int64_t>((threads + g.cells() - 1) / g.cells(), 1, c.batch);
  std::vector<int64_t> partial_shape{splits};
  partial_shape.insert(partial_shape.end(), weight_size.begin(), weight_size.end());
  at::Tensor partial = zeros_large(partial_shape, ct_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, st, "cnn_ops_local_weight_backward", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    cells_weight_backward<scalar_t, acc_t>(gout.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                                           partial.data_ptr<acc_t>(), splits, g);
  });
  at::Tensor gw = partial.select(0, 0);
  for (int64_t s = 1; s < splits; ++s) gw.add_(partial.select(0, s));
  return gw.to(st);
}

const LocalBackend& cpu_local_backend() {
  static const LocalBackend backend{c10::DeviceType::CPU, &forward_pass, &input_backward_pass, &weight_backward_pass};
  return backend;
}

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) { tco::register_local_ops(m, tco::cpu_local_backend()); }
