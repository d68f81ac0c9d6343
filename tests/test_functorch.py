"""torch.func's transforms. Under those that differentiate (grad, vjp, jacrev, jacfwd, jvp,
hessian) fastrnn's LSTM, GRU, RNN and cells run torch.nn's implementation, so they give
torch.nn's results and torch.nn's errors there; the modules with no torch.nn twin refuse
with a clear error; vmap alone runs fastrnn's own ops."""

import pytest
import torch
from torch.func import functional_call

import fastrnn
from fastrnn._transforms import differentiating_transform
from helpers.cases import CELLS as LAYERS
from helpers.cases import Case
from helpers.cells import CELLS, CellCase, flatten_state, make_cell_inputs, make_cell_pair
from helpers.compare import assert_close
from helpers.inputs import make_inputs
from helpers.modules import NO_TWIN, make_pair
from helpers.running import flatten_result, weighted_loss

pytestmark = pytest.mark.usefixtures("torch_state")


def cell_setup(cell):
    """(torch.nn cell, fastrnn cell, x, hx, flatten) in float64, batched, hx given."""
    case = CellCase(cell)
    x, hx = make_cell_inputs(case).args()
    return (*make_cell_pair(case), x, hx, flatten_state)


def layer_setup(cell, steps):
    """(torch.nn layer, fastrnn layer, x, hx, flatten) in float64: one layer, dense,
    batched, hx given, `steps` time steps (one step runs the cell's op)."""
    case = Case(cell, True, 1, False, False, "dense", True, steps=steps)
    x, hx = make_inputs(case).args()
    return (*make_pair(case), x, hx, flatten_result)


SETUPS = ([pytest.param(cell_setup, (cell,), id=cell) for cell in CELLS] +
          [pytest.param(layer_setup, (cell, steps), id=f"{cell}-T{steps}")
           for cell in LAYERS for steps in (1, 3)])


def loss_of(module, hx, flatten):
    """loss(params, x): weighted_loss of module's outputs with its parameters `params`."""
    return lambda params, x: weighted_loss(flatten(functional_call(module, params, (x, hx))))


def parameters(module):
    return {name: p.detach() for name, p in module.named_parameters()}


def assert_all_close(got, want):
    got, want = torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert_close(a, b)


def assert_same_outcome(run, ref, fast):
    """run(ref) and run(fast) give the same results, or raise the same exception type
    (where torch.nn's module has no support for the transform)."""
    outcomes = []
    for module in (ref, fast):
        try:
            outcomes.append(run(module))
        except (NotImplementedError, RuntimeError) as error:
            outcomes.append(type(error))
    if isinstance(outcomes[0], type):
        assert outcomes[1] is outcomes[0]
    else:
        assert_all_close(outcomes[1], outcomes[0])


@pytest.mark.parametrize("setup,args", SETUPS)
def test_grad_as_torch_nn(setup, args):
    """torch.func.grad w.r.t. the parameters and the input, through functional_call."""
    ref, fast, x, hx, flatten = setup(*args)
    grads = [torch.func.grad(loss_of(m, hx, flatten), argnums=(0, 1))(parameters(ref), x)
             for m in (ref, fast)]
    assert_all_close(grads[1], grads[0])


@pytest.mark.parametrize("kind", ["packed_unsorted", "unbatched"])
@pytest.mark.parametrize("cell", LAYERS)
def test_grad_of_stacks_as_torch_nn(cell, kind):
    """torch.func.grad w.r.t. the parameters of 2-layer bidirectional stacks with
    batch_first, on packed input (which torch.nn's layers refuse there) and unbatched."""
    case = Case(cell, True, 2, True, True, kind, True)
    ref, fast = make_pair(case)
    x, hx = make_inputs(case).args()
    loss = lambda m: lambda params: weighted_loss(
        flatten_result(functional_call(m, params, (x, hx))))
    assert_same_outcome(lambda m: torch.func.grad(loss(m))(parameters(ref)), ref, fast)


