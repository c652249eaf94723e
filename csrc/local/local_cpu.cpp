// CPU kernels of the local family: tiled and unshared (locally connected) convolution.
//
// One engine serves both through the rule of local_geometry.h (output position -> weight
// cell). Two ways to cut the work, chosen by the number of output positions per cell:
//
//  * by cells (tiled convolution: many positions share a kernel). The outputs of one cell
//    form an ordinary strided convolution (cell_geometry), so each (sample, cell) pair is
//    the conv family's column-blocked im2col + GEMM: unfold a block of the cell's output
//    columns into a slab that fits in L2, multiply by the cell's kernel, scatter the result
//    to the cell's output positions.
//  * by positions (unshared convolution: one kernel per position). A GEMM per position has
//    only `batch` columns, so the unfolded slab holds a block of positions for a chunk of
//    samples, laid out (rows, position, sample), and each position's GEMM reads its own
//    (rows x samples) piece. Input, output and their gradients are transposed once to
//    (channels, position, sample) so that a slab row is filled by contiguous copies and
//    each position's output or gradient is directly a GEMM operand. The weight (the large
//    tensor here, out_channels x in_channels x kernel per position) is streamed once per
//    pass.
//
// Memory: besides the result, the extra memory is one slab of about kSlabBytes per thread,
// one transposed copy of the input and of the output in the by-positions path, and, for the
// weight gradient of the by-cells path when there are fewer cells than threads, one partial
// weight gradient per extra thread. Never the unfolded input of the whole batch.
//
// The GEMMs run single-threaded inside at::parallel_for tasks, on the BLAS that libtorch
// links (its Fortran sgemm_/dgemm_), which costs a fraction of a microsecond per call where
// at::mm costs several: the by-positions path makes one call per output position and pass.
// float16 and bfloat16 are computed in float32 (slabs, GEMMs and accumulators).

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>
#include <c10/core/ScalarType.h>
#include <torch/library.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <type_traits>
#include <cstring>
#include <vector>

#include "../conv/im2col_cpu.h"
#include "local_common.h"

#ifdef __linux__
#include <sys/mman.h>
#endif

// The Fortran GEMMs of the BLAS inside libtorch (MKL on x86 wheels, OpenBLAS elsewhere).
// Weak, so that the extension still loads against a torch that does not export them; then
// the GEMMs go through at::mm.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}

