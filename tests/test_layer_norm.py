"""fastrnn.VariantLSTM, VariantGRU and their cells with layer_norm=True (Ba et al.): against
a float64 plain-PyTorch loop of the paper's equations (helpers/reference.py) for outputs,
final states and every gradient (the norms' γ and β included), over layers x directions x
batch_first x dense/packed/unbatched x hx x projection; float32 and 16-bit against float64;
every CPU walk; the norm's scale invariance; parameters, errors, persistence, compile,
autocast, meta tensors and refusals. The ops' gradcheck and opcheck: tests/test_ops.py
(FORWARD_VARIANTS), the CUDA per-step walk's host emulation: tests/test_cuda_emulation.py."""

import io

import pytest
import torch

import fastrnn
from fastrnn import functional
from helpers import reference
from helpers.cases import Case
from helpers.compare import assert_autocast_like, assert_close, assert_round_trips
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.reference_module import (check_16_bit_against_float64, check_against_reference,
                                      check_compiled_equals_eager)
from helpers.running import run
from helpers.tolerances import tolerance

pytestmark = pytest.mark.usefixtures("torch_state")

F64, F32 = torch.float64, torch.float32
PROJ = 3
LAYERS = {"LSTM": fastrnn.VariantLSTM, "GRU": fastrnn.VariantGRU}
CELLS = {"LSTM": fastrnn.VariantLSTMCell, "GRU": fastrnn.VariantGRUCell}


def randomise_norms(module, seed=1):
    """γ near 1 and β near 0 but not at them, so that each enters the results."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.startswith("ln_"):
                noise = 0.3 * torch.randn(p.shape, generator=gen, dtype=F64)
                p.copy_(noise + (1 if name.startswith("ln_weight") else 0))
    return module


def make(mode, case, dtype=F64, device="cpu", seed=0):
    torch.manual_seed(seed)
    kwargs = {"proj_size": case.proj_size or 0} if mode == "LSTM" else {}
    module = LAYERS[mode](case.input_size, case.hidden_size, num_layers=case.layers,
                          bias=case.bias, batch_first=case.batch_first,
                          bidirectional=case.bidirectional, dtype=dtype, layer_norm=True,
                          **kwargs)
    return randomise_norms(module).to(device)


def case_of(mode, layers, bidirectional, kind, hx, proj=False, bias=True):
    return Case(f"{mode}-proj" if proj else mode, bias, layers, bidirectional,
                kind == "batch_first", "dense" if kind == "batch_first" else kind, hx,
                proj_size=PROJ if proj else None)


STRUCTURES = [(1, False), (2, True)]
KINDS = ("dense", "batch_first", "packed_sorted", "packed_unsorted", "unbatched")
MODES_PROJ = [("LSTM", False), ("LSTM", True), ("GRU", False)]


@pytest.mark.parametrize("mode,proj", MODES_PROJ, ids=["LSTM", "LSTM-proj", "GRU"])
@pytest.mark.parametrize("layers,bidirectional", STRUCTURES, ids=["L1-uni", "L2-bi"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
def test_equals_reference_float64(mode, proj, layers, bidirectional, kind, hx):
    case = case_of(mode, layers, bidirectional, kind, hx, proj)
    check_against_reference(make(mode, case), case, F64)


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("device", DEVICES)
def test_equals_reference_float32(mode, bias, device):
    case = case_of(mode, 2, True, "packed_unsorted", True, bias=bias)
    check_against_reference(make(mode, case, F32, device), case, F32, device)


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("walk", ["0", "units", "rows"])
def test_cpu_walks_agree(mode, walk, monkeypatch):
    """The BLAS walk (0) and the fused walk (which splits a row-wise cell's rows, never its
    units, whatever it is told): each equal to the reference, over a sequence long and wide
    enough for the fused walk's panels."""
    monkeypatch.setenv("FASTRNN_CPU_FUSED", walk)
    case = Case(mode, True, 1, True, False, "packed_sorted", True, input_size=6,
                hidden_size=19, steps=9, batch=5, lengths=(9, 7, 7, 4, 1))
    check_against_reference(make(mode, case), case, F64)


def check_16_bit(mode, case, dtype, device="cpu"):
    """fastrnn in dtype against float64: at most twice the error of the reference loop run
    in dtype (the same representable weights and inputs), plus the usual slack."""
    exact = make(mode, case, device=device)
    with torch.no_grad():
        for p in exact.parameters():
            p.copy_(p.to(dtype))
    low = make(mode, case, dtype, device)
    low.load_state_dict(exact.state_dict())
    check_16_bit_against_float64(exact, low, case, dtype, device)


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_16_bit_error_within_twice_the_reference(mode, dtype):
    check_16_bit(mode, case_of(mode, 1, True, "dense", True), dtype)


