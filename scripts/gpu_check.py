"""Everything fastrnn checks on a GPU, in one call, in order of value:

    python3 scripts/gpu_check.py OUT_DIR [--budget SECONDS] [--only STEP ...] [--plan]

Run from the repository root on a machine with an NVIDIA GPU, nvcc, and a CUDA build of
torch installed for `python3` (no package registry needed: nothing is downloaded). It
builds fastrnn in place against that torch for the present GPU only, then runs the
standalone device check (tests/native/device_check.cu: tensor-core fragments, grid barrier),
smoke runs of every persistent kernel, the GPU tests (the ops against the CPU float64 ops
first, then the persistent kernels, the modules, the rest of the CUDA behaviour), one
compute-sanitizer memcheck of the persistent kernels, and the benchmarks against cuDNN
(`--grid anchors`, then `--grid gpu`; backends auto, the library's own choice, and
persistent, the persistent kernels forced) into OUT_DIR/bench-<grid>/results.json; then
racecheck and the per-step path's sanitizer runs.

Each step runs under its own timeout (a broken grid barrier hangs) and the whole run under
--budget seconds; a failing step stops nothing. Each step's output goes to
OUT_DIR/<step>.log, and a summary table (step, result, seconds) is printed last and written
to OUT_DIR/summary.txt. Exit status: 0 when every step passed. --plan prints the steps,
their timeouts and commands without running anything.
"""

import argparse
import dataclasses
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# The first GPU tests: the CUDA ops against the CPU ops in float64, gradcheck, opcheck.
OPS_TESTS = ("ops_cuda_match_cpu or more_rows or gradcheck_op_cuda or opcheck_cuda "
             "or fused_path")
# CPU-only test files that the GPU steps leave out: the emulations, the build check, and the
# export tests (on CPU tensors; the ONNX ones need the onnx packages, which the GPU machine
# lacks).
CPU_ONLY = ("test_cuda_emulation.py", "test_cuda_build.py", "test_persistent_emulation.py",
            "test_export_onnx.py", "test_export_program.py")
SMALL_RUN = ["--batch", "3", "--hidden", "40", "--steps", "4", "--reverse"]


@dataclasses.dataclass
class Step:
    name: str
    timeout: int  # seconds
    command: list
    env: dict = dataclasses.field(default_factory=dict)
    with_next: bool = False  # runs concurrently with the step after it


def pytest_command(*args, workers=0):
    """pytest with per-test timeouts and parallel workers where those plugins exist."""
    command = [PY, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *args]
    if has_module("pytest_timeout"):  # a hung test fails alone, within its step's timeout
        command += ["--timeout", "120"]
    if workers and has_module("xdist"):
        command += ["-n", str(workers)]
    return command


def has_module(name):
    return importlib.util.find_spec(name) is not None


def gpu_arch():
    """The present GPU's nvcc arch and TORCH_CUDA_ARCH_LIST entry, e.g. ('90a', '9.0a') on
    an H100 (sm_90a: Hopper's own instructions); (None, None) when torch sees no GPU."""
    try:
        import torch
        major, minor = torch.cuda.get_device_capability()
    except (ImportError, RuntimeError, AssertionError):
        return None, None
    suffix = "a" if (major, minor) == (9, 0) else ""
    return f"{major}{minor}{suffix}", f"{major}.{minor}{suffix}"


def steps(out_dir):
    arch, arch_list = gpu_arch()
    target = f"-gencode=arch=compute_{arch},code=sm_{arch}" if arch else "-arch=native"
    sanitizer = ["compute-sanitizer", "--error-exitcode", "99", "--tool"]
    kernels = [PY, "tests/persistent_gpu.py", "run", "--mode", "all", "--dtype", "all"]
    bench = [PY, "-X", "faulthandler", "-m", "fastrnn.bench", "--device", "cuda",
             "--min-time", "0.1", "--backend", "auto", "step", "persistent"]
    gpu_tests = [x for name in CPU_ONLY for x in ("--ignore", f"tests/{name}")]
    gpu_tests += ["--ignore", "tests/test_cuda.py", "--ignore", "tests/test_persistent_gpu.py"]
    return [
        Step("environment", 60, ["bash", "-c", "nvidia-smi; nvcc --version; c++ --version; "
                                 "env | grep -E '^(CC|CXX|LDFLAGS|CFLAGS|CXXFLAGS)=' ; "
                                 "compute-sanitizer --version | head -2; " + PY + " -c "
                                 "'import torch; print(torch.__version__, torch.version.cuda, "
                                 "torch.backends.cudnn.version(), torch.cuda.get_device_name())'"]),
        Step("build", 420, [PY, "-m", "pip", "install", "--no-build-isolation", "--no-deps",
                            "--no-index", "-v", "-e", "."],
             env={"TORCH_CUDA_ARCH_LIST": arch_list or "", "MAX_JOBS": str(os.cpu_count() or 4)},
             with_next=True),
        Step("device-check", 120, ["bash", "-c", "mkdir -p build/gpu_check && nvcc -O3 "
                                   f"-std=c++17 {target} -I csrc tests/native/device_check.cu "
                                   "-o build/gpu_check/device_check && "
                                   "build/gpu_check/device_check"], with_next=True),
        Step("kernel-library", 240, [PY, "tests/persistent_gpu.py", "build"]),
        Step("persistent-smoke", 120, kernels + ["--batch", "16", "--hidden", "512",
                                                 "--steps", "32"]),
        # Correctness runs side by side; only the benchmarks need the GPU to themselves.
        Step("tests-ops", 240, pytest_command("tests/test_linkage.py", "tests/test_cuda.py",
                                              "-k", f"linkage or {OPS_TESTS}"),
             with_next=True),
        Step("tests-persistent", 240, pytest_command("tests/test_persistent_gpu.py", "-k",
                                                     "not compute_sanitizer"), with_next=True),
        Step("memcheck-persistent", 240, sanitizer + ["memcheck"] + kernels + SMALL_RUN),
        Step("tests-modules", 420, pytest_command("tests", *gpu_tests, "-k",
                                                  "cuda or test_persistent_modules_gpu",
                                                  workers=10), with_next=True),
        Step("tests-cuda", 300, pytest_command("tests/test_cuda.py", "-k",
                                               f"not compute_sanitizer and not ({OPS_TESTS})")),
        Step("bench-anchors", 420, bench + ["--grid", "anchors", "--out",
                                            os.path.join(out_dir, "bench-anchors")]),
        Step("bench-gpu", 600, bench + ["--grid", "gpu", "--out",
                                        os.path.join(out_dir, "bench-gpu")]),
        Step("racecheck-persistent", 240, sanitizer + ["racecheck"] + kernels + SMALL_RUN,
             with_next=True),
        Step("sanitize-per-step", 480, pytest_command("tests/test_cuda.py", "-k",
                                                      "compute_sanitizer")),
    ]


