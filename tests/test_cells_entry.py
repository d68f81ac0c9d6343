"""The cells' direct eager entry, fastrnn._C.cell_step (csrc/cell_python.cpp), against the op
it calls, torch.ops.fastrnn.cell_forward: the same results and gradients bit for bit, the
same errors, Python dispatch modes still seeing the op, and torch.ops taking over where the
entry declines (tensor subclasses, __torch_function__ modes); and the cells' short path to it
for plain calls, against their general path."""

import re
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import fastrnn
from fastrnn import _C
from fastrnn._cell_ops import CELL_KIND
from helpers.ops import CELL_NAMES, cell_op_args, ops

pytestmark = pytest.mark.usefixtures("torch_state")


def peephole_lstm_args(bias=True):
    """cell_op_args of the peephole LSTM: the LSTM's and peepholes [3*H]."""
    number, x, h, c, w_ih, w_hh, b_ih, b_hh, _ = cell_op_args("LSTM", bias)
    peepholes = torch.randn(3 * h.shape[1], dtype=h.dtype, requires_grad=True)
    return CELL_KIND["PEEPHOLE_LSTM"], x, h, c, w_ih, w_hh, b_ih, b_hh, peepholes


def op_step(number, x, h, c, w_ih, w_hh, b_ih, b_hh, unit_params):
    return ops.cell_forward(number, x, h, c, w_ih, w_hh, b_ih, b_hh, False, unit_params)[:3]


CASES = [pytest.param(lambda bias, cell=cell: (*cell_op_args(cell, bias)[:-1], None), id=cell)
         for cell in CELL_NAMES] + [pytest.param(peephole_lstm_args, id="PEEPHOLE_LSTM")]


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("make_args", CASES)
def test_entry_equals_the_op(make_args, bias):
    """Results and every gradient (through the op's autograd either way) bit for bit, the
    weights as a module's parameters."""
    args = make_args(bias)
    args = (*args[:4], *(None if a is None else torch.nn.Parameter(a.detach())
                         for a in args[4:]))
    leaves = [a for a in args if isinstance(a, torch.Tensor)]
    results = []
    for step in (_C.cell_step, op_step):
        outs = [o for o in step(*args) if o.numel() > 0]  # c_new is empty but for an LSTM
        grads = torch.autograd.grad([o.sum() + o.pow(2).sum() for o in outs], leaves)
        results.append(outs + list(grads))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_results_are_owned_by_the_caller_alone():
    """The entry hands over its results' references (none leaks): each result is held by
    its name and by getrefcount's argument only."""
    y, h_new, c_new = _C.cell_step(*cell_op_args("LSTM", requires_grad=False)[:-1], None)
    assert sys.getrefcount(y) == sys.getrefcount(h_new) == sys.getrefcount(c_new) == 2


class PlainSubclass(torch.Tensor):
    """A tensor subclass with torch's default __torch_function__."""


class Recorder:
    """A mode that records each function or op it sees, then runs it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def record(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


class RecordFunctions(Recorder, TorchFunctionMode):
    __torch_function__ = Recorder.record


class RecordOps(Recorder, TorchDispatchMode):
    __torch_dispatch__ = Recorder.record


@pytest.mark.parametrize("position", range(1, 9))
def test_entry_declines_a_subclass(position):
    """A tensor subclass in any tensor argument: NotImplemented (torch.ops runs it)."""
    args = list(peephole_lstm_args())
    args[position] = args[position].detach().as_subclass(PlainSubclass)
    assert _C.cell_step(*args) is NotImplemented


def test_entry_declines_function_modes():
    """An active __torch_function__ mode: NotImplemented, and the cell goes through
    torch.ops, where the mode sees the op."""
    args = (*cell_op_args("RNN_TANH")[:-1], None)
    with RecordFunctions():
        assert _C.cell_step(*args) is NotImplemented
    cell = fastrnn.RNNCell(4, 3)
    with RecordFunctions() as mode:
        cell(torch.randn(2, 4))
    assert ops.cell_forward.default in mode.seen


def test_dispatch_modes_see_the_op():
    """A __torch_dispatch__ mode sees fastrnn::cell_forward called through the entry, whose
    result is the op's."""
    args = (*cell_op_args("GRU", requires_grad=False)[:-1], None)
    with RecordOps() as mode:
        outs = _C.cell_step(*args)
    assert ops.cell_forward.default in mode.seen
    for a, b in zip(outs, op_step(*args)):
        assert torch.equal(a, b)


