"""fastrnn.ClockworkRNN against what users run today, on the CPU.

    python benchmarks/clockwork.py [--steps 256] [--batch 32] [--hidden 256] [--rounds 5]
                                   [--periods 1 2 4 8] [--out DIR]

Runners, all with the same input size as hidden size, float32, interleaved round by
round, best time of each:
- the same clockwork RNN as a Python loop over torch ops, as published clockwork code
  writes it: each step the full pre-activation with W_hh masked to its allowed blocks, the
  active modules' units replaced (torch.where);
- a full RNN of the same hidden size: fastrnn.RNN and torch.nn.RNN (tanh).
Modes: forward (no_grad) and forward+backward (loss on the output and h_n). The loop's
outputs are checked against fastrnn's first. Writes results.json and results.md to --out.
"""

import argparse
import time

import torch

import fastrnn
from fastrnn.bench.machine import describe, settle_allocator
from fastrnn.bench.report import write_script_outputs
from fastrnn.bench.loops import ClockworkLoop


def timed(fn, backward):
    x = fn.input
    start = time.perf_counter()
    if backward:
        y, h = fn(x)
        (y.sum() + h.sum()).backward()
    else:
        with torch.no_grad():
            fn(x)
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--periods", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    size = args.hidden
    clockwork = fastrnn.ClockworkRNN(size, size, periods=args.periods)
    runners = {"fastrnn.ClockworkRNN": clockwork, "clockwork Python loop": ClockworkLoop(clockwork),
               "fastrnn.RNN (full)": fastrnn.RNN(size, size),
               "torch.nn.RNN (full)": torch.nn.RNN(size, size)}
    x = torch.randn(args.steps, args.batch, size, requires_grad=True)
    for runner in runners.values():
        runner.input = x
    with torch.no_grad():
        error = (runners["clockwork Python loop"](x)[0] - clockwork(x)[0]).abs().max().item()
    assert error < 1e-4, f"the loop and fastrnn differ by {error}"
    settle_allocator()  # as the grids' runs: see fastrnn/bench/machine.py
    results = {}
    for mode, backward in (("fwd", False), ("fwd+bwd", True)):
        times = {name: [] for name in runners}
        for name, runner in runners.items():  # warm-up
            timed(runner, backward)
        for _ in range(args.rounds):
            for name, runner in runners.items():
                times[name].append(timed(runner, backward))
        results[mode] = times
    machine = describe("cpu")
    base = "fastrnn.ClockworkRNN"
    lines = [f"# Clockwork RNN, periods {tuple(args.periods)}: T={args.steps}, B={args.batch}, "
             f"I=H={size}, float32", "",
             f"Machine: {machine['device']}, {machine['threads']} threads, torch "
             f"{machine['torch']}, commit {machine['commit']}. Max |loop - fastrnn| = "
             f"{error:.1e}.", "",
             f"| mode | runner | best of {args.rounds} (ms) | fastrnn.ClockworkRNN's speed-up |",
             "|---|---|---|---|"]
    for mode, times in results.items():
        fastest = min(times[base])
        lines += [f"| {mode} | {name} | {min(t) * 1e3:.1f} | {min(t) / fastest:.2f}x |"
                  for name, t in times.items()]
    print("\n".join(lines))
    if args.out:
        write_script_outputs({"args": vars(args), "machine": machine, "max_abs_error": error,
                              "seconds": results}, lines, args.out)

if __name__ == "__main__":
    main()
