// The Winograd pass of the CPU backend (plan and layouts: conv_winograd.h).
//
// Fused and blocked: each task takes a block of tile rows (a tile row is the tiles_w tiles of
// one sample at one tile height) of one group, transforms its input tiles into V, runs the
// alpha^2 GEMMs M[k] = U[k] @ V[k] (batched_gemm) and transforms M back into the output rows.
// Tasks run in parallel, each worker with its own buffers, so the extra memory is the
// transformed weight (alpha^2 / 9 times the weight, in the compute type) plus V, M and a
// row buffer of one block per thread (about kBlockBytes, more for layers of many channels:
// see kMinBlockTiles; kept by the thread between calls, see WorkBuffers), whatever the batch.
//
// The transforms run on vectors over the tiles of a block, whatever the plane's width (see
// WinogradCpu), and over the input channels for the weight.

#include "conv_winograd_cpu.h"

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/baddbmm_cpu_dispatch.h>
#include <ATen/ops/bmm_cpu_dispatch.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "../cpu_vectorize.h"
#include "conv_common.h"

namespace tco {
namespace {

// Blocks of tile rows: V and M of a block within kBlockBytes, but at least kMinBlockTiles tiles
// and at least as many tiles as output channels per group, so that each GEMM's columns amortise
// the reading of U[k] (O x C, from the outer caches for wide layers). Measured on the 3x3
// ResNet layers (forward, 1 thread): 1 MiB blocks ran 0.83-1.3x torch's time, 4 MiB 0.6-1.4x,
// 4 MiB with the tile minimum 0.7-0.9x.
constexpr int64_t kBlockBytes = int64_t(4) << 20;
constexpr int64_t kMinBlockTiles = 64;

// ---- the transforms ----
// With the matrices of F(MH, 3) along the height and F(MW, 3) along the width as compile-time
// constants, the loops over the matrices unroll completely and the zero coefficients drop
// out. What is left runs on 64-byte vectors (GCC vector extensions: one AVX-512 register, two
// AVX2 ones or four SSE ones, whichever clone TCO_VECTORIZE picks) over the tiles (input and
// output) or the input channels (weight), all contiguous in memory; tails on scalars.

// The helpers below pass these vectors by value. -Wpsabi notes that a 64-byte vector passed
// without AVX-512 enabled would change the calling convention; but every such helper is
// always_inline, in this file's anonymous namespace: no call is ever made, so no convention
// applies. (Off to the end of the file: GCC reports it where the templates are instantiated.)
#pragma GCC diagnostic ignored "-Wpsabi"

template <typename T>
struct Simd {
  typedef T vec __attribute__((vector_size(64)));
  static constexpr int64_t lanes = 64 / sizeof(T);
};

// Unaligned loads and stores of a vector (or of a scalar: V = T).
template <typename V, typename T>
__attribute__((always_inline)) inline V load(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
__attribute__((always_inline)) inline void store(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

// sum_i c[i] * x[i] over the nonzero c[i] of a constant row.
template <int N, typename T, typename V>
__attribute__((always_inline)) inline V combine(const double (&c)[N], const V (&x)[N]) {
  V s = V{};
#pragma GCC unroll 8
  for (int i = 0; i < N; ++i) {
    if (c[i] != 0) s += static_cast<T>(c[i]) * x[i];
  }
  return s;
}

// V[xi * AW + nu] at tile t (v_t + (xi * AW + nu) * k_stride, v_t where the layout puts tile
// t) = (B_h^T d B_w)[xi][nu] for the patch d of tile t,
// d[i][j] = x[(i * MW + j % MW) * phase_len + t + j / MW]: the buffer rows split into their MW
// phases (column tile * MW + q of row i at x[(i * MW + q) * phase_len + tile]), so that the
// patches of consecutive tiles are consecutive in every phase.
template <int MH, int MW, typename T, typename V>
__attribute__((always_inline)) inline void input_tile(const T* x, int64_t phase_len, int64_t t, T* v_t,
                                                      int64_t k_stride) {
  using BH = WinogradMatrices<MH>;
  using BW = WinogradMatrices<MW>;
  constexpr int AH = BH::alpha, AW = BW::alpha;
  // Column nu of d B_w, then B_h^T of it: AH vectors live at a time (the patch is reloaded
  // from L1 per column rather than held in registers, which F(6x6) would spill).
#pragma GCC unroll 8
  for (int nu = 0; nu < AW; ++nu) {
    V column[AH];
#pragma GCC unroll 8
    for (int i = 0; i < AH; ++i) {
      V row[AW];
#pragma GCC unroll 8
      for (int j = 0; j < AW; ++j) row[j] = BW::bt[nu][j] != 0 ? load<V>(x + (i * MW + j % MW) * phase_len + t + j / MW) : V{};
      column[i] = combine<AW, T>(BW::bt[nu], row);
    }
#pragma GCC unroll 8
    for (int xi = 0; xi < AH; ++xi) store(v_t + (xi * AW + nu) * k_stride, combine<AH, T>(BH::bt[xi], column));
  }
}

// Tile t of V in panels of kPanelWidth tiles, panel_stride apart: at v + (t / kPanelWidth) *
// panel_stride + t % kPanelWidth (panel_stride = kPanelWidth: tile-contiguous rows). A vector's
// lanes (16 floats or 8 doubles from a multiple of their count) stay within one panel.
constexpr int64_t kPanelWidth = 32;

template <int MH, int MW, typename T>
TCO_VECTORIZE void input_tiles(const T* x, int64_t phase_len, int64_t tiles, T* v, int64_t k_stride,
                               int64_t panel_stride) {
  using Vec = typename Simd<T>::vec;
  static_assert(kPanelWidth % Simd<T>::lanes == 0, "a vector of tiles within one panel");
  const auto at = [&](int64_t t) { return v + t / kPanelWidth * panel_stride + t % kPanelWidth; };
  int64_t t = 0;
  for (; t + Simd<T>::lanes <= tiles; t += Simd<T>::lanes) input_tile<MH, MW, T, Vec>(x, phase_len, t, at(t), k_stride);
  for (; t < tiles; ++t) input_tile<MH, MW, T, T>(x, phase_len, t, at(t), k_stride);
}

// y[(i * MW + j) * tiles + t] = (A_h^T M A_w)[i][j] + bias for tile t, from
// M[xi * AW + nu] at tile t (m + (xi * AW + nu) * k_stride + t): the output rows in phases.
template <int MH, int MW, typename T, typename V>
__attribute__((always_inline)) inline void output_tile(const T* m, int64_t k_stride, int64_t t, T bias, T* y,
                                                       int64_t tiles) {
  using BH = WinogradMatrices<MH>;
  using BW = WinogradMatrices<MW>;
  constexpr int AH = BH::alpha, AW = BW::alpha;
  // Column j of M A_w, then A_h^T of it: AH vectors live at a time.
#pragma GCC unroll 8
  for (int j = 0; j < MW; ++j) {
    V column[AH];
#pragma GCC unroll 8
    for (int xi = 0; xi < AH; ++xi) {
      V row[AW];
#pragma GCC unroll 8
      for (int nu = 0; nu < AW; ++nu) row[nu] = BW::at[j][nu] != 0 ? load<V>(m + (xi * AW + nu) * k_stride + t) : V{};
      column[xi] = combine<AW, T>(BW::at[j], row);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MH; ++i) store(y + (i * MW + j) * tiles + t, combine<AH, T>(BH::at[i], column) + bias);
  }
}

template <int MH, int MW, typename T>
TCO_VECTORIZE void output_tiles(const T* m, int64_t k_stride, int64_t tiles, T bias, T* y) {
  using Vec = typename Simd<T>::vec;
  int64_t t = 0;
  for (; t + Simd<T>::lanes <= tiles; t += Simd<T>::lanes) output_tile<MH, MW, T, Vec>(m, k_stride, t, bias, y, tiles);
  for (; t < tiles; ++t) output_tile<MH, MW, T, T>(m, k_stride, t, bias, y, tiles);
}

// U[xi * AW + nu] at channel c (u + (xi * AW + nu) * k_stride + c) = (G_h f G_w^T)[xi][nu] for
// the kernel f of channel c given tap-major, f[a][b] = taps[(a * KW + b) * channels + c]
// (KH = 3 where MH > 1, KW = 3 where MW > 1).
template <int MH, int MW, typename T, typename V>
__attribute__((always_inline)) inline void weight_tile(const T* taps, int64_t channels, int64_t c, T* u,
                                                       int64_t k_stride) {
  using BH = WinogradMatrices<MH>;
  using BW = WinogradMatrices<MW>;
  constexpr int AH = BH::alpha, AW = BW::alpha, KH = BH::r, KW = BW::r;
  V cols[KW][AH];  // cols[b] is column b of G_h f
#pragma GCC unroll 3
  for (int b = 0; b < KW; ++b) {
    V column[3];
#pragma GCC unroll 3
    for (int a = 0; a < 3; ++a) column[a] = a < KH ? load<V>(taps + (a * KW + b) * channels + c) : V{};
#pragma GCC unroll 8
    for (int xi = 0; xi < AH; ++xi) cols[b][xi] = combine<3, T>(BH::g[xi], column);
  }
#pragma GCC unroll 8
  for (int xi = 0; xi < AH; ++xi) {
    V row[3];
#pragma GCC unroll 3
    for (int b = 0; b < 3; ++b) row[b] = b < KW ? cols[b][xi] : V{};
#pragma GCC unroll 8
    for (int nu = 0; nu < AW; ++nu) store(u + (xi * AW + nu) * k_stride + c, combine<3, T>(BW::g[nu], row));
  }
}

template <int MH, int MW, typename T>
TCO_VECTORIZE void weight_tiles(const T* taps, int64_t channels, T* u, int64_t k_stride) {
  using Vec = typename Simd<T>::vec;
  int64_t c = 0;
  for (; c + Simd<T>::lanes <= channels; c += Simd<T>::lanes) weight_tile<MH, MW, T, Vec>(taps, channels, c, u, k_stride);
  for (; c < channels; ++c) weight_tile<MH, MW, T, T>(taps, channels, c, u, k_stride);
}

// Whether any of v[0..n) is infinite or NaN (x - x is 0 exactly for finite x).
template <typename acc_t>
TCO_VECTORIZE bool any_nonfinite(const acc_t* __restrict v, int64_t n) {
  int bad = 0;
  for (int64_t j = 0; j < n; ++j) bad |= (v[j] - v[j]) != acc_t(0);
  return bad != 0;
}

// A row split into its M phases and back (the transforms' buffers hold rows in phases, see
// input_tile): phases[q * phase_stride + t] = row[t * M + q] for t < count, all q at once, so
// that the row is read once and in order (a loop per phase read every M-th value, M times
// over). On long rows the clones de-interleave with vector permutes; the rows of ResNet planes
// (3 to 28 tiles) are shorter than their vectors, and both loops then run on scalars, bound by
// the reads of the input and the writes of the output.
template <int M, typename src_t, typename dst_t>
TCO_VECTORIZE void split_phases(const src_t* __restrict row, int64_t count, dst_t* __restrict phases,
                                int64_t phase_stride) {
  for (int64_t t = 0; t < count; ++t) {
#pragma GCC unroll 8
    for (int q = 0; q < M; ++q) phases[q * phase_stride + t] = static_cast<dst_t>(row[t * M + q]);
  }
}

// row[t * M + q] = phases[q * phase_stride + t] for t < count; returns whether any value is
// infinite or NaN (checked here, while the values are in registers).
template <int M, typename acc_t, typename dst_t>
TCO_VECTORIZE bool join_phases(const acc_t* __restrict phases, int64_t phase_stride, int64_t count,
                               dst_t* __restrict row) {
  int bad = 0;
  for (int64_t t = 0; t < count; ++t) {
#pragma GCC unroll 8
    for (int q = 0; q < M; ++q) {
      const acc_t value = phases[q * phase_stride + t];
      bad |= (value - value) != acc_t(0);
      row[t * M + q] = static_cast<dst_t>(value);
    }
  }
  return bad != 0;
}

// The adjoints, for the weight gradient.

// dM[xi * AW + nu] at tile t (m + (xi * AW + nu) * k_stride + t) = (A_h dY A_w^T)[xi][nu] for
// the gradient dY of tile t's outputs, dY[i][j] = y[(i * MW + j) * tiles + t] (in phases, as
// output_tile writes them): the adjoint of the output transform.
template <int MH, int MW, typename T, typename V>
__attribute__((always_inline)) inline void grad_output_tile(const T* y, int64_t tiles, int64_t t, T* m,
                                                            int64_t k_stride) {
  using BH = WinogradMatrices<MH>;
  using BW = WinogradMatrices<MW>;
  constexpr int AH = BH::alpha, AW = BW::alpha;
#pragma GCC unroll 8
  for (int nu = 0; nu < AW; ++nu) {
    V column[MH];  // column nu of dY A_w^T
#pragma GCC unroll 8
    for (int i = 0; i < MH; ++i) {
      V s = V{};
#pragma GCC unroll 8
      for (int j = 0; j < MW; ++j) {
        if (BW::at[j][nu] != 0) s += static_cast<T>(BW::at[j][nu]) * load<V>(y + (i * MW + j) * tiles + t);
      }
      column[i] = s;
    }
#pragma GCC unroll 8
    for (int xi = 0; xi < AH; ++xi) {
      V s = V{};
#pragma GCC unroll 8
      for (int i = 0; i < MH; ++i) {
        if (BH::at[i][xi] != 0) s += static_cast<T>(BH::at[i][xi]) * column[i];
      }
      store(m + (xi * AW + nu) * k_stride + t, s);
    }
  }
}

template <int MH, int MW, typename T>
TCO_VECTORIZE void grad_output_tiles(const T* y, int64_t tiles, T* m, int64_t k_stride) {
  using Vec = typename Simd<T>::vec;
  int64_t t = 0;
  for (; t + Simd<T>::lanes <= tiles; t += Simd<T>::lanes) grad_output_tile<MH, MW, T, Vec>(y, tiles, t, m, k_stride);
  for (; t < tiles; ++t) grad_output_tile<MH, MW, T, T>(y, tiles, t, m, k_stride);
}

// taps[(a * KW + b) * channels + c] = (G_h^T dU G_w)[a][b] for dU at channel c
// (du + (xi * AW + nu) * k_stride + c): the adjoint of the weight transform.
template <int MH, int MW, typename T, typename V>
__attribute__((always_inline)) inline void grad_weight_tile(const T* du, int64_t k_stride, int64_t c, T* taps,
                                                            int64_t channels) {
  using BH = WinogradMatrices<MH>;
  using BW = WinogradMatrices<MW>;
  constexpr int AH = BH::alpha, AW = BW::alpha, KH = BH::r, KW = BW::r;
#pragma GCC unroll 3
  for (int b = 0; b < KW; ++b) {
    V column[AH];  // column b of dU G_w
#pragma GCC unroll 8
    for (int xi = 0; xi < AH; ++xi) {
      V s = V{};
#pragma GCC unroll 8
      for (int nu = 0; nu < AW; ++nu) {
        if (BW::g[nu][b] != 0) s += static_cast<T>(BW::g[nu][b]) * load<V>(du + (xi * AW + nu) * k_stride + c);
      }
      column[xi] = s;
    }
#pragma GCC unroll 3
    for (int a = 0; a < KH; ++a) {
      V s = V{};
#pragma GCC unroll 8
      for (int xi = 0; xi < AH; ++xi) {
        if (BH::g[xi][a] != 0) s += static_cast<T>(BH::g[xi][a]) * column[xi];
      }
      store(taps + (a * KW + b) * channels + c, s);
    }
  }
}

template <int MH, int MW, typename T>
TCO_VECTORIZE void grad_weight_tiles(const T* du, int64_t k_stride, int64_t channels, T* taps) {
  using Vec = typename Simd<T>::vec;
  int64_t c = 0;
  for (; c + Simd<T>::lanes <= channels; c += Simd<T>::lanes) grad_weight_tile<MH, MW, T, Vec>(du, k_stride, c, taps, channels);
  for (; c < channels; ++c) grad_weight_tile<MH, MW, T, T>(du, k_stride, c, taps, channels);
}

// ---- the batched GEMM M[k] = U[k] @ V[k] ----
// ATen's CPU bmm runs the BLAS that ATen links (MKL on x86-64). Measured here (AMD EPYC with
// AVX-512, 1 thread), MKL ran the (36, C, C) @ (36, C, 128) batches of F(4x4, 3x3) at about
// 80 GFLOP/s, while oneDNN's direct convolution (torch's) reaches about 175: Winograd's 4x
// fewer multiplications then gained nothing. Where the CPU has AVX-512, float GEMMs run on
// the register-blocked kernel below instead: 8 rows x 32 columns of M in 16 vector
// accumulators, the depth innermost, one column panel of V (depth x 32) reused by every row
// block. Elsewhere, and for double, ATen's bmm.
constexpr int64_t kPanel = 16;  // V and M rows are padded to whole panels of this many columns

// The rows of U (the GEMMs' left operand) in slabs of kSlabRows (the last one of the rows that
// remain), each slab depth-major (row i of a slab of r rows at depth k: slab + k * r + i), so
// that the kernel reads one stream rather than kSlabRows rows a depth apart: the GEMMs of
// F(4x4) on (8, 256, 14x14) ran at about 100 GFLOP/s a core in the pass against about 170 on
// data in cache. (Slabs of one row are the row-major layout.)
constexpr int64_t kSlabRows = 8;
inline int64_t slab_rows(int64_t rows, int64_t first) { return std::min(kSlabRows, rows - first); }

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define TCO_WINOGRAD_PANELS 1
typedef float f32x16 __attribute__((vector_size(64), aligned(4)));  // aligned(4): unaligned access

// c (MR x 16 NV) = a (MR x depth, one slab) @ b (depth x 16 NV): MR * NV vector accumulators.
template <int MR, int NV>
__attribute__((target("avx512f,fma"))) void gemm_tile(const float* __restrict a, const float* __restrict b,
                                                       int64_t ldb, float* __restrict c, int64_t ldc, int64_t depth) {
  f32x16 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = f32x16{};
  for (int64_t k = 0; k < depth; ++k) {
    f32x16 bk[NV];
    for (int v = 0; v < NV; ++v) bk[v] = *reinterpret_cast<const f32x16*>(b + k * ldb + 16 * v);
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const float x = a[k * MR + i];
      for (int v = 0; v < NV; ++v) acc[i][v] += x * bk[v];
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) *reinterpret_cast<f32x16*>(c + i * ldc + 16 * v) = acc[i][v];
}

// The rows of one panel (NV vectors wide), a slab at a time.
template <int NV>
__attribute__((target("avx512f,fma"))) void gemm_panel(int64_t rows, int64_t depth, const float* a, const float* b,
                                                        int64_t ldb, float* c, int64_t ldc) {
  static_assert(kSlabRows == 8, "the cases below");
  for (int64_t i = 0; i < rows; i += kSlabRows) {
    const float* slab = a + i * depth;
    float* out = c + i * ldc;
    switch (slab_rows(rows, i)) {
      case 8: gemm_tile<8, NV>(slab, b, ldb, out, ldc, depth); break;
      case 7: gemm_tile<7, NV>(slab, b, ldb, out, ldc, depth); break;
      case 6: gemm_tile<6, NV>(slab, b, ldb, out, ldc, depth); break;
      case 5: gemm_tile<5, NV>(slab, b, ldb, out, ldc, depth); break;
      case 4: gemm_tile<4, NV>(slab, b, ldb, out, ldc, depth); break;
      case 3: gemm_tile<3, NV>(slab, b, ldb, out, ldc, depth); break;
      case 2: gemm_tile<2, NV>(slab, b, ldb, out, ldc, depth); break;
      default: gemm_tile<1, NV>(slab, b, ldb, out, ldc, depth); break;
    }
  }
}

// c (rows x cols) = a (rows x depth) @ b (depth x cols): a in slabs (kSlabRows), c row-major
// with leading dimension ldc, b in panels of kPanelWidth (32) columns (see input_tiles: row k
// of panel j at b + j * depth * 32 + k * 32, so that the kernel reads it contiguously), cols a
// multiple of kPanel: panels of 32 columns (8 x 2 vector accumulators), then one of 16.
__attribute__((target("avx512f,fma"))) void gemm_panels(int64_t rows, int64_t cols, int64_t depth, const float* a,
                                                         const float* b, float* c, int64_t ldc) {
  static_assert(kPanelWidth == 32, "the panels of 8 x 2 vectors");
  int64_t j = 0;
  for (; j + 32 <= cols; j += 32) gemm_panel<2>(rows, depth, a, b + j * depth, 32, c + j, ldc);
  if (j < cols) gemm_panel<1>(rows, depth, a, b + j * depth, 32, c + j, ldc);
}

// c (MR x NR) += a (MR x depth) @ b (NR x depth)^T, the depth contiguous in both (a multiple of
// 16): MR * NR vector accumulators over the depth, summed across their lanes at the end.
template <int MR, int NR>
__attribute__((target("avx512f,fma"))) void gemm_nt_tile(const float* __restrict a, int64_t lda,
                                                          const float* __restrict b, int64_t ldb, float* __restrict c,
                                                          int64_t ldc, int64_t depth) {
  f32x16 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = f32x16{};
  for (int64_t k = 0; k < depth; k += 16) {
    f32x16 av[MR], bv[NR];
    for (int i = 0; i < MR; ++i) av[i] = *reinterpret_cast<const f32x16*>(a + i * lda + k);
    for (int j = 0; j < NR; ++j) bv[j] = *reinterpret_cast<const f32x16*>(b + j * ldb + k);
    for (int i = 0; i < MR; ++i)
      for (int j = 0; j < NR; ++j) acc[i][j] += av[i] * bv[j];
  }
  for (int i = 0; i < MR; ++i) {
    for (int j = 0; j < NR; ++j) {
      float sum = 0;
      for (int lane = 0; lane < 16; ++lane) sum += acc[i][j][lane];
      c[i * ldc + j] += sum;
    }
  }
}

// c (rows x cols) += a (rows x depth) @ b (cols x depth)^T: blocks of 4 x 4, then the edges.
__attribute__((target("avx512f,fma"))) void gemm_nt(int64_t rows, int64_t cols, int64_t depth, const float* a,
                                                     int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4) gemm_nt_tile<4, 4>(a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc, depth);
    for (; j < cols; ++j) gemm_nt_tile<4, 1>(a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc, depth);
  }
  for (; i < rows; ++i) {
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4) gemm_nt_tile<1, 4>(a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc, depth);
    for (; j < cols; ++j) gemm_nt_tile<1, 1>(a + i * lda, lda, b + j * ldb, ldb, c + i * ldc + j, ldc, depth);
  }
}

bool cpu_has_avx512() {
  static const bool has = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  return has;
}
#else
bool cpu_has_avx512() { return false; }
#endif

// Whether the GEMMs of acc_t run on the panel kernel (then V and M rows are padded to panels).
template <typename acc_t>
bool gemm_has_panels() {
  return std::is_same_v<acc_t, float> && cpu_has_avx512();
}

int64_t panel_columns(int64_t tiles, bool panels) { return panels ? ceil_div_nonneg(tiles, kPanel) * kPanel : tiles; }

// The size of V (alpha^2 x Cg x ld tiles) in the layout of the GEMMs: in whole panels where
// they run on the panel kernel, else as is.
int64_t v_size(int64_t a2, int64_t cg, int64_t ld, bool panels) {
  return a2 * cg * (panels ? ceil_div_nonneg(ld, kPanelWidth) * kPanelWidth : ld);
}

// m[k] = u[k] @ v[k]: u (A2, rows, Cg) and m (A2, rows, ld) contiguous, v (A2, Cg, ld); for
// the panel kernel u in slabs (kSlabRows) and v in panels of kPanelWidth tiles (v_size), else
// row-major.
template <typename acc_t>
void batched_gemm(const at::Tensor& u, acc_t* v, at::Tensor& m, bool panels) {
  const int64_t a2 = u.size(0), rows = u.size(1), depth = u.size(2), cols = m.size(2);
#ifdef TCO_WINOGRAD_PANELS
  if constexpr (std::is_same_v<acc_t, float>) {
    if (panels) {
      const float* a = u.const_data_ptr<float>();
      float* c = m.mutable_data_ptr<float>();
      const int64_t v_stride = v_size(1, depth, cols, true);
      for (int64_t k = 0; k < a2; ++k) {
        gemm_panels(rows, cols, depth, a + k * rows * depth, v + k * v_stride, c + k * rows * cols, cols);
      }
      return;
    }
  }
#endif
  TORCH_INTERNAL_ASSERT(!panels);
  at::cpu::bmm_out(m, u, at::from_blob(v, {a2, depth, cols}, u.options()));
}

// A worker thread's buffers, kept between calls: a fresh allocation of megabytes per call is
// mapped anew by the default allocator and page-faulted in on every touch, which measured as
// much as the transforms themselves. Each thread keeps the largest it was asked for (V, M and
// the rows of the transforms: a few MiB, see kBlockBytes) until it exits.
struct WorkBuffers {
  std::vector<float> f[3];
  std::vector<double> d[3];

