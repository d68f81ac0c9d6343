"""Runs one Case: torch.nn and fastrnn modules with the same weights, a parity check, then
both timed interleaved on the same distinct inputs; returns the case's result record. A
layer case without hx runs here; the cases that carry states (a cell call, a loop through
a cell, a layer called with hx) run through states.py.

Backends: backends.py. The record of a case (results.json "cases", one row of results.csv):
- the case's key fields (grids.KEY_FIELDS), baseline ("torch-cpu", "cudnn" or
  "torch-cuda"), baseline_ms, baseline_ms_min, us_per_step_baseline, gflops_baseline,
  pct_peak_baseline, gflop, parity_tol, repeats (timed rounds), calls (calls per timed
  sample, timing.interleaved's min_sample), note; backend: which fastrnn kernels run on the
  device ("cpu-fused" or "cuda"), whatever the FASTRNN_PERSISTENT backend;
- per backend b that ran: b_ms, b_ms_min, b_speedup (baseline_ms / b_ms), b_us_per_step,
  b_gflops, b_pct_peak, b_parity, b_parity_max_abs_err (BACKEND_FIELDS: for kind variant
  against the same loop in float64, parity_against_float64); per forced backend
  that refused the shape (its error contains DECLINED): b_skipped, the reason, instead;
- fastrnn_backend: the first backend asked for that ran, and fastrnn_ms, fastrnn_ms_min,
  speedup, us_per_step_fastrnn, gflops_fastrnn, pct_peak_fastrnn, parity,
  parity_max_abs_err: that backend's figures again (the fields of the format before
  backends, kept for its readers; --compare and the plot use the per-backend fields).
The document's settings.backend lists the backends asked for, settings.FASTRNN_PERSISTENT
the setting of each. A case that no backend ran is skipped (suite.py).

Times are per call of the case (a cell call, a whole loop, a layer call); us_per_step is
that over T: per call for a cell case, per step of a loop or a sequence (of a packed case:
per step of its longest sequence, T, the steps its walk takes).

A layer call without hx (make_inputs, make_runner) runs as the case's loss, packed,
dropout and autocast say (grids.Case): fwdbwd differentiates sum(target * grad) with
respect to the input and the parameters, where target is the output or, for loss final,
the last layer's h_n; a packed case's input gradient is that of its PackedSequence's data.

Parity: fastrnn's output (and the last layer's h_n, and for fwdbwd the input gradient; for
the cases that carry states, the final states and the given states' gradients) must match
the baseline's elementwise within |a - b| <= tol + tol * |b| (torch.allclose with atol =
rtol = tol), where tol = base(dtype) * max(1, sqrt(T / 100)): base is 1e-10 for float64,
5e-5 for float32 and 2e-2 for bfloat16/float16 (an autocast case: its autocast dtype's);
the sqrt factor allows for rounding that accumulates over long sequences. Each parity call
starts from the same seed, so the dropout between layers draws the same masks in both
libraries where both draw them with torch's generator in layer order (torch.nn on the CPU
and without cuDNN, and fastrnn); cuDNN draws its own, so there a case with dropout records
parity "n/a" and the reason in parity_note.

GEMM flops per layer and direction: 2*R*G*H*(I_layer + H) (input projection plus
recurrence; R = T*B rows, for a packed case the sum of its lengths; G = the cell's gate
count, fastrnn._ops.GATES as the extension defines it; I_layer = I for the first layer, D*H
after), times 3 for forward plus backward; a cell call counts as T = 1, a loop as its T
steps.
"""

import contextlib
import dataclasses
import math

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn
from fastrnn._ops import GATES

from . import loops, states
from .backends import (BACKENDS, DECLINED, BackendsRefused, backend_name, baseline_name,
                       default_backends, environment, forced)
from .grids import DILATED_KINDS, KEY_FIELDS
from .timing import interleaved

BASE_TOLERANCE = {"float64": 1e-10, "float32": 5e-5, "bfloat16": 2e-2, "float16": 2e-2}
N_INPUTS = 3  # distinct pre-generated inputs, cycled through the repeats
PARITY_SEED = 0  # the RNG seed before each parity call (the dropout masks)
NOT_COMPARED = "n/a"  # the parity of a case whose libraries cannot compute the same function
PARITY_OK = ("pass", NOT_COMPARED)


def gemm_flops(case):
    """The GEMM flop count of one call of the case (see the module docstring)."""
    directions = 2 if case.bidirectional else 1
    total = 0
    for layer in range(case.layers):
        layer_input = case.I if layer == 0 else directions * case.H
        total += directions * 2 * case.rows() * GATES[case.cell] * case.H * (
            layer_input + case.H)
    return total * (3 if case.mode == "fwdbwd" else 1)


