"""Tests of fastrnn.bench: timing, grids, the results schema, --compare and the plot."""

import csv
import json
import os

import pytest
import torch

from fastrnn.bench import compare as comparing
from fastrnn.bench.__main__ import main
from fastrnn.bench.cases import gemm_flops, tolerance
from fastrnn.bench.grids import GRIDS, KEY_FIELDS, Case
from fastrnn.bench.plot import plot_speedup
from fastrnn.bench.timing import CpuTimer, interleaved

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- timing ------------------------------------------------------------------------------


class FakeClock:
    """A clock that only moves when a fake implementation 'runs'."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def fake_impls(clock, log, durations):
    """{name: fn(index)} that log their calls and advance the clock by durations[name][i]."""
    def make(name):
        def fn(index):
            log.append((name, index))
            clock.now += durations[name][index % len(durations[name])]
        return fn
    return {name: make(name) for name in durations}


def test_interleaved_order_warmup_and_median():
    clock, log = FakeClock(), []
    fns = fake_impls(clock, log, {"a": [5.0, 1.0, 3.0, 100.0, 2.0], "b": [2.0, 2.0, 9.0]})
    timing = interleaved(fns, repeats=5, warmup=2, timer=CpuTimer(clock))
    warm = [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    timed = [(name, i) for i in range(5) for name in ("a", "b")]
    assert log == warm + timed  # warm-up first, then A B A B ..., each with its repeat index
    assert timing.samples["a"] == [5.0, 1.0, 3.0, 100.0, 2.0]
    assert timing.samples["b"] == [2.0, 2.0, 9.0, 2.0, 2.0]
    assert timing.median == {"a": 3.0, "b": 2.0}  # the 100 s outlier does not matter
    assert timing.repeats == 5


def test_interleaved_min_time_adds_rounds_and_caps():
    clock, log = FakeClock(), []
    fns = fake_impls(clock, log, {"a": [1.0], "b": [0.5]})
    timing = interleaved(fns, repeats=2, warmup=0, min_time=4.0, timer=CpuTimer(clock))
    assert timing.repeats == 8  # b needs 8 rounds of 0.5 s to reach 4 s
    assert len(timing.samples["a"]) == len(timing.samples["b"]) == 8
    capped = interleaved(fns, repeats=2, warmup=0, min_time=1e9, max_repeats=6,
                         timer=CpuTimer(clock))
    assert capped.repeats == 6
    with pytest.raises(ValueError):
        interleaved(fns, repeats=0)


# --- grids, flops, tolerance -------------------------------------------------------------


def test_core_grid():
    cases = GRIDS["core"].cases("cpu")
    assert GRIDS["core"].threads == 2
    assert len(cases) == 15
    assert {c.cell for c in cases} == {"LSTM", "GRU", "RNN_TANH"}
    assert {c.mode for c in cases} == {"fwdbwd"} and {c.dtype for c in cases} == {"float32"}
    assert {(c.T, c.B, c.I, c.H) for c in cases} == {
        (100, 64, 512, 512), (100, 32, 128, 128), (50, 8, 64, 64), (200, 1, 256, 256),
        (25, 256, 256, 256)}


def test_anchor_grid_half_precision_runs_float32_on_cpu():
    cpu = GRIDS["anchors"].cases("cpu")
    gpu = GRIDS["anchors"].cases("cuda")
    assert {c.dtype for c in cpu} == {"float32"}
    assert {c.dtype for c in gpu if c.T == 1024} == {"bfloat16", "float16"}
    assert all("CPU" in c.note for c in cpu if c.T == 1024)
    batch1 = [c for c in cpu if "batch-1" in c.note]
    assert batch1 and all(c.B == 1 and c.mode == "fwd" for c in batch1)
    haste = {(c.B, c.H) for c in cpu if c.note == "haste sweep"}
    assert haste == {(b, h) for b in (1, 16, 32, 64, 128) for h in (128, 256, 512, 1024, 2048)}


def test_gemm_flops_and_tolerance():
    case = Case("LSTM", "float32", T=10, B=2, I=3, H=5, mode="fwd")
    assert gemm_flops(case) == 2 * 10 * 2 * 4 * 5 * (3 + 5)
    deep = Case("GRU", "float32", 10, 2, 3, 5, layers=2, bidirectional=True, mode="fwdbwd")
    per_dir = lambda i: 2 * 10 * 2 * 3 * 5 * (i + 5)
    assert gemm_flops(deep) == 3 * 2 * (per_dir(3) + per_dir(10))
    assert tolerance("float32", 100) == 5e-5 and tolerance("float32", 400) == 1e-4
    assert tolerance("float64", 3) == 1e-10 and tolerance("bfloat16", 50) == 2e-2


def test_list_custom_product(capsys):
    assert main(["--cell", "rnn", "GRU", "--T", "7", "--B", "2", "--H", "8", "16",
                 "--mode", "fwd", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    assert lines[0] == "RNN_TANH f32 T=7 B=2 I=8 H=8 fwd"


def test_usage_errors(capsys):
    assert main(["--grid", "core", "--T", "5", "--list"]) == 2
    assert main(["--cell", "LSTM2", "--list"]) == 2
    assert main(["--device", "tpu", "--list"]) == 2
    assert main(["--repeats", "0", "--list"]) == 2
    if not torch.cuda.is_available():
        assert main(["--device", "cuda", "--list"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main(["--against", "x.json"])
    assert exit_info.value.code == 2


# --- one real (tiny) run: the schema -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    argv = ["--cell", "LSTM", "GRU", "--T", "3", "--B", "2", "--I", "4", "--H", "4",
            "--repeats", "2", "--warmup", "1", "--min-time", "0", "--device", "cpu",
            "--gemm-size", "256",
            "--out", str(out)]
    assert main(argv) == 0
    return out


TOP_LEVEL = {"device": str, "torch": str, "cuda": (str, type(None)),
             "cudnn": (int, type(None)), "commit": (str, type(None)), "date": str,
             "threads": int, "gemm_peak_gflops": float, "cases": list}
CASE_FIELDS = {"cell": str, "dtype": str, "T": int, "B": int, "I": int, "H": int,
               "layers": int, "bidirectional": bool, "mode": str, "fastrnn_ms": float,
               "baseline": str, "baseline_ms": float, "backend": str, "parity": str,
               "speedup": float, "us_per_step_fastrnn": float, "us_per_step_baseline": float,
               "gflops_fastrnn": float, "gflops_baseline": float, "repeats": int}


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


def test_csv_md_png_written(tiny_run):
    rows = list(csv.DictReader((tiny_run / "results.csv").open()))
    assert len(rows) == 4 and set(CASE_FIELDS) <= set(rows[0])
    md = (tiny_run / "results.md").read_text()
    assert "| cell |" in md and md.count("| LSTM |") == 2


def test_run_writes_png(tiny_run):
    pytest.importorskip("matplotlib")
    assert (tiny_run / "speedup.png").read_bytes()[:8] == PNG_MAGIC


def test_threads_option_is_recorded(tmp_path):
    before = torch.get_num_threads()
    try:
        assert main(["--T", "2", "--B", "1", "--H", "3", "--mode", "fwd", "--repeats", "1",
                     "--warmup", "0", "--min-time", "0", "--threads", "1",
                     "--gemm-size", "128",
                     "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(before)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["threads"] == 1 and len(doc["cases"]) == 1


# --- compare -----------------------------------------------------------------------------


def synthetic(ms_by_case, device="test-device", backends=("auto",)):
    """A results document as the tool writes it: every backend timed at `ms`."""
    cases = []
    for (cell, H, mode), ms in ms_by_case.items():
        key = dict(zip(KEY_FIELDS, (cell, "float32", 50, 16, H, H, 1, False, mode)))
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
    (variants: {prefix: ms factor, or None for a refusal}). setting None: not recorded."""
    doc = synthetic(ms_by_case)
    doc["settings"] = {"grid": "custom", "variants": list(variants or ())}
    if setting is not None:
        doc["settings"]["FASTRNN_PERSISTENT"] = setting
    for record in doc["cases"]:
        for key in [k for k in record if k.startswith("auto_")] + ["fastrnn_backend"]:
            del record[key]
        for prefix, factor in (variants or {}).items():
            if factor is None:
                record[f"{prefix}_skipped"] = "RuntimeError: lstm: FASTRNN_PERSISTENT=1, but no"
            else:
                record.update({f"{prefix}_ms": record["fastrnn_ms"] * factor,
                               f"{prefix}_speedup": 2.0 / factor, f"{prefix}_parity": "pass"})
    return doc


