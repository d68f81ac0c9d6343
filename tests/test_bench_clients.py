"""Tests of fastrnn.bench's clients grid and the Case fields it needs (loss, packed, dropout,
autocast): their defaults keep older results' keys, the grid's cases, a tiny run of the
whole grid, and what each field makes a runner do."""

import dataclasses
import json

import pytest
import torch

from fastrnn.bench import cases as bench_cases
from fastrnn.bench import compare as comparing
from fastrnn.bench.__main__ import main
from fastrnn.bench.catalog import GRIDS
from fastrnn.bench.grids import KEY_DEFAULTS, KEY_FIELDS, Case, key_of
from fastrnn.bench.report import case_of
from helpers.bench import old_format, shrink_grid, synthetic

NEW_FIELDS = ("loss", "packed", "dropout", "autocast")


# --- keys --------------------------------------------------------------------------------


def test_new_fields_default_to_the_old_behaviour():
    """Every later key field's KEY_DEFAULTS value is Case's default, so a record without it
    (an older results file) is the plain case it always was."""
    defaults = {f.name: f.default for f in dataclasses.fields(Case)}
    assert set(NEW_FIELDS) <= set(KEY_DEFAULTS) and set(KEY_DEFAULTS) <= set(KEY_FIELDS)
    assert all(KEY_DEFAULTS[name] == defaults[name] for name in KEY_DEFAULTS)
    old = old_format({("LSTM", 64, "fwdbwd"): 10.0})["cases"][0]
    assert not any(name in old for name in NEW_FIELDS + ("kind", "hx"))
    assert key_of(old) == Case("LSTM", "float32", 50, 16, 64, 64).key()
    assert case_of(old).label() == "LSTM f32 T=50 B=16 I=64 H=64 fwdbwd"
    # an old record matches the same plain case of a new document, not a client variant
    new = synthetic({("LSTM", 64, "fwdbwd"): 12.0})
    variant = dict(new["cases"][0], loss="final", packed=True, fastrnn_ms=1.0)
    new["cases"] = [dict(new["cases"][0], **{k: KEY_DEFAULTS[k] for k in NEW_FIELDS}),
                    variant]
    result = comparing.compare(dict(old_format({}), cases=[old]), new)
    assert [r["status"] for r in result["rows"]] == ["REGRESSION"]
    assert result["only_new"] == [key_of(variant)]
    assert "loss=final" in comparing.format_comparison(result)


def test_case_checks_and_labels():
    for kwargs, message in [
            (dict(loss="input"), "unknown loss"), (dict(autocast="float16"), "unknown autocast"),
            (dict(mode="fwd", loss="final"), "a fwd case computes no loss"),
            (dict(mode="fwd", layers=2, dropout=0.2), "draws no dropout"),
            (dict(dropout=0.2), "layers must be at least 2"),
            (dict(hx=True, packed=True), "without hx"),
            (dict(kind="cell_loop", autocast="bfloat16"), "without hx")]:
        with pytest.raises(ValueError, match=message):
            Case("GRU", "float32", 5, 2, 3, 3, **kwargs)
    case = Case("LSTM", "float32", 9, 4, 3, 3, layers=2, bidirectional=True, packed=True,
                dropout=0.25, autocast="bfloat16", loss="final")
    assert case.label() == ("LSTM f32 T=9 B=4 I=3 H=3 L2 bi packed drop0.25 autocast-bf16 "
                            "loss=final fwdbwd")
    assert case.compute_dtype == "bfloat16" and Case("GRU", "float32", 5, 2, 3, 3).options() == ""