def tolerance(dtype, T):
    """atol = rtol used by the parity check for this dtype and sequence length."""
    return BASE_TOLERANCE[dtype] * max(1.0, math.sqrt(T / 100))


# The class (torch.nn's and fastrnn's name) of each cell of grids.CELLS: the layer, or for
# the cell kinds the cell.
_LAYER_CLASSES = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
_CELL_CLASSES = {"LSTM": "LSTMCell", "GRU": "GRUCell", "RNN_TANH": "RNNCell",
                 "RNN_RELU": "RNNCell"}


def build_modules(case, device, seed=0):
    """(baseline module, fastrnn module) with identical weights, on device and dtype: torch.nn's
    layer, or for the cell kinds ("cell", "cell_loop") its cell; for the dilated kinds the
    dilated stack (default dilations) and the kind's baseline (loops.BASELINES); for kind
    clockwork fastrnn.ClockworkRNN and loops.ClockworkLoop, for kind variant
    fastrnn.VariantLSTM or VariantGRU and loops.VariantLoop, each loop over the fastrnn
    module's parameters."""
    dtype = getattr(torch, case.dtype)
    if case.kind in ("clockwork", "variant"):  # the loop reads the fastrnn module's parameters
        torch.manual_seed(seed)
        if case.kind == "clockwork":
            fast = fastrnn.ClockworkRNN(case.I, case.H)
        elif case.cell == "LAYER_NORM_GRU":
            fast = fastrnn.VariantGRU(case.I, case.H, layer_norm=True)
        else:
            fast = fastrnn.VariantLSTM(case.I, case.H, peepholes="PEEPHOLE" in case.cell,
                                       coupled_gates="COUPLED" in case.cell,
                                       layer_norm="LAYER_NORM" in case.cell)
        fast = fast.to(device, dtype)
        loop = loops.ClockworkLoop if case.kind == "clockwork" else loops.VariantLoop
        return loop(fast).to(device, dtype), fast
    is_layer = case.kind not in ("cell", "cell_loop")
    name = (_LAYER_CLASSES if is_layer else _CELL_CLASSES)[case.cell]
    kwargs = dict(num_layers=case.layers, bidirectional=case.bidirectional,
                  dropout=case.dropout) if is_layer else {}
    if name.startswith("RNN"):
        kwargs["nonlinearity"] = "relu" if case.cell == "RNN_RELU" else "tanh"
    torch.manual_seed(seed)
    baseline = getattr(nn, name)(case.I, case.H, **kwargs)
    dilated = case.kind in DILATED_KINDS
    fast = getattr(fastrnn, "Dilated" + name if dilated else name)(case.I, case.H, **kwargs)
    fast.load_state_dict(baseline.state_dict())
    if dilated:
        baseline = loops.BASELINES[case.kind](case.cell, case.I, case.H, fast.dilations,
                                              case.bidirectional)
        baseline.load_from(fast)
    return baseline.to(device, dtype), fast.to(device, dtype)


def make_inputs(case, device, count=N_INPUTS, seed=1):
    """`count` distinct inputs and one gradient of what the loss reads. An input is x
    [T, B, I], or for a packed case a PackedSequence of x (lengths case.lengths(),
    enforce_sorted=False) whose data [rows, I] is the leaf. The gradient is of the output
    [T, B, D*H] (packed: its data [rows, D*H]) or, for loss final, of the last layer's h_n
    [D, B, H]."""
    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, case.dtype)
    grad_x = case.mode == "fwdbwd"
    inputs = [torch.randn(case.T, case.B, case.I, generator=g).to(device, dtype)
              for _ in range(count)]
    if case.packed:
        lengths = torch.tensor(case.lengths())
        packed = [pack_padded_sequence(x, lengths, enforce_sorted=False) for x in inputs]
        inputs = [PackedSequence(p.data.requires_grad_(grad_x), p.batch_sizes,
                                 p.sorted_indices, p.unsorted_indices) for p in packed]
    else:
        inputs = [x.requires_grad_(grad_x) for x in inputs]
    directions = 2 if case.bidirectional else 1
    shape = ((directions, case.B, case.H) if case.loss == "final"
             else (case.rows(), directions * case.H) if case.packed
             else (case.T, case.B, directions * case.H))
    grad_out = torch.randn(*shape, generator=g).to(device, dtype)
    return inputs, grad_out


