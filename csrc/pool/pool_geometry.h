// Shape and window math of N-d pooling, shared by the CPU and CUDA kernels.
//
// Every pooling is handled as a 3-d one over (depth, height, width): a 1-d pooling has
// depth and height 1, a 2-d one depth 1, as ConvGeometry does for convolutions. A tensor is
// seen as `planes` = batch * channels independent planes. All sizes are int64_t.
//
// Two kinds of window share the math:
//  * regular (max, min, avg, lp): output o along a dimension reads the taps
//    o * stride - pad + k * dilation, k in [0, kernel);
//  * adaptive: output o reads [floor(o * in / out), ceil((o + 1) * in / out)), torch's rule.
#pragma once

#include <cstdint>

#include "../host_device.h"

namespace tco {

struct PoolGeometry {
  int64_t planes = 0;               // batch * channels
  int64_t in_size[3] = {1, 1, 1};   // D, H, W of the input
  int64_t out_size[3] = {1, 1, 1};  // D, H, W of the output
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};      // before the input
  int64_t pad_end[3] = {0, 0, 0};  // after it: pad, or one more for TensorFlow's 'same' (begin <= end)
  int64_t dilation[3] = {1, 1, 1};
  bool adaptive = false;
  // avg only: count the padding in the divisor; a non-zero divisor_override replaces the divisor.
  bool count_include_pad = true;
  int64_t divisor_override = 0;

  TCO_HOST_DEVICE int64_t in_plane() const { return in_size[0] * in_size[1] * in_size[2]; }
  TCO_HOST_DEVICE int64_t out_plane() const { return out_size[0] * out_size[1] * out_size[2]; }
  TCO_HOST_DEVICE int64_t kernel_volume() const { return kernel[0] * kernel[1] * kernel[2]; }
};

// An adaptive geometry whose windows tile the input evenly (each input size a multiple of its
// output size: window o is [o * k, (o + 1) * k), k = in / out) as the same regular windows:
// kernel = stride = k, no padding, the same divisors, each window's taps in the same order (so
// the same max / min indices). The regular passes are faster (fused row sums for kernels of 2
// and 3: AdaptiveAvgPool2d(7) on (8, 256, 14x14) took 1.4x torch's time through the adaptive
// ones, 0.5x through these). Global pooling (one output per plane) keeps its own pass.
inline PoolGeometry as_regular_windows(PoolGeometry g) {
  if (!g.adaptive || g.out_plane() == 1) return g;
  for (int d = 0; d < 3; ++d) {
    if (g.out_size[d] < 1 || g.in_size[d] < 1 || g.in_size[d] % g.out_size[d] != 0) return g;
  }
  for (int d = 0; d < 3; ++d) {
    g.kernel[d] = g.stride[d] = g.in_size[d] / g.out_size[d];
    g.pad[d] = g.pad_end[d] = 0;
    g.dilation[d] = 1;
  }
  g.adaptive = false;
  g.count_include_pad = true;
  g.divisor_override = 0;
  return g;
}

// The window of output index `o` along one dimension, clipped to the input: the taps
// start, start + step, ..., count of them, all inside [0, in_size). `extent` is what torch's
// average pooling divides by when it counts the padding: the window clipped to the padded
// input (min(o * stride - pad + kernel, in + pad_end) - (o * stride - pad)).
struct PoolWindow {
  int64_t start, count, step, extent;
};

TCO_HOST_DEVICE int64_t pool_floor_div(int64_t a, int64_t b) {
  return (a >= 0) ? a / b : -((-a + b - 1) / b);
}

TCO_HOST_DEVICE PoolWindow pool_window(const PoolGeometry& g, int dim, int64_t o) {
  const int64_t in = g.in_size[dim];
  if (g.adaptive) {
    const int64_t out = g.out_size[dim];
    const int64_t start = (o * in) / out;
    const int64_t end = ((o + 1) * in + out - 1) / out;
    return {start, end - start, 1, end - start};
  }
  const int64_t k = g.kernel[dim], dil = g.dilation[dim];
  const int64_t raw = o * g.stride[dim] - g.pad[dim];
  int64_t start = raw;
  if (raw < 0) start = raw + ((-raw + dil - 1) / dil) * dil;
  int64_t end = raw + (k - 1) * dil + 1;
  if (end > in) end = in;
  const int64_t count = start < end ? (end - start + dil - 1) / dil : 0;
  int64_t padded_end = raw + k;
  if (padded_end > in + g.pad_end[dim]) padded_end = in + g.pad_end[dim];
  return {start, count, dil, padded_end - raw};
}