@pytest.mark.parametrize("mode", LAYERS)
def test_recurrent_weight_scale_does_not_matter(mode):
    """What the norm is for: scaling W_hh (or W_ih) by 10 leaves the results as they were,
    up to eps (against variances of the products down to about 0.05 here); without the norm
    they change."""
    case = case_of(mode, 1, False, "dense", True)
    module = make(mode, case)
    inputs = make_inputs(case, F64)
    want, _, _ = run(module, inputs, backward=False)
    with torch.no_grad():
        module.weight_hh_l0.mul_(10)
        module.weight_ih_l0.mul_(10)
    got, _, _ = run(module, inputs, backward=False)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-3, rtol=0)
    plain = LAYERS[mode](case.input_size, case.hidden_size, dtype=F64)
    before, _, _ = run(plain, inputs, backward=False)
    with torch.no_grad():
        plain.weight_hh_l0.mul_(10)
    after, _, _ = run(plain, inputs, backward=False)
    assert (after[0] - before[0]).abs().max() > 1e-2


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("hx", [True, False], ids=["hx", "nohx"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_cell_equals_reference_step(mode, batched, hx, bias):
    torch.manual_seed(0)
    cell = randomise_norms(CELLS[mode](3, 4, bias, dtype=F64, layer_norm=True))
    gen = torch.Generator().manual_seed(1)
    shape = (2,) if batched else ()
    is_lstm = mode == "LSTM"
    x = torch.randn(*shape, 3, dtype=F64, generator=gen, requires_grad=True)
    state = [torch.randn(*shape, 4, dtype=F64, generator=gen, requires_grad=True)
             for _ in range(2 if is_lstm else 1)] if hx else []
    out = cell(x, (tuple(state) if is_lstm else state[0]) if hx else None)
    h, c = out if is_lstm else (out, None)
    zeros = torch.zeros(*shape, 4, dtype=F64)
    h0 = state[0] if hx else zeros
    c0 = (state[1] if hx else zeros) if is_lstm else None
    rows = lambda t: t if batched or t is None else t.unsqueeze(0)
    norms = [getattr(cell, name) for name in functional.LAYER_NORMS[mode]]
    want_h, want_c = reference._cell(mode, rows(x), rows(h0), rows(c0), cell.weight_ih,
                                     cell.weight_hh, cell.bias_ih, cell.bias_hh, None,
                                     cell._variant, norms)
    if not batched:
        want_h, want_c = want_h[0], None if want_c is None else want_c[0]
    assert_close(h, want_h)
    loss, want_loss = (h * 1.5).sum(), (want_h * 1.5).sum()
    if is_lstm:
        assert_close(c, want_c)
        loss, want_loss = loss + c.sum(), want_loss + want_c.sum()
    leaves = [x] + state + list(cell.parameters())
    for g, w in zip(torch.autograd.grad(loss, leaves), torch.autograd.grad(want_loss, leaves)):
        assert_close(g, w)


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("kind", ["dense", "unbatched", "packed_sorted"])
def test_single_step_layer_equals_reference(mode, kind):
    case = Case(mode, True, 2, True, False, kind, True, steps=1, lengths=(1, 1, 1, 1))
    check_against_reference(make(mode, case), case, F64)


def test_parameters_follow_torch_scheme():
    lstm = fastrnn.VariantLSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2,
                               layer_norm=True)
    shapes = {n: tuple(p.shape) for n, p in lstm.named_parameters()}
    assert shapes["ln_weight_ih_l0"] == shapes["ln_bias_hh_l1_reverse"] == (16,)
    assert shapes["ln_weight_c_l1"] == shapes["ln_bias_c_l0_reverse"] == (4,)
    assert shapes["weight_hr_l1_reverse"] == (2, 4) and len(shapes) == 2 * 2 * (5 + 6)
    gru = fastrnn.VariantGRU(3, 4, bias=False, layer_norm=True)
    assert [n for n, _ in gru.named_parameters()] == [
        "weight_ih_l0", "weight_hh_l0", "ln_weight_ih_l0", "ln_bias_ih_l0", "ln_weight_hh_l0",
        "ln_bias_hh_l0"]
    for module in (lstm, gru, fastrnn.VariantLSTMCell(3, 4, layer_norm=True),
                   fastrnn.VariantGRUCell(3, 4, layer_norm=True)):
        for name, p in module.named_parameters():
            if name.startswith("ln_"):  # γ at 1, β at 0
                assert torch.equal(p, torch.full_like(p, 1.0 if "weight" in name else 0.0))
        assert "layer_norm=True" in repr(module)


@pytest.mark.parametrize("mode", LAYERS)
def test_torch_nn_weights_and_random_stream(mode):
    """The norms draw nothing: from one seed the weights are torch.nn's and the random
    stream after them is torch.nn's."""
    results = []
    for make_module in (getattr(torch.nn, mode), lambda *a: LAYERS[mode](*a, layer_norm=True)):
        torch.manual_seed(0)
        module = make_module(3, 4, 2)
        results.append((module.weight_hh_l1.detach().clone(), torch.rand(1)))
    assert all(torch.equal(a, b) for a, b in zip(*results))


@pytest.mark.parametrize("mode", LAYERS)
def test_without_options_is_torch_nn(mode):
    """VariantGRU and VariantGRUCell without layer_norm: torch.nn's GRU and GRUCell, the same
    parameters from the same seed and the same results."""
    x = torch.randn(6, 2, 3, dtype=F64)
    for ref_cls, fast_cls, inputs in ((getattr(torch.nn, mode), LAYERS[mode], x),
                                      (getattr(torch.nn, f"{mode}Cell"), CELLS[mode], x[0])):
        torch.manual_seed(0)
        ref = ref_cls(3, 4, dtype=F64)
        torch.manual_seed(0)
        fast = fast_cls(3, 4, dtype=F64)
        assert list(fast.state_dict()) == list(ref.state_dict())
        for got, want in zip(torch.utils._pytree.tree_leaves(fast(inputs)),
                             torch.utils._pytree.tree_leaves(ref(inputs))):
            assert_close(got, want)


def test_reset_parameters_keeps_the_norms_initialisation():
    """reset_parameters (torch.nn's: as after building on the meta device and to_empty)
    draws the weights again and puts γ back at 1 and β at 0."""
    for module, weight in ((fastrnn.VariantLSTM(3, 4, layer_norm=True), "weight_hh_l0"),
                           (fastrnn.VariantGRUCell(3, 4, layer_norm=True), "weight_hh")):
        randomise_norms(module)
        before = getattr(module, weight).clone()
        module.reset_parameters()
        for name, p in module.named_parameters():
            if name.startswith("ln_"):
                assert torch.equal(p, torch.full_like(p, 1.0 if "weight" in name else 0.0))
        assert not torch.equal(getattr(module, weight), before)


def test_option_errors():
    for cls in (*LAYERS.values(), *CELLS.values()):
        with pytest.raises(ValueError, match="must be a bool"):
            cls(3, 4, layer_norm=1)
    for combination in ({"peepholes": True}, {"coupled_gates": True}):
        for cls in (fastrnn.VariantLSTM, fastrnn.VariantLSTMCell):
            with pytest.raises(ValueError, match="does not combine"):
                cls(3, 4, layer_norm=True, **combination)
    with pytest.raises(TypeError):  # the GRU has no LSTM options
        fastrnn.VariantGRU(3, 4, peepholes=True)
    rnn = lambda mode, variant: functional.rnn(
        mode, torch.randn(4, 3), torch.tensor([2, 2]), torch.zeros(1, 2, 3), None, [],
        has_bias=False, num_layers=1, bidirectional=False, variant=variant)
    with pytest.raises(ValueError, match="layer norm needs mode 'LSTM' or 'GRU'"):
        rnn("RNN_TANH", functional.Variant(layer_norm=True))
    with pytest.raises(ValueError, match="layer norm does not combine"):
        rnn("LSTM", functional.Variant(peepholes=True, layer_norm=True))


def test_op_errors():
    gx, sizes = torch.randn(6, 12, dtype=F64), torch.tensor([2, 2, 2])
    h0, c0, w_hh = torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, dtype=F64), torch.randn(12, 3,
                                                                                        dtype=F64)
    with pytest.raises(RuntimeError, match=r"norms must be \[10\*H\]"):
        fastrnn.ops.lstm_variant_forward(gx, sizes, h0, c0, w_hh, None, torch.ones(9,
                                         dtype=F64), False, True, False, True)
    with pytest.raises(RuntimeError, match="layer_norm does not combine with coupled gates"):
        fastrnn.ops.lstm_variant_forward(gx, sizes, h0, c0, w_hh, None, torch.ones(30,
                                         dtype=F64), True, True, False, True)
    with pytest.raises(RuntimeError, match=r"norms must be \[6\*H\]"):
        fastrnn.ops.gru_variant_forward(gx[:, :9], sizes, h0, w_hh[:9], None,
                                        torch.ones(9, dtype=F64), False, True)


