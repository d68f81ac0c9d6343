"""The per-step products of the CPU's BLAS walk and cell calls (csrc/cpu/gemm.h): up to 32 rows
by a weight of 65536 elements or more they run fastrnn's own kernels
(csrc/cpu/row_products.h), the weight read in place, its columns split among the threads,
and so do products by a transposed weight of 256 columns or more whose rows are packed (up
to 128 rows, each thread packing them for itself); else BLAS. Each must match torch.nn in
float64 and float32, with one and two threads, at sizes that cut every block those kernels
have: depths that are no multiple of a vector (8 floats, 4 doubles), column counts that are
no multiple of 4 (dot products and broadcast blocks) or 16 (column vectors), row counts
around the row blocks (2 or 4 rows; 4 or 8), the packed rows' panels (8 doubles, 16 floats)
and the 32- and 128-row limits, and a last thread's block of columns that is no multiple of
16. A step's weight gradients (a sum of B outer products) run csrc/cpu/outer_products.h's
kernel up to B = 256, BLAS deeper (the cells' sizes here: rows off its blocks of 8 or 6,
columns off its strips of 16 floats or 8 doubles; B = 255 to 257 around the limit), the
threads splitting the rows; and those of 1 MB and more come from pooled buffers
(walk_buffer): they must accumulate into .grad as any tensor does. A cell call's backward up
to 32 rows (and 2^19 weight elements) forms its four products in one parallel region
(csrc/cpu/step_products.h), each thread its share of each."""

import pytest
import torch

import fastrnn
from helpers.cases import Case
from helpers.compare import assert_close
from helpers.cells import CellCase, check_cell_parity
from helpers.parity import check_parity

pytestmark = pytest.mark.usefixtures("torch_state")

