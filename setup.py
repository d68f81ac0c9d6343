"""Builds fastrnn._C against the installed torch: the C++ ops always; the CUDA ops too when
torch has CUDA and the CUDA toolkit is found (FASTRNN_CUDA=0 builds without them). A CPU-only
torch builds exactly the C++ extension."""

import glob
import os
import shlex
import subprocess

import torch
from setuptools import setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT)
                  for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))


# -fopenmp makes at::parallel_for use torch's OpenMP runtime (libgomp.so.1 is already
# loaded by torch, so the extension shares it).
cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
# The gate loops are vectorised for the building machine's CPU (AVX2/AVX-512 where it has
# them); FASTRNN_PORTABLE=1 builds for the baseline x86-64 instead, e.g. for a wheel.
if os.environ.get("FASTRNN_PORTABLE", "0") != "1":
    cxx_flags.append("-march=native")


def shared_cpp_runtime():
    """Link flags that make the extension use the shared C++ runtime torch uses. A toolchain
    that finds only the static archive (libstdc++.a) would otherwise link a private copy of
    the runtime into the extension, beside the one torch loads, and that copy's locale
    facets fault at the first number formatted into an error message
    (tests/test_linkage.py): then the libstdc++.so.6 this process loaded with torch is
    linked explicitly, ahead of the driver's own -lstdc++."""
    compiler = shlex.split(os.environ.get("CXX", "c++"))
    try:
        path = subprocess.run(compiler + ["-print-file-name=libstdc++.so"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return []
    if os.path.isabs(path) or not os.path.exists("/proc/self/maps"):
        return []  # the compiler links the shared runtime
    with open("/proc/self/maps") as maps:
        loaded = [line.split()[-1] for line in maps if "/libstdc++.so" in line]
    return loaded[:1]


link_flags = ["-fopenmp"] + shared_cpp_runtime()
cpu_sources = (sources("csrc/ops.cpp") + sources("csrc/cell_autograd.cpp")
               + sources("csrc/cell_python.cpp")
               + sources("csrc/cpu/*.cpp"))
with_cuda = (torch.version.cuda is not None and CUDA_HOME is not None
             and os.environ.get("FASTRNN_CUDA", "1") != "0")

if with_cuda:
    # A100 (sm_80) and H100 (sm_90a) machine code, and sm_80 PTX that newer GPUs compile
    # when they load the library. TORCH_CUDA_ARCH_LIST, when set, chooses instead (torch
    # adds its flags only when we add none).
    arch_flags = [] if os.environ.get("TORCH_CUDA_ARCH_LIST") else [
        "-gencode=arch=compute_80,code=sm_80",
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_80,code=compute_80",
    ]
    extension = CUDAExtension(
        "fastrnn._C",
        cpu_sources + sources("csrc/cuda/**/*.cpp") + sources("csrc/cuda/**/*.cu"),
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++17"] + arch_flags},
        extra_link_args=link_flags,
    )
else:
    extension = CppExtension("fastrnn._C", cpu_sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=link_flags)

setup(ext_modules=[extension], cmdclass={"build_ext": BuildExtension})
