"""Loads the compiled ops (torch.ops.fastrnn.*) and registers their autograd (their fake
kernels: fastrnn._fake_ops).

Every forward op returns, besides its results, the tensors its backward reads; the
backward op only reads them, so backward can run any number of times (retain_graph).
With save=False (inference) the LSTM and GRU forward ops skip writing `saved`, return it
empty and cannot be differentiated.
"""

import torch

try:
    from . import _C  # importing registers torch.ops.fastrnn.*
except ImportError as error:  # pragma: no cover - only without a build
    raise ImportError(
        "fastrnn's compiled extension fastrnn._C is missing or does not load "
        f"({error}). Build it against the installed torch: run `pip install "
        "--no-build-isolation -e .` (or `python setup.py build_ext --inplace`) in the "
        "fastrnn source tree."
    ) from error

ops = torch.ops.fastrnn

# Per cell, the gate blocks of gx ([N, gates*H]) and the saved slots of a row ([N, slots*H]),
# as the extension defines them: one <CELL>_GATES and <CELL>_SAVED per cell of
# csrc/cells/all.h.
GATES = {name.removesuffix("_GATES"): getattr(_C, name) for name in dir(_C)
         if name.endswith("_GATES")}
SAVED_SLOTS = {cell: getattr(_C, f"{cell}_SAVED") for cell in GATES}


def _zeros_if_none(grad, like):
    return torch.zeros_like(like) if grad is None else grad


def _none_if_empty(grad, wanted):
    return grad if wanted else None


def lstm_variant_cell(peepholes, coupled, layer_norm=False):
    """The cell name (GATES, SAVED_SLOTS, CELL_KIND) of the LSTM with or without peepholes
    and coupled gates, or with layer norm."""
    if layer_norm:
        return "LAYER_NORM_LSTM"
    return ("PEEPHOLE_" if peepholes else "") + ("COUPLED_" if coupled else "") + "LSTM"


# --- the zero initial state of a packed batch -------------------------------------------


@torch.library.custom_op("fastrnn::packed_zeros", mutates_args=())
def packed_zeros(batch_sizes: torch.Tensor, layers: int, size: int, dtype: torch.dtype,
                 device: torch.device) -> torch.Tensor:
    """Zeros [layers, batch_sizes[0], size]. The batch of a packed input sorted by its
    creator (no sorted_indices) is only known from batch_sizes' values: to torch.compile this
    op's result has a data-dependent batch, where reading batch_sizes[0] in Python would not
    trace. batch_sizes: [T], int64, CPU."""
    return torch.zeros(layers, int(batch_sizes[0]), size, dtype=dtype, device=device)


@packed_zeros.register_fake
def _(batch_sizes, layers, size, dtype, device):
    batch = torch.library.get_ctx().new_dynamic_size()
    return torch.empty(layers, batch, size, dtype=dtype, device=device)


# --- autograd ---------------------------------------------------------------------------


def _require_saved(ctx, op):
    if not ctx.saved_for_backward:
        raise RuntimeError(
            f"fastrnn: {op} ran with save=False, which keeps nothing for backward; call it "
            "with save=True to differentiate it")


def _lstm_setup(ctx, inputs, output):
    gx, batch_sizes, h0, c0, w_hh, w_hr, reverse, save = inputs
    y, _, _, saved = output
    ctx.save_for_backward(batch_sizes, h0, c0, w_hh, w_hr, y, saved)
    ctx.reverse, ctx.saved_for_backward = reverse, save
    ctx.set_materialize_grads(False)  # unused outputs: None, not zero tensors


def _lstm_recurrence_grads(ctx, grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh, w_hr, y,
                           saved):
    """lstm_backward on the gradients w.r.t. the forward's outputs (None: zero)."""
    return ops.lstm_backward(
        _zeros_if_none(grad_y, y), _zeros_if_none(grad_hn, h0), _zeros_if_none(grad_cn, c0),
        batch_sizes, h0, c0, w_hh, w_hr, y, saved, ctx.reverse)


def _lstm_backward(ctx, grad_y, grad_hn, grad_cn, _grad_saved):
    _require_saved(ctx, "lstm_forward")
    batch_sizes, h0, c0, w_hh, w_hr, y, saved = ctx.saved_tensors
    grad_gx, grad_h0, grad_c0, grad_w_hh, grad_w_hr = _lstm_recurrence_grads(
        ctx, grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh, w_hr, y, saved)
    return (grad_gx, None, grad_h0, grad_c0, grad_w_hh,
            _none_if_empty(grad_w_hr, w_hr is not None), None, None)


