"""The modules on other devices and in other dtypes: the meta device, .to(float64), and
bf16/fp16 against a float64 reference (on the CPU and on CUDA)."""

import pytest
import torch

from helpers.cases import CELLS, Case
from helpers.compare import assert_results_close
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.parity import check_low_precision
from helpers.running import flatten_result, run

pytestmark = pytest.mark.usefixtures("torch_state")

F64 = torch.float64


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", list(CELLS))
def test_meta_device(cell, batch_first):
    torch_cls, fast_cls, extra = CELLS[cell]
    kwargs = dict(input_size=4, hidden_size=5, num_layers=2, bidirectional=True,
                  batch_first=batch_first, **extra)
    fast = fast_cls(**kwargs, device="meta")
    ref = torch_cls(**kwargs)
    assert all(p.device.type == "meta" for p in fast.parameters())
    shape = (3, 6, 4) if batch_first else (6, 3, 4)
    for args in [(torch.randn(shape),), (torch.randn(6, 4),)]:
        meta_args = tuple(a.to("meta") for a in args)
        got = flatten_result(fast(*meta_args))
        want = flatten_result(ref(*args))
        assert [t.shape for t in got] == [t.shape for t in want]
        assert all(t.device.type == "meta" for t in got)


@pytest.mark.parametrize("cell", list(CELLS))
def test_to_float64(cell):
    case = Case(cell, True, 2, True, True, "packed_unsorted", True)
    ref, fast = make_pair(case, torch.float32)
    ref, fast = ref.to(F64), fast.to(F64)
    assert all(p.dtype == F64 for p in fast.parameters())
    inputs = make_inputs(case, F64)
    assert_results_close(run(fast, inputs)[:2], run(ref, inputs)[:2], F64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("cell", list(CELLS))
def test_low_precision_close_to_float64_reference(cell, dtype, device):
    """bf16 and fp16, on the CPU and on CUDA: see check_low_precision."""
    check_low_precision(Case(cell, True, 2, True, False, "packed_unsorted", True), dtype, device)
