"""Arguments for the raw ops (torch.ops.fastrnn.*), float64, in schema order: random
forward arguments over a few batch-size layouts, and backward arguments from a real
forward; the same for the cells' single-step ops (cell_forward / cell_backward)."""

import torch

from fastrnn import _cell_ops, _ops  # importing registers torch.ops.fastrnn

ops = torch.ops.fastrnn
H, P, B = 3, 2, 3
F64 = torch.float64
# dense (every step full), packed (variable lengths, incl. length 1), a single step, and a
# last step with no rows (the ops accept it; torch's packing never makes one)
BATCH_SIZES = {"dense": [3, 3, 3], "packed": [3, 2, 2, 1], "one_step": [3],
               "empty_last_step": [3, 2, 0]}
# Per op, the gate blocks of gx ([N, gates*H]) and the saved slots of a row ([N, slots*H]), as
# the extension defines them (fastrnn._ops); the rnn op serves RNN_TANH and RNN_RELU alike.
CELL_OF_OP = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN_TANH"}
GATES = {op: _ops.GATES[cell] for op, cell in CELL_OF_OP.items()}
SAVED_SLOTS = {op: _ops.SAVED_SLOTS[cell] for op, cell in CELL_OF_OP.items()}


def op_args(op, layout, reverse, *, proj=False, bias=True, relu=False, peepholes=False,
            coupled=False, layer_norm=False, requires_grad=True, save=True, dtype=F64, seed=0):
    """Random arguments for op's forward, in schema order (lstm_variant: with peepholes
    and/or coupled gates, or with layer norm; gru_variant: the layer-normalised GRU)."""
    gen = torch.Generator().manual_seed(seed)
    batch_sizes = torch.tensor(BATCH_SIZES[layout], dtype=torch.long)
    n = int(batch_sizes.sum())
    out = P if proj else H

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=dtype)).requires_grad_(
            requires_grad)

    def norms(blocks):  # gamma near 1, beta near 0, per block of H
        gamma_beta = [1 + rand(blocks * H, scale=0.3).detach(), rand(blocks * H, scale=0.3)]
        return torch.cat([t.detach() for t in gamma_beta]).requires_grad_(requires_grad)

    gates = (_ops.GATES[_ops.lstm_variant_cell(peepholes, coupled, layer_norm)]
             if op == "lstm_variant" else GATES["gru" if op == "gru_variant" else op])
    gx = rand(n, gates * H)
    h0 = rand(B, out)
    w_hh = rand(gates * H, out, scale=0.5)
    if op == "lstm":
        return (gx, batch_sizes, h0, rand(B, H), w_hh, rand(P, H) if proj else None, reverse,
                save)
    if op == "lstm_variant":
        params = (torch.cat([norms(4), norms(1)]).detach().requires_grad_(requires_grad)
                  if layer_norm else
                  rand((2 if coupled else 3) * H, scale=0.5) if peepholes else None)
        return (gx, batch_sizes, h0, rand(B, H), w_hh, rand(P, H) if proj else None, params,
                coupled, layer_norm, reverse, save)
    if op == "gru":
        return (gx, batch_sizes, h0, w_hh, rand(GATES[op] * H) if bias else None, reverse,
                save)
    if op == "gru_variant":
        return (gx, batch_sizes, h0, w_hh, rand(GATES["gru"] * H) if bias else None, norms(3),
                reverse, save)
    return (gx, batch_sizes, h0, w_hh, relu, reverse)


FORWARD_VARIANTS = [
    ("lstm", {}), ("lstm", {"proj": True}), ("gru", {}), ("gru", {"bias": False}),
    ("rnn", {"relu": False}), ("rnn", {"relu": True}),
    ("lstm_variant", {"peepholes": True}), ("lstm_variant", {"coupled": True}),
    ("lstm_variant", {"peepholes": True, "coupled": True, "proj": True}),
    ("lstm_variant", {"layer_norm": True}), ("lstm_variant", {"layer_norm": True, "proj": True}),
    ("gru_variant", {}), ("gru_variant", {"bias": False}),
]


def variant_id(variant):
    op, kw = variant
    return "-".join([op] + [f"{k}={v}" for k, v in kw.items()])


def forward_op(op):
    return getattr(ops, f"{op}_forward")


def differentiable_outputs(op):
    """The op's forward without the `saved` output (only read by backward)."""
    def fn(*args):
        out = forward_op(op)(*args)
        return out[:3] if op.startswith("lstm") else out[:2]
    return fn