@pytest.mark.parametrize("setup,args", SETUPS)
def test_jvp_as_torch_nn(setup, args):
    """torch.func.jvp: torch.nn's tangents, or torch.nn's error where it has none (its
    oneDNN LSTM layer)."""
    ref, fast, x, hx, flatten = setup(*args)
    jvp = lambda m: torch.func.jvp(lambda z: flatten(m(z, hx)), (x,), (torch.ones_like(x),))
    assert_same_outcome(jvp, ref, fast)


@pytest.mark.parametrize("cell", CELLS)
def test_cell_jacobian_and_hessian_as_torch_nn(cell):
    """A cell's Jacobian w.r.t. its input (jacrev, as studies of a recurrence's dynamics
    take it) and the Hessian of a loss (hessian: forward over reverse mode)."""
    ref, fast, x, hx, flatten = cell_setup(cell)
    for transform in (torch.func.jacrev, torch.func.jacfwd):
        results = [transform(lambda z: flatten(m(z, hx))[0])(x) for m in (ref, fast)]
        assert_close(results[1], results[0])
    square_sum = lambda outputs: sum((t * t).sum() for t in outputs)  # no random draws
    hessians = [torch.func.hessian(lambda z: square_sum(flatten(m(z, hx))))(x)
                for m in (ref, fast)]
    assert_close(hessians[1], hessians[0])


@pytest.mark.parametrize("setup,args", SETUPS)
def test_vmap_runs_fastrnn(setup, args, monkeypatch):
    """vmap alone (no differentiation) over a leading batch of inputs runs fastrnn's ops
    (torch.nn's forward, which a fallback would call, raises here), and each entry is as
    a plain call gives it."""
    ref, fast, x, hx, flatten = setup(*args)
    want = [flatten(fast(z, hx)) for z in torch.stack([x, 2 * x, -x])]

    def refuse(*args):
        raise AssertionError("torch.nn's forward ran")
    monkeypatch.setattr(type(ref), "forward", refuse)
    got = torch.func.vmap(lambda z: flatten(fast(z, hx)))(torch.stack([x, 2 * x, -x]))
    for k, part in enumerate(got):
        assert_close(part, torch.stack([w[k] for w in want]))


def test_differentiating_transform():
    """Which transforms count: grad and jvp, also beneath or above a vmap; not vmap alone,
    not the absence of any."""
    seen = []
    probe = lambda z: seen.append(differentiating_transform()) or z.sum()
    z = torch.ones(2, 3)
    probe(z)
    torch.func.vmap(probe)(z)
    torch.func.grad(probe)(z)
    torch.func.jvp(probe, (z,), (z,))
    torch.func.vmap(torch.func.grad(probe))(z)
    torch.func.grad(lambda w: torch.func.vmap(probe)(w).sum())(z)
    assert seen == [False, False, True, True, True, True]


@pytest.mark.parametrize("name", NO_TWIN)
@pytest.mark.parametrize("transform", ["grad", "jvp"])
def test_modules_without_twin_refused(name, transform):
    """A module torch.nn has no twin of cannot fall back: a clear error, not PyTorch's
    message about an autograd function, nor torch.nn's math in its place."""
    module = NO_TWIN[name]().double()
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    if "Cell" in name:
        x = x[0]
    run = lambda z: torch.utils._pytree.tree_leaves(module(z))[0].sum()
    with pytest.raises(RuntimeError, match="torch.func's differentiating transforms"):
        if transform == "grad":
            torch.func.grad(run)(x)
        else:
            torch.func.jvp(run, (x,), (torch.ones_like(x),))


def test_functional_rnn_refused():
    """fastrnn.functional.rnn, the stack without a module around it, refuses as well."""
    torch.manual_seed(0)
    weights = [torch.randn(8, 4), torch.randn(8, 8)]
    data, batch_sizes = torch.randn(6, 4), torch.tensor([2, 2, 2])
    h0 = torch.zeros(1, 2, 8)
    run = lambda d: fastrnn.functional.rnn("RNN_TANH", d, batch_sizes, h0, None, weights,
                                           has_bias=False, num_layers=1,
                                           bidirectional=False)[0].sum()
    with pytest.raises(RuntimeError, match="fastrnn.functional.rnn: torch.func's"):
        torch.func.grad(run)(data)
