"""The cells under torch.compile and under autocast.

torch.compile(fullgraph=True) of a Python loop over a cell traces into one graph that calls
fastrnn's op at each step, and matches eager (fastrnn's and torch.nn's), results and every
gradient; unlike the layers, the cells need no torch._dynamo.config.allow_rnn. Under
torch.autocast("cpu") a cell returns the dtypes torch.nn's cell returns, for every cell and
hx dtype, with values close to torch.nn's ("autocast" in the tolerance table)."""

import pytest
import torch
import torch._dynamo

import fastrnn
from helpers.cells import (CELLS, CellCase, CellInputs, assert_cell_results_close, call, ids,
                           make_cell_inputs, make_cell_pair, run_cell, unroll)
from helpers.compare import assert_close

pytestmark = pytest.mark.usefixtures("torch_state")

F32, F64, BF16, F16 = torch.float32, torch.float64, torch.bfloat16, torch.float16
STEPS = 5


def recording_backend(graphs, backend="aot_eager"):
    """A torch.compile backend that keeps each graph dynamo hands it, then compiles it with
    `backend`."""
    def compile_graph(gm, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend(backend)(gm, example_inputs)
    return compile_graph


def cell_op_calls(graph):
    op = torch.ops.fastrnn.cell_forward
    return sum(node.target in (op, op.default) for node in graph.graph.nodes)


COMPILE_CASES = [CellCase("LSTMCell", True, True, True), CellCase("GRUCell", False, True, False),
                 CellCase("RNNCell-tanh", True, False, True),
                 CellCase("RNNCell-relu", True, True, False)]


@pytest.mark.usefixtures("dynamo")
@pytest.mark.parametrize("case", COMPILE_CASES, ids=ids(COMPILE_CASES))
def test_compiled_loop_matches_eager(case):
    """x: [5, (B,) I]: one graph with the op at each of the 5 steps; every step's h, the final
    state and every gradient equal eager fastrnn's (the same computation) and torch.nn's."""
    ref, fast = make_cell_pair(case)
    graphs = []
    compiled = torch.compile(unroll, fullgraph=True, backend=recording_backend(graphs))
    inputs = make_cell_inputs(case, steps=STEPS)
    got = run_cell(fast, inputs, compiled)
    assert len(graphs) == 1 and cell_op_calls(graphs[0]) == STEPS
    assert_cell_results_close(got, run_cell(fast, inputs, unroll), F64, "compiled vs eager",
                              kind="same_computation")
    assert_cell_results_close(got, run_cell(ref, inputs, unroll), F64, "compiled vs torch.nn")
    run_cell(fast, inputs, compiled)  # the same shapes again: no recompilation
    assert len(graphs) == 1


@pytest.mark.usefixtures("dynamo")
def test_compiled_module_training_steps():
    """A model holding an LSTMCell, compiled whole, trains like torch.nn's model in eager
    mode: three SGD steps, parameters equal."""
    class Model(torch.nn.Module):
        def __init__(self, cell_cls):
            super().__init__()
            self.cell = cell_cls(4, 5, dtype=F64)
            self.out = torch.nn.Linear(5, 2, dtype=F64)

        def forward(self, xs):  # xs: [T, B, 4] -> [B, 2]
            state = None
            for x in xs:
                state = self.cell(x, state)
            return self.out(state[0] * state[1])

    torch.manual_seed(0)
    eager = Model(torch.nn.LSTMCell)
    model = Model(fastrnn.LSTMCell)
    model.load_state_dict(eager.state_dict())
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (eager, model)]
    for _ in range(3):
        xs = torch.randn(STEPS, 3, 4, dtype=F64)
        for m, opt in zip((eager, compiled), opts):
            opt.zero_grad()
            m(xs).pow(2).mean().backward()
            opt.step()
    for a, b in zip(model.parameters(), eager.parameters()):
        assert_close(a, b, F64)


# --- autocast on the CPU ------------------------------------------------------------------

# (input dtype, hx dtype; None: no hx, the zero state takes the input's dtype); "low" is the
# autocast dtype
VARIANTS = [("f32", None), ("f32", "f32"), ("f32", "low"), ("low", None), ("low", "f32")]


@pytest.mark.parametrize("x_dtype,hx_dtype", VARIANTS,
                         ids=[f"x_{x}-hx_{h}" for x, h in VARIANTS])
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_autocast_dtypes_and_values_match_torch_nn(cell, dtype, x_dtype, hx_dtype):
    """Float32 cells under torch.autocast("cpu", dtype): the new state's dtypes equal
    torch.nn's, its values and every gradient's (backward after autocast, as autocast's
    documentation asks) are close to torch.nn's, and the gradients have the dtypes of the
    tensors they belong to, as torch.nn's do."""
    case = CellCase(cell, True, True, hx_dtype is not None)
    ref, fast = make_cell_pair(case, F32)
    named = {"f32": F32, "low": dtype, None: None}
    base = make_cell_inputs(case, F32)
    inputs = CellInputs(case, base.x.to(named[x_dtype]),
                        *[None if t is None else t.to(named[hx_dtype])
                          for t in (base.h0, base.c0)])

    def forward(module, x, hx):
        with torch.autocast("cpu", dtype=dtype):
            return call(module, x, hx)

    got_outs, got_grads = run_cell(fast, inputs, forward)
    want_outs, want_grads = run_cell(ref, inputs, forward)
    assert [t.dtype for t in got_outs] == [t.dtype for t in want_outs]
    assert list(got_grads) == list(want_grads)
    for a, b in zip(got_outs, want_outs):
        assert_close(a.float(), b.float(), dtype, "autocast result", kind="autocast")
    for name in want_grads:
        assert got_grads[name].dtype == want_grads[name].dtype, name
        assert_close(got_grads[name].float(), want_grads[name].float(), dtype,
                     f"autocast grad of {name}", kind="autocast")


@pytest.mark.parametrize("cell", ["LSTMCell", "GRUCell"])
def test_autocast_loop_keeps_torch_nn_dtypes(cell):
    """Ten steps under autocast, each taking the state the last one returned (in the dtype
    it returned): every step's h (stacked) and the final state have torch.nn's dtypes and
    values close to torch.nn's."""
    case = CellCase(cell, hx=False)
    ref, fast = make_cell_pair(case, F32)
    xs = make_cell_inputs(case, F32, steps=10).x
    with torch.autocast("cpu", dtype=BF16):
        want, got = [unroll(module, xs, None) for module in (ref, fast)]
    assert [t.dtype for t in got] == [t.dtype for t in want]
    for a, b in zip(got, want):
        assert_close(a.float(), b.float(), BF16, "autocast loop", kind="autocast")
