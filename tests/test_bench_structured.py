"""Tests of fastrnn.bench's structured grid: the dilated and clockwork kinds, their baselines
(Python loops, fastrnn/bench/loops.py) computing what fastrnn's modules compute, the grid's
cases, and a tiny run of the whole grid."""

import json

import pytest
import torch

from fastrnn.bench import cases as bench_cases
from fastrnn.bench.__main__ import main
from fastrnn.bench.catalog import GRIDS
from fastrnn.bench.grids import VARIANT_CELLS, Case
from fastrnn.bench.report import case_of
from helpers.bench import shrink_grid

pytestmark = pytest.mark.usefixtures("torch_state")


def test_structured_grid_lists_the_dilated_cases(capsys):
    assert main(["--grid", "structured", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    listed = GRIDS["structured"].cases("cpu")
    assert len(lines) == len(listed) == 16 and GRIDS["structured"].threads == 2
    assert {(c.cell, c.kind, c.T, c.B, c.I, c.H, c.layers, c.mode) for c in listed} == {
        (cell, kind, 256, 32, 256, 256, 3, mode) for kind in ("dilated", "dilated_interleaved")
        for cell in ("LSTM", "GRU", "RNN_TANH") for mode in ("fwd", "fwdbwd")} | {
        ("RNN_TANH", kind, 256, 32, 256, 256, 1, mode) for kind in ("clockwork", "layer")
        for mode in ("fwd", "fwdbwd")}
    assert lines[0].startswith("LSTM f32 T=256 B=32 I=256 H=256 L3 dilated fwd")


def test_dilated_case_checks():
    Case("GRU", "float32", 5, 2, 3, 3, layers=3, bidirectional=True, kind="dilated")
    with pytest.raises(ValueError, match="hx False"):
        Case("GRU", "float32", 5, 2, 3, 3, kind="dilated", hx=True)
    with pytest.raises(ValueError, match="multiple of every dilation"):
        Case("GRU", "float32", 6, 2, 3, 3, layers=3, kind="dilated_interleaved")
    with pytest.raises(ValueError, match="layers 1, one direction"):
        Case("GRU", "float32", 5, 2, 3, 3, layers=2, kind="cell_loop")
    Case("RNN_TANH", "float32", 5, 2, 3, 8, kind="clockwork")
    for bad in ({"cell": "GRU"}, {"layers": 2}, {"bidirectional": True}, {"H": 6}):
        with pytest.raises(ValueError, match="kind clockwork is one tanh layer"):
            Case(**{"cell": "RNN_TANH", "dtype": "float32", "T": 5, "B": 2, "I": 3, "H": 8,
                    "kind": "clockwork", **bad})
    with pytest.raises(ValueError, match="hx False"):
        Case("RNN_TANH", "float32", 5, 2, 3, 8, kind="clockwork", hx=True)


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
def test_baseline_computes_the_clockwork_rnn(mode):
    """In float64 the loop and fastrnn.ClockworkRNN agree to 1e-10 (T = 11: every module
    inactive at some steps)."""
    case = Case("RNN_TANH", "float64", 11, 3, 4, 8, mode=mode, kind="clockwork")
    base, fast = bench_cases.build_modules(case, "cpu")
    inputs, grad = bench_cases.make_inputs(case, "cpu", count=1)
    results = [bench_cases.make_runner(m, case, inputs, grad)(0) for m in (base, fast)]
    for want, got in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("kind,steps", [("dilated", 7), ("dilated_interleaved", 8)])
def test_baselines_compute_the_dilated_stack(kind, steps, cell, mode):
    """In float64 each baseline and fastrnn's module agree to 1e-10: the output, the last
    layer's h_n, and (fwdbwd) the input gradient. For the loop T = 7 with dilations 1, 2, 4
    leaves the last step of some phases out; the interleaved layers need a multiple of 4."""
    case = Case(cell, "float64", steps, 3, 4, 5, layers=3, bidirectional=True, mode=mode,
                kind=kind)
    base, fast = bench_cases.build_modules(case, "cpu")
    assert fast.dilations == base.dilations == (1, 2, 4)
    inputs, grad = bench_cases.make_inputs(case, "cpu", count=1)
    results = [bench_cases.make_runner(m, case, inputs, grad)(0) for m in (base, fast)]
    assert results[0][1].shape == (2, 4 * 3, 5)  # the last layer: d = 4 subsequences
    assert len(results[0]) == (3 if mode == "fwdbwd" else 2)
    for want, got in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


@pytest.fixture
def tiny_structured(monkeypatch):
    shrink_grid(monkeypatch, "structured", T=8, B=3, I=4, H=8)


def test_tiny_structured_grid_runs(tiny_structured, tmp_path):
    assert main(["--grid", "structured", "--threads", "1", "--repeats", "2", "--warmup", "1",
                 "--min-time", "0", "--gemm-size", "128", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["skipped"] == [] and len(doc["cases"]) == 16
    baselines = {"dilated": "torch-cell-loop", "dilated_interleaved": "torch-layers-interleaved",
                 "clockwork": "torch-ops-loop", "layer": "torch-cpu"}
    for record in doc["cases"]:
        assert record["parity"] == "pass", case_of(record).label()
        assert record["baseline"] == baselines[record["kind"]]
        assert record["gflop"] == pytest.approx(bench_cases.gemm_flops(case_of(record)) / 1e9)
    assert "Kind dilated: the baseline column is" in (tmp_path / "results.md").read_text()


def test_variants_grid_lists_the_variant_cases(capsys):
    assert main(["--grid", "variants", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    listed = GRIDS["variants"].cases("cpu")
    assert len(lines) == len(listed) == 14 and GRIDS["variants"].threads == 2
    assert {(c.cell, c.kind, c.T, c.B, c.I, c.H, c.mode) for c in listed} == {
        (cell, "variant", 100, 32, 256, 256, mode) for cell in VARIANT_CELLS
        for mode in ("fwd", "fwdbwd")} | {
        (cell, "layer", 100, 32, 256, 256, mode) for cell in ("LSTM", "GRU")
        for mode in ("fwd", "fwdbwd")}
    assert main(["--kind", "variant", "--cell", "peephole_lstm", "--T", "5", "--B", "2",
                 "--H", "4", "--mode", "fwd", "--list"]) == 0
    assert "PEEPHOLE_LSTM f32 T=5 B=2 I=4 H=4 variant fwd" in capsys.readouterr().out


def test_variant_case_checks():
    Case("COUPLED_LSTM", "float32", 5, 2, 3, 4, kind="variant")
    for bad in ({"cell": "LSTM"}, {"kind": "layer"}, {"layers": 2}, {"bidirectional": True}):
        with pytest.raises(ValueError, match="kind variant runs the variants"):
            Case(**{"cell": "PEEPHOLE_LSTM", "dtype": "float32", "T": 5, "B": 2, "I": 3,
                    "H": 4, "kind": "variant", **bad})
    with pytest.raises(ValueError, match="hx False"):
        Case("PEEPHOLE_LSTM", "float32", 5, 2, 3, 4, kind="variant", hx=True)


@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("cell", VARIANT_CELLS)
def test_baseline_computes_the_variant(cell, mode):
    """In float64 the loop and fastrnn.VariantLSTM (VariantGRU) agree to 1e-10."""
    case = Case(cell, "float64", 7, 3, 4, 5, mode=mode, kind="variant")
    base, fast = bench_cases.build_modules(case, "cpu")
    assert fast.layer_norm == ("LAYER_NORM" in cell) and fast.mode == cell.split("_")[-1]
    if fast.mode == "LSTM":
        assert fast.peepholes == ("PEEPHOLE" in cell)
        assert fast.coupled_gates == ("COUPLED" in cell)
    inputs, grad = bench_cases.make_inputs(case, "cpu", count=1)
    results = [bench_cases.make_runner(m, case, inputs, grad)(0) for m in (base, fast)]
    for want, got in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_tiny_variants_grid_runs(monkeypatch, tmp_path):
    shrink_grid(monkeypatch, "variants", T=6, B=3, I=4, H=5)
    assert main(["--grid", "variants", "--threads", "1", "--repeats", "2", "--warmup", "1",
                 "--min-time", "0", "--gemm-size", "128", "--out", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["skipped"] == [] and len(doc["cases"]) == 14
    for record in doc["cases"]:
        assert record["parity"] == "pass", case_of(record).label()
        assert record["baseline"] == ("torch-ops-loop" if record["kind"] == "variant"
                                      else "torch-cpu")
        assert record["gflop"] == pytest.approx(bench_cases.gemm_flops(case_of(record)) / 1e9)