def write(path, doc):
    path.write_text(json.dumps(doc))
    return str(path)


def test_compare_detects_regression(tmp_path, capsys):
    old = write(tmp_path / "old.json", synthetic({("LSTM", 64, "fwd"): 10.0,
                                                  ("GRU", 64, "fwd"): 10.0}))
    new = write(tmp_path / "new.json", synthetic({("LSTM", 64, "fwd"): 12.0,
                                                  ("GRU", 64, "fwd"): 9.0}))
    assert main(["--compare", old, "--against", new]) == 1
    out = capsys.readouterr().out
    assert "REGRESSION" in out and "+20.0%" in out and "1 regression(s)" in out
    assert main(["--compare", old, "--against", new, "--threshold", "25"]) == 0


def test_compare_without_regression(tmp_path):
    old = write(tmp_path / "old.json", synthetic({("LSTM", 64, "fwd"): 10.0,
                                                  ("LSTM", 128, "fwd"): 20.0}))
    new = write(tmp_path / "new.json", synthetic({("LSTM", 64, "fwd"): 10.5,
                                                  ("LSTM", 256, "fwd"): 99.0}))
    assert main(["--compare", old, "--against", new]) == 0  # +5% < 10%; unmatched ignored
    result = comparing.compare(comparing.load(old), comparing.load(new))
    assert len(result["rows"]) == 1 and len(result["only_old"]) == len(result["only_new"]) == 1


