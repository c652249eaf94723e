// Stochastic pooling's window arithmetic, shared by the CPU and CUDA kernels (free of torch
// headers, like the .cu files that include it): training's pick and eval's statistics.
//
// Eval gives S2 / S1 per window (S1 = sum(x), S2 = sum(x^2)); its gradient is
// gy (2 x S1 - S2) / S1^2. x^2 overflows float for x above about 1.8e19 (and underflows below about
// 1e-19), although S2 / S1 lies between the window's smallest and largest value; such windows
// are summed again with every x divided by the window's largest value m, S1 = m s1 and
// S2 = m^2 s2, which keeps every quantity above in range (WindowGrad).
#pragma once

#include <cstdint>
#include <limits>

#include "../host_device.h"
#include "pool_geometry.h"

namespace tco {

// The gradient of S2 / S1 with respect to an element x of its window, times gy:
// gy (2 x S1 - S2) / S1^2 = (x / scale) a - b with a = 2 gy / s1 and b = gy s2 / s1^2, which do
// not grow with 1 / scale (2 gy / S1 would overflow for a window of subnormal values).
template <typename A>
struct WindowGrad {
  A a = 0, b = 0, scale = 1;
  TCO_HOST_DEVICE A at(A x) const { return (x / scale) * a - b; }
};

template <typename A>
struct WindowMoments {
  A s1 = 0, s2 = 0, scale = 1;  // S1 = scale * s1, S2 = scale^2 * s2
  // S2 / S1 (0 for an all-zero window).
  TCO_HOST_DEVICE A mean_by_weight() const { return s1 > A(0) ? scale * (s2 / s1) : A(0); }
  // Its gradient times gy (zero for an all-zero window).
  TCO_HOST_DEVICE WindowGrad<A> grad(A gy) const {
    WindowGrad<A> r;
    r.scale = scale;
    if (s1 > A(0)) {
      r.a = A(2) * gy / s1;
      r.b = gy * (s2 / (s1 * s1));
    }
    return r;
  }
};

// The moments of the window of output (od, oh, ow) of one plane; load(i) gives the plane's
// element i (flat index in the input plane) in the accumulation type A. Inputs are
// non-negative (the ops check).
template <typename A, typename Load>
TCO_HOST_DEVICE WindowMoments<A> window_moments(const PoolGeometry& g, int64_t od, int64_t oh, int64_t ow,
                                                const Load& load) {
  A s1 = 0, s2 = 0;
  scan_window(g, od, oh, ow, [&](int64_t i) {
    const A v = load(i);
    s1 += v;
    s2 += v * v;
    return false;
  });
  // For x >= 0, s1 <= sqrt(count * s2): s2 in range keeps s1 in range.
  if (s2 <= std::numeric_limits<A>::max() && (s2 >= std::numeric_limits<A>::min() || s1 == A(0))) {
    WindowMoments<A> m;
    m.s1 = s1;
    m.s2 = s2;
    return m;
  }
  A largest = 0;
  scan_window(g, od, oh, ow, [&](int64_t i) {
    const A v = load(i);
    largest = v > largest ? v : largest;
    return false;
  });
  WindowMoments<A> r;
  r.scale = largest;
  scan_window(g, od, oh, ow, [&](int64_t i) {
    const A u = load(i) / largest;
    r.s1 += u;
    r.s2 += u * u;
    return false;
  });
  return r;
}

// Training's pick in the window of output (od, oh, ow), given its uniform number u in [0, 1):
// the first element whose cumulative sum exceeds u * (window sum), as a flat index in the input
// plane. Rounding can leave the cumulative sum at or below u * sum: then the last positive
// element; an all-zero window gives its first element.
template <typename A, typename Load>
TCO_HOST_DEVICE int64_t stochastic_pick(const PoolGeometry& g, int64_t od, int64_t oh, int64_t ow, A u,
                                        const Load& load) {
  A sum = 0;
  int64_t first = -1;
  scan_window(g, od, oh, ow, [&](int64_t i) {
    first = first < 0 ? i : first;
    sum += load(i);
    return false;
  });
  const A threshold = u * sum;
  A cum = 0;
  int64_t pick = -1, last_positive = -1;
  scan_window(g, od, oh, ow, [&](int64_t i) {
    const A v = load(i);
    if (v <= A(0)) return false;
    last_positive = i;
    cum += v;
    if (cum <= threshold) return false;
    pick = i;
    return true;
  });
  return pick >= 0 ? pick : (last_positive >= 0 ? last_positive : first);
}

}  // namespace tco