  template <typename T>
  static T* get(int slot, int64_t n) {
    thread_local WorkBuffers buffers;
    auto& v = [&]() -> std::vector<T>& {
      if constexpr (std::is_same_v<T, float>) return buffers.f[slot];
      else return buffers.d[slot];
    }();
    if (static_cast<int64_t>(v.size()) < n) v.resize(n);
    return v.data();
  }
};

// A (sizes) tensor over a work buffer of acc_t, for ATen's bmm.
template <typename acc_t>
at::Tensor buffer_view(acc_t* data, at::IntArrayRef sizes) {
  return at::from_blob(data, sizes, at::TensorOptions().dtype(c10::CppTypeToScalarType<acc_t>::value));
}

// One Winograd convolution on the CPU (the geometry g and its plan p, F(MH x MW, 3 x 3)).
//
// A block's tile rows are laid out end to end, each with one unused tile slot at its end when
// MW > 1 (the last tile of a row reads AW - MW columns beyond it): the block's tiles are then
// slots of one long row, every MW columns, and each transform is one loop over all of them,
// long enough to vectorise whatever the plane's width, at the price of the unused slots' GEMM
// columns (computed and dropped).
// du[k] += dm[k] @ v[k]^T: dm (A2, Og, ld), v (A2, Cg, ld), du (A2, Og, Cg), contiguous, the
// columns past the tiles zero in dm and v.
void batched_gemm_nt(const at::Tensor& dm, const at::Tensor& v, at::Tensor& du, bool panels) {
#ifdef TCO_WINOGRAD_PANELS
  if (panels) {
    const int64_t rows = dm.size(1), cols = v.size(1), depth = dm.size(2);
    const float *a = dm.const_data_ptr<float>(), *b = v.const_data_ptr<float>();
    float* c = du.mutable_data_ptr<float>();
    for (int64_t k = 0; k < dm.size(0); ++k) {
      gemm_nt(rows, cols, depth, a + k * rows * depth, depth, b + k * cols * depth, depth, c + k * rows * cols, cols);
    }
    return;
  }
#endif
  at::cpu::baddbmm_(du, dm, v.transpose(1, 2));
}

template <typename scalar_t, typename acc_t, int MH, int MW>
struct WinogradCpu {
  static constexpr int AH = WinogradMatrices<MH>::alpha, AW = WinogradMatrices<MW>::alpha;
  const ConvGeometry& g;
  const WinogradPlan& p;
  int64_t rows_per_block;