def test_compare_nothing_in_common_or_bad_file(tmp_path):
    old = write(tmp_path / "old.json", synthetic({("LSTM", 64, "fwd"): 10.0}))
    new = write(tmp_path / "new.json", synthetic({("GRU", 64, "fwd"): 10.0}))
    assert main(["--compare", old, "--against", new]) == 2
    assert main(["--compare", str(tmp_path / "missing.json"), "--against", new]) == 2


# --- plot --------------------------------------------------------------------------------


def test_plot_is_png(tmp_path):
    pytest.importorskip("matplotlib")
    ms = {(cell, H, mode): 1.0 + H / 64 for cell in ("LSTM", "GRU") for H in (64, 128, 256)
          for mode in ("fwd", "fwdbwd")}
    doc = synthetic(ms)
    doc["cases"][0]["B"] = 1  # a second line in one panel
    path = plot_speedup(doc, str(tmp_path / "speedup.png"))
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    assert plot_speedup(dict(doc, cases=[]), str(tmp_path / "none.png")) is None


def test_run_then_compare_with_earlier_file(tiny_run, tmp_path, capsys):
    argv = ["--cell", "LSTM", "--T", "3", "--B", "2", "--I", "4", "--H", "4", "--mode", "fwd",
            "--repeats", "1", "--warmup", "0", "--min-time", "0", "--gemm-size", "128",
            "--compare", str(tiny_run / "results.json")]
    assert main(argv + ["--threshold", "1e9"]) == 0  # the LSTM fwd case matches
    assert "1 matched, 0 regression(s)" in capsys.readouterr().out
    assert main(argv + ["--threshold", "-100"]) == 1  # any time counts as slower


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



# --- backends (on a GPU they choose the CUDA kernels; the loop and the records run anywhere) -


