"""The cells' single-step ops (torch.ops.fastrnn.cell_forward / cell_backward) and the cells
through them: gradcheck in float64 through the op's registered autograd and through the
modules, torch.library.opcheck (schema, fake kernels, autograd registration, AOT dispatch) on
both ops, save=False, the fake kernels' shapes, and a layer's step ([1, B, .] tensors)."""

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

import fastrnn
from fastrnn._cell_ops import CELL_KIND
from helpers.cells import (CELLS, CellCase, CellInputs, flatten_state, make_cell_inputs,
                           make_cell_pair)
from helpers.ops import CELL_NAMES, cell_backward_args, cell_op_args, cell_outputs, ops
from helpers.tolerances import GRADCHECK, atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64
BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]


@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_gradcheck_op(cell, bias):
    assert gradcheck(cell_outputs(cell), cell_op_args(cell, bias), **GRADCHECK)


@pytest.mark.parametrize("used", [0, 1, 2], ids=["y_only", "h_only", "c_only"])
def test_gradcheck_op_lstm_single_output(used):
    """Gradients when only y, only h_new or only c_new is used (the others' arrive as
    None)."""
    args = cell_op_args("LSTM")
    assert gradcheck(lambda *a: ops.cell_forward(*a)[used], args, **GRADCHECK)


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_gradcheck_module(cell, bias, batched):
    """Through the module: input, h, c and every parameter (functional_call)."""
    case = CellCase(cell, bias, batched, True)
    _, fast = make_cell_pair(case)
    inputs = make_cell_inputs(case)
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in fast.parameters()]
    leaves = [t.detach().clone().requires_grad_() for t in inputs.leaves()]

    def fn(*tensors):
        x, h, c = list(tensors[:len(leaves)]) + [None] * (3 - len(leaves))
        hx = (h, c) if case.is_lstm else h
        state = functional_call(fast, dict(zip(names, tensors[len(leaves):])), (x, hx))
        return tuple(flatten_state(state))

    assert gradcheck(fn, (*leaves, *params), **GRADCHECK)


@pytest.mark.parametrize("save", [True, False], ids=["save", "no_save"])
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_opcheck_forward(cell, bias, save):
    """With arguments that require gradients; save=False is what the cells pass (a forward
    that records a graph saves regardless)."""
    torch.library.opcheck(ops.cell_forward.default, cell_op_args(cell, bias, save=save))


@pytest.mark.parametrize("save", [True, False], ids=["save", "no_save"])
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_opcheck_forward_without_grad(cell, bias, save):
    args = cell_op_args(cell, bias, requires_grad=False, save=save)
    torch.library.opcheck(ops.cell_forward.default, args,
                          test_utils=("test_schema", "test_faketensor"))


# (input_grad, state_grad, weight_grad): which of the gradients w.r.t. x, w.r.t. h, c and
# w.r.t. the weights and biases are wanted
WANTED = [pytest.param(True, True, True, id="all"),
          pytest.param(False, True, True, id="no_input_grad"),
          pytest.param(True, False, True, id="no_state_grad"),
          pytest.param(False, False, True, id="weights_only"),
          pytest.param(True, True, False, id="frozen_weights"),
          pytest.param(False, True, False, id="state_only")]


@pytest.mark.parametrize("input_grad,state_grad,weight_grad", WANTED)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_opcheck_backward(cell, bias, input_grad, state_grad, weight_grad):
    torch.library.opcheck(ops.cell_backward.default,
                          cell_backward_args(cell, bias, input_grad, state_grad, weight_grad))


GRAD_NAMES = ["x", "h", "c", "w_ih", "w_hh", "b_ih", "b_hh"]  # cell_backward's results


