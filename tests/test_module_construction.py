"""The modules as torch.nn drop-ins, as built: the same class hierarchy, constructor
checks and warnings, parameters (names, shapes, order, default initialisation) and
state_dict in both directions."""

import dataclasses

import pytest
import torch
from torch import nn

import fastrnn
from helpers.cases import CELLS, Case
from helpers.compare import assert_results_close
from helpers.inputs import make_inputs
from helpers.modules import make_pair, module_kwargs
from helpers.running import run

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64
CELL_CASES = [Case(cell, bias, 2, True) for cell in CELLS for bias in (True, False)]
CELL_IDS = [f"{c.cell}-{'bias' if c.bias else 'nobias'}" for c in CELL_CASES]


@pytest.mark.parametrize("cell", list(CELLS))
def test_is_a_torch_nn_module_of_the_same_kind(cell):
    torch_cls, fast_cls, _ = CELLS[cell]
    _, fast = make_pair(Case(cell))
    assert isinstance(fast, torch_cls)
    assert isinstance(fast, nn.RNNBase)
    assert isinstance(fastrnn.LSTM(2, 3), nn.LSTM)
    assert not isinstance(fastrnn.GRU(2, 3), nn.LSTM)


# --- parameters and state_dict -----------------------------------------------------------


@pytest.mark.parametrize("case", CELL_CASES, ids=CELL_IDS)
def test_parameters_same_names_shapes_order(case):
    ref, fast = make_pair(case)
    assert [(n, p.shape, p.dtype) for n, p in fast.named_parameters()] == [
        (n, p.shape, p.dtype) for n, p in ref.named_parameters()]
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert fast._flat_weights_names == ref._flat_weights_names
    assert repr(fast) == repr(ref)


@pytest.mark.parametrize("case", CELL_CASES, ids=CELL_IDS)
def test_same_default_init_for_the_same_seed(case):
    torch_cls, fast_cls, _ = CELLS[case.cell]
    torch.manual_seed(7)
    ref = torch_cls(**module_kwargs(case, torch.float32))
    torch.manual_seed(7)
    fast = fast_cls(**module_kwargs(case, torch.float32))
    for (name, a), (_, b) in zip(fast.named_parameters(), ref.named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("case", CELL_CASES, ids=CELL_IDS)
def test_state_dict_round_trips(case):
    torch_cls, fast_cls, _ = CELLS[case.cell]
    kwargs = module_kwargs(case, F64)
    inputs = make_inputs(dataclasses.replace(case, kind="packed_unsorted"))
    torch.manual_seed(1)
    ref = torch_cls(**kwargs)
    fast = fast_cls(**kwargs)  # different random weights until loaded
    assert not torch.equal(fast.weight_hh_l0, ref.weight_hh_l0)
    fast.load_state_dict(ref.state_dict())  # torch.nn -> fastrnn
    assert_results_close(run(fast, inputs)[:2], run(ref, inputs)[:2], F64)

    fast2 = fast_cls(**kwargs)
    with torch.no_grad():
        for p in fast2.parameters():
            p.uniform_(-0.5, 0.5)
    ref2 = torch_cls(**kwargs)
    ref2.load_state_dict(fast2.state_dict())  # fastrnn -> torch.nn
    for key, value in fast2.state_dict().items():
        assert torch.equal(ref2.state_dict()[key], value), key
    assert_results_close(run(fast2, inputs)[:2], run(ref2, inputs)[:2], F64)


def test_load_state_dict_strict_errors_like_torch_nn():
    ref, fast = make_pair(Case("LSTM-proj", layers=2))
    wrong = {k: v for k, v in ref.state_dict().items() if k != "weight_hr_l1"}
    for module in (ref, fast):
        with pytest.raises(RuntimeError, match="weight_hr_l1"):
            module.load_state_dict(wrong)


# --- constructor validation --------------------------------------------------------------

BAD_ARGS = {
    "dropout=2": ("LSTM", dict(dropout=2)),
    "dropout=-1": ("GRU", dict(dropout=-1)),
    "dropout=True": ("RNN-tanh", dict(dropout=True)),
    "dropout=str": ("LSTM", dict(dropout="0.1")),
    "proj_size<0": ("LSTM", dict(proj_size=-1)),
    "proj_size=hidden": ("LSTM", dict(proj_size=5)),
    "proj_size>hidden": ("LSTM", dict(proj_size=6)),
    "proj_size-on-GRU": ("GRU", dict(proj_size=2)),
    "proj_size-on-RNN": ("RNN-tanh", dict(proj_size=2)),
    "nonlinearity=foo": ("RNN-tanh", dict(nonlinearity="foo")),
    "hidden_size=0": ("LSTM", dict(hidden_size=0)),
    "input_size=0": ("GRU", dict(input_size=0)),
    "num_layers=0": ("GRU", dict(num_layers=0)),
    "input_size=float": ("LSTM", dict(input_size=4.0)),
    "hidden_size=float": ("RNN-relu", dict(hidden_size=5.0)),
    "bias=str": ("GRU", dict(bias="yes")),
    "batch_first=int": ("LSTM", dict(batch_first=1)),
}


@pytest.mark.parametrize("name", list(BAD_ARGS))
def test_constructor_rejects_like_torch_nn(name):
    cell, bad = BAD_ARGS[name]
    torch_cls, fast_cls, extra = CELLS[cell]
    kwargs = {"input_size": 4, "hidden_size": 5, "num_layers": 2, **extra, **bad}
    with pytest.raises((ValueError, TypeError)) as ref_error:
        torch_cls(**kwargs)
    with pytest.raises(type(ref_error.value)) as fast_error:
        fast_cls(**kwargs)
    assert type(fast_error.value) is type(ref_error.value)
    assert str(fast_error.value) == str(ref_error.value)


def test_constructor_warns_like_torch_nn_for_dropout_with_one_layer():
    with pytest.warns(UserWarning, match="dropout"):
        fastrnn.GRU(3, 4, num_layers=1, dropout=0.5)
