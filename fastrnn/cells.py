"""fastrnn.LSTMCell, GRUCell and RNNCell: torch.nn's cells with each call run by one fused op.

Each class subclasses its torch.nn twin, so the constructor, the parameters (names, shapes,
gate order, initialisation), state_dict, repr, pickling and parametrizations are torch's
own; only forward() differs, and it accepts and returns what torch.nn's forward does:
input [B, I] or unbatched [I], an optional state (LSTM: a tuple (h, c)), the new state.
A call is fastrnn::cell_forward (fastrnn/_ops.py): both products and the gate math of
csrc/cells/ in one op, and one op for its backward.
"""

import warnings

import torch
from torch import nn

from . import functional
from ._ops import CELL_KIND, ops
from .modules import _SUPPORTED_DTYPES, _autocast_enabled, _has_kernels


class _FusedCell:
    """forward() for a torch.nn.RNNCellBase subclass. _NAME: the torch.nn class's name,
    which its error messages use."""

    _NAME = ""

    def forward(self, input, hx=None):
        is_lstm = self._NAME == "LSTMCell"
        if input.dim() not in (1, 2):
            raise ValueError(
                f"{self._NAME}: Expected input to be 1D or 2D, got {input.dim()}D instead")
        states = () if hx is None else hx if is_lstm else (hx,)
        for index, state in enumerate(states):
            if state.dim() not in (1, 2):
                which = f"hx[{index}]" if is_lstm else "hidden"
                raise ValueError(f"{self._NAME}: Expected {which} to be 1D or 2D, got "
                                 f"{state.dim()}D instead")
        mode = self._mode()
        if not _has_kernels(input.device):
            warnings.warn(f"fastrnn has no kernels for {input.device.type} tensors yet; "
                          f"{type(self).__name__} runs torch.nn's implementation there",
                          stacklevel=2)
            return super().forward(input, hx)
        is_batched = input.dim() == 2
        if not is_batched:
            input = input.unsqueeze(0)
            states = tuple(state.unsqueeze(0) for state in states)
        if not states:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                                device=input.device)
            states = (zeros, zeros) if is_lstm else (zeros,)
        h, c = states if is_lstm else (states[0], None)
        if not (input.is_floating_point() and input.dtype in _SUPPORTED_DTYPES):
            raise RuntimeError(f"fastrnn supports float32, float64, bfloat16 and float16, got "
                               f"input of dtype {input.dtype}")
        h_new, c_new = step(mode, input, h, c, self.weight_ih, self.weight_hh, self.bias_ih,
                            self.bias_hh)
        if not is_batched:
            h_new = h_new.squeeze(0)
            c_new = None if c_new is None else c_new.squeeze(0)
        return (h_new, c_new) if is_lstm else h_new


def step(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """One step of a cell. mode: one of functional.MODES; x: [B, I]; h: [B, H];
    c: [B, H] (LSTM) or None; weights and biases as torch.nn's cells hold them.
    Returns (h_new [B, H], c_new [B, H] or None)."""
    if _autocast_enabled(x.device):
        return _step_under_autocast(mode, x, h, c, w_ih, w_hh, b_ih, b_hh)
    save = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h, c, w_ih, w_hh, b_ih, b_hh))
    h_new, c_new, _ = ops.cell_forward(CELL_KIND[mode], x, h, c, w_ih, w_hh, b_ih, b_hh, save)
    return h_new, (c_new if c is not None else None)


def _step_under_autocast(mode, x, h, c, w_ih, w_hh, b_ih, b_hh):
    """step() under autocast: computed with autocast off in the weights' dtype, the results
    in the dtypes torch.nn's cells give under autocast (functional.autocast_result_dtypes:
    a cell is one step of a layer without projection on its per-step path)."""
    device_type = x.device.type
    compute = w_ih.dtype
    cast = lambda t: None if t is None else t.to(compute)
    with torch.autocast(device_type, enabled=False):
        h_new, c_new = step(mode, cast(x), cast(h), cast(c), w_ih, w_hh, b_ih, b_hh)
    h_dtype, c_dtype = functional.autocast_result_dtypes(
        mode, device_type, torch.get_autocast_dtype(device_type), compute, h.dtype,
        None if c is None else c.dtype, has_proj=False)
    return h_new.to(h_dtype), None if c_new is None else c_new.to(c_dtype)


class LSTMCell(_FusedCell, nn.LSTMCell):
    __doc__ = "Drop-in replacement for torch.nn.LSTMCell (same arguments, parameters, I/O).\n\n" + (
        nn.LSTMCell.__doc__ or "")
    _NAME = "LSTMCell"

    def _mode(self):
        return "LSTM"


class GRUCell(_FusedCell, nn.GRUCell):
    __doc__ = "Drop-in replacement for torch.nn.GRUCell (same arguments, parameters, I/O).\n\n" + (
        nn.GRUCell.__doc__ or "")
    _NAME = "GRUCell"

    def _mode(self):
        return "GRU"


class RNNCell(_FusedCell, nn.RNNCell):
    __doc__ = "Drop-in replacement for torch.nn.RNNCell (same arguments, parameters, I/O).\n\n" + (
        nn.RNNCell.__doc__ or "")
    _NAME = "RNNCell"

    def _mode(self):
        if self.nonlinearity not in ("tanh", "relu"):
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return "RNN_TANH" if self.nonlinearity == "tanh" else "RNN_RELU"


# As for the layers (modules.py): a model saved whole loads under torch.load's defaults.
torch.serialization.add_safe_globals([LSTMCell, GRUCell, RNNCell])
