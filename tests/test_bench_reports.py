"""Tests of fastrnn.bench's reports: the results files of a run (JSON, CSV, Markdown, PNG),
the Markdown table and the speed-up plot, with a column and a line per backend."""

import csv

import pytest

from fastrnn.bench.plot import plot_speedup
from helpers.bench import CASE_FIELDS, PNG_MAGIC, old_format, synthetic


# --- the files of a run ------------------------------------------------------------------


def test_csv_md_png_written(tiny_run):
    rows = list(csv.DictReader((tiny_run / "results.csv").read_text().splitlines()))
    assert len(rows) == 4 and set(CASE_FIELDS) <= set(rows[0])
    md = (tiny_run / "results.md").read_text()
    assert "| cell |" in md and md.count("| LSTM |") == 2


def test_run_writes_png(tiny_run):
    pytest.importorskip("matplotlib")
    assert (tiny_run / "speedup.png").read_bytes()[:8] == PNG_MAGIC


# --- markdown ----------------------------------------------------------------------------


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
