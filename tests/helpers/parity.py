"""fastrnn against torch.nn: in the same dtype (check_parity), and in bf16/fp16 against a
float64 result (check_low_precision)."""

import copy

import torch

from helpers.cases import CELLS
from helpers.compare import assert_results_close, assert_same_packing
from helpers.inputs import make_inputs
from helpers.modules import make_pair, module_kwargs
from helpers.running import run
from helpers.tolerances import LOW_PRECISION

F64 = torch.float64


def check_parity(case, dtype, device="cpu"):
    """Outputs, final states, packing and every gradient of fastrnn and torch.nn, both on
    device in dtype, with the same weights and inputs."""
    ref, fast = make_pair(case, dtype, device=device)
    inputs = make_inputs(case, dtype, device=device)
    *want, result_want = run(ref, inputs)
    *got, result_got = run(fast, inputs)
    assert_same_packing(result_got, result_want)
    assert_results_close(got, want, dtype)


def check_low_precision(case, dtype, device="cpu"):
    """fastrnn's error in dtype on device against the float64 result on the CPU (same
    representable weights and inputs) is at most 2x torch.nn's own error in that dtype on
    that device plus a small absolute slack (LOW_PRECISION), for outputs, final states and
    every gradient."""
    exact, _ = make_pair(case, F64)
    with torch.no_grad():  # weights exactly representable in the low-precision dtype
        for p in exact.parameters():
            p.copy_(p.to(dtype))
    torch_low = copy.deepcopy(exact).to(device, dtype)
    fast_low = CELLS[case.cell][1](**module_kwargs(case, dtype))
    fast_low.load_state_dict(torch_low.state_dict())
    fast_low = fast_low.to(device)
    inputs = make_inputs(case, dtype)
    inputs64 = inputs.to(dtype=F64)
    want_outs, want_grads, _ = run(exact, inputs64)
    got_outs, got_grads, _ = run(fast_low, inputs.to(device))
    torch_outs, torch_grads, _ = run(torch_low, inputs.to(device))
    names = ["output", "h_n", "c_n"][:len(want_outs)] + [f"grad {n}" for n in want_grads]
    triples = list(zip(got_outs, torch_outs, want_outs)) + [
        (got_grads[n], torch_grads[n], want_grads[n]) for n in want_grads]
    for name, (fast_value, torch_value, want) in zip(names, triples):
        assert fast_value.dtype == dtype and fast_value.device.type == device, name
        assert torch.isfinite(fast_value).all(), name
        fast_error = (fast_value.double().cpu() - want).abs().max().item()
        torch_error = (torch_value.double().cpu() - want).abs().max().item()
        slack = LOW_PRECISION["slack"] * max(1.0, want.abs().max().item())
        assert fast_error <= LOW_PRECISION["factor"] * torch_error + slack, (
            name, fast_error, torch_error)