@pytest.mark.parametrize("mode", LAYERS)
def test_state_dict_and_whole_model_round_trip(mode):
    assert_round_trips(randomise_norms(LAYERS[mode](3, 4, bidirectional=True, layer_norm=True)),
                       LAYERS[mode](3, 4, bidirectional=True, layer_norm=True))
    with pytest.raises(RuntimeError, match="Missing key"):  # a plain layer lacks the norms
        LAYERS[mode](3, 4, layer_norm=True).load_state_dict(
            getattr(torch.nn, mode)(3, 4).state_dict())


@pytest.mark.parametrize("mode", LAYERS)
def test_compile_fullgraph_equals_eager(mode):
    case = case_of(mode, 2, True, "batch_first", True)
    module = make(mode, case)
    check_compiled_equals_eager(module, case)


@pytest.mark.parametrize("mode", LAYERS)
def test_autocast_dtypes_as_torch_nn(mode):
    """Under CPU bf16 autocast the results have the dtypes torch.nn's layer and cell give
    on the same input, and values within bf16 accuracy of the float32 module's (the norm
    divides by each row's spread, which scales the products' rounding: 5e-2, not 3e-2)."""
    torch.manual_seed(0)
    pairs = [(LAYERS[mode](8, 16, layer_norm=True), getattr(torch.nn, mode)(8, 16),
              torch.randn(6, 3, 8)),
             (CELLS[mode](8, 16, layer_norm=True), getattr(torch.nn, f"{mode}Cell")(8, 16),
              torch.randn(3, 8))]
    for fast, ref, x in pairs:
        assert_autocast_like(fast, ref, x, atol=tolerance(torch.bfloat16, "autocast"))


