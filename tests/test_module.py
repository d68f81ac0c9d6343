"""The modules as torch.nn drop-ins: construction, parameters and state_dict, serialization,
dropout, determinism, parametrizations, functional_call, devices and dtypes."""

import copy
import dataclasses
import io
import pickle
import re

import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence

import fastrnn
from helpers.cases import CELLS, KINDS, Case
from helpers.compare import assert_close, assert_results_close
from helpers.devices import DEVICES
from helpers.inputs import Inputs, make_inputs
from helpers.modules import make_pair, module_kwargs
from helpers.parity import check_low_precision
from helpers.reference_module import ReferenceModule
from helpers.running import flatten_result, run, weighted_loss

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


# --- inputs are never modified ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_inputs_are_not_modified(cell, kind):
    case = Case(cell, True, 2, True, False, kind, True)
    _, fast = make_pair(case)
    inputs = make_inputs(case).fresh()
    inp, hx = inputs.args()
    data = inp.data if kind.startswith("packed") else inp
    hx_list = list(hx) if isinstance(hx, tuple) else [hx]
    before = [t.detach().clone() for t in [data, *hx_list, *fast.parameters()]]
    out = flatten_result(fast(inp, hx))
    weighted_loss(out).backward()
    fast(inp, hx)  # a second call sees the same inputs
    after = [data, *hx_list, *fast.parameters()]
    for a, b in zip(after, before):
        assert torch.equal(a, b)
    if kind.startswith("packed"):
        assert torch.equal(inp.batch_sizes, pack_padded_sequence(
            inputs.x, torch.tensor(case.seq_lengths()), enforce_sorted=False).batch_sizes)


# --- gradients: partial losses, retain_graph, determinism ----------------------------------


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
    wrt = inputs.leaves() + list(fast.parameters())
    first = torch.autograd.grad(loss, wrt, retain_graph=True)
    second = torch.autograd.grad(loss, wrt, retain_graph=True)
    third = torch.autograd.grad(loss, wrt)
    for a, b, c in zip(first, second, third):
        assert torch.equal(a, b) and torch.equal(a, c)


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


# --- dropout ---------------------------------------------------------------------------------


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


# --- copying and serialization ----------------------------------------------------------------


def assert_same_module_behaviour(copy_, original, case):
    assert type(copy_) is type(original)
    inputs = make_inputs(case)
    got, want = run(copy_, inputs), run(original, inputs)
    for a, b in zip(got[0], want[0]):
        assert torch.equal(a, b)
    for name in want[1]:
        assert torch.equal(got[1][name], want[1][name]), name


SERIAL_CASES = [Case("LSTM-proj", True, 2, True, True, "packed_unsorted", True),
                Case("GRU", False, 2, False, False, "dense", True),
                Case("RNN-relu", True, 1, True, True, "dense", False)]


@pytest.mark.parametrize("case", SERIAL_CASES, ids=[c.cell for c in SERIAL_CASES])
def test_deepcopy(case):
    _, fast = make_pair(case)
    clone = copy.deepcopy(fast)
    assert clone.weight_hh_l0.data_ptr() != fast.weight_hh_l0.data_ptr()
    assert_same_module_behaviour(clone, fast, case)
    with torch.no_grad():
        clone.weight_hh_l0.add_(1.0)  # the copy's weights are its own
    assert not torch.equal(run(clone, make_inputs(case))[0][0],
                           run(fast, make_inputs(case))[0][0])


@pytest.mark.parametrize("case", SERIAL_CASES, ids=[c.cell for c in SERIAL_CASES])
def test_pickle(case):
    _, fast = make_pair(case)
    assert_same_module_behaviour(pickle.loads(pickle.dumps(fast)), fast, case)


@pytest.mark.parametrize("case", SERIAL_CASES, ids=[c.cell for c in SERIAL_CASES])
def test_torch_save_load(case):
    _, fast = make_pair(case)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    assert_same_module_behaviour(torch.load(buffer, weights_only=False), fast, case)

    buffer = io.BytesIO()
    torch.save(fast.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    _, fresh = make_pair(case, seed=99)
    fresh.load_state_dict(state)
    assert_same_module_behaviour(fresh, fast, case)


# --- devices and dtypes --------------------------------------------------------------------


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", list(CELLS))
def test_meta_device(cell, batch_first):
    torch_cls, fast_cls, extra = CELLS[cell]
    kwargs = dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True,
                  batch_first=batch_first, **extra)
    fast = fast_cls(**kwargs, device="meta")
    ref = torch_cls(**kwargs)
    assert all(p.device.type == "meta" for p in fast.parameters())
    shape = (3, 6, 4) if batch_first else (6, 3, 4)
    for args in [(torch.randn(shape),), (torch.randn(6, 4),)]:
        meta_args = tuple(a.to("meta") for a in args)
        got = flatten_result(fast(*meta_args))
        want = flatten_result(ref(*args))
        assert [t.shape for t in got] == [t.shape for t in want]
        assert all(t.device.type == "meta" for t in got)