namespace tco {
namespace {

// ---------------------------------------------------------------------------------------
// Single-threaded row-major GEMM: C (m x n) = op(A) (m x k) @ op(B) (k x n) + beta * C, with
// op(A) = A^T when `ta` (A is then stored k x m); lda, ldb, ldc are row strides. beta is 0
// (C is overwritten, it may hold garbage) or 1.

template <typename T>
void blas_gemm(const char* ta, const char* tb, const int* m, const int* n, const int* k, const T* alpha,
               const T* a, const int* lda, const T* b, const int* ldb, const T* beta, T* c, const int* ldc);
template <>
void blas_gemm<float>(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                      const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                      const float* beta, float* c, const int* ldc) {
  sgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
template <>
void blas_gemm<double>(const char* ta, const char* tb, const int* m, const int* n, const int* k,
                       const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
                       const double* beta, double* c, const int* ldc) {
  dgemm_(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename T>
bool have_blas() {
  if constexpr (std::is_same_v<T, float>) {
    return sgemm_ != nullptr;
  } else {
    return dgemm_ != nullptr;
  }
}

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
  // BLAS wants each leading dimension at least the stored row length, even for one row.
  lda = std::max(lda, ta ? m : k);
  ldb = std::max(ldb, tb ? k : n);
  ldc = std::max(ldc, n);
  const bool fits = std::max({m, n, k, lda, ldb, ldc}) <= INT_MAX;
  if (fits && have_blas<T>()) {
    // Column-major BLAS sees each row-major matrix transposed: C^T = op(B)^T op(A)^T.
    const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
    const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb), ildc = static_cast<int>(ldc);
    const T one = 1;
    blas_gemm<T>(tb ? "T" : "N", ta ? "T" : "N", &in, &im, &ik, &one, b, &ildb, a, &ilda, &beta, c, &ildc);
    return;
  }
  const auto options = at::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
  const at::Tensor A = ta ? at::from_blob(const_cast<T*>(a), {k, m}, {lda, 1}, options).t()
                          : at::from_blob(const_cast<T*>(a), {m, k}, {lda, 1}, options);
  const at::Tensor B = tb ? at::from_blob(const_cast<T*>(b), {n, k}, {ldb, 1}, options).t()
                          : at::from_blob(const_cast<T*>(b), {k, n}, {ldb, 1}, options);
  at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, options);
  if (beta == T(0)) {
    C.copy_(at::mm(A, B));
  } else {
    C.add_(at::mm(A, B));
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

at::ScalarType compute_type(at::ScalarType t) {
  return (t == at::kHalf || t == at::kBFloat16) ? at::kFloat : t;
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
  at::parallel_for(0, N * cells, 1, [&](int64_t begin, int64_t end) {
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
  at::parallel_for(0, c.batch, 1, [&](int64_t begin, int64_t end) {
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
  at::parallel_for(0, cells * splits, 1, [&](int64_t begin, int64_t end) {
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
// By positions. Tensors here are "sample-innermost": (channels, position, batch), in the
// compute type. Each position's GEMM has only `batch` columns, too narrow for BLAS to run
// near memory speed (measured: batched 64 x 576 @ 576 x 8 products at a third of the
// bandwidth of reading the weight once), so these paths use their own micro-kernels,
// vectorised over groups of kLanes samples: the weight, the large operand, is read once
// per position and pass from memory (again from cache for further groups of samples).

constexpr int64_t kLanes = 8;

int64_t padded_batch(int64_t n) { return (n + kLanes - 1) / kLanes * kLanes; }

// y[o * ldy + l] = sum_k w[o * CK + k] * x[k * ldx + l] for l < kLanes: the forward
// product of one position's (O x CK) kernel and kLanes unfolded samples.
template <typename T>
TCO_VECTORIZE void lanes_forward(const T* __restrict w, int64_t O, int64_t CK, const T* __restrict x,
                                 int64_t ldx, T* __restrict y, int64_t ldy) {
  constexpr int R = 4;  // output rows per pass over x: each x load feeds R FMAs
  int64_t o = 0;
  for (; o + R <= O; o += R) {
    T acc[R][kLanes] = {};
    const T* wo = w + o * CK;
    for (int64_t k = 0; k < CK; ++k) {
      const T* xk = x + k * ldx;
      for (int r = 0; r < R; ++r) {
        const T wr = wo[r * CK + k];
        for (int l = 0; l < kLanes; ++l) acc[r][l] += wr * xk[l];
      }
    }
    for (int r = 0; r < R; ++r)
      for (int l = 0; l < kLanes; ++l) y[(o + r) * ldy + l] = acc[r][l];
  }
  for (; o < O; ++o) {
    T acc[kLanes] = {};
    for (int64_t k = 0; k < CK; ++k) {
      const T wk = w[o * CK + k];
      for (int l = 0; l < kLanes; ++l) acc[l] += wk * x[k * ldx + l];
    }
    for (int l = 0; l < kLanes; ++l) y[o * ldy + l] = acc[l];
  }
}

// g[k * ldg + l] = sum_o w[o * CK + k] * gy[o * kLanes + l]: the transposed product (the
// input gradient's unfolded columns) of one position's kernel and kLanes samples' gradients.
template <typename T>
TCO_VECTORIZE void lanes_input_backward(const T* __restrict w, int64_t O, int64_t CK, const T* __restrict gy,
                                        T* __restrict g, int64_t ldg) {
  constexpr int KB = 8;  // kernel rows per pass over gy; each reads 32 contiguous bytes of a weight row
  int64_t k = 0;
  for (; k + KB <= CK; k += KB) {
    T acc[KB][kLanes] = {};
    for (int64_t o = 0; o < O; ++o) {
      const T* wk = w + o * CK + k;
      const T* gv = gy + o * kLanes;
      for (int kk = 0; kk < KB; ++kk) {
        const T wv = wk[kk];
        for (int l = 0; l < kLanes; ++l) acc[kk][l] += wv * gv[l];
      }
    }
    for (int kk = 0; kk < KB; ++kk)
      for (int l = 0; l < kLanes; ++l) g[(k + kk) * ldg + l] = acc[kk][l];
  }
  for (; k < CK; ++k) {
    T acc[kLanes] = {};
    for (int64_t o = 0; o < O; ++o) {
      const T wv = w[o * CK + k];
      for (int l = 0; l < kLanes; ++l) acc[l] += wv * gy[o * kLanes + l];
    }
    for (int l = 0; l < kLanes; ++l) g[k * ldg + l] = acc[l];
  }
}

// gw[o * CK + k] (+)= sum_l gy[o * kLanes + l] * xT[l * ldt + k]: one position's kernel
// gradient from kLanes samples (xT: their unfolded columns, transposed).
template <typename T>
TCO_VECTORIZE void lanes_weight_backward(const T* __restrict gy, int64_t O, int64_t CK, const T* __restrict xT,
                                         int64_t ldt, T* __restrict gw, bool accumulate) {
  constexpr int V = 8;  // kernel entries per step
  for (int64_t o = 0; o < O; ++o) {
    T b[kLanes];
    for (int l = 0; l < kLanes; ++l) b[l] = gy[o * kLanes + l];
    T* row = gw + o * CK;
    int64_t k = 0;
    for (; k + V <= CK; k += V) {
      T acc[V];
      for (int v = 0; v < V; ++v) acc[v] = accumulate ? row[k + v] : T(0);
      for (int l = 0; l < kLanes; ++l)
        for (int v = 0; v < V; ++v) acc[v] += b[l] * xT[l * ldt + k + v];
      for (int v = 0; v < V; ++v) row[k + v] = acc[v];
    }
    for (; k < CK; ++k) {
      T a = accumulate ? row[k] : T(0);
      for (int l = 0; l < kLanes; ++l) a += b[l] * xT[l * ldt + k];
      row[k] = a;
    }
  }
}

// Positions per block: the unfolded block (CK x positions x padded batch) stays under
// kSlabBytes, with at least one position.
int64_t position_block(const LocalGeometry& g, int64_t elem_size) {
  const int64_t per_position = std::max<int64_t>(g.conv.col_rows() * padded_batch(g.conv.batch) * elem_size, 1);
  return std::max<int64_t>(1, kSlabBytes / per_position);
}

// Flat weight cell of flat output position q.
int64_t cell_of_position(const LocalGeometry& g, int64_t q) {
  const int64_t oH = g.conv.out_size[1], oW = g.conv.out_size[2];
  return g.cell_of(q / (oW * oH), (q / oW) % oH, q % oW);
}

// Calls fn(r, dst_offset, src_offset, lo, hi, a, b) for every slab row r = (channel, tap)
// and every output row segment [a, b) of positions [q0, q1): slab entries
// (r, position q0 + dst_offset + ow) for ow in [a, b) read input position
// src_offset + ow * stride[2] (within channel r / kernel_volume) when ow is in [lo, hi), and
// padding otherwise (lo == hi == a when the whole segment reads padding).
template <typename Fn>
void for_each_position_row(const LocalGeometry& g, int64_t q0, int64_t q1, Fn&& fn) {
  const ConvGeometry& c = g.conv;
  const int64_t K = c.kernel_volume(), D = c.in_size[0], H = c.in_size[1], W = c.in_size[2];
  for (int64_t r = 0; r < c.col_rows(); ++r) {
    const int64_t tap = r % K;
    const int64_t kw = tap % c.kernel[2], kh = (tap / c.kernel[2]) % c.kernel[1],
                  kd = tap / (c.kernel[2] * c.kernel[1]);
    const int64_t off_d = tap_offset(c, 0, kd), off_h = tap_offset(c, 1, kh), off_w = tap_offset(c, 2, kw);
    const IndexRange rw = valid_outputs(c, 2, off_w);
    for_each_row_segment(c, q0, q1, [&](int64_t od, int64_t oh, int64_t a, int64_t b, int64_t col) {
      const int64_t id = od * c.stride[0] + off_d, ih = oh * c.stride[1] + off_h;
      const int64_t dst = col - q0 - a;
      if (id < 0 || id >= D || ih < 0 || ih >= H) {
        fn(r, dst, int64_t(0), a, a, a, b);
        return;
      }
      const int64_t lo = std::clamp(rw.lo, a, b), hi = std::clamp(rw.hi, lo, b);
      fn(r, dst, (id * H + ih) * W + off_w, lo, hi, a, b);
    });
  }
}

// Unfolds positions [q0, q1) of xt (C, plane, N) into slab (CK, q1 - q0, NP), NP the batch
// padded to whole groups of lanes; every slab entry is written (zeros for padding and for
// the lanes past the batch).
template <typename acc_t>
void fill_positions(const acc_t* xt, acc_t* slab, int64_t q0, int64_t q1, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), K = c.kernel_volume(), plane = c.in_plane();
  const int64_t P = q1 - q0, sw = c.stride[2];
  for_each_position_row(g, q0, q1, [&](int64_t r, int64_t dst_off, int64_t src_off, int64_t lo, int64_t hi,
                                       int64_t a, int64_t b) {
    acc_t* dst = slab + (r * P + dst_off) * NP;  // dst + ow * NP: position ow of this segment
    std::fill(dst + a * NP, dst + lo * NP, acc_t(0));
    std::fill(dst + hi * NP, dst + b * NP, acc_t(0));
    if (lo >= hi) return;
    const acc_t* src = xt + ((r / K) * plane + src_off) * N;
    if (sw == 1 && N == NP) {
      std::memcpy(dst + lo * NP, src + lo * N, (hi - lo) * N * sizeof(acc_t));
      return;
    }
    for (int64_t ow = lo; ow < hi; ++ow) {
      std::memcpy(dst + ow * NP, src + ow * sw * N, N * sizeof(acc_t));
      std::fill(dst + ow * NP + N, dst + (ow + 1) * NP, acc_t(0));
    }
  });
}

// The adjoint of fill_positions: gint (C, plane, N) += slab (lanes past the batch ignored).
template <typename acc_t>
void unfill_positions(const acc_t* slab, acc_t* gint, int64_t q0, int64_t q1, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), K = c.kernel_volume(), plane = c.in_plane();
  const int64_t P = q1 - q0, sw = c.stride[2];
  for_each_position_row(g, q0, q1, [&](int64_t r, int64_t dst_off, int64_t src_off, int64_t lo, int64_t hi,
                                       int64_t, int64_t) {
    if (lo >= hi) return;
    const acc_t* src = slab + (r * P + dst_off) * NP;
    acc_t* dst = gint + ((r / K) * plane + src_off) * N;
    if (sw == 1 && N == NP) {
      axpy_scatter<acc_t, acc_t>(dst + lo * N, src + lo * NP, acc_t(1), (hi - lo) * N, 1);
      return;
    }
    for (int64_t ow = lo; ow < hi; ++ow) {
      axpy_scatter<acc_t, acc_t>(dst + ow * sw * N, src + ow * NP, acc_t(1), N, 1);
    }
  });
}

// The gradient of position q from gyt (O, L, N) as groups of lanes: gy[(grp * O + o) * kLanes + l]
// is sample grp * kLanes + l (zero past the batch).
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
template <typename acc_t>
void positions_forward(const acc_t* xt, const acc_t* w, acc_t* yt, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  const int64_t block = position_block(g, sizeof(acc_t));
  at::parallel_for(0, (L + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> slab(CK * block * NP), y(O * kLanes);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t q0 = blk * block, q1 = std::min(L, q0 + block), P = q1 - q0;
      fill_positions(xt, slab.data(), q0, q1, g);
      for (int64_t q = q0; q < q1; ++q) {
        const acc_t* wq = w + cell_of_position(g, q) * O * CK;
        for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
          lanes_forward<acc_t>(wq, O, CK, slab.data() + (q - q0) * NP + n0, P * NP, y.data(), kLanes);
          const int64_t lanes = std::min(kLanes, N - n0);
          for (int64_t o = 0; o < O; ++o) {
            std::copy(y.data() + o * kLanes, y.data() + o * kLanes + lanes, yt + (o * L + q) * N + n0);
          }
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

// gint (C, plane, N, zero on entry) += per position q: weight[cell(q)]^T @ grad_output of q,
// folded back onto the input positions it came from.
template <typename acc_t>
void positions_input_backward(const acc_t* gyt, const acc_t* w, acc_t* gint, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  const int64_t block = position_block(g, sizeof(acc_t));
  const Bands bands = output_bands(c);
  const int64_t band_positions = bands.height * bands.inner;
  for (int64_t parity = 0; parity < 2; ++parity) {
    const int64_t count = (bands.count - parity + 1) / 2;  // bands parity, parity + 2, ...
    at::parallel_for(0, count, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> slab(CK * block * NP), gy(O * NP);
      for (int64_t i = begin; i < end; ++i) {
        const int64_t band = 2 * i + parity;
        const int64_t band_end = std::min(L, (band + 1) * band_positions);
        for (int64_t q0 = band * band_positions; q0 < band_end; q0 += block) {
          const int64_t q1 = std::min(band_end, q0 + block), P = q1 - q0;
          for (int64_t q = q0; q < q1; ++q) {
            gather_position_grad(gyt, q, gy.data(), g);
            const acc_t* wq = w + cell_of_position(g, q) * O * CK;
            for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
              lanes_input_backward<acc_t>(wq, O, CK, gy.data() + n0 * O, slab.data() + (q - q0) * NP + n0, P * NP);
            }
          }
          unfill_positions(slab.data(), gint, q0, q1, g);
        }
      }
    });
  }
}

// gw (cells x O x CK) = per position q: grad_output of q @ (unfolded input of q)^T. Each
// cell has at most one position here, so tasks write disjoint cells; cells without a
// position must be zero on entry.
template <typename acc_t>
void positions_weight_backward(const acc_t* gyt, const acc_t* xt, acc_t* gw, const LocalGeometry& g) {
  const ConvGeometry& c = g.conv;
  const int64_t N = c.batch, NP = padded_batch(N), O = c.out_channels, CK = c.col_rows(), L = c.out_plane();
  const int64_t block = position_block(g, sizeof(acc_t));
  at::parallel_for(0, (L + block - 1) / block, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> slab(CK * block * NP), gy(O * NP), xT(kLanes * CK);
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t q0 = blk * block, q1 = std::min(L, q0 + block), P = q1 - q0;
      fill_positions(xt, slab.data(), q0, q1, g);
      for (int64_t q = q0; q < q1; ++q) {
        gather_position_grad(gyt, q, gy.data(), g);
        acc_t* gwq = gw + cell_of_position(g, q) * O * CK;
        for (int64_t n0 = 0; n0 < N; n0 += kLanes) {
          // This group's unfolded columns, transposed to (lanes x CK) so the kernel runs along CK.
          const acc_t* x = slab.data() + (q - q0) * NP + n0;
          for (int64_t r = 0; r < CK; ++r)
            for (int64_t l = 0; l < kLanes; ++l) xT[l * CK + r] = x[r * P * NP + l];
          lanes_weight_backward<acc_t>(gy.data() + n0 * O, O, CK, xT.data(), CK, gwq, n0 > 0);
        }
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

std::vector<int64_t> output_shape(const LocalGeometry& g, int64_t nd) {
  std::vector<int64_t> shape{g.conv.batch, g.conv.out_channels};
  for (int64_t d = 3 - nd; d < 3; ++d) shape.push_back(g.conv.out_size[d]);
  return shape;
}

// ---------------------------------------------------------------------------------------
// Op entry points (CPU dispatch key).

at::Tensor local_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                             const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef padding_end, at::IntArrayRef dilation) {
  // The ATen calls below (copies, conversions) are implementation details, not graph nodes.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LocalGeometry g = local_forward_geometry(input, weight, bias, stride, padding, padding_end, dilation);
  const ConvGeometry& c = g.conv;
  const int64_t nd = static_cast<int64_t>(stride.size());
  const std::vector<int64_t> shape = output_shape(g, nd);
  const at::ScalarType st = input.scalar_type(), ct = compute_type(st);
  if (c.batch == 0 || c.out_plane() == 0) return at::empty(shape, input.options());
  const at::Tensor w = weight.to(ct).contiguous();
  std::optional<at::Tensor> b;
  if (bias.has_value() && bias->defined()) b = bias->to(ct).contiguous();

  if (by_positions(g)) {
    const at::Tensor xt = sample_innermost(input, c.in_channels, c.in_plane(), ct);
    at::Tensor yt = empty_large({c.out_channels, c.out_plane(), c.batch}, xt.options());
    AT_DISPATCH_FLOATING_TYPES(ct, "cnn_ops_local_forward", [&] {
      positions_forward<scalar_t>(xt.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                  yt.data_ptr<scalar_t>(), g);
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

at::Tensor local_input_backward_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                    at::IntArrayRef input_size, at::IntArrayRef stride,
                                    at::IntArrayRef padding, at::IntArrayRef dilation) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LocalGeometry g =
      local_input_backward_geometry(grad_output, weight, input_size, stride, padding, dilation);
  const ConvGeometry& c = g.conv;
  const at::ScalarType st = grad_output.scalar_type(), ct = compute_type(st);
  if (c.batch == 0 || c.in_plane() == 0 || c.in_channels == 0 || c.out_plane() == 0) {
    return at::zeros(input_size, grad_output.options());
  }
  const at::Tensor w = weight.to(ct).contiguous();
  if (by_positions(g)) {
    const at::Tensor gyt = sample_innermost(grad_output, c.out_channels, c.out_plane(), ct);
    at::Tensor gint = zeros_large({c.in_channels, c.in_plane(), c.batch}, gyt.options());
    AT_DISPATCH_FLOATING_TYPES(ct, "cnn_ops_local_input_backward", [&] {
      positions_input_backward<scalar_t>(gyt.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                         gint.data_ptr<scalar_t>(), g);
    });
    return sample_outermost(gint, input_size, st);
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

at::Tensor local_weight_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                     at::IntArrayRef weight_size, at::IntArrayRef stride,
                                     at::IntArrayRef padding, at::IntArrayRef dilation) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const LocalGeometry g =
      local_weight_backward_geometry(grad_output, input, weight_size, stride, padding, dilation);
  const ConvGeometry& c = g.conv;
  const at::ScalarType st = grad_output.scalar_type(), ct = compute_type(st);
  if (c.batch == 0 || c.out_plane() == 0) return at::zeros(weight_size, grad_output.options());
  const at::TensorOptions ct_options = grad_output.options().dtype(ct);
  if (by_positions(g)) {
    const at::Tensor xt = sample_innermost(input, c.in_channels, c.in_plane(), ct);
    const at::Tensor gyt = sample_innermost(grad_output, c.out_channels, c.out_plane(), ct);
    // Cells beyond the output (a grid larger than it) get no position and stay zero.
    const bool all_cells_used = g.cells() == c.out_plane();
    at::Tensor gw = all_cells_used ? empty_large(weight_size, ct_options) : zeros_large(weight_size, ct_options);
    AT_DISPATCH_FLOATING_TYPES(ct, "cnn_ops_local_weight_backward", [&] {
      positions_weight_backward<scalar_t>(gyt.const_data_ptr<scalar_t>(), xt.const_data_ptr<scalar_t>(),
                                          gw.data_ptr<scalar_t>(), g);
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

}  // namespace
}  // namespace tco

TORCH_LIBRARY_IMPL(cnn_ops, CPU, m) {
  m.impl("local_forward", &tco::local_forward_cpu);
  m.impl("local_input_backward", &tco::local_input_backward_cpu);
  m.impl("local_weight_backward", &tco::local_weight_backward_cpu);
}
