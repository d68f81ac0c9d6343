"""fastrnn.LSTMCell, GRUCell and RNNCell: torch.nn's cells with each call run by one fused op.

Each class subclasses its torch.nn twin, so the constructor, the parameters (names, shapes,
gate order, initialisation), state_dict, repr, pickling and parametrizations are torch's
own; only forward() differs, and it accepts and returns what torch.nn's forward does:
input [B, I] or unbatched [I], an optional state (LSTMCell: a tuple (h, c)), the new state.
A call is one op, fastrnn::cell_forward (csrc/cell_ops.h): both products and the gate math
of csrc/cells/ for one step; its backward is one op too, and its autograd is C++
(csrc/cell_autograd.cpp), since a cell runs once per step, where every microsecond shows;
for the same reason an eager call reaches the op through fastrnn._cell_ops.cell_step, and a
plain call (_FusedCell._plain_call) straight through fastrnn._C.cell_step.
"""

import warnings

import torch
from torch import nn

from . import _C, _autocast_rules, _onnx, functional
from ._cell_ops import CELL_KIND, CELL_NAME, cell_step
from ._transforms import runs_torch_nn
from .modules import _has_kernels, read_parameters, torch_nn_twin

_WEIGHTS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # the op's order
_LSTM, _GRU = CELL_KIND["LSTM"], CELL_KIND["GRU"]
_RNN = {"tanh": CELL_KIND["RNN_TANH"], "relu": CELL_KIND["RNN_RELU"]}


class _FusedCell:
    """forward() for a torch.nn.RNNCellBase subclass. _NAME: the torch.nn class's name,
    which its messages use; _cell(): the cell number of fastrnn::cell_forward;
    _weight_names(): the parameters it takes, in its order (w_ih, w_hh, b_ih, b_hh, then
    the unit_params of a cell that has them)."""

    _NAME = ""

    def _weight_names(self):
        return _WEIGHTS

    def forward(self, input, hx=None):
        # torch.nn's graph for ONNX and TorchScript; torch.nn's ops under torch.func.jacrev, ...
        if _onnx.active_exporter() or runs_torch_nn():
            return super().forward(input, hx)
        result = self._plain_call(input, hx)
        if result is not NotImplemented:
            return result
        is_lstm = self._NAME == "LSTMCell"
        rank = input.dim()
        if rank not in (1, 2):
            raise ValueError(f"{self._NAME}: Expected input to be 1D or 2D, got {rank}D instead")
        if hx is not None:
            self._check_hx_rank(hx, is_lstm)
        cell = self._cell()
        if not _has_kernels(input):
            warnings.warn(f"fastrnn has no kernels for {input.device.type} tensors yet; "
                          f"{type(self).__name__} runs torch.nn's implementation there",
                          stacklevel=2)
            return super().forward(input, hx)
        if is_lstm and hx is not None and hx[1].dtype != hx[0].dtype:
            # torch.nn computes the gates in h's dtype and the state update in the promoted
            # one (a float64 c with float32 h gives float64 results): its own code does that.
            return super().forward(input, hx)
        if rank == 1:
            input = input.unsqueeze(0)
        if hx is None:
            h = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype,
                            device=input.device)
            c = h if is_lstm else None
        elif is_lstm:
            h, c = (hx[0].unsqueeze(0), hx[1].unsqueeze(0)) if rank == 1 else hx
        else:
            h, c = (hx.unsqueeze(0) if rank == 1 else hx), None
        weights = read_parameters(self, self._weight_names())
        if functional.autocast_enabled(input.device):
            h_new, c_new = _step_under_autocast(self._step, cell, input, h, c, weights)
        else:
            h_new, c_new = self._step(cell, input, h, c, weights)
        if rank == 1:
            h_new, c_new = h_new.squeeze(0), c_new.squeeze(0)
        return (h_new, c_new) if is_lstm else h_new

    def _plain_call(self, input, hx):
        """forward() of the most common call, in fewer Python steps (a cell runs once per time
        step), past forward's check for an export, a trace or a differentiating transform:
        eager (no torch.compile), no autocast, input [B, I] on a device with kernels, hx
        given as [B, H] tensors (an LSTM's two of one dtype), the weights plain parameters.
        NotImplemented for any other call, which forward's general path serves (it raises
        torch.nn's errors for bad input). Against the general path, 2 threads, AMD EPYC,
        alternated in one process, medians of 30-38, us: calls at B1 H64 without grad RNN
        relu 8.77 -> 7.93, LSTM 12.83 -> 11.92, with grad 13.71 -> 12.81 and 18.88 -> 18.61;
        a step of a 100-step loop with backward, B1 H64, RNN relu 28.8 -> 27.9, LSTM 44.4 ->
        43.6 (at B32 H256, 216 either way)."""
        if (hx is None or input.dim() != 2 or torch.compiler.is_compiling()
                or torch._C._is_any_autocast_enabled() or not _has_kernels(input)):
            return NotImplemented
        is_lstm = self._NAME == "LSTMCell"
        if is_lstm:
            if type(hx) is not tuple or len(hx) != 2:
                return NotImplemented
            h, c = hx
            if h.dim() != 2 or c.dim() != 2 or h.dtype != c.dtype:
                return NotImplemented
        elif hx.dim() != 2:
            return NotImplemented
        else:
            h, c = hx, None
        params = self._parameters
        try:  # a parametrized weight is not in _parameters
            weights = tuple(map(params.__getitem__, _WEIGHTS))
        except KeyError:
            return NotImplemented
        result = _C.cell_step(self._cell(), input, h, c, *weights, None)
        if result is NotImplemented:
            return result
        return (result[1], result[2]) if is_lstm else result[1]

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles in this cell's place: modules.torch_nn_twin."""
        return torch_nn_twin(self)

    @staticmethod
    def _step(cell, x, h, c, weights):
        """One step: (h', c'), c' an empty tensor for a cell without c. x: [B, I]; h, c:
        [B, H] (c None without a cell state); weights: _weight_names()'s."""
        _, h_new, c_new = cell_step(cell, x, h, c, *weights)
        return h_new, c_new

    def _check_hx_rank(self, hx, is_lstm):
        for index, state in enumerate(hx if is_lstm else (hx,)):
            if state.dim() not in (1, 2):
                which = f"hx[{index}]" if is_lstm else "hidden"
                raise ValueError(f"{self._NAME}: Expected {which} to be 1D or 2D, got "
                                 f"{state.dim()}D instead")


