"""Layers, directions and inter-layer dropout on top of the recurrence ops.

Every sequence is handled in the packed layout: data [N, features] whose rows for time
step t follow those of t-1, and batch_sizes [T] (int64, CPU, non-increasing) saying how
many rows each step has. A dense [T, B, features] input is the case batch_sizes = [B] * T.
"""

from typing import NamedTuple

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn.functional as F

from . import _C
from . import _autocast_rules as rules
from ._input_product import input_product
from ._transforms import refuse_differentiating_transform
from ._cell_ops import CELL_KIND, cell_step
from ._ops import lstm_variant_cell, ops

MODES = ("LSTM", "GRU", "RNN_TANH", "RNN_RELU")


class Variant(NamedTuple):
    """Which variant a stack runs (fastrnn.variants documents them): for the LSTM,
    peepholes, whose vector [K*H] ends each layer and direction's weights (after w_hr), and
    coupled input and forget gates (gate blocks i, g, o); for the LSTM or the GRU,
    layer_norm, whose norms end each layer and direction's weights (LAYER_NORMS)."""
    peepholes: bool = False
    coupled_gates: bool = False
    layer_norm: bool = False


# The layer-normalised recurrences' eps (csrc/cells/layer_norm.h's kEps), and per mode the
# names of their norms' parameters as they end each layer and direction's weights: gamma
# and beta of the input product x W_ih^T [G*H], of the recurrent product h W_hh^T [G*H],
# and for the LSTM of the cell state [H].
LAYER_NORM_EPS = 1e-5
LAYER_NORMS = {
    "LSTM": ("ln_weight_ih", "ln_bias_ih", "ln_weight_hh", "ln_bias_hh", "ln_weight_c",
             "ln_bias_c"),
    "GRU": ("ln_weight_ih", "ln_bias_ih", "ln_weight_hh", "ln_bias_hh"),
}


def _needs_grad(*tensors):
    """Whether autograd will differentiate an op on these inputs: without it (inference) the
    ops skip writing what only their backward reads."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _direction(mode, x, batch_sizes, h0, c0, weights, has_bias, has_proj, reverse,
               variant=None, product_dtype=None):
    """One layer in one direction. x: [N, I]; h0: [B, P]; c0: [B, H] (LSTM) or None; or a
    dense step without projection or layer norm: x [1, B, I], h0 and c0 [1, B, .], each
    result [1, B, .] (the cell op's shapes for a layer's step).

    weights: (w_ih, w_hh[, b_ih, b_hh][, w_hr]) in torch.nn's order, then the peepholes
    or the norms (LAYER_NORMS) of a variant that has them. product_dtype: input_product's
    dtype. Returns y: [N, P], hn: [B, P], cn: [B, H] or None.
    """
    if variant is not None and variant.layer_norm:
        return _layer_norm_direction(mode, x, batch_sizes, h0, c0, weights, has_bias,
                                     has_proj, reverse, product_dtype)
    peepholes = weights[-1] if variant is not None and variant.peepholes else None
    if peepholes is not None:
        weights = weights[:-1]
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
    w_hr = weights[-1] if has_proj else None
    if batch_sizes.shape[0] == 1 and not has_proj:  # one step, in either direction: a cell call
        cell = CELL_KIND[mode if variant is None else lstm_variant_cell(*variant)]
        y, h, c = cell_step(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, peepholes)
        return y, h, (c if c0 is not None else None)
    w_hh = _recurrent_weight(mode, w_hh, has_proj, product_dtype)
    if mode == "GRU":  # b_hh stays on the recurrent side: torch puts b_hn inside r * (.)
        gx = input_product(x, w_ih, b_ih, product_dtype)
        y, hn, _ = ops.gru_forward(gx, batch_sizes, h0, w_hh, b_hh, reverse,
                                    _needs_grad(gx, h0, w_hh, b_hh))
        return y, hn, None
    bias = b_ih + b_hh if has_bias else None
    if mode == "LSTM" and variant is None and _input_in_walk(x, product_dtype):
        y, hn, cn, _ = ops.lstm_input_forward(
            x, w_ih, bias, batch_sizes, h0, c0, w_hh, w_hr, reverse,
            _needs_grad(x, w_ih, bias, h0, c0, w_hh, w_hr))
        return y, hn, cn
    gx = input_product(x, w_ih, bias, product_dtype)
    if variant is not None:  # the LSTM with peepholes and/or coupled gates
        y, hn, cn, _ = ops.lstm_variant_forward(
            gx, batch_sizes, h0, c0, w_hh, w_hr, peepholes, variant.coupled_gates, False,
            reverse, _needs_grad(gx, h0, c0, w_hh, w_hr, peepholes))
        return y, hn, cn
    if mode == "LSTM":
        y, hn, cn, _ = ops.lstm_forward(gx, batch_sizes, h0, c0, w_hh, w_hr, reverse,
                                        _needs_grad(gx, h0, c0, w_hh, w_hr))
        return y, hn, cn
    y, hn = ops.rnn_forward(gx, batch_sizes, h0, w_hh, mode == "RNN_RELU", reverse)
    return y, hn, None


def _input_in_walk(x, product_dtype):
    """Whether the LSTM takes its input rows to fastrnn::lstm_input_forward, whose fused CPU
    walk forms the input product step by step next to the recurrent one
    (csrc/cpu/fused_walk.h), rather than gx from input_product: on the CPU, in x's dtype,
    outside torch.compile and torch.export (whose graphs keep the input product's
    torch.addmm, as input_product says)."""
    return (x.is_cpu and product_dtype in (None, x.dtype)
            and not torch.compiler.is_compiling())


def _recurrent_weight(mode, w_hh, has_proj, product_dtype):
    """w_hh as the recurrence op takes it: in product_dtype (bfloat16) for a float32 layer
    without projection on the CPU, where this build's fused walks multiply in bfloat16
    (_C.BFLOAT16_PRODUCTS: built for AVX512-BF16), with float accumulation, the state and
    gates staying in float (csrc/cpu/panel_operands.h; the other walks read it converted
    back, exactly); else as it is. Not for the relu RNN: its unbounded state carried the
    rounding further, to 2.01x torch.nn's error against float64 in a gradient of
    tests/test_autocast.py's packed case (the rule allows 2x)."""
    if (product_dtype is None or has_proj or mode == "RNN_RELU"
            or w_hh.dtype != torch.float32 or not _C.BFLOAT16_PRODUCTS or not w_hh.is_cpu):
        return w_hh
    return w_hh.to(product_dtype)


