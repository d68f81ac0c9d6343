"""Runs a list of cases on one device and assembles the results document (results.json).

A case that raises (an unsupported dtype, out of memory, every backend refusing the shape,
...) is recorded under "skipped" with the reason, and the run goes on. settings.backend
lists the backends timed (backends.BACKENDS), settings.environment the environment settings
each was timed under (documents before the CPU backends: settings.FASTRNN_PERSISTENT).
"""

import contextlib

import torch

from . import machine
from .backends import BACKENDS, check_backends, default_backends
from .cases import run_case
from .grids import KEY_FIELDS
from .timing import timer_for


@contextlib.contextmanager
def tf32_mode(device, allow):
    """On CUDA, sets cuDNN's and cuBLAS's TF32 switches to `allow` for the run (and restores
    them): by default float32 is timed as true float32 on both sides (cuDNN allows TF32 by
    default, cuBLAS does not). Does nothing on the CPU."""
    if not str(device).startswith("cuda"):
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def run_suite(cases, *, device="cpu", repeats=5, warmup=2, min_time=0.0, min_sample=0.0,
              tf32=False, gemm_size=None, listener=None, settings=None, checkpoint=None,
              backends=None):
    """Measures every case; returns the results document. min_sample: the least seconds
    of a timed sample (timing.interleaved: short calls are timed in batches). listener
    (optional) gets
    start(index, case) before and done(index, case, record, error) after each case;
    checkpoint (optional) gets the document so far after each case, so that a run cut
    short keeps what it measured. backends: the fastrnn backends to time (backends.BACKENDS;
    None: backends.default_backends(device)); ValueError for one the device does not have."""
    backends = check_backends(backends or default_backends(device), device)
    timer = timer_for(device)
    with tf32_mode(device, tf32):
        doc = machine.describe(device)
        # the precision each case is judged in (Case.compute_dtype)
        dtypes = ["float32"] + sorted({c.compute_dtype for c in cases} - {"float32"})
        peaks = {d: machine.gemm_peak_gflops(device, getattr(torch, d), n=gemm_size)
                 for d in dtypes}
        machine.settle_allocator()  # whatever gemm_size was
        doc.update({
            "gemm_peak_gflops": peaks["float32"],
            "gemm_peak_gflops_by_dtype": peaks,
            "gemm_peak_n": gemm_size or machine.gemm_size(device, torch.float32),
            "tf32": tf32 if str(device).startswith("cuda") else None,
            "settings": dict(settings or {}, backend=backends,
                             environment={b: BACKENDS[b] for b in backends},
                             repeats=repeats, warmup=warmup, min_time=min_time,
                             min_sample=min_sample),
            "cases": [],
            "skipped": [],
        })
        for index, case in enumerate(cases):
            if listener:
                listener.start(index, case)
            record = error = None
            try:
                record = run_case(case, device, timer=timer, repeats=repeats, warmup=warmup,
                                  min_time=min_time, min_sample=min_sample,
                                  peak_gflops=peaks[case.compute_dtype],
                                  backends=backends)
                doc["cases"].append(record)
            except Exception as exc:  # noqa: BLE001 - one failing case must not end the run
                error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                doc["skipped"].append(
                    dict({k: getattr(case, k) for k in KEY_FIELDS}, reason=error))
            finally:
                if str(device).startswith("cuda"):
                    torch.cuda.empty_cache()
            if listener:
                listener.done(index, case, record, error)
            if checkpoint:
                checkpoint(doc)
    return doc
