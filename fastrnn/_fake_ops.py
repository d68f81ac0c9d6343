"""Fake (shape-only) kernels of the recurrence ops (fastrnn._ops): what meta tensors and
torch.compile see of them. gx: [N, gates*H]; h0: [B, P]; every shape follows from the
inputs' shapes. They check what the kernels check about devices: a meta tensor among CPU
ones sends a call here, not there. Registered on import, with the package (fastrnn._cell_ops,
whose own fakes share the device checks here, imports this module).
"""

import torch

from ._ops import GATES, SAVED_SLOTS, lstm_variant_cell


def _check_devices(op, batch_sizes, *tensors):
    """batch_sizes on the CPU, every other tensor on the device of the first."""
    torch._check(batch_sizes.device.type == "cpu",
                 lambda: f"{op}: batch_sizes must be a 1-D int64 CPU tensor, got one on "
                         f"{batch_sizes.device}")
    _check_same_device(op, *tensors)


def _check_same_device(op, *tensors):
    """Every tensor (None: absent) on the device of the first."""
    device = tensors[0].device
    for t in tensors:
        torch._check(t is None or t.device == device,
                     lambda: f"{op}: every tensor must be on the state's device ({device}), "
                             f"got one on {t.device}")


def _lstm_forward_fake(op, gx, batch_sizes, h0, c0, w_hh, w_hr, params, coupled, layer_norm,
                       save):
    """lstm_forward's and lstm_variant_forward's results (params None, coupled and
    layer_norm False: the plain LSTM)."""
    _check_devices(op, batch_sizes, h0, gx, c0, w_hh, w_hr, params)
    torch._check(not layer_norm or params is not None,
                 lambda: f"{op}: this cell needs norms [10*H]")
    n, hidden = gx.shape[0], c0.shape[1]
    slots = SAVED_SLOTS[lstm_variant_cell(params is not None, coupled, layer_norm)]
    return (gx.new_empty(n, h0.shape[1]), torch.empty_like(h0), torch.empty_like(c0),
            gx.new_empty(n if save else 0, slots * hidden))


def _lstm_backward_fake(op, grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh, w_hr,
                        params, coupled, layer_norm, y, saved):
    """lstm_variant_backward's results; lstm_backward's are the first five."""
    _check_devices(op, batch_sizes, h0, grad_y, grad_hn, grad_cn, c0, w_hh, w_hr, params, y,
                   saved)
    n, hidden = y.shape[0], c0.shape[1]
    gates = GATES[lstm_variant_cell(params is not None, coupled, layer_norm)]
    optional = lambda t: torch.empty_like(t) if t is not None else y.new_empty(0)
    return (y.new_empty(n, gates * hidden), torch.empty_like(h0), torch.empty_like(c0),
            torch.empty_like(w_hh), optional(w_hr), optional(params))


@torch.library.register_fake("fastrnn::lstm_forward")
def _(gx, batch_sizes, h0, c0, w_hh, w_hr, reverse, save):
    return _lstm_forward_fake("lstm_forward", gx, batch_sizes, h0, c0, w_hh, w_hr, None, False,
                              False, save)


@torch.library.register_fake("fastrnn::lstm_input_forward")
def _(x, w_ih, bias, batch_sizes, h0, c0, w_hh, w_hr, reverse, save):
    _check_same_device("lstm_input_forward", h0, x, w_ih, bias)
    torch._check(x.dim() == 2 and w_ih.dim() == 2 and x.shape[1] == w_ih.shape[1],
                 lambda: "lstm_input_forward: x [N, I] and w_ih [4*H, I] expected")
    torch._check(bias is None or (bias.shape == (w_ih.shape[0],) and bias.dtype == x.dtype),
                 lambda: "lstm_input_forward: bias [4*H] of x's dtype expected")
    gx = x.new_empty(x.shape[0], w_ih.shape[0])
    return _lstm_forward_fake("lstm_input_forward", gx, batch_sizes, h0, c0, w_hh, w_hr, None,
                              False, False, save)


@torch.library.register_fake("fastrnn::lstm_backward")
def _(grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh, w_hr, y, saved, reverse):
    return _lstm_backward_fake("lstm_backward", grad_y, grad_hn, grad_cn, batch_sizes, h0, c0,
                               w_hh, w_hr, None, False, False, y, saved)[:5]


@torch.library.register_fake("fastrnn::lstm_variant_forward")
def _(gx, batch_sizes, h0, c0, w_hh, w_hr, params, coupled, layer_norm, reverse, save):
    return _lstm_forward_fake("lstm_variant_forward", gx, batch_sizes, h0, c0, w_hh, w_hr,
                              params, coupled, layer_norm, save)


@torch.library.register_fake("fastrnn::lstm_variant_backward")
def _(grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh, w_hr, params, coupled, layer_norm,
      y, saved, reverse):
    return _lstm_backward_fake("lstm_variant_backward", grad_y, grad_hn, grad_cn, batch_sizes,
                               h0, c0, w_hh, w_hr, params, coupled, layer_norm, y, saved)


