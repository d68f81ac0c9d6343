"""The leaky recurrence ops of echo state networks (fastrnn::leaky_forward, dense w_hh, and
leaky_forward_csr, w_hh in CSR form) against a float64 loop of the equation: every input
layout, both directions, column indices of 16 bits and more, every row length, 16-bit
dtypes, errors, and no gradient."""

import pytest
import torch

from fastrnn._ops import ops
from helpers.devices import DEVICES
from helpers.tolerances import tolerance

F64 = torch.float64


def leaky_loop(gx, batch_sizes, h0, w, leak, reverse=False):
    """The equation, one packed step at a time: y [N, H], hn [B, H]."""
    steps = list(zip(torch.cumsum(batch_sizes, 0) - batch_sizes, batch_sizes.tolist()))
    h, ys = h0.clone(), gx.new_empty(gx.shape[0], h0.shape[1])
    for first, rows in (reversed(steps) if reverse else steps):
        x = h[:rows]
        h[:rows] = (1 - leak) * x + leak * torch.tanh(gx[first:first + rows] + x @ w.t())
        ys[first:first + rows] = h[:rows]
    return ys, h


def sparse_weight(hidden, density, generator, dtype=F64):
    mask = torch.rand(hidden, hidden, generator=generator) < density
    return (torch.randn(hidden, hidden, generator=generator) * mask * 0.3).to(dtype)


def csr_parts(w, index_dtype):
    csr = w.to_sparse_csr()
    return csr.crow_indices().to(index_dtype), csr.col_indices().to(index_dtype), csr.values()


BATCH_SIZES = {"dense": [3, 3, 3, 3, 3], "packed": [3, 3, 2, 1, 1]}


@pytest.mark.parametrize("layout", sorted(BATCH_SIZES))
@pytest.mark.parametrize("weight", ["dense", "csr-int32", "csr-int64"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("device", DEVICES)
def test_leaky_ops_match_the_equation(layout, weight, reverse, dtype, device):
    if device == "cuda" and weight != "dense":
        pytest.skip("the CSR op is the CPU's")
    g = torch.Generator().manual_seed(0)
    hidden, batch_sizes = 37, torch.tensor(BATCH_SIZES[layout])
    gx = torch.randn(int(batch_sizes.sum()), hidden, generator=g, dtype=F64)
    h0 = torch.randn(3, hidden, generator=g, dtype=F64)
    w = sparse_weight(hidden, 0.2, g)
    leak = torch.rand(hidden, generator=g, dtype=F64) * 0.9 + 0.1
    want_y, want_h = leaky_loop(gx, batch_sizes, h0, w, leak, reverse)
    args = [t.to(device, dtype) for t in (gx, h0, w, leak)]
    if weight == "dense":
        y, hn = ops.leaky_forward(args[0], batch_sizes, args[1], args[2], args[3], reverse)
    else:
        index = torch.int32 if weight == "csr-int32" else torch.int64
        y, hn = ops.leaky_forward_csr(args[0], batch_sizes, args[1], *csr_parts(args[2], index),
                                      args[3], reverse)
    assert y.dtype == hn.dtype == dtype
    torch.testing.assert_close(y.cpu().double(), want_y, atol=tolerance(dtype), rtol=0)
    torch.testing.assert_close(hn.cpu().double(), want_h, atol=tolerance(dtype), rtol=0)


def test_leaky_csr_op_beyond_16_bit_column_indices():
    """H = 70,000 units (more than 16-bit column indices address): a few hundred nonzeros,
    against the equation with the product formed from the CSR lists."""
    g = torch.Generator().manual_seed(5)
    hidden, nnz, steps = 70000, 300, 3
    rows = torch.sort(torch.randint(0, hidden, (nnz,), generator=g)).values
    cols = torch.randint(0, hidden, (nnz,), generator=g)
    cols[-1] = hidden - 1  # the last column, beyond 65535
    values = torch.randn(nnz, generator=g, dtype=F64)
    crow = torch.cat([torch.zeros(1, dtype=torch.long),
                      torch.bincount(rows, minlength=hidden).cumsum(0)])
    gx = torch.randn(steps, hidden, generator=g, dtype=F64)
    h0 = torch.randn(1, hidden, generator=g, dtype=F64)
    leak = torch.full((hidden,), 0.5, dtype=F64)
    y, hn = ops.leaky_forward_csr(gx, torch.ones(steps, dtype=torch.long), h0, crow, cols,
                                  values, leak, False)
    h = h0[0]
    for t in range(steps):
        product = torch.zeros(hidden, dtype=F64).index_add_(0, rows, values * h[cols])
        h = 0.5 * h + 0.5 * torch.tanh(gx[t] + product)
        torch.testing.assert_close(y[t], h, atol=1e-12, rtol=0)
    torch.testing.assert_close(hn[0], h, atol=1e-12, rtol=0)


# The rows of each step: five steps (the walk reads 16-bit copies of the column indices
# where the hidden size allows), or two (too few to pay for the copy: the int32 indices).
STEP_ROWS = {"five_steps": [7, 6, 5, 2, 1], "two_steps": [7, 6]}


@pytest.mark.parametrize("steps", list(STEP_ROWS))
@pytest.mark.parametrize("hidden", [40, 70000])  # 16-bit column indices possible, and not
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_leaky_csr_op_every_row_length_and_a_non_finite_column(hidden, dtype, steps):
    """Row r of w has r mod 19 nonzeros (0 to 18: every remainder of the dot products'
    blocks of 8 nonzeros), over the steps of STEP_ROWS. h0's first row holds inf at
    one column: the rows of w that read it take an infinite product, and no NaN from
    multiplying it by a zero that is not in the row. Against the equation with the product
    formed from the CSR lists, in float64."""
    g = torch.Generator().manual_seed(7)
    lengths = torch.arange(40) % 19
    rows = torch.repeat_interleave(torch.arange(40), lengths)
    cols = torch.cat([torch.randperm(40, generator=g)[:n] for n in lengths.tolist()])
    crow = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0),
                      torch.full((hidden - 40,), int(lengths.sum()))])
    values = torch.randn(len(cols), generator=g, dtype=F64).to(dtype).double()
    batch_sizes = torch.tensor(STEP_ROWS[steps])
    gx = torch.randn(int(batch_sizes.sum()), hidden, generator=g, dtype=F64).to(dtype).double()
    h0 = torch.randn(7, hidden, generator=g, dtype=F64).to(dtype).double()
    h0[0, 5] = float("inf")
    leak = torch.full((hidden,), 0.5, dtype=F64)
    y, _ = ops.leaky_forward_csr(gx.to(dtype), batch_sizes, h0.to(dtype), crow, cols,
                                 values.to(dtype), leak.to(dtype), False)
    h, first = h0.clone(), 0
    for b in batch_sizes.tolist():
        product = torch.zeros(b, hidden, dtype=F64).index_add_(1, rows, values * h[:b, cols])
        h[:b] = 0.5 * h[:b] + 0.5 * torch.tanh(gx[first:first + b] + product)
        assert product[0].isinf().any()
        torch.testing.assert_close(y[first:first + b].double(), h[:b], atol=tolerance(dtype),
                                   rtol=0)
        first += b


