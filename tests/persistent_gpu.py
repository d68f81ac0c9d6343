"""Runs the persistent GPU kernels from Python (ctypes over tests/native/persistent_capi.cpp,
compiled with nvcc for the current GPU into build/persistent_gpu/), for the GPU tests and
compute-sanitizer.

    python tests/persistent_gpu.py build
    python tests/persistent_gpu.py run --mode LSTM --dtype bf16 --batch 4 --hidden 64 --steps 5
    python tests/persistent_gpu.py run --mode all --dtype all

To time the persistent kernels, use the benchmark, which times them through the modules
against cuDNN, e.g. for the LSTM goal shape:

    python -m fastrnn.bench --cell LSTM --T 1024 --B 16 --H 768 --dtype bfloat16 \
        --backend auto step persistent
"""

import argparse
import ctypes
import os
import shutil
import subprocess
import sys

import torch

from helpers.persistent_host import cached_build, cell_kind, dtype_code, schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "csrc", "cuda", "persistent")
MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU", "PEEPHOLE_LSTM", "COUPLED_LSTM",
         "PEEPHOLE_COUPLED_LSTM")
DTYPE_NAMES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
NAMES = ("gx", "h0", "c0", "w_hh", "b_hh", "y", "hn", "cn", "saved", "grad_y", "grad_hn",
         "grad_cn", "grad_gx", "grad_gh", "grad_h0", "grad_c0", "unit_params")

_lib = None