def test_meta_tensors_give_shapes():
    x = torch.randn(2, 3, device="meta")
    for module, want in ((fastrnn.VariantLSTM(3, 4, layer_norm=True, device="meta"),
                          [(2, 4), (1, 4), (1, 4)]),
                         (fastrnn.VariantGRU(3, 4, layer_norm=True, device="meta"),
                          [(2, 4), (1, 4)]),
                         (fastrnn.VariantLSTMCell(3, 4, layer_norm=True, device="meta"),
                          [(2, 4), (2, 4)]),
                         (fastrnn.VariantGRUCell(3, 4, layer_norm=True, device="meta"),
                          [(2, 4)])):
        result = module(x)
        assert [tuple(t.shape) for t in torch.utils._pytree.tree_leaves(result)] == want


def test_refuses_onnx_and_devices_without_kernels(monkeypatch):
    """torch.nn has no layer-normalised layer to fall back on: the layers export to ONNX
    only with dynamo=True (tests/test_variants_onnxruntime.py), the cells not at all, and
    devices without fastrnn's kernels are refused."""
    layer, cell = LAYERS["GRU"](3, 4, layer_norm=True), CELLS["GRU"](3, 4, layer_norm=True)
    with pytest.raises(RuntimeError, match=r"only as a layer .* with torch.onnx.export\(dynamo"):
        torch.onnx.export(layer, (torch.randn(5, 2, 3),), io.BytesIO(), dynamo=False)
    for dynamo in (False, True):
        with pytest.raises(Exception, match="layer norm has no ONNX translation yet"):
            torch.onnx.export(cell, (torch.randn(2, 3),), io.BytesIO(), dynamo=dynamo)
    monkeypatch.setattr(fastrnn.variants, "_has_kernels", lambda device: False)
    for module, x in ((layer, torch.randn(5, 2, 3)), (cell, torch.randn(2, 3))):
        with pytest.raises(RuntimeError, match="layer norm has no kernels for cpu tensors"):
            module(x)


@pytest.mark.parametrize("mode", LAYERS)
@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
def test_cuda_per_step_path_equals_reference(mode, device, monkeypatch):
    """float32 on CUDA, where the norms' row kernels run a block per row; the persistent
    kernels do not run these cells (FASTRNN_PERSISTENT=1 falls back to the per-step
    path for them)."""
    for setting in ("0", "1"):
        monkeypatch.setenv("FASTRNN_PERSISTENT", setting)
        case = case_of(mode, 1, True, "packed_unsorted", True)
        check_against_reference(make(mode, case, F32, device), case, F32, device)


@pytest.mark.parametrize("mode,proj", MODES_PROJ, ids=["LSTM", "LSTM-proj", "GRU"])
@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
def test_cuda_rows_wider_than_a_block(mode, proj, device):
    """H = 300, more units than the row kernel's 256 threads: units strided over threads,
    sums over several warps; packed input. float32 against the float64 reference, and
    bfloat16 within twice the reference's own bfloat16 error."""
    case = Case(f"{mode}-proj" if proj else mode, True, 1, True, False, "packed_unsorted",
                True, hidden_size=300, proj_size=PROJ if proj else None)
    check_against_reference(make(mode, case, F32, device), case, F32, device)
    check_16_bit(mode, case, torch.bfloat16, device)
