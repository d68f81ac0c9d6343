"""The layers' input product x @ w_ih^T + bias: the op fastrnn::linear (oneDNN in float32 on
the CPU, BLAS otherwise) against float64 and torch, its gradients, opcheck and errors; the
rule that sends a layer's product through it (functional.input_product); and the layers
taking it, against torch.nn."""

import pytest
import torch
from torch.autograd import gradcheck

import fastrnn
from fastrnn import _ops, functional
from helpers.cases import CELLS, KINDS, Case
from helpers.ops import ops
from helpers.parity import check_parity
from helpers.tolerances import GRADCHECK

pytestmark = pytest.mark.usefixtures("torch_state")

BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]
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


# Depths below and above the one from which the op takes oneDNN (csrc/cpu/linear.cpp).
DEPTHS = [33, 300]


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("layout", WEIGHT_LAYOUTS)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_linear_against_float64(dtype, bias, layout, depth):
    x, w, b, exact = _operands(67, depth, 45, dtype, bias, layout)
    x.requires_grad_()
    w.requires_grad_()
    got = ops.linear(x, w, b)
    want = _reference(*exact)
    assert got.dtype == dtype and got.shape == (67, 45) and got.is_contiguous()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.double(), want, atol=tol * want.abs().max().item(), rtol=0)
    grad = torch.randn_like(got)
    gx, gw = torch.autograd.grad(got, (x, w), grad)
    want_gx, want_gw = grad.double() @ exact[1], grad.double().t() @ exact[0]
    torch.testing.assert_close(gx.double(), want_gx, atol=tol * want_gx.abs().max().item(), rtol=0)
    torch.testing.assert_close(gw.double(), want_gw, atol=tol * want_gw.abs().max().item(), rtol=0)


@pytest.mark.parametrize("depth", DEPTHS)
def test_linear_strided_input(depth):
    x = torch.randn(40, 2 * depth)[:, ::2]
    w, b = torch.randn(24, depth), torch.randn(24)
    want = _reference(x.double(), w.double(), b.double())
    torch.testing.assert_close(ops.linear(x, w, b).double(), want,
                               atol=2e-5 * want.abs().max().item(), rtol=0)


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


@pytest.mark.parametrize("shape", [(0, 300, 7), (6, 0, 7), (6, 300, 0)], ids=["N0", "K0", "M0"])
@pytest.mark.parametrize("bias", BIAS)
def test_linear_empty(shape, bias):
    n, k, m = shape
    x, w = torch.randn(n, k), torch.randn(m, k)
    b = torch.randn(m) if bias else None
    want = torch.addmm(b, x, w.t()) if bias else torch.mm(x, w.t())
    torch.testing.assert_close(ops.linear(x, w, b), want)


@pytest.mark.parametrize("dtype, onednn", [(torch.float32, False), (torch.bfloat16, True),
                                           (torch.float64, True)], ids=str)