def call_layer(module, case, x):
    """One call on x (make_inputs), under the case's autocast: (output [T, B, D*H], or for
    a packed case its data [rows, D*H]; the last layer's h_n [D, B, H], an LSTM's from its
    (h_n, c_n))."""
    data = x.data if case.packed else x
    autocast = (torch.autocast(data.device.type, dtype=getattr(torch, case.autocast))
                if case.autocast else contextlib.nullcontext())
    with autocast:
        output, final = module(x)
    if case.kind in DILATED_KINDS:  # a state per layer: the last layer's
        final = final[-1]
    h_n = final[0] if isinstance(final, tuple) else final
    return (output.data if case.packed else output), h_n[-(2 if case.bidirectional else 1):]


def make_runner(module, case, inputs, grad_out):
    """fn(index) running the case on inputs[index % len]; returns the tensors parity checks:
    (output, last layer's h_n) for fwd, and the input gradient after them for fwdbwd."""
    if case.mode == "fwd":
        module.eval()

        def run(index):
            with torch.no_grad():
                return call_layer(module, case, inputs[index % len(inputs)])
        return run

    module.train()
    params = [p for p in module.parameters() if p.requires_grad]

    def run(index):
        x = inputs[index % len(inputs)]
        output, h_n = call_layer(module, case, x)
        target = h_n if case.loss == "final" else output
        grads = torch.autograd.grad(target, [x.data if case.packed else x, *params],
                                    grad_out)
        return output, h_n, grads[0]
    return run


def make_runners(case, device):
    """(torch.nn runner, fastrnn runner) of the case, on the same weights and inputs."""
    if case.kind in ("layer", "clockwork", "variant") + DILATED_KINDS and not case.hx:
        modules = build_modules(case, device)
        inputs, grad_out = make_inputs(case, device)
        return tuple(make_runner(m, case, inputs, grad_out) for m in modules)
    modules = build_modules(case, device)
    inputs, grad_out = states.make_state_inputs(case, device, N_INPUTS)
    return tuple(states.make_state_runner(m, case, inputs, grad_out) for m in modules)


def parity_not_compared(case, device):
    """Why the case's libraries cannot compute the same function on the device (parity
    "n/a"), or None: cuDNN draws its own dropout masks."""
    if case.dropout and case.mode == "fwdbwd" and baseline_name(device) == "cudnn":
        return "dropout in training: cuDNN draws its own masks"
    return None


def seeded(run):
    """run(0) from PARITY_SEED (the same dropout masks for each library's parity call)."""
    torch.manual_seed(PARITY_SEED)
    return run(0)


def parity(fast_tensors, base_tensors, dtype, T):
    """('pass' or 'fail', max abs difference) of fastrnn's tensors against the baseline's."""
    tol = tolerance(dtype, T)
    ok, worst = True, 0.0
    for got, want in zip(fast_tensors, base_tensors):
        got, want = got.detach().double(), want.detach().double()
        ok = ok and got.shape == want.shape and torch.allclose(got, want, rtol=tol, atol=tol)
        if got.shape == want.shape and got.numel():
            worst = max(worst, (got - want).abs().max().item())
    return ("pass" if ok else "fail"), worst


def parity_against_float64(fast_tensors, base_tensors, ref_tensors, dtype, T):
    """parity() for kind variant, judged against the same loop in float64 (ref_tensors):
    'pass' when fastrnn's tensors are no further from it than twice the loop's own (plus
    the tolerance), and fastrnn's max abs difference from it. A layer-normalised LSTM at
    the benchmark's shape amplifies a perturbation about 2000x over 100 steps (measured in
    float64), so any two float32 implementations of it differ by about 1e-3, each as far
    from float64 as the other."""
    tol = tolerance(dtype, T)
    error = lambda tensors: max((t.detach().double() - r.detach().double()).abs().max().item()
                                for t, r in zip(tensors, ref_tensors) if r.numel())
    fast_error = error(fast_tensors)
    return ("pass" if fast_error <= 2 * error(base_tensors) + tol else "fail"), fast_error


