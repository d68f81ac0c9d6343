"""CUDA-only behaviour (every test skips without a GPU; the CUDA parity matrix lives in
test_parity.py): low-precision accuracy against torch.nn, the ops' gradcheck and opcheck on
CUDA tensors, compute-sanitizer, CUDA-graph capture, modules moved with .cuda()/.half(),
the caller's stream and device, no host synchronisation, more rows than one grid
dimension holds, and bitwise reproducibility."""

import re
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
from torch.autograd import gradcheck
from torch.nn.utils.rnn import PackedSequence

import fastrnn
from helpers.cases import CELLS, Case
from helpers.devices import GPU_MARKS
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.ops import (FORWARD_VARIANTS, GATES, backward_args, differentiable_outputs, op_args,
                         variant_id)
from helpers.parity import check_low_precision
from helpers.paths import ROOT, child_env
from helpers.running import run, weighted_loss
from helpers.tolerances import GRADCHECK, ULP, atol_rtol

pytestmark = [pytest.mark.usefixtures("torch_state"), *GPU_MARKS]

ops = torch.ops.fastrnn
F64 = torch.float64


def to_cuda(args):
    """Op arguments on the GPU; batch_sizes (int64) stays on the CPU, as the ops require."""
    moved = []
    for a in args:
        if isinstance(a, torch.Tensor) and a.dtype != torch.long:
            a = a.detach().cuda().requires_grad_(a.requires_grad)
        moved.append(a)
    return tuple(moved)


def test_modules_take_the_fused_path_on_cuda():
    from fastrnn.modules import _has_kernels
    assert _has_kernels(torch.device("cuda"))
    for op in ("lstm", "gru", "rnn"):
        for kind in ("forward", "backward"):
            assert torch._C._dispatch_has_kernel_for_dispatch_key(f"fastrnn::{op}_{kind}",
                                                                  "CUDA")
    _, fast = make_pair(Case("GRU"), torch.float32, device="cuda")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast(torch.randn(5, 3, fast.input_size, device="cuda"))
    assert not [w for w in caught if "fastrnn" in str(w.message)], caught


# --- the ops on CUDA tensors ------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("layout", ["dense", "packed"])
@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_gradcheck_op_cuda(variant, layout, reverse):
    op, kw = variant
    args = to_cuda(op_args(op, layout, reverse, **kw))
    assert gradcheck(differentiable_outputs(op), args, **GRADCHECK)


@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_opcheck_cuda(variant):
    op, kw = variant
    torch.library.opcheck(getattr(ops, f"{op}_forward"), to_cuda(op_args(op, "packed", True,
                                                                         **kw)))
    torch.library.opcheck(getattr(ops, f"{op}_backward"),
                          to_cuda(backward_args(op, "packed", True, kw)))


@pytest.mark.parametrize("variant", FORWARD_VARIANTS, ids=variant_id)
def test_ops_cuda_match_cpu(variant):
    """Forward and backward ops on CUDA against the CPU ops, float64, packed reverse walk."""
    op, kw = variant
    args = op_args(op, "packed", True, requires_grad=False, **kw)
    for a, b in zip(getattr(ops, f"{op}_forward")(*args),
                    getattr(ops, f"{op}_forward")(*to_cuda(args))):
        torch.testing.assert_close(b.cpu(), a, **atol_rtol(F64, "same_computation"))
    bargs = backward_args(op, "packed", True, kw)
    for a, b in zip(getattr(ops, f"{op}_backward")(*bargs),
                    getattr(ops, f"{op}_backward")(*to_cuda(bargs))):
        torch.testing.assert_close(b.cpu(), a, **atol_rtol(F64, "same_computation"))


