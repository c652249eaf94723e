"""Build of torch_cnn_ops._C.

A CUDAExtension when torch was built with CUDA and nvcc is found (or FORCE_CUDA=1), else a
CppExtension of the C++ sources only. Files whose name contains "_cuda" are CUDA-only: the
kernels (`*_cuda.cu`, free of torch headers so nvcc stays fast) and their glue
(`*_cuda_ops.cpp`, tensors -> raw pointers, registered for the CUDA dispatch key).
"""

import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension
import torch


def want_cuda() -> bool:
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    return torch.version.cuda is not None and CUDA_HOME is not None


def sources(cuda: bool) -> list:
    files = sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/*/*.cpp") + glob.glob("csrc/*/*.cu"))
    if not cuda:
        files = [f for f in files if "_cuda" not in os.path.basename(f)]
    return files


cuda = want_cuda()
cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fvisibility=hidden"]
extension_args = dict(
    name="torch_cnn_ops._C",
    sources=sources(cuda),
    extra_compile_args={"cxx": cxx_flags},
    extra_link_args=["-fopenmp"],
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
