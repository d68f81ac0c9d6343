"""The persistent kernels through the public modules on a GPU (skipped without one): the
CUDA ops call them first, so FASTRNN_PERSISTENT=1 forces them (=0 the per-step path).
Tolerances as in helpers/parity.py: float32 to 5e-5 of float64; bf16/fp16 at most twice
torch.nn's own error in that dtype."""

import pytest
import torch

import fastrnn
from helpers.cases import Case
from helpers.compare import assert_close
from helpers.devices import GPU_MARKS
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.parity import check_low_precision
from helpers.running import run

pytestmark = GPU_MARKS

MODULE_CASES = [
    Case(cell, kind=kind, bidirectional=bi, layers=layers)
    for cell in ("LSTM", "GRU", "RNN-tanh", "RNN-relu")
    for kind, bi, layers in (("dense", False, 1), ("packed_sorted", True, 2),
                             ("packed_unsorted", True, 1))
]


@pytest.mark.parametrize("setting", ["1", "0"], ids=["persistent", "per-step"])
@pytest.mark.parametrize("case", MODULE_CASES, ids=[c.id for c in MODULE_CASES])
def test_modules_float32_on_cuda_match_float64(monkeypatch, setting, case):
    monkeypatch.setenv("FASTRNN_PERSISTENT", setting)
    ref, fast = make_pair(case, torch.float64)  # float64 weights, rounded once for fast
    fast = fast.to("cuda", torch.float32)
    inputs = make_inputs(case, torch.float64)
    want, want_grads, _ = run(ref, inputs)
    got, got_grads, _ = run(fast, inputs.to(device="cuda", dtype=torch.float32))
    for i, (g, w) in enumerate(zip(got, want)):
        assert_close(g.double().cpu(), w, torch.float32, msg=f"output {i}")
    for name, w in want_grads.items():
        assert_close(got_grads[name].double().cpu(), w, torch.float32, msg=f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", MODULE_CASES[::3], ids=[c.id for c in MODULE_CASES[::3]])
def test_modules_low_precision_on_cuda(monkeypatch, case, dtype):
    """At most 2x torch.nn's error in the same dtype (helpers/parity.py's rule)."""
    monkeypatch.setenv("FASTRNN_PERSISTENT", "1")
    check_low_precision(case, dtype, device="cuda")


def test_forced_persistent_refuses_projection(monkeypatch):
    monkeypatch.setenv("FASTRNN_PERSISTENT", "1")
    _, fast = make_pair(Case("LSTM-proj"), torch.float32, device="cuda")
    with pytest.raises(RuntimeError, match="FASTRNN_PERSISTENT=1"):
        fast(torch.randn(4, 2, fast.input_size, device="cuda"))


@pytest.mark.parametrize("dtype,batch,hidden,match", [
    (torch.float64, 3, 16, "float32, float16 and bfloat16"),
    (torch.float32, 64, 1024, "does not fit B=64, H=1024"),  # forward: 227 KiB a block
])
def test_forced_persistent_refuses_with_an_error(monkeypatch, dtype, batch, hidden, match):
    """An error whose message holds numbers is raised, not a crash (it was a SIGSEGV in a
    build that carried its own copy of libstdc++: test_linkage.py)."""
    monkeypatch.setenv("FASTRNN_PERSISTENT", "1")
    fast = fastrnn.LSTM(hidden, hidden).to("cuda", dtype)
    with pytest.raises(RuntimeError, match=match):
        fast(torch.randn(4, batch, hidden, device="cuda", dtype=dtype))