@pytest.mark.parametrize("op", ["lstm", "gru", "rnn"])
def test_more_rows_than_one_grid_dimension(op):
    """70000 rows (more than gridDim.y's 65535), shrinking along time: the CUDA ops match
    the CPU ops forward and backward, in both walking directions."""
    gen = torch.Generator().manual_seed(0)
    batch_sizes = torch.tensor([70000, 65600, 3], dtype=torch.long)
    hidden, gates = 2, GATES[op]
    n, b = int(batch_sizes.sum()), int(batch_sizes[0])
    rand = lambda *shape: torch.randn(*shape, generator=gen, dtype=torch.float64)
    for reverse in (False, True):
        gx, h0, w_hh = rand(n, gates * hidden), rand(b, hidden), rand(gates * hidden, hidden)
        if op == "lstm":
            args = (gx, batch_sizes, h0, rand(b, hidden), w_hh, None, reverse, True)
        elif op == "gru":
            args = (gx, batch_sizes, h0, w_hh, rand(gates * hidden), reverse, True)
        else:
            args = (gx, batch_sizes, h0, w_hh, False, reverse)
        want = getattr(ops, f"{op}_forward")(*args)
        got = getattr(ops, f"{op}_forward")(*to_cuda(args))
        for a, g in zip(want, got):
            torch.testing.assert_close(g.cpu(), a, **atol_rtol(F64, "same_computation"))
        grads = [rand(*t.shape) for t in want[:3 if op == "lstm" else 2]]
        if op == "lstm":
            bargs = (*grads, batch_sizes, h0, args[3], w_hh, None, want[0], want[3], reverse)
        elif op == "gru":
            bargs = (*grads, batch_sizes, h0, w_hh, want[0], want[2], True, reverse)
        else:
            bargs = (*grads, batch_sizes, h0, w_hh, want[0], False, reverse)
        want_b = getattr(ops, f"{op}_backward")(*bargs)
        got_b = getattr(ops, f"{op}_backward")(*to_cuda(bargs))
        for a, g in zip(want_b, got_b):
            torch.testing.assert_close(g.cpu(), a, **atol_rtol(F64))


# --- float16 / bfloat16 -----------------------------------------------------------------------

LOW_CASES = [Case(cell, True, 2, True, False, kind, True, input_size=16, hidden_size=32,
                  steps=20, batch=8, proj_size=16,
                  lengths=(5, 20, 1, 17, 12, 2, 17, 9) if kind != "dense" else None)
             for cell in CELLS for kind in ("dense", "packed_unsorted")]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", LOW_CASES, ids=[c.id for c in LOW_CASES])
def test_low_precision_larger_sizes(case, dtype):
    """check_low_precision (helpers/parity.py) at sizes where rounding errors build up: error
    at most 2x torch.nn's (cuDNN) in the same dtype, against float64 on the CPU."""
    check_low_precision(case, dtype, "cuda")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_relu_recurrence_runs_in_float32(dtype):
    """A 16-bit relu RNN on CUDA runs its recurrence in float32 (functional.py's
    _rnn_relu_in_float): its outputs and gradients are the float32 module's on the same
    16-bit values, rounded once (within one 16-bit unit; computed in 16 bits they differ
    by far more)."""
    torch.manual_seed(0)
    half = fastrnn.RNN(8, 32, 2, nonlinearity="relu", bidirectional=True).cuda().to(dtype)
    single = fastrnn.RNN(8, 32, 2, nonlinearity="relu", bidirectional=True).cuda()
    single.load_state_dict({k: v.float() for k, v in half.state_dict().items()})
    x, grad_out, grad_h = (torch.randn(*size, device="cuda").to(dtype)
                           for size in [(20, 4, 8), (20, 4, 64), (4, 4, 32)])

    def results(module, dtype):
        leaf = x.to(dtype).requires_grad_()
        out, h = module(leaf)
        grads = torch.autograd.grad([out, h], [leaf, *module.parameters()],
                                    [grad_out.to(dtype), grad_h.to(dtype)])
        return [out, h, *grads]

    for k, (got, want) in enumerate(zip(results(half, dtype), results(single, torch.float32))):
        assert got.dtype == dtype, k
        torch.testing.assert_close(got, want.to(dtype), atol=0, rtol=ULP[dtype],
                                   msg=lambda m: f"result {k}: {m}")


@pytest.mark.parametrize("cell", list(CELLS))
def test_module_moved_with_cuda_and_half(cell):
    """.cuda().half() on a fastrnn module: half outputs and gradients on the GPU, close to
    torch.nn's twin moved the same way."""
    case = Case(cell, True, 2, True)
    ref, fast = make_pair(case, torch.float32)
    ref, fast = ref.cuda().half(), fast.cuda().half()
    assert all(p.is_cuda and p.dtype == torch.half for p in fast.parameters())
    inputs = make_inputs(case, torch.float32).to("cuda", torch.half)
    outs, grads, _ = run(fast, inputs)
    outs_ref, grads_ref, _ = run(ref, inputs)
    for a, b in zip(outs, outs_ref):
        assert a.dtype == torch.half and a.is_cuda
        torch.testing.assert_close(a, b, **atol_rtol(torch.half, "half_module"))
    for name, g in grads.items():
        assert g.dtype == torch.half and g.is_cuda and torch.isfinite(g).all(), name
        torch.testing.assert_close(g, grads_ref[name], **atol_rtol(torch.half,
                                                                   "half_module_grad"))
    state = fast.float().cpu().state_dict()
    assert all(t.dtype == torch.float32 and not t.is_cuda for t in state.values())


