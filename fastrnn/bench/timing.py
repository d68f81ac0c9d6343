"""Honest timing: warm-up, then the implementations interleaved (A B A B ...), median of repeats.

Every callable takes the call's index, so it can cycle through pre-generated inputs (a
distinct input per call). A call of microseconds is timed in batches: with min_sample, each
timed sample is `calls` consecutive calls of one implementation (the same count for all),
enough for the fastest implementation's sample to last min_sample seconds, and the sample
is its time divided by calls. An implementation's setting (such as an environment variable
it reads) is entered around each of its samples, outside the timed region, so that its cost
does not count against a call of microseconds.

A timer is a callable timer(fn, arg) -> seconds: CpuTimer (a wall clock, time.perf_counter
by default, injectable for tests) or CudaTimer (CUDA events, with synchronisation before
the start and after the end).
"""

import contextlib
import math
import statistics
import time
from dataclasses import dataclass


class CpuTimer:
    """Wall-clock time of fn(arg)."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock

    def __call__(self, fn, arg):
        start = self.clock()
        fn(arg)
        return self.clock() - start


class CudaTimer:
    """GPU time of fn(arg) on the current stream, measured with CUDA events."""

    def __init__(self, device=None):
        import torch
        self.torch = torch
        self.device = device

    def __call__(self, fn, arg):
        cuda = self.torch.cuda
        cuda.synchronize(self.device)  # nothing queued before may be counted
        start = cuda.Event(enable_timing=True)
        end = cuda.Event(enable_timing=True)
        start.record()
        fn(arg)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # elapsed_time is in ms


def timer_for(device):
    """The right timer for a torch device string ('cpu', 'cuda', 'cuda:1')."""
    return CudaTimer(device) if str(device).startswith("cuda") else CpuTimer()


@dataclass
class Timing:
    """Per implementation: the median and every sample (seconds per call); repeats (timed
    rounds) per implementation; calls per sample."""
    median: dict
    samples: dict
    repeats: int
    calls: int = 1


def batched(fn, calls):
    """fn(index) as one sample of `calls` calls: sample r runs fn(r * calls + j), j < calls."""
    if calls == 1:
        return fn

    def run(round_index):
        for j in range(calls):
            fn(round_index * calls + j)
    return run


def interleaved(fns, *, repeats=5, warmup=2, min_time=0.0, max_repeats=1000, timer=None,
                min_sample=0.0, max_calls=10000, settings=None):
    """Times the callables in fns ({name: fn(index)}) interleaved: each round takes one
    sample of each, in fns' order. After `warmup` untimed rounds, at least `repeats` timed
    rounds run, more while any implementation has less than `min_time` seconds of timed
    calls (up to max_repeats rounds). A sample is one call, or with min_sample > 0,
    `calls` calls: min_sample over the fastest implementation's time in the last warm-up
    round (one is added when warmup is 0), at most max_calls. settings (optional):
    {name: setting()}, a context manager entered around each of that implementation's
    calls or samples, untimed. Returns a Timing with each one's median time per call."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    timer = timer or CpuTimer()
    names = list(fns)
    setting = lambda name: (settings or {}).get(name, contextlib.nullcontext)()
    for index in range(warmup if min_sample <= 0 else max(warmup, 1) - 1):
        for name in names:
            with setting(name):
                fns[name](index)
    calls = 1
    if min_sample > 0:  # the last warm-up round, timed
        last = {}
        for name in names:
            with setting(name):
                last[name] = timer(fns[name], max(warmup, 1) - 1)
        calls = max(1, min(max_calls, math.ceil(min_sample / max(min(last.values()), 1e-9))))
    samples = {name: [] for name in names}
    rounds = 0
    while rounds < repeats or (
            rounds < max_repeats and min(sum(s) for s in samples.values()) * calls < min_time):
        for name in names:
            with setting(name):
                samples[name].append(timer(batched(fns[name], calls), rounds) / calls)
        rounds += 1
    return Timing({name: statistics.median(s) for name, s in samples.items()}, samples, rounds,
                  calls)
