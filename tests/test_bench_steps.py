"""Tests of fastrnn.bench's step grid and the cases that carry states: the grid's cases, a
cell call, a loop through a cell and a T=1 layer call run end to end, the loop's
semantics, and results files from before kind and hx (read as layer calls without hx)."""

import json

import pytest
import torch
from torch import nn

import fastrnn
from fastrnn.bench import compare as comparing
from fastrnn.bench import states
from fastrnn.bench.__main__ import main
from fastrnn.bench.catalog import GRIDS
from fastrnn.bench.grids import CELLS, KEY_FIELDS, Case, key_of
from fastrnn.bench.report import markdown
from helpers.bench import CASE_FIELDS, old_format, synthetic, write

CELL_CLASSES = ("LSTMCell", "GRUCell", "RNNCell")
needs_cells = pytest.mark.skipif(
    not all(hasattr(fastrnn, name) for name in CELL_CLASSES),
    reason="the cells are missing: fastrnn has no LSTMCell/GRUCell/RNNCell yet")

# a tiny selection of the step kinds: LSTM and RNN_RELU, B=2 I=3 H=4, fwd and fwdbwd
TINY_STEP_ARGV = ["--cell", "LSTM", "RNN_RELU", "--B", "2", "--I", "3", "--H", "4",
                  "--hx", "--repeats", "2", "--warmup", "1", "--min-time", "0",
                  "--min-sample", "0.0005", "--device", "cpu", "--gemm-size", "128"]


def run_tiny_steps(tmp_path, kind, T):
    """Runs TINY_STEP_ARGV for one kind at T; returns the results document."""
    assert main(TINY_STEP_ARGV + ["--kind", kind, "--T", str(T),
                                  "--out", str(tmp_path)]) == 0
    return json.loads((tmp_path / "results.json").read_text())


def check_records(doc, kind, T):
    """Each of the 4 records passed parity, with the fields and the shape of its kind."""
    assert [(r["cell"], r["mode"]) for r in doc["cases"]] == [
        (cell, mode) for cell in ("LSTM", "RNN_RELU") for mode in ("fwd", "fwdbwd")]
    assert doc["skipped"] == [] and doc["settings"]["min_sample"] == 0.0005
    for record in doc["cases"]:
        for key, field_type in CASE_FIELDS.items():
            assert isinstance(record[key], field_type), key
        assert (record["kind"], record["hx"], record["T"]) == (kind, True, T)
        assert (record["B"], record["I"], record["H"]) == (2, 3, 4)
        assert record["parity"] == "pass" and record["calls"] >= 1
        assert record["us_per_step_fastrnn"] == pytest.approx(record["fastrnn_ms"] * 1e3 / T)


# --- the grid ----------------------------------------------------------------------------


def test_step_grid_cases():
    grid = GRIDS["step"]
    cases = grid.cases("cpu")
    assert grid.threads == 2 and grid.min_sample > 0
    assert len(cases) == 96 + 96 + 11 == len({c.key() for c in cases})
    assert {c.dtype for c in cases} == {"float32"} and all(c.hx for c in cases)
    assert all(c.layers == 1 and not c.bidirectional for c in cases)
    squares = {(b, h) for b in (1, 8, 32, 128) for h in (64, 256, 1024)}
    for kind in ("cell", "layer"):
        single = [c for c in cases if c.kind == kind]
        assert {(c.cell, c.B, c.H, c.mode) for c in single} == {
            (cell, b, h, mode) for cell in CELLS for b, h in squares
            for mode in ("fwd", "fwdbwd")}
        assert all(c.T == 1 and c.I == c.H for c in single)
    loops = [c for c in cases if c.kind == "cell_loop"]
    assert {(c.cell, c.T, c.B, c.H) for c in loops} == {
        (cell, 100, b, h) for cell in CELLS for b, h in ((1, 64), (32, 256), (128, 1024))
        if (cell, b) != ("RNN_RELU", 128)}  # its ReLU flips at rounding: see grids.py
    assert {c.mode for c in loops} == {"fwdbwd"}
    assert {c.max_rounds for c in loops if c.B == 128} == {3}
    assert {c.max_rounds for c in cases if c.B < 128 or c.kind != "cell_loop"} == {None}
    # a cell case and a layer case of the same shape have different keys
    cell, layer = (next(c for c in cases if c.kind == kind) for kind in ("cell", "layer"))
    shape = KEY_FIELDS.index("kind")  # the fields before kind and hx
    assert cell.key()[:shape] == layer.key()[:shape] and cell.key() != layer.key()
    assert cell.label() == "LSTM f32 T=1 B=1 I=64 H=64 cell hx fwd"
    assert len(grid.cases("cpu", kinds=["cell_loop"])) == 11


