"""Times fastrnn against torch.nn on the CPU, forward+backward, interleaved, median of repeats."""
import argparse
import statistics
import time

import torch

import fastrnn

GRID = [(100, 64, 512, 512), (100, 32, 128, 128), (50, 8, 64, 64), (200, 1, 256, 256),
        (25, 256, 256, 256)]
CELLS = {"LSTM": (torch.nn.LSTM, fastrnn.LSTM), "GRU": (torch.nn.GRU, fastrnn.GRU),
         "RNN": (torch.nn.RNN, fastrnn.RNN)}


def step(module, x):
    out, _ = module(x)
    out.sum().backward()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cells", nargs="*", default=list(CELLS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ratios = {}
    for cell in args.cells:
        ref_cls, ours_cls = CELLS[cell]
        for T, B, I, H in GRID:
            ref = ref_cls(I, H)
            ours = ours_cls(I, H)
            ours.load_state_dict(ref.state_dict())
            xs = [torch.randn(T, B, I, requires_grad=True) for _ in range(3)]
            times = {"ref": [], "ours": []}
            for r in range(args.repeats + 1):
                for name, mod in (("ref", ref), ("ours", ours)):
                    t0 = time.perf_counter()
                    step(mod, xs[r % 3])
                    dt = time.perf_counter() - t0
                    if r:
                        times[name].append(dt)
            ref_ms = statistics.median(times["ref"]) * 1e3
            ours_ms = statistics.median(times["ours"]) * 1e3
            ratios.setdefault(cell, []).append(ref_ms / ours_ms)
            print(f"{cell:5s} T={T:4d} B={B:4d} I={I:4d} H={H:4d}  torch.nn {ref_ms:9.2f} ms "
                  f"({ref_ms * 1e3 / T:8.1f} us/step)  fastrnn {ours_ms:9.2f} ms "
                  f"({ours_ms * 1e3 / T:8.1f} us/step)  speedup {ref_ms / ours_ms:5.2f}x",
                  flush=True)
    for cell, r in ratios.items():
        print(f"{cell}: geometric mean speedup {statistics.geometric_mean(r):.2f}x")


if __name__ == "__main__":
    main()