def test_forced_setting_is_restored(monkeypatch):
    from fastrnn.bench.cases import forced
    seen = []
    run = forced(lambda index: seen.append(os.environ.get("FASTRNN_PERSISTENT")), "1")
    monkeypatch.delenv("FASTRNN_PERSISTENT", raising=False)
    run(0)
    assert seen == ["1"] and "FASTRNN_PERSISTENT" not in os.environ
    monkeypatch.setenv("FASTRNN_PERSISTENT", "auto")
    run(1)
    assert seen == ["1", "1"] and os.environ["FASTRNN_PERSISTENT"] == "auto"


def test_backend_defaults_and_checks():
    from fastrnn.bench.cases import BACKENDS, check_backends, default_backends
    assert BACKENDS == {"auto": "auto", "step": "0", "persistent": "1"}
    assert default_backends("cpu") == ("auto",)
    assert default_backends("cuda") == default_backends("cuda:1") == ("auto", "persistent")
    assert check_backends(["persistent", "auto", "persistent"], "cuda") == ["persistent", "auto"]
    assert check_backends(["auto", "step", "persistent"], "cuda:0") == [
        "auto", "step", "persistent"]
    with pytest.raises(ValueError, match="does not apply to the CPU"):
        check_backends(["auto", "persistent"], "cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        check_backends(["fast"], "cuda")


def test_backend_usage_errors(capsys):
    """Bad names, step/persistent on the CPU and the old --variants are argparse errors."""
    for argv, message in [
            (["--backend", "fast"], "invalid choice: 'fast'"),
            (["--backend"], "expected at least one argument"),
            (["--device", "cpu", "--backend", "persistent"], "does not apply to the CPU"),
            (["--device", "cpu", "--backend", "auto", "step"], "backend step does not apply"),
            (["--variants", "persistent"], "--variants was replaced by --backend")]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv + ["--T", "2", "--list"])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, argv
    assert main(["--device", "cpu", "--backend", "auto", "--T", "2", "--list"]) == 0


def test_backend_default_per_device_reaches_the_suite(monkeypatch):
    """CPU: auto; CUDA: auto persistent; --backend is passed on as given."""
    from fastrnn.bench import suite
    seen = []

    def fake_run_suite(cases, *, device, backends, settings, **kw):
        seen.append((device, backends))
        doc = synthetic({("LSTM", 2, "fwd"): 1.0}, backends=backends)
        doc.update(torch_device=device, cuda=None, cudnn=None, driver=None, commit="x",
                   date="today")
        return doc

    monkeypatch.setattr(suite, "run_suite", fake_run_suite)
    argv = ["--T", "2", "--B", "1", "--H", "3", "--mode", "fwd"]
    assert main(argv + ["--device", "cpu"]) == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert main(argv + ["--device", "cuda"]) == 0
    assert main(argv + ["--device", "cuda", "--backend", "step", "auto", "step"]) == 0
    assert seen == [("cpu", ["auto"]), ("cuda", ["auto", "persistent"]),
                    ("cuda", ["step", "auto"])]


def test_records_carry_the_backend_fields(tiny_run):
    from fastrnn.bench.cases import BACKEND_FIELDS
    doc = json.loads((tiny_run / "results.json").read_text())
    assert doc["settings"]["backend"] == ["auto"]
    assert doc["settings"]["FASTRNN_PERSISTENT"] == {"auto": "auto"}
    for case in doc["cases"]:
        assert case["fastrnn_backend"] == "auto"
        assert all(f"auto_{field}" in case for field in BACKEND_FIELDS)
        assert case["auto_ms"] == case["fastrnn_ms"] and case["auto_parity"] == case["parity"]
        assert case["auto_speedup"] == pytest.approx(case["baseline_ms"] / case["auto_ms"])
        assert not any(k.startswith(("step_", "persistent_", "per_step_")) for k in case)
    rows = list(csv.DictReader((tiny_run / "results.csv").open()))
    assert rows[0]["fastrnn_backend"] == "auto" and float(rows[0]["auto_ms"]) > 0
    assert "Backends timed: auto (FASTRNN_PERSISTENT=auto)" in (
        tiny_run / "results.md").read_text()


