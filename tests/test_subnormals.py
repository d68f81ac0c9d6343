"""Subnormal floats inside the CPU recurrences (csrc/cpu/subnormals.h): flushed to zero on
every thread a walk uses, the caller's floating-point state unchanged after the call, and
gradients that decay through time into subnormals equal to torch.nn's."""

import platform
import subprocess
import sys

import pytest
import torch

import fastrnn
from helpers.paths import child_env
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"),
                                reason="fastrnn flushes subnormals on x86-64 only")

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32
SCALE = 1e-30  # a loss this small makes the gradients subnormal within a few steps
CELLS = {"LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU, "RNN": torch.nn.RNN}


def subnormal_count(t):
    return int(((t != 0) & (t.abs() < TINY)).sum())


def calling_thread_flushes():
    return (torch.tensor([1e-39]) * 1.0).item() == 0.0


def pool_flushing_share():
    """The share of a product that flushed, over a tensor large enough for every intra-op
    thread (the calling one among them) to take an equal part: 0 when no thread flushes.
    The subnormals are made from their bits: a conversion from a Python float would flush
    on a flushing calling thread."""
    smallest = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)  # 1.4e-45
    return float(((smallest * 1.0) == 0).float().mean())


def pair(cell, input_size=6, hidden_size=16):
    torch.manual_seed(0)
    ref = CELLS[cell](input_size, hidden_size)
    fast = getattr(fastrnn, cell)(input_size, hidden_size)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def final_state_gradients(module, x, scale=SCALE):
    """Gradients w.r.t. x, h0 and the parameters of a loss that reads only the final h."""
    h0 = torch.zeros(1, x.shape[1], module.hidden_size, requires_grad=True)
    hx = (h0, torch.zeros_like(h0)) if isinstance(module, torch.nn.LSTM) else h0
    _, hn = module(x, hx)
    h = hn[0] if isinstance(hn, tuple) else hn
    return torch.autograd.grad((h * scale).sum(), [x, h0, *module.parameters()])


@pytest.fixture
def threads():
    """Two intra-op threads, started before a test may set the calling thread to flush (a
    new thread inherits its creator's floating-point state); the caller's setting restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    pool_flushing_share()
    yield
    torch.set_num_threads(before)
    torch.set_flush_denormal(False)


@pytest.mark.parametrize("cell", list(CELLS))
def test_gradients_through_subnormals_match_torch_nn(cell, threads):
    ref, fast = pair(cell)
    x = torch.randn(60, 5, 6, requires_grad=True)
    want = final_state_gradients(ref, x)
    got = final_state_gradients(fast, x)
    # The case does reach subnormals: torch.nn's exact IEEE gradients hold some.
    assert sum(subnormal_count(g) for g in want) > 0
    names = ["x", "h0"] + [n for n, _ in fast.named_parameters()]
    for name, g, w in zip(names, got, want):
        torch.testing.assert_close(g / SCALE, w / SCALE, **atol_rtol(torch.float32),
                                   msg=lambda m: f"grad {name}: {m}")


def gate_gradients(op, dtype, steps=8, batch=5, hidden=16):
    """grad_gx [steps * batch, G * hidden]: what the recurrence op's backward computes
    itself, for a final-state gradient of 1e-37 that decays through the steps."""
    gen = torch.Generator().manual_seed(1)
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[op]
    rand = lambda *shape, scale=1.0: (scale * torch.randn(*shape, generator=gen)).to(dtype)
    gx, h0, w_hh = rand(steps * batch, gates * hidden), rand(batch, hidden), rand(
        gates * hidden, hidden, scale=hidden ** -0.5)
    sizes = torch.full((steps,), batch, dtype=torch.long)
    grad_hn = rand(batch, hidden, scale=1e-37)
    ops = torch.ops.fastrnn
    if op == "lstm":
        c0 = rand(batch, hidden)
        y, _, _, saved = ops.lstm_forward(gx, sizes, h0, c0, w_hh, None, False, True)
        return ops.lstm_backward(torch.zeros_like(y), grad_hn, torch.zeros_like(c0), sizes,
                                 h0, c0, w_hh, None, y, saved, False)[0]
    if op == "gru":
        y, _, saved = ops.gru_forward(gx, sizes, h0, w_hh, None, False, True)
        return ops.gru_backward(torch.zeros_like(y), grad_hn, sizes, h0, w_hh, y, saved,
                                False, False)[0]
    y, _ = ops.rnn_forward(gx, sizes, h0, w_hh, False, False)
    return ops.rnn_backward(torch.zeros_like(y), grad_hn, sizes, h0, w_hh, y, False, False)[0]


@pytest.mark.parametrize("op", ["lstm", "gru", "rnn"])
def test_recurrence_leaves_no_subnormals(op, threads):
    """The gate gradients the backward op writes hold zeros where the exact result is a
    float32 subnormal (as the same op in float64 shows it is here)."""
    exact = gate_gradients(op, torch.float64)
    assert int(((exact != 0) & (exact.abs() < TINY)).sum()) > 0
    assert subnormal_count(gate_gradients(op, torch.float32)) == 0


@pytest.mark.parametrize("caller_flushes", [False, True], ids=["ieee", "caller_flushes"])
@pytest.mark.parametrize("call", ["layer", "single_step", "cell"])
def test_callers_floating_point_state_is_unchanged(call, caller_flushes, threads):
    if caller_flushes and not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    assert calling_thread_flushes() == caller_flushes
    pool_before = pool_flushing_share()
    assert caller_flushes or pool_before == 0  # no thread flushes by default
    if call == "cell":
        module = fastrnn.LSTMCell(6, 16)
        x = torch.randn(5, 6, requires_grad=True)
        h, c = module(x)
        torch.autograd.grad(((h + c) * SCALE).sum(), [x, *module.parameters()])
    else:
        _, module = pair("LSTM")
        x = torch.randn(60 if call == "layer" else 1, 5, 6, requires_grad=True)
        final_state_gradients(module, x)
    assert calling_thread_flushes() == caller_flushes
    assert pool_flushing_share() == pool_before


# A fresh process whose first parallel region, and so its pool threads, starts inside a
# fastrnn call (the fused walk split by rows: one thread per row block): a thread inherits
# its creator's floating-point state, so one started while its creator flushed would keep
# flushing after the call.
FRESH_POOL = """
import os, torch, fastrnn
from test_subnormals import pool_flushing_share
torch.set_num_threads(2)
os.environ["FASTRNN_CPU_FUSED"] = "rows"
with torch.no_grad():
    fastrnn.LSTM(5, 1).double()(torch.randn(5, 3, 5, dtype=torch.float64))
print(pool_flushing_share())
"""


def test_threads_started_inside_a_call_do_not_keep_flushing():
    done = subprocess.run([sys.executable, "-c", FRESH_POOL], capture_output=True, text=True,
                          timeout=300, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert float(done.stdout.split()[-1]) == 0.0
