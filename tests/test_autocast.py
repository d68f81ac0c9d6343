"""Under autocast fastrnn returns the dtypes torch.nn returns, for every cell, input layout,
input dtype and hx dtype, with oneDNN on and off, and its error against a float64 reference is
at most 2x torch.nn's own error under the same autocast (docs/testing.md's low-precision rule),
gradients included, and in inference, where the CPU layers compute in bfloat16 itself on a
CPU that multiplies in it natively (test_cpu_compute_dtype).

torch.nn's CPU results under autocast follow its per-step products (autocast dtype) and
state updates (type promotion with the state), except where its LSTM takes oneDNN, whose
layers autocast casts whole (every result in the autocast dtype). On CUDA, cuDNN's autocast
wrapper casts everything to float16, whatever the autocast dtype.
fastrnn._autocast_rules states the rules (autocast_result_dtypes, torch_nn_takes_onednn and
torch_nn_takes_cudnn). Whether oneDNN supports a dtype on this CPU cannot be switched, so
test_onednn_device_check_both_sides covers the other answer by patching fastrnn's one reading
of it.
"""

import itertools

import pytest
import torch

from helpers.cases import CELLS, Case
from helpers.devices import GPU_MARKS
from helpers.inputs import Inputs, make_inputs
from helpers.modules import make_pair
from helpers.running import flatten_result
from helpers.tolerances import atol_rtol
import fastrnn
from fastrnn import _C, _autocast_rules, functional

pytestmark = [pytest.mark.usefixtures("torch_state"),
              # torch.backends.mkldnn.flags() warns about Intel GPUs on every use
              pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")]

F32, F64 = torch.float32, torch.float64
# (device, autocast dtype, the device's RNN library enabled: oneDNN on the CPU, cuDNN on CUDA)
LIBRARY = {"cpu": "onednn", "cuda": "cudnn"}
AUTOCASTS = [pytest.param(device, dtype, library_on,
                          id=f"{device}-{str(dtype)[6:]}-"
                             f"{'' if library_on else 'no_'}{LIBRARY[device]}",
                          marks=GPU_MARKS if device == "cuda" else [])
             for device, dtype, library_on in itertools.product(
                 ("cpu", "cuda"), (torch.bfloat16, torch.float16), (True, False))]
KINDS = ["dense", "packed_unsorted", "unbatched"]
# torch.nn's LSTM fails with this where oneDNN cannot compute in the autocast dtype on this
# CPU (float32 input makes it take oneDNN whatever the CPU supports)
ONEDNN_UNSUPPORTED = "could not create a primitive descriptor"


def backend_context(device, library_on=True):
    """oneDNN (CPU) or cuDNN (CUDA) switched on or off."""
    return torch.backends.mkldnn.flags(enabled=library_on) if device == "cpu" else (
        torch.backends.cudnn.flags(enabled=library_on))


def to(inputs, device, x_dtype=None, hx_dtype=None):
    move = lambda t, dtype: None if t is None else t.detach().to(device, dtype or t.dtype)
    return Inputs(inputs.case, move(inputs.x, x_dtype), move(inputs.h0, hx_dtype),
                  move(inputs.c0, hx_dtype))


def forward(module, inputs, device, dtype, library_on=True):
    with torch.autocast(device, dtype=dtype), backend_context(device, library_on):
        return flatten_result(module(*inputs.fresh(requires_grad=False).args()))


def dtypes(tensors):
    return [t.dtype for t in tensors]


def torch_nn_forward(module, inputs, device, dtype, library_on):
    """forward() of a torch.nn module, or None where its oneDNN LSTM cannot run on this CPU."""
    try:
        return forward(module, inputs, device, dtype, library_on)
    except RuntimeError as error:
        if ONEDNN_UNSUPPORTED not in str(error):
            raise
        return None


def run(module, inputs, low, device=None, library_on=True):
    """(results, gradients by name) of sum_k <w_k, results_k>, with fixed random w_k rounded
    to the low-precision dtype `low`: the float64 reference then differentiates the same loss,
    and gradient errors are the layers' own. The forward runs under autocast on `device`
    (if given), the backward after it, as autocast's documentation asks."""
    leaves = inputs.fresh()
    with torch.autocast(device or "cpu", dtype=low, enabled=device is not None), (
            backend_context(device or "cpu", library_on)):
        outs = flatten_result(module(*leaves.args()))
    gen = torch.Generator().manual_seed(2)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=F64).to(low).to(t)).sum()
               for t in outs)
    names = [n for n in ("x", "h0", "c0") if getattr(leaves, n) is not None]
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(loss, [getattr(leaves, n) for n in names] +
                                list(params.values()))
    return outs, dict(zip(names + list(params), grads))


