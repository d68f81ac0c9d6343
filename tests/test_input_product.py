"""The layers' input product x @ w_ih^T + bias: the op fastrnn::linear (in float32 on the
CPUs where it was measured faster, oneDNN from a depth and fastrnn's panel kernel below it;
BLAS otherwise) against float64 and torch, its
gradients, opcheck and errors; the rule that sends a layer's product through it
(fastrnn._input_product.input_product); the layers taking it, against torch.nn, and the
clockwork RNN's input gradients taking it, against float64.

Where the op never takes oneDNN on this CPU (LINEAR_MIN_DEPTH is 0) the tests of the op
and of the layers through it still run (on BLAS); those that check oneDNN ran skip."""

import pytest
import torch
from torch.autograd import gradcheck

import fastrnn
from fastrnn import _input_product
from fastrnn._input_product import (LINEAR_MIN_DEPTH, LINEAR_MIN_MULTIPLY_ADDS,
                                    LINEAR_POOLED_BYTES)
from helpers.cases import CELLS, KINDS, Case
from helpers.ops import ops
from helpers.parity import check_parity
from helpers.tolerances import GRADCHECK, atol_rtol, tolerance

pytestmark = pytest.mark.usefixtures("torch_state")

BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]
OTHER_LIBRARY = atol_rtol(torch.float32, "other_product_library")
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


def assert_product_close(got, want):
    """got (a product in its dtype) within "product_vs_float64" of want (float64)."""
    bound = tolerance(got.dtype, "product_vs_float64") * want.abs().max().item()
    torch.testing.assert_close(got.double(), want, atol=bound, rtol=0)


# Depths below and above the one from which the op takes oneDNN (csrc/cpu/linear.cpp: 256
# where it does; below it, fastrnn's panel kernel).
DEPTH = max(LINEAR_MIN_DEPTH, 256)
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


@pytest.mark.parametrize("dtype, onednn", [(torch.float32, False), (torch.bfloat16, True),
                                           (torch.float64, True)], ids=str)
def test_linear_without_onednn_is_torch_blas(monkeypatch, dtype, onednn):
    """With oneDNN switched off, and in dtypes other than float32, the op is torch's addmm,
    to the bit, and calls no oneDNN product."""
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
    for depth in (DEPTH - 1, DEPTH):  # below oneDNN's depth, the panel kernel's where on
        x, w, b = (torch.randn(64, depth, dtype=dtype), torch.randn(40, depth, dtype=dtype),
                   torch.randn(40, dtype=dtype))
        assert _onednn_calls(lambda: ops.linear(x, w, b)) == 0
        assert torch.equal(ops.linear(x, w, b), torch.addmm(b, x, w.t()))


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

    monkeypatch.setattr(_input_product, "ops", Spy())
    return calls


@pytest.fixture
def measured_cpu(monkeypatch):
    """The rule as on a CPU where the op takes oneDNN (on others the op is BLAS's)."""
    monkeypatch.setattr(_input_product, "LINEAR_MIN_DEPTH", DEPTH)


