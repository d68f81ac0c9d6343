"""Dropout between layers, as torch.nn applies it: off in eval, p=0 and p=1 in training,
random but seeded, and changes after construction followed."""

import pytest
import torch

from helpers.cases import CELLS, Case
from helpers.compare import assert_close, assert_results_close
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.reference_module import ReferenceModule
from helpers.running import flatten_result, run, weighted_loss

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64


def dropout_pair(cell, p, layers=3):
    return make_pair(Case(cell, True, layers, True, False, "packed_unsorted", True, dropout=p))


@pytest.mark.parametrize("cell", list(CELLS))
def test_dropout_in_eval_is_off_and_matches_torch_nn(cell):
    ref, fast = dropout_pair(cell, 0.5)
    ref.eval(), fast.eval()
    inputs = make_inputs(Case(cell, True, 3, True, False, "packed_unsorted", True))
    got1, got2, want = run(fast, inputs), run(fast, inputs), run(ref, inputs)
    for a, b in zip(got1[0], got2[0]):
        assert torch.equal(a, b)
    assert_results_close(got1[:2], want[:2], F64)


@pytest.mark.parametrize("cell", list(CELLS))
def test_dropout_zero_in_training(cell):
    ref, fast = dropout_pair(cell, 0.0)
    inputs = make_inputs(Case(cell, True, 3, True, False, "packed_unsorted", True))
    train = run(fast, inputs)
    assert_results_close(train[:2], run(ref, inputs)[:2], F64)
    fast.eval()
    evaluated = run(fast, inputs)
    for a, b in zip(train[0], evaluated[0]):
        assert torch.equal(a, b)


def output_grad_of_input(module, inputs):
    """Gradient of the last layer's output (alone) w.r.t. the input."""
    leaves = inputs.fresh()
    output = flatten_result(module(*leaves.args()))[0]
    return torch.autograd.grad(weighted_loss([output]), leaves.x)[0]


@pytest.mark.parametrize("cell", list(CELLS))
def test_dropout_one_in_training_zeroes_later_layers_input(cell):
    """With p=1 every layer after the first sees a zero input: its output only depends on
    its own weights and initial state. torch.nn agrees (its dropout also zeroes all)."""
    ref, fast = dropout_pair(cell, 1.0, layers=2)
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    inputs = make_inputs(case)
    got = run(fast, inputs)
    assert_results_close(got[:2], run(ref, inputs)[:2], F64, "dropout=1 vs torch.nn")
    # The same output from an input of zeros (only layer 1 sees the input).
    zeros = make_inputs(case)
    zeros.x = torch.zeros_like(zeros.x)
    got_zero_input = run(fast, zeros)
    assert_close(got_zero_input[0][0], got[0][0], F64, "output with zero input")
    assert not torch.equal(got_zero_input[0][1][:2], got[0][1][:2])  # layer 1's h_n differs
    assert output_grad_of_input(fast, inputs).abs().max() == 0
    # And what layer 2 computes with zero input and no dropout.
    fast.eval()
    zero_layer2_input = ReferenceModule(fast)
    fast.dropout = 0.0
    with torch.no_grad():
        for name, p in fast.named_parameters():
            if name.startswith("weight_ih_l1"):
                p.zero_()
    assert_close(run(zero_layer2_input, inputs)[0][0], got[0][0], F64, "zeroed layer-2 input")


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_dropout_in_training_is_random_but_seeded(cell):
    _, fast = dropout_pair(cell, 0.5)
    inputs = make_inputs(Case(cell, True, 3, True, False, "packed_unsorted", True))
    torch.manual_seed(0)
    a = run(fast, inputs)
    torch.manual_seed(0)
    b = run(fast, inputs)
    c = run(fast, inputs)
    assert torch.equal(a[0][0], b[0][0])
    assert not torch.equal(a[0][0], c[0][0])
    fast.eval()
    assert not torch.equal(a[0][0], run(fast, inputs)[0][0])


@pytest.mark.parametrize("cell", ["LSTM-proj", "RNN-tanh"])
def test_changing_dropout_after_construction_is_followed(cell):
    ref, fast = dropout_pair(cell, 0.0, layers=2)
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    inputs = make_inputs(case)
    no_dropout = run(fast, inputs)
    fast.dropout = ref.dropout = 1.0
    full = run(fast, inputs)
    assert_results_close(full[:2], run(ref, inputs)[:2], F64)
    assert output_grad_of_input(fast, inputs).abs().max() == 0
    assert not torch.allclose(full[0][0], no_dropout[0][0])
    fast.dropout = 0.0
    assert_results_close(run(fast, inputs)[:2], no_dropout[:2], F64)
