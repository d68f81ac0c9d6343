"""Parametrizations (weight_norm) and torch.func.functional_call on the modules: the same
results and gradients as torch.nn's twin, and the module's own parameters untouched."""

import pytest
import torch
from torch.func import functional_call

from helpers.cases import CELLS, Case
from helpers.compare import assert_close, assert_results_close
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import flatten_result, run, weighted_loss

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64


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