  // Tile slots (used and unused) per tile row.
  int64_t slots_per_row() const { return MW > 1 ? p.tiles_w + 1 : p.tiles_w; }
  // The transforms' buffer of a block: AH input rows in MW phases of slots + 1 values each
  // (the input transform's), or MH x MW output phases of slots values (the output's).
  int64_t buffer_size(int64_t rows) const { return AH * MW * (rows * slots_per_row() + 1); }

  // V[.][c][slots of rows r0 .. r0 + rows) of one input channel plane (its sample-0 pointer
  // `plane`); v points at V[0][c][0], k_stride apart per transformed element.
  void transform_input(const scalar_t* plane, int64_t r0, int64_t rows, acc_t* v, int64_t k_stride,
                       int64_t panel_stride, acc_t* buffer) const {
    const int64_t H = g.in_size[1], W = g.in_size[2], spr = slots_per_row();
    const int64_t phase_len = rows * spr + 1;
    // Column tw * MW + q of a row is input column tw * MW + q - pad_w: inside the plane for
    // every q on the slots [whole.lo, whole.hi), split in one pass; the edge slots one by one.
    const int64_t pad_w = g.pad[2], lo = index_range(-pad_w, MW, W, spr).lo;
    const IndexRange whole{lo, std::max(lo, index_range(MW - 1 - pad_w, MW, W, spr).hi)};
    for (int i = 0; i < AH; ++i) {
      acc_t* phases = buffer + i * MW * phase_len;  // phase q of row r at phases + q * phase_len + r * spr
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = r0 + r, n = row / p.tiles_h, th = row % p.tiles_h;
        const int64_t h = th * MH - g.pad[1] + i;
        acc_t* dst = phases + r * spr;
        if (h < 0 || h >= H) {
          for (int q = 0; q < MW; ++q) std::fill(dst + q * phase_len, dst + q * phase_len + spr, acc_t(0));
          continue;
        }
        const scalar_t* src = plane + (n * g.in_channels * H + h) * W;
        split_phases<MW>(src + whole.lo * MW - pad_w, whole.hi - whole.lo, dst + whole.lo, phase_len);
        const auto edge = [&](int64_t tw) {
          for (int q = 0; q < MW; ++q) {
            const int64_t col = tw * MW + q - pad_w;
            dst[q * phase_len + tw] = col >= 0 && col < W ? static_cast<acc_t>(src[col]) : acc_t(0);
          }
        };
        for (int64_t tw = 0; tw < whole.lo; ++tw) edge(tw);
        for (int64_t tw = whole.hi; tw < spr; ++tw) edge(tw);
      }
      for (int q = 0; q < MW; ++q) phases[q * phase_len + rows * spr] = acc_t(0);
    }
    input_tiles<MH, MW>(buffer, phase_len, rows * spr, v, k_stride, panel_stride);
  }

