"""The hand-off of a loop's gradients from step to step (csrc/grad_sums_hand_off.h): a cell
call whose h came from a call with the same weights leaves that call its gradients w.r.t.
the weights, and the earlier call adds its own to them; and a call whose h is an earlier
call's h_new leaves that call its gradient w.r.t. h, which the earlier call adds to h_new's
other gradients. The gradients must be those autograd forms when it adds them itself: bit
for bit where the adds come in the same order (the reference runs each h through `h * 1`, a
node between the steps that stops the hand-off and changes no bit), and right whatever part
of the graph a backward runs and whatever watches it."""

import threading

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.checkpoint import checkpoint

import fastrnn
from helpers.cases import HIDDEN
from helpers.cells import CELLS, CellCase, flatten_state, make_cell_inputs, make_cell_pair
from helpers.compare import assert_close
from helpers.running import weighted_loss

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64
STEPS = 5
BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]
DTYPES = [pytest.param(d, id=str(d).split(".")[1])
          for d in (torch.float32, torch.float64, torch.bfloat16)]


def handed_off(h):
    return h


def kept(h):
    """A node between two steps: the later step's h no longer comes from the earlier step."""
    return h * 1


def unroll(cell, xs, hx, between=handed_off):
    """cell along xs, `between` applied to h before each step: every step's h stacked, then
    the final state's parts."""
    hs = []
    for x in xs:
        hx = cell(x, between_steps(hx, between))
        hs.append(flatten_state(hx)[0])
    return [torch.stack(hs)] + flatten_state(hx)


def between_steps(hx, between):
    """hx with `between` applied to its h (None as it is)."""
    if hx is None:
        return None
    parts = flatten_state(hx)
    return (between(parts[0]), parts[1]) if len(parts) == 2 else between(parts[0])


def loop_gradients(cell, inputs, between=handed_off):
    """Gradients of weighted_loss of unroll() w.r.t. the inputs and every parameter."""
    leaves = inputs.fresh()
    outs = unroll(cell, *leaves.args(), between)
    return torch.autograd.grad(weighted_loss(outs), leaves.leaves() + list(cell.parameters()))


def assert_equal(got, want):
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want)):
        assert torch.equal(a, b), f"gradient {k} differs: {(a - b).abs().max()}"


def setup(cell, dtype=F64, batch=3, bias=True):
    case = CellCase(cell, bias=bias, batch=batch)
    _, fast = make_cell_pair(case, dtype)
    return fast, make_cell_inputs(case, dtype, steps=STEPS)


@pytest.mark.parametrize("batch", [3, 40])  # the step's own products; more rows than they take
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_loop_gradients_bit_for_bit(cell, bias, dtype, batch):
    fast, inputs = setup(cell, dtype, batch, bias)
    assert_equal(loop_gradients(fast, inputs), loop_gradients(fast, inputs, kept))


