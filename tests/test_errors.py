"""Bad inputs raise the exception type torch.nn raises, with an informative message; the
empty-batch edge case works like torch.nn's."""

import dataclasses

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from helpers.cases import Case
from helpers.compare import raise_alike
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import run

pytestmark = pytest.mark.usefixtures("torch_state")

F32 = torch.float32
CELL_CASES = {cell: Case(cell, True, 2, True) for cell in ("LSTM", "LSTM-proj", "GRU",
                                                            "RNN-tanh")}


def states(case, batch=(3,), dtype=F32, device="cpu", out=None, hidden=None):
    """hx for case with the given leading/batch dims, sizes overridable."""
    layers = case.layers * case.directions
    h0 = torch.zeros(layers, *batch, out or case.out_size, dtype=dtype, device=device)
    if not case.is_lstm:
        return h0
    return h0, torch.zeros(layers, *batch, hidden or case.hidden_size, dtype=dtype,
                           device=device)


def x(case, *shape, dtype=F32, device="cpu"):
    """A random input; shape is given time first ([T, B, ...]) and swapped for batch_first."""
    if case.batch_first and len(shape) >= 3:
        shape = (shape[1], shape[0], *shape[2:])
    return torch.randn(*shape, dtype=dtype, device=device)


# name -> (build (input, hx) from case, expected exception type, key word in fastrnn's message)
ERRORS = {
    "feature_size": (lambda c: (x(c, 5, 3, c.input_size + 1), None), RuntimeError,
                     "input_size"),
    "hx_batch": (lambda c: (x(c, 5, 3, c.input_size), states(c, batch=(2,))), RuntimeError,
                 "hidden"),
    "hx_size": (lambda c: (x(c, 5, 3, c.input_size), states(c, out=c.out_size + 1)),
                RuntimeError, "hidden"),
    "hx_layers": (lambda c: (x(c, 5, 3, c.input_size),
                             states(Case(c.cell, True, 1, False))), RuntimeError, "hidden"),
    "batched_input_2d_hx": (lambda c: (x(c, 5, 3, c.input_size), states(c, batch=())),
                            RuntimeError, "3-D"),
    "unbatched_input_3d_hx": (lambda c: (x(c, 5, c.input_size), states(c, batch=(1,))),
                              RuntimeError, "2-D"),
    "input_4d": (lambda c: (x(c, 5, 3, 1, c.input_size), None), ValueError, "2D or 3D"),
    "input_1d": (lambda c: (x(c, c.input_size), None), ValueError, "2D or 3D"),
    "input_dtype": (lambda c: (x(c, 5, 3, c.input_size, dtype=torch.float64), None),
                    ValueError, "dtype"),
    "input_int": (lambda c: (x(c, 5, 3, c.input_size).long(), None), ValueError, "dtype"),
    "hx_dtype": (lambda c: (x(c, 5, 3, c.input_size), states(c, dtype=torch.float64)),
                 RuntimeError, "dtype"),
    "input_device": (lambda c: (x(c, 5, 3, c.input_size, device="meta"), None), RuntimeError,
                     "device"),
    "hx_device": (lambda c: (x(c, 5, 3, c.input_size), states(c, device="meta")),
                  RuntimeError, "device"),
    "zero_steps": (lambda c: (x(c, 0, 3, c.input_size), None), RuntimeError,
                   "sequence length"),
    "zero_steps_hx": (lambda c: (x(c, 0, 3, c.input_size), states(c)), RuntimeError,
                      "sequence length"),
    "zero_steps_unbatched": (lambda c: (x(c, 0, c.input_size), None), RuntimeError,
                             "sequence length"),
}
LSTM_ONLY_ERRORS = {
    "cx_size": (lambda c: (x(c, 5, 3, c.input_size), states(c, hidden=c.hidden_size + 1)),
                RuntimeError, "hidden[1]"),
    "cx_rank_batched": (lambda c: (x(c, 5, 3, c.input_size),
                                   (states(c)[0], states(c, batch=())[1])), RuntimeError,
                        "3-D"),
}


