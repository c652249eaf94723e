// Gaussian pooling, shared by the CPU and CUDA implementations: an average over each window
// weighted by exp(-d^2 / (2 sigma^2)), d the distance of a tap from the window's centre
// ((k - 1) / 2 per dimension), normalised to sum 1 over the full kernel (padding counts as
// zeros), i.e. a depthwise convolution with the normalised Gaussian kernel.
//
// The Gaussian is separable, so the weights are kept as one normalised 1-d table per
// dimension, concatenated: kernel[0] entries for depth, then kernel[1] for height, then
// kernel[2] for width (a dimension of kernel 1 has the single weight 1). Tap k of the window
// of output o along a dimension reads input o * stride - pad + k (no dilation).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "pool_geometry.h"

namespace tco {

inline std::vector<double> gaussian_weights(const PoolGeometry& g, double sigma) {
  std::vector<double> w;
  w.reserve(g.kernel[0] + g.kernel[1] + g.kernel[2]);
  for (int d = 0; d < 3; ++d) {
    const int64_t k = g.kernel[d];
    const double centre = 0.5 * static_cast<double>(k - 1);
    // Distances are measured from the nearest tap's (0, or 1/2 for an even kernel), which
    // scales every weight by one factor that the normalisation removes: the nearest taps
    // weigh exp(0) = 1, so a small sigma cannot underflow all of them to 0 / 0.
    const double nearest = (k % 2 == 1) ? 0.0 : 0.25;  // squared distance of the nearest tap
    const double two_var = 2.0 * sigma * sigma;        // may underflow to 0 for a tiny sigma
    double sum = 0.0;
    const size_t first = w.size();
    for (int64_t i = 0; i < k; ++i) {
      const double dist = static_cast<double>(i) - centre;
      const double excess = dist * dist - nearest;
      const double v = excess == 0.0 ? 1.0 : std::exp(-excess / two_var);
      w.push_back(v);
      sum += v;
    }
    for (size_t i = first; i < w.size(); ++i) w[i] /= sum;
  }
  return w;
}

}  // namespace tco
