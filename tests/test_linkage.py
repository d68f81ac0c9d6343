"""The extension uses the C++ runtime that torch uses, rather than carrying a copy of it.

A copy (libstdc++ linked statically into fastrnn._C) has locale facet ids of its own: the
first number formatted into an error message then faults in the facet lookup, so bad input
kills the process instead of raising. Seen in a CUDA build on an H200 machine
(benchmarks/results/nvidia-h200-2026-12-04/README.md)."""

import shutil
import subprocess

import pytest

import fastrnn._C as extension

# Code of libstdc++ itself (not header templates that any object may instantiate).
RUNTIME_SYMBOLS = ("std::locale::locale", "std::codecvt<char16_t", "std::ios_base::Init::Init")


@pytest.mark.skipif(shutil.which("nm") is None, reason="needs nm (binutils)")
def test_extension_does_not_carry_a_copy_of_the_cpp_runtime():
    out = subprocess.run(["nm", "-C", "--defined-only", extension.__file__],
                         capture_output=True, text=True, check=True).stdout
    copied = sorted({line.split(" ", 2)[-1] for line in out.splitlines()
                     if any(s in line for s in RUNTIME_SYMBOLS)})
    assert not copied, f"{extension.__file__} defines libstdc++'s own code: {copied[:5]}"
