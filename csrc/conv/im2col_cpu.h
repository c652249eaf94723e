// The im2col building blocks of the CPU kernels, shared by the conv family (conv_cpu.cpp)
// and the families that reduce to convolutions of a sub-lattice of outputs (local).
#pragma once

#include <algorithm>
#include <cstdint>

#include "../cpu_vectorize.h"
#include "conv_geometry.h"

namespace tco {

// Calls fn(od, oh, ow_begin, ow_end, column) for each stretch of one output row inside the
// flat output columns [c0, c1); `column` is the flat index of (od, oh, ow_begin).
template <typename Fn>
inline void for_each_row_segment(const ConvGeometry& g, int64_t c0, int64_t c1, Fn&& fn) {
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  int64_t c = c0;
  while (c < c1) {
    const int64_t ow = c % oW, row = c / oW;
    const int64_t end = std::min(c1, c - ow + oW);
    fn(row / oH, row % oH, ow, ow + (end - c), c);
    c = end;
  }
}

// Unfolds output columns [c0, c1) of one sample's group: `in` points at the group's first
// input channel, `col` receives col_rows() rows of (c1 - c0) values, `ld` apart.
// Every element of the slab is written once (zeros where the window reads padding).
template <typename src_t, typename col_t>
void im2col_block(const src_t* in, col_t* col, int64_t ld, int64_t c0, int64_t c1,
                  const ConvGeometry& g) {
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane();
  const int64_t D = g.in_size[0], H = g.in_size[1], W = g.in_size[2], sw = g.stride[2];
  for (int64_t r = 0; r < g.col_rows(); ++r) {
    const int64_t ic = r / K, tap = r % K;
    const int64_t kw = tap % g.kernel[2], kh = (tap / g.kernel[2]) % g.kernel[1],
                  kd = tap / (g.kernel[2] * g.kernel[1]);
    const int64_t off_d = tap_offset(g, 0, kd), off_h = tap_offset(g, 1, kh),
                  off_w = tap_offset(g, 2, kw);
    const IndexRange rw = valid_outputs(g, 2, off_w);
    const src_t* in_c = in + ic * in_plane;
    col_t* dst_row = col + r * ld - c0;
    for_each_row_segment(g, c0, c1, [&](int64_t od, int64_t oh, int64_t a, int64_t b, int64_t c) {
      col_t* dst = dst_row + c - a;  // dst[ow] is column (od, oh, ow)
      const int64_t id = od * g.stride[0] + off_d, ih = oh * g.stride[1] + off_h;
      if (id < 0 || id >= D || ih < 0 || ih >= H) {
        std::fill(dst + a, dst + b, col_t(0));
        return;
      }
      const int64_t lo = std::clamp(rw.lo, a, b), hi = std::clamp(rw.hi, lo, b);
      const src_t* src = in_c + (id * H + ih) * W + off_w;
      std::fill(dst + a, dst + lo, col_t(0));
      if (sw == 1) {
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = static_cast<col_t>(src[ow]);
      } else {
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = static_cast<col_t>(src[ow * sw]);
      }
      std::fill(dst + hi, dst + b, col_t(0));
    });
  }
}

// The adjoint of im2col_block: adds the slab back into the group's input-gradient channels.
template <typename col_t>
void col2im_block(const col_t* col, int64_t ld, int64_t c0, int64_t c1, col_t* gin,
                  const ConvGeometry& g) {
  const int64_t K = g.kernel_volume(), in_plane = g.in_plane();
  const int64_t D = g.in_size[0], H = g.in_size[1], W = g.in_size[2], sw = g.stride[2];
  for (int64_t r = 0; r < g.col_rows(); ++r) {
    const int64_t ic = r / K, tap = r % K;
    const int64_t kw = tap % g.kernel[2], kh = (tap / g.kernel[2]) % g.kernel[1],
                  kd = tap / (g.kernel[2] * g.kernel[1]);
    const int64_t off_d = tap_offset(g, 0, kd), off_h = tap_offset(g, 1, kh),
                  off_w = tap_offset(g, 2, kw);
    const IndexRange rw = valid_outputs(g, 2, off_w);
    col_t* gin_c = gin + ic * in_plane;
    const col_t* src_row = col + r * ld - c0;
    for_each_row_segment(g, c0, c1, [&](int64_t od, int64_t oh, int64_t a, int64_t b, int64_t c) {
      const int64_t id = od * g.stride[0] + off_d, ih = oh * g.stride[1] + off_h;
      if (id < 0 || id >= D || ih < 0 || ih >= H) return;
      const int64_t lo = std::clamp(rw.lo, a, b), hi = std::clamp(rw.hi, lo, b);
      if (lo >= hi) return;
      const col_t* src = src_row + c - a;  // src[ow] is column (od, oh, ow)
      axpy<col_t, col_t>(gin_c + (id * H + ih) * W + off_w + lo * sw, sw, src + lo, 1, col_t(1), hi - lo);
    });
  }
}

}  // namespace tco
