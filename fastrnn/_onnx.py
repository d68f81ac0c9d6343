"""The layers as ONNX's own recurrent operators, for torch.onnx.export(..., dynamo=True).

While that exporter traces a model, a fastrnn layer emits one ONNX `LSTM`, `GRU` or `RNN`
node per layer (both directions in one node) through torch.onnx.ops.symbolic_multi_out,
instead of fastrnn's ops, which no ONNX runtime knows: the exported model is a standard
one. An LSTM with a projection (proj_size) and the layer-normalised LSTM and GRU
(fastrnn.VariantLSTM/VariantGRU with layer_norm), which ONNX's operators cannot express,
become an ONNX `Scan` over the step's arithmetic in standard ops (LayerNormalization among
them). The peephole and coupled-gate LSTMs are ONNX's LSTM with its peepholes input P and
its attribute input_forget (without proj_size). Every shape stays symbolic, so a
model exported with dynamic batch and sequence axes runs at any batch and length.

Why not torch.nn's forward, as under the TorchScript exporter: with torch 2.13 and
dynamo=True, torch.nn's own translations fix the traced batch and length in the exported
graph (ONNX Runtime fails on another), unroll the relu RNN into a step loop, and drop the
LSTM's projection (a model ONNX Runtime fails on).
"""

import torch
import torch.nn.functional as F

from . import functional

# ONNX's operator per mode, and for each of its gate blocks the index of torch's block:
# ONNX orders the LSTM's gates i,o,f,c (torch: i,f,g,o) and the GRU's z,r,h (torch: r,z,n).
_OPERATOR = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}
_TORCH_BLOCK = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN_TANH": (0,), "RNN_RELU": (0,)}


def _export_flag_reader():
    """A function saying whether an ONNX exporter is tracing: torch.onnx.is_in_onnx_export's
    two flags read directly where this torch has them. That function imports two modules on
    every call (1.3 us, which every cell call would pay), and torch.compile traces a read of
    the TorchScript exporter's flag only as a plain attribute, not through its property."""
    try:
        from torch.onnx._internal.exporter import _flags
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:  # another torch's layout: its public function
        return torch.onnx.is_in_onnx_export
    if not (hasattr(GLOBALS, "_in_onnx_export") and hasattr(_flags, "_is_onnx_exporting")):
        return torch.onnx.is_in_onnx_export
    return lambda: GLOBALS._in_onnx_export or _flags._is_onnx_exporting


_in_onnx_export = _export_flag_reader()


def active_exporter():
    """Which ONNX exporter is tracing the caller: "dynamo" (torch.onnx.export(dynamo=True),
    the default, which runs torch.export), "torchscript" (dynamo=False), or None."""
    if not _in_onnx_export():
        return None
    return "dynamo" if torch.compiler.is_exporting() else "torchscript"


def rnn(module, x, h0, c0, weights):
    """module's stack (a fastrnn.LSTM/GRU/RNN) on dense, time-first input, in ONNX operators.

    x: [T, B, I]; h0: [L*D, B, P]; c0: [L*D, B, H] (LSTM) or None; weights: torch.nn's flat
    parameter list. Returns output [T, B, D*P], h_n [L*D, B, P], c_n [L*D, B, H] or None.
    """
    mode, layers = module.mode, module.num_layers
    variant = (getattr(module, "peepholes", False), getattr(module, "coupled_gates", False))
    if any(variant) and getattr(module, "proj_size", 0) > 0:
        raise RuntimeError("fastrnn: a VariantLSTM with proj_size does not export to ONNX yet")
    directions = 2 if module.bidirectional else 1
    per_direction = len(weights) // (layers * directions)
    layer_input, h_n, c_n = x, [], []
    for layer in range(layers):
        first = layer * directions
        rows = slice(first, first + directions)  # this layer's entries of h0 and c0
        layer_weights = [weights[(first + d) * per_direction:(first + d + 1) * per_direction]
                         for d in range(directions)]
        layer_c0 = None if c0 is None else c0[rows]
        proj, layer_norm = getattr(module, "proj_size", 0) > 0, getattr(module, "layer_norm",
                                                                         False)
        if proj or layer_norm:
            y, hn, cn = _scan_layer(mode, layer_input, h0[rows], layer_c0, layer_weights,
                                    module.bias, proj, layer_norm)
        else:
            y, hn, cn = _layer_node(mode, layer_input, h0[rows], layer_c0, layer_weights,
                                    module.bias, variant=variant)
        h_n.append(hn)
        c_n.append(cn)
        layer_input = y  # [T, B, D*P]
        if module.dropout > 0 and module.training and layer < layers - 1:
            layer_input = F.dropout(layer_input, float(module.dropout), training=True)
    return layer_input, torch.cat(h_n), None if c0 is None else torch.cat(c_n)


