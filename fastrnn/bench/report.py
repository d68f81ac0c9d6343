"""Presenting results: the live terminal table with a progress bar (stderr), and the files
results.json, results.csv and results.md."""

import csv
import json
import os
import sys
import time

from .backends import BACKENDS, describe_setting
from .grids import Case, key_of


def format_ms(x):
    """A time in ms: four decimals below 0.1 ms (a microsecond call), fewer above."""
    if x is None:
        return "-"
    return (f"{x:.4f}" if x < 0.1 else f"{x:.3f}" if x < 10 else f"{x:.1f}" if x < 1e4
            else f"{x:.0f}")


def _num(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


# (header, width, value(record)) for the terminal; the markdown table uses the same values.
# The fastrnn columns are those of the backend the "backend" column names (fastrnn_backend).
COLUMNS = [
    ("backend", 10, lambda r: r.get("fastrnn_backend", "-")),
    ("fastrnn ms", 10, lambda r: format_ms(r["fastrnn_ms"])),
    ("base ms", 10, lambda r: format_ms(r["baseline_ms"])),
    ("speedup", 8, lambda r: f"{r['speedup']:.2f}x"),
    ("us/step", 9, lambda r: _num(r["us_per_step_fastrnn"])),
    ("GFLOP/s", 8, lambda r: _num(r["gflops_fastrnn"])),
    ("%peak", 6, lambda r: _num(r["pct_peak_fastrnn"])),
    ("base GF/s", 9, lambda r: _num(r["gflops_baseline"])),
    ("parity", 6, lambda r: r["parity"]),
]
LABEL_WIDTH = 44  # the least width of the case column; wider for longer labels


def case_of(record):
    """The Case a result record (or skipped entry) describes (grids.key_of: a record of an
    older format is a layer call without hx)."""
    return Case(*key_of(record))


def label_width(cases):
    """The case column's width for these Cases: LABEL_WIDTH, or the longest label."""
    return max([LABEL_WIDTH] + [len(case.label()) for case in cases])


def table_header(width=LABEL_WIDTH):
    cells = [f"{'case':<{width}}"] + [f"{h:>{w}}" for h, w, _ in COLUMNS]
    line = " ".join(cells)
    return line + "\n" + "-" * len(line)


def setting_names(doc):
    """{backend: 'FASTRNN_PERSISTENT=auto'}: what each backend a results document timed was
    timed under (settings.environment, or an older document's settings.FASTRNN_PERSISTENT)."""
    settings = doc.get("settings") or {}
    if isinstance(settings.get("environment"), dict):
        return {b: describe_setting(s) for b, s in settings["environment"].items()}
    old = settings.get("FASTRNN_PERSISTENT")
    return {b: f"FASTRNN_PERSISTENT={v}" for b, v in old.items()} if isinstance(old, dict) else {}


def backends_of(doc):
    """The backends a results document timed, in the order asked for: settings.backend, or
    (a document without it) those its records have fields for."""
    listed = (doc.get("settings") or {}).get("backend")
    if isinstance(listed, list):
        return listed
    return [b for b in BACKENDS if any(f"{b}_ms" in r or f"{b}_skipped" in r
                                       for r in doc["cases"])]


def backend_summary(record):
    """'  persistent 1.23 ms 0.98x pass; step -' for the backends a record has besides the
    one its fastrnn columns show ('-': that backend refused the shape)."""
    parts = []
    for key in BACKENDS:
        if key == record.get("fastrnn_backend"):
            continue
        if f"{key}_ms" in record:
            parts.append(f"{key} {format_ms(record[f'{key}_ms'])} ms "
                         f"{record[f'{key}_speedup']:.2f}x {record[f'{key}_parity']}")
        elif f"{key}_skipped" in record:
            parts.append(f"{key} -")
    return ("  " + "; ".join(parts)) if parts else ""


def table_row(record, width=LABEL_WIDTH):
    cells = [f"{case_of(record).label():<{width}}"]
    cells += [f"{value(record):>{w}}" for _, w, value in COLUMNS]
    return " ".join(cells) + backend_summary(record)


def summary_lines(doc):
    """Header lines naming the machine and the run."""
    return [
        f"device: {doc['device']} ({doc.get('torch_device', '')}), torch {doc['torch']}, "
        f"cuda {doc['cuda']}, cudnn {doc['cudnn']}, driver {doc.get('driver')}, "
        f"threads {doc['threads']}",
        f"commit: {doc['commit']}, date: {doc['date']}, GEMM peak (float32): "
        f"{doc['gemm_peak_gflops']:.1f} GFLOP/s",
    ]


class LiveTable:
    """Listener for suite.run_suite: prints each row to `out` as its case finishes, and a
    text progress bar (done/total, elapsed, current case) to `err`: redrawn in place on a
    terminal, one line per case otherwise. label_width: the case column's (label_width())."""

    def __init__(self, total, out=sys.stdout, err=sys.stderr, width=24,
                 label_width=LABEL_WIDTH):
        self.total, self.out, self.err, self.width = total, out, err, width
        self.label_width = label_width
        self.tty = hasattr(err, "isatty") and err.isatty()
        self.started = time.monotonic()
        self.header_done = False

    def _bar(self, done, label):
        filled = int(self.width * done / max(self.total, 1))
        elapsed = int(time.monotonic() - self.started)
        return (f"[{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} "
                f"{elapsed // 60}:{elapsed % 60:02d} {label}")

    def _clear(self):
        if self.tty:
            self.err.write("\r\033[K")
            self.err.flush()

    def start(self, index, case):
        if not self.header_done:
            print(table_header(self.label_width), file=self.out, flush=True)
            self.header_done = True
        if self.tty:
            self.err.write("\r\033[K" + self._bar(index, case.label()))
        else:
            self.err.write(self._bar(index, case.label()) + "\n")
        self.err.flush()

    def done(self, index, case, record, error):
        self._clear()
        if record is not None:
            print(table_row(record, self.label_width), file=self.out, flush=True)
        else:
            print(f"{case.label():<{self.label_width}} skipped: {error}", file=self.out,
                  flush=True)
        if self.tty and index + 1 == self.total:
            self.err.write(self._bar(self.total, "done") + "\n")
            self.err.flush()


def write_json(doc, path):
    """Writes doc to path atomically (a run killed while writing leaves the old file)."""
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(path + ".tmp", path)


def write_script_outputs(doc, lines, out_dir):
    """A benchmark script's results (benchmarks/*.py): doc as results.json and the markdown
    lines as results.md, in out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    write_json(doc, os.path.join(out_dir, "results.json"))
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_csv(doc, path):
    """One row per case; the columns are the case records' keys."""
    fields = []
    for record in doc["cases"]:
        fields += [k for k in record if k not in fields]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(doc["cases"])


def markdown(doc):
    """results.md: the run's header and a markdown table of the cases: the fastrnn columns
    are those of the backend the row names (the first asked for that ran), then a time,
    speedup and parity column for each further backend, and the refusals and skipped cases
    below. kind and hx columns say what a row calls (grids.KINDS; hx: the states given),
    and an options column, where a case has any, how (Case.options: loss, packed, dropout,
    autocast)."""
    baseline = doc["cases"][0]["baseline"] if doc["cases"] else "baseline"
    head = ["cell", "kind", "dtype", "T", "B", "I", "H", "layers", "bidir", "hx", "mode",
            "backend", "fastrnn ms", f"{baseline} ms", "speedup", "us/step fastrnn",
            "us/step baseline", "GFLOP/s fastrnn", "% peak", "GFLOP/s baseline", "parity"]
    options = any(case_of(r).options() for r in doc["cases"])
    if options:
        head.insert(head.index("mode") + 1, "options")
    backends = backends_of(doc)
    extra = backends[1:]
    for key in extra:
        head += [f"{key} ms", f"{key} speedup", f"{key} parity"]
    settings = setting_names(doc)
    lines = ["# fastrnn benchmark", ""] + [f"- {line}" for line in summary_lines(doc)] + [""]
    if backends:
        named = ", ".join(f"{b} ({settings[b]})" if b in settings else b for b in backends)
        lines += [f"Backends timed: {named}. "
                  + (f"The fastrnn columns are the backend the row names: {backends[0]}, or "
                     "the next one where it refused the shape; then each further backend "
                     "(- where it refused the shape)." if extra
                     else f"The fastrnn columns are backend {backends[0]}."), ""]
    if any(case_of(r).kind != "layer" for r in doc["cases"]):
        lines += ["Times are per call: one layer call, one cell call (kind cell), or a whole "
                  "loop of T cell calls and its backward (kind cell_loop); us/step is a "
                  "call's time over T (per call where T is 1). Kind dilated: the baseline "
                  "column is the same dilated stack as a Python loop over torch.nn's cells; "
                  "kind dilated_interleaved: torch.nn layers on the interleaved subsequences; "
                  "kind clockwork: the same clockwork RNN as a Python loop over torch ops "
                  "(GFLOP/s counted as for a full RNN of its size); kind variant: the same "
                  "variant as a Python loop over torch ops.",
                  ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    refusals = []
    for r in doc["cases"]:
        case = case_of(r)
        cells = [case.cell, case.kind, case.dtype, case.T, case.B, case.I, case.H,
                 case.layers, "yes" if case.bidirectional else "no",
                 "yes" if case.hx else "no", case.mode] + (
                [case.options() or "-"] if options else []) + [
                 r.get("fastrnn_backend", "-"), format_ms(r["fastrnn_ms"]),
                 format_ms(r["baseline_ms"]), f"{r['speedup']:.2f}x",
                 _num(r["us_per_step_fastrnn"]), _num(r["us_per_step_baseline"]),
                 _num(r["gflops_fastrnn"]), _num(r["pct_peak_fastrnn"]),
                 _num(r["gflops_baseline"]), r["parity"]]
        for key in extra:
            timed = f"{key}_ms" in r
            cells += [format_ms(r[f"{key}_ms"]) if timed else "-",
                      f"{r[f'{key}_speedup']:.2f}x" if timed else "-",
                      r[f"{key}_parity"] if timed else "-"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
        refusals += [f"{case_of(r).label()}: {key} refused: {r[f'{key}_skipped']}"
                     for key in backends if f"{key}_skipped" in r]
    if refusals:
        lines += ["", "Refused (the forced backend does not take the shape):", ""]
        lines += [f"- {line}" for line in refusals]
    for s in doc.get("skipped", []):
        lines.append(f"\nSkipped: {case_of(s).label()}: {s['reason']}")
    return "\n".join(lines) + "\n"


def write_outputs(doc, out_dir):
    """Writes results.json, results.csv and results.md under out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, n) for n in ("results.json", "results.csv", "results.md")]
    write_json(doc, paths[0])
    write_csv(doc, paths[1])
    with open(paths[2], "w") as f:
        f.write(markdown(doc))
    return paths
