"""Gradients through the modules: losses reaching one result only, repeated backward with
retain_graph, bitwise determinism, no_grad / inference_mode, double backward."""

import pytest
import torch

from helpers.cases import CELLS, Case
from helpers.compare import assert_close
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import (assert_repeatable_backward, check_double_backward,
                             flatten_result, run, weighted_loss)

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64


ONE_RESULT = [(cell, part) for cell in ("LSTM", "LSTM-proj", "GRU", "RNN-relu")
              for part in (("output", "h_n", "c_n") if cell.startswith("LSTM")
                           else ("output", "h_n"))]


@pytest.mark.parametrize("cell,part", ONE_RESULT, ids=[f"{c}-{p}" for c, p in ONE_RESULT])
def test_gradients_from_one_result_only(cell, part):
    """Only one of output/h_n/c_n reaches the loss: the others' gradients are None inside
    autograd, and must act as zeros."""
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)
    grads = []
    for module in (ref, fast):
        leaves = inputs.fresh()
        outs = flatten_result(module(*leaves.args()))
        wrt = leaves.leaves() + list(module.parameters())
        grads.append(torch.autograd.grad(weighted_loss([outs[["output", "h_n", "c_n"].index(
            part)]]), wrt, allow_unused=True))
    for a, b in zip(*grads):
        if b is None:  # e.g. c_n does not depend on the last projection
            assert a is None or torch.count_nonzero(a) == 0
        else:
            assert_close(a, b, F64)


@pytest.mark.parametrize("cell", list(CELLS))
def test_repeated_backward_with_retain_graph(cell):
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    _, fast = make_pair(case)
    inputs = make_inputs(case).fresh()
    loss = weighted_loss(flatten_result(fast(*inputs.args())))
    assert_repeatable_backward(loss, inputs.leaves() + list(fast.parameters()))


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("cell", ["LSTM-proj", "GRU", "RNN-tanh"])
def test_deterministic_bitwise(cell, threads):
    """Two runs give bitwise equal outputs and gradients; with 2 threads and B*H above the
    parallel grain, the work is split across threads."""
    case = Case(cell, True, 2, True, False, "packed_unsorted", True, input_size=3,
                hidden_size=130, batch=128, steps=3, lengths=tuple([3] * 60 + [2] * 40 +
                                                                    [1] * 28))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        _, fast = make_pair(case, torch.float32)
        inputs = make_inputs(case, torch.float32)
        outs1, grads1, _ = run(fast, inputs)
        outs2, grads2, _ = run(fast, inputs)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(outs1, outs2):
        assert torch.equal(a, b)
    assert list(grads1) == list(grads2)
    for name in grads1:
        assert torch.equal(grads1[name], grads2[name]), name


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN-tanh"])
def test_no_grad_and_inference_mode(cell):
    case = Case(cell, True, 2, True, False, "packed_sorted", True)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)
    want, _, _ = run(ref, inputs, backward=False)
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            got, _, _ = run(fast, inputs, backward=False)
        for a, b in zip(got, want):
            assert not a.requires_grad
            assert_close(a, b, F64)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN-tanh"])
def test_double_backward_matches_torch_nn_or_is_refused(cell):
    """Gradient of a gradient (e.g. a gradient penalty), which torch.nn supports on the CPU,
    must either match torch.nn or be refused with a clear error: never silently wrong."""
    case = Case(cell, True, 1, False, False, "dense", True)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)

    check_double_backward(ref, fast, inputs, flatten_result)
