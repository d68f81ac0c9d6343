"""The CPU walks: the fused walk (weight panels, one parallel region for the whole
sequence) with its threads splitting the hidden units (a barrier per step) or the rows (no
barrier), and the BLAS walk (a GEMM and a parallel gate loop per step).
FASTRNN_CPU_FUSED=units / rows / 0 forces one; each must match torch.nn, with one, two and
four threads, at sizes that cut the hidden units and the rows at every boundary the fused
walk has (panels of 8 float / 4 double units, blocks of up to 6 rows, a slice per thread).
Every cell's in float32 and float64 against torch.nn (the LSTM's at every size, the
others' at a few); in bfloat16, every cell's walks
against float64 and each other (the fused ones multiply bfloat16 panels into float sums
where the build has the kernel, fastrnn._C.BFLOAT16_PRODUCTS; elsewhere a bfloat16 state
takes the BLAS walk whatever FASTRNN_CPU_FUSED says, and these tests check that walk)."""

import threading

import pytest
import torch

import fastrnn
from fastrnn._ops import ops
from helpers.cases import Case
from helpers.compare import assert_close
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.parity import check_low_precision, check_parity
from helpers.running import run
from helpers.tolerances import GRADCHECK

pytestmark = pytest.mark.usefixtures("torch_state")

WALKS = {"fused_units": "units", "fused_rows": "rows", "blas": "0"}

# (hidden, batch): one unit; a part panel; a whole float panel and a part one; one slice
# per thread and a remainder; rows 1, 6 (one block), 7 and 13 (a block and a remainder).
SIZES = [(1, 3), (5, 7), (16, 6), (17, 13), (33, 1), (40, 7)]
# The other cells: odd H (a part panel), whole and part panels with several row blocks.
CELL_SIZES = [("LSTM", SIZES)] + [(cell, [(5, 7), (40, 13)])
                                  for cell in ("GRU", "RNN-tanh", "RNN-relu")]
CASES = [Case(cell, True, 1, True, False, kind, True, hidden_size=hidden, batch=batch,
              lengths=None if kind == "dense" else tuple(range(batch, 0, -1)))
         for cell, sizes in CELL_SIZES for hidden, batch in sizes
         for kind in ("dense", "packed_unsorted")]
# Big enough for the BLAS walk's parallel gate loop (B * H over its grain of 16384 units).
CASES += [Case("LSTM", True, 1, True, False, "packed_unsorted", True, input_size=7,
               hidden_size=130, batch=131, steps=4,
               lengths=tuple([4] * 41 + [3] * 41 + [2] * 29 + [1] * 20))]


@pytest.fixture(params=list(WALKS))
def walk(request, monkeypatch):
    monkeypatch.setenv("FASTRNN_CPU_FUSED", WALKS[request.param])
    return request.param


# 4 threads: more than the processors CI has (the fused walk then uses no more threads than
# processors).
@pytest.fixture(params=[1, 2, 4], ids=["1thread", "2threads", "4threads"])
def threads(request, torch_state):
    torch.set_num_threads(request.param)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", CASES,
                         ids=lambda c: f"{c.cell}-H{c.hidden_size}-B{c.batch}-{c.kind}")
def test_walk_matches_torch_nn(case, dtype, walk, threads):
    check_parity(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", [c for c in CASES if c.cell == "LSTM"],
                         ids=lambda c: f"H{c.hidden_size}-B{c.batch}-{c.kind}")
def test_inference_walk_matches_torch_nn(case, dtype, walk, threads):
    """Under no_grad the LSTM takes its input rows to fastrnn::lstm_input_forward, whose
    fused walks form the input product themselves from 4 rows."""
    ref, fast = make_pair(case, dtype)
    inputs = make_inputs(case, dtype)
    want, _, _ = run(ref, inputs, backward=False)
    with torch.no_grad():
        got, _, _ = run(fast, inputs, backward=False)
    for a, b in zip(got, want, strict=True):
        assert_close(a, b)


def _input_forward_args(dtype, inputs, batch, hidden, bias, projection, lengths):
    """lstm_input_forward's arguments, [N, I] rows of `lengths` (non-increasing)."""
    g = torch.Generator().manual_seed(0)
    r = lambda *shape: (torch.randn(*shape, generator=g, dtype=torch.float64) / 2).to(dtype)
    sizes = torch.tensor([sum(n > t for n in lengths) for t in range(max(lengths))])
    P = projection or hidden
    return (r(int(sizes.sum()), inputs), r(4 * hidden, inputs), r(4 * hidden) if bias else None,
            sizes, r(batch, P), r(batch, hidden), r(4 * hidden, P),
            r(P, hidden) if projection else None)


