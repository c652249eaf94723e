// Function multi-versioning for the CPU hot loops, and the strided multiply-add that several
// families' CPU kernels share. The extension is built with the
// compiler's baseline flags (no -march=native, so the binary runs on any x86-64), and the
// few inner loops marked TCO_VECTORIZE are compiled again for AVX2+FMA and AVX-512; the
// loader picks the best clone for the CPU it runs on.
//
// The clones name the x86-64 micro-architecture levels (v3: AVX2, FMA; v4: AVX-512), which
// GCC dispatches on CPU features. Named CPUs ("arch=haswell") are dispatched on the CPU
// model instead, so an AMD EPYC with AVX-512 ran the baseline SSE2 clone.
//
// Clones need GCC 12 or newer on x86-64: Clang 14 has the attribute (__has_attribute) but not
// on function templates, which most TCO_VECTORIZE functions are. Other compilers and targets,
// and builds that define TCO_NO_TARGET_CLONES, compile each function once, for the baseline.
#pragma once

#if defined(__has_attribute) && !defined(TCO_NO_TARGET_CLONES)
#if __has_attribute(target_clones) && defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && \
    __GNUC__ >= 12
#define TCO_TARGET_CLONES 1
#endif
#endif

#ifdef TCO_TARGET_CLONES
#define TCO_VECTORIZE \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TCO_VECTORIZE
#endif

#include <cstdint>

namespace tco {

// dst[i * dst_step] += w * src[i * src_step]: a gather (dst_step 1) or a scatter (src_step 1)
// along a row with a stride; unit steps take the loop the compiler vectorises.
template <typename acc_t, typename src_t>
TCO_VECTORIZE void axpy(acc_t* __restrict dst, int64_t dst_step, const src_t* __restrict src, int64_t src_step,
                        acc_t w, int64_t n) {
  if (dst_step == 1 && src_step == 1) {
    for (int64_t i = 0; i < n; ++i) dst[i] += w * static_cast<acc_t>(src[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i * dst_step] += w * static_cast<acc_t>(src[i * src_step]);
  }
}

}  // namespace tco
