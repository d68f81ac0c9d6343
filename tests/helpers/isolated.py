"""Groups of cases run in a child process (a test file run as a script, one group a run),
so that a segfault or an abort fails the tests instead of ending the test run.

A test file holds name -> case tables and a runner per group; under `if __name__ ==
"__main__"` it calls run_group(GROUPS, sys.argv[1]); its tests read the outcomes through
child_results(__file__).
"""

import json
import os
import subprocess
import sys

import torch

from helpers.paths import child_env


def outcome(fn):
    """({"error": None}, fn()) or ({"error": exception type, "message": ...}, None)."""
    try:
        result = fn()
    except BaseException as error:  # noqa: BLE001 - every exception is a result here
        return {"error": type(error).__name__, "message": str(error)[:300]}, None
    return {"error": None}, result


def run_group(groups, group):
    """In the child: runs every case of groups[group] = (cases, runner) and prints
    {case: runner(case)} as JSON."""
    cases, runner = groups[group]
    results = {}
    for name in cases:
        print(f"case {name}", file=sys.stderr, flush=True)  # the last one, after a crash
        torch.manual_seed(0)
        results[name] = runner(name)
    print(json.dumps(results))


def child_results(script):
    """group -> {case: outcome}, each group from its own run of `script`."""
    cache = {}

    def get(group):
        if group not in cache:
            proc = subprocess.run([sys.executable, os.path.abspath(script), group],
                                  capture_output=True, text=True, timeout=300,
                                  env=child_env())
            last = proc.stderr.strip().splitlines()[-1:] or [""]
            assert proc.returncode == 0, (f"the {group} child died (code {proc.returncode}) "
                                          f"at {last[0]!r}:\n{proc.stderr[-3000:]}")
            cache[group] = json.loads(proc.stdout.strip().splitlines()[-1])
        return cache[group]
    return get
