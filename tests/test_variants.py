"""fastrnn.VariantLSTM and VariantLSTMCell (peepholes, coupled input and forget gates):
against a float64 plain-PyTorch loop of the papers' equations (helpers/reference.py) for
outputs, final states and every gradient, over layers x directions x batch_first x dense/
packed/unbatched x hx x projection; float32 and 16-bit against float64; both CPU walks;
the ops' gradcheck and opcheck; errors; persistence, compile and autocast. ONNX Runtime's
LSTM operator, an independent implementation, is in tests/test_variants_onnxruntime.py."""

import io

import pytest
import torch

import fastrnn
from fastrnn import functional
from helpers import reference
from helpers.cases import Case
from helpers.compare import assert_autocast_like, assert_close, assert_round_trips
from helpers.devices import DEVICES
from helpers.ops import op_args
from helpers.reference_module import (check_16_bit_against_float64, check_against_reference,
                                      check_compiled_equals_eager)

pytestmark = pytest.mark.usefixtures("torch_state")

F64, F32 = torch.float64, torch.float32
PROJ = 3  # the projection of the proj cases (Case default sizes otherwise)
VARIANTS = {"peepholes": (True, False), "coupled": (False, True), "both": (True, True)}


def make(variant, case, dtype=F64, device="cpu", seed=0):
    peepholes, coupled = VARIANTS[variant]
    torch.manual_seed(seed)
    return fastrnn.VariantLSTM(
        case.input_size, case.hidden_size, num_layers=case.layers, bias=case.bias,
        batch_first=case.batch_first, bidirectional=case.bidirectional,
        proj_size=case.proj_size or 0, dtype=dtype, peepholes=peepholes,
        coupled_gates=coupled).to(device)


def case_of(layers, bidirectional, kind, hx, proj, bias=True):
    return Case("LSTM-proj" if proj else "LSTM", bias, layers, bidirectional,
                kind == "batch_first",
                "dense" if kind == "batch_first" else kind, hx,
                proj_size=PROJ if proj else None)


STRUCTURES = [(1, False), (2, True)]
KINDS = ("dense", "batch_first", "packed_sorted", "packed_unsorted", "unbatched")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layers,bidirectional", STRUCTURES, ids=["L1-uni", "L2-bi"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("proj", [False, True], ids=["", "proj"])
def test_equals_reference_float64(variant, layers, bidirectional, kind, hx, proj):
    case = case_of(layers, bidirectional, kind, hx, proj)
    check_against_reference(make(variant, case), case, F64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("device", DEVICES)
def test_equals_reference_float32(variant, bias, device):
    case = case_of(2, True, "packed_unsorted", True, False, bias)
    check_against_reference(make(variant, case, F32, device), case, F32, device)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("walk", ["0", "units", "rows"])
def test_cpu_walks_agree(variant, walk, monkeypatch):
    """The BLAS walk (0) and the fused walk split by units and by rows: each equal to the
    reference (a sequence long and wide enough for the fused walk's panels)."""
    monkeypatch.setenv("FASTRNN_CPU_FUSED", walk)
    case = Case("LSTM", True, 1, True, False, "packed_sorted", True, input_size=6,
                hidden_size=19, steps=9, batch=5, lengths=(9, 7, 7, 4, 1))
    check_against_reference(make(variant, case), case, F64)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16_bit_error_within_twice_the_reference(variant, dtype):
    """fastrnn in dtype against float64: at most twice the error of the reference loop run
    in dtype (the same representable weights and inputs), plus the usual slack."""
    case = case_of(1, True, "dense", True, False)
    exact = make(variant, case)
    with torch.no_grad():
        for p in exact.parameters():
            p.copy_(p.to(dtype))
    low = make(variant, case, dtype)
    low.load_state_dict(exact.state_dict())
    check_16_bit_against_float64(exact, low, case, dtype)


def test_parameters_follow_torch_scheme():
    both = fastrnn.VariantLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2,
                               peepholes=True, coupled_gates=True)
    shapes = {n: tuple(p.shape) for n, p in both.named_parameters()}
    assert shapes["weight_ih_l0"] == (12, 3) and shapes["weight_hh_l0"] == (12, 2)
    assert shapes["bias_ih_l1_reverse"] == (12,) and shapes["weight_hr_l1_reverse"] == (2, 4)
    assert shapes["weight_ch_l0"] == shapes["weight_ch_l1_reverse"] == (8,)
    assert len(shapes) == 2 * 2 * 6
    peep = fastrnn.VariantLSTM(3, 4, peepholes=True)
    assert peep.weight_ch_l0.shape == (12,) and peep.weight_ih_l0.shape == (16, 3)
    bound = 4 ** -0.5  # torch.nn's initialisation for every parameter
    assert all(p.abs().max() <= bound for p in both.parameters())
    assert "peepholes=True, coupled_gates=True" in repr(both)