def test_entry_errors_are_the_ops():
    """A bad argument raises what torch.ops raises for it; a wrong count of arguments, a
    TypeError; a cell number that is not an int, NotImplemented (torch.ops judges it)."""
    number, x, h, c, w_ih, w_hh, b_ih, b_hh, _ = cell_op_args("LSTM")
    bad = (number, x, h[:, :2], c, w_ih, w_hh, b_ih, b_hh, None)
    with pytest.raises(Exception) as through_ops:
        op_step(*bad)
    with pytest.raises(type(through_ops.value), match=re.escape(str(through_ops.value).splitlines()[0])):
        _C.cell_step(*bad)
    with pytest.raises(TypeError, match="cell_step"):
        _C.cell_step(number, x, h)
    assert _C.cell_step(float(number), x, h, c, w_ih, w_hh, b_ih, b_hh, None) is NotImplemented
    with pytest.raises(OverflowError):
        _C.cell_step(2**70, x, h, c, w_ih, w_hh, b_ih, b_hh, None)


def test_cells_and_layer_steps_take_the_entry(monkeypatch):
    """An eager cell call and a layer's single step each make one call of the entry, which
    runs them (their weights are parameters)."""
    calls, real = [], _C.cell_step

    def cell_step(*args):
        result = real(*args)
        calls.append((args[0], result is not NotImplemented))
        return result

    monkeypatch.setattr(_C, "cell_step", cell_step)
    fastrnn.LSTMCell(4, 3)(torch.randn(2, 4))
    fastrnn.GRU(4, 3)(torch.randn(1, 2, 4))
    assert calls == [(CELL_KIND["LSTM"], True), (CELL_KIND["GRU"], True)]


def cell_and_state(name, dtype=torch.float32):
    """A fastrnn cell `name` (I=4, H=3) and a state [2, 3] for it ((h, c) for the LSTM)."""
    cell = getattr(fastrnn, name)(4, 3).to(dtype)
    h = torch.randn(2, 3, dtype=dtype)
    return cell, ((h, torch.randn(2, 3, dtype=dtype)) if name == "LSTMCell" else h)


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "RNNCell"])
def test_plain_calls_take_the_short_path(name, monkeypatch):
    """forward's short path for a plain call (_plain_call) gives the general path's results
    and gradients bit for bit."""
    cell, hx = cell_and_state(name)
    x = torch.randn(2, 4, requires_grad=True)
    assert cell._plain_call(x, hx) is not NotImplemented
    results = []
    for short in (True, False):
        if not short:
            monkeypatch.setattr(type(cell), "_plain_call", lambda *args: NotImplemented)
        outs = cell(x, hx)
        outs = list(outs) if isinstance(outs, tuple) else [outs]
        grads = torch.autograd.grad([o.pow(2).sum() for o in outs], [x, *cell.parameters()])
        results.append(outs + list(grads))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def declined_calls():
    """(id, cell, x, hx, context) of calls the short path leaves to the general path."""
    lstm, lstm_state = cell_and_state("LSTMCell")
    rnn, h = cell_and_state("RNNCell")
    x = torch.randn(2, 4)
    parametrized, _ = cell_and_state("GRUCell")
    torch.nn.utils.parametrize.register_parametrization(parametrized, "weight_hh",
                                                        torch.nn.Identity())
    peephole = fastrnn.VariantLSTMCell(4, 3, peepholes=True)
    mixed = (lstm_state[0], lstm_state[1].double())
    plain = torch.autocast("cpu", enabled=False)
    return [("no hx", rnn, x, None, plain), ("unbatched", rnn, x[0], h[0], plain),
            ("autocast", rnn, x, h, torch.autocast("cpu", dtype=torch.bfloat16)),
            ("parametrized", parametrized, x, h, plain),
            ("variant", peephole, x, lstm_state, plain),
            ("mixed dtypes", lstm, x, mixed, plain),
            ("hx a list", lstm, x, list(lstm_state), plain)]


@pytest.mark.parametrize("case", declined_calls(), ids=lambda case: case[0])
def test_other_calls_take_the_general_path(case):
    """Every call the short path does not serve exactly declines it."""
    _, cell, x, hx, context = case
    with context:
        assert cell._plain_call(x, hx) is NotImplemented
        cell(x, hx)  # and the general path runs it
