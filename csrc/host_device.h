// Macros shared by C++ and CUDA translation units. Kept free of torch headers so that
// .cu files that include it compile in about a second.
#pragma once

#ifdef __CUDACC__
#define TCO_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TCO_HOST_DEVICE inline
#endif