def test_packed_lengths_spread_evenly_and_set_the_flops():
    case = Case("GRU", "float32", 200, 32, 100, 256, layers=2, bidirectional=True,
                packed=True, loss="final")
    lengths = case.lengths()
    assert lengths == case.lengths()  # a fixed shuffle
    assert lengths != sorted(lengths) and min(lengths) == 5 and max(lengths) == 200
    assert sorted(lengths) == [round(5 + i * 195 / 31) for i in range(32)]
    assert case.rows() == sum(lengths) < 200 * 32
    dense = dataclasses.replace(case, packed=False)
    assert dense.lengths() is None and dense.rows() == 200 * 32
    # 2 layers, 2 directions: the second layer reads 2H features
    per_row = 2 * 3 * 256 * ((100 + 256) + (2 * 256 + 256)) * 2
    assert bench_cases.gemm_flops(dense) == 3 * per_row * 200 * 32
    assert bench_cases.gemm_flops(case) == 3 * per_row * case.rows()
    # T below the shortest length: every sequence T long
    assert Case("RNN_TANH", "float32", 3, 4, 2, 2, packed=True).lengths() == [3] * 4


# --- the grid ----------------------------------------------------------------------------


def test_clients_grid_lists_the_client_cases(capsys):
    assert main(["--grid", "clients", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    listed = GRIDS["clients"].cases("cpu")
    assert len(lines) == len(listed) == 27 == len({c.key() for c in listed})
    assert GRIDS["clients"].threads == 2 and {c.dtype for c in listed} == {"float32"}
    want = set()
    for cell in ("LSTM", "GRU", "RNN_TANH"):
        want |= {
            (cell, 35, 20, 200, 200, 2, False, "fwd", "output", False, 0.0, None),
            (cell, 35, 20, 200, 200, 2, False, "fwdbwd", "output", False, 0.2, None),
            (cell, 200, 32, 100, 256, 1, False, "fwd", "output", False, 0.0, None),
            (cell, 200, 32, 100, 256, 1, False, "fwdbwd", "output", False, 0.0, None),
            (cell, 200, 32, 100, 256, 1, False, "fwdbwd", "final", False, 0.0, None),
            (cell, 200, 32, 100, 256, 2, True, "fwd", "output", True, 0.0, None),
            (cell, 200, 32, 100, 256, 2, True, "fwdbwd", "final", True, 0.0, None),
            (cell, 100, 64, 512, 512, 1, False, "fwd", "output", False, 0.0, "bfloat16"),
            (cell, 100, 64, 512, 512, 1, False, "fwdbwd", "output", False, 0.0, "bfloat16")}
    assert {(c.cell, c.T, c.B, c.I, c.H, c.layers, c.bidirectional, c.mode, c.loss,
             c.packed, c.dropout, c.autocast) for c in listed} == want
    assert any(line.startswith("LSTM f32 T=200 B=32 I=100 H=256 L2 bi packed loss=final "
                               "fwdbwd  [") for line in lines)
    # --mode fwd over the grid: the training-only variants become plain inference cases
    assert {(c.loss, c.dropout) for c in GRIDS["clients"].cases("cpu", modes=("fwd",))} == {
        ("output", 0.0)}


@pytest.fixture
def tiny_clients(monkeypatch):
    """The clients grid with every shape shrunk to T=6 B=3 I=4 H=5 (depth, direction and
    the fields kept)."""
    shrink_grid(monkeypatch, "clients", T=6, B=3, I=4, H=5)


def test_tiny_clients_grid_runs(tiny_clients, tmp_path):
    before = torch.get_num_threads()
    try:
        assert main(["--grid", "clients", "--threads", "1", "--repeats", "2", "--warmup", "1",
                     "--min-time", "0", "--gemm-size", "128", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(before)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["skipped"] == [] and len(doc["cases"]) == 27
    assert set(doc["gemm_peak_gflops_by_dtype"]) == {"float32", "bfloat16"}
    for record in doc["cases"]:
        case = case_of(record)
        assert record["parity"] == "pass", case.label()  # on the CPU even with dropout
        assert "parity_note" not in record
        assert record["parity_tol"] == bench_cases.tolerance(case.compute_dtype, 6)
        assert record["gflop"] == pytest.approx(bench_cases.gemm_flops(case) / 1e9)
    kinds = {case_of(r).options() for r in doc["cases"]}
    assert kinds == {"", "drop0.2", "loss=final", "packed", "packed loss=final",
                     "autocast-bf16"}
    text = (tmp_path / "results.md").read_text()
    assert "| mode | options | backend |" in text
    assert "| 2 | yes | no | fwdbwd | packed loss=final | auto |" in text


# --- what the runners do -----------------------------------------------------------------


def runners(case):
    """(torch.nn runner, fastrnn runner, inputs, gradient) of a layer case."""
    modules = bench_cases.build_modules(case, "cpu")
    inputs, grad = bench_cases.make_inputs(case, "cpu", count=1)
    return (*(bench_cases.make_runner(m, case, inputs, grad) for m in modules), inputs,
            grad)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_final_loss_differentiates_only_through_h_n(cell):
    """A bidirectional layer's h_n is the forward direction's last output step and the
    backward direction's first: the loss on h_n (an LSTM's c_n not included) is the loss on
    the output with its gradient zero everywhere else, and not the loss on the output."""
    final = Case(cell, "float64", 7, 3, 4, 5, bidirectional=True, loss="final")
    on_output = dataclasses.replace(final, loss="output")
    base_final, fast_final, _, grad_h = runners(final)
    base_output, fast_output, _, grad_out = runners(on_output)
    assert grad_h.shape == (2, 3, 5) and grad_out.shape == (7, 3, 10)
    only_h_n = torch.zeros_like(grad_out)
    only_h_n[-1, :, :5], only_h_n[0, :, 5:] = grad_h[0], grad_h[1]
    for run_final, run_output in ((base_final, base_output), (fast_final, fast_output)):
        got = run_final(0)[2]
        grad_out.copy_(only_h_n)
        torch.testing.assert_close(got, run_output(0)[2], rtol=1e-12, atol=1e-12)
        grad_out.normal_()  # the whole output's loss reaches every step
        assert (got - run_output(0)[2]).abs().max() > 1e-3


def test_packed_runner_reads_the_packed_rows():
    case = Case("GRU", "float32", 6, 4, 3, 5, layers=2, bidirectional=True, packed=True,
                loss="final")
    run_base, run_fast, inputs, grad = runners(case)
    packed = inputs[0]
    assert isinstance(packed, torch.nn.utils.rnn.PackedSequence)
    assert packed.data.shape == (case.rows(), 3) and packed.data.is_leaf
    assert packed.batch_sizes.tolist() == [sum(n > t for n in case.lengths()) for t in range(6)]
    output, h_n, grad_x = run_fast(0)
    assert output.shape == (case.rows(), 10) and h_n.shape == grad.shape == (2, 4, 5)
    assert grad_x.shape == (case.rows(), 3)


def test_dropout_draws_masks_and_parity_calls_share_them(monkeypatch):
    case = Case("LSTM", "float32", 5, 3, 4, 6, layers=2, dropout=0.5)
    run_base, run_fast, _, _ = runners(case)
    first, second = run_fast(0)[0], run_fast(0)[0]
    assert not torch.equal(first, second)  # training mode: a fresh mask per call
    for got, want in zip(bench_cases.seeded(run_fast), bench_cases.seeded(run_base)):
        torch.testing.assert_close(got, want, rtol=5e-5, atol=5e-5)
    assert bench_cases.parity_not_compared(case, "cpu") is None
    # cuDNN draws its own masks: there the case is not compared, and the record says why
    monkeypatch.setattr(bench_cases, "baseline_name", lambda device: "cudnn")
    assert "cuDNN" in bench_cases.parity_not_compared(case, "cuda")
    assert bench_cases.parity_not_compared(dataclasses.replace(case, dropout=0.0),
                                           "cuda") is None
    assert bench_cases.NOT_COMPARED in bench_cases.PARITY_OK  # not a parity failure


def test_autocast_runs_the_float32_modules_in_bfloat16():
    case = Case("LSTM", "float32", 4, 2, 8, 8, mode="fwd", autocast="bfloat16")
    run_base, run_fast, inputs, _ = runners(case)
    assert inputs[0].dtype == torch.float32
    for run in (run_base, run_fast):
        output, h_n = run(0)
        assert output.dtype == torch.bfloat16  # the call ran under bfloat16 autocast
    plain = runners(dataclasses.replace(case, autocast=None))[1]
    assert plain(0)[0].dtype == torch.float32