# input dtype x hx (None: no hx, the zero state takes the input's dtype)
DTYPE_VARIANTS = [("f32", None), ("f32", "f32"), ("f32", "low"), ("low", None),
                  ("low", "f32")]
SHAPES = [pytest.param(1, False, id="L1-uni"), pytest.param(2, True, id="L2-bi")]


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("x_dtype,hx_dtype", DTYPE_VARIANTS,
                         ids=[f"x_{x}-hx_{h}" for x, h in DTYPE_VARIANTS])
@pytest.mark.parametrize("layers,bidirectional", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device,dtype,library_on", AUTOCASTS)
def test_result_dtypes_match_torch_nn(device, dtype, library_on, cell, kind, layers, bidirectional,
                                      x_dtype, hx_dtype, grad):
    case = Case(cell, True, layers, bidirectional, False, kind, hx_dtype is not None)
    ref, fast = make_pair(case, F32)
    ref, fast = ref.to(device), fast.to(device)
    named = {"f32": F32, "low": dtype, None: None}
    inputs = to(make_inputs(case, F32), device, named[x_dtype], named[hx_dtype])
    with torch.set_grad_enabled(grad):
        want = torch_nn_forward(ref, inputs, device, dtype, library_on)
        got = forward(fast, inputs, device, dtype, library_on)
    if want is None:  # where oneDNN runs, its layers cast every argument to the autocast dtype
        assert dtypes(got) == [dtype] * len(got)
        return
    assert dtypes(got) == dtypes(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a.float(), b.float(), **atol_rtol(dtype, "autocast"))


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("supported", [True, False], ids=["supported", "unsupported"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_onednn_device_check_both_sides(monkeypatch, dtype, supported, grad):
    """torch.nn's LSTM takes oneDNN for input in bfloat16 (float16: with autograd off) only
    where oneDNN supports that dtype on the CPU. Each answer of fastrnn's reading of it is
    compared with what torch.nn does under that answer: unsupported, its per-step path (torch.nn
    with oneDNN off); supported, torch.nn itself where this CPU supports the dtype, else what
    ATen's source says (oneDNN, every result in the autocast dtype, unless float16 input
    with autograd on keeps it on the per-step path)."""
    case = Case("LSTM", True, 2, True, False, "dense", True)
    ref, fast = make_pair(case, F32)
    inputs = to(make_inputs(case, F32), "cpu", dtype, F32)  # hx float32: the paths differ
    this_cpu = _autocast_rules.onednn_supports(dtype)
    with torch.set_grad_enabled(grad):
        per_step = dtypes(forward(ref, inputs, "cpu", dtype, library_on=False))
        assert per_step != [dtype] * 3  # the two paths give different dtypes
        if supported and this_cpu:
            want = dtypes(forward(ref, inputs, "cpu", dtype))
        elif supported and not (dtype == torch.float16 and grad):
            want = [dtype] * 3
        else:
            want = per_step
        monkeypatch.setattr(_autocast_rules, "onednn_supports", lambda _: supported)
        assert dtypes(forward(fast, inputs, "cpu", dtype)) == want


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device,dtype,library_on", AUTOCASTS)
def test_empty_batch_dtypes_match_torch_nn(device, dtype, library_on, cell):
    """torch.nn's LSTM does not take oneDNN for an input with no elements."""
    case = Case(cell, True, 1, False, False, "dense", True, batch=0)
    ref, fast = make_pair(case, F32)
    inputs = to(make_inputs(case, F32), device)
    want = torch_nn_forward(ref.to(device), inputs, device, dtype, library_on)
    assert dtypes(forward(fast.to(device), inputs, device, dtype, library_on)) == dtypes(want)


def assert_error_at_most_twice(triples):
    """(fastrnn's, torch.nn's, float64's) values: fastrnn's error against float64 at most
    twice torch.nn's, plus one rounding of the largest value in the result's dtype (the
    least any result in that dtype can be off by)."""
    for fast_value, torch_value, want in triples:
        assert fast_value.dtype == torch_value.dtype
        assert torch.isfinite(fast_value).all()
        fast_error = (fast_value.double() - want).abs().max().item()
        torch_error = (torch_value.double() - want).abs().max().item()
        ulp = torch.finfo(fast_value.dtype).eps * want.abs().max().item()
        assert fast_error <= 2 * torch_error + ulp, (fast_error, torch_error)


def modules_and_inputs(cell, kind, device):
    """torch.nn's and fastrnn's float32 layers and a float64 twin with the same weights, on
    device, and float32 inputs (2 layers, bidirectional, with hx)."""
    case = Case(cell, True, 2, True, False, kind, True)
    ref, fast = make_pair(case, F32)
    exact, _ = make_pair(case, F64)
    exact.load_state_dict(ref.state_dict())
    return ref.to(device), fast.to(device), exact.to(device), to(make_inputs(case, F32), device)


@pytest.mark.parametrize("kind", ["dense", "packed_unsorted"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device,dtype,library_on", AUTOCASTS)
def test_error_at_most_twice_torch_nn_error(device, dtype, library_on, cell, kind):
    """Outputs, states and every gradient (inputs and parameters) against float64."""
    ref, fast, exact, inputs = modules_and_inputs(cell, kind, device)
    want_outs, want_grads = run(exact, to(inputs, device, F64, F64), dtype)
    try:
        torch_outs, torch_grads = run(ref, inputs, dtype, device, library_on)
    except RuntimeError as error:
        if ONEDNN_UNSUPPORTED not in str(error):
            raise
        pytest.skip(f"torch.nn's oneDNN LSTM cannot run {dtype} on this CPU")
    fast_outs, fast_grads = run(fast, inputs, dtype, device, library_on)
    assert list(fast_grads) == list(torch_grads)
    assert_error_at_most_twice(list(zip(fast_outs, torch_outs, want_outs)) + [
        (fast_grads[n], torch_grads[n], want_grads[n]) for n in want_grads])


@pytest.mark.parametrize("compute", ["rule", "low"], ids=["rule", "forced_low"])
@pytest.mark.parametrize("kind", ["dense", "packed_unsorted"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device,dtype,library_on", AUTOCASTS)
def test_inference_error_at_most_twice_torch_nn_error(monkeypatch, device, dtype, library_on,
                                                      cell, kind, compute):
    """Without autograd: outputs and final states against float64, computed as the rule
    says, and (forced_low) in the autocast dtype itself, which the rule picks on CPUs that
    multiply in it natively: forced here, the 16-bit kernels are checked on every CPU."""
    if compute == "low":
        monkeypatch.setattr(_autocast_rules, "autocast_compute_dtype",
                            lambda device_type, autocast_dtype, weight_dtype, needs_grad:
                            autocast_dtype)
    ref, fast, exact, inputs = modules_and_inputs(cell, kind, device)
    with torch.no_grad():
        want = flatten_result(exact(*to(inputs, device, F64, F64).fresh(False).args()))
        torch_outs = torch_nn_forward(ref, inputs, device, dtype, library_on)
        if torch_outs is None:
            pytest.skip(f"torch.nn's oneDNN LSTM cannot run {dtype} on this CPU")
        fast_outs = forward(fast, inputs, device, dtype, library_on)
    assert_error_at_most_twice(zip(fast_outs, torch_outs, want))


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_cpu_compute_dtype(monkeypatch, cell, native, grad):
    """Under CPU bfloat16 autocast, where the CPU multiplies in bfloat16 natively, the layers
    compute in bfloat16 without autograd (the results of the module cast to bfloat16), and
    with autograd in float32 but for the products, in bfloat16: the input products (formed
    here in bfloat16) and, where the build multiplies in bfloat16 (_C.BFLOAT16_PRODUCTS), the
    recurrent products of layers without projection but the relu RNN's, whose ops then take
    w_hh in bfloat16
    (test_bfloat16_products.py says what the ops make of it); elsewhere in float32
    (the float32 module's results, rounded as torch.nn's are)."""
    case = Case(cell, True, 2, True, False, "dense", True)
    _, fast = make_pair(case, F32)
    inputs = to(make_inputs(case, F32), "cpu")
    monkeypatch.setattr(_autocast_rules, "onednn_supports", lambda dtype: native)
    with torch.set_grad_enabled(grad):
        got = forward(fast, inputs, "cpu", torch.bfloat16)
        low = native and not grad
        if native and grad:
            def bfloat16_products(x, w_ih, bias=None, dtype=None):
                assert dtype is None  # no autocast here
                product = torch.mm(x.bfloat16(), w_ih.bfloat16().t()).float()
                return product if bias is None else product + bias
            monkeypatch.setattr(functional, "input_product", bfloat16_products)
            monkeypatch.setattr(functional, "_input_in_walk", lambda x, dtype: False)
            monkeypatch.setattr(functional, "_recurrent_weight",
                                lambda mode, w_hh, has_proj, dtype: w_hh.bfloat16() if (
                                    _C.BFLOAT16_PRODUCTS and not has_proj
                                    and mode != "RNN_RELU") else w_hh)
        module = fast.to(torch.bfloat16) if low else fast
        plain = flatten_result(module(*to(inputs, "cpu", *(2 * [torch.bfloat16] if low else
                                                            [None, None])).fresh(False).args()))
    for value, expected in zip(got, plain):
        assert torch.equal(value, expected.to(value.dtype))


def test_cudnn_rule():
    """cuDNN's autocast wrapper makes every result float16, whatever the autocast dtype;
    float64 layers are left alone; CPU tensors never take cuDNN."""
    from fastrnn._autocast_rules import autocast_result_dtypes, torch_nn_takes_cudnn
    for mode in ("LSTM", "GRU", "RNN_TANH"):
        assert autocast_result_dtypes(mode, "cuda", torch.bfloat16, F32, F32, F32, False,
                                      "cudnn") == (torch.float16, torch.float16)
        assert autocast_result_dtypes(mode, "cuda", torch.bfloat16, F64, F64, F64, False,
                                      "cudnn") == (F64, F64)
    assert not torch_nn_takes_cudnn(torch.ones(2))


def test_rule_covers_every_mode():
    from fastrnn._autocast_rules import autocast_result_dtypes
    from fastrnn.functional import MODES
    for mode, proj in itertools.product(MODES, (False, True)):
        out, c = autocast_result_dtypes(mode, "cpu", torch.bfloat16, F32, F32,
                                        F32 if mode == "LSTM" else None, proj)
        assert out in (torch.bfloat16, F32) and (c is None) == (mode != "LSTM")


BACKWARD_MODELS = {
    "LSTM": lambda: fastrnn.LSTM(6, 8, num_layers=2, bidirectional=True),
    "LSTM-proj": lambda: fastrnn.LSTM(6, 8, proj_size=4),
    "GRU": lambda: fastrnn.GRU(6, 8),
    "RNN": lambda: fastrnn.RNN(6, 8),
    "LSTMCell": lambda: fastrnn.LSTMCell(6, 8),
    "GRUCell": lambda: fastrnn.GRUCell(6, 8),
    "RNNCell": lambda: fastrnn.RNNCell(6, 8),
}


@pytest.mark.parametrize("model", list(BACKWARD_MODELS))
def test_backward_inside_autocast_region(model):
    """backward() called inside the autocast region (autocast still on while autograd runs
    the backward ops) gives the gradients of a backward() after it, where fastrnn's ops form
    them: every gradient of a cell, the recurrent weights' of a layer. (A layer's input
    products are torch's, whose backward autocast casts as it does any torch op's where the
    forward ran in float32: pytorch/pytorch#105682.)"""
    module = BACKWARD_MODELS[model]()
    x = torch.randn(5, 3, 6) if not model.endswith("Cell") else torch.randn(3, 6)

    def gradients(inside):
        module.zero_grad()
        with torch.autocast("cpu", torch.bfloat16):
            out = module(x)
            loss = (out[0] if isinstance(out, tuple) else out).float().sum()
            if inside:
                loss.backward()
        if not inside:
            loss.backward()
        return [p.grad for name, p in module.named_parameters()
                if model.endswith("Cell") or name.startswith("weight_hh")]

    for inside, after in zip(gradients(True), gradients(False), strict=True):
        assert torch.equal(inside, after)


@pytest.mark.parametrize("periods", [(1, 2), (2, 3)], ids=str)
def test_clockwork_backward_inside_autocast_region(periods):
    """The clockwork RNN's whole backward (its input products' too) called inside an
    autocast region gives the gradients it gives outside one, in the parameters' dtype; the
    first period 2 makes every module's input rows a gather."""
    torch.manual_seed(0)
    model = fastrnn.ClockworkRNN(5, 8, periods=periods)
    x = torch.randn(7, 3, 5, requires_grad=True)
    inputs = [x, *model.parameters()]
    y, h = model(x)
    want = torch.autograd.grad(y.sum() + h.sum(), inputs)
    y, h = model(x)
    with torch.autocast("cpu", torch.bfloat16):
        got = torch.autograd.grad(y.sum() + h.sum(), inputs)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype
        torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_clockwork_backward_op_under_autocast():
    """The clockwork RNN's backward op computes in its arguments' dtype under autocast."""
    from fastrnn._ops import ops
    batch_sizes, h0, w_hh = torch.tensor([3] * 5), torch.randn(3, 8), torch.randn(8, 8)
    args = (torch.randn(15, 8), torch.randn(3, 8), torch.randn(15, 5), torch.randn(8, 5),
            batch_sizes, h0, w_hh, torch.randn(15, 8), [1, 2], True)
    with torch.autocast("cpu", torch.bfloat16):
        inside = ops.clockwork_backward(*args)
    after = ops.clockwork_backward(*args)
    for got, want in zip(inside, after, strict=True):
        assert got.dtype == want.dtype
        assert torch.equal(got, want)