def _lstm_input_setup(ctx, inputs, output):
    x, w_ih, bias, batch_sizes, h0, c0, w_hh, w_hr, reverse, save = inputs
    y, _, _, saved = output
    # What the input side's gradients read: x's w_ih, w_ih's x.
    ctx.save_for_backward(batch_sizes, h0, c0, w_hh, w_hr, y, saved,
                          x if w_ih.requires_grad else None, w_ih if x.requires_grad else None)
    ctx.reverse, ctx.saved_for_backward, ctx.has_bias = reverse, save, bias is not None
    ctx.set_materialize_grads(False)  # unused outputs: None, not zero tensors


def input_product_grads(grad, input, weight, needs_input, needs_weight, needs_bias):
    """The gradients of input @ weight^T + bias from grad [N, M] (input [N, K], weight
    [M, K]; each None unless needed): the input's grad @ weight (through fastrnn::linear on
    the CPU), the weight's grad^T @ input, the bias's the rows' sum."""
    grad_input = None
    if needs_input:
        grad_input = ops.linear(grad, weight.t(), None) if grad.is_cpu else grad.mm(weight)
    return (grad_input, grad.t().mm(input) if needs_weight else None,
            grad.sum(0) if needs_bias else None)


def _lstm_input_backward(ctx, grad_y, grad_hn, grad_cn, _grad_saved):
    """lstm_forward's gradients, then the input product's from grad_gx [N, 4H]."""
    _require_saved(ctx, "lstm_input_forward")
    batch_sizes, h0, c0, w_hh, w_hr, y, saved, x, w_ih = ctx.saved_tensors
    grad_gx, grad_h0, grad_c0, grad_w_hh, grad_w_hr = _lstm_recurrence_grads(
        ctx, grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh, w_hr, y, saved)
    needs_x, needs_w_ih, needs_bias = ctx.needs_input_grad[:3]
    return (*input_product_grads(grad_gx, x, w_ih, needs_x, needs_w_ih,
                                 ctx.has_bias and needs_bias),
            None, grad_h0, grad_c0, grad_w_hh, _none_if_empty(grad_w_hr, w_hr is not None),
            None, None)


def _lstm_variant_setup(ctx, inputs, output):
    gx, batch_sizes, h0, c0, w_hh, w_hr, params, coupled, layer_norm, reverse, save = inputs
    y, _, _, saved = output
    ctx.save_for_backward(batch_sizes, h0, c0, w_hh, w_hr, params, y, saved)
    ctx.coupled, ctx.layer_norm, ctx.reverse = coupled, layer_norm, reverse
    ctx.saved_for_backward = save
    ctx.set_materialize_grads(False)  # unused outputs: None, not zero tensors


def _lstm_variant_backward(ctx, grad_y, grad_hn, grad_cn, _grad_saved):
    _require_saved(ctx, "lstm_variant_forward")
    batch_sizes, h0, c0, w_hh, w_hr, params, y, saved = ctx.saved_tensors
    grad_gx, grad_h0, grad_c0, grad_w_hh, grad_w_hr, grad_params = ops.lstm_variant_backward(
        _zeros_if_none(grad_y, y), _zeros_if_none(grad_hn, h0), _zeros_if_none(grad_cn, c0),
        batch_sizes, h0, c0, w_hh, w_hr, params, ctx.coupled, ctx.layer_norm, y, saved,
        ctx.reverse)
    return (grad_gx, None, grad_h0, grad_c0, grad_w_hh,
            _none_if_empty(grad_w_hr, w_hr is not None),
            _none_if_empty(grad_params, params is not None), None, None, None, None)


def _gru_setup(ctx, inputs, output):
    gx, batch_sizes, h0, w_hh, b_hh, reverse, save = inputs
    y, _, saved = output
    ctx.save_for_backward(batch_sizes, h0, w_hh, y, saved)
    ctx.has_bias, ctx.reverse, ctx.saved_for_backward = b_hh is not None, reverse, save
    ctx.set_materialize_grads(False)  # unused outputs: None, not zero tensors


def _gru_backward(ctx, grad_y, grad_hn, _grad_saved):
    _require_saved(ctx, "gru_forward")
    batch_sizes, h0, w_hh, y, saved = ctx.saved_tensors
    grad_gx, grad_h0, grad_w_hh, grad_b_hh = ops.gru_backward(
        _zeros_if_none(grad_y, y), _zeros_if_none(grad_hn, h0), batch_sizes, h0, w_hh, y,
        saved, ctx.has_bias, ctx.reverse)
    return (grad_gx, None, grad_h0, grad_w_hh, _none_if_empty(grad_b_hh, ctx.has_bias), None,
            None)