def _layer_norm_direction(mode, x, batch_sizes, h0, c0, weights, has_bias, has_proj,
                          reverse, product_dtype=None):
    """_direction for the layer-normalised LSTM or GRU: the input product normalised here,
    for all rows at once, the recurrent product and (LSTM) the cell state inside each step
    of the op. weights: torch.nn's, then LAYER_NORMS[mode]'s."""
    count = len(LAYER_NORMS[mode])
    norms, weights = weights[-count:], weights[:-count]
    w_ih, w_hh = weights[0], weights[1]
    b_ih, b_hh = (weights[2], weights[3]) if has_bias else (None, None)
    w_hr = weights[-1] if has_proj else None
    # LN(x W_ih^T; γ, β) + biases, the biases added to β (one pass over gx, not two): the
    # LSTM's b_ih and b_hh, the GRU's b_ih (its b_hh stays on the recurrent side).
    shift = norms[1] if not has_bias else (
        norms[1] + b_ih if mode == "GRU" else norms[1] + b_ih + b_hh)
    gx = F.layer_norm(input_product(x, w_ih, None, product_dtype), (w_ih.shape[0],), norms[0],
                      shift, LAYER_NORM_EPS)
    recurrent_norms = torch.cat(norms[2:])  # the op's: gamma_h, beta_h[, gamma_c, beta_c]
    w_hh = _recurrent_weight(mode, w_hh, has_proj, product_dtype)
    if mode == "GRU":
        y, hn, _ = ops.gru_variant_forward(gx, batch_sizes, h0, w_hh, b_hh, recurrent_norms,
                                            reverse, _needs_grad(gx, h0, w_hh, b_hh,
                                                                 recurrent_norms))
        return y, hn, None
    y, hn, cn, _ = ops.lstm_variant_forward(
        gx, batch_sizes, h0, c0, w_hh, w_hr, recurrent_norms, False, True, reverse,
        _needs_grad(gx, h0, c0, w_hh, w_hr, recurrent_norms))
    return y, hn, cn


