"""The ops themselves (torch.ops.fastrnn.*): gradcheck in float64 through the registered
autograd, torch.library.opcheck (schema, fake kernels, autograd registration, AOT dispatch)
on every forward and backward op, and gradcheck of the modules."""

import pytest
import torch
from torch.autograd import gradcheck
from torch.func import functional_call

import fastrnn

from helpers.cases import CELLS, Case
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.ops import (BATCH_SIZES, FORWARD_VARIANTS, backward_args, differentiable_outputs,
                         forward_op, op_args, ops, variant_id)
from helpers.tolerances import GRADCHECK, atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64

LAYOUTS = list(BATCH_SIZES)
REVERSE = [False, True]


@pytest.mark.parametrize("reverse", REVERSE, ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_gradcheck_op(variant, layout, reverse):
    op, kw = variant
    args = op_args(op, layout, reverse, **kw)
    assert gradcheck(differentiable_outputs(op), args, **GRADCHECK)


@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_gradcheck_op_single_output(variant):
    """Gradients when only one output is used (the others' gradients arrive as None)."""
    op, kw = variant
    args = op_args(op, "packed", True, **kw)
    assert gradcheck(lambda *a: forward_op(op)(*a)[0], args, **GRADCHECK)
    assert gradcheck(lambda *a: forward_op(op)(*a)[1], args, **GRADCHECK)


# opcheck is slow (it traces with AOT autograd): dense time order and packed reverse order.
OPCHECK_LAYOUTS = [("dense", False), ("packed", True)]


@pytest.mark.parametrize("layout,reverse", OPCHECK_LAYOUTS, ids=["dense-forward",
                                                                  "packed-reverse"])
@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_opcheck_forward(variant, layout, reverse):
    op, kw = variant
    args = op_args(op, layout, reverse, **kw)
    torch.library.opcheck(forward_op(op), args)


@pytest.mark.parametrize("save", [True, False], ids=["save", "no_save"])
@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_opcheck_forward_without_grad(variant, save):
    op, kw = variant
    args = op_args(op, "packed", False, requires_grad=False, save=save, **kw)
    torch.library.opcheck(forward_op(op), args,
                          test_utils=("test_schema", "test_faketensor"))


@pytest.mark.parametrize("reverse", REVERSE, ids=["forward", "reverse"])
@pytest.mark.parametrize("variant", [v for v in FORWARD_VARIANTS if v[0] != "rnn"],
                         ids=variant_id)
def test_forward_without_save(variant, reverse):
    """save=False gives bitwise the same results, an empty `saved`, and refuses backward."""
    op, kw = variant
    with_save = forward_op(op)(*op_args(op, "packed", reverse, requires_grad=False, **kw))
    args = op_args(op, "packed", reverse, save=False, **kw)
    without = forward_op(op)(*args)
    for a, b in zip(with_save[:-1], without[:-1]):
        assert torch.equal(a, b)
    assert without[-1].shape == (0, with_save[-1].shape[1])
    with pytest.raises(RuntimeError, match="save=False"):
        without[0].sum().backward()


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_modules_save_only_for_autograd(cell, monkeypatch):
    """The layers ask the ops to save for backward exactly when autograd needs it (the
    LSTM's op on the CPU takes its input rows)."""
    op_name = {"LSTM": "lstm_input_forward", "GRU": "gru_forward"}[cell]
    real, calls = getattr(ops, op_name), []
    monkeypatch.setattr(ops, op_name, lambda *a: calls.append(a[-1]) or real(*a))
    layer = getattr(fastrnn, cell)(2, 3).double()
    x = torch.randn(4, 1, 2, dtype=F64)
    layer(x)
    with torch.no_grad():
        layer(x)
    layer.requires_grad_(False)
    layer(x)
    layer(x.requires_grad_())
    assert calls == [True, False, False, True]


@pytest.mark.parametrize("layout,reverse", OPCHECK_LAYOUTS, ids=["dense-forward",
                                                                  "packed-reverse"])
@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_opcheck_backward(variant, layout, reverse):
    op, kw = variant
    torch.library.opcheck(getattr(ops, f"{op}_backward"), backward_args(op, layout, reverse, kw))


@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_backward_op_matches_autograd(variant):
    """The backward op called directly returns what autograd computes through the forward."""
    op, kw = variant
    args = op_args(op, "packed", True, **kw)
    outs = differentiable_outputs(op)(*args)
    gen = torch.Generator().manual_seed(5)
    grads = [torch.randn(t.shape, generator=gen, dtype=F64) for t in outs]
    wrt = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    want = torch.autograd.grad(outs, wrt, grads)
    got = getattr(ops, f"{op}_backward")(*backward_args(op, "packed", True, kw))
    if op.startswith("lstm"):  # (gx, h0, c0, w_hh, w_hr[, params]) vs those given
        assert len(got) == (6 if op == "lstm_variant" else 5)
        params = kw.get("peepholes", False) or kw.get("layer_norm", False)
        present = [True] * 4 + [kw.get("proj", False), params]
        assert all(g.numel() == 0 for g, p in zip(got, present) if not p)
        got = [g for g, p in zip(got, present) if p]
    elif op.startswith("gru"):  # (gx, h0, w_hh, b_hh[, norms]); b_hh empty without bias
        present = [True] * 3 + [kw.get("bias", True)] + [True] * (op == "gru_variant")
        assert all(g.numel() == 0 for g, p in zip(got, present) if not p)
        got = [g for g, p in zip(got, present) if p]
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **atol_rtol(F64, "same_computation"))


