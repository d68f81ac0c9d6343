"""The op fastrnn::linear, x @ w^T + bias (in float32 on the CPUs where it was measured
faster, oneDNN from a depth and fastrnn's panel kernel below it or for a result of
LINEAR_FRESH_BYTES; in bfloat16 with a bias oneDNN where LINEAR_BFLOAT16_BIAS; BLAS
otherwise), against
float64 and torch: every weight layout, the panels in chunks, strided input, its gradients,
gradcheck, opcheck, empty operands, which library it takes, errors; and fastrnn::convert.

Where the op never takes oneDNN on this CPU (LINEAR_MIN_DEPTH is 0) its tests still run (on
BLAS); those that check oneDNN ran skip."""

import pytest
import torch
from torch.autograd import gradcheck

from fastrnn._input_product import LINEAR_BFLOAT16_BIAS, LINEAR_FRESH_BYTES, LINEAR_MIN_DEPTH
from helpers.ops import ops
from helpers.products import BIAS, DEPTH, assert_low_precision_close, assert_product_close
from helpers.tolerances import GRADCHECK

pytestmark = pytest.mark.usefixtures("torch_state")

# How weight is laid out in memory: its own [M, K], or the transpose of a [K, M] (the input
# gradient's call), or a strided view.
WEIGHT_LAYOUTS = ["contiguous", "transposed", "strided"]


def _operands(n, k, m, dtype, bias, layout, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, k, generator=g, dtype=torch.float64)
    w = {"contiguous": lambda: torch.randn(m, k, generator=g, dtype=torch.float64),
         "transposed": lambda: torch.randn(k, m, generator=g, dtype=torch.float64).t(),
         "strided": lambda: torch.randn(m, 2 * k, generator=g, dtype=torch.float64)[:, ::2],
         }[layout]()
    b = torch.randn(m, generator=g, dtype=torch.float64) if bias else None
    cast = lambda t: None if t is None else t.to(dtype)
    return cast(x), cast(w), cast(b), (x, w, b)


def _reference(x, w, b):
    return x @ w.t() + (0 if b is None else b)


