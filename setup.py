"""Builds fastrnn._C against the installed torch (a CPU-only torch works)."""

import glob
import os

from setuptools import setup
from torch.utils.cpp_extension import BuildExtension, CppExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def sources(pattern):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


# -fopenmp makes at::parallel_for use torch's OpenMP runtime (libgomp.so.1 is already
# loaded by torch, so the extension shares it).
cxx_flags = ["-O3", "-std=c++20", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
# The gate loops are vectorised for the building machine's CPU (AVX2/AVX-512 where it has
# them); FASTRNN_PORTABLE=1 builds for the baseline x86-64 instead, e.g. for a wheel.
if os.environ.get("FASTRNN_PORTABLE", "0") != "1":
    cxx_flags.append("-march=native")

setup(
    ext_modules=[
        CppExtension(
            "fastrnn._C",
            sources("csrc/ops.cpp") + sources("csrc/cpu/*.cpp"),
            extra_compile_args={"cxx": cxx_flags},
            extra_link_args=["-fopenmp"],
        )
    ],
    cmdclass={"build_ext": BuildExtension},
)
