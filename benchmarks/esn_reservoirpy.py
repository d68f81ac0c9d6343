"""An echo state network's reservoir run by fastrnn against ReservoirPy's, same weights.

    python benchmarks/esn_reservoirpy.py [--units 2000] [--steps 10000] [--rounds 3] [--out DIR]

ReservoirPy (`Reservoir(...).run(u)`, float64, its default) and fastrnn.Reservoir (float64,
and float32) run the same W, W_in, bias and leak rate over one input sequence; the runs are
interleaved, round by round, and each one's best time is reported. The float64 states are
checked against ReservoirPy's first. Writes results.json and results.md to --out.
"""

import argparse
import time

import torch

import fastrnn
from fastrnn.bench.machine import describe, settle_allocator
from fastrnn.bench.report import write_script_outputs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--density", type=float, default=0.1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import scipy.sparse
    from reservoirpy.nodes import Reservoir as RpyReservoir

    res = fastrnn.Reservoir(1, args.units, leak_rate=0.3, spectral_radius=0.9,
                            density=args.density, bias_scaling=0.1, seed=0, dtype=torch.float64)
    u = torch.randn(args.steps, 1, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    # W sparse, as ReservoirPy draws its own
    rpy = RpyReservoir(lr=0.3, W=scipy.sparse.csr_array(res.weight_hh_l0.numpy()),
                       Win=res.weight_ih_l0.numpy(), bias=res.bias_ih_l0.numpy())
    res32 = fastrnn.Reservoir(1, args.units, seed=0, density=args.density)
    res32.load_state_dict({k: v.float() for k, v in res.state_dict().items()})
    u32 = u.float()
    with torch.no_grad():
        error = (res(u)[0] - torch.from_numpy(rpy.run(u.numpy()))).abs().max().item()
    runners = {
        "reservoirpy float64": lambda: rpy.run(u.numpy()),
        "fastrnn float64": lambda: res(u),
        "fastrnn float32": lambda: res32(u32),
    }
    settle_allocator()  # as the grids' runs: see fastrnn/bench/machine.py
    times = {name: [] for name in runners}
    with torch.no_grad():
        for _ in range(args.rounds):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    base = min(times["reservoirpy float64"])
    rows = [(name, min(t), base / min(t)) for name, t in times.items()]
    machine = describe("cpu")
    lines = [f"# Reservoir of {args.units} units ({args.density:.0%} nonzeros), "
             f"{args.steps} steps, batch 1",
             "", f"Machine: {machine['device']}, {machine['threads']} threads, torch "
             f"{machine['torch']}. Max |fastrnn float64 - ReservoirPy| = {error:.2e}.", "",
             "| runner | best of %d (s) | speed-up over ReservoirPy |" % args.rounds,
             "|---|---|---|"]
    lines += [f"| {name} | {t:.3f} | {s:.2f}x |" for name, t, s in rows]
    print("\n".join(lines))
    if args.out:
        write_script_outputs({"args": vars(args), "machine": machine, "max_abs_error": error,
                              "seconds": times}, lines, args.out)

if __name__ == "__main__":
    main()
