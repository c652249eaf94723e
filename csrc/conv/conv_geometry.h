// Shape and index math of an N-d convolution, shared by the CPU and CUDA kernels.
//
// Every convolution is handled as a 3-d one: a 1-d convolution has depth and height 1,
// a 2-d one depth 1. Spatial dimensions are ordered (depth, height, width). All sizes and
// offsets are int64_t so that tensors with more than 2^31 elements index correctly.
//
// Padding may be asymmetric ('same' with an even kernel): only the leading pad enters the
// index math; the trailing pad is folded into the output size by whoever builds the struct.
#pragma once

#include <cstdint>

#include "../host_device.h"

namespace tco {

struct ConvGeometry {
  int64_t batch = 0;
  int64_t in_channels = 0;   // C (all groups)
  int64_t out_channels = 0;  // O (all groups)
  int64_t groups = 1;
  int64_t in_size[3] = {1, 1, 1};   // D, H, W of the input
  int64_t out_size[3] = {1, 1, 1};  // D, H, W of the output
  int64_t kernel[3] = {1, 1, 1};
  int64_t stride[3] = {1, 1, 1};
  int64_t pad[3] = {0, 0, 0};  // leading pad of each dimension
  int64_t dilation[3] = {1, 1, 1};

  TCO_HOST_DEVICE int64_t in_per_group() const { return in_channels / groups; }
  TCO_HOST_DEVICE int64_t out_per_group() const { return out_channels / groups; }
  TCO_HOST_DEVICE int64_t in_plane() const { return in_size[0] * in_size[1] * in_size[2]; }
  TCO_HOST_DEVICE int64_t out_plane() const { return out_size[0] * out_size[1] * out_size[2]; }
  // The cases the op entries answer without a pass (conv_ops.cpp, local_ops.cpp): no output
  // element; no gradient flowing into the input; no product for the weight gradient.
  TCO_HOST_DEVICE bool no_output() const { return batch == 0 || out_channels == 0 || out_plane() == 0; }
  TCO_HOST_DEVICE bool no_input_gradient() const { return no_output() || in_channels == 0 || in_plane() == 0; }
  TCO_HOST_DEVICE bool no_weight_gradient() const { return no_output() || in_channels == 0; }
  TCO_HOST_DEVICE int64_t kernel_volume() const { return kernel[0] * kernel[1] * kernel[2]; }
  // Rows of the im2col matrix of one group: (in_per_group * kernel_volume).
  TCO_HOST_DEVICE int64_t col_rows() const { return in_per_group() * kernel_volume(); }
};

// Offset of kernel tap `k` along dimension `dim` relative to `output_index * stride`.
TCO_HOST_DEVICE int64_t tap_offset(const ConvGeometry& g, int dim, int64_t k) {
  return k * g.dilation[dim] - g.pad[dim];
}

// The outputs `o` along `dim` for which the input index o * stride + offset lies inside
// [0, in_size) (empty ranges have lo == hi).
TCO_HOST_DEVICE IndexRange valid_outputs(const ConvGeometry& g, int dim, int64_t offset) {
  return index_range(offset, g.stride[dim], g.in_size[dim], g.out_size[dim]);
}

// The kernel taps k along `dim` whose input index o * stride + k * dilation - pad, for output
// index o, lies inside [0, in_size): the gather form of valid_outputs, used by kernels that
// compute one output at a time.
TCO_HOST_DEVICE IndexRange taps_inside(const ConvGeometry& g, int dim, int64_t o) {
  return index_range(o * g.stride[dim] - g.pad[dim], g.dilation[dim], g.in_size[dim], g.kernel[dim]);
}

// Output extent along one dimension: floor((in + pad_lo + pad_hi - dilation*(k-1) - 1) / stride) + 1.
TCO_HOST_DEVICE int64_t conv_out_size(int64_t in, int64_t pad_lo, int64_t pad_hi, int64_t k,
                                      int64_t stride, int64_t dilation) {
  const int64_t span = in + pad_lo + pad_hi - dilation * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

}  // namespace tco

namespace tco {

// Visits every kernel tap and every row of outputs (fixed depth and height index) whose
// inputs lie inside the input for that tap, as
//   fn(tap, out_index, in_index, count)
// meaning: outputs out_index .. out_index + count - 1 (contiguous within one output plane)
// read the inputs in_index, in_index + stride[2], ... (within one input plane). `tap` is the
// flat kernel index (kd * kH + kh) * kW + kw. Padding is skipped, never visited.
// This is the one place where the CPU kernels turn geometry into loops.
template <typename Fn>
inline void for_each_tap_row(const ConvGeometry& g, Fn&& fn) {
  const int64_t H = g.in_size[1], W = g.in_size[2];
  const int64_t oH = g.out_size[1], oW = g.out_size[2];
  int64_t tap = 0;
  for (int64_t kd = 0; kd < g.kernel[0]; ++kd) {
    const int64_t off_d = tap_offset(g, 0, kd);
    const IndexRange rd = valid_outputs(g, 0, off_d);
    for (int64_t kh = 0; kh < g.kernel[1]; ++kh) {
      const int64_t off_h = tap_offset(g, 1, kh);
      const IndexRange rh = valid_outputs(g, 1, off_h);
      for (int64_t kw = 0; kw < g.kernel[2]; ++kw, ++tap) {
        const int64_t off_w = tap_offset(g, 2, kw);
        const IndexRange rw = valid_outputs(g, 2, off_w);
        if (rw.lo >= rw.hi) continue;
        for (int64_t od = rd.lo; od < rd.hi; ++od) {
          const int64_t id = od * g.stride[0] + off_d;
          for (int64_t oh = rh.lo; oh < rh.hi; ++oh) {
            const int64_t ih = oh * g.stride[1] + off_h;
            fn(tap, (od * oH + oh) * oW + rw.lo, (id * H + ih) * W + rw.lo * g.stride[2] + off_w,
               rw.hi - rw.lo);
          }
        }
      }
    }
  }
}

}  // namespace tco