def rnn(mode, data, batch_sizes, h0, c0, weights, *, has_bias, num_layers, bidirectional,
        proj_size=0, dropout=0.0, training=False, packed=False, variant=None,
        product_dtype=None):
    """Runs a stack of recurrent layers over packed data.

    data: [N, I]; batch_sizes: [T]; h0: [L*D, B, P]; c0: [L*D, B, H] for LSTM, else None;
    or one dense step [1, B, I] (batch_sizes [B]), whose output then keeps that shape,
    [1, B, D*P];
    weights: the flat list of torch.nn's parameters (module._flat_weights order);
    packed: whether the caller's input was a PackedSequence (only autocast's result dtypes
    depend on it, as torch.nn's do); variant: a Variant for mode LSTM (or, with layer_norm
    only, GRU), or None (the result dtypes under autocast are then torch.nn's layer's on
    the same input); product_dtype: the dtype of the input products x @ W_ih^T over all
    rows and of their gradients (fastrnn._input_product), None for data's (under autocast:
    rules.autocast_product_dtype's).
    Returns output: [N, D*P], h_n: [L*D, B, P], c_n: [L*D, B, H] or None.
    """
    if mode not in MODES:
        raise ValueError(f"Unknown recurrent mode {mode!r}; expected one of {MODES}")
    if variant is not None and not any(variant):
        variant = None  # no option set: torch.nn's layer
    if variant is not None:
        if variant.layer_norm and (variant.peepholes or variant.coupled_gates):
            raise ValueError("layer norm does not combine with peepholes or coupled gates")
        if mode != "LSTM" and (variant.peepholes or variant.coupled_gates):
            raise ValueError(f"peepholes and coupled gates need mode 'LSTM', got {mode!r}")
        if mode not in ("LSTM", "GRU"):
            raise ValueError(f"layer norm needs mode 'LSTM' or 'GRU', got {mode!r}")
    refuse_differentiating_transform("functional.rnn")
    if forward_ad._current_level >= 0:  # inside a dual level: forward AD may be on
        _check_no_tangents(data, h0, c0, *weights)
    if autocast_enabled(data.device):
        return _rnn_under_autocast(mode, data, batch_sizes, h0, c0, weights, has_bias=has_bias,
                                   num_layers=num_layers, bidirectional=bidirectional,
                                   proj_size=proj_size, dropout=dropout, training=training,
                                   packed=packed, variant=variant, product_dtype=product_dtype)
    if mode == "RNN_RELU" and data.is_cuda and data.dtype in _HALF_DTYPES:
        return _rnn_relu_in_float(data, batch_sizes, h0, weights, has_bias=has_bias,
                                  num_layers=num_layers, bidirectional=bidirectional,
                                  dropout=dropout, training=training)
    # One dense step [1, B, I] goes to the cell op as it is, which keeps the shapes: reshaped
    # to [B, I] and back, with h0[0] selected and h_n unsqueezed, it added four nodes to
    # autograd's graph (36 of an RNN layer's 147 us, T1 B1 H64, fwd+bwd, 2 threads, AMD
    # EPYC). A projection, layer norm, or stack takes the rows.
    step = data.dim() == 3
    if step and num_layers == 1 and not bidirectional and not proj_size and not (
            variant is not None and variant.layer_norm):
        return _direction(mode, data, batch_sizes, h0, c0, weights, has_bias, False, False,
                          variant, product_dtype)
    output, h_n, c_n = _stack(mode, data.reshape(-1, data.shape[-1]) if step else data,
                              batch_sizes, h0, c0, weights, has_bias, num_layers, bidirectional,
                              proj_size, dropout, training, variant, product_dtype)
    return (output.view(1, -1, output.shape[-1]) if step else output), h_n, c_n


def _stack(mode, data, batch_sizes, h0, c0, weights, has_bias, num_layers, bidirectional,
           proj_size, dropout, training, variant, product_dtype):
    """rnn()'s layers on data [N, I], with autocast and the CUDA half relu already handled."""
    if num_layers == 1 and not bidirectional:  # the common case, without the stack's loop
        y, hn, cn = _direction(mode, data, batch_sizes, h0[0], None if c0 is None else c0[0],
                               weights, has_bias, proj_size > 0, False, variant, product_dtype)
        # Views, not copies: the ops return the states in tensors of their own, never views
        # of y (tests/test_module_inputs.py checks).
        return y, hn.unsqueeze(0), None if cn is None else cn.unsqueeze(0)
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
                proj_size > 0, direction == 1, variant, product_dtype)
            outputs.append(y)
            h_n.append(hn)
            c_n.append(cn)
        layer_input = outputs[0] if directions == 1 else torch.cat(outputs, dim=1)
        if dropout > 0 and training and layer < num_layers - 1:
            layer_input = F.dropout(layer_input, dropout, training=True)
    return layer_input, torch.stack(h_n), None if c0 is None else torch.stack(c_n)