def _gru_forward_fake(op, gx, batch_sizes, h0, w_hh, b_hh, norms, save):
    """gru_forward's and gru_variant_forward's results (norms None: the plain GRU)."""
    _check_devices(op, batch_sizes, h0, gx, w_hh, b_hh, norms)
    n, hidden = gx.shape[0], h0.shape[1]
    slots = SAVED_SLOTS["GRU" if norms is None else "LAYER_NORM_GRU"]
    return (gx.new_empty(n, hidden), torch.empty_like(h0),
            gx.new_empty(n if save else 0, slots * hidden))


def _gru_backward_fake(op, grad_y, grad_hn, batch_sizes, h0, w_hh, norms, y, saved, has_bias):
    """gru_variant_backward's results; gru_backward's are the first four."""
    _check_devices(op, batch_sizes, h0, grad_y, grad_hn, w_hh, norms, y, saved)
    n, hidden = y.shape[0], h0.shape[1]
    gates = GATES["GRU"] * hidden
    return (y.new_empty(n, gates), torch.empty_like(h0), torch.empty_like(w_hh),
            y.new_empty(gates if has_bias else 0),
            torch.empty_like(norms) if norms is not None else y.new_empty(0))


@torch.library.register_fake("fastrnn::gru_forward")
def _(gx, batch_sizes, h0, w_hh, b_hh, reverse, save):
    return _gru_forward_fake("gru_forward", gx, batch_sizes, h0, w_hh, b_hh, None, save)


@torch.library.register_fake("fastrnn::gru_backward")
def _(grad_y, grad_hn, batch_sizes, h0, w_hh, y, saved, has_bias, reverse):
    return _gru_backward_fake("gru_backward", grad_y, grad_hn, batch_sizes, h0, w_hh, None, y,
                              saved, has_bias)[:4]


@torch.library.register_fake("fastrnn::gru_variant_forward")
def _(gx, batch_sizes, h0, w_hh, b_hh, norms, reverse, save):
    return _gru_forward_fake("gru_variant_forward", gx, batch_sizes, h0, w_hh, b_hh, norms, save)


@torch.library.register_fake("fastrnn::gru_variant_backward")
def _(grad_y, grad_hn, batch_sizes, h0, w_hh, norms, y, saved, has_bias, reverse):
    return _gru_backward_fake("gru_variant_backward", grad_y, grad_hn, batch_sizes, h0, w_hh,
                              norms, y, saved, has_bias)


@torch.library.register_fake("fastrnn::rnn_forward")
def _(gx, batch_sizes, h0, w_hh, relu, reverse):
    _check_devices("rnn_forward", batch_sizes, h0, gx, w_hh)
    return gx.new_empty(gx.shape[0], h0.shape[1]), torch.empty_like(h0)


@torch.library.register_fake("fastrnn::rnn_backward")
def _(grad_y, grad_hn, batch_sizes, h0, w_hh, y, relu, reverse):
    _check_devices("rnn_backward", batch_sizes, h0, grad_y, grad_hn, w_hh, y)
    return torch.empty_like(y), torch.empty_like(h0), torch.empty_like(w_hh)


@torch.library.register_fake("fastrnn::leaky_forward")
def _(gx, batch_sizes, h0, w_hh, leak, reverse):
    _check_devices("leaky_forward", batch_sizes, h0, gx, w_hh, leak)
    return gx.new_empty(gx.shape[0], h0.shape[1]), torch.empty_like(h0)


@torch.library.register_fake("fastrnn::leaky_forward_csr")
def _(gx, batch_sizes, h0, crow_indices, col_indices, values, leak, reverse):
    _check_devices("leaky_forward_csr", batch_sizes, h0, gx, crow_indices, col_indices, values,
                   leak)
    return gx.new_empty(gx.shape[0], h0.shape[1]), torch.empty_like(h0)


@torch.library.register_fake("fastrnn::clockwork_forward")
def _(x, w_ih, bias, batch_sizes, h0, w_hh, periods):
    _check_devices("clockwork_forward", batch_sizes, h0, x, w_ih, bias, w_hh)
    return h0.new_empty(x.shape[0], h0.shape[1]), h0.new_empty(h0.shape)


@torch.library.register_fake("fastrnn::clockwork_backward")
def _(grad_y, grad_hn, x, w_ih, batch_sizes, h0, w_hh, y, periods, input_grad):
    _check_devices("clockwork_backward", batch_sizes, h0, grad_y, grad_hn, x, w_ih, w_hh, y)
    return (x.new_empty(x.shape if input_grad else (0, x.shape[1])), w_ih.new_empty(w_ih.shape),
            w_ih.new_empty(w_ih.shape[0]),
            h0.new_empty(h0.shape), w_hh.new_empty(w_hh.shape))
