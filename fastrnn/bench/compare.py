"""Compares two results documents case by case (matched on cell, dtype, T, B, I, H, layers,
bidirectional, mode) and finds fastrnn regressions.

A regression is a matched case whose fastrnn_ms grew by more than `threshold` (a fraction:
0.10 = 10% slower). Exit codes (see exit_code): 0 no regression, 1 regression(s), 2 nothing
to compare (no case in common).
"""

import json

from .grids import KEY_FIELDS
from .report import case_of


def load(path):
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise ValueError(f"{path}: not a fastrnn.bench results file (no 'cases' list)")
    return doc


def _index(doc):
    return {tuple(r[k] for k in KEY_FIELDS): r for r in doc["cases"]}


def compare(old, new, threshold=0.10):
    """Matches the cases of two documents. Returns a dict: rows (one per matched case:
    key, old_ms, new_ms, change (fraction, + = slower), status 'REGRESSION', 'faster' or
    'same'), only_old and only_new (unmatched keys), regressions (count), warnings."""
    old_cases, new_cases = _index(old), _index(new)
    rows = []
    for key, after in new_cases.items():
        before = old_cases.get(key)
        if before is None:
            continue
        change = after["fastrnn_ms"] / before["fastrnn_ms"] - 1.0
        status = ("REGRESSION" if change > threshold
                  else "faster" if change < -threshold else "same")
        rows.append({"key": key, "old_ms": before["fastrnn_ms"], "new_ms": after["fastrnn_ms"],
                     "change": change, "status": status,
                     "old_speedup": before.get("speedup"), "new_speedup": after.get("speedup")})
    warnings = [f"{field} differs: {old.get(field)!r} -> {new.get(field)!r}"
                for field in ("device", "threads", "torch") if old.get(field) != new.get(field)]
    return {
        "rows": rows,
        "only_old": [k for k in old_cases if k not in new_cases],
        "only_new": [k for k in new_cases if k not in old_cases],
        "regressions": sum(r["status"] == "REGRESSION" for r in rows),
        "warnings": warnings,
        "threshold": threshold,
    }


def _label(key):
    return case_of(dict(zip(KEY_FIELDS, key))).label()


def format_comparison(result, old_name="old", new_name="new"):
    """Human-readable report of compare()'s result."""
    lines = [f"comparing fastrnn_ms: {old_name} -> {new_name} "
             f"(regression: more than {result['threshold'] * 100:.0f}% slower)"]
    lines += [f"warning: {w}" for w in result["warnings"]]
    lines.append(f"{'case':<44} {'old ms':>10} {'new ms':>10} {'change':>8} "
                 f"{'speedup':>15}  status")
    for r in result["rows"]:
        speedups = ("-" if r["old_speedup"] is None or r["new_speedup"] is None
                    else f"{r['old_speedup']:.2f}->{r['new_speedup']:.2f}x")
        lines.append(f"{_label(r['key']):<44} {r['old_ms']:>10.3f} {r['new_ms']:>10.3f} "
                     f"{r['change'] * 100:>+7.1f}% {speedups:>15}  {r['status']}")
    for key in result["only_old"]:
        lines.append(f"{_label(key):<44} only in {old_name}")
    for key in result["only_new"]:
        lines.append(f"{_label(key):<44} only in {new_name}")
    lines.append(f"{len(result['rows'])} matched, {result['regressions']} regression(s)")
    return "\n".join(lines)


def exit_code(result):
    """1 on any regression, 2 when no case matched, else 0."""
    if result["regressions"]:
        return 1
    return 0 if result["rows"] else 2
