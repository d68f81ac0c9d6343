"""Tests of fastrnn.bench's records: the results document of a real (tiny) run, the fields
each backend adds to a case's record, and backends that refuse a shape (skipped) or fail
(raise). On a GPU the backends choose between the CUDA kernels; the loop and the records
are the same on the CPU, where these tests run."""

import csv
import json
import os

import pytest

from fastrnn.bench.grids import Case
from fastrnn.bench.timing import CpuTimer
from helpers.bench import CASE_FIELDS, synthetic


# --- one real (tiny) run: the schema -----------------------------------------------------


TOP_LEVEL = {"device": str, "torch": str, "cuda": (str, type(None)),
             "cudnn": (int, type(None)), "commit": (str, type(None)), "date": str,
             "threads": int, "gemm_peak_gflops": float, "cases": list}


def test_results_json_schema(tiny_run):
    doc = json.loads((tiny_run / "results.json").read_text())
    for key, kind in TOP_LEVEL.items():
        assert isinstance(doc[key], kind), key
    assert doc["gemm_peak_gflops"] > 0
    assert len(doc["cases"]) == 4  # LSTM, GRU x fwd, fwdbwd
    assert {(c["cell"], c["mode"]) for c in doc["cases"]} == {
        ("LSTM", "fwd"), ("LSTM", "fwdbwd"), ("GRU", "fwd"), ("GRU", "fwdbwd")}
    for case in doc["cases"]:
        for key, kind in CASE_FIELDS.items():
            assert isinstance(case[key], kind), key
        assert case["dtype"] == "float32" and case["baseline"] == "torch-cpu"
        assert case["backend"] == "cpu-fused" and case["parity"] == "pass"
        assert (case["T"], case["B"], case["I"], case["H"]) == (3, 2, 4, 4)
        assert case["repeats"] == 2 and case["fastrnn_ms"] > 0 and case["baseline_ms"] > 0
        assert case["speedup"] == pytest.approx(case["baseline_ms"] / case["fastrnn_ms"])
        assert case["us_per_step_fastrnn"] == pytest.approx(case["fastrnn_ms"] * 1000 / 3)


def test_records_carry_the_backend_fields(tiny_run):
    from fastrnn.bench.backends import BACKEND_FIELDS
    doc = json.loads((tiny_run / "results.json").read_text())
    assert doc["settings"]["backend"] == ["auto"]
    assert doc["settings"]["environment"] == {
        "auto": {"FASTRNN_PERSISTENT": "auto", "FASTRNN_CPU_FUSED": None}}
    for case in doc["cases"]:
        assert case["fastrnn_backend"] == "auto"
        assert all(f"auto_{field}" in case for field in BACKEND_FIELDS)
        assert case["auto_ms"] == case["fastrnn_ms"] and case["auto_parity"] == case["parity"]
        assert case["auto_speedup"] == pytest.approx(case["baseline_ms"] / case["auto_ms"])
        assert not any(k.startswith(("step_", "persistent_", "per_step_")) for k in case)
    rows = list(csv.DictReader((tiny_run / "results.csv").read_text().splitlines()))
    assert rows[0]["fastrnn_backend"] == "auto" and float(rows[0]["auto_ms"]) > 0
    assert "Backends timed: auto (FASTRNN_PERSISTENT=auto)" in (
        tiny_run / "results.md").read_text()


def test_checkpoint_after_every_case():
    from fastrnn.bench.suite import run_suite
    cases = [Case("RNN_TANH", "float32", 2, 1, 3, 3, mode=mode) for mode in ("fwd", "fwdbwd")]
    seen = []
    doc = run_suite(cases, repeats=1, warmup=0, gemm_size=64,
                    checkpoint=lambda d: seen.append(len(d["cases"])))
    assert seen == [1, 2] and len(doc["cases"]) == 2


