"""The single-step op's C++ autograd under what PyTorch layers on top of autograd: activation
checkpointing, compiled autograd, results changed in place, forward-mode AD (refused, by
the layers at any length too); and what the op refuses. The cells and a layer's single
time step (which runs the same op) alike."""

import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.utils.checkpoint import checkpoint

from helpers.cases import CELLS as LAYERS
from helpers.cases import Case
from helpers.cells import CELLS, CellCase, flatten_state, make_cell_inputs, make_cell_pair
from helpers.compare import assert_close
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.ops import cell_op_args, ops
from helpers.running import flatten_result, weighted_loss

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64


def cell_setup(cell):
    """(torch.nn cell, fastrnn cell, inputs) of a batched cell with hx, in float64."""
    case = CellCase(cell)
    return (*make_cell_pair(case), make_cell_inputs(case))


def layer_setup(cell, steps=1):
    """(torch.nn layer, fastrnn layer, inputs) of `steps` time steps (T=1 by default), in
    float64."""
    case = Case(cell, True, 1, False, False, "dense", True, steps=steps)
    return (*make_pair(case), make_inputs(case))


def layer_setup_steps(cell):
    return layer_setup(cell, steps=3)


SETUPS = ([pytest.param(cell_setup, cell, flatten_state, id=cell) for cell in CELLS] +
          [pytest.param(layer_setup, cell, flatten_result, id=f"{cell}-T1")
           for cell in LAYERS if cell != "LSTM-proj"])


def gradients(module, inputs, flatten, wrap=lambda f, *a: f(*a), change=None, first=0):
    """Gradients of weighted_loss w.r.t. the input, the state and every parameter, the call
    made through wrap (e.g. a checkpoint), its results from number `first` on passed to
    change first."""
    leaves = inputs.fresh()
    outs = flatten(wrap(module, *leaves.args()))
    if change is not None:
        outs = outs[:first] + [change(t) for t in outs[first:]]
    wrt = [t for t in (leaves.x, leaves.h0, leaves.c0) if t is not None]
    return torch.autograd.grad(weighted_loss(outs), wrt + list(module.parameters()))


def assert_same_gradients(got, want):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert_close(a, b, F64, f"gradient {k}")


@pytest.mark.parametrize("setup,cell,flatten", SETUPS)
def test_non_reentrant_checkpoint(setup, cell, flatten):
    """torch.utils.checkpoint(use_reentrant=False): backward recomputes the forward when it
    unpacks the op's saved tensors, which must record a graph again."""
    ref, fast, inputs = setup(cell)
    wrap = lambda f, *a: checkpoint(f, *a, use_reentrant=False)
    assert_same_gradients(gradients(fast, inputs, flatten, wrap),
                          gradients(ref, inputs, flatten))


@pytest.mark.parametrize("setup,cell,flatten", SETUPS)
def test_new_state_changed_in_place(setup, cell, flatten):
    """A caller may change the new state in place before backward (a cell's h and c, a
    layer's h_n and c_n; not a layer's output, which backward reads, at T=1 as at any T):
    backward reads its own copy. The reference changes a copy (torch.nn's RNNCell refuses
    the change in place: its tanh and relu read their result)."""
    ref, fast, inputs = setup(cell)
    first = 1 if setup is layer_setup else 0
    got = gradients(fast, inputs, flatten, change=lambda t: t.mul_(0.5), first=first)
    want = gradients(ref, inputs, flatten, change=lambda t: t * 0.5, first=first)
    assert_same_gradients(got, want)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_compiled_autograd(cell):
    """The backward traced by compiled autograd equals eager autograd's."""
    from torch._dynamo import compiled_autograd
    ref, fast, inputs = cell_setup(cell)
    want = gradients(fast, inputs, flatten_state)
    torch._dynamo.reset()
    with compiled_autograd._enable(torch.compile(backend="eager")):
        got = gradients(fast, inputs, flatten_state)
    torch._dynamo.reset()
    assert_same_gradients(got, want)


FORWARD_AD_SETUPS = SETUPS + [
    pytest.param(layer_setup_steps, cell, flatten_result, id=f"{cell}-T3")
    for cell in LAYERS]


@pytest.mark.parametrize("frozen", [True, False], ids=["frozen", "trainable"])
@pytest.mark.parametrize("setup,cell,flatten", FORWARD_AD_SETUPS)
def test_forward_mode_ad_refused(setup, cell, flatten, frozen):
    """Forward-mode AD has no formula in the ops: a clear error, never a silently dropped
    tangent, for the cells and the layers (one step or more). (Under torch.func.jvp the
    modules run torch.nn's implementation: tests/test_functorch.py.)"""
    _, fast, inputs = setup(cell)
    fast.requires_grad_(not frozen)
    x, hx = inputs.args()
    run = lambda x: flatten(fast(x, hx))
    with pytest.raises(RuntimeError, match="forward-mode AD"):
        with fwAD.dual_level():
            run(fwAD.make_dual(x, torch.ones_like(x)))


def test_cell_state_refused_where_a_cell_has_none():
    """c only for the LSTM: the GRU's op refuses one rather than ignoring it."""
    number, x, h, _, w_ih, w_hh, b_ih, b_hh, save = cell_op_args("GRU", requires_grad=False)
    with pytest.raises(RuntimeError, match="no cell state"):
        ops.cell_forward(number, x, h, h.clone(), w_ih, w_hh, b_ih, b_hh, save)