# Around the dot products' row blocks and the 32-row limit. The forward products by a w^T of
# 256 columns or more (the LSTMs' and the RNN's at 257 units here) pack the rows where they
# fill 80% of two or more panels of rows (8 doubles, 16 floats), up to 128 rows: 31, 32 and
# 64 in both dtypes, 16, 20 and 33 in float64 only, 48 (three panels of floats) and 128 in
# both; by a weight of 2^20 elements or more one panel too (16 floats, 8 doubles); 129
# never.
BATCHES = [1, 2, 3, 6, 8, 9, 16, 20, 31, 32, 33, 48, 64, 128, 129]


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request, torch_state):
    torch.set_num_threads(request.param)
    return request.param


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("hidden", [13, 257])  # w_hh 13 x 13 (BLAS), or 257 x 257
def test_rnn_layer_matches_torch_nn(hidden, batch, dtype, threads):
    """The RNN's BLAS walk: h @ w_hh^T forward (dot products, or at 257 units the packed
    rows where they fill two or more panels), dgh @ w_hh backward."""
    case = Case("RNN-tanh", True, 1, False, False, "dense", True, input_size=5,
                hidden_size=hidden, batch=batch, steps=3)
    check_parity(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch", BATCHES)
def test_projected_lstm_matches_torch_nn(batch, dtype, threads):
    """A projected LSTM takes the BLAS walk: h @ w_hh^T (w_hh 1200 x 230) and m @ w_hr^T
    (w_hr 230 x 300) forward, their transposes' products backward."""
    case = Case("LSTM-proj", True, 1, False, False, "dense", True, input_size=6,
                hidden_size=300, proj_size=230, batch=batch, steps=3)
    check_parity(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("cell,input_size,hidden", [
    ("LSTMCell", 100, 167),  # w_ih 668 x 100, w_hh 668 x 167
    ("GRUCell", 257, 86),  # w_ih 258 x 257, w_hh 258 x 86 (BLAS)
    ("RNNCell-relu", 7, 300),  # w_ih 300 x 7 (BLAS), w_hh 300 x 300
    ("LSTMCell", 520, 513),  # w_ih 2052 x 520, w_hh 2052 x 513: over 2^20 elements
    ("GRUCell", 130, 171),  # w_ih 513 x 130, w_hh 513 x 171: columns no multiple of 4
])
def test_cell_matches_torch_nn(cell, input_size, hidden, batch, dtype, threads):
    """A cell call: its input product (onto the biases), recurrent product and their
    gradients w.r.t. x and h."""
    case = CellCase(cell, input_size=input_size, hidden_size=hidden, batch=batch)
    check_cell_parity(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch", [3, 16, 31, 64])
def test_forward_products_equal_on_one_and_two_threads(batch, dtype):
    """Each output of fastrnn's kernels is one sum in one order however the threads split
    the columns: an LSTM cell's forward (its input and recurrent products by w^T, 668
    columns: 336 and 332 a thread) gives the same bits on one thread and on two, with the
    dot products (3 rows; 16 floats), the packed rows (16 doubles; 31 and 64 rows)."""
    torch.manual_seed(0)
    cell = fastrnn.LSTMCell(100, 167, dtype=dtype)
    x, h, c = (torch.randn(batch, n, dtype=dtype) for n in (100, 167, 167))
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.no_grad():
            results.append(cell(x, (h, c)))
    for got, want in zip(results[1], results[0]):
        assert torch.equal(got, want)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch", [255, 256, 257])
def test_deep_weight_gradients_match_torch_nn(batch, dtype, threads):
    """Weight gradients of depth B around the outer-product kernel's limit of 256 steps."""
    case = CellCase("GRUCell", input_size=130, hidden_size=171, batch=batch)
    check_cell_parity(case, dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch", [1, 9, 64])
def test_weight_gradients_equal_on_one_and_two_threads(batch, dtype):
    """Each element of a weight's gradient is one sum over the batch in order however the
    threads split its rows (513 of them: a short last block of rows)."""
    torch.manual_seed(0)
    cell = fastrnn.GRUCell(130, 171, dtype=dtype)
    x, h = torch.randn(batch, 130, dtype=dtype), torch.randn(batch, 171, dtype=dtype)
    grads = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        grads.append(torch.autograd.grad(cell(x, h).sum(), list(cell.parameters())))
    for got, want in zip(grads[1], grads[0], strict=True):
        assert torch.equal(got, want)


def test_pooled_weight_gradients_accumulate():
    """LSTMCell(512, 1024): w_ih's and w_hh's gradients (8 and 16 MB) come from the pool;
    two backward calls accumulate into .grad, and after zero_grad(set_to_none=True) a third
    starts afresh, each as torch.nn's."""
    fast = fastrnn.LSTMCell(512, 1024)
    ref = torch.nn.LSTMCell(512, 1024)
    ref.load_state_dict(fast.state_dict())
    inputs = [(torch.randn(2, 512), (torch.randn(2, 1024), torch.randn(2, 1024)))
              for _ in range(3)]

    def backward(cell, index):
        h, c = cell(*inputs[index])
        (h.sum() + 2 * c.sum()).backward()

    for index in range(3):
        if index == 2:
            fast.zero_grad(set_to_none=True)
            ref.zero_grad(set_to_none=True)
        backward(fast, index)
        backward(ref, index)
        for got, want in zip(fast.parameters(), ref.parameters(), strict=True):
            assert_close(got.grad, want.grad)


@pytest.mark.parametrize("wanted", [("x",), ("h", "c"), ("weights",), ("x", "h", "c"),
                                    ("x", "weights"), ("x", "h", "c", "weights")],
                         ids="+".join)
def test_cell_backward_forms_the_wanted_gradients(wanted):
    """A cell's backward forms its products in one parallel region (csrc/cpu/
    step_products.h), each thread a share of every product: x's gradient, the state's, and
    the weights', only those asked for, in any combination, each as torch.nn's (LSTMCell,
    I=100 H=167, B=9, two threads)."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    ref = torch.nn.LSTMCell(100, 167, dtype=torch.float64)
    fast = fastrnn.LSTMCell(100, 167, dtype=torch.float64)
    fast.load_state_dict(ref.state_dict())
    values = {name: torch.randn(9, n, dtype=torch.float64)
              for name, n in (("x", 100), ("h", 167), ("c", 167))}

    def gradients(cell):
        leaves = {name: v.clone().requires_grad_(name in wanted) for name, v in values.items()}
        cell.requires_grad_("weights" in wanted)
        h, c = cell(leaves["x"], (leaves["h"], leaves["c"]))
        wrt = [leaves[name] for name in ("x", "h", "c") if name in wanted]
        wrt += list(cell.parameters()) if "weights" in wanted else []
        return torch.autograd.grad((h * 1.5 + c).sum(), wrt)

    for got, want in zip(gradients(fast), gradients(ref), strict=True):
        assert_close(got, want)