def check_same_error(case, make_args, error, keyword, batch_first=False):
    case = dataclasses.replace(case, batch_first=batch_first)
    ref, fast = make_pair(case, F32)
    inp, hx = make_args(case)
    _, fast_error = raise_alike(error, lambda: ref(inp, hx), lambda: fast(inp, hx))
    assert keyword in str(fast_error), str(fast_error)


@pytest.mark.parametrize("name", list(ERRORS))
@pytest.mark.parametrize("cell", list(CELL_CASES))
def test_error_same_type_as_torch_nn(cell, name):
    check_same_error(CELL_CASES[cell], *ERRORS[name])


@pytest.mark.parametrize("name", ["feature_size", "hx_batch", "unbatched_input_3d_hx",
                                  "input_4d", "zero_steps", "zero_steps_hx"])
def test_error_batch_first(name):
    check_same_error(CELL_CASES["GRU"], *ERRORS[name], batch_first=True)


@pytest.mark.parametrize("name", list(LSTM_ONLY_ERRORS))
@pytest.mark.parametrize("cell", ["LSTM", "LSTM-proj"])
def test_lstm_cell_state_errors(cell, name):
    check_same_error(CELL_CASES[cell], *LSTM_ONLY_ERRORS[name])


@pytest.mark.parametrize("cell", list(CELL_CASES))
def test_packed_error_feature_size(cell):
    case = CELL_CASES[cell]
    ref, fast = make_pair(case, F32)
    packed = pack_padded_sequence(torch.randn(4, 2, case.input_size + 1), [4, 2])
    with pytest.raises(RuntimeError):  # torch.nn.LSTM only fails inside its matmul
        ref(packed)
    with pytest.raises(RuntimeError, match="input_size"):
        fast(packed)


@pytest.mark.parametrize("cell", list(CELL_CASES))
def test_packed_error_hx_batch(cell):
    """hx whose batch differs from the packed batch: both refuse it (RuntimeError)."""
    case = CELL_CASES[cell]
    ref, fast = make_pair(case, F32)
    packed = pack_padded_sequence(torch.randn(4, 3, case.input_size), [4, 2, 1])
    hx = states(case, batch=(2,))
    with pytest.raises(RuntimeError):
        ref(packed, hx)
    with pytest.raises(RuntimeError, match="hidden"):
        fast(packed, hx)


def test_complex_dtype_refused_with_message():
    """Complex modules (which torch.nn runs on the CPU) are outside fastrnn's dtypes: it
    refuses them with a message listing the dtypes it supports, rather than failing inside
    a kernel."""
    _, fast = make_pair(Case("GRU"), F32)
    with pytest.warns(UserWarning, match="Complex modules"):
        fast = fast.to(torch.complex64)
    inp = torch.randn(5, 3, fast.input_size, dtype=torch.complex64)
    with pytest.raises(RuntimeError, match="float32, float64, bfloat16 and float16"):
        fast(inp)


# --- the empty batch ---------------------------------------------------------------------


@pytest.mark.parametrize("hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("cell", ["LSTM", "LSTM-proj", "GRU", "RNN-tanh", "RNN-relu"])
def test_empty_batch_matches_torch_nn(cell, batch_first, hx):
    case = Case(cell, True, 2, True, batch_first, "dense", hx, batch=0)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)
    want, want_grads, _ = run(ref, inputs)
    got, got_grads, _ = run(fast, inputs)
    assert [t.shape for t in got] == [t.shape for t in want]
    assert got[0].shape == ((0, case.steps, 2 * case.out_size) if batch_first
                            else (case.steps, 0, 2 * case.out_size))
    assert list(got_grads) == list(want_grads)
    for name in want_grads:  # parameters get zero gradients, like torch.nn's
        torch.testing.assert_close(got_grads[name], want_grads[name], atol=0, rtol=0)
