"""torch.compile(fullgraph=True) traces fastrnn's modules (dense, batch_first, packed) into one
graph, matches torch.nn (outputs, states, every gradient), and new sequence lengths and batch
sizes reuse the graph (dynamic=True) instead of recompiling.

Dynamo refuses every instance of torch.nn.LSTM/GRU/RNN, subclasses included, unless
torch._dynamo.config.allow_rnn is set; fastrnn's modules subclass their torch.nn twins, so a
user sets it (see README). fastrnn.LSTM's forward itself has no graph break.
"""

import dataclasses

import pytest
import torch
import torch._dynamo
from torch._dynamo.testing import CompileCounterWithBackend

from helpers.cases import Case
from helpers.compare import assert_results_close, assert_same_packing
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import run
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state", "dynamo")

F64 = torch.float64


# (steps, batch, lengths) per call: the first call compiles, the others must reuse the graph.
# The first call's steps and batch differ from every feature size (input 4, hidden 5,
# projection 3, layers x directions): dynamo gives equal sizes one symbol, so a batch equal to
# input_size would be specialised with it.
DENSE_SHAPES = [(7, 6, None), (9, 2, None), (3, 8, None)]
PACKED_SHAPES = [(7, 6, (7, 6, 6, 3, 2, 2)), (6, 3, (6, 6, 2)), (4, 5, (4, 3, 2, 2, 1))]

CASES = [
    Case("LSTM", True, 1, False, True, "dense", False),
    Case("LSTM-proj", True, 2, True, False, "dense", True),
    Case("GRU", False, 1, False, True, "dense", True),
    Case("RNN-relu", True, 1, True, False, "dense", False),
    Case("LSTM-proj", True, 1, True, False, "packed_sorted", False),
    Case("GRU", True, 1, False, True, "packed_unsorted", True),
    Case("RNN-tanh", True, 2, False, False, "packed_sorted", True),
]


def shaped(case, steps, batch, lengths):
    return dataclasses.replace(case, steps=steps, batch=batch, lengths=lengths)


def check_compiled_matches_torch_nn(case, backend, device="cpu"):
    ref, fast = make_pair(case)
    ref, fast = ref.to(device), fast.to(device)
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(fast, fullgraph=True, dynamic=True, backend=counter)
    shapes = PACKED_SHAPES if case.kind.startswith("packed") else DENSE_SHAPES
    for call, shape in enumerate(shapes):
        inputs = make_inputs(shaped(case, *shape), device=device)
        with torch._dynamo.config.patch(error_on_recompile=call > 0):
            outs, grads, result = run(compiled, inputs)
        got = outs, {name.removeprefix("_orig_mod."): g for name, g in grads.items()}, result
        want = run(ref, inputs)
        assert_results_close(got[:2], want[:2], F64, f"compiled vs torch.nn, shape {shape}")
        assert_same_packing(got[2], want[2])
        if call == 0:
            frames = counter.frame_count
    assert counter.frame_count == frames, "a new shape recompiled"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_compiled_fullgraph_matches_torch_nn_without_recompiling(case, device):
    check_compiled_matches_torch_nn(case, "aot_eager", device)


@pytest.mark.parametrize("case", [Case("LSTM", True, 1, False, True, "dense", True)],
                         ids=lambda c: c.id)
def test_inductor(case):
    check_compiled_matches_torch_nn(case, "inductor")


def test_in_a_larger_model():
    """A model around the layer (embedding-free: linear in, packed LSTM, linear out) compiles
    as one graph and trains like its eager self."""
    torch.manual_seed(0)

    class Model(torch.nn.Module):
        def __init__(self, rnn_cls):
            super().__init__()
            self.inp = torch.nn.Linear(3, 4, dtype=F64)
            self.rnn = rnn_cls(4, 5, num_layers=2, batch_first=True, dtype=F64)
            self.out = torch.nn.Linear(5, 2, dtype=F64)

        def forward(self, x):
            y, (h, c) = self.rnn(torch.tanh(self.inp(x)))
            return self.out(y).sum(1) + h[-1].sum()

    import fastrnn
    eager = Model(torch.nn.LSTM)
    model = Model(fastrnn.LSTM)
    model.load_state_dict(eager.state_dict())
    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    opt_eager = torch.optim.SGD(eager.parameters(), lr=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for steps, batch in [(5, 3), (7, 2), (4, 4)]:
        x = torch.randn(batch, steps, 3, dtype=F64)
        for m, o in ((eager, opt_eager), (compiled, opt)):
            o.zero_grad()
            m(x).pow(2).mean().backward()
            o.step()
    for a, b in zip(model.parameters(), eager.parameters()):
        torch.testing.assert_close(a, b, **atol_rtol(F64))


def test_packed_zeros_op():
    """The op giving a sorted packed batch its zero state: schema, fake kernel (a
    data-dependent batch) and real kernel agree."""
    args = (torch.tensor([3, 2, 2, 1]), 2, 4, torch.float32, torch.device("cpu"))
    torch.library.opcheck(torch.ops.fastrnn.packed_zeros.default, args)
    assert torch.equal(torch.ops.fastrnn.packed_zeros(*args), torch.zeros(2, 3, 4))


def test_dynamo_refuses_torch_nn_subclasses_without_allow_rnn():
    """The one setting fastrnn needs, and why: without it dynamo stops at the module (an
    instance of torch.nn.LSTM), before fastrnn's forward runs. If a torch release lifts
    this, this test fails and the README's instruction can go."""
    import fastrnn
    compiled = torch.compile(fastrnn.GRU(3, 4), fullgraph=True, backend="eager")
    with torch._dynamo.config.patch(allow_rnn=False):
        with pytest.raises(torch._dynamo.exc.Unsupported, match="RNN, GRU, or LSTM"):
            compiled(torch.randn(5, 2, 3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_compiled_under_autocast(cell, device):
    """The autocast rules (which library torch.nn would take) trace as constants: one graph,
    the same results and dtypes as eager fastrnn."""
    import fastrnn
    torch.manual_seed(0)
    module = getattr(fastrnn, cell)(4, 5).to(device)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    x = torch.randn(6, 3, 4, device=device)
    with torch.autocast(device, dtype=torch.bfloat16):
        want, got = module(x), compiled(x)
    for a, b in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b)