def nvcc():
    for path in (shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if path and os.path.exists(path):
            return path
    return None


def library():
    global _lib
    if _lib is not None:
        return _lib
    major, minor = torch.cuda.get_device_capability()
    arch = f"{major}{minor}" + ("a" if (major, minor) == (9, 0) else "")
    capi = os.path.join(ROOT, "tests", "native", "persistent_capi.cpp")
    sources = [capi, os.path.join(ROOT, "tests", "native", "cell_kinds.h")] + [
        os.path.join(root, name) for root, _, files in sorted(os.walk(os.path.join(ROOT, "csrc")))
        for name in sorted(files) if name.endswith((".h", ".cu", ".cpp"))]
    path = cached_build("persistent_gpu", sources, arch, lambda out: subprocess.run(
        [nvcc(), "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC",
         f"-gencode=arch=compute_{arch},code=sm_{arch}", "-I", os.path.join(ROOT, "csrc"),
         os.path.join(SRC, "persistent.cu"), capi, "-o", out], check=True))
    lib = ctypes.CDLL(path)
    lib.fastrnn_persistent_run.restype = ctypes.c_int
    lib.fastrnn_persistent_run.argtypes = [ctypes.c_int] * 7 + [ctypes.c_void_p] * 3 + [
        ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
    lib.fastrnn_persistent_choose.restype = ctypes.c_int
    lib.fastrnn_persistent_choose.argtypes = [ctypes.c_int] * 6
    lib.fastrnn_persistent_last_error.restype = ctypes.c_int
    lib.fastrnn_persistent_runtime_status.restype = ctypes.c_int
    _lib = lib
    return lib


def runtime_problem():
    """None when the kernels built here can run, else why not (e.g. nvcc's CUDA runtime
    needs a newer driver than the one installed)."""
    status = library().fastrnn_persistent_runtime_status()
    return None if status == 0 else f"the CUDA runtime of nvcc's build reports error {status}"


class Runner:
    """The device schedule and barrier word of one recurrence, uploaded once."""

    def __init__(self, mode, batch_sizes, hidden, reverse, device="cuda"):
        self.mode, self.bs, self.hidden, self.reverse = mode, list(batch_sizes), hidden, reverse
        self.sched = schedule(batch_sizes, device)
        self.barrier = torch.zeros(1, dtype=torch.int32, device=device)

    def launch(self, backward, tensors):
        """tensors: name -> contiguous CUDA tensor of one dtype. Returns True if launched."""
        dtype = next(iter(tensors.values())).dtype
        ptrs = (ctypes.c_void_p * len(NAMES))(
            *[tensors[n].data_ptr() if n in tensors else None for n in NAMES])
        rc = library().fastrnn_persistent_run(
            cell_kind(self.mode), dtype_code(dtype), int(backward), self.bs[0], self.hidden,
            len(self.bs),
            int(self.reverse), self.sched.data_ptr(), self.barrier.data_ptr(),
            torch.cuda.current_stream().cuda_stream, torch.cuda.current_device(), ptrs)
        error = library().fastrnn_persistent_last_error()
        assert error == 0, f"CUDA error {error} in the persistent launch"
        return rc == 1

    def forward(self, ins, outs=None):
        """ins: gx, h0, (c0), w_hh, (b_hh), (unit_params) on the GPU. Returns the outputs
        (new, NaN-filled before the launch, unless given), or None if the launcher declined."""
        from helpers.persistent_cases import SAVED, poisoned  # needs fastrnn's extension
        if outs is not None:
            return outs if self.launch(False, {**ins, **outs}) else None
        N, B, H, x = sum(self.bs), self.bs[0], self.hidden, ins["gx"]
        outs = {"y": poisoned(x, N, H), "hn": poisoned(x, B, H)}
        if self.mode.endswith("LSTM"):
            outs["cn"] = poisoned(x, B, H)
        if SAVED[self.mode]:
            outs["saved"] = poisoned(x, N, SAVED[self.mode] * H)
        return outs if self.launch(False, {**ins, **outs}) else None

    def backward(self, ins, outs=None):
        """ins: grad_y, grad_hn, (grad_cn), h0, (c0), w_hh, (unit_params), y, (saved).
        Outputs, or None."""
        from helpers.persistent_cases import GATES, poisoned
        if outs is not None:
            return outs if self.launch(True, {**ins, **outs}) else None
        N, B, H, G, x = sum(self.bs), self.bs[0], self.hidden, GATES[self.mode], ins["grad_y"]
        outs = {"grad_gx": poisoned(x, N, G * H), "grad_h0": poisoned(x, B, H)}
        if self.mode == "GRU":
            outs["grad_gh"] = poisoned(x, N, G * H)
        if self.mode.endswith("LSTM"):
            outs["grad_c0"] = poisoned(x, B, H)
        return outs if self.launch(True, {**ins, **outs}) else None


def random_inputs(mode, batch_sizes, hidden, dtype, device="cuda", seed=0):
    from helpers.persistent_cases import random_tensors
    g = torch.Generator(device="cpu").manual_seed(seed)
    ins, grads = random_tensors(mode, batch_sizes, hidden, g, hidden ** -0.5)
    convert = lambda tensors: {k: v.to(dtype).to(device) for k, v in tensors.items()}
    return convert(ins), convert(grads)


def run_once(args):
    """One small forward and backward of each --mode and --dtype asked for (`all`: every
    one), for compute-sanitizer and smoke runs."""
    modes = list(MODES) if args.mode == "all" else [args.mode]
    dtypes = list(DTYPE_NAMES) if args.dtype == "all" else [args.dtype]
    failures = 0
    for mode in modes:
        for dtype in dtypes:
            ok = run_one(mode, DTYPE_NAMES[dtype], args)
            print(f"{mode} {dtype}: {'finite' if ok else 'NOT FINITE'}", flush=True)
            failures += not ok
    return 1 if failures else 0


def run_one(mode, dtype, args):
    # Packed: rows drop off along the sequence (e.g. batch 3, 4 steps: 3, 3, 2, 2).
    bs = sorted((max(1, args.batch - t // 2) for t in range(args.steps)), reverse=True)
    runner = Runner(mode, bs, args.hidden, args.reverse)
    ins, grads = random_inputs(mode, bs, args.hidden, dtype)
    fwd = runner.forward(ins)
    assert fwd is not None, "declined"
    back = {**grads, "y": fwd["y"],
            **{k: v for k, v in ins.items() if k in ("h0", "c0", "w_hh", "unit_params")}}
    if "saved" in fwd:
        back["saved"] = fwd["saved"]
    g = runner.backward(back)
    assert g is not None, "declined"
    torch.cuda.synchronize()
    return all(bool(torch.isfinite(t).all()) for t in list(fwd.values()) + list(g.values()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["build", "run"])
    parser.add_argument("--mode", default="LSTM", choices=list(MODES) + ["all"])
    parser.add_argument("--dtype", default="bf16", choices=list(DTYPE_NAMES) + ["all"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--steps", type=int, default=1024)
    parser.add_argument("--reverse", action="store_true")
    args = parser.parse_args()
    if args.command == "build":  # only the library (needs no fastrnn extension)
        print(library()._name)
        return 0
    return run_once(args)


if __name__ == "__main__":
    sys.exit(main())
