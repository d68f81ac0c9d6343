"""The single-step ops, fastrnn::cell_forward and cell_backward (csrc/cell_ops.h), one call of
a cell: the cell numbers, the cells' eager entry (cell_step) and the ops' fake kernels. Their
autograd is registered in C++ (csrc/cell_autograd.cpp): a cell runs once per step, where
Python's costs show; cell_backward refuses a second differentiation, as the layers' ops do.
"""

import torch

from . import _C
from ._fake_ops import _check_same_device
from ._ops import GATES, SAVED_SLOTS, _no_double_backward, ops

# cell: a cell number, CELL_KIND[name]; c, grad_c: the LSTM's cell state and its gradient
# (None for other cells); unit_params: a cell's peepholes (None for cells without); grad_y:
# None or added to grad_h (cell_backward sums a step's gradients w.r.t. y and h_new).
# cell_forward returns y and h_new, equal values in two tensors (csrc/cell_ops.h says why).
# Results a cell does not have come back empty ([0]), as do the gradients cell_backward is
# told are not wanted.

CELL_KIND = {cell: getattr(_C, f"{cell}_KIND") for cell in GATES}
CELL_NAME = {number: cell for cell, number in CELL_KIND.items()}


def cell_step(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, unit_params=None):
    """One step of fastrnn::cell_forward with save=False -> (y, h_new, c_new). In eager
    calls on plain tensors and parameters through _C.cell_step (csrc/cell_python.cpp), which
    calls the op without torch.ops' argument matching: 2-3 us a call less, a third of a
    small cell's; through torch.ops where that entry declines (a tensor subclass, a cell
    number that is not an int, a __torch_function__ mode) and while torch.compile or
    torch.export traces."""
    if not torch.compiler.is_compiling():
        result = _C.cell_step(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, unit_params)
        if result is not NotImplemented:
            return result
    return ops.cell_forward.default(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, False,
                                    unit_params)[:3]


@torch.library.register_fake("fastrnn::cell_forward")
def _(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, save, unit_params=None):
    _check_same_device("cell_forward", h, x, c, w_ih, w_hh, b_ih, b_hh, unit_params)
    torch._check((c is not None) == CELL_NAME[cell].endswith("LSTM"),
                 lambda: "cell_forward: an LSTM takes a cell state c, other cells none")
    *step, batch, hidden = h.shape  # [B, H], or [1, B, H]: a layer's step (csrc/cell_ops.h)
    state = lambda: h.new_empty(*step, batch, hidden)  # contiguous, as the kernels' results
    return (state(), state(), state() if c is not None else h.new_empty(0),
            h.new_empty(batch if save else 0, SAVED_SLOTS[CELL_NAME[cell]] * hidden))


@torch.library.register_fake("fastrnn::cell_backward")
def _(cell, grad_y, grad_h, grad_c, x, h, c, w_ih, w_hh, y, saved, has_bias, input_grad,
      state_grad, weight_grad, unit_params=None):
    _check_same_device("cell_backward", h, grad_y, grad_h, grad_c, x, c, w_ih, w_hh, y, saved,
                       unit_params)
    bias = w_ih.new_empty(w_ih.shape[0] if has_bias and weight_grad else 0)
    wanted = lambda t, want: t.new_empty(t.shape) if want and t is not None else h.new_empty(0)
    return (wanted(x, input_grad), wanted(h, state_grad), wanted(c, state_grad),
            wanted(w_ih, weight_grad), wanted(w_hh, weight_grad), bias, bias.new_empty(bias.shape),
            wanted(unit_params, weight_grad))


torch.library.register_autograd("fastrnn::cell_backward", _no_double_backward)
