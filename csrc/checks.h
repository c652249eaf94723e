// Helpers of the argument checks shared by every family: shapes in messages and size
// arithmetic that refuses int64 overflow (torch refuses such sizes too). `op` prefixes each
// message ("cnn_ops.conv", "cnn_ops.max_pool", ...).
#pragma once

#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>
#include <c10/util/safe_numerics.h>

#include <cstdint>
#include <sstream>
#include <string>

namespace tco {

// "[2, 3, 4]"
inline std::string shape_str(c10::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < sizes.size(); ++i) s << (i ? ", " : "") << sizes[i];
  s << "]";
  return s.str();
}

// The extent dilation * (kernel - 1) + 1 of a dilated kernel (kernel >= 1, dilation >= 1).
inline int64_t dilated_extent(const char* op, int64_t kernel, int64_t dilation) {
  int64_t span = 0;
  TORCH_CHECK(!c10::mul_overflows(dilation, kernel - 1, &span) && !c10::add_overflows(span, int64_t{1}, &span), op,
              ": the dilated kernel's extent dilation * (kernel_size - 1) + 1 overflows int64 (kernel size ", kernel,
              ", dilation ", dilation, ")");
  return span;
}

// The length in + pad_begin + pad_end of a padded input (pads >= 0).
inline int64_t padded_length(const char* op, int64_t in, int64_t pad_begin, int64_t pad_end) {
  int64_t padded = 0;
  TORCH_CHECK(!c10::add_overflows(in, pad_begin, &padded) && !c10::add_overflows(padded, pad_end, &padded), op,
              ": the padded input's length overflows int64 (size ", in, " padded by (", pad_begin, ", ", pad_end,
              "))");
  return padded;
}

}  // namespace tco