# (device, dtype, rows, depth I, G*H, x requires grad, goes through the op), for a product of
# rows x I x G*H multiply-adds against LINEAR_MIN_MULTIPLY_ADDS, and below oneDNN's depth a
# result of rows x G*H floats against LINEAR_POOLED_BYTES; in float64, only the result's
# size counts.
RULE = {
    "deep_at_threshold": ("cpu", torch.float32, LINEAR_MIN_MULTIPLY_ADDS // (DEPTH * 64), DEPTH,
                          64, False, True),
    "deep_below_threshold": ("cpu", torch.float32,
                             LINEAR_MIN_MULTIPLY_ADDS // (DEPTH * 64) - 1, DEPTH, 64, False, False),
    "shallow_inference": ("cpu", torch.float32, LINEAR_MIN_MULTIPLY_ADDS // (64 * DEPTH), 64,
                          DEPTH, False, True),
    "shallow_training": ("cpu", torch.float32, LINEAR_MIN_MULTIPLY_ADDS // (64 * DEPTH), 64,
                         DEPTH, True, True),
    "shallow_both_ways": ("cpu", torch.float32, LINEAR_MIN_MULTIPLY_ADDS // (64 * 64), 64, 64,
                          True, True),
    "shallow_pooled_result": ("cpu", torch.float32, LINEAR_POOLED_BYTES // (4 * DEPTH), 64,
                              DEPTH, False, True),
    "shallow_smaller_result": ("cpu", torch.float32, LINEAR_POOLED_BYTES // (4 * DEPTH) - 1,
                               64, DEPTH, False, False),
    "deep_pooled_result": ("cpu", torch.float32, LINEAR_POOLED_BYTES // (4 * 64), DEPTH, 64,
                           False, False),
    "float64_pooled_result": ("cpu", torch.float64, LINEAR_POOLED_BYTES // (8 * 64), DEPTH,
                              64, True, True),
    "float64_smaller_result": ("cpu", torch.float64, LINEAR_POOLED_BYTES // (8 * 64) - 1,
                               DEPTH, 64, False, False),
    "meta": ("meta", torch.float32, LINEAR_MIN_MULTIPLY_ADDS // (DEPTH * 64), DEPTH, 64,
             False, False),
}


@pytest.mark.parametrize("case", list(RULE))
def test_input_product_rule(monkeypatch, measured_cpu, case):
    device, dtype, rows, depth, width, grad, expected = RULE[case]
    calls = _spy_linear(monkeypatch)
    x = torch.randn(rows, depth, dtype=dtype, device=device, requires_grad=grad)
    w = torch.randn(width, depth, dtype=dtype, device=device)
    got = _input_product.input_product(x, w)
    assert (len(calls) == 1) == expected
    if device == "cpu":
        assert_product_close(got, x.detach().double() @ w.double().t())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_product_rule_off_where_unmeasured(monkeypatch, dtype):
    """Where oneDNN's product was not measured the op takes no float32 product, and still
    takes a large float64 one (BLAS into a reused buffer, on every CPU)."""
    calls = _spy_linear(monkeypatch)
    monkeypatch.setattr(_input_product, "LINEAR_MIN_DEPTH", 0)
    rows = max(LINEAR_MIN_MULTIPLY_ADDS // (DEPTH * 64), LINEAR_POOLED_BYTES // (8 * 64))
    _input_product.input_product(torch.randn(rows, DEPTH, dtype=dtype),
                                 torch.randn(64, DEPTH, dtype=dtype))
    assert len(calls) == (dtype == torch.float64)


@pytest.mark.parametrize("bias", BIAS)
def test_input_product_in_a_16_bit_dtype(bias):
    """With a dtype, the product and its gradients w.r.t. x and w_ih are bfloat16 products
    (float accumulation) returned in x's dtype, the bias added after in x's dtype: its
    gradient is the float sum of the output's gradient, not rounded to bfloat16."""
    g = torch.Generator().manual_seed(5)
    leaves = [torch.randn(*shape, generator=g, requires_grad=True)
              for shape in ((40, 24), (12, 24), (12,))]
    x, w, b = leaves
    got = _input_product.input_product(x, w, b if bias else None, torch.bfloat16)
    product = torch.mm(x.detach().bfloat16(), w.detach().bfloat16().t()).float()
    assert got.dtype == torch.float32
    assert torch.equal(got, product + b.detach() if bias else product)
    grad = torch.randn(got.shape, generator=g)
    got.backward(grad)
    low = grad.bfloat16()
    assert torch.equal(x.grad, torch.mm(low, w.detach().bfloat16()).float())
    assert torch.equal(w.grad, torch.mm(low.t(), x.detach().bfloat16()).float())
    assert (b.grad is None) == (not bias)
    if bias:
        assert torch.equal(b.grad, grad.sum(0))


@pytest.fixture
def every_product_through_linear(monkeypatch, measured_cpu):
    monkeypatch.setattr(_input_product, "LINEAR_MIN_MULTIPLY_ADDS", 0)


# Every cell and input kind, two bidirectional layers, with every input product of the
# layers sent through fastrnn::linear: the first layer's product deep enough for oneDNN
# (I = DEPTH + 4, where the op takes it), the LSTM's input gradient too (4H = DEPTH), the
# others shallower (at these sizes too few columns for the panel kernel: at::addmm).
THROUGH_LINEAR = [Case(cell, bias, 2, True, False, kind, True, input_size=DEPTH + 4,
                       hidden_size=DEPTH // 4) for cell in CELLS for kind in KINDS
                  for bias in (True, False)]


@pytest.mark.parametrize("case", THROUGH_LINEAR, ids=[c.id for c in THROUGH_LINEAR])
def test_layers_through_linear_match_torch_nn(monkeypatch, every_product_through_linear, case):
    calls = _spy_linear(monkeypatch)
    check_parity(case, torch.float32)
    # Per direction and layer, forward and the input gradient in backward.
    assert len(calls) == 8, calls


def test_layer_at_full_size_takes_linear(monkeypatch, measured_cpu):
    """A layer whose product is past the threshold takes the op with the rule as it is."""
    calls = _spy_linear(monkeypatch)
    layer = fastrnn.LSTM(128, DEPTH // 4)
    rows = LINEAR_MIN_MULTIPLY_ADDS // (128 * DEPTH)
    x = torch.randn(rows // 64, 64, 128, requires_grad=True)
    layer(x)[0].sum().backward()
    assert calls == [torch.Size([rows, 128]), torch.Size([rows, DEPTH])]


# The variants and the structured recurrences through the op, against themselves through
# torch.addmm: outputs and every gradient.
OWN_PRODUCTS = {
    "peephole_coupled_lstm": lambda: fastrnn.VariantLSTM(DEPTH + 4, 16, num_layers=2,
                                                         peepholes=True, coupled_gates=True),
    "layer_norm_lstm": lambda: fastrnn.VariantLSTM(DEPTH + 4, 16, layer_norm=True),
    "layer_norm_gru": lambda: fastrnn.VariantGRU(DEPTH + 4, 16, layer_norm=True),
    "clockwork": lambda: fastrnn.ClockworkRNN(DEPTH + 4, 16, periods=(1, 2)),
    "dilated": lambda: fastrnn.DilatedGRU(DEPTH + 4, 16, num_layers=2),
}


@pytest.mark.parametrize("name", list(OWN_PRODUCTS))
def test_own_recurrences_through_linear(monkeypatch, every_product_through_linear, name):
    torch.manual_seed(0)
    module = OWN_PRODUCTS[name]()
    x = torch.randn(6, 3, DEPTH + 4)
    results = []
    for through in (False, True):
        monkeypatch.setattr(_input_product, "LINEAR_MIN_DEPTH", DEPTH if through else 0)
        calls = _spy_linear(monkeypatch)
        xi = x.clone().requires_grad_()
        out = module(xi)[0]
        grads = torch.autograd.grad(out.sum(), [xi, *module.parameters()], allow_unused=True)
        assert bool(calls) == through
        results.append([out, *grads])
    for got, want in zip(results[1], results[0]):
        if want is None:
            assert got is None
        else:
            torch.testing.assert_close(got, want, **OTHER_LIBRARY)


def test_reservoir_through_linear(monkeypatch, every_product_through_linear):
    reservoir = fastrnn.Reservoir(DEPTH + 4, 32, seed=0)
    x = torch.randn(5, 2, DEPTH + 4)
    calls = _spy_linear(monkeypatch)
    got = reservoir(x)[0]
    assert calls
    monkeypatch.setattr(_input_product, "LINEAR_MIN_DEPTH", 0)
    torch.testing.assert_close(got, reservoir(x)[0], **OTHER_LIBRARY)


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_layer_keeps_addmm(every_product_through_linear, dynamo, backend):
    """Compiled, the layer's products stay torch's (the graph's to lower), and it gives
    eager's results and gradients, which went through the op."""
    torch.manual_seed(0)
    layer = fastrnn.LSTM(DEPTH + 4, 16, num_layers=2)
    x = torch.randn(6, 3, DEPTH + 4)
    results = []
    for module in (layer, torch.compile(layer, fullgraph=True, backend=backend)):
        xi = x.clone().requires_grad_()
        out, (h, c) = module(xi)
        grads = torch.autograd.grad((out.sum() + h.sum() + c.sum()), [xi, *layer.parameters()])
        results.append([out, h, c, *grads])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, **OTHER_LIBRARY)


def test_exported_layer_runs_on_both_sides_of_the_threshold(monkeypatch, measured_cpu):
    """An export with dynamic sizes holds torch's product, not the op, and no guard on the
    number of rows: it runs where eager takes the op and where it does not."""
    layer = fastrnn.GRU(DEPTH + 4, 16)
    per_row = (DEPTH + 4) * 48
    monkeypatch.setattr(_input_product, "LINEAR_MIN_MULTIPLY_ADDS", 50 * per_row)
    steps, batch = torch.export.Dim("steps"), torch.export.Dim("batch")
    program = torch.export.export(layer, (torch.randn(4, 5, DEPTH + 4),),
                                  dynamic_shapes=({0: steps, 1: batch},))
    assert "fastrnn.linear.default" not in {str(n.target) for n in program.graph.nodes}
    for shape in ((4, 5), (10, 10)):  # 20 rows, below; 100 rows, past the threshold
        x = torch.randn(*shape, DEPTH + 4)
        for got, want in zip(program.module()(x), layer(x)):
            torch.testing.assert_close(got, want, **OTHER_LIBRARY)


def test_clockwork_input_gradients_through_the_op(monkeypatch, measured_cpu):
    """The clockwork RNN's backward forms each module's input gradient as a product of
    input_product's: module 0's here ([1024, 64] @ [64, 256], a 1 MB result) goes through
    the op, the smaller modules' do not; every gradient equals float64's."""
    torch.manual_seed(0)
    model = fastrnn.ClockworkRNN(DEPTH, DEPTH, periods=(1, 2, 4, 8), dtype=torch.float64)
    x = torch.randn(32, 32, DEPTH, dtype=torch.float64, requires_grad=True)
    results = []
    for dtype in (torch.float64, torch.float32):
        calls = _spy_linear(monkeypatch)
        xi = x.detach().to(dtype).requires_grad_()
        out, h = model.to(dtype)(xi)
        grads = torch.autograd.grad(out.sum() + h.sum(), [xi, *model.parameters()])
        results.append([out, h, *grads])
    assert calls == [torch.Size([32 * 32, DEPTH // 4])]  # the float32 run's
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got.double(), want, **atol_rtol(torch.float32))