_HALF_DTYPES = (torch.bfloat16, torch.float16)


def _rnn_relu_in_float(data, batch_sizes, h0, weights, **kwargs):
    """A relu recurrence in bfloat16/float16 on CUDA runs in float32, its results rounded
    once. Its gradient is ill-conditioned in 16 bits: a pre-activation near 0 that rounding
    moves across 0 switches the relu, and the switch travels through every earlier step.
    cuDNN (torch.nn's kernel there) keeps the recurrence in float; computed in 16 bits,
    fastrnn's gradients were up to 70x further from float64 than cuDNN's (H200; 2 layers,
    bidirectional, T=20, B=8, H=32). The CPU keeps 16 bits, as torch.nn does there, with
    torch.nn's error."""
    output, h_n, _ = _rnn_in(torch.float32, "RNN_RELU", data, batch_sizes, h0, None, weights,
                             **kwargs)
    return output.to(data.dtype), h_n.to(data.dtype), None


def _rnn_in(dtype, mode, data, batch_sizes, h0, c0, weights, **kwargs):
    """rnn() with the data, states and weights cast to dtype; its results in dtype."""
    cast = lambda t: None if t is None else t.to(dtype)
    return rnn(mode, cast(data), batch_sizes, cast(h0), cast(c0),
               [w.to(dtype) for w in weights], **kwargs)


def _check_no_tangents(*tensors):
    """Forward-mode AD (torch.autograd.forward_ad, torch.func.jvp) has no formula in the
    ops: refused, as the ops refuse it, rather than the tangent dropped. (Inside
    torch.func.jvp the ops see the tensors without their tangents; here they still have
    them.)"""
    if any(t is not None and forward_ad.unpack_dual(t).tangent is not None for t in tensors):
        raise RuntimeError("fastrnn: forward-mode AD (torch.func.jvp, torch.autograd."
                           "forward_ad) is not supported by the recurrence ops")


def autocast_enabled(device):
    """Whether autocast is on for device (CPU or CUDA), under which torch.nn lets hx's dtype
    differ and the layers compute as rules.autocast_compute_dtype says. Asked of any device
    first: reading device.type costs more than that question."""
    return (torch._C._is_any_autocast_enabled() and device.type in ("cpu", "cuda")
            and torch.is_autocast_enabled(device.type))


def _rnn_under_autocast(mode, data, batch_sizes, h0, c0, weights, *, packed, **kwargs):
    """rnn() under autocast: the layers run with autocast off in the compute dtype that
    _autocast_rules gives, their input products in its product dtype, and the results come
    back in the dtypes torch.nn's layers give under autocast (rules.autocast_result_dtypes)."""
    device_type = data.device.type
    autocast_dtype = torch.get_autocast_dtype(device_type)
    weight_dtype = weights[0].dtype
    compute = rules.autocast_compute_dtype(device_type, autocast_dtype, weight_dtype,
                                           _needs_grad(data, h0, c0, *weights))
    if kwargs["product_dtype"] is None:
        kwargs["product_dtype"] = rules.autocast_product_dtype(device_type, autocast_dtype,
                                                               weight_dtype)
    has_proj = kwargs.get("proj_size", 0) > 0
    # before data is cast: which kernel torch.nn's layer would take for this input
    kernel = ("cudnn" if rules.torch_nn_takes_cudnn(data)
              else "onednn" if rules.torch_nn_takes_onednn(mode, data, packed, has_proj)
              else None)
    with torch.autocast(device_type, enabled=False):
        output, h_n, c_n = _rnn_in(compute, mode, data, batch_sizes, h0, c0, weights, **kwargs)
    out_dtype, c_dtype = rules.autocast_result_dtypes(
        mode, device_type, autocast_dtype, weight_dtype, h0.dtype,
        None if c0 is None else c0.dtype, has_proj, kernel)
    return output.to(out_dtype), h_n.to(out_dtype), None if c_n is None else c_n.to(c_dtype)