def test_without_options_is_torch_nn_lstm():
    """Same initial parameters from the same seed, the random stream left alike, and the
    same results, layer and cell."""
    for ref_cls, fast_cls in ((torch.nn.LSTM, fastrnn.VariantLSTM),
                              (torch.nn.LSTMCell, fastrnn.VariantLSTMCell)):
        states = []
        for cls in (ref_cls, fast_cls):
            torch.manual_seed(0)
            module = cls(3, 4, dtype=F64)
            states.append((module.state_dict(), torch.rand(1)))
        (ref_state, ref_next), (fast_state, fast_next) = states
        assert list(ref_state) == list(fast_state) and torch.equal(ref_next, fast_next)
        for name in ref_state:
            assert torch.equal(ref_state[name], fast_state[name]), name
    torch.manual_seed(0)
    ref = torch.nn.LSTM(3, 4, num_layers=2, dtype=F64)
    fast = fastrnn.VariantLSTM(3, 4, num_layers=2, dtype=F64)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(6, 2, 3, dtype=F64)
    for got, want in zip(torch.utils._pytree.tree_leaves(fast(x)),
                         torch.utils._pytree.tree_leaves(ref(x))):
        assert_close(got, want)


def test_state_dict_and_whole_model_round_trip():
    make_module = lambda: fastrnn.VariantLSTM(3, 4, peepholes=True, coupled_gates=True,
                                              bidirectional=True)
    assert_round_trips(make_module(), make_module())
    with pytest.raises(RuntimeError, match="size mismatch"):  # a plain LSTM's shapes differ
        fastrnn.VariantLSTM(3, 4, coupled_gates=True).load_state_dict(
            torch.nn.LSTM(3, 4).state_dict())


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_equals_reference_step(variant, batched, hx, bias):
    peepholes, coupled = VARIANTS[variant]
    torch.manual_seed(0)
    cell = fastrnn.VariantLSTMCell(3, 4, bias, dtype=F64, peepholes=peepholes,
                                   coupled_gates=coupled)
    gen = torch.Generator().manual_seed(1)
    shape = (2,) if batched else ()
    x = torch.randn(*shape, 3, dtype=F64, generator=gen, requires_grad=True)
    state = [torch.randn(*shape, 4, dtype=F64, generator=gen, requires_grad=True)
             for _ in range(2)] if hx else None
    h, c = cell(x, None if state is None else tuple(state))
    h0, c0 = state if hx else [torch.zeros(*shape, 4, dtype=F64)] * 2
    rows = lambda t: t if batched else t.unsqueeze(0)
    want_h, want_c = reference._cell(
        "LSTM", rows(x), rows(h0), rows(c0), cell.weight_ih, cell.weight_hh, cell.bias_ih,
        cell.bias_hh, None, cell._variant, cell.weight_ch if peepholes else None)
    if not batched:
        want_h, want_c = want_h[0], want_c[0]
    assert_close(h, want_h)
    assert_close(c, want_c)
    leaves = [x] + (state if hx else []) + list(cell.parameters())
    got = torch.autograd.grad((h * 1.5).sum() + c.sum(), leaves)
    want = torch.autograd.grad((want_h * 1.5).sum() + want_c.sum(), leaves)
    for g, w in zip(got, want):
        assert_close(g, w)


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("kind", ["dense", "unbatched", "packed_sorted"])
def test_single_step_layer_equals_reference(variant, kind):
    """T = 1: each layer and direction is one cell call (fastrnn::cell_forward)."""
    case = Case("LSTM", True, 2, True, False, kind, True, steps=1, lengths=(1, 1, 1, 1))
    check_against_reference(make(variant, case), case, F64)


def test_cell_refuses_mixed_state_dtypes():
    cell = fastrnn.VariantLSTMCell(3, 4, peepholes=True)
    with pytest.raises(RuntimeError, match="h and c must have the same dtype"):
        cell(torch.randn(2, 3), (torch.randn(2, 4), torch.randn(2, 4, dtype=F64)))


def test_op_errors():
    """(gradcheck, opcheck and the rest of the ops' tests: tests/test_ops.py, whose
    FORWARD_VARIANTS hold lstm_variant)"""
    gx, sizes, h0, c0, w_hh, _, peep, _, _, _, _ = op_args("lstm_variant", "packed", False,
                                                       peepholes=True, requires_grad=False)
    with pytest.raises(RuntimeError, match=r"peepholes must be \[3\*H\]"):
        fastrnn.ops.lstm_variant_forward(gx, sizes, h0, c0, w_hh, None, peep[:-1], False, False,
                                         False, True)
    with pytest.raises(RuntimeError, match="peepholes must have dtype Double"):
        fastrnn.ops.lstm_variant_forward(gx, sizes, h0, c0, w_hh, None, peep.float(), False,
                                         False, False, True)
    with pytest.raises(RuntimeError, match=r"w_hh must be \[3\*H, P\] .*coupled gates"):
        fastrnn.ops.lstm_variant_forward(gx, sizes, h0, c0, w_hh, None, None, True, False, False,
                                         True)
    cell = fastrnn._cell_ops.CELL_KIND["PEEPHOLE_LSTM"]  # the single-step op, peepholes missing
    x, w_ih = torch.randn(3, 2, dtype=F64), torch.randn(12, 2, dtype=F64)
    with pytest.raises(RuntimeError, match=r"this cell needs unit_params \[3\*H\]"):
        fastrnn.ops.cell_forward(cell, x, h0, c0, w_ih, w_hh, None, None, False)


