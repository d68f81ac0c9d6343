"""Compile-checks the CUDA code without a GPU and reports each kernel's resources.

Every .cu under csrc/cuda/ (recursively) is compiled with nvcc for sm_80 and sm_90a with
-Xptxas -v, warnings as errors and the half/bfloat16 defines torch's CUDAExtension uses;
every host-glue .cpp under csrc/cuda/ is compiled with the host compiler (-fsyntax-only)
against the installed torch's headers (a CPU-only torch is enough) and the CUDA headers, and
so are the C entry points that only the GPU tests build (tests/native/persistent_capi.cpp).
Fails (exit 1) on any error or warning, on a kernel that spills registers, or on a kernel
compiled for one arch only. Writes into build/cuda-check/ (or --out):
  ptxas.txt   a table: arch, registers, spill stores/loads, stack, shared memory, kernel
  ptxas.json  the same per kernel, plus the sources checked (read by tests/test_cuda_build.py)
  logs/       each compiler's full output

Run it with the python that has torch: python scripts/check_cuda.py [--jobs N]
"""

import argparse
import concurrent.futures
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHES = ("sm_80", "sm_90a")
GENCODE = ["-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90a,code=sm_90a"]
# What torch's CUDAExtension passes to nvcc, so the check sees what the build sees.
TORCH_NVCC_DEFINES = ["-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
                      "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__"]
NVCC_FLAGS = ["-O3", "-std=c++17", "-Xptxas", "-v", "-Werror", "all-warnings",
              "-Xcompiler", "-Wall,-Wextra,-Werror"] + TORCH_NVCC_DEFINES + GENCODE
HOST_FLAGS = ["-fsyntax-only", "-std=c++20", "-Wall", "-Wextra", "-Werror"]


def cuda_sources():
    """(kernel sources, host glue sources) under csrc/cuda, relative to the root, sorted."""
    found = lambda ext: sorted(os.path.relpath(p, ROOT) for p in glob.glob(
        os.path.join(ROOT, "csrc", "cuda", "**", f"*.{ext}"), recursive=True))
    return found("cu"), found("cpp")


# Native test sources that only a GPU machine builds, checked here so that CI sees them.
NATIVE_SOURCES = ["tests/native/persistent_capi.cpp"]


def find_nvcc():
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and os.path.exists(os.path.join(cuda_home, "bin", "nvcc")):
        return os.path.join(cuda_home, "bin", "nvcc")
    return shutil.which("nvcc")


def cuda_include_dir(nvcc):
    """The directory with cuda_runtime_api.h, as nvcc itself reports it."""
    dry = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
                         capture_output=True, text=True)
    candidates = re.findall(r'INCLUDES="-I([^"]+)"', dry.stderr + dry.stdout)
    candidates.append(os.path.join(os.path.dirname(os.path.realpath(nvcc)), "..", "include"))
    for path in candidates:
        if os.path.exists(os.path.join(path, "cuda_runtime_api.h")):
            return os.path.normpath(path)
    raise SystemExit(f"check_cuda: no cuda_runtime_api.h found next to {nvcc}")


def parse_ptxas(text, source):
    """One dict per (kernel, arch) from nvcc -Xptxas -v output."""
    kernels, current = [], None
    for line in text.splitlines():
        match = re.search(r"Compiling entry function '(\S+)' for '(\w+)'", line)
        if match:
            current = {"source": source, "kernel": match.group(1), "arch": match.group(2),
                       "registers": 0, "spill_stores": 0, "spill_loads": 0, "stack": 0,
                       "smem": 0}
            kernels.append(current)
            continue
        if current is None:
            continue
        match = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                          r"(\d+) bytes spill loads", line)
        if match:
            current["stack"], current["spill_stores"], current["spill_loads"] = map(
                int, match.groups())
        match = re.search(r"Used (\d+) registers", line)
        if match:
            current["registers"] = int(match.group(1))
            smem = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(smem.group(1)) if smem else 0
    return kernels


def demangle(names):
    if not shutil.which("c++filt") or not names:
        return names
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    lines = out.stdout.splitlines()
    return lines if len(lines) == len(names) else names


def log_path(out, source):
    return os.path.join(out, "logs", source.replace(os.sep, "__") + ".log")


def run(cmd, log):
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n\n" + proc.stdout + proc.stderr)
    return proc, time.monotonic() - start