  // The output rows of one output channel plane (its sample-0 pointer `plane`) from
  // M[.][o][slots of rows r0 .. r0 + rows) (m points at M[0][o][0]), plus `bias`. Returns
  // whether any output is infinite or NaN.
  bool transform_output(const acc_t* m, int64_t k_stride, int64_t r0, int64_t rows, acc_t bias, scalar_t* plane,
                        acc_t* buffer) const {
    const int64_t oH = g.out_size[1], oW = g.out_size[2], spr = slots_per_row(), slots = rows * spr;
    output_tiles<MH, MW>(m, k_stride, slots, bias, buffer);
    bool nonfinite = false;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = r0 + r, n = row / p.tiles_h, th = row % p.tiles_h;
      for (int64_t i = 0; i < MH && th * MH + i < oH; ++i) {
        scalar_t* dst = plane + (n * g.out_channels * oH + th * MH + i) * oW;
        // Output column tw * MW + q is slot tw of phase (i, q): whole tiles in one pass, then
        // the columns of the last, partial one.
        const acc_t* src = buffer + i * MW * slots + r * spr;
        const int64_t whole = oW / MW;
        nonfinite = join_phases<MW>(src, slots, whole, dst) || nonfinite;
        for (int64_t col = whole * MW; col < oW; ++col) {
          const acc_t value = src[col % MW * slots + whole];
          nonfinite = nonfinite || value - value != acc_t(0);
          dst[col] = static_cast<scalar_t>(value);
        }
      }
    }
    return nonfinite;
  }

  // The whole pass: output (contiguous, written everywhere) from input and U (groups,
  // alpha^2, Og, Cg; in slabs for the panel kernel) in acc_t. Returns false where an output is
  // infinite or NaN.
  bool run(const scalar_t* input, const at::Tensor& u, const scalar_t* bias, scalar_t* output) const {
    const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), A2 = AH * AW;
    const int64_t total_rows = g.batch * p.tiles_h, blocks = ceil_div_nonneg(total_rows, rows_per_block);
    const bool panels = gemm_has_panels<acc_t>();
    const int64_t ld_max = panel_columns(rows_per_block * slots_per_row(), panels);
    const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
    std::atomic<bool> nonfinite{false};
    at::parallel_for(0, blocks * g.groups, 1, [&](int64_t begin, int64_t end) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;  // workers do not inherit the caller's
      // V (alpha^2, Cg, ld) and M (alpha^2, Og, ld) of a block: ld columns per row, of which
      // the first are the block's tile slots (the rest pads rows to whole GEMM panels); V in
      // the GEMM's layout (batched_gemm).
      acc_t* v_data = WorkBuffers::get<acc_t>(0, v_size(A2, Cg, ld_max, panels));
      acc_t* m_data = WorkBuffers::get<acc_t>(1, A2 * Og * ld_max);
      acc_t* rows_buffer = WorkBuffers::get<acc_t>(2, buffer_size(rows_per_block));
      bool bad = false;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t block = task / g.groups, grp = task % g.groups;
        const int64_t r0 = block * rows_per_block, rows = std::min(rows_per_block, total_rows - r0);
        const int64_t ld = panel_columns(rows * slots_per_row(), panels);
        // Channel c's tiles: in panels of kPanelWidth (Cg * kPanelWidth apart) for the panel
        // kernel, else in one row of ld.
        const int64_t row_len = panels ? kPanelWidth : ld, panel_stride = panels ? Cg * kPanelWidth : kPanelWidth;
        for (int64_t c = 0; c < Cg; ++c) {
          transform_input(input + (grp * Cg + c) * in_plane, r0, rows, v_data + c * row_len, v_size(1, Cg, ld, panels),
                          panel_stride, rows_buffer);
        }
        at::Tensor mm = buffer_view(m_data, {A2, Og, ld});
        batched_gemm(u.select(0, grp), v_data, mm, panels);  // M[k] = U[k] @ V[k]
        for (int64_t o = 0; o < Og; ++o) {
          const int64_t oc = grp * Og + o;
          const acc_t b = bias ? static_cast<acc_t>(bias[oc]) : acc_t(0);
          bad = transform_output(m_data + o * ld, Og * ld, r0, rows, b, output + oc * out_plane, rows_buffer) || bad;
        }
      }
      if (bad) nonfinite = true;
    });
    return !nonfinite;
  }

  // dM[.][o][slots of rows r0 .. r0 + rows) (dm points at dM[0][o][0], k_stride apart per
  // element) from one grad_output channel plane (its sample-0 pointer `plane`): zero where a
  // tile reaches past the plane and in the unused slots.
  void transform_grad_output(const scalar_t* plane, int64_t r0, int64_t rows, acc_t* dm, int64_t k_stride,
                             acc_t* buffer) const {
    const int64_t oH = g.out_size[1], oW = g.out_size[2], spr = slots_per_row(), slots = rows * spr;
    // Slot tw of phase (i, q) is output column tw * MW + q of output row th * MH + i: whole
    // tiles in one pass, then the columns of the last, partial one; zero past the plane.
    const int64_t whole = oW / MW;
    for (int i = 0; i < MH; ++i) {
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t row = r0 + r, n = row / p.tiles_h, oh = row % p.tiles_h * MH + i;
        acc_t* dst = buffer + i * MW * slots + r * spr;  // phase q at dst + q * slots
        int64_t filled = 0;
        if (oh < oH) {
          const scalar_t* src = plane + (n * g.out_channels * oH + oh) * oW;
          split_phases<MW>(src, whole, dst, slots);
          for (filled = whole; filled < spr && filled * MW < oW; ++filled) {  // the partial tile
            for (int q = 0; q < MW; ++q) {
              const int64_t col = filled * MW + q;
              dst[q * slots + filled] = col < oW ? static_cast<acc_t>(src[col]) : acc_t(0);
            }
          }
        }
        for (int q = 0; q < MW; ++q) std::fill(dst + q * slots + filled, dst + q * slots + spr, acc_t(0));
      }
    }
    grad_output_tiles<MH, MW>(buffer, slots, dm, k_stride);
  }

  // partial[thread][group] (threads, groups, alpha^2, Og, Cg) += dM @ V^T over the tiles that
  // the calling thread's tasks take: the weight gradient in the transformed domain.
  void accumulate_weight_gradient(const scalar_t* input, const scalar_t* grad_output, const at::Tensor& partial) const {
    const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), A2 = AH * AW;
    const int64_t total_rows = g.batch * p.tiles_h, blocks = ceil_div_nonneg(total_rows, rows_per_block);
    const bool panels = gemm_has_panels<acc_t>();
    const int64_t ld_max = panel_columns(rows_per_block * slots_per_row(), panels);
    const int64_t in_plane = g.in_plane(), out_plane = g.out_plane();
    at::parallel_for(0, blocks * g.groups, 1, [&](int64_t begin, int64_t end) {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      const int64_t thread = at::get_thread_num();
      TORCH_INTERNAL_ASSERT(thread >= 0 && thread < partial.size(0));
      acc_t* v_data = WorkBuffers::get<acc_t>(0, A2 * Cg * ld_max);
      acc_t* dm_data = WorkBuffers::get<acc_t>(1, A2 * Og * ld_max);
      acc_t* rows_buffer = WorkBuffers::get<acc_t>(2, buffer_size(rows_per_block));
      for (int64_t task = begin; task < end; ++task) {
        const int64_t block = task / g.groups, grp = task % g.groups;
        const int64_t r0 = block * rows_per_block, rows = std::min(rows_per_block, total_rows - r0);
        const int64_t slots = rows * slots_per_row(), ld = panel_columns(slots, panels);
        for (int64_t c = 0; c < Cg; ++c) {
          transform_input(input + (grp * Cg + c) * in_plane, r0, rows, v_data + c * ld, Cg * ld, kPanelWidth,
                          rows_buffer);
        }
        for (int64_t o = 0; o < Og; ++o) {
          transform_grad_output(grad_output + (grp * Og + o) * out_plane, r0, rows, dm_data + o * ld, Og * ld,
                                rows_buffer);
        }
        // The columns past the slots (panel padding) enter the GEMM's depth: zero in both.
        for (int64_t row = 0; row < A2 * Cg; ++row) std::fill(v_data + row * ld + slots, v_data + (row + 1) * ld, acc_t(0));
        for (int64_t row = 0; row < A2 * Og; ++row) std::fill(dm_data + row * ld + slots, dm_data + (row + 1) * ld, acc_t(0));
        at::Tensor du = partial.select(0, thread).select(0, grp);
        batched_gemm_nt(buffer_view(dm_data, {A2, Og, ld}), buffer_view(v_data, {A2, Cg, ld}), du, panels);
      }
    });
  }

  // Tile rows per block: V and M of a block within kBlockBytes, but at least kMinBlockTiles
  // and Og tiles (kMinBlockTiles), and a whole number of blocks per thread (equal shares).
  static int64_t block_rows(const ConvGeometry& g, const WinogradPlan& p) {
    const WinogradCpu sizing{g, p, 1};
    const int64_t Cg = g.in_per_group(), Og = g.out_per_group();
    const int64_t row_bytes = AH * AW * (Cg + Og) * sizing.slots_per_row() * int64_t(sizeof(acc_t));
    const int64_t total_rows = g.batch * p.tiles_h, threads = at::get_num_threads();
    const int64_t min_rows = ceil_div_nonneg(std::max(kMinBlockTiles, Og), sizing.slots_per_row());
    const int64_t by_cache = std::max<int64_t>(min_rows, kBlockBytes / std::max<int64_t>(row_bytes, 1));
    const int64_t per_round = ceil_div_nonneg(threads, g.groups);  // blocks per group that fill the threads
    const int64_t blocks = per_round * ceil_div_nonneg(ceil_div_nonneg(total_rows, by_cache), per_round);
    return std::max<int64_t>(1, ceil_div_nonneg(total_rows, blocks));
  }
};

