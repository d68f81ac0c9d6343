"""Layers, directions and inter-layer dropout on top of the recurrence ops.

Every sequence is handled in the packed layout: data [N, features] whose rows for time
step t follow those of t-1, and batch_sizes [T] (int64, CPU, non-increasing) saying how
many rows each step has. A dense [T, B, features] input is the case batch_sizes = [B] * T.
"""

import torch
import torch.nn.functional as F

from ._ops import ops

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


def _needs_grad(*tensors):
    """Whether autograd will differentiate an op on these inputs: without it (inference) the
    ops skip writing what only their backward reads."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _direction(mode, x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse):
    """One layer in one direction. x: [N, I]; h0: [B, P]; c0: [B, H] (LSTM) or None.

    weights: (w_ih, w_hh[, b_ih, b_hh][, w_hr]) in torch.nn's order.
    Returns y: [N, P], hn: [B, P], cn: [B, H] or None.
    """
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
    w_hr = weights[-1] if has_proj else None
    if mode == "GRU":  # b_hh stays on the recurrent side: torch puts b_hn inside r * (.)
        gx = torch.addmm(b_ih, x, w_ih.t()) if has_bias else torch.mm(x, w_ih.t())
        y, hn, _ = ops.gru_forward(gx, batch_sizes, h0, w_hh, b_hh, reverse,
                                    _needs_grad(gx, h0, w_hh, b_hh))
        return y, hn, None
    gx = torch.addmm(b_ih + b_hh, x, w_ih.t()) if has_bias else torch.mm(x, w_ih.t())
    if mode == "LSTM":
        y, hn, cn, _ = ops.lstm_forward(gx, batch_sizes, h0, c0, w_hh, w_hr, reverse,
                                        _needs_grad(gx, h0, c0, w_hh, w_hr))
        return y, hn, cn
    y, hn = ops.rnn_forward(gx, batch_sizes, h0, w_hh, mode == "RNN_RELU", reverse)
    return y, hn, None


def rnn(mode, data, batch_sizes, h0, c0, weights, *, has_bias, num_layers, bidirectional,
        proj_size=0, dropout=0.0, training=False):
    """Runs a stack of recurrent layers over packed data.

    data: [N, I]; batch_sizes: [T]; h0: [L*D, B, P]; c0: [L*D, B, H] for LSTM, else None;
    weights: the flat list of torch.nn's parameters (module._flat_weights order).
    Returns output: [N, D*P], h_n: [L*D, B, P], c_n: [L*D, B, H] or None.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown recurrent mode {mode!r}; expected one of {MODES}")
    device_type = data.device.type
    if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
        # The layers run in the dtype of their weights, as torch.nn's GRU does under autocast.
        with torch.autocast(device_type, enabled=False):
            return rnn(mode, data, batch_sizes, h0, c0, weights, has_bias=has_bias,
                       num_layers=num_layers, bidirectional=bidirectional, proj_size=proj_size,
                       dropout=dropout, training=training)
    directions = 2 if bidirectional else 1
    per_direction = len(weights) // (num_layers * directions)
    layer_input = data
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            index = layer * directions + direction
            y, hn, cn = _direction(
                mode, layer_input, batch_sizes, h0[index], None if c0 is None else c0[index],
                weights[index * per_direction:(index + 1) * per_direction], has_bias,
                proj_size > 0, reverse=direction == 1)
            outputs.append(y)
            h_n.append(hn)
            c_n.append(cn)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    return layer_input, torch.stack(h_n), None if c0 is None else torch.stack(c_n)