def dilated_rnn(module, x, initial, weights):
    """A fastrnn.DilatedLSTM/GRU/RNN (no projection) on dense, time-first input, one ONNX node
    per layer: its d subsequences side by side as d*B sequences of ceil(T/d) steps (time
    padded to a multiple of d), each given its own length, so that padding is never a step.
    x: [T, B, I], T > every dilation; initial: per layer (h0, c0 or None), [D, d*B, *].
    Returns output [T, B, D*H] and per layer (h_n, c_n or None)."""
    if getattr(module, "proj_size", 0) > 0:
        raise RuntimeError("fastrnn: a DilatedLSTM with proj_size does not export to ONNX yet")
    steps, batch = x.shape[0], x.shape[1]
    per_layer = len(weights) // module.num_layers
    per_direction = per_layer // (2 if module.bidirectional else 1)
    final = []
    for layer, d in enumerate(module.dilations):
        layer_weights = weights[layer * per_layer:(layer + 1) * per_layer]
        new_steps = (steps + d - 1) // d
        padded = F.pad(x, (0, 0, 0, 0, 0, new_steps * d - steps))  # [new_steps * d, B, F]
        phase = torch.arange(d * batch, device=x.device) // batch  # [d*B]: j of j*B + b
        lengths = ((steps - phase + d - 1) // d).to(torch.int32)  # steps of each subsequence
        h0, c0 = initial[layer]
        y, h_n, c_n = _layer_node(
            module.mode, padded.reshape(new_steps, d * batch, x.shape[2]), h0, c0,
            [layer_weights[k:k + per_direction] for k in range(0, per_layer, per_direction)],
            module.bias, lengths)
        x = y.reshape(new_steps * d, batch, y.shape[2])[:steps]  # [T, B, D*H]
        final.append((h_n, c_n) if c0 is not None else h_n)
        if module.dropout > 0 and module.training and layer < module.num_layers - 1:
            x = F.dropout(x, float(module.dropout), training=True)
    return x, tuple(final)


def _onnx_blocks(mode, tensor, coupled=False):
    """A weight [G*H, ...] or bias [G*H] with its gate blocks in ONNX's order. Coupled
    gates (blocks i, g, o) have no forget block: zeros stand in its place, which ONNX's LSTM
    with input_forget does not read (f = 1 - i)."""
    if coupled:
        i, g, o = tensor.chunk(3)
        return torch.cat([i, o, torch.zeros_like(i), g])
    blocks = tensor.chunk(len(_TORCH_BLOCK[mode]))
    return torch.cat([blocks[k] for k in _TORCH_BLOCK[mode]])


def _onnx_peepholes(peepholes, coupled):
    """A VariantLSTM's weight_ch ([3*H]: p_i, p_f, p_o; coupled [2*H]: p_i, p_o) as ONNX's P
    entry of one direction, [3*H] in the order i, o, f."""
    if coupled:
        p_i, p_o = peepholes.chunk(2)
        return torch.cat([p_i, p_o, torch.zeros_like(p_i)])
    p_i, p_f, p_o = peepholes.chunk(3)
    return torch.cat([p_i, p_o, p_f])


def _layer_node(mode, x, h0, c0, direction_weights, has_bias, lengths=None,
                variant=(False, False)):
    """One layer, one or two directions, as one ONNX node. x: [T, B, I]; h0: [D, B, H];
    c0: [D, B, H] or None; direction_weights: per direction (w_ih, w_hh[, b_ih, b_hh]
    [, w_ch with peepholes]); lengths: [B] int32, each sequence's steps (ONNX's
    sequence_lens; None: all T); variant: (peepholes, coupled_gates) of an LSTM.
    Returns y [T, B, D*H] (zero past a sequence's length), h_n [D, B, H], c_n [D, B, H] or
    None (at each sequence's last step)."""
    if not hasattr(torch.onnx, "ops"):
        raise RuntimeError(f"fastrnn: exporting with torch.onnx.export(dynamo=True) needs "
                           f"torch.onnx.ops, which torch {torch.__version__} lacks; export "
                           "with dynamo=False, or use a newer torch (tested: 2.13)")
    steps, batch = x.shape[0], x.shape[1]
    directions, hidden = h0.shape[0], h0.shape[2]
    peepholes, coupled = variant
    # parameter k of every direction, gate blocks in ONNX's order: [D, G*H(, I or H)]
    per_direction = lambda k: torch.stack([_onnx_blocks(mode, w[k], coupled)
                                           for w in direction_weights])
    bias = torch.cat([per_direction(2), per_direction(3)], dim=1) if has_bias else None  # [D, 2GH]
    attrs = {"hidden_size": hidden,
             "direction": "bidirectional" if directions == 2 else "forward"}
    if coupled:
        attrs["input_forget"] = 1
    if mode == "GRU":
        attrs["linear_before_reset"] = 1  # torch's n = tanh(W_in x + b_in + r * (W_hn h + b_hn))
    elif mode != "LSTM":
        attrs["activations"] = ["Relu" if mode == "RNN_RELU" else "Tanh"] * directions
    # inputs X, W, R, B, sequence_lens, initial_h[, initial_c]
    inputs = [x, per_direction(0), per_direction(1), bias, lengths, h0] + (
        [c0] if c0 is not None else [])
    if peepholes:  # input P: [D, 3*H]
        inputs.append(torch.stack([_onnx_peepholes(w[-1], coupled) for w in direction_weights]))
    final_states = 2 if c0 is not None else 1  # outputs Y [T, D, B, H], Y_h[, Y_c] [D, B, H]
    outputs = torch.onnx.ops.symbolic_multi_out(
        _OPERATOR[mode], inputs, attrs, dtypes=[x.dtype] * (1 + final_states),
        shapes=[[steps, directions, batch, hidden]]
        + [[directions, batch, hidden]] * final_states)
    y = outputs[0].permute(0, 2, 1, 3).reshape(steps, batch, directions * hidden)
    return y, outputs[1], outputs[2] if c0 is not None else None


def _scan_layer(mode, x, h0, c0, direction_weights, has_bias, has_proj, layer_norm):
    """One LSTM or GRU layer that ONNX's operators cannot express (an LSTM with a projection,
    a layer-normalised LSTM or GRU: fastrnn.variants' equations), each direction an ONNX Scan
    over its steps. x: [T, B, I]; h0: [D, B, P]; c0: [D, B, H] (LSTM) or None;
    direction_weights: per direction (w_ih, w_hh[, b_ih, b_hh][, w_hr]), then with layer_norm
    the norms (functional.LAYER_NORMS). Returns y [T, B, D*P], h_n [D, B, P], c_n [D, B, H]
    or None."""
    from torch._higher_order_ops.scan import scan  # export only; private to torch

    count = len(functional.LAYER_NORMS[mode]) if layer_norm else 0
    ys, h_n, c_n = [], [], []
    for direction, weights in enumerate(direction_weights):
        norms, weights = weights[len(weights) - count:], weights[:len(weights) - count]
        w_ih, w_hh = weights[0], weights[1]
        b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
        gx = torch.matmul(x, w_ih.t())  # [T, B, G*H]
        if layer_norm:
            gx = _layer_norm(gx, norms[0], norms[1])
        if has_bias:  # the GRU's b_hh stays on the recurrent side
            gx = gx + (b_ih if mode == "GRU" else b_ih + b_hh)
        if direction == 1:
            gx = gx.flip(0)
        step = _step(mode, w_hh, b_hh, weights[-1] if has_proj else None, norms)
        initial = (h0[direction], c0[direction]) if mode == "LSTM" else h0[direction]
        final, y = scan(step, initial, gx)  # y: [T, B, P]
        ys.append(y.flip(0) if direction == 1 else y)
        h_n.append(final[0] if mode == "LSTM" else final)
        c_n.append(final[1] if mode == "LSTM" else None)
    return (torch.cat(ys, dim=2), torch.stack(h_n),
            torch.stack(c_n) if mode == "LSTM" else None)


def _layer_norm(v, gamma, beta):
    return F.layer_norm(v, v.shape[-1:], gamma, beta, functional.LAYER_NORM_EPS)


def _step(mode, w_hh, b_hh, w_hr, norms):
    """The Scan's step: (state, gates_x [B, G*H]) -> (new state, this step's h), the state
    (h [B, P], c [B, H]) for the LSTM, h for the GRU; torch.nn's step, with a projection
    (w_hr) and the recurrent side's norms (norms[2:]) where given."""
    def lstm(state, gates_x):
        h, c = state
        gh = torch.matmul(h, w_hh.t())
        if norms:
            gh = _layer_norm(gh, norms[2], norms[3])
        i, f, g, o = (gates_x + gh).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(_layer_norm(c, norms[4], norms[5]) if norms else c)
        if w_hr is not None:
            h = torch.matmul(h, w_hr.t())
        return (h, c), h.clone()

    def gru(h, gates_x):
        gh = _layer_norm(torch.matmul(h, w_hh.t()), norms[2], norms[3])
        if b_hh is not None:
            gh = gh + b_hh
        x_r, x_z, x_n = gates_x.chunk(3, dim=1)
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z)
        h = (1 - z) * torch.tanh(x_n + r * h_n) + z * h
        return h, h.clone()

    return lstm if mode == "LSTM" else gru
