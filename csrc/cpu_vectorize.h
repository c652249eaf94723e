// Function multi-versioning for the CPU hot loops. The extension is built with the
// compiler's baseline flags (no -march=native, so the binary runs on any x86-64), and the
// few inner loops marked TCO_VECTORIZE are compiled again for AVX2+FMA and AVX-512; the
// loader picks the best clone for the CPU it runs on.
//
// The clones name the x86-64 micro-architecture levels (v3: AVX2, FMA; v4: AVX-512), which
// GCC dispatches on CPU features. Named CPUs ("arch=haswell") are dispatched on the CPU
// model instead, so an AMD EPYC with AVX-512 ran the baseline SSE2 clone.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12
#define TCO_VECTORIZE \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TCO_VECTORIZE
#endif
