"""Problems shared by the persistent kernels' host-emulation and GPU tests: random
inputs of one recurrence in the packed layout, and fastrnn's CPU ops as the oracle."""

import torch

from fastrnn._ops import GATES, SAVED_SLOTS as SAVED, ops

from helpers.persistent_host import packed_offsets

NAN = float("nan")


def batch_sizes_of(lengths):
    return [sum(1 for n in lengths if n > t) for t in range(max(lengths))]


def h_prev_rows(y, h0, batch_sizes, reverse):
    """[N, H]: the h_prev each packed row's step read."""
    offsets = packed_offsets(batch_sizes)
    T = len(batch_sizes)
    order = range(T - 1, -1, -1) if reverse else range(T)
    rows, prev_t = [None] * T, None
    for t in order:
        b = batch_sizes[t]
        prev = h0[:b].clone()
        if prev_t is not None:
            carried = min(b, batch_sizes[prev_t])
            prev[:carried] = y[offsets[prev_t]:offsets[prev_t] + carried]
        rows[t] = prev
        prev_t = t
    return torch.cat(rows)


def random_tensors(mode, batch_sizes, hidden, generator, w_scale):
    """(inputs, output gradients) of one recurrence, float64 on the CPU, uniform in [-1, 1)
    (w_hh in [-w_scale, w_scale)), drawn from `generator` in a fixed order."""
    N, B, G = sum(batch_sizes), batch_sizes[0], GATES[mode]

    def r(*shape, scale=1.0):
        return (torch.rand(*shape, generator=generator, dtype=torch.float64) * 2 - 1) * scale

    t = {"gx": r(N, G * hidden), "h0": r(B, hidden), "w_hh": r(G * hidden, hidden, scale=w_scale)}
    if mode.endswith("LSTM"):
        t["c0"] = r(B, hidden)
    if mode.startswith("PEEPHOLE"):  # p_i, p_f, p_o (coupled: p_i, p_o)
        t["unit_params"] = r((2 if "COUPLED" in mode else 3) * hidden)
    if mode == "GRU":
        t["b_hh"] = r(G * hidden)
    grads = {"grad_y": r(N, hidden), "grad_hn": r(B, hidden)}
    if mode.endswith("LSTM"):
        grads["grad_cn"] = r(B, hidden)
    return t, grads


def problem(mode, lengths, hidden, seed):
    bs = batch_sizes_of(lengths)
    t, grads = random_tensors(mode, bs, hidden, torch.Generator().manual_seed(seed), 0.4)
    return bs, t, grads


def cpu_forward(mode, t, bs, reverse):
    b = torch.tensor(bs, dtype=torch.int64)
    if mode.endswith("_LSTM"):  # the variants
        y, hn, cn, saved = ops.lstm_variant_forward(
            t["gx"], b, t["h0"], t["c0"], t["w_hh"], None, t.get("unit_params"),
            "COUPLED" in mode, False, reverse, True)
        return {"y": y, "hn": hn, "cn": cn, "saved": saved}
    if mode == "LSTM":
        y, hn, cn, saved = ops.lstm_forward(t["gx"], b, t["h0"], t["c0"], t["w_hh"], None, reverse,
                                           True)
        return {"y": y, "hn": hn, "cn": cn, "saved": saved}
    if mode == "GRU":
        y, hn, saved = ops.gru_forward(t["gx"], b, t["h0"], t["w_hh"], t["b_hh"], reverse, True)
        return {"y": y, "hn": hn, "saved": saved}
    y, hn = ops.rnn_forward(t["gx"], b, t["h0"], t["w_hh"], mode == "RNN_RELU", reverse)
    return {"y": y, "hn": hn}


def cpu_backward(mode, t, fwd, grads, bs, reverse):
    b = torch.tensor(bs, dtype=torch.int64)
    if mode.endswith("_LSTM"):  # the variants
        gx, gh0, gc0, gw, _, _ = ops.lstm_variant_backward(
            grads["grad_y"], grads["grad_hn"], grads["grad_cn"], b, t["h0"], t["c0"], t["w_hh"],
            None, t.get("unit_params"), "COUPLED" in mode, False, fwd["y"], fwd["saved"], reverse)
        return {"grad_gx": gx, "grad_h0": gh0, "grad_c0": gc0, "grad_w_hh": gw}
    if mode == "LSTM":
        gx, gh0, gc0, gw, _ = ops.lstm_backward(grads["grad_y"], grads["grad_hn"], grads["grad_cn"],
                                                b, t["h0"], t["c0"], t["w_hh"], None, fwd["y"],
                                                fwd["saved"], reverse)
        return {"grad_gx": gx, "grad_h0": gh0, "grad_c0": gc0, "grad_w_hh": gw}
    if mode == "GRU":
        gx, gh0, gw, gb = ops.gru_backward(grads["grad_y"], grads["grad_hn"], b, t["h0"], t["w_hh"],
                                           fwd["y"], fwd["saved"], True, reverse)
        return {"grad_gx": gx, "grad_h0": gh0, "grad_w_hh": gw, "grad_b_hh": gb}
    gx, gh0, gw = ops.rnn_backward(grads["grad_y"], grads["grad_hn"], b, t["h0"], t["w_hh"],
                                   fwd["y"], mode == "RNN_RELU", reverse)
    return {"grad_gx": gx, "grad_h0": gh0, "grad_w_hh": gw}


def poisoned(like, *shape):
    return torch.full(shape, NAN, dtype=like.dtype, device=like.device)


