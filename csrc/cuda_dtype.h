// The element types of the CUDA launchers, shared by every family. Free of torch headers, so
// that the kernels (*.cu) compile with nvcc alone; cuda_glue.h maps torch's dtypes onto it.
#pragma once

namespace tco {

enum class CudaDType { Float, Double, Half, BFloat16 };

}  // namespace tco