# --- streams, devices, graphs, synchronisation ----------------------------------------------


def forward_backward(module, inp, weights):
    """Outputs and the gradients w.r.t. the input's data and every parameter."""
    out, hidden = module(inp)
    data = out.data if isinstance(out, PackedSequence) else out
    hidden = list(hidden) if isinstance(hidden, tuple) else [hidden]
    loss = weighted_loss([data] + hidden) if weights is None else sum(
        (t * w).sum() for t, w in zip([data] + hidden, weights))
    leaf = inp.data if isinstance(inp, PackedSequence) else inp
    grads = torch.autograd.grad(loss, [leaf] + list(module.parameters()))
    return [data] + hidden + list(grads)


GRAPH_CASES = {  # name -> (module factory, packed)
    "LSTM-proj-dense": (lambda: fastrnn.LSTM(8, 16, 2, bidirectional=True, proj_size=8), False),
    "GRU-packed": (lambda: fastrnn.GRU(8, 16, 2, bidirectional=True), True),
    "RNN-relu-packed": (lambda: fastrnn.RNN(8, 16, 2, nonlinearity="relu"), True),
    # the peepholes' gradient gathers each row's c_prev: uploaded without a host sync
    "VariantLSTM-packed": (lambda: fastrnn.VariantLSTM(8, 16, 2, bidirectional=True,
                                                       peepholes=True), True),
}
GRAPH_BATCH_SIZES = torch.tensor([4, 4, 3, 3, 2, 1], dtype=torch.long)


def graph_input(packed, requires_grad=True):
    """A static leaf and what the module takes: the leaf itself, dense [6, 4, 8], or a
    PackedSequence over the leaf [N, 8] (batch_sizes on the CPU). Not a view of the leaf:
    a view made before capture is an autograd node of the stream it was made on, and
    backward through it during capture would make that (legacy) stream wait on the
    capturing one, which global capture refuses."""
    shape = (int(GRAPH_BATCH_SIZES.sum()), 8) if packed else (6, 4, 8)
    leaf = torch.randn(shape, device="cuda").requires_grad_(requires_grad)
    return leaf, PackedSequence(leaf, GRAPH_BATCH_SIZES) if packed else leaf


@pytest.mark.parametrize("name", list(GRAPH_CASES))
def test_cuda_graph_capture_and_replay(name):
    """Forward and backward captured in a CUDA graph replay what eager mode computes, for
    new input values written into the static input."""
    factory, packed = GRAPH_CASES[name]
    torch.manual_seed(0)
    module = factory().cuda()
    leaf, inp = graph_input(packed)
    with torch.no_grad():  # the loss weights, made before capture (no host copy inside it)
        out, hidden = module(inp)
    weights = [torch.randn_like(t) for t in [out.data if packed else out] + (
        list(hidden) if isinstance(hidden, tuple) else [hidden])]

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the graph, as torch.cuda.graph asks
        for _ in range(3):
            forward_backward(module, inp, weights)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_results = forward_backward(module, inp, weights)

    with torch.no_grad():
        leaf.copy_(torch.randn_like(leaf))
    graph.replay()
    torch.cuda.synchronize()
    eager = forward_backward(module, inp, weights)
    for k, (a, b) in enumerate(zip(static_results, eager)):
        torch.testing.assert_close(a, b, **atol_rtol(torch.float32, "cuda_graph_replay"),
                                   msg=lambda m: f"result {k}: {m}")


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_runs_on_the_current_stream(cell):
    """On a side stream whose input is written only after a long sleep, results match:
    every kernel and GEMM waited on that stream (a kernel on another stream would read
    the input before it is written)."""
    torch.manual_seed(0)
    module = getattr(fastrnn, cell)(8, 32, 2, bidirectional=True).cuda()
    x_new = torch.randn(20, 4, 8, device="cuda")
    want = forward_backward(module, x_new.clone().requires_grad_(), None)
    x = torch.zeros_like(x_new)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(200_000_000)
        x.copy_(x_new)
        got = forward_backward(module, x.requires_grad_(), None)
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    for k, (a, b) in enumerate(zip(got, want)):
        torch.testing.assert_close(a, b, **atol_rtol(torch.float32, "same_computation"),
                                   msg=lambda m: f"result {k}: {m}")