def test_other_grids_stay_layer_calls_without_hx():
    for name, grid in GRIDS.items():
        if name not in ("step", "structured", "variants"):  # tests/test_bench_structured.py
            assert {(c.kind, c.hx) for c in grid.cases("cpu")} == {("layer", False)}, name


def test_kind_selection_on_the_command_line(capsys):
    assert main(["--grid", "step", "--kind", "cell_loop", "--cell", "GRU", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(" cell_loop hx fwdbwd" in line for line in lines)
    assert main(["--kind", "cell", "--T", "50", "--B", "2", "--H", "4", "--mode", "fwd",
                 "--list"]) == 0  # a cell case is one call: T is 1 whatever --T says
    assert capsys.readouterr().out.strip() == "LSTM f32 T=1 B=2 I=4 H=4 cell fwd"
    assert main(["--kind", "cell", "--layers", "2", "--list"]) == 2
    assert main(["--grid", "step", "--hx", "--list"]) == 2
    assert "one direction" in capsys.readouterr().err


def test_case_checks():
    with pytest.raises(ValueError, match="T must be 1"):
        Case("GRU", "float32", 5, 1, 3, 3, kind="cell")
    with pytest.raises(ValueError, match="unknown kind"):
        Case("GRU", "float32", 5, 1, 3, 3, kind="loop")
    with pytest.raises(ValueError, match="layers 1, one direction"):
        Case("GRU", "float32", 5, 1, 3, 3, bidirectional=True, kind="cell_loop")


# --- runs --------------------------------------------------------------------------------


@needs_cells
def test_tiny_cell_case_runs(tmp_path):
    doc = run_tiny_steps(tmp_path, "cell", 1)
    check_records(doc, "cell", 1)
    md = (tmp_path / "results.md").read_text()
    assert "| cell | kind |" in md and md.count("| LSTM | cell | float32 | 1 |") == 2
    assert "per call where T is 1" in md


@needs_cells
def test_tiny_loop_case_runs(tmp_path):
    doc = run_tiny_steps(tmp_path, "cell_loop", 5)
    check_records(doc, "cell_loop", 5)


def test_tiny_layer_case_with_hx_runs(tmp_path):
    doc = run_tiny_steps(tmp_path, "layer", 1)
    check_records(doc, "layer", 1)


def test_max_rounds_caps_the_timing_of_a_case_of_seconds():
    """A capped case times at most max_rounds rounds of one call each, however many
    repeats, min_time and min_sample the run asks for."""
    from fastrnn.bench.cases import run_case
    from fastrnn.bench.timing import CpuTimer
    case = Case("GRU", "float32", 2, 1, 3, 3, mode="fwd", hx=True, max_rounds=2)
    record = run_case(case, "cpu", timer=CpuTimer(), repeats=5, warmup=2, min_time=1.0,
                      min_sample=1.0)
    assert (record["repeats"], record["calls"], record["parity"]) == (2, 1, "pass")


def test_loop_carries_the_states_as_a_training_loop():
    """The loop's output, final states and gradients are torch.nn.LSTM's over the same
    sequence and initial states: a loop through the cell carries them from step to step."""
    case = Case("LSTM", "float64", 6, 2, 3, 4, kind="cell_loop", hx=True)
    torch.manual_seed(0)
    layer = nn.LSTM(3, 4).double()
    cell = nn.LSTMCell(3, 4).double()
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in layer.state_dict().items()})
    inputs, grad_out = states.make_state_inputs(case, "cpu", count=1)
    x, (h0, c0) = inputs[0]
    assert x.shape == (6, 2, 3) and h0.shape == c0.shape == (2, 4)
    assert grad_out.shape == (6, 2, 4) and x.requires_grad and h0.requires_grad
    got = states.make_state_runner(cell, case, inputs, grad_out)(0)
    out, (h_n, c_n) = layer(x, (h0[None], c0[None]))
    want = (out, h_n[0], c_n[0], *torch.autograd.grad(out, [x, h0, c0], grad_out))
    assert len(got) == len(want) == 6
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


