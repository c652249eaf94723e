// Winograd's minimal filtering (Lavin & Gray, "Fast Algorithms for Convolutional Neural
// Networks", 2016) for the conv family: the plan shared by the CPU pass (conv_winograd.cpp)
// and the CUDA kernels (conv_cuda.cu). Kept free of torch headers.
//
// F(m, 3) computes m outputs of a 3-tap correlation from alpha = m + 2 inputs with alpha
// multiplications instead of 3m:  y = A^T [(G g) . (B^T d)]. Nested over height and width,
// F(m x m, 3 x 3) turns a stride-1 3x3 convolution into alpha^2 independent GEMMs
//   M[k] (O x tiles) = U[k] (O x C) @ V[k] (C x tiles),   k < alpha^2,
// between the transformed weight U = G g G^T and the transformed input tiles V = B^T d B,
// followed by the output transform Y = A^T M A of every tile: 36/16 = 2.25x (m = 2),
// 144/36 = 4x (m = 4) and 324/64 = 5.06x (m = 6) fewer multiplications than the direct sum.
// A dimension the kernel does not span (the height of a 1-d convolution, or of a 1x3 kernel)
// takes the identity, m = r = alpha = 1.
//
// Layouts (rows of the GEMMs; every device uses the same):
//   U: (groups, alpha^2, O/groups, C/groups)
//   V: (groups, alpha^2, C/groups, tiles), M: (groups, alpha^2, O/groups, tiles)
// with tile t = (n * tiles_h + th) * tiles_w + tw for sample n of a chunk. Output tile
// (th, tw) holds outputs [th * m_h, th * m_h + m_h) x [tw * m_w, tw * m_w + m_w), cropped at
// the plane's end; its input patch starts at (th * m_h - pad_h, tw * m_w - pad_w), zero
// outside the input, so every padding (leading and trailing, even negative) is the index math.
//
// Accuracy: the transforms multiply by constants up to 21/4 (m = 6) and sum terms of
// alternating sign, so the rounding error grows with the tile; measured float32 error
// bounds per tile are in torch_cnn_ops/functional/conv.py's docstring and tested.
#pragma once

#include <cstdint>

#include "../host_device.h"
#include "conv_geometry.h"

namespace tco {

constexpr int kWinogradMaxAlpha = 8;

// F(m, r) along one dimension: the coefficients of B^T (alpha x alpha), G (alpha x r) and
// A^T (m x alpha), row-major, in double (each device rounds them to its compute type).
struct WinogradTransform {
  int m = 1, r = 1, alpha = 1;
  double bt[kWinogradMaxAlpha][kWinogradMaxAlpha] = {{1}};
  double g[kWinogradMaxAlpha][3] = {{1}};
  double at[kWinogradMaxAlpha - 2][kWinogradMaxAlpha] = {{1}};
};

// The plan of one convolution: the transform of the height (index 0) and the width (1), and
// the tile grid of one sample's output plane.
struct WinogradPlan {
  WinogradTransform dim[2];
  int64_t tiles_h = 0, tiles_w = 0;

