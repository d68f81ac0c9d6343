"""The rule that sends a layer's input product x @ w_ih^T + bias through the op
fastrnn::linear (fastrnn._input_product.input_product; the op itself: test_linear_op.py):
its thresholds, float64, 16-bit products; the layers taking it, against torch.nn; the
variants, the dilated stacks and the reservoir through it against themselves through
torch.addmm; and compile and export keeping torch's product."""

import pytest
import torch

import fastrnn
from fastrnn import _input_product, _ops
from fastrnn._input_product import (LINEAR_BFLOAT16_BIAS, LINEAR_FRESH_BYTES,
                                    LINEAR_MIN_MULTIPLY_ADDS, LINEAR_POOLED_BYTES)
from helpers.cases import CELLS, KINDS, Case
from helpers.ops import ops
from helpers.parity import check_parity
from helpers.products import (BIAS, DEPTH, OTHER_LIBRARY, assert_low_precision_close,
                              assert_product_close)

pytestmark = pytest.mark.usefixtures("torch_state")


def _spy_linear(monkeypatch):
    """The input shapes of every fastrnn::linear call the layers (forward), the op's autograd
    and lstm_input_forward's (backward) make from now on."""
    calls = []

    class Spy:
        def __getattr__(self, name):
            return getattr(ops, name)

        @staticmethod
        def linear(*args):
            calls.append(args[0].shape)
            return ops.linear(*args)

    monkeypatch.setattr(_input_product, "ops", Spy())
    monkeypatch.setattr(_ops, "ops", Spy())
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
    """Where oneDNN's product was not measured the op takes no float32 product with a result
    below LINEAR_FRESH_BYTES, and still takes a large float64 one (BLAS into a reused
    buffer, on every CPU)."""
    calls = _spy_linear(monkeypatch)
    monkeypatch.setattr(_input_product, "LINEAR_MIN_DEPTH", 0)
    rows = max(LINEAR_MIN_MULTIPLY_ADDS // (DEPTH * 64), LINEAR_POOLED_BYTES // (8 * 64))
    _input_product.input_product(torch.randn(rows, DEPTH, dtype=dtype),
                                 torch.randn(64, DEPTH, dtype=dtype))
    assert len(calls) == (dtype == torch.float64)


@pytest.mark.parametrize("fewer_rows", [0, 1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_input_product_with_a_fresh_sized_result(monkeypatch, dtype, fewer_rows):
    """Where oneDNN's product was not measured, a shallow float32 product still goes
    through the op from a result of LINEAR_FRESH_BYTES (torch.addmm's would be a fresh
    mapping), not below; float64 from LINEAR_POOLED_BYTES, as before."""
    calls = _spy_linear(monkeypatch)
    monkeypatch.setattr(_input_product, "LINEAR_MIN_DEPTH", 0)
    columns = 2048
    x = torch.randn(LINEAR_FRESH_BYTES // (4 * columns) - fewer_rows, 8, dtype=dtype)
    w = torch.randn(columns, 8, dtype=dtype)
    got = _input_product.input_product(x, w)
    assert len(calls) == (dtype == torch.float64 or not fewer_rows)
    assert_product_close(got, x.double() @ w.double().t())


@pytest.mark.parametrize("large", [True, False], ids=["pooled_result", "smaller_result"])
@pytest.mark.parametrize("onednn", [True, False], ids=["onednn", "no_onednn"])
@pytest.mark.parametrize("bias", BIAS)
def test_bfloat16_input_product_with_a_bias(monkeypatch, bias, onednn, large):
    """A bfloat16 product (bfloat16 autocast inference) goes through the op with a bias,
    oneDNN on, from a result of LINEAR_POOLED_BYTES where LINEAR_BFLOAT16_BIAS; else
    torch.addmm, to the bit. Either way within bfloat16's rule of torch.addmm's error."""
    calls = _spy_linear(monkeypatch)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", onednn)
    rows = LINEAR_POOLED_BYTES // (2 * 64) - (0 if large else 1)
    g = torch.Generator().manual_seed(3)
    x, w, b = (torch.randn(*shape, generator=g, dtype=torch.float64)
               for shape in ((rows, 24), (64, 24), (64,)))
    low = [t.bfloat16() for t in (x, w, b)]
    got = _input_product.input_product(low[0], low[1], low[2] if bias else None)
    assert len(calls) == (bias and onednn and large and LINEAR_BFLOAT16_BIAS)
    assert got.dtype == torch.bfloat16
    torch_result = (torch.addmm(low[2], low[0], low[1].t()) if bias
                    else torch.mm(low[0], low[1].t()))
    if not calls:
        assert torch.equal(got, torch_result)
    want = low[0].double() @ low[1].double().t() + (low[2].double() if bias else 0)
    assert_low_precision_close(got, torch_result, want)


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
    # Per direction and layer, forward and the input gradient in backward; the LSTM's
    # forward forms its product in its own op (lstm_input_forward).
    assert len(calls) == (4 if case.cell.startswith("LSTM") else 8), calls


def test_layer_at_full_size_takes_linear(monkeypatch, measured_cpu):
    """A layer whose product is past the threshold takes the op with the rule as it is."""
    calls = _spy_linear(monkeypatch)
    layer = fastrnn.RNN(128, DEPTH)
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
