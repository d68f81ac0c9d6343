"""What the fastrnn.bench tests share: one tiny real run of the tool, the fields of a case
record, and results documents made up in the format the tool writes (and in the format
before --backend, which is also before kind and hx)."""

import dataclasses
import json

from fastrnn.bench import catalog
from fastrnn.bench.__main__ import main
from fastrnn.bench.grids import KEY_FIELDS

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# LSTM and GRU, fwd and fwdbwd: 4 cases of T=3 B=2 I=4 H=4, float32 on the CPU, 2 repeats.
TINY_RUN_ARGV = ["--cell", "LSTM", "GRU", "--T", "3", "--B", "2", "--I", "4", "--H", "4",
                 "--repeats", "2", "--warmup", "1", "--min-time", "0", "--device", "cpu",
                 "--gemm-size", "256"]

CASE_FIELDS = {"cell": str, "dtype": str, "T": int, "B": int, "I": int, "H": int,
               "layers": int, "bidirectional": bool, "mode": str, "kind": str, "hx": bool,
               "calls": int, "fastrnn_ms": float,
               "baseline": str, "baseline_ms": float, "backend": str, "parity": str,
               "speedup": float, "us_per_step_fastrnn": float, "us_per_step_baseline": float,
               "gflops_fastrnn": float, "gflops_baseline": float, "repeats": int}


def shrink_grid(monkeypatch, name, **sizes):
    """Replaces grid `name`, for the test, by the same grid with every shape's fields set to
    `sizes` (e.g. T=6, B=3): a tiny real run of a named grid."""
    grid = catalog.GRIDS[name]
    blocks = tuple(dataclasses.replace(block, shapes=tuple(
        dataclasses.replace(shape, **sizes) for shape in block.shapes)) for block in grid.blocks)
    monkeypatch.setitem(catalog.GRIDS, name, dataclasses.replace(grid, blocks=blocks))


def run_tiny(out):
    """Runs the tool on TINY_RUN_ARGV, writing its files to `out`; returns `out`."""
    assert main(TINY_RUN_ARGV + ["--out", str(out)]) == 0
    return out


def synthetic(ms_by_case, device="test-device", backends=("auto",), kind="layer"):
    """A results document as the tool writes it: every backend timed at `ms`; cases of
    T=50 B=16 I=H (T=1 for kind cell), with hx for the cell kinds."""
    cases = []
    T = 1 if kind == "cell" else 50
    for (cell, H, mode), ms in ms_by_case.items():
        key = dict(zip(KEY_FIELDS, (cell, "float32", T, 16, H, H, 1, False, mode, kind,
                                    kind != "layer")))
        record = dict(key, fastrnn_ms=ms, baseline="torch-cpu", baseline_ms=2.0 * ms,
                      speedup=2.0, backend="cpu-fused", fastrnn_backend=backends[0],
                      parity="pass")
        for b in backends:
            record.update({f"{b}_ms": ms, f"{b}_speedup": 2.0, f"{b}_parity": "pass"})
        cases.append(record)
    return {"device": device, "threads": 2, "torch": "x", "gemm_peak_gflops": 1.0,
            "settings": {"backend": list(backends)}, "cases": cases}


def old_format(ms_by_case, variants=None, setting="auto"):
    """A results document of the format before --backend: fastrnn_ms is the default
    FASTRNN_PERSISTENT setting's, and forced kernels are per_step_* / persistent_*
    (variants: {prefix: ms factor, or None for a refusal}). setting None: not recorded.
    Its records have no kind and no hx (layer calls without hx)."""
    doc = synthetic(ms_by_case)
    doc["settings"] = {"grid": "custom", "variants": list(variants or ())}
    if setting is not None:
        doc["settings"]["FASTRNN_PERSISTENT"] = setting
    for record in doc["cases"]:
        for key in ([k for k in record if k.startswith("auto_")]
                    + ["fastrnn_backend", "kind", "hx"]):
            del record[key]
        for prefix, factor in (variants or {}).items():
            if factor is None:
                record[f"{prefix}_skipped"] = "RuntimeError: lstm: FASTRNN_PERSISTENT=1, but no"
            else:
                record.update({f"{prefix}_ms": record["fastrnn_ms"] * factor,
                               f"{prefix}_speedup": 2.0 / factor, f"{prefix}_parity": "pass"})
    return doc


def write(path, doc):
    """Writes doc as JSON to path (a pathlib.Path); returns the path as a string."""
    path.write_text(json.dumps(doc))
    return str(path)
