"""The persistent kernels on a GPU (skipped without one, or without nvcc): against the
float64 CPU ops and torch.nn on CUDA, determinism, refusals, compute-sanitizer.

Tolerances (docs/testing.md): float32 to 5e-5; bf16/fp16 error vs float64 no more than twice
that of a same-precision baseline (torch.nn on CUDA, or fastrnn's CPU op where torch.nn has
no equivalent: reverse and packed single direction), plus one unit in the last place.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

import persistent_gpu as pg
from fastrnn.bench.backends import BACKENDS, environment
from helpers.devices import GPU_MARKS
from helpers.paths import child_env
from helpers.tolerances import ULP, tolerance
from helpers.persistent_cases import GATES, batch_sizes_of, cpu_backward, cpu_forward, h_prev_rows

pytestmark = [
    *GPU_MARKS,
    pytest.mark.skipif(pg.nvcc() is None, reason="needs nvcc to build the kernels"),
]


@pytest.fixture(autouse=True)
def _runtime_usable():
    problem = pg.runtime_problem()
    if problem is not None:
        pytest.skip(problem)

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")
# the LSTM variants (peepholes and/or coupled gates): against the CPU ops only (no torch.nn twin)
VARIANT_MODES = ("PEEPHOLE_LSTM", "COUPLED_LSTM", "PEEPHOLE_COUPLED_LSTM")
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}
# (lengths, hidden, reverse): the goal's H=768 with 16 rows; packed and reverse; B = 1 with
# H not a multiple of anything; 20 rows (two tensor-core row tiles).
CASES = [
    ((12,) * 16, 768, False),
    ((9, 7, 7, 3, 1), 100, True),
    ((6,), 37, False),
    ((8,) * 20, 130, False),
]


def fits(mode, dtype, batch, hidden, backward):
    """The selection rule's verdict with FASTRNN_PERSISTENT=1: does the shape fit?"""
    with environment(BACKENDS["persistent"]):
        choice = pg.library().fastrnn_persistent_choose(
            pg.cell_kind(mode), pg.dtype_code(dtype), batch, hidden, torch.cuda.current_device(),
            int(backward))
    assert choice in (1, 2), choice
    return choice == 1


def run_gpu(mode, dtype, bs, hidden, reverse, seed=0):
    """Forward and backward; bwd is None where the backward does not fit (float32 at H=768
    stages [B, 4H] floats: more than a block's shared memory), as the rule must say."""
    ins, grads = pg.random_inputs(mode, bs, hidden, dtype, seed=seed)
    runner = pg.Runner(mode, bs, hidden, reverse)
    fwd = runner.forward(ins)
    assert fwd is not None, "the persistent forward declined a shape that fits"
    assert fits(mode, dtype, bs[0], hidden, False)
    back = {**grads, "y": fwd["y"],
            **{k: ins[k] for k in ("h0", "c0", "w_hh", "unit_params") if k in ins}}
    if "saved" in fwd:
        back["saved"] = fwd["saved"]
    bwd = runner.backward(back)
    assert (bwd is not None) == fits(mode, dtype, bs[0], hidden, True), "backward declined"
    torch.cuda.synchronize()
    return ins, grads, fwd, bwd


def cpu_run(mode, ins, grads, bs, reverse, dtype):
    """fastrnn's CPU ops on the same (already rounded) inputs, computed in `dtype`."""
    t = {k: v.cpu().to(dtype) for k, v in ins.items()}
    g = {k: v.cpu().to(dtype) for k, v in grads.items()}
    fwd = cpu_forward(mode, t, bs, reverse)
    return fwd, cpu_backward(mode, t, fwd, g, bs, reverse)


def err(got, want):
    return (got.double().cpu() - want.double()).abs().max().item()