def backward_args(op, layout, reverse, kw):
    """Arguments for op's backward, in schema order, from a real forward."""
    fwd = op_args(op, layout, reverse, requires_grad=False, **kw)
    out = forward_op(op)(*fwd)
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(t.shape, generator=gen, dtype=F64)
             for t in out[:3 if op.startswith("lstm") else 2]]
    if op == "lstm":
        gx, batch_sizes, h0, c0, w_hh, w_hr, rev, _ = fwd
        return (*grads, batch_sizes, h0, c0, w_hh, w_hr, out[0], out[3], rev)
    if op == "lstm_variant":
        gx, batch_sizes, h0, c0, w_hh, w_hr, params, coupled, layer_norm, rev, _ = fwd
        return (*grads, batch_sizes, h0, c0, w_hh, w_hr, params, coupled, layer_norm, out[0],
                out[3], rev)
    if op == "gru_variant":
        gx, batch_sizes, h0, w_hh, b_hh, norms_, rev, _ = fwd
        return (*grads, batch_sizes, h0, w_hh, norms_, out[0], out[2], b_hh is not None, rev)
    if op == "gru":
        gx, batch_sizes, h0, w_hh, b_hh, rev, _ = fwd
        return (*grads, batch_sizes, h0, w_hh, out[0], out[2], b_hh is not None, rev)
    gx, batch_sizes, h0, w_hh, relu, rev = fwd
    return (*grads, batch_sizes, h0, w_hh, out[0], relu, rev)


# --- the single-step ops (cell_forward / cell_backward) ------------------------------------

CELL_NAMES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]  # torch.nn's cells
# x: [CELL_B, CELL_I], the states [CELL_B, H]; both sizes unlike H (3), so that a
# transposed argument shows
CELL_B, CELL_I = 2, 4


def cell_op_args(cell, bias=True, requires_grad=True, save=True, dtype=F64, seed=0):
    """Random arguments for cell_forward, in schema order: (cell number, x [B, I], h [B, H],
    c [B, H] or None (cells without a cell state), w_ih [G*H, I], w_hh [G*H, H], b_ih and
    b_hh [G*H] or None, save)."""
    gen = torch.Generator().manual_seed(seed)
    gates = _ops.GATES[cell] * H

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=dtype)).requires_grad_(
            requires_grad)

    x, h = rand(CELL_B, CELL_I), rand(CELL_B, H)
    c = rand(CELL_B, H) if cell == "LSTM" else None
    w_ih, w_hh = rand(gates, CELL_I, scale=0.5), rand(gates, H, scale=0.5)
    b_ih, b_hh = (rand(gates), rand(gates)) if bias else (None, None)
    return (_cell_ops.CELL_KIND[cell], x, h, c, w_ih, w_hh, b_ih, b_hh, save)


def cell_outputs(cell):
    """cell_forward without what a cell does not have or only backward reads: (y, h_new,
    c_new) for LSTM, (y, h_new) for the others."""
    def fn(*args):
        out = ops.cell_forward(*args)
        return out[:3] if cell == "LSTM" else out[:2]
    return fn


def cell_backward_args(cell, bias=True, input_grad=True, state_grad=True, weight_grad=True):
    """Arguments for cell_backward, in schema order, from a real forward: (cell number,
    grad_y, grad_h, grad_c or None, x, h, c, w_ih, w_hh, y, saved, has_bias, input_grad,
    state_grad, weight_grad); the last three say whether the gradients w.r.t. x, w.r.t. h
    and c, and w.r.t. the weights and biases are wanted."""
    number, x, h, c, w_ih, w_hh, b_ih, b_hh, _ = cell_op_args(cell, bias, requires_grad=False)
    y, h_new, c_new, saved = ops.cell_forward(number, x, h, c, w_ih, w_hh, b_ih, b_hh, True)
    gen = torch.Generator().manual_seed(5)
    grad_y = torch.randn(y.shape, generator=gen, dtype=F64)
    grad_h = torch.randn(h_new.shape, generator=gen, dtype=F64)
    grad_c = torch.randn(c_new.shape, generator=gen, dtype=F64) if c is not None else None
    return (number, grad_y, grad_h, grad_c, x, h, c, w_ih, w_hh, y, saved, bias, input_grad,
            state_grad, weight_grad)
