"""What the modules do with their inputs: forward and backward never modify them (values,
storage, version counter, packing; a single step included), and non-contiguous inputs,
states and weights give the results of contiguous ones."""

import pytest
import torch
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from helpers.cases import CELLS, KINDS, Case
from helpers.compare import assert_close
from helpers.inputs import Inputs, make_inputs
from helpers.modules import make_pair
from helpers.running import flatten_result, run, weighted_loss

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64


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


# A single step of a batch of one (T = 1, B = 1), which the layers run through the cells'
# single-step op, dense and unbatched.
ONE_STEP = [Case(cell, True, 1, False, False, kind, hx, steps=1, batch=1)
            for cell in CELLS for kind in ("dense", "unbatched") for hx in (True, False)]


@pytest.mark.parametrize("case", ONE_STEP, ids=[c.id for c in ONE_STEP])
def test_one_step_leaves_inputs_and_weights_as_they_were(case):
    """Two calls on the same input give the same result, and neither changes the input, the
    state or a parameter."""
    _, fast = make_pair(case)
    leaves = make_inputs(case).fresh()
    inp, hx = leaves.args()
    tensors = [inp, *(hx if isinstance(hx, tuple) else [hx]), *fast.parameters()]
    tensors = [t for t in tensors if t is not None]
    before = [t.detach().clone() for t in tensors]
    first = flatten_result(fast(inp, hx))
    weighted_loss(first).backward()
    second = flatten_result(fast(inp, hx))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    for t, value in zip(tensors, before):
        assert torch.equal(t, value)


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


@pytest.mark.parametrize("kind", ["dense", "packed_unsorted", "unbatched"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_inputs_untouched(cell, kind):
    """Forward and backward leave every input's values, storage and version counter as they
    were (and batch_sizes and the permutation indices of a packed input)."""
    case = Case(cell, True, 2, True, True, kind, True)
    _, fast = make_pair(case)
    leaves = make_inputs(case).fresh()
    inp, hx = leaves.args()
    tensors = [*(list(inp) if isinstance(inp, PackedSequence) else [inp]),
               *(hx if isinstance(hx, tuple) else [hx]), *fast.parameters()]
    tensors = [t for t in tensors if t is not None]
    before = [(t.detach().clone(), t.data_ptr(), t._version) for t in tensors]
    weighted_loss(flatten_result(fast(inp, hx))).backward()
    for t, (value, pointer, version) in zip(tensors, before):
        assert torch.equal(t, value) and t.data_ptr() == pointer and t._version == version


@pytest.mark.parametrize("steps", [1, 3], ids=["T1", "T3"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_results_are_tensors_of_their_own(cell, steps):
    """output, h_n and c_n share no memory (one layer, one direction, where h_n is a view of
    the op's state rather than a copy): changing one in place leaves the others as they
    were, as with torch.nn."""
    case = Case(cell, True, 1, False, False, "dense", True, steps=steps)
    _, fast = make_pair(case)
    with torch.no_grad():
        results = flatten_result(fast(*make_inputs(case).fresh(requires_grad=False).args()))
        before = [t.clone() for t in results]
        for k, t in enumerate(results):
            t.add_(1.0)
            for j, other in enumerate(results):
                if j != k:
                    assert torch.equal(other, before[j]), (k, j)
            t.copy_(before[k])


# The forms of a call that the modules check with a few comparisons (modules.py:
# _checked_dense_states) and forms that take the general path: both give the same results.
COMMON_CALLS = [Case(cell, True, layers, bidirectional, batch_first, "dense", hx, steps=steps)
                for cell in CELLS for hx in (True, False) for steps in (1, 3)
                for layers, bidirectional, batch_first in ((1, False, False), (2, True, True))]


@pytest.mark.parametrize("case", COMMON_CALLS, ids=[f"{c.id}-T{c.steps}" for c in COMMON_CALLS])
def test_checked_and_general_paths_agree(case, monkeypatch):
    _, fast = make_pair(case)
    inputs = make_inputs(case)
    outs, grads, _ = run(fast, inputs)
    monkeypatch.setattr(type(fast), "_checked_dense_states", lambda *args: None)
    general_outs, general_grads, _ = run(fast, inputs)
    for a, b in zip(outs, general_outs):
        assert torch.equal(a, b)
    for name in grads:
        assert torch.equal(grads[name], general_grads[name]), name


@pytest.mark.parametrize("cell", list(CELLS))
def test_a_call_after_inference_mode_trains(cell):
    """A call under torch.inference_mode and a later one with autograd on the same shape
    (whose batch_sizes the modules reuse) both work, with the same output."""
    case = Case(cell, True, 1, False, False, "dense", False)
    _, fast = make_pair(case)
    x = make_inputs(case).x
    with torch.inference_mode():
        want = flatten_result(fast(x))
    outs = flatten_result(fast(x.detach().clone().requires_grad_()))
    weighted_loss(outs).backward()
    for a, b in zip(outs, want):
        assert torch.equal(a.detach(), b)


def test_calls_after_fake_mode_and_default_device_are_unaffected():
    """A call under FakeTensorMode, or under another default device, leaves later calls'
    (reused) batch_sizes a plain CPU tensor: their results are real tensors, as before."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    case = Case("GRU", True, 1, False, False, "dense", False)
    ref, fast = make_pair(case)
    x = make_inputs(case).x.detach()
    want = flatten_result(ref(x))
    for context in (FakeTensorMode(allow_non_fake_inputs=True), torch.device("meta")):
        fast(x[:1])  # another shape first: the next call makes its batch_sizes anew
        with context:
            fast(x)
        for got, expected in zip(flatten_result(fast(x)), want):
            assert type(got) is torch.Tensor
            assert_close(got, expected, torch.float64)