  TCO_HOST_DEVICE int alpha_area() const { return dim[0].alpha * dim[1].alpha; }
  TCO_HOST_DEVICE int64_t tiles_per_sample() const { return tiles_h * tiles_w; }
};

// Whether Winograd applies to g: a 1-d or 2-d convolution, stride 1 and dilation 1, a kernel
// of 3 along the width and 1 or 3 along the height, or 3 along the height and 1 along the width.
inline bool winograd_applies(const ConvGeometry& g) {
  if (g.kernel[0] != 1 || g.in_size[0] != 1 || g.out_size[0] != 1 || g.pad[0] != 0) return false;
  for (int d = 0; d < 3; ++d)
    if (g.stride[d] != 1 || g.dilation[d] != 1) return false;
  const bool h_ok = g.kernel[1] == 1 || g.kernel[1] == 3, w_ok = g.kernel[2] == 1 || g.kernel[2] == 3;
  return h_ok && w_ok && g.kernel_volume() > 1;
}

// The matrices of F(M, 3) (M = 1: the identity), as compile-time constants: B^T (alpha x
// alpha), G (alpha x 3) and A^T (M x alpha), alpha = M + 2. Interpolation points 0, +-1, +-2,
// +-1/2 and infinity (the last row / column), the choice that keeps the coefficients
// smallest (Lavin & Gray, section 5).
template <int M>
struct WinogradMatrices;

template <>
struct WinogradMatrices<1> {
  static constexpr int alpha = 1, r = 1;
  static constexpr double bt[1][1] = {{1}};
  static constexpr double g[1][3] = {{1, 0, 0}};
  static constexpr double at[1][1] = {{1}};
};

template <>
struct WinogradMatrices<2> {
  static constexpr int alpha = 4, r = 3;
  static constexpr double bt[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double g[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr double at[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

template <>
struct WinogradMatrices<4> {
  static constexpr int alpha = 6, r = 3;
  static constexpr double bt[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double g[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  static constexpr double at[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

template <>
struct WinogradMatrices<6> {
  static constexpr int alpha = 8, r = 3;
  static constexpr double bt[8][8] = {{1, 0, -21.0 / 4, 0, 21.0 / 4, 0, -1, 0},
                                      {0, 1, 1, -17.0 / 4, -17.0 / 4, 1, 1, 0},
                                      {0, -1, 1, 17.0 / 4, -17.0 / 4, -1, 1, 0},
                                      {0, 0.5, 0.25, -2.5, -1.25, 2, 1, 0},
                                      {0, -0.5, 0.25, 2.5, -1.25, -2, 1, 0},
                                      {0, 2, 4, -2.5, -5, 0.5, 1, 0},
                                      {0, -2, 4, 2.5, -5, -0.5, 1, 0},
                                      {0, -1, 0, 21.0 / 4, 0, -21.0 / 4, 0, 1}};
  static constexpr double g[8][3] = {{1, 0, 0},
                                     {-2.0 / 9, -2.0 / 9, -2.0 / 9},
                                     {-2.0 / 9, 2.0 / 9, -2.0 / 9},
                                     {1.0 / 90, 1.0 / 45, 2.0 / 45},
                                     {1.0 / 90, -1.0 / 45, 2.0 / 45},
                                     {32.0 / 45, 16.0 / 45, 8.0 / 45},
                                     {32.0 / 45, -16.0 / 45, 8.0 / 45},
                                     {0, 0, 1}};
  static constexpr double at[6][8] = {{1, 1, 1, 1, 1, 1, 1, 0},
                                      {0, 1, -1, 2, -2, 0.5, -0.5, 0},
                                      {0, 1, 1, 4, 4, 0.25, 0.25, 0},
                                      {0, 1, -1, 8, -8, 0.125, -0.125, 0},
                                      {0, 1, 1, 16, 16, 1.0 / 16, 1.0 / 16, 0},
                                      {0, 1, -1, 32, -32, 1.0 / 32, -1.0 / 32, 1}};
};

template <int M>
inline WinogradTransform winograd_transform_of() {
  using W = WinogradMatrices<M>;
  WinogradTransform t;
  t.m = M;
  t.r = W::r;
  t.alpha = W::alpha;
  for (int i = 0; i < W::alpha; ++i) {
    for (int j = 0; j < W::alpha; ++j) t.bt[i][j] = W::bt[i][j];
    for (int j = 0; j < 3; ++j) t.g[i][j] = W::g[i][j];
  }
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < W::alpha; ++j) t.at[i][j] = W::at[i][j];
  return t;
}

// F(m, 3) for m in {2, 4, 6} (the tiles with transforms) along a dimension of kernel size r (3); r == 1 gives the identity.
inline WinogradTransform winograd_transform(int m, int64_t r) {
  if (r == 1) return winograd_transform_of<1>();
  return m == 2 ? winograd_transform_of<2>() : m == 4 ? winograd_transform_of<4>() : winograd_transform_of<6>();
}

// The plan of g (winograd_applies) with tiles of m outputs along each dimension the kernel spans.
inline WinogradPlan winograd_plan(const ConvGeometry& g, int m) {
  WinogradPlan p;
  p.dim[0] = winograd_transform(m, g.kernel[1]);
  p.dim[1] = winograd_transform(m, g.kernel[2]);
  p.tiles_h = ceil_div_nonneg(g.out_size[1], p.dim[0].m);
  p.tiles_w = ceil_div_nonneg(g.out_size[2], p.dim[1].m);
  return p;
}

// The geometry of the input gradient as a forward convolution: grad_output (the input here)
// correlated with the transposed, 180-degree-rotated kernel (the caller permutes the weight),
// with leading pad kernel - 1 - pad (negative where the forward padded more than that).
inline ConvGeometry winograd_input_gradient_geometry(const ConvGeometry& g) {
  ConvGeometry t = g;
  t.in_channels = g.out_channels;
  t.out_channels = g.in_channels;
  for (int d = 0; d < 3; ++d) {
    t.in_size[d] = g.out_size[d];
    t.out_size[d] = g.in_size[d];
    t.pad[d] = g.kernel[d] - 1 - g.pad[d];
  }
  return t;
}

}  // namespace tco
