"""Builds and calls the host emulation of the persistent GPU kernels
(tests/native/persistent_emulation.cpp over csrc/cuda/persistent/) through ctypes.

The library is compiled once per content of its sources into build/persistent_emulation/.
"""

import ctypes
import hashlib
import os
import shutil
import subprocess

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NATIVE = os.path.join(ROOT, "tests", "native")
DRIVER = os.path.join(NATIVE, "persistent_emulation.cpp")
# What the driver may include: the library's headers and the native tests' own.
SOURCES = [DRIVER] + sorted(os.path.join(root, name)
                            for top in (os.path.join(ROOT, "csrc"), NATIVE)
                            for root, _, files in os.walk(top)
                            for name in files if name.endswith(".h"))
# Params order of persistent_emulation.cpp's fastrnn_emulate.
NAMES = ("gx", "h0", "c0", "w_hh", "b_hh", "y", "hn", "cn", "saved", "grad_y", "grad_hn",
         "grad_cn", "grad_gx", "grad_gh", "grad_h0", "grad_c0", "unit_params")

_lib = None


def cell_kind(mode):
    """The C entry points' number of a cell: its CellKind (csrc/cells/policy.h)."""
    from fastrnn import _C
    return getattr(_C, f"{mode}_KIND")


def dtype_code(dtype):
    """The C entry points' number of a dtype: its DType (csrc/common/dtype.h)."""
    from fastrnn import _C
    return getattr(_C, "DTYPE_" + str(dtype).removeprefix("torch.").upper())


def compiler():
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def cached_build(name, sources, salt, build):
    """build/<name>/<name>-<hash>.so, built by build(path) unless a library built from the
    same sources (and salt: e.g. the GPU architecture) is already there. Concurrent builders
    each write a file of their own and rename it into place."""
    digest = hashlib.sha256(salt.encode())
    for path in sources:
        with open(path, "rb") as f:
            digest.update(f.read())
    out_dir = os.path.join(ROOT, "build", name)
    os.makedirs(out_dir, exist_ok=True)
    lib_path = os.path.join(out_dir, f"{name}-{digest.hexdigest()[:16]}.so")
    if not os.path.exists(lib_path):
        tmp = f"{lib_path}.{os.getpid()}.tmp"
        build(tmp)
        os.replace(tmp, lib_path)
    return lib_path


def library():
    global _lib
    if _lib is not None:
        return _lib
    lib_path = cached_build("persistent_emulation", SOURCES, "", lambda out: subprocess.run(
        [compiler(), "-std=c++20", "-O2", "-shared", "-fPIC", "-pthread", "-I",
         os.path.join(ROOT, "csrc"), DRIVER, "-o", out], check=True))
    lib = ctypes.CDLL(lib_path)
    lib.fastrnn_emulate.restype = ctypes.c_int
    lib.fastrnn_emulate.argtypes = [ctypes.c_int] * 7 + [ctypes.c_void_p] + [ctypes.c_int] * 6 + [
        ctypes.POINTER(ctypes.c_void_p)]
    lib.fastrnn_plan_blocks.restype = ctypes.c_int
    lib.fastrnn_plan_blocks.argtypes = [ctypes.c_int] * 4 + [ctypes.c_longlong] + [ctypes.c_int] * 2
    lib.fastrnn_barrier_stress.restype = ctypes.c_longlong
    lib.fastrnn_barrier_stress.argtypes = [ctypes.c_int] * 4
    _lib = lib
    return lib


def packed_offsets(batch_sizes):
    """Each time step's first packed row: the exclusive prefix sum of batch_sizes."""
    offsets = [0]
    for b in batch_sizes[:-1]:
        offsets.append(offsets[-1] + int(b))
    return offsets


def schedule(batch_sizes, device="cpu"):
    """The kernels' schedule, int32 [2*T]: batch sizes, then packed_offsets."""
    sizes = [int(b) for b in batch_sizes]
    return torch.tensor(sizes + packed_offsets(sizes), dtype=torch.int32, device=device)


def emulate(mode, backward, batch_sizes, hidden, reverse, tensors, *, blocks, threads=64,
            mma=False, threaded=False, skip_barrier=False, delay_us=0):
    """Runs one persistent launch on the host. tensors: name -> contiguous tensor (float32
    or float64, all alike); outputs must be allocated (and poisoned) by the caller.
    mma: run the product the way the bf16/fp16 kernels do (tensor-core tiling, with the
    host twin of the tile product), else the float32 kernels' FFMA way."""
    dtype = next(iter(tensors.values())).dtype
    assert dtype in (torch.float32, torch.float64)
    for name, t in tensors.items():
        assert name in NAMES and t.is_contiguous() and t.dtype == dtype, name
    sched = schedule(batch_sizes)
    ptrs = (ctypes.c_void_p * len(NAMES))(
        *[tensors[n].data_ptr() if n in tensors else None for n in NAMES])
    return library().fastrnn_emulate(
        cell_kind(mode), dtype_code(dtype), int(backward), int(batch_sizes[0]),
        hidden, len(batch_sizes), int(reverse), sched.data_ptr(), blocks, threads, int(mma),
        int(threaded), int(skip_barrier), delay_us, ptrs)