@pytest.mark.parametrize("input_grad,state_grad,weight_grad", WANTED)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", CELL_NAMES)
def test_backward_op_matches_autograd(cell, bias, input_grad, state_grad, weight_grad):
    """cell_backward called directly returns what autograd computes through cell_forward;
    what a cell lacks (grad_c without a cell state, the bias gradients without bias) and
    what is not wanted (x without input_grad, h and c without state_grad, the weights and
    biases without weight_grad) comes back empty ([0])."""
    args = cell_op_args(cell, bias)
    back = cell_backward_args(cell, bias, input_grad, state_grad, weight_grad)
    outs = cell_outputs(cell)(*args)
    wrt = {name: a for name, a in zip(GRAD_NAMES, args[1:8]) if a is not None}
    want = dict(zip(wrt, torch.autograd.grad(outs, list(wrt.values()),
                                             [back[1], back[2], back[3]][:len(outs)])))
    unwanted = ({"x"} if not input_grad else set()) | ({"h", "c"} if not state_grad else set()) | (
        {"w_ih", "w_hh", "b_ih", "b_hh"} if not weight_grad else set())
    got = dict(zip(GRAD_NAMES, ops.cell_backward(*back)))
    for name, value in got.items():
        if name not in want or name in unwanted:
            assert value.shape == (0,), name
        else:
            torch.testing.assert_close(value, want[name], **atol_rtol(F64, "same_computation"),
                                       msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_backward_op_without_grad_y(cell):
    """grad_y may be None: the op sums a step's gradients w.r.t. y and h_new, so grad_h alone
    gives exactly what it gives with grad_y zero, and what the same gradient as grad_y gives
    with grad_h zero."""
    number, grad_y, grad_h, *rest = cell_backward_args(cell)
    zeros = torch.zeros_like(grad_h)
    alone = ops.cell_backward(number, None, grad_h, *rest)
    for other in ((zeros, grad_h), (grad_h, zeros)):
        for got, want in zip(alone, ops.cell_backward(number, *other, *rest)):
            assert torch.equal(got, want)
    torch.library.opcheck(ops.cell_backward.default, (number, None, grad_h, *rest))


def test_backward_op_does_not_modify_its_arguments():
    """The forward's saved tensors are only read, so backward can run again (retain_graph)."""
    args = cell_backward_args("LSTM")
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    first, second = ops.cell_backward(*args), ops.cell_backward(*args)
    for a, b in zip(args, before):
        assert not isinstance(a, torch.Tensor) or torch.equal(a, b)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_forward_without_save(cell):
    """save=False where no graph is recorded: bitwise the same y, h_new and c_new, and an
    empty `saved` ([0, slots*H])."""
    with_save = ops.cell_forward(*cell_op_args(cell, requires_grad=False))
    without = ops.cell_forward(*cell_op_args(cell, requires_grad=False, save=False))
    for a, b in zip(with_save[:3], without[:3]):
        assert torch.equal(a, b)
    assert without[3].shape == (0, with_save[3].shape[1])


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_save_false_while_recording_a_graph(cell):
    """A forward that records a graph keeps what backward reads whatever `save` says: the
    gradients equal those of save=True."""
    grads = []
    for save in (True, False):
        args = cell_op_args(cell, save=save)
        outs = cell_outputs(cell)(*args)
        wrt = [a for a in args if isinstance(a, torch.Tensor)]
        grads.append(torch.autograd.grad([o.sum() for o in outs], wrt))
    for a, b in zip(*grads):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell", "RNNCell-tanh"])
def test_cells_save_only_for_autograd(cell, monkeypatch):
    """A cell's op keeps rows for backward ([B, slots*H]) exactly when autograd needs them:
    not under no_grad, nor when nothing requires a gradient."""
    rows = []

    def cell_step(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, unit_params):  # through torch.ops
        out = fastrnn._ops.ops.cell_forward(cell, x, h, c, w_ih, w_hh, b_ih, b_hh, False,
                                            unit_params)
        rows.append(out[3].shape[0])
        return out[:3]

    monkeypatch.setattr(fastrnn._C, "cell_step", cell_step)
    _, fast = make_cell_pair(CellCase(cell))
    x = torch.randn(2, fast.input_size, dtype=F64)
    fast(x)
    with torch.no_grad():
        fast(x)
    fast.requires_grad_(False)
    fast(x)
    fast(x.requires_grad_())
    assert rows == [2, 0, 0, 2]


def column_major(t):
    """t's values with the strides of a transposed matrix (2-D tensors; others as they are)."""
    return t.t().contiguous().t() if isinstance(t, torch.Tensor) and t.dim() == 2 else t


@pytest.mark.parametrize("layout", [lambda t: t, column_major], ids=["contiguous", "column_major"])
@pytest.mark.parametrize("save", [True, False], ids=["save", "no_save"])
@pytest.mark.parametrize("bias", BIAS)
def test_fake_kernels_give_the_real_shapes(bias, save, layout):
    """Shapes and strides (the kernels' results are contiguous whatever the arguments'
    layout, and torch.compile checks the fake kernels' strides against them)."""
    for cell in CELL_NAMES:
        args = [layout(a) for a in cell_op_args(cell, bias, requires_grad=False, save=save)]
        real = ops.cell_forward(*args)
        meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
        fake = ops.cell_forward(*meta)
        assert [t.shape for t in fake] == [t.shape for t in real], cell
        assert [t.stride() for t in fake] == [t.stride() for t in real], cell
        assert all(t.device.type == "meta" for t in fake)
        back = [layout(a) for a in cell_backward_args(cell, bias)]
        real = ops.cell_backward(*back)
        fake = ops.cell_backward(*[a.to("meta") if isinstance(a, torch.Tensor) else a
                                   for a in back])
        assert [t.shape for t in fake] == [t.shape for t in real], cell
        assert [t.stride() for t in fake] == [t.stride() for t in real], cell


@pytest.mark.parametrize("cell", list(CELLS))
def test_meta_device(cell):
    """A cell on the meta device returns torch.nn's shapes, batched and unbatched."""
    for batched in (True, False):
        case = CellCase(cell, True, batched, True)
        ref, fast = make_cell_pair(case)
        inputs = make_cell_inputs(case)
        want = flatten_state(ref(*inputs.args()))
        meta = CellInputs(case, *[None if t is None else t.to("meta")
                                  for t in (inputs.x, inputs.h0, inputs.c0)])
        got = flatten_state(fast.to("meta")(*meta.args()))
        assert [t.shape for t in got] == [t.shape for t in want], batched
        assert all(t.device.type == "meta" for t in got)


def layer_step_args(cell, bias=True, requires_grad=True):
    """cell_op_args with x, h and c as a layer's step passes them: [1, B, .]."""
    args = list(cell_op_args(cell, bias, requires_grad=False))
    for k in (1, 2, 3):
        if args[k] is not None:
            args[k] = args[k].unsqueeze(0).requires_grad_(requires_grad)
    for k in (4, 5, 6, 7):
        if args[k] is not None:
            args[k].requires_grad_(requires_grad)
    return tuple(args)


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_layer_step_shapes(cell):
    """A layer's step, x [1, B, I] and states [1, B, H]: the same numbers as the [B, .] call,
    its states and the gradients w.r.t. x, h and c with the leading 1; opcheck and
    gradcheck on it."""
    args = layer_step_args(cell)
    rows = [a[0].detach().requires_grad_() if isinstance(a, torch.Tensor) and a.dim() == 3
            else a for a in args]
    got, want = ops.cell_forward(*args), ops.cell_forward(*rows)
    for g, w in zip(got[:3], want[:3]):
        assert g.shape == (1, *w.shape) if w.dim() == 2 else g.shape == w.shape
        assert torch.equal(g.reshape(w.shape), w)
    outputs = lambda out, cell=cell: out[:3] if cell == "LSTM" else out[:2]
    leaves = [a for a in args if isinstance(a, torch.Tensor)]
    grads = torch.autograd.grad(outputs(got), leaves, [torch.ones_like(t) for t in outputs(got)])
    row_leaves = [a for a in rows if isinstance(a, torch.Tensor)]
    row_grads = torch.autograd.grad(outputs(want), row_leaves,
                                    [torch.ones_like(t) for t in outputs(want)])
    for g, w, leaf in zip(grads, row_grads, leaves, strict=True):
        assert g.shape == leaf.shape and torch.equal(g.reshape(w.shape), w)
    torch.library.opcheck(ops.cell_forward.default, args)
    assert gradcheck(cell_outputs(cell), args, **GRADCHECK)


@pytest.mark.parametrize("x_steps,h_steps", [(2, 1), (1, 2)], ids=["x", "h"])
def test_layer_step_of_two_steps_refused(x_steps, h_steps):
    args = list(cell_op_args("GRU", requires_grad=False))
    args[1] = args[1].expand(x_steps, *args[1].shape)
    args[2] = args[2].expand(h_steps, *args[2].shape)
    with pytest.raises(RuntimeError, match=r"a layer's step takes x \[1, B, I\]"):
        ops.cell_forward(*args)


def test_unknown_cell_number_refused():
    args = list(cell_op_args("GRU", requires_grad=False))
    args[0] = 1 + max(CELL_KIND.values())
    with pytest.raises(RuntimeError, match="unknown cell number"):
        ops.cell_forward(*args)
