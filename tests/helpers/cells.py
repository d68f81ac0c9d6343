"""The cells (fastrnn.LSTMCell, GRUCell, RNNCell) against torch.nn's: their configurations
and readable ids, a torch.nn cell and a fastrnn cell with the same weights, inputs with or
without a batch dimension and hx, and a call (or a loop of calls) with backward through a
loss that reaches every gradient."""

import copy
import dataclasses
import itertools

import torch
from torch import nn

import fastrnn
from helpers.cases import HIDDEN, INPUT
from helpers.compare import assert_close
from helpers.inputs import Inputs
from helpers.running import weighted_loss
from helpers.tolerances import LOW_PRECISION

F64 = torch.float64
# A batch unlike INPUT (4) and HIDDEN (5), so that a transposed [B, I] or [B, H] shows.
BATCH = 3

# name -> (torch.nn class, fastrnn class, constructor kwargs, the op's cell name: a key of
# fastrnn._cell_ops.CELL_KIND)
CELLS = {
    "LSTMCell": (nn.LSTMCell, fastrnn.LSTMCell, {}, "LSTM"),
    "GRUCell": (nn.GRUCell, fastrnn.GRUCell, {}, "GRU"),
    "RNNCell-tanh": (nn.RNNCell, fastrnn.RNNCell, {"nonlinearity": "tanh"}, "RNN_TANH"),
    "RNNCell-relu": (nn.RNNCell, fastrnn.RNNCell, {"nonlinearity": "relu"}, "RNN_RELU"),
}


@dataclasses.dataclass(frozen=True)
class CellCase:
    cell: str = "LSTMCell"
    bias: bool = True
    batched: bool = True  # input [B, I] and states [B, H]; else [I] and [H]
    hx: bool = True  # the initial state given; else None (zeros)
    input_size: int = INPUT
    hidden_size: int = HIDDEN
    batch: int = BATCH

    @property
    def id(self):
        return "-".join([self.cell, "bias" if self.bias else "nobias",
                         "batched" if self.batched else "unbatched",
                         "hx" if self.hx else "nohx"])

    @property
    def is_lstm(self):
        return self.cell == "LSTMCell"

    @property
    def op_cell(self):
        """The cell's name in fastrnn._cell_ops.CELL_KIND (LSTM, GRU, RNN_TANH, RNN_RELU)."""
        return CELLS[self.cell][3]


def cell_matrix():
    """Every cell x bias x batched/unbatched x hx given/None."""
    return [CellCase(cell, bias, batched, hx) for cell, bias, batched, hx in itertools.product(
        CELLS, (True, False), (True, False), (True, False))]


def ids(cases):
    return [case.id for case in cases]


def cell_kwargs(case, dtype):
    return dict(input_size=case.input_size, hidden_size=case.hidden_size, bias=case.bias,
                dtype=dtype, **CELLS[case.cell][2])


def make_cell_pair(case, dtype=F64, seed=0):
    """A fresh torch.nn cell and a fastrnn cell loaded with its state_dict."""
    torch_cls, fast_cls, _, _ = CELLS[case.cell]
    torch.manual_seed(seed)
    ref = torch_cls(**cell_kwargs(case, dtype))
    fast = fast_cls(**cell_kwargs(case, dtype))
    fast.load_state_dict(ref.state_dict())
    return ref, fast


@dataclasses.dataclass
class CellInputs(Inputs):
    """Leaf tensors (x and the hx parts) and how to assemble a cell's arguments: case a
    CellCase; x [B, I] / unbatched [I], a sequence for unroll(): [T, B, I] / [T, I]; h0
    [B, H] / unbatched [H], or None; c0 (LSTMCell) [B, H] / unbatched [H], or None. leaves()
    and fresh() are Inputs'."""

    def to(self, dtype, device=None):
        """The same values in another dtype (None: keep a leaf's own), on `device` if given."""
        move = lambda t: None if t is None else t.detach().to(device, dtype or t.dtype)
        return CellInputs(self.case, move(self.x), move(self.h0), move(self.c0))

    def args(self):
        """(input, hx) for cell(input, hx); hx is (h, c) for LSTMCell, None without hx."""
        if self.h0 is None:
            return self.x, None
        return self.x, ((self.h0, self.c0) if self.case.is_lstm else self.h0)


def make_cell_inputs(case, dtype=F64, seed=1, steps=None):
    """Fresh random inputs (never zeros); with `steps`, x is a sequence [steps, (B,) I]."""
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype)
    batch = (case.batch,) if case.batched else ()
    x = rand(*((steps,) if steps else ()), *batch, case.input_size)
    h0 = c0 = None
    if case.hx:
        h0 = rand(*batch, case.hidden_size)
        c0 = rand(*batch, case.hidden_size) if case.is_lstm else None
    return CellInputs(case, x, h0, c0)


