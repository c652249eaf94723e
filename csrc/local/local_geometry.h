// Shape and index math of locally connected convolutions (tiled and unshared), shared by the
// CPU and CUDA kernels.
//
// Both are a convolution whose kernel depends on the output position through one rule:
// output position (od, oh, ow) uses weight cell (od % grid[0], oh % grid[1], ow % grid[2]).
// Tiled convolution (Ngiam et al. 2010) has grid = tile size; unshared convolution has
// grid = output size, so that the rule is the identity and every position owns its kernel.
// The weight is never expanded to one kernel per position.
//
// The outputs of one cell, (cd + i * grid[0], ch + j * grid[1], cw + l * grid[2]), form an
// ordinary convolution of the whole input (cell_geometry): stride grid * stride, leading pad
// pad - c * stride (negative when the cell's first output sits inside the input). So the
// CPU kernels reuse the conv family's im2col for cells with many outputs.
#pragma once

#include <cstdint>

#include "../conv/conv_geometry.h"
#include "../host_device.h"

namespace tco {

struct LocalGeometry {
  ConvGeometry conv;            // groups == 1; out_size is the size of the whole output
  int64_t grid[3] = {1, 1, 1};  // weight cells per spatial dimension (D, H, W)

  TCO_HOST_DEVICE int64_t cells() const { return grid[0] * grid[1] * grid[2]; }
  // Elements of one cell's kernel: out_channels x in_channels x kernel_volume.
  TCO_HOST_DEVICE int64_t cell_size() const { return conv.out_channels * conv.col_rows(); }
  // Flat weight cell of output position (od, oh, ow).
  TCO_HOST_DEVICE int64_t cell_of(int64_t od, int64_t oh, int64_t ow) const {
    return ((od % grid[0]) * grid[1] + oh % grid[1]) * grid[2] + ow % grid[2];
  }
  // Output positions per cell, rounded up (cells at the far edge may have fewer).
  TCO_HOST_DEVICE int64_t positions_per_cell() const {
    int64_t p = 1;
    for (int d = 0; d < 3; ++d) p *= ceil_div_nonneg(conv.out_size[d], grid[d]);
    return p;
  }
};

// Index (per dimension) of the first output position of weight cell `cell`.
TCO_HOST_DEVICE void cell_origin(const LocalGeometry& g, int64_t cell, int64_t* first) {
  first[2] = cell % g.grid[2];
  first[1] = (cell / g.grid[2]) % g.grid[1];
  first[0] = cell / (g.grid[2] * g.grid[1]);
}

// The outputs of weight cell `cell` as an ordinary convolution (see the top of this file).
// A cell beyond the output (a grid larger than the output) has an empty output plane.
TCO_HOST_DEVICE ConvGeometry cell_geometry(const LocalGeometry& g, int64_t cell) {
  ConvGeometry c = g.conv;
  int64_t first[3];
  cell_origin(g, cell, first);
  for (int d = 0; d < 3; ++d) {
    const int64_t rest = g.conv.out_size[d] - first[d];
    c.out_size[d] = rest <= 0 ? 0 : ceil_div_nonneg(rest, g.grid[d]);
    c.pad[d] = g.conv.pad[d] - first[d] * g.conv.stride[d];
    c.stride[d] = g.conv.stride[d] * g.grid[d];
  }
  return c;
}

}  // namespace tco
