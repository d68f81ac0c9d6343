"""Tests of fastrnn.bench --compare: regressions between two results files, per backend,
and files of the format before --backend."""

from fastrnn.bench import compare as comparing
from fastrnn.bench.__main__ import main
from helpers.bench import old_format, synthetic, write


# --- compare -----------------------------------------------------------------------------


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


def test_run_then_compare_with_earlier_file(tiny_run, tmp_path, capsys):
    argv = ["--cell", "LSTM", "--T", "3", "--B", "2", "--I", "4", "--H", "4", "--mode", "fwd",
            "--repeats", "1", "--warmup", "0", "--min-time", "0", "--gemm-size", "128",
            "--compare", str(tiny_run / "results.json")]
    assert main(argv + ["--threshold", "1e9"]) == 0  # the LSTM fwd case matches
    assert "1 matched, 0 regression(s)" in capsys.readouterr().out
    assert main(argv + ["--threshold", "-100"]) == 1  # any time counts as slower


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


# --- files of the format before --backend ------------------------------------------------


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
