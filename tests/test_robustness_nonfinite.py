"""NaN and Inf in the input or the initial state propagate through the modules as in
torch.nn, on every device, in float64 and in float32 (whose CPU activations are fastrnn's
own polynomials, csrc/common/activations.h)."""

import pytest
import torch

from helpers.cases import CELLS, Case
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import flatten_result, weighted_loss
from helpers.tolerances import atol_rtol


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("device", DEVICES)
def test_nan_and_inf_propagate_like_torch_nn(device, dtype, cell, value):
    """A non-finite value in one sequence's input and another's h0: the same elements of
    every result are NaN (or +-Inf) as in torch.nn, and the rest agree."""
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    ref, fast = make_pair(case, dtype)
    ref, fast = ref.to(device), fast.to(device)
    inputs = make_inputs(case, dtype)
    inputs.x[1, 2, 0] = value
    inputs.h0[0, 0, 1] = value
    inputs = inputs.to(device)
    results = []
    for module in (ref, fast):
        leaves = inputs.fresh()
        outs = flatten_result(module(*leaves.args()))
        grads = torch.autograd.grad(weighted_loss(outs), leaves.leaves() +
                                    list(module.parameters()))
        results.append(outs + list(grads))
    for a, b in zip(*results):
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.equal(a.isinf(), b.isinf())
        torch.testing.assert_close(a, b, **atol_rtol(dtype), equal_nan=True)