def _gru_variant_setup(ctx, inputs, output):
    gx, batch_sizes, h0, w_hh, b_hh, norms, reverse, save = inputs
    y, _, saved = output
    ctx.save_for_backward(batch_sizes, h0, w_hh, norms, y, saved)
    ctx.has_bias, ctx.reverse, ctx.saved_for_backward = b_hh is not None, reverse, save
    ctx.set_materialize_grads(False)  # unused outputs: None, not zero tensors


def _gru_variant_backward(ctx, grad_y, grad_hn, _grad_saved):
    _require_saved(ctx, "gru_variant_forward")
    batch_sizes, h0, w_hh, norms, y, saved = ctx.saved_tensors
    grad_gx, grad_h0, grad_w_hh, grad_b_hh, grad_norms = ops.gru_variant_backward(
        _zeros_if_none(grad_y, y), _zeros_if_none(grad_hn, h0), batch_sizes, h0, w_hh, norms,
        y, saved, ctx.has_bias, ctx.reverse)
    return (grad_gx, None, grad_h0, grad_w_hh, _none_if_empty(grad_b_hh, ctx.has_bias),
            _none_if_empty(grad_norms, norms is not None), None, None)


def _rnn_setup(ctx, inputs, output):
    gx, batch_sizes, h0, w_hh, relu, reverse = inputs
    y, _ = output
    ctx.save_for_backward(batch_sizes, h0, w_hh, y)
    ctx.relu, ctx.reverse = relu, reverse
    ctx.set_materialize_grads(False)  # unused outputs: None, not zero tensors


def _rnn_backward(ctx, grad_y, grad_hn):
    batch_sizes, h0, w_hh, y = ctx.saved_tensors
    grad_gx, grad_h0, grad_w_hh = ops.rnn_backward(
        _zeros_if_none(grad_y, y), _zeros_if_none(grad_hn, h0), batch_sizes, h0, w_hh, y,
        ctx.relu, ctx.reverse)
    return grad_gx, None, grad_h0, grad_w_hh, None, None


def _clockwork_setup(ctx, inputs, output):
    x, w_ih, bias, batch_sizes, h0, w_hh, periods = inputs
    ctx.save_for_backward(x, w_ih, batch_sizes, h0, w_hh, output[0])
    ctx.periods, ctx.has_bias = periods, bias is not None


def _clockwork_backward(ctx, grad_y, grad_hn):
    x, w_ih, batch_sizes, h0, w_hh, y = ctx.saved_tensors
    grad_x, grad_w_ih, grad_bias, grad_h0, grad_w_hh = ops.clockwork_backward(
        _zeros_if_none(grad_y, y), _zeros_if_none(grad_hn, h0), x, w_ih, batch_sizes, h0, w_hh,
        y, ctx.periods, ctx.needs_input_grad[0])
    return (_none_if_empty(grad_x, ctx.needs_input_grad[0]), grad_w_ih,
            _none_if_empty(grad_bias, ctx.has_bias), None, grad_h0, grad_w_hh, None)


def _no_double_backward(ctx, *grads):
    raise RuntimeError(
        "fastrnn: double backward (the gradient of a gradient, e.g. a gradient penalty) is "
        "not supported by the recurrence ops")


torch.library.register_autograd("fastrnn::lstm_forward", _lstm_backward, setup_context=_lstm_setup)
torch.library.register_autograd("fastrnn::lstm_input_forward", _lstm_input_backward,
                                setup_context=_lstm_input_setup)
torch.library.register_autograd("fastrnn::lstm_variant_forward", _lstm_variant_backward,
                                setup_context=_lstm_variant_setup)
torch.library.register_autograd("fastrnn::gru_forward", _gru_backward, setup_context=_gru_setup)
torch.library.register_autograd("fastrnn::gru_variant_forward", _gru_variant_backward,
                                setup_context=_gru_variant_setup)
torch.library.register_autograd("fastrnn::rnn_forward", _rnn_backward, setup_context=_rnn_setup)
torch.library.register_autograd("fastrnn::clockwork_forward", _clockwork_backward,
                                setup_context=_clockwork_setup)
for _backward_op in ("lstm_backward", "lstm_variant_backward", "gru_backward",
                     "gru_variant_backward", "rnn_backward", "clockwork_backward"):
    torch.library.register_autograd(f"fastrnn::{_backward_op}", _no_double_backward)


def _no_reservoir_backward(ctx, *grads):
    raise RuntimeError(
        "fastrnn: the leaky reservoir recurrence (an echo state network's) is forward only: "
        "it has no gradient; only the readout is fitted")


for _leaky_op in ("leaky_forward", "leaky_forward_csr"):
    torch.library.register_autograd(f"fastrnn::{_leaky_op}", _no_reservoir_backward)
