"""The CUDA ops' host glue and per-unit step code, run on the CPU: tests/native/cuda_emulation.cpp
builds them for the host (each kernel launch a loop over the step's rows and units) as the
library fastrnn_cuda_emulated, and every op, layout, direction and dtype must match the
CPU ops, and the modules run through them must match torch.nn. Outputs start as NaN in
this build, so an element the kernels leave unwritten shows. This checks the CUDA path's
row offsets, packed carry-over, h_prev gathering, projection and argument plumbing without
a GPU. Skips when the CUDA headers are missing."""

import importlib.util
import os

import pytest
import torch

from helpers.cases import CELLS, KINDS, Case, ids
from helpers.ops import BATCH_SIZES, FORWARD_VARIANTS, GATES, backward_args, op_args, variant_id
from helpers.parity import check_parity
from helpers.tolerances import TOLERANCES

pytestmark = pytest.mark.usefixtures("torch_state")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _check_cuda_module():
    spec = importlib.util.spec_from_file_location(
        "check_cuda", os.path.join(ROOT, "scripts", "check_cuda.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def emulated():
    from torch.utils.cpp_extension import load
    check_cuda = _check_cuda_module()
    nvcc = check_cuda.find_nvcc()
    if nvcc is None:
        pytest.skip("no CUDA toolkit (its headers define the half/bfloat16 types)")
    build = os.path.join(ROOT, "build", "cuda-emulation")
    os.makedirs(build, exist_ok=True)
    load(name="fastrnn_cuda_emulation",
         sources=[os.path.join(ROOT, "tests", "native", "cuda_emulation.cpp")],
         extra_include_paths=[check_cuda.cuda_include_dir(nvcc)],
         extra_cflags=["-O1", "-std=c++20"], build_directory=build, is_python_module=False)
    return torch.ops.fastrnn_cuda_emulated


LAYOUTS = list(BATCH_SIZES)
TOLERANCE = TOLERANCES["same_computation"]


def assert_all_close(got, want, dtype, what):
    assert len(got) == len(want), what
    for k, (a, b) in enumerate(zip(got, want)):
        assert a.shape == b.shape and a.dtype == b.dtype, (what, k, a.shape, b.shape)
        tol = TOLERANCE[dtype]
        torch.testing.assert_close(a, b, atol=tol, rtol=tol, msg=lambda m: f"{what}[{k}]: {m}")


def cast(args, dtype):
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a
                 for a in args)


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=str)
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_emulated_cuda_ops_match_cpu_ops(emulated, variant, layout, reverse, dtype):
    op, kw = variant
    cpu = torch.ops.fastrnn
    args = cast(op_args(op, layout, reverse, requires_grad=False, **kw), dtype)
    assert_all_close(getattr(emulated, f"{op}_forward")(*args),
                     getattr(cpu, f"{op}_forward")(*args), dtype, f"{op}_forward")
    bargs = cast(backward_args(op, layout, reverse, kw), dtype)
    assert_all_close(getattr(emulated, f"{op}_backward")(*bargs),
                     getattr(cpu, f"{op}_backward")(*bargs), dtype, f"{op}_backward")


@pytest.mark.parametrize("variant", [v for v in FORWARD_VARIANTS if v[0] != "rnn"],
                         ids=variant_id)
def test_emulated_forward_without_save(emulated, variant):
    op, kw = variant
    args = op_args(op, "packed", True, requires_grad=False, **kw)
    with_save = getattr(emulated, f"{op}_forward")(*args)
    without = getattr(emulated, f"{op}_forward")(*args[:-1], False)
    for a, b in zip(with_save[:-1], without[:-1]):
        assert torch.equal(a, b)
    assert without[-1].shape == (0, with_save[-1].shape[1])


def float64_rand(seed):
    """rand(*shape): float64 normal tensors from a generator seeded with seed."""
    gen = torch.Generator().manual_seed(seed)
    return lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_emulated_lstm_projection_wider_than_hidden(emulated, reverse):
    """P > H: the backward step covers P columns to gather h_prev, the gates only H."""
    rand = float64_rand(seed=3)
    batch_sizes = torch.tensor([4, 4, 2, 1], dtype=torch.long)
    n, b, hidden, proj = int(batch_sizes.sum()), 4, 2, 5
    gates = GATES["lstm"] * hidden
    args = (rand(n, gates), batch_sizes, rand(b, proj), rand(b, hidden), rand(gates, proj),
            rand(proj, hidden), reverse, True)
    cpu = torch.ops.fastrnn
    y, hn, cn, saved = cpu.lstm_forward(*args)
    assert_all_close(emulated.lstm_forward(*args), (y, hn, cn, saved), torch.float64, "forward")
    bargs = (rand(n, proj), rand(b, proj), rand(b, hidden), batch_sizes, args[2], args[3],
             args[4], args[5], y, saved, reverse)
    assert_all_close(emulated.lstm_backward(*bargs), cpu.lstm_backward(*bargs), torch.float64,
                     "backward")


@pytest.mark.parametrize("bias", [True, False])
def test_lstm_input_forward(emulated, bias):
    """A backend without its own input product (CUDA's) gets gx formed by the op's entry."""
    rand = float64_rand(seed=4)
    batch_sizes = torch.tensor([5, 5, 3, 1], dtype=torch.long)
    n, b, inputs, hidden = int(batch_sizes.sum()), 5, 3, 4
    gates = GATES["lstm"] * hidden
    args = (rand(n, inputs), rand(gates, inputs), rand(gates) if bias else None, batch_sizes,
            rand(b, hidden), rand(b, hidden), rand(gates, hidden), None, True, True)
    assert_all_close(emulated.lstm_input_forward(*args), torch.ops.fastrnn.lstm_input_forward(
        *args), torch.float64, "lstm_input_forward")


# The modules through the emulated CUDA ops: fastrnn's autograd for them, and the layers
# pointed at them instead of the CPU ops, over every cell, input kind and direction.
MODULE_CASES = [Case(cell, bias, 2, bi, False, kind, True)
                for cell in CELLS for kind in KINDS for bi in (False, True)
                for bias in ([True] if bi else [False])]


@pytest.fixture(scope="module")
def emulated_autograd(emulated):
    from fastrnn import _ops
    for op in ("lstm", "gru", "rnn", "lstm_input"):
        torch.library.register_autograd(f"fastrnn_cuda_emulated::{op}_forward",
                                        getattr(_ops, f"_{op}_backward"),
                                        setup_context=getattr(_ops, f"_{op}_setup"))
    # lstm_input_forward's input gradient goes through linear, a CPU op: the CPU's.
    torch.library.impl("fastrnn_cuda_emulated::linear", "CPU", torch.ops.fastrnn.linear)
    return emulated


@pytest.mark.parametrize("case", MODULE_CASES, ids=ids(MODULE_CASES))
def test_emulated_modules_match_torch_nn(emulated_autograd, case, monkeypatch):
    from fastrnn import _ops, functional
    monkeypatch.setattr(_ops, "ops", emulated_autograd)
    monkeypatch.setattr(functional, "ops", emulated_autograd)
    check_parity(case, torch.float64)