def check(name, got, want, dtype, base=None):
    assert torch.isfinite(got).all(), f"{name}: not finite (poisoned slot never written?)"
    scale = max(1.0, want.abs().max().item())
    e = err(got, want)
    if dtype == torch.float32:
        assert e <= tolerance(torch.float32) * scale, f"{name}: error {e:.3g}"
    else:
        assert e <= 2 * base + ULP[dtype] * scale, f"{name}: error {e:.3g}, baseline {base:.3g}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"L{len(c[0])}x{max(c[0])}-H{c[1]}-{'rev' if c[2] else 'fwd'}")
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("mode", MODES + VARIANT_MODES)
def test_matches_float64_cpu_ops(mode, dtype, case):
    lengths, hidden, reverse = case
    bs = batch_sizes_of(lengths)
    ins, grads, fwd, bwd = run_gpu(mode, dtype, bs, hidden, reverse)
    ref_f, ref_b = cpu_run(mode, ins, grads, bs, reverse, torch.float64)
    low_f, low_b = cpu_run(mode, ins, grads, bs, reverse, dtype) if dtype != torch.float32 else ({}, {})
    for name, got in fwd.items():
        check(name, got, ref_f[name], dtype, low_f and err(low_f[name], ref_f[name]))
    if bwd is None:
        assert dtype == torch.float32 and hidden > 512, "only float32 at H=768 does not fit"
        return
    for name in ("grad_gx", "grad_h0", "grad_c0"):
        if name in bwd:
            check(name, bwd[name], ref_b[name], dtype, low_b and err(low_b[name], ref_b[name]))
    if dtype == torch.float32:  # the caller's weight-gradient GEMM on what the kernel wrote
        dgh = bwd.get("grad_gh", bwd["grad_gx"]).double().cpu()
        h_prev = h_prev_rows(fwd["y"].double().cpu(), ins["h0"].double().cpu(), bs, reverse)
        check("grad_w_hh", dgh.t() @ h_prev, ref_b["grad_w_hh"], dtype)


def torch_nn_twin(mode, ins, hidden, device, dtype):
    """torch.nn with W_ih = I (and b_ih = 0), so that its input is gx itself."""
    G = GATES[mode]
    if mode == "LSTM":
        m = torch.nn.LSTM(G * hidden, hidden, bias=False)
    elif mode == "GRU":
        m = torch.nn.GRU(G * hidden, hidden, bias=True)
    else:
        m = torch.nn.RNN(hidden, hidden, bias=False,
                         nonlinearity="relu" if mode == "RNN_RELU" else "tanh")
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.eye(G * hidden))
        m.weight_hh_l0.copy_(ins["w_hh"].double().cpu())
        if mode == "GRU":
            m.bias_ih_l0.zero_()
            m.bias_hh_l0.copy_(ins["b_hh"].double().cpu())
    return m.to(device, dtype)


def torch_nn_run(mode, m, ins, grads, T, B, hidden, device, dtype):
    x = ins["gx"].to(device, dtype).view(T, B, -1).detach().requires_grad_()
    h0 = ins["h0"].to(device, dtype).view(1, B, hidden).detach().requires_grad_()
    leaves = [x, h0]
    if mode == "LSTM":
        c0 = ins["c0"].to(device, dtype).view(1, B, hidden).detach().requires_grad_()
        leaves.append(c0)
        y, (hn, cn) = m(x, (h0, c0))
    else:
        y, hn = m(x, h0)
    g = {k: v.to(device, dtype) for k, v in grads.items()}
    loss = (y.reshape(T * B, hidden) * g["grad_y"]).sum() + (hn[0] * g["grad_hn"]).sum()
    if mode == "LSTM":
        loss = loss + (cn[0] * g["grad_cn"]).sum()
    grad = torch.autograd.grad(loss, leaves)
    out = {"y": y.reshape(T * B, hidden), "hn": hn[0], "grad_gx": grad[0].reshape(T * B, -1),
           "grad_h0": grad[1][0]}
    if mode == "LSTM":
        out["cn"], out["grad_c0"] = cn[0], grad[2][0]
    return {k: v.detach() for k, v in out.items()}


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("mode", MODES)
def test_matches_torch_nn_on_cuda(mode, dtype):
    T, B, hidden = 10, 16, 256
    bs = [B] * T
    ins, grads, fwd, bwd = run_gpu(mode, dtype, bs, hidden, False, seed=1)
    ref = torch_nn_run(mode, torch_nn_twin(mode, ins, hidden, "cpu", torch.float64), ins, grads,
                       T, B, hidden, "cpu", torch.float64)
    try:
        low = torch_nn_run(mode, torch_nn_twin(mode, ins, hidden, "cuda", dtype), ins, grads, T,
                           B, hidden, "cuda", dtype)
    except RuntimeError:  # no cuDNN RNN in this dtype: torch.nn's CPU kernels in it
        low = torch_nn_run(mode, torch_nn_twin(mode, ins, hidden, "cpu", dtype), ins, grads, T,
                           B, hidden, "cpu", dtype)
    got = {**fwd, **bwd}
    for name, want in ref.items():
        check(name, got[name], want, dtype, err(low[name], want))


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
def test_bitwise_deterministic(mode):
    bs = batch_sizes_of((7, 7, 5, 2))
    first = run_gpu(mode, torch.bfloat16, bs, 300, True)
    second = run_gpu(mode, torch.bfloat16, bs, 300, True)
    for a, b in zip(first[2:], second[2:]):
        for name in a:
            assert torch.equal(a[name], b[name]), name


