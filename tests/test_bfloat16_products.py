"""Recurrences whose products multiply in bfloat16: the LSTM (plain and with coupled gates),
GRU and RNN ops given a bfloat16 w_hh with a float32 state (what the layers pass under CPU
bfloat16 autocast in training).

The fused CPU walks round each step's h (forward) or gradient w.r.t. gh (backward) to
bfloat16 as the products' operand and add the exact products in float; everything else
(gates, state, gradients) stays in float32, and grad_w_hh comes back in bfloat16. That
definition is written here in float64, with the rounding made explicit, for both fused
splits (units, rows), at sizes that cut the panels, the row blocks and the bfloat16 pairs
(odd H). The BLAS walk, and the fused walks of a build without AVX512-BF16
(fastrnn._C.BFLOAT16_PRODUCTS false), read the weight converted to float, exactly: their
reference rounds the weight only."""

import pytest
import torch

from fastrnn import _C
from fastrnn._ops import ops
from helpers.tolerances import ULP, atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

F32, F64, BF16 = torch.float32, torch.float64, torch.bfloat16
WALKS = {"fused_units": "units", "fused_rows": "rows", "blas": "0"}
# (H, B): odd H (a zero pair), a part panel, several row blocks and threads' slices
SIZES = [(5, 3), (17, 13), (40, 7)]
STEPS = 6


def rounded(t):
    """t rounded to bfloat16, as float64."""
    return t.to(BF16).to(F64)


class RoundedProduct(torch.autograd.Function):
    """h @ w^T with both operands rounded to bfloat16, in float64; backward likewise rounds
    the incoming gradient: the fused walks' products. round_h: False for the BLAS walk."""

    @staticmethod
    def forward(ctx, h, w, round_h):
        ctx.save_for_backward(h, w)
        ctx.round_h = round_h
        return (rounded(h) if round_h else h) @ rounded(w).t()

    @staticmethod
    def backward(ctx, grad):
        h, w = ctx.saved_tensors
        grad_h = (rounded(grad) if ctx.round_h else grad) @ rounded(w)
        return grad_h, grad.t() @ h, None


def reference(cell, gx, h0, c0, w_hh, b_hh, round_h):
    """The recurrence in float64 over STEPS dense steps: outputs [N, H], h_n, c_n."""
    B = h0.shape[0]
    h, c, ys = h0, c0, []
    for t in range(STEPS):
        gh = RoundedProduct.apply(h, w_hh, round_h)
        x = gx[t * B:(t + 1) * B]
        if cell == "RNN":
            h = torch.tanh(x + gh)
        elif cell == "CoupledLSTM":  # f = 1 - i, gate blocks i, g, o
            i, g, o = (x + gh).chunk(3, 1)
            i = torch.sigmoid(i)
            c = (1 - i) * c + i * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif cell == "LSTM":
            i, f, g, o = (x + gh).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        else:  # torch's GRU: b_hh inside r * (.)
            gh = gh + b_hh
            r, z, n = x.chunk(3, 1)
            hr, hz, hn = gh.chunk(3, 1)
            r, z = torch.sigmoid(r + hr), torch.sigmoid(z + hz)
            h = (1 - z) * torch.tanh(n + r * hn) + z * h
        ys.append(h)
    return torch.cat(ys), h, c


