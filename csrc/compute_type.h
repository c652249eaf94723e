// The type accumulators, statistics and GEMMs run in, shared by every family (CPU code and
// CUDA glue): float32 for float16 and bfloat16 inputs (accumulation in float32 end to end),
// the input's own type otherwise (float32 or float64).
#pragma once

#include <c10/core/ScalarType.h>

namespace tco {

inline c10::ScalarType compute_type(c10::ScalarType t) {
  return (t == c10::kHalf || t == c10::kBFloat16) ? c10::kFloat : t;
}

// Calls fn(T{}) with T the C++ type of the compute type `ct` (double, else float).
template <typename Fn>
void for_compute_type(c10::ScalarType ct, const Fn& fn) {
  if (ct == c10::kDouble) fn(double{});
  else fn(float{});
}

}  // namespace tco