def compile_cu(nvcc, out, source):
    obj = os.path.join(out, "obj", source.replace(os.sep, "__") + ".o")
    proc, seconds = run([nvcc, "-c", source, "-o", obj] + NVCC_FLAGS, log_path(out, source))
    return source, proc, seconds, parse_ptxas(proc.stdout + proc.stderr, source)


def check_glue(cxx, includes, out, source, own=()):
    cmd = [cxx] + HOST_FLAGS + [f for path in includes for f in ("-isystem", path)]
    cmd += [f for path in own for f in ("-I", path)] + [source]
    proc, seconds = run(cmd, log_path(out, source))
    return source, proc, seconds, []


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "build", "cuda-check"))
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("MAX_JOBS", "2")))
    args = parser.parse_args()
    nvcc = find_nvcc()
    if nvcc is None:
        print("check_cuda: nvcc not found (set CUDA_HOME or put nvcc on PATH)", file=sys.stderr)
        return 1
    from torch.utils.cpp_extension import include_paths  # the installed torch's headers

    kernel_sources, glue_sources = cuda_sources()
    out = args.out
    for sub in ("obj", "logs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    includes = include_paths() + [sysconfig.get_paths()["include"], cuda_include_dir(nvcc)]
    cxx = os.environ.get("CXX", "c++")
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        jobs = [pool.submit(compile_cu, nvcc, out, s) for s in kernel_sources]
        jobs += [pool.submit(check_glue, cxx, includes, out, s) for s in glue_sources]
        jobs += [pool.submit(check_glue, cxx, includes, out, s, [os.path.join(ROOT, "csrc")])
                 for s in NATIVE_SOURCES]
        results = [job.result() for job in jobs]
    elapsed = time.monotonic() - start

    failures, kernels = [], []
    for source, proc, seconds, found in results:
        status = "ok" if proc.returncode == 0 else "FAILED"
        print(f"check_cuda: {status:6} {source} ({seconds:.1f} s)")
        if proc.returncode != 0:
            failures.append(f"{source}: compiler exit {proc.returncode}, see "
                            f"{os.path.relpath(log_path(out, source), ROOT)}")
            print((proc.stdout + proc.stderr)[-4000:], file=sys.stderr)
        kernels += found
    for kernel, name in zip(kernels, demangle([k["kernel"] for k in kernels])):
        kernel["name"] = name
    for k in kernels:
        if k["spill_stores"] or k["spill_loads"]:
            failures.append(f"{k['source']}: {k['name']} spills on {k['arch']} "
                            f"({k['spill_stores']} B stores, {k['spill_loads']} B loads)")
    for source in kernel_sources:
        per_arch = {a: {k["kernel"] for k in kernels if k["source"] == source and k["arch"] == a}
                    for a in ARCHES}
        if any(per_arch[a] != per_arch[ARCHES[0]] for a in ARCHES):
            failures.append(f"{source}: kernels differ between {', '.join(ARCHES)}")

    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    report = {"nvcc": version.strip().splitlines()[-1] if version.strip() else "",
              "arches": list(ARCHES), "kernel_sources": kernel_sources,
              "glue_sources": glue_sources, "native_sources": NATIVE_SOURCES,
              "seconds": round(elapsed, 1),
              "ok": not failures, "failures": failures, "kernels": kernels}
    with open(os.path.join(out, "ptxas.json"), "w") as f:
        json.dump(report, f, indent=1)
    with open(os.path.join(out, "ptxas.txt"), "w") as f:
        f.write(f"# {report['nvcc']}; {len(kernels)} kernel builds; {elapsed:.0f} s\n")
        f.write(f"{'arch':7} {'regs':>4} {'spill_st':>8} {'spill_ld':>8} {'stack':>5} "
                f"{'smem':>5}  kernel\n")
        for k in sorted(kernels, key=lambda k: (k["source"], k["name"], k["arch"])):
            f.write(f"{k['arch']:7} {k['registers']:4} {k['spill_stores']:8} "
                    f"{k['spill_loads']:8} {k['stack']:5} {k['smem']:5}  {k['name']}\n")
    print(f"check_cuda: {len(kernel_sources)} .cu, {len(glue_sources)} glue .cpp, "
          f"{len(NATIVE_SOURCES)} native test .cpp, "
          f"{len(kernels)} kernel builds in {elapsed:.0f} s; report in "
          f"{os.path.relpath(os.path.join(out, 'ptxas.txt'), ROOT)}")
    for failure in failures:
        print(f"check_cuda: FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
