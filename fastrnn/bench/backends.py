"""Which fastrnn backends a benchmark times, and which libraries run on a device.

Backends (BACKENDS): fastrnn is timed once per backend asked for, each under its own
FASTRNN_PERSISTENT setting: auto (the library's own choice, FASTRNN_PERSISTENT=auto), step
(the per-step kernels, =0) and persistent (the persistent kernels forced, =1). step and
persistent choose between CUDA kernels; the CPU has one backend, auto. All backends and the
baseline are timed interleaved in the same rounds; the setting is made around each timed
sample, outside the timed region (a few microseconds, against calls of microseconds).
"""

import contextlib
import os

import torch


def baseline_name(device):
    """'torch-cpu' on the CPU; 'cudnn' on CUDA with cuDNN enabled, else 'torch-cuda'."""
    if not str(device).startswith("cuda"):
        return "torch-cpu"
    usable = torch.backends.cudnn.is_available() and torch.backends.cudnn.enabled
    return "cudnn" if usable else "torch-cuda"


def backend_name(device):
    """Which fastrnn kernel runs on this device."""
    return "cuda" if str(device).startswith("cuda") else "cpu-fused"


# On CUDA each op runs either the per-step kernels or the persistent ones, as the
# environment variable FASTRNN_PERSISTENT selects (see the README's GPU section); the ops
# read it at every call. {backend: FASTRNN_PERSISTENT value}.
BACKENDS = {"auto": "auto", "step": "0", "persistent": "1"}
# The backends that exist on the CPU (its kernels ignore FASTRNN_PERSISTENT).
CPU_BACKENDS = ("auto",)
# Timed by default: the library's own choice and, on CUDA, the per-step path beside it
# (auto takes the persistent kernels where csrc/cuda/persistent/persistent.h's
# auto_prefers says they are faster).
DEFAULT_BACKENDS = {"cpu": ("auto",), "cuda": ("auto", "step")}
# Fields each backend that ran gets, as <backend>_<field>; one that refused the shape gets
# <backend>_skipped (the reason) instead.
BACKEND_FIELDS = ("ms", "ms_min", "speedup", "us_per_step", "gflops", "pct_peak", "parity",
                  "parity_max_abs_err")
# How a forced kernel says it does not take a shape (csrc/cuda/persistent/ops_bridge.h).
DECLINED = "FASTRNN_PERSISTENT=1, but"


class BackendsRefused(RuntimeError):
    """Every backend asked for refused the case's shape (the suite records it skipped)."""


def default_backends(device):
    """The backends timed when none are named: DEFAULT_BACKENDS for the device's type."""
    return DEFAULT_BACKENDS["cuda" if str(device).startswith("cuda") else "cpu"]


def check_backends(backends, device):
    """The backends, duplicates dropped, order kept; ValueError for an unknown name or one
    the device does not have (step and persistent exist only on CUDA)."""
    backends = list(dict.fromkeys(backends))
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; expected "
                         f"{', '.join(BACKENDS)}")
    if not backends:
        raise ValueError("no backend to time")
    if not str(device).startswith("cuda"):
        cuda_only = [b for b in backends if b not in CPU_BACKENDS]
        if cuda_only:
            raise ValueError(
                f"backend {' '.join(cuda_only)} does not apply to the CPU: it chooses between "
                "the CUDA kernels (FASTRNN_PERSISTENT), and the CPU has one backend, auto")
    return backends


@contextlib.contextmanager
def persistent_setting(value):
    """FASTRNN_PERSISTENT=value for the duration (the ops read it at every call)."""
    saved = os.environ.get("FASTRNN_PERSISTENT")
    os.environ["FASTRNN_PERSISTENT"] = value
    try:
        yield
    finally:
        if saved is None:
            del os.environ["FASTRNN_PERSISTENT"]
        else:
            os.environ["FASTRNN_PERSISTENT"] = saved


def forced(run, value):
    """run(index) under FASTRNN_PERSISTENT=value."""
    def run_forced(index):
        with persistent_setting(value):
            return run(index)
    return run_forced
