"""Which fastrnn backends a benchmark times, and which libraries run on a device.

Backends (BACKENDS): fastrnn is timed once per backend asked for, each under its own
environment settings, which the ops read at every call: auto (the library's own choice,
FASTRNN_PERSISTENT=auto and FASTRNN_CPU_FUSED unset), on CUDA step (the per-step kernels,
FASTRNN_PERSISTENT=0) and persistent (the persistent kernels forced, =1), on the CPU fused
(the fused walks wherever a cell has one, FASTRNN_CPU_FUSED=1) and blas (the BLAS walk,
FASTRNN_CPU_FUSED=0). All backends and the baseline are timed interleaved in the same
rounds; the settings are made around each timed sample, outside the timed region (a few
microseconds, against calls of microseconds).
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


# {backend: {environment variable: value, or None for unset}}. On CUDA each op runs either
# the per-step kernels or the persistent ones, as FASTRNN_PERSISTENT selects (see the
# README's GPU section); on the CPU a recurrence takes the fused walk or the BLAS walk as
# FASTRNN_CPU_FUSED forces (see How it works). Each backend sets both.
BACKENDS = {
    "auto": {"FASTRNN_PERSISTENT": "auto", "FASTRNN_CPU_FUSED": None},
    "step": {"FASTRNN_PERSISTENT": "0", "FASTRNN_CPU_FUSED": None},
    "persistent": {"FASTRNN_PERSISTENT": "1", "FASTRNN_CPU_FUSED": None},
    "fused": {"FASTRNN_PERSISTENT": "auto", "FASTRNN_CPU_FUSED": "1"},
    "blas": {"FASTRNN_PERSISTENT": "auto", "FASTRNN_CPU_FUSED": "0"},
}
# The backends of each device type.
DEVICE_BACKENDS = {"cpu": ("auto", "fused", "blas"), "cuda": ("auto", "step", "persistent")}
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


def _device_type(device):
    return "cuda" if str(device).startswith("cuda") else "cpu"


def default_backends(device):
    """The backends timed when none are named: DEFAULT_BACKENDS for the device's type."""
    return DEFAULT_BACKENDS[_device_type(device)]


def check_backends(backends, device):
    """The backends, duplicates dropped, order kept; ValueError for an unknown name or one
    the device does not have (step and persistent exist only on CUDA, fused and blas only
    on the CPU)."""
    backends = list(dict.fromkeys(backends))
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {', '.join(unknown)}; expected "
                         f"{', '.join(BACKENDS)}")
    if not backends:
        raise ValueError("no backend to time")
    kind = _device_type(device)
    foreign = [b for b in backends if b not in DEVICE_BACKENDS[kind]]
    if foreign:
        raise ValueError(f"backend {' '.join(foreign)} does not apply to the {kind.upper()}, "
                         f"which has {', '.join(DEVICE_BACKENDS[kind])}")
    return backends


def describe_setting(setting):
    """'FASTRNN_PERSISTENT=auto' for a backend's settings: the variables it sets, not
    those it leaves unset."""
    return " ".join(f"{k}={v}" for k, v in setting.items() if v is not None)


def _set_variables(values):
    """os.environ[k] = v for each of values' items, or k unset where v is None."""
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextlib.contextmanager
def environment(setting):
    """The backend's settings ({variable: value, or None for unset}) for the duration,
    the variables restored afterwards."""
    saved = {k: os.environ.get(k) for k in setting}
    try:
        _set_variables(setting)
        yield
    finally:
        _set_variables(saved)


def forced(run, setting):
    """run(index) under a backend's settings."""
    def run_forced(index):
        with environment(setting):
            return run(index)
    return run_forced
