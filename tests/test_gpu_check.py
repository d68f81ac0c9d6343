"""scripts/gpu_check.py, the parts that run without a GPU: the plan, the step runner (a
failing or hanging step stops nothing, the budget, concurrent groups, the summary) and the
device check's compilation."""

import os
import shutil
import subprocess
import sys
import time

import pytest

from helpers.paths import ROOT, load_script

gpu_check = load_script("gpu_check")
PY = sys.executable


def python_step(name, code, timeout=30, with_next=False):
    return gpu_check.Step(name, timeout, [PY, "-c", code], with_next=with_next)


def test_plan_lists_the_steps_in_order_of_value(capsys):
    assert gpu_check.main(["unused-dir", "--plan"]) == 0
    printed = capsys.readouterr().out
    names = [line.split()[0] for line in printed.splitlines() if not line.startswith(" ")]
    assert names == [s.name for s in gpu_check.steps("unused-dir")]
    first = ["environment", "build", "device-check", "kernel-library", "persistent-smoke",
             "tests-ops"]
    assert names[:len(first)] == first
    assert names.index("memcheck-persistent") < names.index("bench-anchors")
    assert not os.path.exists("unused-dir")


def test_benchmarks_name_their_backends():
    benches = [s for s in gpu_check.steps("out") if s.name.startswith("bench-")]
    assert [s.name for s in benches] == ["bench-anchors", "bench-gpu"]
    for step in benches:
        command = step.command
        at = command.index("--backend")
        assert command[at + 1:at + 4] == ["auto", "step", "persistent"]
        assert "--variants" not in command and "--device" in command
        from fastrnn.bench.__main__ import _parser  # the benchmark takes the arguments
        args = _parser().parse_args(command[command.index("fastrnn.bench") + 1:])
        assert args.backend == ["auto", "step", "persistent"] and args.device == "cuda"


def test_only_rejects_unknown_steps(capsys):
    with pytest.raises(SystemExit):
        gpu_check.main(["unused-dir", "--only", "no-such-step"])
    assert "no-such-step" in capsys.readouterr().err


def test_failing_and_hanging_steps_stop_nothing(tmp_path):
    rows = gpu_check.run_all([
        python_step("hangs", "import time; time.sleep(60)", timeout=1),
        python_step("fails", "raise SystemExit(3)"),
        python_step("passes", "print('== 4 passed, 1 skipped in 0.5s ==')"),
    ], str(tmp_path), budget=60)
    results = {name: result for name, result, _ in rows}
    assert results["hangs"].startswith("TIMEOUT")
    assert results["fails"] == "FAIL (exit 3)"
    assert results["passes"] == "pass: 4 passed, 1 skipped"
    assert "4 passed" in (tmp_path / "passes.log").read_text()


def test_concurrent_group_and_budget(tmp_path):
    began = time.monotonic()
    rows = gpu_check.run_all([
        python_step("a", "import time; time.sleep(3)", with_next=True),
        python_step("b", "import time; time.sleep(3)"),
        python_step("over-budget", "print('never')"),
    ], str(tmp_path), budget=12.5)  # under 10 s left after a and b: the last cannot start
    assert time.monotonic() - began < 5.5  # a and b ran side by side
    assert [r for _, r, _ in rows] == ["pass", "pass", "skipped: out of budget"]
    table = gpu_check.summary(rows)
    assert "over-budget" in table and "seconds" in table


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="needs nvcc")
def test_device_check_compiles_for_hopper(tmp_path):
    done = subprocess.run(["nvcc", "-O3", "-std=c++17", "-gencode=arch=compute_90a,code=sm_90a",
                           "-I", os.path.join(ROOT, "csrc"), "-c",
                           os.path.join(ROOT, "tests", "native", "device_check.cu"),
                           "-o", str(tmp_path / "device_check.o")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]


def test_a_step_that_cannot_start_fails_alone(tmp_path):
    rows = gpu_check.run_all([
        gpu_check.Step("missing", 10, ["no-such-program-anywhere"], with_next=True),
        python_step("passes", "print('ok')"),
    ], str(tmp_path), budget=60)
    assert [r for _, r, _ in rows] == ["FAIL (cannot start)", "pass"]


def test_only_keeps_concurrency_between_selected_neighbours(capsys):
    gpu_check.main(["unused-dir", "--only", "build", "tests-cuda", "--plan"])
    printed = capsys.readouterr().out
    assert "(with the next)" not in printed  # build's neighbour was not selected
    gpu_check.main(["unused-dir", "--only", "build", "device-check", "--plan"])
    assert capsys.readouterr().out.count("(with the next)") == 1