def flatten_state(state):
    """A cell's return value as a list: [h] or, for LSTMCell, [h, c]."""
    return list(state) if isinstance(state, tuple) else [state]


def call(cell, x, hx):
    """One call: the cell's new state as a list, [h] or [h, c]."""
    return flatten_state(cell(x, hx))


def unroll(cell, xs, hx):
    """cell applied along xs ([T, (B,) I]), the state carried from step to step: every
    step's h stacked ([T, (B,) H]), then the final state's parts."""
    hs = []
    for x in xs:
        hx = cell(x, hx)
        hs.append(flatten_state(hx)[0])
    return [torch.stack(hs)] + flatten_state(hx)


def run_cell(cell, inputs, forward=call, backward=True, round_to=None):
    """forward(cell, x, hx) on fresh copies of the inputs, and backward through
    weighted_loss (its weights rounded to `round_to`, if given, so that a float64 run
    differentiates the same loss as a low-precision one).

    Returns (results, grads): results as forward returns them; grads a dict name ->
    gradient for 'x', 'h0', 'c0' (those given) and every parameter, by name."""
    inputs = inputs.fresh(requires_grad=backward)
    outs = forward(cell, *inputs.args())
    if not backward:
        return outs, {}
    names = [n for n in ("x", "h0", "c0") if getattr(inputs, n) is not None]
    params = dict(cell.named_parameters())
    wrt = [getattr(inputs, n) for n in names] + list(params.values())
    # t.to(round_to): the loss's weights in that dtype; the gradient passes the cast as is.
    loss = weighted_loss([t.to(round_to) if round_to else t for t in outs])
    return outs, dict(zip(names + list(params), torch.autograd.grad(loss, wrt)))


def assert_cell_results_close(got, want, dtype, what="fastrnn vs torch.nn", kind="default"):
    """got/want: (results, grads) pairs from run_cell()."""
    (outs_got, grads_got), (outs_want, grads_want) = got, want
    assert len(outs_got) == len(outs_want)
    for k, (a, b) in enumerate(zip(outs_got, outs_want)):
        assert_close(a, b, dtype, f"{what}: result {k}", kind)
    assert list(grads_got) == list(grads_want), "gradients for different tensors"
    for name in grads_want:
        assert_close(grads_got[name], grads_want[name], dtype, f"{what}: grad of {name}", kind)


def check_cell_parity(case, dtype, forward=call, steps=None, device="cpu"):
    """The new state (or, with `steps`, every step's h and the final state) and every
    gradient of fastrnn and torch.nn in dtype, with the same weights and inputs, both on
    `device`."""
    ref, fast = (cell.to(device) for cell in make_cell_pair(case, dtype))
    inputs = make_cell_inputs(case, dtype, steps=steps).to(None, device)
    assert_cell_results_close(run_cell(fast, inputs, forward), run_cell(ref, inputs, forward),
                              dtype)


def check_cell_low_precision(case, dtype, forward=call, steps=None):
    """fastrnn's error in dtype against float64 (the same representable weights, inputs
    and loss weights) at most LOW_PRECISION's factor times torch.nn's own error in dtype,
    plus its slack, for the new state and every gradient."""
    exact, _ = make_cell_pair(case, F64)
    with torch.no_grad():  # weights exactly representable in the low-precision dtype
        for p in exact.parameters():
            p.copy_(p.to(dtype))
    torch_low = copy.deepcopy(exact).to(dtype)
    fast_low = CELLS[case.cell][1](**cell_kwargs(case, dtype))
    fast_low.load_state_dict(torch_low.state_dict())
    inputs = make_cell_inputs(case, dtype, steps=steps)
    want_outs, want_grads = run_cell(exact, inputs.to(F64), forward, round_to=dtype)
    got_outs, got_grads = run_cell(fast_low, inputs, forward)
    torch_outs, torch_grads = run_cell(torch_low, inputs, forward)
    assert list(got_grads) == list(want_grads)
    names = [f"result {k}" for k in range(len(want_outs))] + [f"grad {n}" for n in want_grads]
    triples = list(zip(got_outs, torch_outs, want_outs)) + [
        (got_grads[n], torch_grads[n], want_grads[n]) for n in want_grads]
    for name, (fast_value, torch_value, want) in zip(names, triples):
        assert fast_value.dtype == torch_value.dtype == dtype, name
        assert fast_value.shape == want.shape, name
        assert torch.isfinite(fast_value).all(), name
        fast_error = (fast_value.double() - want).abs().max().item()
        torch_error = (torch_value.double() - want).abs().max().item()
        slack = LOW_PRECISION["slack"] * max(1.0, want.abs().max().item())
        assert fast_error <= LOW_PRECISION["factor"] * torch_error + slack, (
            name, fast_error, torch_error)
