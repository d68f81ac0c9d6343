"""Gradients through the cells: only some arguments needing a gradient, a loss reaching one
result only, repeated backward with retain_graph, bitwise determinism, no_grad /
inference_mode, double backward."""

import pytest
import torch

from helpers.cells import (CELLS, CellCase, call, flatten_state, make_cell_inputs,
                           make_cell_pair, unroll)
from helpers.compare import assert_close
from helpers.running import assert_repeatable_backward, check_double_backward, weighted_loss

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64

# Which leaves need a gradient: the cell's backward forms only those of x and of the state
# that are asked for.
NEEDS_GRAD = {"params_only": set(), "x_only": {"x"}, "state_only": {"h0", "c0"},
              "h_only": {"h0"}, "c_only": {"c0"}, "everything": {"x", "h0", "c0"}}


def grads_of(module, inputs, needs, forward=call, params=True, outputs=None):
    """Gradients of weighted_loss (of the results numbered `outputs`, default all) w.r.t.
    the leaves in `needs` and, with params, every parameter; the other leaves need none."""
    leaves = inputs.fresh(requires_grad=False)
    wrt = []
    for name in ("x", "h0", "c0"):
        leaf = getattr(leaves, name)
        if leaf is not None and name in needs:
            wrt.append(leaf.requires_grad_())
    module.requires_grad_(params)
    wrt += list(module.parameters()) if params else []
    outs = forward(module, *leaves.args())
    outs = outs if outputs is None else [outs[k] for k in outputs]
    return torch.autograd.grad(weighted_loss(outs), wrt, allow_unused=True)


def assert_grads_close(got, want):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0, k
        else:
            assert_close(a, b, F64, f"gradient {k}")


# h_only and c_only: LSTMCell's state only (the other cells' state is h alone)
SOME_NEED_GRAD = [(cell, needs) for cell in ("LSTMCell", "GRUCell", "RNNCell-relu")
                  for needs in NEEDS_GRAD
                  if cell == "LSTMCell" or needs not in ("h_only", "c_only")]


@pytest.mark.parametrize("forward", [call, unroll], ids=["one_call", "three_steps"])
@pytest.mark.parametrize("cell,needs", SOME_NEED_GRAD, ids=[f"{c}-{n}" for c, n in SOME_NEED_GRAD])
def test_some_arguments_need_grad(cell, needs, forward):
    case = CellCase(cell)
    ref, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case, steps=3 if forward is unroll else None)
    for params in (True, False):
        if params or NEEDS_GRAD[needs]:
            assert_grads_close(grads_of(fast, inputs, NEEDS_GRAD[needs], forward, params),
                               grads_of(ref, inputs, NEEDS_GRAD[needs], forward, params))


@pytest.mark.parametrize("output", [0, 1], ids=["h", "c"])
def test_lstm_cell_gradients_from_one_result_only(output):
    """Only h or only c reaches the loss: the other's gradient is None inside autograd and
    must act as zeros."""
    case = CellCase("LSTMCell")
    ref, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case)
    needs = NEEDS_GRAD["everything"]
    assert_grads_close(grads_of(fast, inputs, needs, outputs=[output]),
                       grads_of(ref, inputs, needs, outputs=[output]))


@pytest.mark.parametrize("cell", list(CELLS))
def test_repeated_backward_with_retain_graph(cell):
    case = CellCase(cell)
    _, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case, steps=3).fresh()
    loss = weighted_loss(unroll(fast, *inputs.args()))
    assert_repeatable_backward(loss, inputs.leaves() + list(fast.parameters()))


@pytest.mark.parametrize("cell", list(CELLS))
def test_deterministic_bitwise(cell):
    case = CellCase(cell, batch=64, hidden_size=40)
    _, fast = make_cell_pair(case, torch.float32)
    inputs = make_cell_inputs(case, torch.float32, steps=3)
    runs = [grads_of(fast, inputs, NEEDS_GRAD["everything"], unroll) for _ in range(2)]
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", list(CELLS))
def test_no_grad_and_inference_mode(cell):
    case = CellCase(cell)
    ref, fast = make_cell_pair(case)
    x, hx = make_cell_inputs(case).args()
    want = flatten_state(ref(x, hx))
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            got = flatten_state(fast(x, hx))
        for a, b in zip(got, want):
            assert not a.requires_grad
            assert_close(a, b.detach(), F64)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell-tanh"])
def test_double_backward_matches_torch_nn_or_is_refused(cell):
    """Gradient of a gradient (e.g. a gradient penalty), which torch.nn's cells support,
    must either match torch.nn or be refused with a clear error: never silently wrong."""
    case = CellCase(cell)
    ref, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case)

    check_double_backward(ref, fast, inputs, flatten_state)
