"""What ran the benchmark: device name, library versions, source commit, date, GEMM peak;
and the allocator state every timing starts from (settle_allocator)."""

import datetime
import os
import platform
import subprocess

import torch

from .timing import interleaved, timer_for


def device_name(device):
    """CPU model name (from /proc/cpuinfo) or the CUDA device's name."""
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _git(*args):
    """Output of a git command in the tree holding the fastrnn package, or None."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        out = subprocess.run(["git", "-C", root, *args], capture_output=True, text=True,
                             timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def source_commit():
    """FASTRNN_COMMIT if set (for a copy of the sources whose .git, if any, is not theirs),
    else git rev-parse HEAD of the tree holding the fastrnn package, else None."""
    named = os.environ.get("FASTRNN_COMMIT")
    return named or (_git("rev-parse", "HEAD") or "").strip() or None


def source_dirty():
    """Whether tracked files differ from that commit (None without git)."""
    if os.environ.get("FASTRNN_COMMIT"):
        return None  # the copy's .git, if any, says nothing about these sources
    out = _git("status", "--porcelain", "--untracked-files=no")
    return None if out is None else bool(out.strip())


def driver_version(device):
    """The NVIDIA driver's version (nvidia-smi) on CUDA, else None."""
    if not str(device).startswith("cuda"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    return lines[0] if out.returncode == 0 and lines else None


def cudnn_version():
    """torch.backends.cudnn.version() when CUDA and cuDNN are usable, else None."""
    if not torch.cuda.is_available() or not torch.backends.cudnn.is_available():
        return None
    return torch.backends.cudnn.version()


def gemm_size(device, dtype):
    """The matmul size used for the peak: 8192 on CUDA; on the CPU 2048, or 1024 for
    half precision (often emulated, hence slow)."""
    if str(device).startswith("cuda"):
        return 8192
    return 1024 if dtype in (torch.bfloat16, torch.float16) else 2048


# glibc's malloc serves a request from its mmap threshold up (128 KB when a process starts)
# with fresh pages, which fault at first touch, and raises the threshold to the size of each
# such block the program frees (up to 32 MB): once a program has freed a large tensor, as
# any training or serving loop soon has, tensors below that size reuse freed memory. A
# layer that allocates its buffers on every call (torch.nn's do) runs far slower before
# that: PyTorch's word_language_model LSTM (2 layers, I=H=200, B=20, T=35, dropout 0.2),
# forward+backward, 2 threads, AMD EPYC, ms: torch.nn 25.4-27.3 in a fresh process, 17.5-18.1
# after one 16 MB block was freed; fastrnn 21.3-22.0 and 18.2-18.4.
SETTLED_ALLOCATOR_BYTES = 16 << 20


def settle_allocator(nbytes=SETTLED_ALLOCATOR_BYTES):
    """Allocates, touches and frees nbytes on the CPU, so that timings start from the state
    of a program that has freed a tensor of that size (SETTLED_ALLOCATOR_BYTES: as large as
    the GEMM peak's [2048, 2048] float32 matrices, which every CPU run of the grids
    measured first)."""
    torch.empty(nbytes, dtype=torch.uint8).fill_(0)


def gemm_peak_gflops(device="cpu", dtype=torch.float32, n=None, repeats=5):
    """Achieved GFLOP/s of an n x n x n matmul (median of `repeats`, after a warm-up):
    a practical ceiling for the RNN's GEMMs on this device, dtype and thread count."""
    n = n or gemm_size(device, dtype)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    timing = interleaved({"mm": lambda _: torch.mm(a, b)}, repeats=repeats, warmup=2,
                         timer=timer_for(device))
    return 2.0 * n ** 3 / timing.median["mm"] / 1e9


def describe(device):
    """The results document's header fields (all but gemm_peak_gflops and cases)."""
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": cudnn_version(),
        "driver": driver_version(device),
        "commit": source_commit(),
        "commit_dirty": source_dirty(),
        "date": datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(
            timespec="seconds"),
        "threads": torch.get_num_threads(),
        "torch_device": str(device),
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
    }