def test_leaky_ops_in_16_bit_within_twice_a_rounded_loop():
    g = torch.Generator().manual_seed(1)
    hidden, batch_sizes = 32, torch.tensor([2] * 6)
    gx, h0 = torch.randn(12, hidden, generator=g, dtype=F64), torch.zeros(2, hidden, dtype=F64)
    w, leak = sparse_weight(hidden, 0.3, g), torch.full((hidden,), 0.4, dtype=F64)
    want, _ = leaky_loop(gx, batch_sizes, h0, w, leak)
    for dtype in (torch.bfloat16, torch.float16):
        rounded, _ = leaky_loop(*(t.to(dtype).float() for t in (gx,)), batch_sizes,
                                h0.float(), w.to(dtype).float(), leak.to(dtype).float())
        own = (rounded.double() - want).abs().max().item()
        y, _ = ops.leaky_forward(gx.to(dtype), batch_sizes, h0.to(dtype), w.to(dtype),
                                 leak.to(dtype), False)
        assert (y.double() - want).abs().max().item() <= 2 * max(own, 2 ** -8)


@pytest.mark.parametrize("case, message", [
    ("leak", "leak must be"),
    ("crow_length", "crow_indices must be"),
    ("crow_start", "start at 0"),
    ("crow_order", "never decrease"),
    ("column", "col_indices must lie"),
    ("negative_column", "col_indices must lie"),
    ("values_dtype", "values must have dtype"),
    ("index_dtype", "int32 or int64"),
])
def test_leaky_op_errors(case, message):
    hidden = 6
    gx, h0, bs = torch.zeros(4, hidden), torch.zeros(2, hidden), torch.tensor([2, 2])
    w, leak = torch.eye(hidden), torch.ones(hidden)
    crow, col, values = csr_parts(w, torch.int64)
    if case == "leak":
        leak = torch.ones(hidden + 1)
    elif case == "crow_length":
        crow = crow[:-1]
    elif case == "crow_start":
        crow = crow + 1
    elif case == "crow_order":  # starts at 0 and ends at nnz, but steps back in between
        crow = crow.clone()
        crow[2], crow[3] = crow[3], crow[2] - 1
    elif case == "column":
        col = col + hidden
    elif case == "negative_column":
        col = col - 1
    elif case == "values_dtype":
        values = values.double()
    elif case == "index_dtype":
        col = col.float()
    with pytest.raises(RuntimeError, match=message):
        if case == "leak":
            ops.leaky_forward(gx, bs, h0, w, leak, False)
        else:
            ops.leaky_forward_csr(gx, bs, h0, crow, col, values, leak, False)


def test_leaky_op_has_no_gradient():
    gx = torch.randn(4, 3, requires_grad=True)
    y, _ = ops.leaky_forward(gx, torch.tensor([2, 2]), torch.zeros(2, 3), torch.eye(3),
                             torch.ones(3), False)
    with pytest.raises(RuntimeError, match="forward only"):
        y.sum().backward()
