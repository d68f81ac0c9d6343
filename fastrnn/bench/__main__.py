"""Command line of the benchmark: `python -m fastrnn.bench` / `fastrnn-bench`.

Times fastrnn against torch.nn (torch-cpu on the CPU, cuDNN on CUDA) for a named grid or the
shapes given on the command line, once per fastrnn backend asked for (--backend: auto, and
on CUDA step and persistent), prints a live table, optionally writes results files and a
plot (--out), and optionally compares with an earlier results.json (--compare; exit 1 on a
regression). `--compare OLD.json --against NEW.json` compares two files without running.
"""

import argparse
import os
import sys

import torch

from . import compare as comparing
from .backends import BACKENDS, check_backends, default_backends
from .cases import PARITY_OK
from .catalog import GRIDS
from .grids import KINDS, MODES, custom_cases, parse_cell, parse_dtype

_SHAPE_OPTIONS = ("T", "B", "I", "H", "layers")


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m fastrnn.bench",
        description="Benchmark fastrnn's LSTM/GRU/RNN against torch.nn (same weights, "
                    "interleaved timing, parity checked).",
        epilog="Grids: " + "; ".join(f"{g.name}: {g.description}" for g in GRIDS.values())
               + ". Giving any of --T/--B/--I/--H/--layers/--bidirectional runs the product "
                 "of the given values instead of a grid (I defaults to H, T to 100, B to 64, "
                 "H to 512, cell to LSTM, kind to layer); --cell, --kind and --dtype alone "
                 "filter/override a grid. "
                 "Example, the half-precision LSTM goal shape on a GPU with every backend: "
                 "--cell LSTM --T 1024 --B 16 --H 768 --dtype bfloat16 "
                 "--backend auto step persistent.")
    p.add_argument("--grid", choices=sorted(GRIDS), help="named grid (default: quick)")
    p.add_argument("--cell", nargs="+", help="LSTM, GRU, RNN (tanh), RNN_TANH, RNN_RELU; the "
                                             "variants (kind variant): PEEPHOLE_LSTM, "
                                             "COUPLED_LSTM, PEEPHOLE_COUPLED_LSTM, "
                                             "LAYER_NORM_LSTM, LAYER_NORM_GRU")
    for name in _SHAPE_OPTIONS:
        p.add_argument(f"--{name}", nargs="+", type=int, metavar="N")
    p.add_argument("--bidirectional", action="store_true", default=None)
    p.add_argument("--kind", nargs="+", choices=KINDS,
                   help="layer (fastrnn.LSTM/GRU/RNN on [T, B, I]), cell (one call of "
                        "fastrnn.LSTMCell/GRUCell/RNNCell on [B, I]; T is 1), cell_loop (T "
                        "calls of a cell, the states carried), dilated (fastrnn.DilatedLSTM/GRU/"
                        "RNN, dilations 1, 2, 4, ... over --layers, against a loop over "
                        "torch.nn's cells), dilated_interleaved (against torch.nn layers on the "
                        "interleaved subsequences), clockwork (fastrnn.ClockworkRNN against a "
                        "Python loop of it), variant (fastrnn.VariantLSTM or VariantGRU, the "
                        "variant cells, against a Python loop of it); default: the grid's, "
                        "layer for custom shapes")
    p.add_argument("--hx", action="store_true",
                   help="custom shapes: give the initial states (random) instead of None")
    p.add_argument("--dtype", nargs="+", help="float32, float64, bfloat16, float16")
    p.add_argument("--mode", choices=("fwd", "fwdbwd", "both"),
                   help="fwd (inference, no_grad), fwdbwd, or both (default: the grid's; "
                        "both for custom shapes)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu or cuda[:N] (default: cuda if available, else cpu)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: the grid's, "
                                               "else leave torch's)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats at least (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument("--min-time", type=float, default=0.2,
                   help="repeat until each implementation has this many seconds timed "
                        "(default 0.2; at most 1000 repeats)")
    p.add_argument("--min-sample", type=float, metavar="SECONDS",
                   help="time short calls in batches: each timed sample repeats the call "
                        "until it lasts this long (default: the grid's, 0.002 for step; "
                        "else 0, one call per sample)")
    p.add_argument("--gemm-size", type=int, metavar="N",
                   help="size of the N^3 matmul that measures the GEMM peak (default 2048 "
                        "on the CPU, 1024 for half precision there, 8192 on CUDA)")
    p.add_argument("--backend", nargs="+", choices=list(BACKENDS), metavar="BACKEND",
                   help="the fastrnn backends to time, each against the same baseline: auto "
                        "(the library's own choice, FASTRNN_PERSISTENT=auto, FASTRNN_CPU_FUSED "
                        "unset); on CUDA step (the per-step kernels, FASTRNN_PERSISTENT=0) and "
                        "persistent (the persistent kernels forced, FASTRNN_PERSISTENT=1; a "
                        "shape they refuse is recorded as skipped for that backend); on the "
                        "CPU fused (the fused walks wherever a cell has one, "
                        "FASTRNN_CPU_FUSED=1) and blas (the BLAS walk, FASTRNN_CPU_FUSED=0). "
                        "A backend of the other device is an error. The fastrnn columns show "
                        "the first one listed that ran, the others follow. Default: auto "
                        "step on CUDA, auto on the CPU")
    p.add_argument("--variants", nargs="*", help=argparse.SUPPRESS)  # replaced by --backend
    p.add_argument("--tf32", action="store_true",
                   help="on CUDA, allow TF32 for float32 (cuDNN and cuBLAS); default off")
    p.add_argument("--out", metavar="DIR",
                   help="write results.json, results.csv, results.md and speedup.png")
    p.add_argument("--compare", metavar="OLD.json",
                   help="compare with an earlier results.json; exit 1 on a regression")
    p.add_argument("--against", metavar="NEW.json",
                   help="with --compare: compare OLD.json with this file, running nothing")
    p.add_argument("--threshold", type=float, default=10.0,
                   help="regression threshold, percent slower fastrnn_ms (default 10)")
    p.add_argument("--list", action="store_true", help="print the cases and exit")
    return p


