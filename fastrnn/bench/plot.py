"""speedup.png: fastrnn's speedup over the baseline by hidden size, one line per batch size.

One panel per (cell, mode), cells in rows and modes in columns; x = H (log2 axis),
y = baseline_ms / <backend>_ms, a dashed gray line at 1x. Within a panel, a line joins the
cases that differ only in H, for one backend; its label names B and any other field (dtype,
T, I, layers, bidirectional, kind, hx, loss, packed, dropout, autocast) that varies within
the panel, and the backend when the run timed more than one (the first solid with circles,
the others dashed or dotted with other markers; a backend that refused a shape has no point
there).
matplotlib (Agg backend) is imported only here, when a plot is asked for.
"""

import itertools
from collections import defaultdict

from .compare import upgrade
from .grids import CELLS, KEY_DEFAULTS, MODES
from .report import backends_of

_LINE_FIELDS = ("B", "dtype", "T", "layers", "bidirectional", "I", "kind", "hx", "loss",
                "packed", "dropout", "autocast")


def _field(record, name):
    """record[name], or the value a record from before that field has (KEY_DEFAULTS)."""
    return record.get(name, KEY_DEFAULTS.get(name))


def _line_key(record, varying):
    return tuple(_field(record, f) for f in _LINE_FIELDS if f == "B" or f in varying)


def _sortable(key):
    """A line key that sorts with None among its values (autocast None, "bfloat16")."""
    return tuple((value is not None, value) for value in key)


def _label(key, varying):
    names = [f for f in _LINE_FIELDS if f == "B" or f in varying]
    return " ".join(f"{n}={v}" for n, v in zip(names, key))


def _order(sequence, item):
    return sequence.index(item) if item in sequence else len(sequence)


def plot_speedup(doc, path):
    """Draws the speedup plot of a results document to `path` (PNG). Returns path, or None
    when there are no cases."""
    doc = upgrade(doc)[0]  # a document of the format before backends, too
    cases = doc["cases"]
    if not cases:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    backends = [b for b in backends_of(doc)
                if any(f"{b}_speedup" in r for r in cases)] or [None]
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]  # (line, marker) per backend
    panels = defaultdict(list)
    for r in cases:
        panels[(r["cell"], r["mode"])].append(r)
    cells = sorted({k[0] for k in panels}, key=lambda c: (_order(CELLS, c), c))
    modes = sorted({k[1] for k in panels}, key=lambda m: (_order(MODES, m), m))
    fig, axes = plt.subplots(len(cells), len(modes), figsize=(6.4 * len(modes),
                             4.2 * len(cells)), squeeze=False, layout="constrained")
    for (row, cell), (col, mode) in itertools.product(enumerate(cells), enumerate(modes)):
        ax, key = axes[row][col], (cell, mode)
        if key not in panels:
            ax.set_visible(False)
            continue
        records = panels[key]
        # I follows H in most grids; list it only when it varies at a fixed H.
        varying = {f for f in _LINE_FIELDS if len({_field(r, f) for r in records}) > 1}
        if "I" in varying and all(r["I"] == r["H"] for r in records):
            varying.discard("I")
        # one colour per line key
        keys = sorted({_line_key(r, varying) for r in records}, key=_sortable)
        for number, backend in enumerate(backends):
            field = f"{backend}_speedup" if backend else "speedup"  # None: no backend fields
            lines = defaultdict(list)
            for r in records:
                if r.get(field) is not None:
                    lines[_line_key(r, varying)].append((r["H"], r[field]))
            for line, points in sorted(lines.items(), key=lambda item: _sortable(item[0])):
                points.sort()
                label = _label(line, varying) + (f" {backend}" if len(backends) > 1 else "")
                linestyle, marker = styles[number % len(styles)]
                ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker,
                        linestyle=linestyle, label=label,
                        color=f"C{keys.index(line) % 10}")
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1)
        ax.set_xscale("log", base=2)
        hiddens = sorted({r["H"] for r in records})
        ax.set_xticks(hiddens, [str(h) for h in hiddens])
        ax.minorticks_off()
        ax.set_xlabel("hidden size H")
        ax.set_ylabel(f"speedup vs {records[0]['baseline']}")
        ax.set_title(f"{key[0]} {key[1]}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    named = f", backend {' / '.join(backends)}" if backends != [None] else ""
    fig.suptitle(f"fastrnn speedup on {doc['device']} (threads={doc['threads']}{named})",
                 fontsize=10)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