@pytest.mark.parametrize("cell", ["LSTM-proj", "GRU", "RNN-tanh"])
@pytest.mark.parametrize("kind", ["dense", "packed_sorted"])
def test_no_host_synchronisation(cell, kind):
    """Forward and backward make no synchronising CUDA call. Everything else is prepared
    first; a packed input is a PackedSequence over a leaf, so that only the layers and
    their backward run in the checked region (not torch's packing and its backward)."""
    case = Case(cell, True, 2, True, False, kind, True)
    _, fast = make_pair(case, torch.float32, device="cuda")
    inputs = make_inputs(case, torch.float32, device="cuda")
    inp, hx = inputs.args()
    if isinstance(inp, PackedSequence):
        assert inp.sorted_indices is None
        inp = PackedSequence(inp.data.detach().requires_grad_(), inp.batch_sizes)
        leaves = [inp.data]
    else:
        inp = inp.detach().requires_grad_()
        leaves = [inp]
    hx = tuple(h.detach().requires_grad_() for h in hx) if isinstance(hx, tuple) else (
        hx.detach().requires_grad_())
    leaves += list(hx) if isinstance(hx, tuple) else [hx]
    leaves += list(fast.parameters())
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, hidden = fast(inp, hx)
        data = out.data if isinstance(out, PackedSequence) else out
        loss = data.sum() + sum(h.sum() for h in (hidden if isinstance(hidden, tuple)
                                                  else [hidden]))
        grads = torch.autograd.grad(loss, leaves)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert all(torch.isfinite(g).all() for g in grads)


def test_bitwise_reproducible():
    case = Case("LSTM-proj", True, 2, True, False, "packed_unsorted", True)
    _, fast = make_pair(case, torch.float32, device="cuda")
    inputs = make_inputs(case, torch.float32, device="cuda")
    first, second = run(fast, inputs), run(fast, inputs)
    for a, b in zip(first[0], second[0]):
        assert torch.equal(a, b)
    for name in first[1]:
        assert torch.equal(first[1][name], second[1][name]), name


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_module_on_a_device_other_than_the_current_one():
    case = Case("GRU", True, 2, True, False, "packed_unsorted", True)
    ref, fast = make_pair(case)
    inputs = make_inputs(case)
    *want, _ = run(ref, inputs)
    with torch.cuda.device(0):
        *got, _ = run(fast.to("cuda:1"), inputs.to("cuda:1"))
    for a, b in zip(got[0], want[0]):
        assert a.device == torch.device("cuda:1")
        torch.testing.assert_close(a.cpu(), b, **atol_rtol(F64))
    for name in want[1]:
        torch.testing.assert_close(got[1][name].cpu(), want[1][name], **atol_rtol(F64))


# --- compute-sanitizer ----------------------------------------------------------------------

SANITIZER_SCRIPT = """
import torch, fastrnn
from torch.nn.utils.rnn import pack_padded_sequence
torch.manual_seed(0)
for make in (lambda: fastrnn.LSTM(4, 5, 2, bidirectional=True, proj_size=3),
             lambda: fastrnn.LSTM(4, 5, 2, bidirectional=True),
             lambda: fastrnn.GRU(4, 5, 2, bidirectional=True),
             lambda: fastrnn.RNN(4, 5, 2, bidirectional=True, nonlinearity="relu")):
    for dtype in (torch.float32, torch.float16):
        module = make().to("cuda", dtype)
        x = torch.randn(6, 3, 4, device="cuda", dtype=dtype, requires_grad=True)
        packed = pack_padded_sequence(x, torch.tensor([1, 6, 4]), enforce_sorted=False)
        out, _ = module(packed)
        out.data.float().sum().backward()
        out, _ = module(x)
        out.float().sum().backward()
torch.cuda.synchronize()
print("sanitized run finished")
"""


@pytest.mark.skipif(shutil.which("compute-sanitizer") is None,
                    reason="compute-sanitizer is not on PATH")
@pytest.mark.parametrize("tool", ["memcheck", "racecheck"])
def test_compute_sanitizer(tool):
    """Every cell, packed and dense, forward and backward, float32 and float16, under
    compute-sanitizer; torch's caching allocator is off so out-of-bounds accesses land
    outside any allocation."""
    env = child_env(PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    proc = subprocess.run(["compute-sanitizer", "--tool", tool, "--error-exitcode", "99",
                           sys.executable, "-c", SANITIZER_SCRIPT],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "sanitized run finished" in output, output[-6000:]
    # memcheck ends with "ERROR SUMMARY: 0 errors", racecheck with "... (0 errors, 0 warnings)"
    assert re.search(r"ERROR SUMMARY: 0 errors|\(0 errors, 0 warnings\)", output), output[-6000:]