def select_cases(args, device):
    """The cases the arguments ask for, and the grid used (None for custom shapes)."""
    cells = [parse_cell(c) for c in args.cell] if args.cell else None
    dtypes = [parse_dtype(d) for d in args.dtype] if args.dtype else None
    modes = None if args.mode in (None, "both") else (args.mode,)
    custom = any(getattr(args, n) is not None for n in _SHAPE_OPTIONS + ("bidirectional",))
    if custom:
        if args.grid:
            raise ValueError("give either --grid or shape options (--T/--B/--I/--H/--layers/"
                             "--bidirectional), not both")
        return custom_cases(cells or ["LSTM"], dtypes or ["float32"], args.T or [100],
                            args.B or [64], args.I, args.H or [512], args.layers or [1],
                            bool(args.bidirectional), modes or MODES,
                            kinds=args.kind or ["layer"], hx=args.hx), None
    if args.hx:
        raise ValueError("--hx applies to custom shapes (a grid's blocks say whether hx is "
                         "given)")
    grid = GRIDS[args.grid or "quick"]
    return grid.cases(device, modes=modes, dtypes=dtypes, cells=cells, kinds=args.kind), grid


def _compare(old_doc, old_name, new_doc, new_name, threshold):
    result = comparing.compare(old_doc, new_doc, threshold / 100.0)
    print(comparing.format_comparison(result, old_name, new_name))
    return comparing.exit_code(result)


def main(argv=None):
    """Entry point; returns the exit status (0 ok, 1 regression, 2 usage/input error)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.variants is not None:
        parser.error("--variants was replaced by --backend (auto, step, persistent; per_step "
                     "is now step), e.g. --backend auto persistent")
    if args.against and not args.compare:
        parser.error("--against needs --compare OLD.json")
    try:
        # loaded first: fail before a long run, and --out may overwrite the file
        old_doc = comparing.load(args.compare) if args.compare else None
        if args.against:
            return _compare(old_doc, args.compare, comparing.load(args.against), args.against,
                            args.threshold)
        device = args.device
        if (args.repeats < 1 or args.warmup < 0 or args.min_time < 0
                or (args.min_sample or 0) < 0):
            raise ValueError("--repeats must be at least 1, --warmup, --min-time and "
                             "--min-sample >= 0")
        if not (device == "cpu" or device.startswith("cuda")):
            raise ValueError(f"--device {device}: expected cpu, cuda or cuda:N")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ValueError("--device cuda, but torch sees no CUDA device")
        try:
            backends = check_backends(args.backend or default_backends(device), device)
        except ValueError as error:
            parser.error(f"--backend: {error} (--device {device})")
        cases, grid = select_cases(args, "cuda" if device.startswith("cuda") else "cpu")
    except (OSError, ValueError) as error:
        print(f"fastrnn.bench: error: {error}", file=sys.stderr)
        return 2
    if not cases:
        print("fastrnn.bench: error: no cases selected", file=sys.stderr)
        return 2
    if args.list:
        print("\n".join(c.label() + (f"  [{c.note}]" if c.note else "") for c in cases))
        return 0

    if device.startswith("cuda") and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))  # CUDA events use the current device
    threads = args.threads or (grid.threads if grid else None)
    if threads:
        torch.set_num_threads(threads)
    min_sample = args.min_sample
    if min_sample is None:
        min_sample = (grid.min_sample if grid else None) or 0.0

    from .report import LiveTable, label_width, summary_lines, write_json, write_outputs
    from .suite import run_suite
    checkpoint = None
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        checkpoint = lambda doc: write_json(doc, os.path.join(args.out, "results.json"))
    settings = {"grid": grid.name if grid else "custom", "mode": args.mode or "default"}
    print(f"fastrnn.bench: {len(cases)} case(s), grid {settings['grid']}, device {device}, "
          f"threads {torch.get_num_threads()}, backend {' '.join(backends)}", file=sys.stderr)
    for variable in BACKENDS["auto"]:  # every backend sets the same variables
        if os.environ.get(variable) is not None:
            print(f"fastrnn.bench: {variable}={os.environ[variable]} in the environment does "
                  "not apply: each backend sets it (--backend)", file=sys.stderr)
    doc = run_suite(cases, device=device, repeats=args.repeats, warmup=args.warmup,
                    min_time=args.min_time, min_sample=min_sample, tf32=args.tf32,
                    gemm_size=args.gemm_size,
                    listener=LiveTable(len(cases), label_width=label_width(cases)),
                    settings=settings, checkpoint=checkpoint, backends=backends)
    print("\n".join(summary_lines(doc)))
    failed = [r for r in doc["cases"] if r["parity"] not in PARITY_OK or any(
        r.get(f"{key}_parity", "pass") not in PARITY_OK for key in BACKENDS)]
    if failed:
        print(f"warning: {len(failed)} case(s) failed the parity check", file=sys.stderr)
    if args.out:
        paths = write_outputs(doc, args.out)
        try:
            from .plot import plot_speedup
            png = plot_speedup(doc, os.path.join(args.out, "speedup.png"))
            paths += [png] if png else []
        except ImportError:
            print("fastrnn.bench: matplotlib is not installed; no plot", file=sys.stderr)
        print("wrote " + ", ".join(paths), file=sys.stderr)
    if args.compare:
        return _compare(old_doc, args.compare, doc, "this run", args.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
