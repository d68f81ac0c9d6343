"""Compares two results documents case by case (matched on cell, dtype, T, B, I, H, layers,
bidirectional, mode, kind, hx, loss, packed, dropout, autocast: grids.KEY_FIELDS) and
backend by backend, and finds fastrnn regressions. A record without the later fields (from
before they were added) has their defaults, grids.KEY_DEFAULTS (a layer call without hx,
the loss on the output, dense, no dropout, no autocast), so it matches the same case of a
newer document.

A regression is a matched case whose time on a backend both documents timed
(<backend>_ms, see backends.BACKENDS) grew by more than `threshold` (a fraction: 0.10 = 10%
slower). A backend that ran in one document and refused the shape in the other is listed,
not counted. Exit codes (see exit_code): 0 no regression, 1 regression(s), 2 nothing to
compare (no case and backend in common).

Documents from before the backends (no settings.backend list) are read as follows: their
fastrnn_ms and speedup/parity fields are the backend their FASTRNN_PERSISTENT setting names
(auto when they do not record one: the default), their per_step_* fields are step_*, and
their persistent_* fields are persistent_* (the same setting, FASTRNN_PERSISTENT=1).
"""

import json

from .backends import BACKENDS, DEVICE_BACKENDS
from .grids import KEY_FIELDS, key_of
from .report import backends_of, case_of, format_ms, label_width

# the kernel variants of the older format: {its record prefix: backend}
OLD_VARIANTS = {"per_step": "step", "persistent": "persistent"}
_OLD_VARIANT_FIELDS = ("ms", "speedup", "us_per_step", "parity", "parity_max_abs_err",
                       "skipped")
# FASTRNN_PERSISTENT's values in those documents, which had the CUDA backends only:
# {value: backend}
_SETTING_BACKEND = {BACKENDS[name]["FASTRNN_PERSISTENT"]: name
                    for name in DEVICE_BACKENDS["cuda"]}


def load(path):
    with open(path) as f:
        doc = json.load(f)
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise ValueError(f"{path}: not a fastrnn.bench results file (no 'cases' list)")
    return doc


def upgrade(doc):
    """(document in the present format, None) for a document with a backend list; for an
    older one, (a converted copy, a sentence saying how it was read)."""
    settings = doc.get("settings") or {}
    if isinstance(settings.get("backend"), list):
        return doc, None
    setting = settings.get("FASTRNN_PERSISTENT")
    default = _SETTING_BACKEND.get(str(setting), "auto")
    cases, renamed = [], False
    for old in doc["cases"]:
        record = dict(old)
        for prefix, backend in OLD_VARIANTS.items():
            for field in _OLD_VARIANT_FIELDS:
                if f"{prefix}_{field}" in old:
                    record.pop(f"{prefix}_{field}")
                    record[f"{backend}_{field}"] = old[f"{prefix}_{field}"]
                    renamed = renamed or prefix != backend
        if f"{default}_ms" not in record and f"{default}_skipped" not in record:
            record.update({f"{default}_ms": old["fastrnn_ms"],
                           f"{default}_speedup": old.get("speedup"),
                           f"{default}_parity": old.get("parity")})
        record.setdefault("fastrnn_backend", default)
        cases.append(record)
    found = [b for b in BACKENDS if b != default and any(
        f"{b}_ms" in r or f"{b}_skipped" in r for r in cases)]
    upgraded = dict(doc, cases=cases, settings=dict(settings, backend=[default] + found))
    how = ("from an older format (no backend list): its fastrnn_ms read as backend "
           + (f"{default} (FASTRNN_PERSISTENT={setting})" if setting is not None
              else "auto (FASTRNN_PERSISTENT not recorded: assumed the default)")
           + ("; its per_step_* fields as step_*" if renamed else ""))
    return upgraded, how


def _index(doc):
    return {key_of(r): r for r in doc["cases"]}