def _step_under_autocast(step, cell, x, h, c, weights):
    """step(cell, x, h, c, weights) (a _FusedCell's _step: cell number `cell`; x: [B, I];
    h, c: [B, H], c None but for an LSTM) under autocast: computed with autocast off in the
    weights' dtype, the results in the dtypes torch.nn's cells give under autocast
    (_autocast_rules.autocast_result_dtypes: a cell is one step of a layer without
    projection on its per-step path)."""
    device_type = x.device.type
    compute = weights[0].dtype
    cast = lambda t: None if t is None else t.to(compute)
    with torch.autocast(device_type, enabled=False):
        h_new, c_new = step(cell, cast(x), cast(h), cast(c), weights)
    h_dtype, c_dtype = _autocast_rules.autocast_result_dtypes(
        CELL_NAME[cell], device_type, torch.get_autocast_dtype(device_type), compute, h.dtype,
        None if c is None else c.dtype, has_proj=False)
    return h_new.to(h_dtype), c_new if c is None else c_new.to(c_dtype)


class LSTMCell(_FusedCell, nn.LSTMCell):
    __doc__ = "Drop-in replacement for torch.nn.LSTMCell (same arguments, parameters, I/O).\n\n" + (
        nn.LSTMCell.__doc__ or "")
    _NAME = "LSTMCell"

    def _cell(self):
        return _LSTM


class GRUCell(_FusedCell, nn.GRUCell):
    __doc__ = "Drop-in replacement for torch.nn.GRUCell (same arguments, parameters, I/O).\n\n" + (
        nn.GRUCell.__doc__ or "")
    _NAME = "GRUCell"

    def _cell(self):
        return _GRU


class RNNCell(_FusedCell, nn.RNNCell):
    __doc__ = "Drop-in replacement for torch.nn.RNNCell (same arguments, parameters, I/O).\n\n" + (
        nn.RNNCell.__doc__ or "")
    _NAME = "RNNCell"

    def _cell(self):
        cell = _RNN.get(self.nonlinearity)
        if cell is None:
            raise RuntimeError(f"Unknown nonlinearity: {self.nonlinearity}")
        return cell


# As for the layers (modules.py): a model saved whole loads under torch.load's defaults.
torch.serialization.add_safe_globals([LSTMCell, GRUCell, RNNCell])
