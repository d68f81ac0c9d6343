"""fastrnn's cells (LSTMCell, GRUCell, RNNCell tanh/relu) vs torch.nn's: the new state and
every gradient (input, h, c and the four parameters) over cell x bias x batched/unbatched x
hx x dtype; a second call giving bitwise the first's results; 20 calls with the state
carried and one backward; arguments laid out unusually; edge sizes; a parametrized weight
and weights changed in place between calls."""

import pytest
import torch
from torch.nn.utils.parametrizations import weight_norm

from helpers.cells import (CELLS, CellCase, assert_cell_results_close, call, cell_matrix,
                           check_cell_low_precision, check_cell_parity, ids, make_cell_inputs,
                           make_cell_pair, run_cell, unroll)
from helpers.devices import DEVICES

pytestmark = pytest.mark.usefixtures("torch_state")

F64, F32, BF16, F16 = torch.float64, torch.float32, torch.bfloat16, torch.float16
MATRIX = cell_matrix()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, F32], ids=str)
@pytest.mark.parametrize("case", MATRIX, ids=ids(MATRIX))
def test_parity(case, dtype, device):
    check_cell_parity(case, dtype, device=device)


@pytest.mark.parametrize("dtype", [BF16, F16], ids=str)
@pytest.mark.parametrize("case", MATRIX, ids=ids(MATRIX))
def test_low_precision_close_to_float64(case, dtype):
    """bf16 and fp16: see check_cell_low_precision (docs/testing.md's low-precision rule)."""
    check_cell_low_precision(case, dtype)


@pytest.mark.parametrize("case", MATRIX, ids=ids(MATRIX))
def test_repeated_calls_give_the_same_results(case):
    """A call leaves the cell as it found it: the same inputs again give bitwise the same
    new state and gradients."""
    _, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case)
    first, second = run_cell(fast, inputs), run_cell(fast, inputs)
    for a, b in zip(first[0], second[0]):
        assert torch.equal(a, b)
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name


def test_matrix_covers_every_option():
    assert {c.cell for c in MATRIX} == set(CELLS) and len(MATRIX) == len(CELLS) * 8
    assert {(c.bias, c.batched, c.hx) for c in MATRIX} == {
        (bias, batched, hx) for bias in (True, False) for batched in (True, False)
        for hx in (True, False)}


# --- a sequence: the state carried from call to call, one backward at the end ---------------

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", MATRIX, ids=ids(MATRIX))
def test_twenty_steps_state_carried(case, device):
    """x: [20, (B,) I]; every step's h, the final state and every gradient (through all 20
    steps) in float64."""
    check_cell_parity(case, F64, forward=unroll, steps=20, device=device)


@pytest.mark.parametrize("cell", list(CELLS))
def test_twenty_steps_bfloat16_close_to_float64(cell):
    check_cell_low_precision(CellCase(cell), BF16, forward=unroll, steps=20)


# --- arguments laid out unusually ---------------------------------------------------------


def transposed(t):
    """The same values with the strides of a transposed 2-D tensor (not contiguous)."""
    return t.t().contiguous().t() if t.dim() == 2 else t


def call_transposed(cell, x, hx):
    """x, h and c as non-contiguous views (gradients pass to the contiguous leaves)."""
    hx = None if hx is None else tuple(map(transposed, hx)) if isinstance(hx, tuple) else (
        transposed(hx))
    assert x.dim() < 2 or not transposed(x).is_contiguous()
    return call(cell, transposed(x), hx)


def call_expanded(cell, x, hx):
    """h (and c) as one row expanded over the batch (stride 0)."""
    expand = lambda t: t[:1].expand_as(t)
    hx = tuple(map(expand, hx)) if isinstance(hx, tuple) else expand(hx)
    return call(cell, x, hx)


@pytest.mark.parametrize("forward", [call_transposed, call_expanded],
                         ids=["transposed", "expanded_state"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_strided_arguments(cell, forward):
    check_cell_parity(CellCase(cell), F64, forward=forward)


EDGE = [CellCase(cell, True, True, True, input_size=1, hidden_size=1, batch=1)
        for cell in CELLS] + [CellCase(cell, True, True, hx, batch=0) for cell in CELLS
                              for hx in (True, False)]


@pytest.mark.parametrize("steps", [None, 3], ids=["one_call", "three_steps"])
@pytest.mark.parametrize("case", EDGE, ids=[f"{c.id}-I{c.input_size}-H{c.hidden_size}-B{c.batch}"
                                            for c in EDGE])
def test_edge_sizes(case, steps):
    """One input feature, one unit, a batch of one; an empty batch (parameters get zero
    gradients, like torch.nn's)."""
    check_cell_parity(case, F64, forward=unroll if steps else call, steps=steps)


# --- weights: a parametrization, and changes in place between calls ------------------------


@pytest.mark.parametrize("forward", [call, unroll], ids=["one_call", "five_steps"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_weight_norm_on_weight_hh(cell, forward):
    case = CellCase(cell)
    ref, fast = make_cell_pair(case)
    for module in (ref, fast):
        weight_norm(module, name="weight_hh")
    assert list(fast.state_dict()) == list(ref.state_dict())
    inputs = make_cell_inputs(case, steps=5 if forward is unroll else None)
    got, want = run_cell(fast, inputs, forward), run_cell(ref, inputs, forward)
    assert {"parametrizations.weight_hh.original0",
            "parametrizations.weight_hh.original1"} <= set(got[1])
    assert_cell_results_close(got, want, F64)
    # The parametrized weight follows updates of the original parameters.
    for module in (ref, fast):
        with torch.no_grad():
            module.parametrizations.weight_hh.original0.mul_(2.0)
    assert_cell_results_close(run_cell(fast, inputs, forward), run_cell(ref, inputs, forward),
                              F64)


@pytest.mark.parametrize("name", ["weight_ih", "weight_hh", "bias_ih", "bias_hh"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_in_place_change_seen_by_next_call(cell, name):
    case = CellCase(cell)
    ref, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case)
    before = run_cell(fast, inputs)
    for module in (ref, fast):
        with torch.no_grad():
            getattr(module, name).add_(1.0)
    after = run_cell(fast, inputs)
    assert not torch.equal(after[0][0], before[0][0])
    assert_cell_results_close(after, run_cell(ref, inputs), F64)
