// Function multi-versioning for the CPU hot loops. The extension is built with the
// compiler's baseline flags (no -march=native, so the binary runs on any x86-64), and the
// few inner loops marked TCO_VECTORIZE are compiled again for AVX2+FMA and AVX-512; the
// loader picks the best clone for the CPU it runs on.
#pragma once

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TCO_VECTORIZE \
  __attribute__((target_clones("arch=skylake-avx512", "arch=haswell", "default")))
#else
#define TCO_VECTORIZE
#endif