# Depths below and above the one from which the op takes oneDNN.
DEPTHS = [33, DEPTH + 44]
needs_onednn = pytest.mark.skipif(LINEAR_MIN_DEPTH == 0,
                                  reason="fastrnn::linear takes oneDNN only on the CPUs measured")


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("layout", WEIGHT_LAYOUTS)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_linear_against_float64(dtype, bias, layout, depth):
    """Forward at the given depth, backward's input gradient at depth 45 or DEPTH + 12."""
    x, w, b, exact = _operands(67, depth, 45 if depth < DEPTH else DEPTH + 12, dtype, bias,
                               layout)
    x.requires_grad_()
    w.requires_grad_()
    got = ops.linear(x, w, b)
    want = _reference(*exact)
    assert got.dtype == dtype and got.shape == (67, w.shape[0]) and got.is_contiguous()
    assert_product_close(got, want)
    grad = torch.randn_like(got)
    gx, gw = torch.autograd.grad(got, (x, w), grad)
    assert_product_close(gx, grad.double() @ exact[1])
    assert_product_close(gw, grad.double().t() @ exact[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_panels_in_chunks(threads):
    """Just below oneDNN's depth, more panels per thread than one chunk holds (256 KB: 16
    panels of 16 columns at depth 255), a part panel, and row blocks of 5 and 4."""
    torch.set_num_threads(threads)
    x, w, b, exact = _operands(13, DEPTH - 1, 16 * 40 + 5, torch.float32, True, "contiguous")
    got = ops.linear(x, w, b)
    assert got.shape == (13, 16 * 40 + 5) and got.is_contiguous()
    assert_product_close(got, _reference(*exact))


@pytest.mark.parametrize("depth", DEPTHS)
def test_linear_strided_input(depth):
    x = torch.randn(40, 2 * depth)[:, ::2]
    w, b = torch.randn(24, depth), torch.randn(24)
    assert_product_close(ops.linear(x, w, b), _reference(x.double(), w.double(), b.double()))


@pytest.mark.parametrize("bias", BIAS)
def test_linear_bias_gradient(bias):
    x, w, b, _ = _operands(9, 5, 7, torch.float32, bias, "contiguous")
    if b is not None:
        b.requires_grad_()
    out = ops.linear(x, w, b)
    if b is None:
        assert not out.requires_grad
        return
    (gb,) = torch.autograd.grad(out, b, torch.ones_like(out))
    torch.testing.assert_close(gb, torch.full_like(b, 9.0))


@pytest.mark.parametrize("bias", BIAS)
def test_linear_gradcheck(bias):
    x, w, b, _ = _operands(6, 4, 5, torch.float64, bias, "contiguous")
    args = [t.requires_grad_() for t in (x, w)] + [None if b is None else b.requires_grad_()]
    assert gradcheck(ops.linear, args, **GRADCHECK)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_linear_opcheck(dtype, bias, depth):
    x, w, b, _ = _operands(8, depth, 10, dtype, bias, "contiguous")
    torch.library.opcheck(ops.linear.default, (x.requires_grad_(), w.requires_grad_(), b))


@pytest.mark.parametrize("layout", ["contiguous", "transposed"])
@pytest.mark.parametrize("dtypes", [(torch.bfloat16, torch.float32),
                                    (torch.float32, torch.bfloat16),
                                    (torch.float64, torch.float32)], ids=str)
def test_convert_equals_to_and_its_gradient_converts_back(dtypes, layout):
    """fastrnn::convert (the input products' dtype change under autocast): Tensor.to's
    values, a new contiguous tensor, and the gradient in the input's dtype; opcheck."""
    source, target = dtypes
    t = torch.randn(7, 5, dtype=source)
    t = t.t() if layout == "transposed" else t
    before = t.clone()
    got = ops.convert(t, target)
    assert got.dtype == target and got.is_contiguous() and torch.equal(got, t.to(target))
    assert torch.equal(t, before)
    leaf = t.detach().requires_grad_()
    grad = torch.randn(t.shape, dtype=target)
    (got_grad,) = torch.autograd.grad(ops.convert(leaf, target), leaf, grad)
    assert got_grad.dtype == source and torch.equal(got_grad, grad.to(source))
    torch.library.opcheck(ops.convert.default, (leaf, target))


@pytest.mark.parametrize("shape", [(0, 300, 7), (6, 0, 7), (6, 300, 0)], ids=["N0", "K0", "M0"])
@pytest.mark.parametrize("bias", BIAS)
def test_linear_empty(shape, bias):
    n, k, m = shape
    x, w = torch.randn(n, k), torch.randn(m, k)
    b = torch.randn(m) if bias else None
    want = torch.addmm(b, x, w.t()) if bias else torch.mm(x, w.t())
    torch.testing.assert_close(ops.linear(x, w, b), want)


def _onednn_calls(fn):
    """How many times fn() called oneDNN's inner product (mkldnn::_linear_pointwise)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return sum(event.count for event in prof.key_averages()
               if event.key == "mkldnn::_linear_pointwise")


@needs_onednn
@pytest.mark.parametrize("bias", BIAS)
def test_linear_takes_onednn_from_its_depth(bias):
    """Forward and the input gradient each take oneDNN from the depth on, not below."""
    x, w, b, _ = _operands(64, DEPTH, 40, torch.float32, bias, "contiguous")
    assert _onednn_calls(lambda: ops.linear(x, w, b)) == 1
    x, w, b, _ = _operands(64, DEPTH - 1, 40, torch.float32, bias, "contiguous")
    assert _onednn_calls(lambda: ops.linear(x, w, b)) == 0
    x, w, b, _ = _operands(64, 40, DEPTH, torch.float32, bias, "contiguous")
    out = ops.linear(x.requires_grad_(), w, b)
    assert _onednn_calls(lambda: out.backward(torch.ones_like(out))) == 1


@needs_onednn
def test_linear_forms_a_fresh_sized_result_itself():
    """A result of LINEAR_FRESH_BYTES or more, from oneDNN's depth: the panel kernel's, no
    oneDNN call, right against float64; one row fewer: oneDNN's. Two threads: with many,
    the panels (128) would be too few a thread for the panel kernel."""
    torch.set_num_threads(2)
    columns = 2048
    rows = LINEAR_FRESH_BYTES // (4 * columns)
    x, w, b, exact = _operands(rows, DEPTH, columns, torch.float32, True, "contiguous")
    got = []
    assert _onednn_calls(lambda: got.append(ops.linear(x, w, b))) == 0
    assert_product_close(got[0], _reference(*exact))
    assert _onednn_calls(lambda: ops.linear(x[1:], w, b)) == 1


@pytest.mark.parametrize("dtype, onednn", [(torch.float32, False), (torch.bfloat16, False),
                                           (torch.bfloat16, True), (torch.float64, True)],
                         ids=str)
def test_linear_without_onednn_is_torch_blas(monkeypatch, dtype, onednn):
    """With oneDNN switched off, and in dtypes other than float32 (but bfloat16 with a bias
    where LINEAR_BFLOAT16_BIAS), the op is torch's addmm, to the bit, and calls no oneDNN
    product."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
    for depth in (DEPTH - 1, DEPTH):  # below oneDNN's depth, the panel kernel's where on
        x, w, b = (torch.randn(64, depth, dtype=dtype), torch.randn(40, depth, dtype=dtype),
                   torch.randn(40, dtype=dtype))
        onednn_bias = dtype == torch.bfloat16 and onednn and LINEAR_BFLOAT16_BIAS
        for bias in ([None] if onednn_bias else [None, b]):
            assert _onednn_calls(lambda: ops.linear(x, w, bias)) == 0
            want = torch.mm(x, w.t()) if bias is None else torch.addmm(bias, x, w.t())
            assert torch.equal(ops.linear(x, w, bias), want)


@pytest.mark.skipif(not LINEAR_BFLOAT16_BIAS, reason="the op takes oneDNN in bfloat16 only on "
                    "the CPUs measured, where oneDNN computes in it")
@pytest.mark.parametrize("layout", WEIGHT_LAYOUTS)
def test_linear_bfloat16_with_bias_takes_onednn(layout):
    """A bfloat16 product with a bias: one oneDNN call (which adds the bias as it stores),
    its error against float64 within LOW_PRECISION's rule of torch.addmm's in bfloat16;
    without oneDNN, torch's addmm."""
    x, w, b, exact = _operands(67, 40, 45, torch.bfloat16, True, layout)
    got = []
    assert _onednn_calls(lambda: got.append(ops.linear(x, w, b))) == 1
    assert got[0].dtype == torch.bfloat16 and got[0].shape == (67, 45)
    assert_low_precision_close(got[0], torch.addmm(b, x, w.t()), _reference(*exact))
    with torch.backends.mkldnn.flags(enabled=False):
        assert _onednn_calls(lambda: ops.linear(x, w, b)) == 0


@pytest.mark.parametrize("args, match", [
    ((torch.randn(4, 3), torch.randn(5, 2), None), "input \\[N, K\\] and weight \\[M, K\\]"),
    ((torch.randn(4, 3, 1), torch.randn(5, 3), None), "input \\[N, K\\] and weight \\[M, K\\]"),
    ((torch.randn(4, 3), torch.randn(5, 3, dtype=torch.float64), None), "one dtype"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(4)), "bias \\[5\\]"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, dtype=torch.float64)), "bias \\[5\\]"),
    ((torch.ones(4, 3, dtype=torch.long), torch.ones(5, 3, dtype=torch.long), None),
     "floating dtype"),
], ids=["K", "rank", "dtype", "bias_size", "bias_dtype", "integer"])
def test_linear_errors(args, match):
    with pytest.raises(RuntimeError, match=match):
        ops.linear(*args)