def test_linear_without_onednn_is_torch_blas(monkeypatch, dtype, onednn):
    """With oneDNN switched off, and in dtypes other than float32, the op is torch's addmm,
    to the bit (at these sizes oneDNN's float32 sums differ from it in the last bits)."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
    x, w, b = (torch.randn(64, 300, dtype=dtype), torch.randn(40, 300, dtype=dtype),
               torch.randn(40, dtype=dtype))
    assert torch.equal(ops.linear(x, w, b), torch.addmm(b, x, w.t()))


@pytest.mark.parametrize("args, match", [
    ((torch.randn(4, 3), torch.randn(5, 2), None), "input \\[N, K\\] and weight \\[M, K\\]"),
    ((torch.randn(4, 3, 1), torch.randn(5, 3), None), "input \\[N, K\\] and weight \\[M, K\\]"),
    ((torch.randn(4, 3), torch.randn(5, 3, dtype=torch.float64), None), "one dtype"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(4)), "bias \\[5\\]"),
    ((torch.randn(4, 3), torch.randn(5, 3), torch.randn(5, dtype=torch.float64)), "bias \\[5\\]"),
], ids=["K", "rank", "dtype", "bias_size", "bias_dtype"])
def test_linear_errors(args, match):
    with pytest.raises(RuntimeError, match=match):
        ops.linear(*args)


def _spy_linear(monkeypatch):
    """The input shapes of every fastrnn::linear call the layers (forward) and the op's
    autograd (backward) make from now on."""
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(ops, name)

        @staticmethod
        def linear(*args):
            calls.append(args[0].shape)
            return ops.linear(*args)

    monkeypatch.setattr(functional, "ops", Spy())
    monkeypatch.setattr(_ops, "ops", Spy())
    return calls


@pytest.mark.parametrize("dtype, rows, expected", [
    (torch.float32, 2 ** 27 // (64 * 32), True),    # at the threshold
    (torch.float32, 2 ** 27 // (64 * 32) - 1, False),  # just below it
    (torch.float64, 2 ** 27 // (64 * 32), False),   # oneDNN's product is float32 only
], ids=["float32_at", "float32_below", "float64"])
def test_input_product_rule(monkeypatch, dtype, rows, expected):
    calls = _spy_linear(monkeypatch)
    x, w = torch.randn(rows, 32, dtype=dtype), torch.randn(64, 32, dtype=dtype)
    got = functional.input_product(x, w)
    assert (len(calls) == 1) == expected
    torch.testing.assert_close(got, torch.mm(x, w.t()))


# Every cell and input kind, two bidirectional layers, with every input product of the
# layers sent through fastrnn::linear (the threshold at 0), deep enough that it takes
# oneDNN: the first layer's product (I = 260) and the LSTM's input gradient (4H = 256).
THROUGH_LINEAR = [Case(cell, bias, 2, True, False, kind, True, input_size=260, hidden_size=64)
                  for cell in CELLS for kind in KINDS for bias in (True, False)]


@pytest.mark.parametrize("case", THROUGH_LINEAR, ids=[c.id for c in THROUGH_LINEAR])
def test_layers_through_linear_match_torch_nn(monkeypatch, case):
    monkeypatch.setattr(functional, "_LINEAR_MIN_MULTIPLY_ADDS", 0)
    calls = _spy_linear(monkeypatch)
    check_parity(case, torch.float32)
    assert calls  # forward, and the input gradient in backward


def test_layer_at_full_size_takes_linear(monkeypatch):
    """A layer whose product is past the threshold takes the op without any patching."""
    calls = _spy_linear(monkeypatch)
    layer = fastrnn.LSTM(128, 64)
    x = torch.randn(64, 64, 128, requires_grad=True)  # 4096 rows x 128 x 256 = 2^27
    layer(x)[0].sum().backward()
    assert calls == [torch.Size([4096, 128]), torch.Size([4096, 256])]


@pytest.fixture
def through_linear(monkeypatch):
    """Every input product of the layers through fastrnn::linear; dynamo reset around."""
    monkeypatch.setattr(functional, "_LINEAR_MIN_MULTIPLY_ADDS", 0)
    torch._dynamo.reset()
    with torch._dynamo.config.patch(allow_rnn=True):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_layer_through_linear(through_linear, backend):
    """torch.compile(fullgraph=True) of a layer whose products go through the op (forward
    and the input gradient in backward) gives eager's results and gradients."""
    torch.manual_seed(0)
    layer = fastrnn.LSTM(260, 64, num_layers=2)
    x = torch.randn(6, 3, 260)
    results = []
    for module in (layer, torch.compile(layer, fullgraph=True, backend=backend)):
        xi = x.clone().requires_grad_()
        out, (h, c) = module(xi)
        grads = torch.autograd.grad((out.sum() + h.sum() + c.sum()), [xi, *layer.parameters()])
        results.append([out, h, c, *grads])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_exported_layer_holds_linear(through_linear):
    torch.manual_seed(0)
    layer = fastrnn.GRU(260, 32)
    x = torch.randn(5, 2, 260)
    program = torch.export.export(layer, (x,))
    targets = {str(node.target) for node in program.graph.nodes}
    assert "fastrnn.linear.default" in targets, targets
    for got, want in zip(program.module()(x), layer(x)):
        torch.testing.assert_close(got, want)
