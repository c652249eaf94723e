"""Build of torch_cnn_ops._C.

A CUDAExtension when torch was built with CUDA and nvcc is found, else a CppExtension of the
C++ sources only. Files whose name contains "_cuda" are CUDA-only: the kernels (`*_cuda.cu`,
free of torch headers so nvcc stays fast) and their glue (`*_cuda_ops.cpp`, tensors -> raw
pointers, registered for the CUDA dispatch key).

Environment:
  FORCE_CUDA=1  build the CUDA kernels even where that test fails (e.g. no GPU visible to
                torch: set TORCH_CUDA_ARCH_LIST too, e.g. "9.0");
  FORCE_CUDA=0  build the C++ kernels only, even with a CUDA build of torch and nvcc at hand;
                unset (or empty): decide as above.
  CXX, CC       the compilers (as for any setuptools build: torch.utils.cpp_extension compiles
                with $CXX, else c++; setuptools links with $CC's driver). GCC and Clang are
                supported; the flags are chosen per compiler by compiling small probes with it
                (see cxx_flags), and the choice is printed.
"""

import glob
import os
import shlex
import subprocess
import tempfile

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension, get_cxx_compiler
import torch


def want_cuda() -> bool:
    force = os.environ.get("FORCE_CUDA", "")
    if force not in ("", "0", "1"):
        raise SystemExit(f"FORCE_CUDA={force!r}: expected 1 (build the CUDA kernels), 0 (C++ only) or unset")
    if force:
        return force == "1"
    return torch.version.cuda is not None and CUDA_HOME is not None


def sources(cuda: bool) -> list:
    files = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/*/*.cpp") + glob.glob("csrc/*/*.cu"))
    if not cuda:
        files = [f for f in files if "_cuda" not in os.path.basename(f)]
    return files


# ---- the compiler and its flags ------------------------------------------------------------
CXX = shlex.split(get_cxx_compiler())


def compiles(flags: list, code: str, link: bool = False) -> bool:
    """Whether CXX compiles `code` with `flags` without a warning (and links it into a shared
    library, with `link`)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.cpp")
        with open(src, "w") as f:
            f.write(code)
        out = ["-shared", "-fPIC", "-o", os.path.join(tmp, "probe.so")] if link else \
            ["-c", "-o", os.path.join(tmp, "probe.o")]
        try:
            return subprocess.run([*CXX, "-Werror", *flags, src, *out], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL).returncode == 0
        except OSError:
            return False


def compiler_family() -> str:
    """"gcc", "clang" or "other": what CXX is, from its predefined macros (a `c++` or `cc`
    wrapper names neither)."""
    for family, test in (("clang", "defined(__clang__)"),
                         ("gcc", "defined(__GNUC__) && !defined(__clang__) && !defined(__INTEL_COMPILER)")):
        if compiles([], f"#if !({test})\n#error not {family}\n#endif\n"):
            return family
    return "other"


OMP_PARALLEL_PROBE = """
#include <omp.h>
extern "C" int probe(int n) {
  int threads = 0;
#pragma omp parallel reduction(+ : threads)
  threads += omp_get_thread_num() < n;
  return threads;
}
"""
OMP_SIMD_PROBE = """
extern "C" float probe(const float* x, int n) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int i = 0; i < n; ++i) s += x[i];
  return s;
}
"""


def openmp_flags(family: str) -> tuple:
    """(compile flags, link flags, what they give) for OpenMP.

    The C++ kernels use OpenMP twice: `#pragma omp simd` in a few inner loops (vectorisation
    only, no runtime), and at::parallel_for, which is inline (ATen/Parallel-inl.h,
    ParallelOpenMP.h): compiled without OpenMP (_OPENMP undefined) it runs every loop on the
    calling thread. Its `#pragma omp parallel` must use torch's own OpenMP runtime, so that one
    thread pool serves both, torch.set_num_threads governs our loops, at::get_thread_num() stays
    below at::get_num_threads() (the kernels index per-thread buffers with it), and
    at::in_parallel_region() is true inside our loops (so the GEMMs run within them stay on
    their thread). GCC's -fopenmp calls libgomp, the runtime torch's Linux builds use. Clang's
    calls libomp, a second runtime beside libgomp, for which none of that holds (and
    -fopenmp=libgomp makes Clang ignore the pragmas): Clang builds get -fopenmp-simd, and their
    parallel_for loops run on one thread."""
    if family == "gcc" and compiles(["-fopenmp"], OMP_PARALLEL_PROBE, link=True):
        return ["-fopenmp"], ["-fopenmp"], "OpenMP (torch's libgomp): omp simd and multithreaded at::parallel_for"
    if compiles(["-fopenmp-simd"], OMP_SIMD_PROBE):
        return ["-fopenmp-simd"], [], "omp simd only: at::parallel_for runs on the calling thread"
    return [], [], "no OpenMP: at::parallel_for runs on the calling thread, omp simd ignored"


def cxx_flags() -> tuple:
    """(compile flags, link flags, a one-line summary) for CXX."""
    family = compiler_family()
    omp_compile, omp_link, omp_note = openmp_flags(family)
    flags = ["-O3", "-std=c++20", "-fvisibility=hidden", *omp_compile]
    if family == "other":  # neither GCC nor Clang: only the flags it accepts
        flags = [f for f in flags if compiles([f], "int x;\n")]
    return flags, omp_link, f"{family} ({' '.join(CXX)}); {omp_note}"


cuda = want_cuda()
compile_flags, link_flags, summary = cxx_flags()
print(f"torch_cnn_ops: C++ kernels{' and CUDA kernels' if cuda else ' only'}; compiler {summary}; "
      f"flags {' '.join(compile_flags)}")
extension_args = dict(
    name="torch_cnn_ops._C",
    sources=sources(cuda),
    extra_compile_args={"cxx": compile_flags},
    extra_link_args=link_flags,
    py_limited_api=False,
)
if cuda:
    extension_args["extra_compile_args"]["nvcc"] = ["-O3", "-std=c++20", "--expt-relaxed-constexpr"]
    extension_args["define_macros"] = [("TCO_WITH_CUDA", "1")]
    extension = CUDAExtension(**extension_args)
else:
    extension = CppExtension(**extension_args)

setup(
    packages=find_packages(include=["torch_cnn_ops", "torch_cnn_ops.*"]),
    ext_modules=[extension],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
)
