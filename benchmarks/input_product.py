"""The layers with their input products through fastrnn::linear (oneDNN where the CPU takes it)
against the same layers through torch.addmm, in one process, on the CPU.

    python benchmarks/input_product.py [--rounds 6] [--calls 5] [--out DIR]

Per case (cell, T, B, I, H; float32, one layer), three runners interleaved round by round:
torch.nn, fastrnn with the input products through torch.addmm, and fastrnn as it is
(fastrnn._input_product's rule). Modes: forward (no_grad) and forward+backward (loss on the
output, the input's gradient formed). The lower quartile of each runner's calls is kept:
this machine's drift between processes is larger than the effect measured.
"""

import argparse
import time

import torch

import fastrnn
from fastrnn import _input_product
from fastrnn.bench.machine import describe, settle_allocator
from fastrnn.bench.report import write_script_outputs

CASES = [("LSTM", 200, 32, 100, 256), ("LSTM", 100, 32, 256, 256), ("LSTM", 100, 64, 512, 512),
         ("GRU", 200, 32, 100, 256), ("GRU", 100, 64, 512, 512), ("RNN", 200, 32, 100, 256),
         ("RNN", 100, 64, 512, 512)]


def call(module, x, backward):
    if backward:
        module(x)[0].sum().backward()
    else:
        with torch.no_grad():
            module(x)


def measure(cell, steps, batch, inputs, hidden, backward, rounds, calls):
    """Lower-quartile ms per runner."""
    torch.manual_seed(0)
    reference = getattr(torch.nn, cell)(inputs, hidden)
    layer = getattr(fastrnn, cell)(inputs, hidden)
    layer.load_state_dict(reference.state_dict())
    x = torch.randn(steps, batch, inputs, requires_grad=backward)
    threshold = _input_product.LINEAR_MIN_MULTIPLY_ADDS
    runners = {"torch.nn": (reference, threshold), "fastrnn, addmm": (layer, 1 << 62),
               "fastrnn": (layer, threshold)}
    times = {name: [] for name in runners}
    try:
        for _ in range(rounds):
            for name, (module, rule) in runners.items():
                _input_product.LINEAR_MIN_MULTIPLY_ADDS = rule
                call(module, x, backward)  # warm-up of this runner's path
                for _ in range(calls):
                    start = time.perf_counter()
                    call(module, x, backward)
                    times[name].append(time.perf_counter() - start)
    finally:
        _input_product.LINEAR_MIN_MULTIPLY_ADDS = threshold
    return {name: sorted(t)[len(t) // 4] * 1e3 for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    machine = describe("cpu")
    lines = ["# Input products through fastrnn::linear against torch.addmm, float32", "",
             f"Machine: {machine['device']}, {machine['threads']} threads, torch "
             f"{machine['torch']}, commit {machine['commit']}; "
             f"LINEAR_MIN_DEPTH {_input_product.LINEAR_MIN_DEPTH}.", "",
             "| case | mode | torch.nn ms | fastrnn, addmm ms | fastrnn ms | "
             "gain | vs torch.nn |", "|---|---|---|---|---|---|---|"]
    settle_allocator()  # as the grids' runs: see fastrnn/bench/machine.py
    results = []
    for case in CASES:
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            ms = measure(*case, backward, args.rounds, args.calls)
            results.append({"case": case, "mode": mode, "ms": ms})
            lines.append(
                f"| {case[0]} T={case[1]} B={case[2]} I={case[3]} H={case[4]} | {mode} | "
                f"{ms['torch.nn']:.1f} | {ms['fastrnn, addmm']:.1f} | {ms['fastrnn']:.1f} | "
                f"{ms['fastrnn, addmm'] / ms['fastrnn']:.2f}x | "
                f"{ms['torch.nn'] / ms['fastrnn']:.2f}x |")
            print(lines[-1], flush=True)
    if args.out:
        write_script_outputs({"args": vars(args), "machine": machine, "results": results},
                             lines, args.out)


if __name__ == "__main__":
    main()