def op_call(cell, gx, h0, c0, w_hh, b_hh):
    """The op's forward and its backward for given output gradients, as a function."""
    batch_sizes = torch.full((STEPS,), h0.shape[0], dtype=torch.long)
    if cell == "LSTM":
        y, hn, cn, saved = ops.lstm_forward(gx, batch_sizes, h0, c0, w_hh, None, False, True)
        backward = lambda gy, ghn, gcn: ops.lstm_backward(
            gy, ghn, gcn, batch_sizes, h0, c0, w_hh, None, y, saved, False)
        return (y, hn, cn), backward
    if cell == "CoupledLSTM":
        y, hn, cn, saved = ops.lstm_variant_forward(gx, batch_sizes, h0, c0, w_hh, None, None,
                                                    True, False, False, True)
        backward = lambda gy, ghn, gcn: ops.lstm_variant_backward(
            gy, ghn, gcn, batch_sizes, h0, c0, w_hh, None, None, True, False, y, saved,
            False)[:4]
        return (y, hn, cn), backward
    if cell == "RNN":
        y, hn = ops.rnn_forward(gx, batch_sizes, h0, w_hh, False, False)
        backward = lambda gy, ghn, gcn: ops.rnn_backward(gy, ghn, batch_sizes, h0, w_hh, y,
                                                         False, False)
        return (y, hn, None), backward
    y, hn, saved = ops.gru_forward(gx, batch_sizes, h0, w_hh, b_hh, False, True)
    backward = lambda gy, ghn, gcn: ops.gru_backward(gy, ghn, batch_sizes, h0, w_hh, y, saved,
                                                     True, False)
    return (y, hn, None), backward


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("walk", list(WALKS))
@pytest.mark.parametrize("hidden,batch", SIZES)
@pytest.mark.parametrize("cell", ["LSTM", "CoupledLSTM", "GRU", "RNN"])
def test_products_of_rounded_operands(monkeypatch, cell, hidden, batch, walk, threads):
    monkeypatch.setenv("FASTRNN_CPU_FUSED", WALKS[walk])
    torch.set_num_threads(threads)
    gates = {"LSTM": 4, "CoupledLSTM": 3, "GRU": 3, "RNN": 1}[cell]
    lstm = cell.endswith("LSTM")
    gx = torch.randn(STEPS * batch, gates * hidden)
    h0, c0 = torch.randn(batch, hidden), torch.randn(batch, hidden)
    w_hh = torch.randn(gates * hidden, hidden) * hidden ** -0.5
    b_hh = torch.randn(gates * hidden)
    w_before = w_hh.clone()
    outs, backward = op_call(cell, gx, h0, c0, w_hh.to(BF16), b_hh)
    grads_out = [torch.randn_like(outs[0]), torch.randn_like(h0), torch.randn_like(c0)]
    grads = backward(*grads_out)

    leaves = [t.to(F64).requires_grad_() for t in (gx, h0, c0, w_hh)]
    want = reference(cell, *leaves, b_hh.to(F64),
                     round_h=walk != "blas" and bool(_C.BFLOAT16_PRODUCTS))
    want_outs = want if lstm else want[:2]
    torch.autograd.backward(want_outs, [g.to(F64) for g in grads_out[:len(want_outs)]])
    for got, expected in zip(outs, want_outs):
        torch.testing.assert_close(got, expected.to(F32), **atol_rtol(F32))
    # gx, h0, (c0): float32 from float operands; w_hh: in bfloat16, one rounding of the sum
    want_grads = [leaves[0].grad, leaves[1].grad] + ([leaves[2].grad] if lstm else [])
    for got, expected in zip(grads, want_grads):
        assert got.dtype == F32
        torch.testing.assert_close(got, expected.to(F32), **atol_rtol(F32))
    grad_w = grads[3] if lstm else grads[2]
    assert grad_w.dtype == BF16
    torch.testing.assert_close(grad_w.to(F64), leaves[3].grad,
                               atol=2 * ULP[BF16] * leaves[3].grad.abs().max().item(),
                               rtol=2 * ULP[BF16])
    assert torch.equal(w_hh, w_before)


def test_only_bfloat16_with_float32_state():
    """A w_hh of another dtype than the state's is refused unless it is bfloat16 with a
    float32 state."""
    gx, h0 = torch.randn(4, 12, dtype=F64), torch.randn(2, 4, dtype=F64)
    batch_sizes = torch.tensor([2, 2])
    with pytest.raises(RuntimeError, match="w_hh must have dtype"):
        ops.lstm_forward(gx, batch_sizes, h0, h0, torch.randn(16, 4, dtype=BF16), None, False,
                         False)
    with pytest.raises(RuntimeError, match="w_hh must have dtype"):
        ops.gru_forward(gx.float(), batch_sizes, h0.float(), torch.randn(12, 4, dtype=F64),
                        None, False, False)