def test_option_errors():
    for bad in ({"peepholes": 1}, {"coupled_gates": "yes"}):
        with pytest.raises(ValueError, match="must be a bool"):
            fastrnn.VariantLSTM(3, 4, **bad)
        with pytest.raises(ValueError, match="must be a bool"):
            fastrnn.VariantLSTMCell(3, 4, **bad)
    with pytest.raises(TypeError):  # the options are keywords only
        fastrnn.VariantLSTMCell(3, 4, True, None, None, True)


def test_bad_input_raises_torch_nn_errors():
    layer = fastrnn.VariantLSTM(3, 4, peepholes=True)
    cell = fastrnn.VariantLSTMCell(3, 4, peepholes=True)
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size"):
        layer(torch.randn(5, 2, 6))
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D"):
        layer(torch.randn(5))
    with pytest.raises(RuntimeError, match="input has inconsistent input_size"):
        cell(torch.randn(2, 6))
    with pytest.raises(RuntimeError, match="doesn't match hidden0 batch size"):
        cell(torch.randn(2, 3), (torch.randn(3, 4), torch.randn(3, 4)))
    with pytest.raises(ValueError, match="Expected input to be 1D or 2D"):
        cell(torch.randn(1, 2, 3))


def test_refuses_onnx_and_devices_without_kernels(monkeypatch):
    """torch.nn has no variant to fall back on: where fastrnn has no kernels (here made so
    for the CPU), and under the TorchScript exporter, the variants refuse to run."""
    layer = fastrnn.VariantLSTM(3, 4, peepholes=True)
    cell = fastrnn.VariantLSTMCell(3, 4, coupled_gates=True)
    with pytest.raises(RuntimeError, match=r"only as a layer .* with torch.onnx.export\(dynamo"):
        torch.onnx.export(layer, (torch.randn(5, 2, 3),), io.BytesIO(), dynamo=False)
    with pytest.raises(RuntimeError, match="no ONNX translation yet"):
        torch.onnx.export(cell, (torch.randn(2, 3),), io.BytesIO(), dynamo=False)
    monkeypatch.setattr(fastrnn.variants, "_has_kernels", lambda device: False)
    with pytest.raises(RuntimeError, match="has no kernels for cpu tensors"):
        layer(torch.randn(5, 2, 3))
    with pytest.raises(RuntimeError, match="has no kernels for cpu tensors"):
        cell(torch.randn(2, 3))


def test_meta_tensors_give_shapes():
    for cls in (fastrnn.VariantLSTM, fastrnn.VariantLSTMCell):
        module = cls(3, 4, peepholes=True, coupled_gates=True, device="meta")
        result = module(torch.randn(2, 3, device="meta"))
        shapes = [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(result)]
        assert shapes == ([(2, 4), (1, 4), (1, 4)] if cls is fastrnn.VariantLSTM
                          else [(2, 4), (2, 4)])


def test_compile_fullgraph_equals_eager():
    case = case_of(2, True, "batch_first", True, False)
    module = make("both", case)
    check_compiled_equals_eager(module, case)


@pytest.mark.parametrize("variant", VARIANTS)
def test_autocast_dtypes_as_torch_nn_lstm(variant):
    """Under CPU bf16 autocast the results have the dtypes torch.nn.LSTM gives on the same
    input, and values within bf16 accuracy of the float32 module's."""
    peepholes, coupled = VARIANTS[variant]
    torch.manual_seed(0)
    fast = fastrnn.VariantLSTM(8, 16, peepholes=peepholes, coupled_gates=coupled)
    assert_autocast_like(fast, torch.nn.LSTM(8, 16), torch.randn(6, 3, 8), atol=3e-2)


def test_variant_needs_lstm_mode():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="peepholes and coupled gates need mode 'LSTM'"):
        functional.rnn("GRU", x, torch.tensor([2, 2]), torch.zeros(1, 2, 3), None, [],
                       has_bias=False, num_layers=1, bidirectional=False,
                       variant=functional.Variant(True, False))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("setting", ["0", "1"], ids=["per-step", "persistent"])
@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
def test_each_cuda_path_equals_reference(variant, setting, device, monkeypatch):
    """float32 on each CUDA path: the per-step walk (FASTRNN_PERSISTENT=0) and the
    persistent kernels (=1, which raises where they cannot run)."""
    monkeypatch.setenv("FASTRNN_PERSISTENT", setting)
    case = case_of(1, True, "packed_unsorted", True, False)
    check_against_reference(make(variant, case, F32, device), case, F32, device)