def test_backward_op_does_not_modify_saved():
    """The forward's saved tensors are only read, so backward can run again (retain_graph)."""
    args = backward_args("lstm", "packed", False, {"proj": True})
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    first = ops.lstm_backward(*args)
    second = ops.lstm_backward(*args)
    for a, b in zip(args, before):
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_fake_kernels_give_the_real_shapes():
    for op, kw in FORWARD_VARIANTS:
        args = op_args(op, "packed", False, requires_grad=False, **kw)
        real = forward_op(op)(*args)
        meta_args = [a.to("meta") if isinstance(a, torch.Tensor) and a.dim() > 0 and a.dtype
                     != torch.long else a for a in args]
        fake = forward_op(op)(*meta_args)
        assert [t.shape for t in fake] == [t.shape for t in real], op
        assert all(t.device.type == "meta" for t in fake)


@pytest.mark.parametrize("op", ["lstm", "gru", "rnn"])
def test_op_argument_checks(op):
    """Bad shapes/dtypes are refused with a message naming the argument."""
    args = list(op_args(op, "packed", False, requires_grad=False))
    bad_gx = list(args)
    bad_gx[0] = args[0][:-1]
    with pytest.raises(RuntimeError, match="gx"):
        forward_op(op)(*bad_gx)
    bad_sizes = list(args)
    bad_sizes[1] = torch.tensor([3, 2, 3, 0])  # increases (same total rows)
    with pytest.raises(RuntimeError, match="non-increasing"):
        forward_op(op)(*bad_sizes)
    bad_sizes[1] = torch.tensor([3, 2, 2, 1], dtype=torch.int32)
    with pytest.raises(RuntimeError, match="batch_sizes"):
        forward_op(op)(*bad_sizes)
    empty = list(args)
    empty[0], empty[1] = args[0][:0], torch.zeros(0, dtype=torch.long)
    with pytest.raises(RuntimeError, match="at least one step"):
        forward_op(op)(*empty)
    bad_dtype = list(args)
    bad_dtype[0] = args[0].float()
    with pytest.raises(RuntimeError, match="dtype"):
        forward_op(op)(*bad_dtype)


# --- modules: gradcheck through the whole stack (inputs, states and parameters) ------------

# Two layers (the second reads the first's output), packed with unequal lengths; plus one
# bidirectional dense case per cell. fast_mode gradcheck (random projections of the
# Jacobian) keeps the many parameters affordable; the ops get the full gradcheck above.
MODULE_CASES = [Case(cell, True, layers, bi, False, kind, True, input_size=2, hidden_size=4,
                     batch=3, steps=3, lengths=(3, 1, 2))
                for cell in CELLS
                for layers, bi, kind in [(2, False, "packed_unsorted"), (1, True, "dense")]]


@pytest.mark.parametrize("case", MODULE_CASES, ids=[c.id for c in MODULE_CASES])
def test_gradcheck_module(case):
    _, fast = make_pair(case)
    inputs = make_inputs(case)
    names = [n for n, _ in fast.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in fast.named_parameters()]
    leaves = [t.detach().clone().requires_grad_() for t in inputs.leaves()]

    def fn(*tensors):
        x, h0, c0 = list(tensors[:len(leaves)]) + [None] * (3 - len(leaves))
        inp, hx = type(inputs)(case, x, h0, c0).args()
        weights = dict(zip(names, tensors[len(leaves):]))
        out, hidden = functional_call(fast, weights, (inp, hx))
        out = out.data if hasattr(out, "batch_sizes") else out
        return (out, *hidden) if isinstance(hidden, tuple) else (out, hidden)

    assert gradcheck(fn, (*leaves, *params), **GRADCHECK, fast_mode=True)