// How run_pass reads its weight: as given, (O, C / groups, taps), or as the weight of the
// convolution whose input gradient the pass computes, (C, O / groups, taps) in the pass's
// terms, transposed per group and rotated 180 degrees as it is read (a copy of it took
// 0.43 ms for 256 x 256 channels, 7% of the input gradient on 14x14 planes).
enum class WeightForm { AsGiven, ForwardsTransposedRotated };

template <typename scalar_t, typename acc_t, int MH, int MW>
bool run_pass(const at::Tensor& x, const at::Tensor& w, WeightForm form, const std::optional<at::Tensor>& b,
              const ConvGeometry& g, const WinogradPlan& p, const at::Tensor& out) {
  using Pass = WinogradCpu<scalar_t, acc_t, MH, MW>;
  constexpr int64_t A2 = Pass::AH * Pass::AW;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), K = g.kernel_volume();
  // U (groups, alpha^2, Og, Cg), in parallel over slabs of output channels (kSlabRows for the
  // panel kernel, else one: row-major), each slab's kernels first made tap-major so that the
  // transform reads them contiguously, tap k of (slab row i, input channel c) at
  // taps[(k * Cg + c) * rows + i]: the transform's vectors run over (c, i) as they lie.
  const int64_t slab = gemm_has_panels<acc_t>() ? kSlabRows : 1, slabs = ceil_div_nonneg(Og, slab);
  const at::Tensor u = at::empty({g.groups, A2, Og, Cg}, x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const scalar_t* w_data = w.const_data_ptr<scalar_t>();
  acc_t* u_data = u.mutable_data_ptr<acc_t>();
  // The kernel of (output channel oc, input channel c) of the pass: as given, or tap k is tap
  // K - 1 - k of the forward's (group's c-th output, oc % Og).
  const auto kernel_of = [&](int64_t oc, int64_t c) {
    return form == WeightForm::AsGiven ? w_data + (oc * Cg + c) * K : w_data + ((oc / Og * Cg + c) * Og + oc % Og) * K;
  };
  at::parallel_for(0, g.groups * slabs, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> taps(K * Cg * slab);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t grp = task / slabs, first = task % slabs * slab, rows = std::min(slab, Og - first);
      for (int64_t c = 0; c < Cg; ++c) {  // the slab's rows innermost: their taps are written together
        for (int64_t i = 0; i < rows; ++i) {
          const scalar_t* kernel = kernel_of(grp * Og + first + i, c);
          for (int64_t k = 0; k < K; ++k) {
            taps[(k * Cg + c) * rows + i] = static_cast<acc_t>(kernel[form == WeightForm::AsGiven ? k : K - 1 - k]);
          }
        }
      }
      weight_tiles<MH, MW>(taps.data(), Cg * rows, u_data + (grp * A2 * Og + first) * Cg, Og * Cg);
    }
  });
  const int64_t rows = Pass::block_rows(g, p);
  const Pass pass{g, p, rows};
  return pass.run(x.const_data_ptr<scalar_t>(), u, b ? b->const_data_ptr<scalar_t>() : nullptr,
                  out.mutable_data_ptr<scalar_t>());
}