def forcing(monkeypatch, failures):
    """Makes cases.forced raise RuntimeError(failures[value]) for the settings listed, and
    run the case for the others, noting the FASTRNN_PERSISTENT each call saw."""
    from fastrnn.bench import cases
    real, seen = cases.forced, []

    def fake_forced(run, value):
        def noted(index):
            seen.append(os.environ.get("FASTRNN_PERSISTENT"))
            if value in failures:
                raise RuntimeError(failures[value])
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
    from fastrnn.bench.suite import run_suite
    forcing(monkeypatch, {"1": REFUSAL})
    case = Case("LSTM", "float32", 2, 1, 3, 3, mode="fwd")
    with pytest.raises(cases.BackendsRefused, match="persistent: lstm: FASTRNN_PERSISTENT=1"):
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


def test_the_suite_rejects_cuda_backends_on_the_cpu():
    from fastrnn.bench.suite import run_suite
    with pytest.raises(ValueError, match="does not apply to the CPU"):
        run_suite([Case("GRU", "float32", 2, 1, 3, 3, mode="fwd")], gemm_size=64,
                  backends=("auto", "step"))


def test_markdown_and_table_show_each_backend():
    from fastrnn.bench.report import markdown, table_row
    doc = synthetic({("LSTM", 64, "fwd"): 4.0, ("GRU", 64, "fwd"): 8.0},
                    backends=("auto", "step", "persistent"))
    doc.update(torch_device="cuda", cuda="13.0", cudnn=91000, driver="580.1", commit="abc",
               date="today")
    doc["settings"]["FASTRNN_PERSISTENT"] = {"auto": "auto", "step": "0", "persistent": "1"}
    common = dict(us_per_step_fastrnn=1.0, us_per_step_baseline=1.0, gflops_fastrnn=1.0,
                  pct_peak_fastrnn=1.0, gflops_baseline=1.0)
    doc["cases"][0].update(common, persistent_ms=1.0, persistent_speedup=8.0)
    doc["cases"][1].update(common, step_speedup=1.0)
    for key in ("persistent_ms", "persistent_speedup", "persistent_parity"):
        del doc["cases"][1][key]
    doc["cases"][1]["persistent_skipped"] = "RuntimeError: does not fit"
    text = markdown(doc)
    assert "persistent ms" in text and "step speedup" in text and "driver 580.1" in text
    assert "auto ms" not in text  # the first backend's figures are the fastrnn columns
    assert "persistent (FASTRNN_PERSISTENT=1)" in text
    rows = [line for line in text.splitlines() if line.startswith(("| LSTM", "| GRU"))]
    assert "| fwd | auto | 4.000 |" in rows[0]
    assert rows[0].endswith("| 4.000 | 2.00x | pass | 1.000 | 8.00x | pass |")
    assert rows[1].endswith("| 8.000 | 1.00x | pass | - | - | - |")
    assert "GRU f32 T=50 B=16 I=64 H=64 fwd: persistent refused: RuntimeError" in text
    row = table_row(doc["cases"][0])
    assert "step 4.000 ms 2.00x pass; persistent 1.000 ms 8.00x pass" in row
    assert "auto 4.000 ms" not in row


