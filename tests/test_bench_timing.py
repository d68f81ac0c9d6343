"""Tests of fastrnn.bench's measurement: the interleaved timing loop, the grids of cases,
the GEMM flop count and the parity tolerance."""

import pytest

from fastrnn._ops import GATES
from fastrnn.bench.cases import gemm_flops, tolerance
from fastrnn.bench.catalog import GRIDS
from fastrnn.bench.grids import Case
from fastrnn.bench.timing import CpuTimer, interleaved


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
    assert gemm_flops(case) == 2 * 10 * 2 * GATES["LSTM"] * 5 * (3 + 5)
    deep = Case("GRU", "float32", 10, 2, 3, 5, layers=2, bidirectional=True, mode="fwdbwd")
    per_dir = lambda i: 2 * 10 * 2 * GATES["GRU"] * 5 * (i + 5)
    assert gemm_flops(deep) == 3 * 2 * (per_dir(3) + per_dir(10))
    assert tolerance("float32", 100) == 5e-5 and tolerance("float32", 400) == 1e-4
    assert tolerance("float64", 3) == 1e-10 and tolerance("bfloat16", 50) == 2e-2


# --- calls of microseconds: batched samples, settings outside the timed region -----------


def test_min_sample_batches_calls_per_sample():
    """The last warm-up round is timed; each sample is then enough calls of the fastest
    implementation to last min_sample, the same count for each, and reads per call."""
    clock, log = FakeClock(), []
    fns = fake_impls(clock, log, {"a": [1.0], "b": [0.25]})
    timing = interleaved(fns, repeats=2, warmup=1, min_sample=1.0, timer=CpuTimer(clock))
    assert timing.calls == 4  # 1.0 / 0.25
    assert log[:2] == [("a", 0), ("b", 0)]  # the warm-up round, timed to choose calls
    assert log[2:] == [(name, r * 4 + j) for r in range(2) for name in ("a", "b")
                       for j in range(4)]
    assert timing.samples == {"a": [1.0, 1.0], "b": [0.25, 0.25]}
    assert timing.median == {"a": 1.0, "b": 0.25}
    # min_time counts every call of a sample: b's 2 samples of 4 x 0.25 s reach 2 s
    clock, log = FakeClock(), []
    fns = fake_impls(clock, log, {"a": [1.0], "b": [0.25]})
    timing = interleaved(fns, repeats=1, warmup=0, min_sample=1.0, min_time=2.0,
                         timer=CpuTimer(clock))
    assert timing.calls == 4 and timing.repeats == 2
    assert log[:2] == [("a", 0), ("b", 0)]  # warmup 0: one timed warm-up round is added
    capped = interleaved(fns, repeats=1, warmup=0, min_sample=1e9, max_calls=7,
                         timer=CpuTimer(clock))
    assert capped.calls == 7


def test_settings_are_entered_around_each_sample_untimed():
    import contextlib
    clock, log, entered = FakeClock(), [], []
    fns = fake_impls(clock, log, {"a": [1.0], "b": [2.0]})

    @contextlib.contextmanager
    def costly_setting():
        entered.append(len(log))
        clock.now += 100.0  # a setting's cost must not reach the samples
        yield

    timing = interleaved(fns, repeats=3, warmup=1, timer=CpuTimer(clock),
                         settings={"a": costly_setting})
    assert timing.samples == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    assert entered == [0, 2, 4, 6]  # before each call of a: the warm-up one, then 3 samples