// The weight gradient: dU = sum over tiles of dM @ V^T per group (in parallel over blocks,
// one partial sum per thread), then grad_weight = G_h^T dU G_w. Returns false where a value
// is infinite or NaN.
template <typename scalar_t, typename acc_t, int MH, int MW>
bool run_weight_pass(const at::Tensor& gy, const at::Tensor& x, const ConvGeometry& g, const WinogradPlan& p,
                     const at::Tensor& gw) {
  using Pass = WinogradCpu<scalar_t, acc_t, MH, MW>;
  constexpr int64_t A2 = Pass::AH * Pass::AW;
  const int64_t Cg = g.in_per_group(), Og = g.out_per_group(), K = g.kernel_volume();
  const at::Tensor partial = at::zeros({at::get_num_threads(), g.groups, A2, Og, Cg},
                                       x.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  const Pass pass{g, p, Pass::block_rows(g, p)};
  pass.accumulate_weight_gradient(x.const_data_ptr<scalar_t>(), gy.const_data_ptr<scalar_t>(), partial);
  const at::Tensor du = partial.sum(0);  // (groups, A2, Og, Cg)
  const acc_t* du_data = du.const_data_ptr<acc_t>();
  scalar_t* gw_data = gw.mutable_data_ptr<scalar_t>();
  std::atomic<bool> nonfinite{false};
  at::parallel_for(0, g.out_channels, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> taps(K * Cg);
    bool bad = false;
    for (int64_t oc = begin; oc < end; ++oc) {
      grad_weight_tiles<MH, MW>(du_data + (oc / Og * A2 * Og + oc % Og) * Cg, Og * Cg, Cg, taps.data());
      bad = bad || any_nonfinite(taps.data(), K * Cg);
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t k = 0; k < K; ++k) gw_data[(oc * Cg + c) * K + k] = static_cast<scalar_t>(taps[k * Cg + c]);
    }
    if (bad) nonfinite = true;
  });
  return !nonfinite;
}