// Calls visit(i) with the flat index i (within the input plane) of each element of the window of
// output (od, oh, ow), in scan order, until visit returns true; returns whether one did.
template <typename Visit>
TCO_HOST_DEVICE bool scan_window(const PoolGeometry& g, int64_t od, int64_t oh, int64_t ow, const Visit& visit) {
  const PoolWindow wd = pool_window(g, 0, od), wh = pool_window(g, 1, oh), ww = pool_window(g, 2, ow);
  const int64_t H = g.in_size[1], W = g.in_size[2];
  for (int64_t k = 0, id = wd.start; k < wd.count; ++k, id += wd.step)
    for (int64_t l = 0, ih = wh.start; l < wh.count; ++l, ih += wh.step)
      for (int64_t m = 0, iw = ww.start; m < ww.count; ++m, iw += ww.step)
        if (visit((id * H + ih) * W + iw)) return true;
  return false;
}

// Output extent of regular pooling along one dimension, torch's rule: floor (or ceil with
// ceil_mode) of (in + pad + pad_end - dilation (k - 1) - 1) / stride, plus one; with ceil_mode
// the last window must start inside the input or the leading padding. Returns <= 0 when the
// (dilated) kernel does not fit.
TCO_HOST_DEVICE int64_t pool_out_size(int64_t in, int64_t pad, int64_t pad_end, int64_t k, int64_t stride,
                                      int64_t dilation, bool ceil_mode) {
  // room: how far the window can move (the checks keep every term in int64); ceil_mode counts a
  // last, partial window too.
  const int64_t room = in + pad + pad_end - dilation * (k - 1) - 1;
  int64_t out = pool_floor_div(room, stride) + 1;
  if (ceil_mode && pool_floor_div(room, stride) * stride != room) ++out;
  if (ceil_mode && out > 0 && (out - 1) * stride >= in + pad) --out;
  return out;
}

// The outputs along `dim` whose tap `k` lies inside the input, for regular pooling:
// o * stride - pad + k * dilation in [0, in_size).
using PoolRange = IndexRange;

TCO_HOST_DEVICE PoolRange pool_tap_outputs(const PoolGeometry& g, int dim, int64_t k) {
  return index_range(k * g.dilation[dim] - g.pad[dim], g.stride[dim], g.in_size[dim], g.out_size[dim]);
}

// Outputs along `dim` whose window may contain input index `i` (a superset for adaptive
// windows and dilated kernels; callers test membership with pool_window).
TCO_HOST_DEVICE PoolRange pool_outputs_near(const PoolGeometry& g, int dim, int64_t i) {
  const int64_t out = g.out_size[dim];
  int64_t lo, hi;
  if (g.adaptive) {
    const int64_t in = g.in_size[dim];
    lo = (i * out) / in;
    hi = ((i + 1) * out + in - 1) / in;
  } else {
    const int64_t s = g.stride[dim];
    const int64_t first = i + g.pad[dim] - (g.kernel[dim] - 1) * g.dilation[dim];
    lo = first <= 0 ? 0 : (first + s - 1) / s;
    hi = pool_floor_div(i + g.pad[dim], s) + 1;
  }
  if (lo < 0) lo = 0;
  if (hi > out) hi = out;
  return {lo, hi < lo ? lo : hi};
}

// Whether input index `i` is a tap of window `w`.
TCO_HOST_DEVICE bool pool_window_has(const PoolWindow& w, int64_t i) {
  if (i < w.start) return false;
  const int64_t d = i - w.start;
  return d % w.step == 0 && d / w.step < w.count;
}

// The divisor of average pooling for the window (wd, wh, ww), torch's rule.
TCO_HOST_DEVICE int64_t pool_divisor(const PoolGeometry& g, const PoolWindow& wd,
                                     const PoolWindow& wh, const PoolWindow& ww) {
  if (g.divisor_override != 0) return g.divisor_override;
  if (g.count_include_pad && !g.adaptive) return wd.extent * wh.extent * ww.extent;
  return wd.count * wh.count * ww.count;
}

}  // namespace tco