def test_plot_draws_each_backend(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    doc = synthetic({("LSTM", H, "fwd"): 1.0 + H / 64 for H in (64, 128)},
                    backends=("auto", "persistent"))
    del doc["cases"][0]["persistent_speedup"]  # a refusal: no point
    path = plot_speedup(doc, str(tmp_path / "speedup.png"))
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    old = old_format({("LSTM", H, "fwd"): 1.0 for H in (64, 128)}, {"persistent": 0.5})
    drawn = []
    import matplotlib.axes
    real_plot = matplotlib.axes.Axes.plot

    def noting_plot(self, *args, **kwargs):
        drawn.append(kwargs.get("label"))
        return real_plot(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", noting_plot)
    assert plot_speedup(old, str(tmp_path / "old.png"))
    assert drawn == ["B=16 auto", "B=16 persistent"]  # fastrnn_ms read as auto


# --- compare with files of the format before --backend --------------------------------------


def test_compare_per_backend(tmp_path, capsys):
    both = ("auto", "persistent")
    old = synthetic({("LSTM", 64, "fwd"): 10.0}, backends=both)
    new = synthetic({("LSTM", 64, "fwd"): 10.0}, backends=both)
    new["cases"][0]["persistent_ms"] = 13.0  # only the persistent kernels got slower
    result = comparing.compare(old, new)
    assert [(r["backend"], r["status"]) for r in result["rows"]] == [
        ("auto", "same"), ("persistent", "REGRESSION")]
    assert comparing.exit_code(result) == 1 and not result["warnings"]
    # a backend that ran and now refuses the shape is listed, not counted
    del new["cases"][0]["persistent_ms"]
    new["cases"][0]["persistent_skipped"] = "lstm: FASTRNN_PERSISTENT=1, but no fit"
    result = comparing.compare(old, new)
    assert result["regressions"] == 0 and result["changed"][0]["status"] == "now refused"
    assert "now refused" in comparing.format_comparison(result)
    # a backend timed in one file only is not compared, and said so
    result = comparing.compare(synthetic({("LSTM", 64, "fwd"): 10.0}), new)
    assert result["backends"] == ["auto"] and len(result["rows"]) == 1
    assert any("persistent timed only in new" in w for w in result["warnings"])


def test_compare_reads_the_older_format(tmp_path, capsys):
    old = old_format({("LSTM", 64, "fwd"): 10.0, ("GRU", 64, "fwd"): 10.0},
                     variants={"per_step": 1.0, "persistent": None})
    new = synthetic({("LSTM", 64, "fwd"): 10.0, ("GRU", 64, "fwd"): 10.0},
                    backends=("auto", "step", "persistent"))
    new["cases"][0]["step_ms"] = 15.0  # slower than the old file's per_step_ms
    upgraded, how = comparing.upgrade(old)
    assert "older format" in how and "per_step_* fields as step_*" in how
    assert upgraded["settings"]["backend"] == ["auto", "step", "persistent"]
    record = upgraded["cases"][0]
    assert record["auto_ms"] == 10.0 and record["step_ms"] == 10.0
    assert record["persistent_skipped"].startswith("RuntimeError")
    assert not any(k.startswith("per_step") for k in record)
    assert comparing.upgrade(new) == (new, None)

    old_path, new_path = write(tmp_path / "old.json", old), write(tmp_path / "new.json", new)
    assert main(["--compare", old_path, "--against", new_path]) == 1
    out = capsys.readouterr().out
    assert "warning: old is from an older format" in out
    assert "step" in out and "+50.0%" in out and "REGRESSION" in out
    assert out.count("now runs") == 2  # persistent refused in the old file, runs now
    assert "4 matched, 1 regression(s)" in out


def test_compare_older_format_default_setting():
    """The old fastrnn_ms is the backend its FASTRNN_PERSISTENT setting named; a file that
    did not record the setting is read as auto, and the warning says it was assumed."""
    doc = old_format({("LSTM", 64, "fwd"): 10.0}, setting="0")
    upgraded, how = comparing.upgrade(doc)
    assert upgraded["cases"][0]["step_ms"] == 10.0 and "auto_ms" not in upgraded["cases"][0]
    assert upgraded["settings"]["backend"] == ["step"] and "FASTRNN_PERSISTENT=0" in how
    upgraded, how = comparing.upgrade(old_format({("LSTM", 64, "fwd"): 10.0}, setting=None))
    assert upgraded["cases"][0]["auto_ms"] == 10.0 and "assumed" in how
