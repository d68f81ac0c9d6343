"""Plain-PyTorch, loop-over-time LSTM/GRU/RNN over the packed layout: the test oracle.

Same signature and results as fastrnn.functional.rnn, written for clarity, not speed, from
torch.nn's documented equations; it uses no fastrnn op (and not fastrnn._C), so it can
check both fastrnn and itself against torch.nn. Run it in float64 for a tight oracle.

Packed layout: data [N, I] holds the rows of time step 0, then those of step 1, ...;
batch_sizes [T] (non-increasing) says how many rows each step has: the first
batch_sizes[t] sequences of the batch are active at step t.
"""

import torch

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


def _cell(mode, x, h, c, w_ih, w_hh, b_ih, b_hh, w_hr, variant=None, extra=None):
    """One time step for b active rows.

    x: [b, I]; h: [b, P]; c: [b, H] (LSTM) or None. Returns h': [b, P], c': [b, H] or None.
    variant: fastrnn.functional.Variant or None; extra: its peepholes [K*H], or with
    layer_norm its norms (γ, β of x W_ih^T, of h W_hh^T, and for the LSTM of c), or None.
    """
    norms = extra if variant is not None and variant.layer_norm else None
    gi = x @ w_ih.t()  # [b, G*H]
    gh = h @ w_hh.t()  # [b, G*H]
    if norms is not None:  # Ba et al.: each product normalised alone, before the biases
        gi, gh = _layer_norm(gi, *norms[0:2]), _layer_norm(gh, *norms[2:4])
    if b_ih is not None:
        gi, gh = gi + b_ih, gh + b_hh
    if variant is not None and norms is None:
        return _lstm_variant_cell(variant, gi + gh, c, w_hr, extra)
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=1)  # gate order i, f, g, o
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c if norms is None else _layer_norm(c, *norms[4:6]))
        return (h if w_hr is None else h @ w_hr.t()), c  # projected to [b, P]
    if mode == "GRU":
        i_r, i_z, i_n = gi.chunk(3, dim=1)  # gate order r, z, n
        h_r, h_z, h_n = gh.chunk(3, dim=1)
        r = torch.sigmoid(i_r + h_r)
        z = torch.sigmoid(i_z + h_z)
        n = torch.tanh(i_n + r * h_n)  # b_hn sits inside r * (.)
        return (1 - z) * n + z * h, None
    act = torch.tanh if mode == "RNN_TANH" else torch.relu
    return act(gi + gh), None


def _layer_norm(v, gamma, beta, eps=1e-5):
    """Layer normalisation of each row of v ([b, W]) over its W values (biased variance)."""
    mean = v.mean(dim=1, keepdim=True)
    var = ((v - mean) ** 2).mean(dim=1, keepdim=True)
    return gamma * (v - mean) / torch.sqrt(var + eps) + beta


def _lstm_variant_cell(variant, a, c, w_hr, peepholes):
    """The LSTM variants' step as their papers write it (fastrnn.variants' docstring):
    a: [b, G*H] the pre-activations, gate blocks i, f, g, o (coupled gates: i, g, o);
    c: [b, H]; peepholes: [K*H] p_i, p_f, p_o (coupled: p_i, p_o) or None."""
    if variant.coupled_gates:
        a_i, a_g, a_o = a.chunk(3, dim=1)
    else:
        a_i, a_f, a_g, a_o = a.chunk(4, dim=1)
    p = peepholes.chunk(2 if variant.coupled_gates else 3) if variant.peepholes else None
    i = torch.sigmoid(a_i + p[0] * c if p is not None else a_i)
    if variant.coupled_gates:
        f = 1 - i
    else:
        f = torch.sigmoid(a_f + p[1] * c if p is not None else a_f)
    c = f * c + i * torch.tanh(a_g)
    o = torch.sigmoid(a_o + p[-1] * c if p is not None else a_o)  # the new cell
    h = o * torch.tanh(c)
    return (h if w_hr is None else h @ w_hr.t()), c


def _direction(mode, x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse,
               variant=None):
    """One layer, one direction. x: [N, I]; h0: [B, P]; c0: [B, H] or None.

    Returns y: [N, P], h_n: [B, P], c_n: [B, H] or None.
    """
    extra = None  # the variant's own parameters, which end the weights
    if variant is not None and (variant.peepholes or variant.layer_norm):
        count = 1 if variant.peepholes else (6 if mode == "LSTM" else 4)
        extra = weights[-1] if count == 1 else weights[-count:]
        weights = weights[:-count]
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
    w_hr = weights[-1] if has_proj else None
    offsets = [0]
    for b in batch_sizes[:-1]:
        offsets.append(offsets[-1] + b)
    # h, c: [B, *]; row k holds the latest state of sequence k. Rows not active at a step
    # are left as they are: in time order they end with their final state, in reverse
    # order they still hold h0/c0 when they become active.
    h, c = h0, c0
    ys = [None] * len(batch_sizes)
    steps = range(len(batch_sizes))
    for t in (reversed(steps) if reverse else steps):
        b, first = batch_sizes[t], offsets[t]
        h_new, c_new = _cell(mode, x[first:first + b], h[:b], None if c is None else c[:b],
                             w_ih, w_hh, b_ih, b_hh, w_hr, variant, extra)
        ys[t] = h_new
        h = torch.cat([h_new, h[b:]])
        if c is not None:
            c = torch.cat([c_new, c[b:]])
    return torch.cat(ys), h, c


def rnn(mode, data, batch_sizes, h0, c0, weights, *, has_bias, num_layers, bidirectional,
        proj_size=0, dropout=0.0, training=False, variant=None):
    """data: [N, I]; batch_sizes: [T] (tensor or ints); h0: [L*D, B, P];
    c0: [L*D, B, H] (LSTM) or None; weights: torch.nn's module._flat_weights order (with
    a variant's peepholes or norms last in each layer and direction); variant: a
    Variant (fastrnn.functional) or None.

    Returns output: [N, D*P], h_n: [L*D, B, P], c_n: [L*D, B, H] or None.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown recurrent mode {mode!r}; expected one of {MODES}")
    if dropout > 0 and training and num_layers > 1:
        raise NotImplementedError("the reference implements no dropout")
    batch_sizes = [int(b) for b in batch_sizes]
    directions = 2 if bidirectional else 1
    per_direction = len(weights) // (num_layers * directions)
    layer_input = data  # [N, I], then [N, D*P]
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            y, h, c = _direction(mode, layer_input, batch_sizes, h0[k],
                                 None if c0 is None else c0[k],
                                 weights[k * per_direction:(k + 1) * per_direction],
                                 has_bias, proj_size > 0, direction == 1, variant)
            outputs.append(y)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outputs, dim=1)
    return layer_input, torch.stack(h_n), None if c0 is None else torch.stack(c_n)
