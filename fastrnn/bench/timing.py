"""Honest timing: warm-up, then the implementations interleaved (A B A B ...), median of repeats.

Every callable takes the repeat index, so it can cycle through pre-generated inputs (a
distinct input per repeat). A timer is a callable timer(fn, arg) -> seconds: CpuTimer (a wall
clock, time.perf_counter by default, injectable for tests) or CudaTimer (CUDA events, with
synchronisation before the start and after the end).
"""

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
    """Per implementation: the median and every sample (seconds); repeats per implementation."""
    median: dict
    samples: dict
    repeats: int


def interleaved(fns, *, repeats=5, warmup=2, min_time=0.0, max_repeats=1000, timer=None):
    """Times the callables in fns ({name: fn(index)}) interleaved: each round calls each
    once, in fns' order. After `warmup` untimed rounds, at least `repeats` timed rounds run,
    more while any implementation has less than `min_time` seconds of timed samples (up to
    max_repeats rounds). Returns a Timing with each one's median."""
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    timer = timer or CpuTimer()
    names = list(fns)
    for index in range(warmup):
        for name in names:
            fns[name](index)
    samples = {name: [] for name in names}
    rounds = 0
    while rounds < repeats or (
            rounds < max_repeats and min(sum(s) for s in samples.values()) < min_time):
        for name in names:
            samples[name].append(timer(fns[name], rounds))
        rounds += 1
    return Timing({name: statistics.median(s) for name, s in samples.items()}, samples, rounds)