def test_states_are_none_without_hx():
    case = Case("GRU", "float32", 1, 2, 3, 4, kind="cell", mode="fwd")
    inputs, grad_out = states.make_state_inputs(case, "cpu", count=2)
    assert [s for _, s in inputs] == [None, None] and inputs[0][0].shape == (2, 3)
    h = states.make_state_runner(nn.GRUCell(3, 4), case, inputs, grad_out)(1)
    assert len(h) == 2 and h[0].shape == (2, 4) and h[0] is h[1]  # output and final state


# --- results from before kind and hx -----------------------------------------------------


def test_old_results_read_as_layer_calls_without_hx(tmp_path, capsys):
    old = old_format({("LSTM", 64, "fwd"): 10.0, ("GRU", 64, "fwd"): 10.0})
    assert not any("kind" in r or "hx" in r for r in old["cases"])
    keys = [dict(zip(KEY_FIELDS, key_of(r))) for r in old["cases"]]
    assert {(k["kind"], k["hx"]) for k in keys} == {("layer", False)}
    new = synthetic({("LSTM", 64, "fwd"): 12.0, ("GRU", 64, "fwd"): 10.0})
    new["cases"] += synthetic({("LSTM", 64, "fwd"): 0.01}, kind="cell")["cases"]
    result = comparing.compare(old, new)
    assert [(r["key"][0], r["status"]) for r in result["rows"]] == [
        ("LSTM", "REGRESSION"), ("GRU", "same")]
    assert result["only_old"] == [] and len(result["only_new"]) == 1
    assert dict(zip(KEY_FIELDS, result["only_new"][0]))["kind"] == "cell"
    old_path, new_path = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    assert main(["--compare", old_path, "--against", new_path]) == 1
    out = capsys.readouterr().out
    assert any(line.startswith("LSTM f32 T=1 B=16 I=64 H=64 cell hx fwd ")
               and line.endswith(f"only in {new_path}") for line in out.splitlines())
    assert "2 matched, 1 regression(s)" in out
    # cell cases match cell cases; a call of microseconds keeps its digits
    cells = [synthetic({("LSTM", 64, "fwd"): ms}, kind="cell") for ms in (0.012, 0.0101)]
    text = comparing.format_comparison(comparing.compare(*cells))
    assert "0.0120     0.0101" in text and "faster" in text and "1 matched" in text
    # the markdown of an old document has the kind and hx of a layer call without hx
    old.update(torch_device="cpu", cuda=None, cudnn=None, driver=None, commit="x",
               date="today")
    for record in old["cases"]:
        record.update(us_per_step_fastrnn=1.0, us_per_step_baseline=1.0, gflops_fastrnn=1.0,
                      pct_peak_fastrnn=1.0, gflops_baseline=1.0)
    assert "| LSTM | layer | float32 | 50 | 16 | 64 | 64 | 1 | no | no | fwd |" in markdown(old)