def weight_adds(cell, inputs, between):
    """How many adds of tensors shaped like w_hh a loop's backward makes."""
    shape = list(cell.weight_hh.shape)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                record_shapes=True) as prof:
        loop_gradients(cell, inputs, between)
    return sum(1 for e in prof.events() if e.name in ("aten::add", "aten::add_")
               and e.input_shapes and list(e.input_shapes[0]) == shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", list(CELLS))
def test_loop_backward_adds_no_weight_gradients(cell, dtype):
    """The point of the hand-off: autograd no longer adds the steps' gradients (where the
    step's own products do not form them, the op adds them itself)."""
    fast, inputs = setup(cell, dtype)
    assert weight_adds(fast, inputs, kept) == STEPS - 1
    assert weight_adds(fast, inputs, handed_off) == (STEPS - 1 if dtype == torch.bfloat16 else 0)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN_TANH"])
def test_layer_steps_bit_for_bit(cell):
    """A layer called one time step at a time runs the same op."""
    cls = {"LSTM": fastrnn.LSTM, "GRU": fastrnn.GRU, "RNN_TANH": fastrnn.RNN}[cell]
    torch.manual_seed(0)
    layer = cls(4, 5, dtype=F64)
    xs = torch.randn(STEPS, 1, 3, 4, dtype=F64)

    def gradients(between):
        state = None
        outs = []
        for x in xs:
            if state is not None:
                state = tuple(map(between, state)) if cell == "LSTM" else between(state)
            out, state = layer(x, state)
            outs.append(out)
        return torch.autograd.grad(weighted_loss(outs), list(layer.parameters()))

    assert_equal(gradients(handed_off), gradients(kept))


@pytest.mark.parametrize("cell", list(CELLS))
def test_backward_of_part_of_the_graph(cell):
    """A backward that runs only the steps after an intermediate state, and one that wants
    one weight's gradient alone."""
    fast, inputs = setup(cell)
    for between in (handed_off, kept):
        xs, hx = inputs.fresh().args()
        states = []
        for x in xs:
            hx = fast(x, between_steps(hx, between))
            states.append(flatten_state(hx)[0])
        middle = states[2]
        loss = weighted_loss(states[3:])
        results = torch.autograd.grad(loss, [middle], retain_graph=True)
        w_hh = fast.weight_hh
        w_hh.grad = None
        loss.backward(inputs=[w_hh])
        if between is handed_off:
            got = [*results, w_hh.grad]
        else:
            assert_equal(got, [*results, w_hh.grad])


@pytest.mark.parametrize("cell", list(CELLS))
def test_retain_graph_backward_twice(cell):
    fast, inputs = setup(cell)
    grads = []
    for between in (handed_off, kept):
        fast.zero_grad(set_to_none=True)
        loss = weighted_loss(unroll(fast, *inputs.fresh().args(), between))
        loss.backward(retain_graph=True)
        loss.backward()
        grads.append([p.grad for p in fast.parameters()])
    assert_equal(*grads)


@pytest.mark.parametrize("cell", list(CELLS))
def test_state_used_by_two_steps(cell):
    """Two steps with the same weights read one state: one of them hands its gradients
    on, the other returns them. Against torch.nn (the adds come in another order)."""
    ref, fast = make_cell_pair(CellCase(cell))
    inputs = make_cell_inputs(CellCase(cell), steps=3)

    def gradients(module):
        leaves = inputs.fresh()
        x, hx = leaves.args()
        first = module(x[0], hx)
        outs = flatten_state(module(x[1], first)) + flatten_state(module(x[2], first))
        return torch.autograd.grad(weighted_loss(outs),
                                   leaves.leaves() + list(module.parameters()))

    for k, (a, b) in enumerate(zip(gradients(fast), gradients(ref))):
        assert_close(a, b, F64, f"gradient {k}")


@pytest.mark.parametrize("cell", list(CELLS))
def test_two_cells_stacked(cell):
    """Each step of a two-cell stack hands off to the same cell's previous step."""
    lower, inputs = setup(cell)
    _, upper = make_cell_pair(CellCase(cell, input_size=HIDDEN), seed=1)
    both = torch.nn.ModuleList([lower, upper])

    def gradients(between):
        leaves = inputs.fresh()
        xs, low = leaves.args()
        high = None
        outs = []
        for x in xs:
            low = lower(x, between_steps(low, between))
            high = upper(flatten_state(low)[0], between_steps(high, between))
            outs.append(flatten_state(high)[0])
        return torch.autograd.grad(weighted_loss(outs), leaves.leaves() + list(both.parameters()))

    assert_equal(gradients(handed_off), gradients(kept))


@pytest.mark.parametrize("cell", list(CELLS))
def test_weight_hook_sees_the_sum_once(cell):
    fast, inputs = setup(cell)
    seen = {}
    for between in (handed_off, kept):
        calls = []
        handle = fast.weight_ih.register_hook(lambda g: calls.append(g.clone()))
        loop_gradients(fast, inputs, between)
        handle.remove()
        seen[between] = calls
    assert len(seen[handed_off]) == 1
    assert_equal(seen[handed_off], seen[kept])


def step_states(cell, inputs, between):
    """Each step's h of a loop (the leaves fresh), for hooks on the steps' nodes."""
    xs, hx = inputs.fresh().args()
    states = []
    for x in xs:
        hx = cell(x, between_steps(hx, between))
        states.append(flatten_state(hx)[0])
    return states


@pytest.mark.parametrize("cell", list(CELLS))
def test_backward_within_backward(cell):
    """A hook on one step's node runs a backward of its own through the same graph while
    the outer backward's sums wait at that node: each backward keeps its own."""
    fast, inputs = setup(cell)
    grads = {}
    for between in (handed_off, kept):
        fast.zero_grad(set_to_none=True)
        states = step_states(fast, inputs, between)
        inner = []

        def pre_hook(grad_outputs):
            if inner:  # the inner backward runs this node too
                return
            inner.append(None)
            with torch.enable_grad():
                inner[0] = torch.autograd.grad(states[1].sum(), list(fast.parameters()),
                                               retain_graph=True)

        states[1].grad_fn.register_prehook(pre_hook)
        weighted_loss(states).backward()
        grads[between] = [*inner[0], *(p.grad for p in fast.parameters())]
    assert_equal(grads[handed_off], grads[kept])


@pytest.mark.parametrize("cell", list(CELLS))
def test_hooks_on_step_nodes(cell):
    """A hook on what a step's node returns sees that step's weight gradients alone, and
    what it changes changes that step's alone."""
    fast, inputs = setup(cell)
    weights = range(3, 7 if fast.bias else 5)  # w_ih, w_hh (b_ih, b_hh) among the op's inputs
    results = {}
    for between in (handed_off, kept):
        fast.zero_grad(set_to_none=True)
        states = step_states(fast, inputs, between)
        seen = []
        drop = lambda grad_in, grad_out: tuple(None if k in weights else g
                                               for k, g in enumerate(grad_in))
        states[0].grad_fn.register_hook(drop)
        states[2].grad_fn.register_hook(lambda grad_in, grad_out: seen.append(grad_in[4]))
        weighted_loss(states).backward()
        results[between] = [seen[0], *(p.grad for p in fast.parameters())]
    assert_equal(results[handed_off], results[kept])


def state_adds(cell, inputs, between):
    """How many adds of tensors shaped like a state ([B, H]) a loop's backward makes."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                record_shapes=True) as prof:
        loop_gradients(cell, inputs, between)
    shape = [inputs.fresh().args()[0].shape[1], cell.hidden_size]  # x: [T, B, I]
    return sum(1 for e in prof.events() if e.name == "aten::add"
               and e.input_shapes and list(e.input_shapes[0]) == shape)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", list(CELLS))
def test_loop_backward_adds_no_state_gradients(cell, dtype):
    """Each step's h_new has two gradients, its output's and the next step's: autograd no
    longer adds them in a new tensor (the op adds them where it reads them; a 16-bit dtype's
    are added at the step, rounded as autograd rounds them)."""
    fast, inputs = setup(cell, dtype)
    kept_adds = state_adds(fast, inputs, kept)
    assert kept_adds >= STEPS - 1
    removed = 0 if dtype == torch.bfloat16 else STEPS - 1
    assert state_adds(fast, inputs, handed_off) == kept_adds - removed


def watch_with_hook(state, seen):
    state.register_hook(lambda g: seen.append(g.clone()))


def watch_with_retain_grad(state, seen):
    state.retain_grad()
    seen.append(state)  # its .grad is read after backward


def watch_with_node_prehook(state, seen):
    state.grad_fn.register_prehook(lambda grads: seen.append(grads[1].clone()))


@pytest.mark.parametrize("watch", [watch_with_hook, watch_with_retain_grad,
                                   watch_with_node_prehook], ids=lambda f: f.__name__[11:])
@pytest.mark.parametrize("cell", list(CELLS))
def test_watched_state_sees_its_whole_gradient(cell, watch):
    """A hook on a step's h_new, its retain_grad, or a pre-hook on its node: what they see
    is h_new's whole gradient (the hand-off of that step's state stops)."""
    fast, inputs = setup(cell)
    results = {}
    for between in (handed_off, kept):
        fast.zero_grad(set_to_none=True)
        states = step_states(fast, inputs, between)
        seen = []
        watch(states[2], seen)
        weighted_loss(states).backward()
        grad = seen[0].grad if watch is watch_with_retain_grad else seen[0]
        results[between] = [grad, *(p.grad for p in fast.parameters())]
    assert_equal(results[handed_off], results[kept])


@pytest.mark.parametrize("cell", list(CELLS))
def test_captured_state_gradient(cell):
    """torch.autograd.grad w.r.t. a step's h_new and the weights at once: h_new's whole
    gradient."""
    fast, inputs = setup(cell)
    results = {}
    for between in (handed_off, kept):
        states = step_states(fast, inputs, between)
        results[between] = torch.autograd.grad(weighted_loss(states),
                                               [states[2], *fast.parameters()])
    assert_equal(results[handed_off], results[kept])


def test_anomaly_mode():
    fast, inputs = setup("LSTMCell")
    with torch.autograd.detect_anomaly():
        got = loop_gradients(fast, inputs)
    assert_equal(got, loop_gradients(fast, inputs, kept))


class PassThrough(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("cell", list(CELLS))
def test_dispatch_mode_during_backward(cell):
    """Under a dispatch mode backward runs the op through the dispatcher, adding the sums
    it is left itself."""
    fast, inputs = setup(cell, torch.float32)
    leaves = inputs.fresh()
    loss = weighted_loss(unroll(fast, *leaves.args()))
    with PassThrough():
        got = torch.autograd.grad(loss, leaves.leaves() + list(fast.parameters()))
    assert_equal(got, loop_gradients(fast, inputs, kept))


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non_reentrant"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_checkpoint_of_steps(cell, reentrant):
    """Steps in a checkpoint: recomputed in backward (non-reentrant: the graph's own nodes
    run; reentrant: a backward within the backward)."""
    fast, inputs = setup(cell)

    def gradients(between):
        leaves = inputs.fresh()
        xs, hx = leaves.args()
        # The state's parts as arguments, the results as a tuple: a reentrant checkpoint
        # differentiates those alone.
        def first_steps(xs, *parts):
            return tuple(unroll(fast, xs[:3], parts if len(parts) == 2 else parts[0], between))

        outs = list(checkpoint(first_steps, xs, *flatten_state(hx), use_reentrant=reentrant))
        outs += unroll(fast, xs[3:], tuple(outs[1:]) if len(outs) == 3 else outs[1], between)
        fast.zero_grad(set_to_none=True)
        weighted_loss(outs).backward()  # a reentrant checkpoint takes no autograd.grad
        return [t.grad for t in leaves.leaves() + list(fast.parameters())]

    got, want = gradients(handed_off), gradients(kept)
    if reentrant:
        assert_equal(got, want)
    else:  # the first steps' last h has three gradients (its own term of the loss, the
        # next step's, the first steps' stack's); that stack is older than the next step, so
        # autograd brings its term after the next step's, which the hand-off adds last: the
        # same terms in another order
        for k, (a, b) in enumerate(zip(got, want)):
            assert_close(a, b, F64, f"gradient {k}")


@pytest.mark.parametrize("cell", list(CELLS))
def test_create_graph(cell):
    """A backward that records a graph hands nothing off."""
    fast, inputs = setup(cell)
    leaves = inputs.fresh()
    loss = weighted_loss(unroll(fast, *leaves.args()))
    got = torch.autograd.grad(loss, list(fast.parameters()), create_graph=True)
    assert_equal([g.detach() for g in got], loop_gradients(fast, inputs, kept)[-len(got):])


def test_loops_in_two_threads():
    """Two backward passes at once, each over its own cell's loop."""
    fast, inputs = setup("LSTMCell", torch.float32, batch=8)
    other, _ = setup("LSTMCell", torch.float32, batch=8)
    want = [loop_gradients(m, inputs) for m in (fast, other)]
    got = [None, None]

    def run(k, module):
        got[k] = [loop_gradients(module, inputs) for _ in range(20)]

    threads = [threading.Thread(target=run, args=(k, m)) for k, m in enumerate((fast, other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        for grads in got[k]:
            assert_equal(grads, want[k])
