"""The CUDA code compiles without a GPU: reads the report of scripts/check_cuda.py (which CI
runs before the tests), or runs that check when the report is missing or older than the
sources and nvcc is there; skips without nvcc. Every kernel source must build for sm_80 and
sm_90a with no register spills, and every host-glue file must compile."""

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest

from helpers.paths import ROOT, load_script

REPORT = os.path.join(ROOT, "build", "cuda-check", "ptxas.json")
ARCHES = ("sm_80", "sm_90a")
CSRC = os.path.join(ROOT, "csrc")


def _sources(ext):
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(
        os.path.join(CSRC, "cuda", "**", f"*.{ext}"), recursive=True))


def _newest_source_mtime():
    files = [p for ext in ("h", "cuh", "cu", "cpp") for p in glob.glob(
        os.path.join(CSRC, "**", f"*.{ext}"), recursive=True)]
    return max(os.path.getmtime(p) for p in files)


def _nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and os.path.exists(os.path.join(home, "bin", "nvcc")):
        return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


@pytest.fixture(scope="module")
def report():
    fresh = (os.path.exists(REPORT) and os.path.getmtime(REPORT) >= _newest_source_mtime())
    if not fresh:
        if _nvcc() is None:
            pytest.skip("no nvcc, and no up-to-date build/cuda-check/ptxas.json")
        check = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "check_cuda.py")],
                               cwd=ROOT, capture_output=True, text=True)
        if not os.path.exists(REPORT):
            pytest.fail(f"scripts/check_cuda.py wrote no report:\n{check.stdout}{check.stderr}")
    with open(REPORT) as f:
        return json.load(f)


def test_check_passed(report):
    assert report["ok"], "\n".join(report["failures"])
    assert report["failures"] == []


def test_every_cuda_source_checked(report):
    assert report["kernel_sources"] == _sources("cu")
    assert report["glue_sources"] == _sources("cpp")
    for source in report["kernel_sources"]:
        assert any(k["source"] == source for k in report["kernels"]), f"{source}: no kernel"


def test_every_kernel_built_for_both_arches(report):
    for source in report["kernel_sources"]:
        per_arch = {arch: sorted(k["name"] for k in report["kernels"]
                                 if k["source"] == source and k["arch"] == arch)
                    for arch in ARCHES}
        assert per_arch["sm_80"], source
        assert per_arch["sm_80"] == per_arch["sm_90a"], source


def test_no_kernel_spills_registers(report):
    spilling = [f"{k['arch']} {k['name']}: {k['spill_stores']} B stores, "
                f"{k['spill_loads']} B loads" for k in report["kernels"]
                if k["spill_stores"] or k["spill_loads"]]
    assert not spilling, "\n".join(spilling)


@pytest.mark.parametrize("cell, unit", [
    (cell, unit) for cell in ("lstm::Variant<false, false>", "lstm::Variant<true, false>",
                              "lstm::Variant<false, true>", "lstm::Variant<true, true>",
                              "gru::Policy", "rnn::Policy<false>", "rnn::Policy<true>")
    for unit in ("ForwardUnit", "BackwardUnit")
] + [("leaky::Policy", "ForwardUnit"),  # the reservoir's cell is forward only
      ("rnn::Policy<false>", "ClockworkForwardUnit"),  # the clockwork RNN's steps
      ("rnn::Policy<false>", "ClockworkBackwardUnit")])
def test_per_step_kernels_for_every_dtype(report, unit, cell):
    for dtype in ("float", "double", "__half", "__nv_bfloat16"):
        for arch in ARCHES:
            name = f"step_kernel<fastrnn::cuda::{unit}<fastrnn::{cell}, {dtype}"
            assert any((name + "," in k["name"] or name + ">" in k["name"])
                       and k["arch"] == arch for k in report["kernels"]), (unit, cell, dtype, arch)


def test_report_parser_reads_spills_and_shared_memory():
    """The check's ptxas parser on ptxas -v text as nvcc 13 prints it."""
    check_cuda = load_script("check_cuda")
    text = """ptxas info    : Compiling entry function '_Z1kPf' for 'sm_80'
ptxas info    : Function properties for _Z1kPf
    48 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 4096 bytes smem, 360 bytes cmem[0]
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90a'
ptxas info    : Function properties for _Z1kPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 360 bytes cmem[0]
"""
    first, second = check_cuda.parse_ptxas(text, "x.cu")
    assert (first["arch"], first["registers"], first["spill_stores"], first["spill_loads"],
            first["stack"], first["smem"]) == ("sm_80", 255, 8, 12, 48, 4096)
    assert (second["arch"], second["registers"], second["spill_stores"], second["smem"]) == (
        "sm_90a", 40, 0, 0)