// Calls fn(integral_constant MH, integral_constant MW) for the plan's tile: m x m, or 1 x m /
// m x 1 where the kernel spans one dimension.
template <typename Fn>
bool with_tile(const WinogradPlan& p, const Fn& fn) {
  const int mh = p.dim[0].m, mw = p.dim[1].m;
  const auto run = [&](auto tile) {
    using One = std::integral_constant<int, 1>;
    if (mh == 1) return fn(One{}, tile);
    if (mw == 1) return fn(tile, One{});
    return fn(tile, tile);
  };
  const int m = std::max(mh, mw);
  return m == 2 ? run(std::integral_constant<int, 2>{}) : m == 4 ? run(std::integral_constant<int, 4>{})
                                                                 : run(std::integral_constant<int, 6>{});
}

// One pass (geometry g) of the forward or the input gradient.
std::optional<at::Tensor> winograd_pass(const at::Tensor& input, const at::Tensor& weight, WeightForm form,
                                        const std::optional<at::Tensor>& bias, const ConvGeometry& g, int tile) {
  const WinogradPlan p = winograd_plan(g, tile);
  at::Tensor out = at::empty({g.batch, g.out_channels, g.out_size[0], g.out_size[1], g.out_size[2]}, input.options());
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnn_ops_conv_winograd", [&] {
    using acc_t = at::opmath_type<scalar_t>;  // the compute type: float for half and bfloat16
    finite = with_tile(p, [&](auto mh, auto mw) {
      return run_pass<scalar_t, acc_t, decltype(mh)::value, decltype(mw)::value>(input, weight, form, bias, g, p,
                                                                                 out);
    });
  });
  if (!finite) return std::nullopt;
  return out;
}

}  // namespace