def verdict_of(log_text, returncode):
    """'pass'/'FAIL' plus pytest's counts (the last summary line) when the log has them."""
    counts = re.findall(r"^=*\s*(\d+ (?:passed|failed|error|skipped).*?)(?: in [\d.]+s.*)?=*$",
                        log_text, re.MULTILINE)
    result = "pass" if returncode == 0 else f"FAIL (exit {returncode})"
    return result + (f": {counts[-1].strip()}" if counts else "")


def start(step, out_dir):
    log = open(os.path.join(out_dir, f"{step.name}.log"), "w")
    log.write(f"$ {shlex.join(step.command)}\n")
    log.flush()
    env = dict(os.environ, PYTHONUNBUFFERED="1", **step.env)
    try:
        proc = subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    except OSError as error:  # e.g. a tool that is not installed: the step fails, no more
        log.write(f"cannot start: {error}\n")
        proc = None
    return proc, log, time.monotonic()


def finish(step, running, deadline, out_dir):
    """Waits for a started step (killing its process group at its timeout); its row."""
    proc, log, began = running
    if proc is None:
        log.close()
        return step.name, "FAIL (cannot start)", 0.0
    limit = min(began + step.timeout, deadline)
    try:
        returncode = proc.wait(timeout=max(0.0, limit - time.monotonic()))
        timed_out = False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and everything it started
        except ProcessLookupError:  # it ended just now
            pass
        returncode, timed_out = proc.wait(), True
    seconds = time.monotonic() - began
    log.close()
    with open(os.path.join(out_dir, f"{step.name}.log"), errors="replace") as f:
        text = f.read()
    result = (f"TIMEOUT after {seconds:.0f} s" if timed_out else verdict_of(text, returncode))
    return step.name, result, seconds


def run_all(step_list, out_dir, budget):
    """Runs the steps (groups joined by with_next concurrently); returns the summary rows."""
    deadline = time.monotonic() + budget
    rows, group = [], []
    for step in step_list:
        group.append(step)
        if step.with_next:
            continue
        if deadline - time.monotonic() < 10:
            rows += [(s.name, "skipped: out of budget", 0.0) for s in group]
        else:
            running = [(s, start(s, out_dir)) for s in group]
            rows += [finish(s, r, deadline, out_dir) for s, r in running]
        group = []
    return rows


def summary(rows):
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'step':<{width}}  {'seconds':>7}  result", "-" * (width + 40)]
    lines += [f"{name:<{width}}  {seconds:7.0f}  {result}" for name, result, seconds in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--budget", type=float, default=480,
                        help="seconds for the whole run (default 480); steps that cannot "
                             "start in time are skipped")
    parser.add_argument("--only", nargs="+", metavar="STEP", help="run only these steps")
    parser.add_argument("--plan", action="store_true", help="print the steps and exit")
    args = parser.parse_args(argv)
    out_dir = os.path.abspath(args.out_dir)
    step_list = steps(out_dir)
    if args.only:
        unknown = set(args.only) - {s.name for s in step_list}
        if unknown:
            parser.error(f"unknown steps {sorted(unknown)}; "
                         f"known: {[s.name for s in step_list]}")
        # a step keeps running beside its next one only if that one is selected too
        step_list = [dataclasses.replace(s, with_next=s.with_next and n.name in args.only)
                     for s, n in zip(step_list, step_list[1:] + step_list[:1])
                     if s.name in args.only]
    if args.plan:
        for s in step_list:
            env = " ".join(f"{k}={shlex.quote(v)}" for k, v in s.env.items())
            print(f"{s.name:<22} {s.timeout:4d} s{'  (with the next)' if s.with_next else ''}"
                  f"\n    {env + ' ' if env else ''}{shlex.join(s.command)}")
        return 0
    os.makedirs(out_dir, exist_ok=True)
    rows = run_all(step_list, out_dir, args.budget)
    table = summary(rows)
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write(table + "\n")
    print(table)
    return 0 if all(r.startswith("pass") for _, r, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