INPUT_FORWARD_CASES = [  # inputs, batch, hidden, bias, projection, reverse
    (9, 7, 17, True, 0, False), (9, 13, 40, False, 0, True), (1, 4, 5, True, 0, True),
    (0, 6, 9, True, 0, False), (5, 3, 16, True, 0, False), (6, 8, 12, True, 5, True)]


@pytest.mark.parametrize("inputs,batch,hidden,bias,projection,reverse", INPUT_FORWARD_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_input_forward_matches_forward_on_gx(inputs, batch, hidden, bias, projection, reverse,
                                             dtype, walk, threads):
    """lstm_input_forward against lstm_forward on gx = x @ w_ih^T + bias, in every walk:
    the input product inside a fused walk from 4 rows (float, double, and bfloat16 where the
    build has its panels), else first (fewer rows, no input, a projection)."""
    lengths = sorted((max(1, 9 - k % 4) for k in range(batch)), reverse=True)
    x, w_ih, b, sizes, h0, c0, w_hh, w_hr = _input_forward_args(
        dtype, inputs, batch, hidden, bias, projection, lengths)
    before = [t.clone() for t in (x, w_ih, b, h0, c0, w_hh) if t is not None]
    got = ops.lstm_input_forward(x, w_ih, b, sizes, h0, c0, w_hh, w_hr, reverse, True)
    gx = (x.double() @ w_ih.double().t() + (b.double() if bias else 0)).to(dtype)
    want = ops.lstm_forward(gx, sizes, h0, c0, w_hh, w_hr, reverse, True)
    for a, e in zip(got, want, strict=True):
        assert_close(a, e, kind="same_computation")
    for a, e in zip([t for t in (x, w_ih, b, h0, c0, w_hh) if t is not None], before):
        assert torch.equal(a, e)


@pytest.mark.parametrize("inputs,batch,hidden,bias,projection,reverse", [
    (3, 5, 4, True, 0, False), (2, 6, 3, False, 0, True), (3, 2, 4, True, 0, False),
    (2, 4, 3, True, 2, True), (0, 4, 3, True, 0, False)])
def test_input_forward_gradcheck(inputs, batch, hidden, bias, projection, reverse, walk):
    """Every input's gradient: lstm_backward's, then the input product's from grad_gx (the
    input product inside the walk from 4 rows; before it with 2, a projection or I = 0)."""
    torch.set_num_threads(2)
    lengths = sorted((max(1, 5 - k % 3) for k in range(batch)), reverse=True)
    args = [t.requires_grad_() if t is not None and t.dtype != torch.long else t
            for t in _input_forward_args(torch.float64, inputs, batch, hidden, bias,
                                         projection, lengths)]
    fn = lambda *a: ops.lstm_input_forward(*a, reverse, True)[:3]
    assert torch.autograd.gradcheck(fn, tuple(args), **GRADCHECK)


@pytest.mark.parametrize("wanted", ["x", "w_ih", "bias", "h0", "w_hh"])
def test_input_forward_one_gradient(wanted, walk):
    """One input needing a gradient: it equals the gradient through the input product in
    torch ops and lstm_forward."""
    names = ["x", "w_ih", "bias", "batch_sizes", "h0", "c0", "w_hh", "w_hr"]
    args = dict(zip(names, _input_forward_args(torch.float64, 3, 6, 5, True, 0,
                                               [4, 4, 3, 2, 2, 1])))
    args[wanted].requires_grad_()
    grad_y = torch.randn(int(args["batch_sizes"].sum()), 5, dtype=torch.float64)
    y = ops.lstm_input_forward(*args.values(), False, True)[0]
    got, = torch.autograd.grad(y, args[wanted], grad_y)
    gx = args["x"] @ args["w_ih"].t() + args["bias"]
    y = ops.lstm_forward(gx, *[args[k] for k in names[3:]], False, True)[0]
    want, = torch.autograd.grad(y, args[wanted], grad_y)
    assert_close(got, want, kind="same_computation")


def test_input_forward_without_save_refuses_backward():
    x, w_ih, b, sizes, h0, c0, w_hh, _ = _input_forward_args(torch.float32, 3, 4, 5, True, 0,
                                                             [2, 2, 1, 1])
    x.requires_grad_()
    y, _, _, _ = ops.lstm_input_forward(x, w_ih, b, sizes, h0, c0, w_hh, None, False, False)
    with pytest.raises(RuntimeError, match="save=False"):
        y.sum().backward()


@pytest.mark.parametrize("grad", [False, True])
def test_input_forward_opcheck(grad):
    args = [t.requires_grad_(grad) if t is not None and t.dtype != torch.long else t
            for t in _input_forward_args(torch.float64, 3, 5, 6, True, 0, [3, 3, 2, 2, 1])]
    torch.library.opcheck(ops.lstm_input_forward.default, (*args, True, grad))


def test_walks_agree_to_rounding(monkeypatch):
    """The walks sum the same products in different orders: float64 results agree to
    rounding, on a size with several panels and row blocks per thread."""
    torch.set_num_threads(2)
    case = Case("LSTM", True, 2, True, False, "packed_unsorted", True, input_size=9,
                hidden_size=70, batch=20, steps=9,
                lengths=tuple([9] * 5 + [7] * 6 + [4] * 5 + [1] * 4))
    results = {}
    for name, flag in WALKS.items():
        monkeypatch.setenv("FASTRNN_CPU_FUSED", flag)
        _, fast = make_pair(case, torch.float64)
        outs, grads, _ = run(fast, make_inputs(case, torch.float64))
        results[name] = outs + [grads[k] for k in sorted(grads)]
    assert len(results["blas"]) == 3 + 3 + 2 * 2 * 4  # outputs, x/h0/c0, 2 layers x 2 dirs
    for fused in ("fused_units", "fused_rows"):
        for got, want in zip(results[fused], results["blas"], strict=True):
            assert_close(got, want, kind="same_computation")


def bfloat16_case(cell, hidden, batch):
    """A packed bfloat16 case of 9 steps, unsorted lengths 1 to 9."""
    return Case(cell, True, 1, True, False, "packed_unsorted", True, hidden_size=hidden,
                batch=batch, steps=9, lengths=tuple(k % 9 + 1 for k in range(batch)))


BFLOAT16_CELLS = ["LSTM", "GRU", "RNN-tanh", "RNN-relu"]
# (hidden, batch): odd H (a zero bfloat16 pair), a part panel, several row blocks
BFLOAT16_SIZES = [(5, 7), (17, 13), (40, 7)]


@pytest.mark.parametrize("hidden,batch", BFLOAT16_SIZES)
@pytest.mark.parametrize("cell", BFLOAT16_CELLS)
def test_bfloat16_walk_close_to_float64(cell, hidden, batch, walk, threads):
    check_low_precision(bfloat16_case(cell, hidden, batch), torch.bfloat16)


@pytest.mark.parametrize("cell", BFLOAT16_CELLS)
def test_bfloat16_walks_agree(cell, monkeypatch):
    """The fused walks' bfloat16 products against the BLAS walk's bfloat16 GEMMs: float sums
    of the same bfloat16 products (in another order, or not), rounded to bfloat16 where both
    store them."""
    torch.set_num_threads(2)
    case = bfloat16_case(cell, 40, 13)
    results = {}
    for name, flag in WALKS.items():
        monkeypatch.setenv("FASTRNN_CPU_FUSED", flag)
        torch.manual_seed(0)
        _, fast = make_pair(case, torch.bfloat16)
        torch.manual_seed(1)
        outs, grads, _ = run(fast, make_inputs(case, torch.bfloat16))
        results[name] = outs + [grads[k] for k in sorted(grads)]
    for fused in ("fused_units", "fused_rows"):
        for got, want in zip(results[fused], results["blas"], strict=True):
            assert_close(got, want, kind="same_computation")


@pytest.mark.parametrize("walk_flag", list(WALKS.values()), ids=list(WALKS))
def test_gradcheck(walk_flag, monkeypatch):
    monkeypatch.setenv("FASTRNN_CPU_FUSED", walk_flag)
    torch.set_num_threads(2)
    lstm = fastrnn.LSTM(3, 9, dtype=torch.float64)
    x = torch.randn(4, 7, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(1, 7, 9, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(1, 7, 9, dtype=torch.float64, requires_grad=True)
    params = tuple(lstm.parameters())

    def fn(x, h0, c0, *weights):
        out, (hn, cn) = torch.func.functional_call(
            lstm, dict(zip((n for n, _ in lstm.named_parameters()), weights)), (x, (h0, c0)))
        return out, hn, cn

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *params), **GRADCHECK)


def test_concurrent_calls_from_python_threads(monkeypatch):
    """Several Python threads each running fused walks (each with its own parallel region
    and barrier) on 2 cores: all finish, each with its own correct result."""
    monkeypatch.setenv("FASTRNN_CPU_FUSED", "1")
    torch.set_num_threads(2)
    torch.manual_seed(0)
    lstm = fastrnn.LSTM(8, 24)
    inputs = [torch.randn(30, 5, 8) for _ in range(4)]
    with torch.no_grad():
        want = [lstm(x)[0] for x in inputs]
    got = [None] * len(inputs)

    def work(k):
        with torch.no_grad():
            for _ in range(20):
                got[k] = lstm(inputs[k])[0]

    workers = [threading.Thread(target=work, args=(k,)) for k in range(len(inputs))]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert not any(w.is_alive() for w in workers), "a fused walk did not finish"
    for g, w in zip(got, want):
        assert torch.equal(g, w)