@pytest.mark.parametrize("cell", list(CELLS))
def test_to_float64(cell):
    case = Case(cell, True, 2, True, True, "packed_unsorted", True)
    ref, fast = make_pair(case, torch.float32)
    ref, fast = ref.to(F64), fast.to(F64)
    assert all(p.dtype == F64 for p in fast.parameters())
    inputs = make_inputs(case, F64)
    assert_results_close(run(fast, inputs)[:2], run(ref, inputs)[:2], F64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", list(CELLS))
def test_low_precision_close_to_float64_reference(cell, dtype, device):
    """bf16 and fp16, on the CPU and on CUDA: see check_low_precision."""
    check_low_precision(Case(cell, True, 2, True, False, "packed_unsorted", True), dtype, device)


@pytest.mark.parametrize("cell", list(CELLS))
def test_non_contiguous_inputs_states_and_weights(cell):
    case = Case(cell, True, 2, True, False, "dense", True)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)
    strided = Inputs(case, *[t.detach().clone().transpose(0, -1).contiguous()
                             .transpose(0, -1) if t is not None else None
                             for t in (inputs.x, inputs.h0, inputs.c0)])
    assert not strided.x.is_contiguous() and not strided.h0.is_contiguous()
    want_outs, want_grads, _ = run(ref, inputs)
    # weights with transposed strides (same values), through functional_call
    params = {n: p.detach().t().contiguous().t().requires_grad_() if p.dim() == 2 else
              p.detach()[None].expand(2, -1)[1].requires_grad_()
              for n, p in fast.named_parameters()}
    assert not params["weight_hh_l0"].is_contiguous()
    leaves = strided.fresh()  # clone() keeps the strides
    assert not leaves.x.is_contiguous() and not leaves.h0.is_contiguous()
    outs = flatten_result(functional_call(fast, params, leaves.args()))
    grads = torch.autograd.grad(weighted_loss(outs), leaves.leaves() + list(params.values()))
    for a, b in zip(outs, want_outs):
        assert_close(a, b, F64)
    for a, b in zip(grads, want_grads.values()):
        assert_close(a, b, F64)


# --- parametrizations and functional_call ----------------------------------------------------


@pytest.mark.parametrize("cell", list(CELLS))
def test_weight_norm_parametrization(cell):
    from torch.nn.utils.parametrizations import weight_norm
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    ref, fast = make_pair(case)
    weight_norm(ref, name="weight_hh_l0")
    weight_norm(fast, name="weight_hh_l0")
    assert list(fast.state_dict()) == list(ref.state_dict())
    inputs = make_inputs(case)
    got, want = run(fast, inputs), run(ref, inputs)
    assert "parametrizations.weight_hh_l0.original0" in got[1]
    assert_results_close(got[:2], want[:2], F64)
    # The parametrized weight follows updates of the original parameters.
    for module in (ref, fast):
        with torch.no_grad():
            module.parametrizations.weight_hh_l0.original0.mul_(2.0)
    assert_results_close(run(fast, inputs)[:2], run(ref, inputs)[:2], F64)


@pytest.mark.parametrize("cell", list(CELLS))
def test_functional_call_with_replaced_parameters(cell):
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)
    gen = torch.Generator().manual_seed(4)
    replaced = {name: torch.randn(p.shape, generator=gen, dtype=F64) * 0.3
                for name, p in ref.named_parameters()}
    results = []
    for module in (ref, fast):
        params = {n: v.clone().requires_grad_() for n, v in replaced.items()}
        leaves = inputs.fresh()
        outs = flatten_result(functional_call(module, params, leaves.args()))
        grads = torch.autograd.grad(weighted_loss(outs), list(params.values()))
        results.append((outs, grads))
    (got_outs, got_grads), (want_outs, want_grads) = results[1], results[0]
    for a, b in zip(got_outs, want_outs):
        assert_close(a, b, F64)
    for a, b in zip(got_grads, want_grads):
        assert_close(a, b, F64)
    # The module's own parameters are untouched and used again afterwards.
    assert_results_close(run(fast, inputs)[:2], run(ref, inputs)[:2], F64)
    plain = run(fast, inputs)[0][0]
    assert not torch.allclose(plain, got_outs[0])


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN-tanh"])
def test_double_backward_matches_torch_nn_or_is_refused(cell):
    """Gradient of a gradient (e.g. a gradient penalty), which torch.nn supports on the CPU,
    must either match torch.nn or be refused with a clear error: never silently wrong."""
    case = Case(cell, True, 1, False, False, "dense", True)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)

    def second_order(module):
        leaves = inputs.fresh()
        outs = flatten_result(module(*leaves.args()))
        grad_x, = torch.autograd.grad(weighted_loss(outs), leaves.x, create_graph=True)
        return torch.autograd.grad(grad_x.pow(2).sum(), [leaves.x] + list(module.parameters()))

    want = second_order(ref)
    try:
        got = second_order(fast)
    except (RuntimeError, NotImplementedError) as error:
        assert re.search(r"(?i)double backward|higher.order|second.order|twice",
                         str(error)), f"unclear error for double backward: {error}"
        return
    for a, b in zip(got, want):
        assert_close(a, b, F64, "double backward")
