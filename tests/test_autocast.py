"""Under autocast fastrnn returns the dtypes torch.nn returns, for every cell, input layout,
input dtype and hx dtype, and its error against a float64 reference is at most 2x torch.nn's
own error under the same autocast (DESIGN.md's low-precision rule), gradients included.

torch.nn's CPU results under autocast follow its per-step products (autocast dtype) and
state updates (type promotion with the state); fastrnn.functional.autocast_result_dtypes
states the rule. torch.nn's dense LSTM on the CPU takes oneDNN, which on CPUs without bf16
support fails under autocast ("could not create a primitive descriptor"); torch.nn is run
with oneDNN off here, its portable path, the one its packed LSTM takes everywhere.
"""

import dataclasses
import itertools

import pytest
import torch

from conftest import CELLS, Case, Inputs, flatten_result, make_inputs, make_pair, requires_cuda

pytestmark = [pytest.mark.usefixtures("torch_state"),
              # torch.backends.mkldnn.flags() warns about Intel GPUs on every use
              pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")]

F32, F64 = torch.float32, torch.float64
# (device, autocast dtype)
AUTOCASTS = [pytest.param(device, dtype, id=f"{device}-{str(dtype)[6:]}",
                          marks=[requires_cuda] if device == "cuda" else [])
             for device, dtype in [("cpu", torch.bfloat16), ("cpu", torch.float16),
                                   ("cuda", torch.float16), ("cuda", torch.bfloat16)]]
KINDS = ["dense", "packed_unsorted", "unbatched"]


def torch_nn_context(device):
    return torch.backends.mkldnn.flags(enabled=False) if device == "cpu" else (
        torch.backends.cudnn.flags(enabled=True))


def to(inputs, device, x_dtype=None, hx_dtype=None):
    move = lambda t, dtype: None if t is None else t.detach().to(device, dtype or t.dtype)
    return Inputs(inputs.case, move(inputs.x, x_dtype), move(inputs.h0, hx_dtype),
                  move(inputs.c0, hx_dtype))


def forward(module, inputs, device, dtype):
    with torch.autocast(device, dtype=dtype), torch_nn_context(device):
        return flatten_result(module(*inputs.fresh(requires_grad=False).args()))


def run(module, inputs, low, device=None):
    """(results, gradients by name) of sum_k <w_k, results_k>, with fixed random w_k rounded
    to the low-precision dtype `low`: the float64 reference then differentiates the same loss,
    and gradient errors are the layers' own. The forward runs under autocast on `device`
    (if given), the backward after it, as autocast's documentation asks."""
    leaves = inputs.fresh()
    with torch.autocast(device or "cpu", dtype=low, enabled=device is not None), (
            torch_nn_context(device or "cpu")):
        outs = flatten_result(module(*leaves.args()))
    gen = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=F64).to(low).to(t.dtype)).sum()
               for t in outs)
    names = [n for n in ("x", "h0", "c0") if getattr(leaves, n) is not None]
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(loss, [getattr(leaves, n) for n in names] +
                                list(params.values()))
    return outs, dict(zip(names + list(params), grads))


# input dtype x hx (None: no hx, the zero state takes the input's dtype)
DTYPE_VARIANTS = [("f32", None), ("f32", "f32"), ("f32", "low"), ("low", None),
                  ("low", "f32")]


@pytest.mark.parametrize("x_dtype,hx_dtype", DTYPE_VARIANTS,
                         ids=[f"x_{x}-hx_{h}" for x, h in DTYPE_VARIANTS])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device,dtype", AUTOCASTS)
def test_result_dtypes_match_torch_nn(device, dtype, cell, kind, x_dtype, hx_dtype):
    case = Case(cell, True, 2, True, False, kind, hx_dtype is not None)
    ref, fast = make_pair(case, F32)
    ref, fast = ref.to(device), fast.to(device)
    named = {"f32": F32, "low": dtype, None: None}
    inputs = to(make_inputs(case, F32), device, named[x_dtype], named[hx_dtype])
    want = forward(ref, inputs, device, dtype)
    got = forward(fast, inputs, device, dtype)
    assert [t.dtype for t in got] == [t.dtype for t in want]
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), atol=0.05, rtol=0.05)


@pytest.mark.parametrize("kind", ["dense", "packed_unsorted"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device,dtype", AUTOCASTS)
def test_error_at_most_twice_torch_nn_error(device, dtype, cell, kind):
    """Outputs, states and every gradient (inputs and parameters) against float64."""
    case = Case(cell, True, 2, True, False, kind, True)
    ref, fast = make_pair(case, F32)
    exact, _ = make_pair(case, F64)
    exact.load_state_dict(ref.state_dict())
    ref, fast, exact = ref.to(device), fast.to(device), exact.to(device)
    inputs = to(make_inputs(case, F32), device)
    want_outs, want_grads = run(exact, to(inputs, device, F64, F64), dtype)
    results = []
    for module in (ref, fast):
        results.append(run(module, inputs, dtype, device))
    (torch_outs, torch_grads), (fast_outs, fast_grads) = results
    assert list(fast_grads) == list(torch_grads)
    triples = list(zip(fast_outs, torch_outs, want_outs)) + [
        (fast_grads[n], torch_grads[n], want_grads[n]) for n in want_grads]
    for fast_value, torch_value, want in triples:
        assert fast_value.dtype == torch_value.dtype
        assert torch.isfinite(fast_value).all()
        fast_error = (fast_value.double() - want).abs().max().item()
        torch_error = (torch_value.double() - want).abs().max().item()
        # one rounding of the largest value in the result's dtype: the least any result in
        # that dtype can be off by
        ulp = torch.finfo(fast_value.dtype).eps * want.abs().max().item()
        assert fast_error <= 2 * torch_error + ulp, (fast_error, torch_error)


def test_rule_covers_every_mode():
    from fastrnn.functional import MODES, autocast_result_dtypes
    for mode, proj in itertools.product(MODES, (False, True)):
        out, c = autocast_result_dtypes(mode, "cpu", torch.bfloat16, F32, F32,
                                        F32 if mode == "LSTM" else None, proj)
        assert out in (torch.bfloat16, F32) and (c is None) == (mode != "LSTM")