std::optional<at::Tensor> winograd_forward_cpu(const at::Tensor& input, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias, const ConvGeometry& g,
                                               int tile) {
  return winograd_pass(input, weight, WeightForm::AsGiven, bias, g, tile);
}

std::optional<at::Tensor> winograd_input_backward_cpu(const at::Tensor& grad_output, const at::Tensor& weight,
                                                      const ConvGeometry& g, int tile) {
  return winograd_pass(grad_output, weight, WeightForm::ForwardsTransposedRotated, std::nullopt,
                       winograd_input_gradient_geometry(g), tile);
}

// Where the Winograd weight gradient beats ATen's. Its GEMMs reduce over the tiles of a block
// with both operands tile-contiguous, so each output element ends in a sum across vector
// lanes: on few channels and large planes (long blocks) that pays, elsewhere it does not.
// Measured (2 threads, float32, time relative to ATen's weight gradient; 2x2 / 4x4 tiles):
//   (8, 32, 112x112) 32 ch  0.55 / 0.74     (8, 64, 56x56) 64 ch    0.82 / 0.92
//   (8, 128, 56x56) 128 ch  1.28 / 1.52     (8, 128, 28x28) 128 ch  2.02 / 2.07
//   (32, 64, 28x28) 64 ch   1.61 / 1.81     (8, 256, 14x14) 256 ch  2.15 / 3.94
// That was an AMD EPYC. On an Intel Xeon (AVX-512, the same settings) it lost where it won
// there, so Intel's CPUs keep ATen's:
//   (8, 16, 112x112) 1.27 / 1.72    (8, 32, 112x112) 1.38 / 1.47    (8, 64, 56x56) 1.32 / 1.41
//   (32, 64, 56x56) 1.14 / 1.37
// The environment variable TCO_WINOGRAD_WEIGHT_GRADIENT=winograd (or =aten) overrides the
// rule, for tests of the kernels on any CPU and for tuning.
bool winograd_weight_gradient_pays(const ConvGeometry& g) {
  if (const char* choice = std::getenv("TCO_WINOGRAD_WEIGHT_GRADIENT")) {
    if (std::strcmp(choice, "winograd") == 0) return true;
    if (std::strcmp(choice, "aten") == 0) return false;
  }
  return g.in_per_group() * g.out_per_group() <= 64 * 64 && g.out_plane() >= 56 * 56 && !intel_cpu();
}

std::optional<at::Tensor> winograd_weight_backward_cpu(const at::Tensor& grad_output, const at::Tensor& input,
                                                       const ConvGeometry& g, int tile) {
  if (!winograd_weight_gradient_pays(g)) return std::nullopt;
  const WinogradPlan p = winograd_plan(g, tile);
  at::Tensor gw = at::empty({g.out_channels, g.in_per_group(), g.kernel[0], g.kernel[1], g.kernel[2]},
                            grad_output.options());
  bool finite = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, input.scalar_type(), "cnn_ops_conv_winograd_weight", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    finite = with_tile(p, [&](auto mh, auto mw) {
      return run_weight_pass<scalar_t, acc_t, decltype(mh)::value, decltype(mw)::value>(grad_output, input, g, p, gw);
    });
  });
  if (!finite) return std::nullopt;
  return gw;
}

}  // namespace tco