def test_named_commit_wins(monkeypatch):
    from fastrnn.bench import machine
    monkeypatch.setenv("FASTRNN_COMMIT", "abc123")
    assert machine.source_commit() == "abc123" and machine.source_dirty() is None


# --- backends ----------------------------------------------------------------------------


def test_forced_setting_is_restored(monkeypatch):
    from fastrnn.bench.backends import BACKENDS, forced
    seen = []
    names = ("FASTRNN_PERSISTENT", "FASTRNN_CPU_FUSED")
    note = lambda index: seen.append(tuple(os.environ.get(k) for k in names))
    monkeypatch.delenv("FASTRNN_PERSISTENT", raising=False)
    monkeypatch.delenv("FASTRNN_CPU_FUSED", raising=False)
    forced(note, BACKENDS["persistent"])(0)
    assert seen == [("1", None)] and not any(k in os.environ for k in names)
    monkeypatch.setenv("FASTRNN_PERSISTENT", "auto")
    monkeypatch.setenv("FASTRNN_CPU_FUSED", "units")
    forced(note, BACKENDS["persistent"])(1)  # unsets FASTRNN_CPU_FUSED for the call
    forced(note, BACKENDS["blas"])(2)
    assert seen[1:] == [("1", None), ("auto", "0")]
    assert os.environ["FASTRNN_PERSISTENT"] == "auto" and os.environ["FASTRNN_CPU_FUSED"] == "units"


def forcing(monkeypatch, failures):
    """Makes forced (as cases calls it) raise RuntimeError(failures[value]) for the
    FASTRNN_PERSISTENT values listed, and run the case for the others, noting the
    FASTRNN_PERSISTENT each call saw."""
    from fastrnn.bench import cases
    real, seen = cases.forced, []

    def fake_forced(run, value):
        def noted(index):
            seen.append(os.environ.get("FASTRNN_PERSISTENT"))
            if value["FASTRNN_PERSISTENT"] in failures:
                raise RuntimeError(failures[value["FASTRNN_PERSISTENT"]])
            return run(index)
        return real(noted, value)

    monkeypatch.setattr(cases, "forced", fake_forced)
    return seen


RUN = dict(timer=CpuTimer(), repeats=2, warmup=0)
REFUSAL = "lstm: FASTRNN_PERSISTENT=1, but the shape does not fit\nmore detail"


def test_every_backend_is_timed_under_its_setting(monkeypatch):
    """On the CPU each backend runs the CPU kernel again, but the loop, the settings and
    the fields are those of a GPU run."""
    from fastrnn.bench import cases
    seen = forcing(monkeypatch, {})
    case = Case("GRU", "float32", 3, 2, 4, 4, mode="fwdbwd")
    record = cases.run_case(case, "cpu", backends=("step", "auto", "persistent"), **RUN)
    assert set(seen) == {"0", "auto", "1"}
    assert record["fastrnn_backend"] == "step" and record["fastrnn_ms"] == record["step_ms"]
    for key in ("auto", "step", "persistent"):
        assert record[f"{key}_parity"] == "pass" and record[f"{key}_ms"] > 0
        assert record[f"{key}_speedup"] == pytest.approx(
            record["baseline_ms"] / record[f"{key}_ms"])
        assert record[f"{key}_us_per_step"] == pytest.approx(record[f"{key}_ms"] * 1e3 / 3)
        assert f"{key}_skipped" not in record
    assert record["repeats"] == 2


