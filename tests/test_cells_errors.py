"""The cells' bad inputs raise the exception type torch.nn's cells raise (with torch.nn's
message where it is the same check), and nothing the caller passed in is modified."""

import pytest
import torch

import fastrnn
from helpers.cases import HIDDEN, INPUT
from helpers.cells import BATCH, CellCase, call, make_cell_inputs, make_cell_pair
from helpers.compare import raise_alike
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

F32 = torch.float32
CELL_CASES = {cell: CellCase(cell) for cell in ("LSTMCell", "GRUCell", "RNNCell-tanh")}


def x(*shape, dtype=F32):
    return torch.randn(shape, dtype=dtype)


def states(case, batch=(BATCH,), hidden=HIDDEN, dtype=F32, c_batch=None, c_hidden=None,
           c_dtype=None):
    """hx for case: h [*batch, hidden]; LSTMCell: (h, c), c's batch dims, size and dtype
    overridable."""
    h = x(*batch, hidden, dtype=dtype)
    if not case.is_lstm:
        return h
    c_batch = batch if c_batch is None else c_batch
    return h, x(*c_batch, c_hidden or hidden, dtype=c_dtype or dtype)


# name -> (build (input, hx) from case, exception type, whether fastrnn's message is
# torch.nn's: the same check)
ERRORS = {
    "input_3d": (lambda c: (x(2, BATCH, INPUT), None), ValueError, True),
    "input_0d": (lambda c: (x(), None), ValueError, True),
    "hx_3d": (lambda c: (x(BATCH, INPUT), states(c, batch=(1, BATCH))), ValueError, True),
    "input_size": (lambda c: (x(BATCH, INPUT + 1), None), RuntimeError, True),
    "input_size_unbatched": (lambda c: (x(INPUT + 1), None), RuntimeError, True),
    "input_size_hx": (lambda c: (x(BATCH, INPUT + 1), states(c)), RuntimeError, True),
    "hx_batch": (lambda c: (x(BATCH, INPUT), states(c, batch=(BATCH - 1,))), RuntimeError,
                 True),
    "hx_size": (lambda c: (x(BATCH, INPUT), states(c, hidden=HIDDEN + 1)), RuntimeError, True),
    "hx_size_unbatched": (lambda c: (x(INPUT), states(c, batch=(), hidden=HIDDEN + 1)),
                          RuntimeError, True),
    "batched_input_unbatched_hx": (lambda c: (x(BATCH, INPUT), states(c, batch=())),
                                   RuntimeError, False),
    "unbatched_input_batched_hx": (lambda c: (x(INPUT), states(c, batch=(1,))), RuntimeError,
                                   False),
    "input_dtype": (lambda c: (x(BATCH, INPUT, dtype=torch.float64), None), RuntimeError,
                    False),
    "input_dtype_hx": (lambda c: (x(BATCH, INPUT, dtype=torch.float64),
                                  states(c, dtype=torch.float64)), RuntimeError, False),
    "hx_dtype": (lambda c: (x(BATCH, INPUT), states(c, dtype=torch.float64)), RuntimeError,
                 False),
    "input_int": (lambda c: (x(BATCH, INPUT).long(), None), RuntimeError, False),
}
LSTM_ONLY_ERRORS = {
    "cx_3d": (lambda c: (x(BATCH, INPUT), states(c, c_batch=(1, BATCH))), ValueError, True),
    "cx_batch": (lambda c: (x(BATCH, INPUT), states(c, c_batch=(BATCH - 1,))), RuntimeError,
                 True),
    "cx_size": (lambda c: (x(BATCH, INPUT), states(c, c_hidden=HIDDEN + 1)), RuntimeError,
                True),
}


def check_same_error(case, make_args, error, same_message):
    ref, fast = make_cell_pair(case, F32)
    inp, hx = make_args(case)
    ref_error, fast_error = raise_alike(error, lambda: ref(inp, hx), lambda: fast(inp, hx))
    if same_message:
        first_line = lambda e: str(e).splitlines()[0]
        assert first_line(fast_error) == first_line(ref_error)


@pytest.mark.parametrize("name", list(ERRORS))
@pytest.mark.parametrize("cell", list(CELL_CASES))
def test_error_same_as_torch_nn(cell, name):
    check_same_error(CELL_CASES[cell], *ERRORS[name])


@pytest.mark.parametrize("name", list(LSTM_ONLY_ERRORS))
def test_lstm_cell_state_errors(name):
    check_same_error(CELL_CASES["LSTMCell"], *LSTM_ONLY_ERRORS[name])


def test_unknown_nonlinearity():
    case = CELL_CASES["RNNCell-tanh"]
    ref, fast = make_cell_pair(case, F32)
    for module in (ref, fast):
        module.nonlinearity = "sigmoid"
    args = (x(BATCH, INPUT), None)
    with pytest.raises(RuntimeError) as ref_error:
        ref(*args)
    with pytest.raises(RuntimeError, match="Unknown nonlinearity: sigmoid") as fast_error:
        fast(*args)
    assert str(fast_error.value) == str(ref_error.value)


def test_unknown_nonlinearity_from_the_constructor():
    ref = torch.nn.RNNCell(INPUT, HIDDEN, nonlinearity="sigmoid")
    fast = fastrnn.RNNCell(INPUT, HIDDEN, nonlinearity="sigmoid")
    with pytest.raises(RuntimeError) as ref_error:
        ref(x(BATCH, INPUT))
    with pytest.raises(RuntimeError) as fast_error:
        fast(x(BATCH, INPUT))
    assert str(fast_error.value) == str(ref_error.value)


def test_cx_dtype_unlike_input_computed_like_torch_nn():
    """torch.nn.LSTMCell accepts c in another dtype than input and h (the state update
    promotes: float32 input and h with float64 c give float64 h' and c'); a drop-in
    replacement computes the same."""
    case = CELL_CASES["LSTMCell"]
    ref, fast = make_cell_pair(case, F32)
    args = (x(BATCH, INPUT), states(case, c_dtype=torch.float64))
    want = call(ref, *args)
    got = call(fast, *args)
    assert [t.dtype for t in got] == [t.dtype for t in want] == [torch.float64] * 2
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **atol_rtol(F32))


# --- nothing the caller passed in is modified ----------------------------------------------


@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell-tanh", "RNNCell-relu"])
def test_arguments_unchanged_by_forward_and_backward(cell, batched, hx):
    """Values, shape, storage and version counter of x, h, c and every parameter."""
    case = CellCase(cell, True, batched, hx)
    _, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case).fresh()
    leaves = inputs.leaves()
    tensors = leaves + list(fast.parameters())
    before = [(t.detach().clone(), t.data_ptr(), t._version) for t in tensors]
    outs = call(fast, *inputs.args())
    sum((t * torch.arange(t.numel(), dtype=t.dtype).view(t.shape)).sum() for t in outs
        ).backward()
    for t, (value, pointer, version) in zip(tensors, before):
        assert torch.equal(t, value) and t.shape == value.shape
        assert t.data_ptr() == pointer and t._version == version
        assert t.grad is not None
    for out in outs:  # results are new tensors, not views of the arguments
        assert all(out.untyped_storage().data_ptr() != t.untyped_storage().data_ptr()
                   for t in leaves)