def run_case(case, device, *, timer, repeats=5, warmup=2, min_time=0.0, min_sample=0.0,
             peak_gflops=None, backends=None):
    """Measures one case; returns its result record (a flat dict, see the results schema).
    min_sample: the least seconds of a timed sample (timing.interleaved). A case with
    max_rounds (calls of seconds) runs at most that many timed rounds of one call each,
    with the parity calls as its only warm-up. backends: which of BACKENDS to time (None:
    default_backends(device)); not checked against the device here (see check_backends).
    A forced backend that refuses the shape (its error says DECLINED) gets
    <backend>_skipped; any other error raises, and so does BackendsRefused when no backend
    ran."""
    backends = list(backends or default_backends(device))
    run_base, run_fast = make_runners(case, device)
    base_tensors = seeded(run_base)
    if case.kind == "variant":  # the same loop in float64 (same weights and inputs, upcast)
        ref_tensors = seeded(make_runners(dataclasses.replace(case, dtype="float64"),
                                          device)[0])
        check = lambda tensors: parity_against_float64(tensors, base_tensors, ref_tensors,
                                                       case.compute_dtype, case.T)
    else:
        check = lambda tensors: parity(tensors, base_tensors, case.compute_dtype, case.T)
    not_compared = parity_not_compared(case, device)
    runs, checked, refused = {}, {}, {}  # backend -> runner / (parity, max err) / reason
    for name in backends:
        run_backend = forced(run_fast, BACKENDS[name])
        try:
            checked[name] = check(seeded(run_backend))
        except RuntimeError as error:
            if DECLINED not in str(error):  # a fault, not a shape the kernel does not take
                raise
            refused[name] = str(error).splitlines()[0][:200]
            continue
        runs[name] = run_fast
        if not_compared:
            checked[name] = (NOT_COMPARED, None)
    if not runs:
        raise BackendsRefused("every backend refused the shape: " + "; ".join(
            f"{name}: {reason}" for name, reason in refused.items()))
    headline = next(iter(runs))
    # the headline backend first, then the baseline, then the others: A B A B ... per round
    order = [headline, "baseline"] + [name for name in runs if name != headline]
    runs["baseline"] = run_base
    rounds = dict(repeats=repeats, warmup=warmup, min_sample=min_sample)
    if case.max_rounds:  # calls of seconds: the parity calls were the warm-up
        rounds = dict(repeats=min(repeats, case.max_rounds), warmup=0,
                      max_repeats=case.max_rounds, min_sample=0.0)
    settings = {name: (lambda setting=BACKENDS[name]: environment(setting))
                for name in runs if name != "baseline"}
    timing = interleaved({name: runs[name] for name in order}, min_time=min_time,
                         timer=timer, settings=settings, **rounds)
    base_ms = timing.median["baseline"] * 1e3
    flops = gemm_flops(case)
    gflops = lambda ms: flops / (ms * 1e-3) / 1e9
    percent = lambda ms: 100.0 * gflops(ms) / peak_gflops if peak_gflops else None

    per_backend = {}
    for name in backends:
        if name in refused:
            per_backend[f"{name}_skipped"] = refused[name]
            continue
        ms = timing.median[name] * 1e3
        verdict, max_err = checked[name]
        per_backend.update({
            f"{name}_ms": ms,
            f"{name}_ms_min": min(timing.samples[name]) * 1e3,
            f"{name}_speedup": base_ms / ms,
            f"{name}_us_per_step": ms * 1e3 / case.T,
            f"{name}_gflops": gflops(ms),
            f"{name}_pct_peak": percent(ms),
            f"{name}_parity": verdict,
            f"{name}_parity_max_abs_err": max_err,
        })
    fast_ms = per_backend[f"{headline}_ms"]
    record = {name: getattr(case, name) for name in KEY_FIELDS}
    record.update({
        "fastrnn_ms": fast_ms,
        "baseline": loops.BASELINE_NAMES.get(case.kind, baseline_name(device)),
        "baseline_ms": base_ms,
        "backend": backend_name(device),
        "fastrnn_backend": headline,
        "parity": checked[headline][0],
        "parity_max_abs_err": checked[headline][1],
        "parity_tol": tolerance(case.compute_dtype, case.T),
        "speedup": base_ms / fast_ms,
        "us_per_step_fastrnn": fast_ms * 1e3 / case.T,
        "us_per_step_baseline": base_ms * 1e3 / case.T,
        "gflop": flops / 1e9,
        "gflops_fastrnn": gflops(fast_ms),
        "gflops_baseline": gflops(base_ms),
        "pct_peak_fastrnn": percent(fast_ms),
        "pct_peak_baseline": percent(base_ms),
        "fastrnn_ms_min": per_backend[f"{headline}_ms_min"],
        "baseline_ms_min": min(timing.samples["baseline"]) * 1e3,
        "repeats": timing.repeats,
        "calls": timing.calls,
        "note": case.note,
    })
    if not_compared:
        record["parity_note"] = not_compared
    record.update(per_backend)
    return record