def test_the_cpu_walks_are_timed_as_backends():
    """fused and blas run the CPU's two walks (FASTRNN_CPU_FUSED=1 and 0) beside auto,
    each through its own parity check and timing, the walk asked for seen by the op."""
    from fastrnn.bench import cases
    from fastrnn.bench.backends import BACKENDS, environment
    from fastrnn.bench.report import markdown
    case = Case("RNN_TANH", "float32", 4, 8, 4, 4, mode="fwdbwd")
    record = cases.run_case(case, "cpu", backends=("auto", "fused", "blas"), **RUN)
    for key in ("auto", "fused", "blas"):
        assert record[f"{key}_parity"] == "pass" and record[f"{key}_ms"] > 0
    assert record["fastrnn_backend"] == "auto"
    with environment(BACKENDS["blas"]):
        assert os.environ["FASTRNN_CPU_FUSED"] == "0"
    doc = dict(synthetic({}, backends=("auto", "fused", "blas")), cases=[record],
               torch_device="cpu", cuda=None, cudnn=None, driver=None, commit="x",
               date="today")
    doc["settings"]["environment"] = {b: BACKENDS[b] for b in ("auto", "fused", "blas")}
    text = markdown(doc)
    assert ("Backends timed: auto (FASTRNN_PERSISTENT=auto), fused (FASTRNN_PERSISTENT=auto "
            "FASTRNN_CPU_FUSED=1), blas (FASTRNN_PERSISTENT=auto FASTRNN_CPU_FUSED=0)") in text
    assert "fused ms" in text and "blas speedup" in text


def test_a_refusal_is_recorded_as_skipped(monkeypatch):
    from fastrnn.bench import cases
    from fastrnn.bench.report import markdown, table_row
    forcing(monkeypatch, {"1": REFUSAL})
    case = Case("LSTM", "float32", 2, 1, 3, 3, mode="fwd")
    record = cases.run_case(case, "cpu", backends=("auto", "persistent"), **RUN)
    assert record["persistent_skipped"] == REFUSAL.splitlines()[0]
    assert "persistent_ms" not in record and "persistent_parity" not in record
    assert record["fastrnn_backend"] == "auto" and record["auto_ms"] > 0
    assert table_row(record).endswith("persistent -")
    # the first backend refused: the fastrnn fields are the next one's, which says so
    first = cases.run_case(case, "cpu", backends=("persistent", "auto"), **RUN)
    assert first["fastrnn_backend"] == "auto" and first["fastrnn_ms"] == first["auto_ms"]
    assert "persistent_skipped" in first
    doc = dict(synthetic({}, backends=("persistent", "auto")), cases=[first],
               torch_device="cpu", cuda=None, cudnn=None, driver=None, commit="x",
               date="today")
    text = markdown(doc)
    assert "| fwd | auto |" in text and "persistent refused: lstm: FASTRNN_PERSISTENT=1" in text


def test_a_case_no_backend_runs_is_skipped(monkeypatch):
    from fastrnn.bench import cases
    from fastrnn.bench.backends import BackendsRefused
    from fastrnn.bench.suite import run_suite
    forcing(monkeypatch, {"1": REFUSAL})
    case = Case("LSTM", "float32", 2, 1, 3, 3, mode="fwd")
    with pytest.raises(BackendsRefused, match="persistent: lstm: FASTRNN_PERSISTENT=1"):
        cases.run_case(case, "cpu", backends=("persistent",), **RUN)
    from fastrnn.bench import suite  # persistent on the CPU: only this test's fake runs it
    monkeypatch.setattr(suite, "check_backends", lambda backends, device: list(backends))
    doc = run_suite([case], repeats=1, warmup=0, gemm_size=64, backends=("persistent",))
    assert doc["cases"] == [] and "every backend refused" in doc["skipped"][0]["reason"]
    assert doc["settings"]["backend"] == ["persistent"]


def test_any_other_error_of_a_backend_raises(monkeypatch):
    """Only the forced kernel's own refusal is recorded as skipped; anything else raises."""
    from fastrnn.bench import cases
    forcing(monkeypatch, {"1": "CUDA error: an illegal memory access was encountered"})
    case = Case("RNN_TANH", "float32", 2, 1, 3, 3, mode="fwd")
    with pytest.raises(RuntimeError, match="illegal memory access"):
        cases.run_case(case, "cpu", backends=("auto", "persistent"), **RUN)