def compare(old, new, threshold=0.10):
    """Matches the cases of two documents and, within a case, the backends both timed.
    Returns a dict: rows (one per matched case and backend: key, backend, old_ms, new_ms,
    change (fraction, + = slower), status 'REGRESSION', 'faster' or 'same'), changed (a
    backend that ran in one and refused the shape in the other: key, backend, status
    'now refused' or 'now runs'), only_old and only_new (unmatched case keys), backends
    (those compared), regressions (count), warnings (including how an older-format document
    was read)."""
    old, old_how = upgrade(old)
    new, new_how = upgrade(new)
    old_cases, new_cases = _index(old), _index(new)
    backends = [b for b in backends_of(new) if b in backends_of(old)]
    rows, changed = [], []
    for key, after in new_cases.items():
        before = old_cases.get(key)
        if before is None:
            continue
        for backend in backends:
            ms = f"{backend}_ms"
            if ms in before and ms in after:
                change = after[ms] / before[ms] - 1.0
                status = ("REGRESSION" if change > threshold
                          else "faster" if change < -threshold else "same")
                rows.append({"key": key, "backend": backend, "old_ms": before[ms],
                             "new_ms": after[ms], "change": change, "status": status,
                             "old_speedup": before.get(f"{backend}_speedup"),
                             "new_speedup": after.get(f"{backend}_speedup")})
            elif ms in before and f"{backend}_skipped" in after:
                changed.append({"key": key, "backend": backend, "status": "now refused",
                                "reason": after[f"{backend}_skipped"]})
            elif ms in after and f"{backend}_skipped" in before:
                changed.append({"key": key, "backend": backend, "status": "now runs",
                                "reason": before[f"{backend}_skipped"]})
    warnings = [f"{field} differs: {old.get(field)!r} -> {new.get(field)!r}"
                for field in ("device", "threads", "torch") if old.get(field) != new.get(field)]
    warnings += [f"{name} is {how}" for name, how in (("old", old_how), ("new", new_how)) if how]
    for name, doc, other in (("old", old, new), ("new", new, old)):
        alone = [b for b in backends_of(doc) if b not in backends_of(other)]
        if alone:
            warnings.append(f"backend {', '.join(alone)} timed only in {name}: not compared")
    return {
        "rows": rows,
        "changed": changed,
        "only_old": [k for k in old_cases if k not in new_cases],
        "only_new": [k for k in new_cases if k not in old_cases],
        "backends": backends,
        "regressions": sum(r["status"] == "REGRESSION" for r in rows),
        "warnings": warnings,
        "threshold": threshold,
    }


def _case(key):
    return case_of(dict(zip(KEY_FIELDS, key)))


def _label(key):
    return _case(key).label()


def format_comparison(result, old_name="old", new_name="new"):
    """Human-readable report of compare()'s result."""
    keys = ([r["key"] for r in result["rows"] + result["changed"]] + result["only_old"]
            + result["only_new"])
    width = label_width([_case(key) for key in keys])
    lines = [f"comparing the time of each backend ({', '.join(result['backends']) or 'none'} "
             f"in both): {old_name} -> {new_name} "
             f"(regression: more than {result['threshold'] * 100:.0f}% slower)"]
    lines += [f"warning: {w}" for w in result["warnings"]]
    lines.append(f"{'case':<{width}} {'backend':<10} {'old ms':>10} {'new ms':>10} "
                 f"{'change':>8} {'speedup':>15}  status")
    for r in result["rows"]:
        speedups = ("-" if r["old_speedup"] is None or r["new_speedup"] is None
                    else f"{r['old_speedup']:.2f}->{r['new_speedup']:.2f}x")
        lines.append(f"{_label(r['key']):<{width}} {r['backend']:<10} "
                     f"{format_ms(r['old_ms']):>10} {format_ms(r['new_ms']):>10} "
                     f"{r['change'] * 100:>+7.1f}% {speedups:>15}  {r['status']}")
    for r in result["changed"]:
        lines.append(f"{_label(r['key']):<{width}} {r['backend']:<10} {r['status']} "
                     f"({'now' if r['status'] == 'now refused' else 'was'}: {r['reason']})")
    for key in result["only_old"]:
        lines.append(f"{_label(key):<{width}} only in {old_name}")
    for key in result["only_new"]:
        lines.append(f"{_label(key):<{width}} only in {new_name}")
    lines.append(f"{len(result['rows'])} matched, {result['regressions']} regression(s)")
    return "\n".join(lines)


def exit_code(result):
    """1 on any regression, 2 when no case and backend matched, else 0."""
    if result["regressions"]:
        return 1
    return 0 if result["rows"] else 2