def test_declines_what_does_not_fit():
    # float32 LSTM backward at H=1024, B=16 stages [16, 4096] floats (256 KiB) per block.
    ins, grads = pg.random_inputs("LSTM", [16] * 2, 1024, torch.float32)
    runner = pg.Runner("LSTM", [16] * 2, 1024, False)
    back = {**grads, "y": torch.zeros(32, 1024, device="cuda"), "saved": torch.zeros(32, 5120, device="cuda"),
            **{k: ins[k] for k in ("h0", "c0", "w_hh")}}
    assert runner.backward(back) is None


@pytest.mark.parametrize("setting,mode,dtype,batch,hidden,backward,want", [
    ("0", "LSTM", torch.float32, 16, 256, False, 0),      # never
    ("1", "LSTM", torch.float32, 16, 256, False, 1),      # fits
    ("1", "LSTM", torch.float32, 16, 1024, True, 2),      # float32 backward does not fit
    ("auto", "LSTM", torch.float32, 16, 256, False, 1),   # measured faster
    ("auto", "LSTM", torch.float32, 16, 256, True, 1),
    ("auto", "LSTM", torch.float32, 64, 256, False, 0),   # float32: B <= 16
    ("auto", "LSTM", torch.float32, 8, 1024, False, 0),   # float32 LSTM: H <= 512
    ("auto", "GRU", torch.float32, 8, 1024, False, 1),    # float32, 3 gates: H <= 1024
    ("auto", "GRU", torch.float32, 8, 1024, True, 0),     # preferred; backward does not fit
    ("auto", "LSTM", torch.bfloat16, 64, 512, False, 1),  # 16-bit: G*B*H <= 131072
    ("auto", "LSTM", torch.bfloat16, 64, 1024, False, 0),
    ("auto", "RNN_TANH", torch.float16, 64, 1024, True, 1),
    ("auto", "LSTM", torch.bfloat16, 512, 64, False, 0),  # outside the measured range
    ("auto", "GRU", torch.float32, 8, 128, False, 0),
    ("auto", "PEEPHOLE_LSTM", torch.float32, 16, 256, False, 0),  # variants: not measured
    ("auto", "COUPLED_LSTM", torch.bfloat16, 16, 256, True, 0),
    ("1", "PEEPHOLE_COUPLED_LSTM", torch.float32, 16, 256, False, 1),  # when asked
    ("yes", "LSTM", torch.float32, 16, 256, False, 3),    # not a valid setting
])
def test_selection_rule(monkeypatch, setting, mode, dtype, batch, hidden, backward, want):
    monkeypatch.setenv("FASTRNN_PERSISTENT", setting)
    got = pg.library().fastrnn_persistent_choose(
        pg.cell_kind(mode), pg.dtype_code(dtype), batch, hidden, torch.cuda.current_device(),
        int(backward))
    assert got == want


def sanitizer():
    for path in (shutil.which("compute-sanitizer"), "/usr/local/cuda/bin/compute-sanitizer"):
        if path and os.path.exists(path):
            return path
    return None


@pytest.mark.skipif(sanitizer() is None, reason="needs compute-sanitizer")
@pytest.mark.parametrize("tool", ["racecheck", "synccheck", "memcheck"])
@pytest.mark.parametrize("mode,dtype", [("LSTM", "bf16"), ("GRU", "f32"), ("RNN_TANH", "f16")])
def test_compute_sanitizer(tool, mode, dtype):
    pg.library()  # build outside the sanitizer
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "persistent_gpu.py")
    cmd = [sanitizer(), "--tool", tool, "--error-exitcode", "99", sys.executable, script, "run",
           "--mode", mode, "--dtype", dtype, "--batch", "3", "--hidden", "40", "--steps", "4",
           "--reverse"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=child_env())
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "finite" in done.stdout

