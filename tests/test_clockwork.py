"""fastrnn.ClockworkRNN: equal to a plain float64 loop of the equations (outputs, final
state and every gradient, the masked blocks' zero gradient included) for several period
sets and every input layout; the active-module schedule; float32; gradcheck and opcheck of
the ops; errors; state_dict; compile; meta."""

import copy

import pytest
import torch
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import fastrnn
from fastrnn.clockwork import allowed_blocks
from helpers.devices import DEVICES
from helpers.tolerances import tolerance

F64 = torch.float64
PERIODS = [(1, 2, 4, 8), (1, 3, 5), (2, 3), (1,), (3, 4, 9, 10)]
HIDDEN = {1: 6, 2: 8, 3: 9, 4: 8}  # a hidden size per module count


def definition(model, x, h0):
    """The equations, step by step: x [T, B, I], h0 [B, H] -> y [T, B, H], h_T [B, H]."""
    hidden, periods = model.hidden_size, model.periods
    k = hidden // len(periods)
    w_hh = model.weight_hh_l0 * allowed_blocks(hidden, periods)
    bias = model.bias_ih_l0 + model.bias_hh_l0 if model.bias else 0
    h, ys = h0, []
    for t in range(x.shape[0]):
        new = torch.tanh(x[t] @ model.weight_ih_l0.t() + bias + h @ w_hh.t())
        active = torch.tensor([t % p == 0 for p in periods]).repeat_interleave(k)
        h = torch.where(active, new, h)
        ys.append(h)
    return torch.stack(ys), h


def make(periods, bias=True, dtype=F64, hidden=None, inputs=3, **kwargs):
    """A model whose masked blocks hold large values, which must never be read."""
    torch.manual_seed(0)
    model = fastrnn.ClockworkRNN(inputs, hidden or HIDDEN[len(periods)], periods=periods,
                                 bias=bias, dtype=dtype, **kwargs)
    with torch.no_grad():
        model.weight_hh_l0.add_(~allowed_blocks(model.hidden_size, periods) * 5.0)
    return model


def gradients(outputs, model, inputs):
    y, h_n = outputs
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    loss = (y * weights).sum() + (h_n ** 2).sum()
    return torch.autograd.grad(loss, [*inputs, *model.parameters()])


@pytest.mark.parametrize("periods", PERIODS, ids=str)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("hx", [True, False])
def test_equals_the_definition_with_every_gradient(periods, bias, hx):
    model = make(periods, bias)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(11, 2, 3, generator=g, dtype=F64, requires_grad=True)
    h0 = torch.randn(1, 2, model.hidden_size, generator=g, dtype=F64, requires_grad=True)
    got = model(x, h0 if hx else None)
    want_y, want_h = definition(model, x, h0[0] if hx else torch.zeros_like(h0[0]))
    torch.testing.assert_close(got[0], want_y, atol=1e-10, rtol=0)
    torch.testing.assert_close(got[1][0], want_h, atol=1e-10, rtol=0)
    inputs = [x, h0] if hx else [x]
    got_grads = gradients(got, model, inputs)
    want_grads = gradients((want_y, want_h.unsqueeze(0)), model, inputs)
    for got_g, want_g in zip(got_grads, want_grads):
        torch.testing.assert_close(got_g, want_g, atol=1e-10, rtol=0)
    masked = ~allowed_blocks(model.hidden_size, periods)
    grad_w_hh = got_grads[len(inputs) + 1]
    if masked.any():
        assert torch.count_nonzero(grad_w_hh[masked]) == 0
        assert torch.count_nonzero(grad_w_hh[~masked]) > 0


@pytest.mark.usefixtures("torch_state")
@pytest.mark.parametrize("dtype", [F64, torch.float32], ids=str)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("walk", ["units", "rows", "0"], ids=["fused_units", "fused_rows",
                                                              "blas"])
@pytest.mark.parametrize("periods", [(1, 2, 4, 8), (1, 3, 5), (2, 3)], ids=str)
@pytest.mark.parametrize("lengths", [[11, 11, 10, 9, 9, 7, 6, 6, 4, 3, 2, 2, 1], [11, 6, 2]],
                         ids=["13_rows", "3_rows"])
@pytest.mark.parametrize("units, inputs", [(21, 37), (16, 32)], ids=["cut", "whole"])
def test_each_cpu_walk_equals_the_definition(periods, lengths, units, inputs, walk, threads,
                                             dtype, monkeypatch):
    """The fused walk split by units and by rows, and the BLAS walk, on a packed batch
    whose modules of 21 units and 37 inputs cut the panels (8 doubles, 16 floats) and the
    threads' slices, or of 16 units and 32 inputs fill them (the fused walk's weight
    gradients then read x and the states in place), and whose 13 rows make several row
    blocks (and 3 rows, for which the fused walk takes the input products formed before
    it); float32 against the float64 definition."""
    monkeypatch.setenv("FASTRNN_CPU_FUSED", walk)
    torch.set_num_threads(threads)
    model = make(periods, hidden=units * len(periods), inputs=inputs)
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randn(n, inputs, generator=g, dtype=F64) for n in lengths]
    h0 = torch.randn(1, len(seqs), model.hidden_size, generator=g, dtype=F64)
    run_model = copy.deepcopy(model).to(dtype)
    run_seqs = [s.to(dtype).requires_grad_() for s in seqs]
    run_h0 = h0.to(dtype).requires_grad_()
    y, h_n = run_model(pack_sequence(run_seqs), run_h0)
    padded, _ = pad_packed_sequence(y)
    loss = sum((padded[:n, b] * padded[:n, b].cos()).sum() for b, n in enumerate(lengths))
    got = torch.autograd.grad(loss + (h_n ** 2).sum(),
                              [*run_seqs, run_h0, *run_model.parameters()])
    tol = {"atol": 1e-10, "rtol": 0} if dtype == F64 else {"atol": tolerance(dtype),
                                                           "rtol": tolerance(dtype)}
    leaves = [s.requires_grad_() for s in seqs] + [h0.requires_grad_()]
    want_loss = 0
    for b, (s, n) in enumerate(zip(leaves, lengths)):
        want_y, want_h = definition(model, s.unsqueeze(1), h0[:, b])
        torch.testing.assert_close(padded[:n, b].double(), want_y[:, 0], **tol)
        torch.testing.assert_close(h_n[:, b].double(), want_h, **tol)
        want_loss = want_loss + (want_y * want_y.cos()).sum() + (want_h ** 2).sum()
    want = torch.autograd.grad(want_loss, [*leaves, *model.parameters()])
    for got_g, want_g in zip(got, want, strict=True):
        torch.testing.assert_close(got_g.double(), want_g, **tol)


@pytest.mark.parametrize("walk", ["units", "0"], ids=["fused", "blas"])
@pytest.mark.parametrize("batch", [5, 2])
def test_input_without_gradient(walk, batch, monkeypatch):
    """An input that needs no gradient gets none (the op skips it); the parameters' equal
    the definition's."""
    monkeypatch.setenv("FASTRNN_CPU_FUSED", walk)
    model = make((1, 2, 4, 8), hidden=24, inputs=19)
    x = torch.randn(9, batch, 19, dtype=F64)
    got = torch.autograd.grad(model(x)[0].sum(), list(model.parameters()))
    want_y, _ = definition(model, x, torch.zeros(batch, 24, dtype=F64))
    want = torch.autograd.grad(want_y.sum(), list(model.parameters()))
    for got_g, want_g in zip(got, want, strict=True):
        torch.testing.assert_close(got_g, want_g, atol=1e-10, rtol=0)
    assert x.grad is None


@pytest.mark.parametrize("periods", [(1, 2, 4, 8), (2, 3)], ids=str)
def test_inactive_modules_keep_their_value(periods):
    model = make(periods)
    y, _ = model(torch.randn(17, 2, 3, dtype=F64))
    k = model.hidden_size // len(periods)
    for i, period in enumerate(periods):
        units = y[:, :, i * k:(i + 1) * k]
        for t in range(1, 17):
            changed = not torch.equal(units[t], units[t - 1])
            assert changed == (t % period == 0), (i, t)


@pytest.mark.parametrize("layout", ["batch_first", "unbatched", "packed-sorted",
                                    "packed-unsorted"])
def test_layouts_equal_the_definition_per_sequence(layout):
    model = make((1, 2, 4, 8), batch_first=layout == "batch_first")
    g = torch.Generator().manual_seed(2)
    lengths = {"batch_first": [6, 6, 6], "unbatched": [9]}.get(layout, [9, 4, 1])
    if layout == "packed-unsorted":
        lengths = [4, 9, 1]
    seqs = [torch.randn(n, 3, generator=g, dtype=F64, requires_grad=True) for n in lengths]
    h0 = torch.randn(1, len(seqs), 8, generator=g, dtype=F64)
    if layout == "batch_first":
        y, h_n = model(torch.stack(seqs), h0)
        outs = [y[b] for b in range(3)]
    elif layout == "unbatched":
        y, h_n = model(seqs[0], h0[:, 0])
        outs, h_n = [y], h_n.unsqueeze(1)
    else:
        packed = pack_sequence(seqs, enforce_sorted=layout == "packed-sorted")
        y, h_n = model(packed, h0)
        padded, _ = pad_packed_sequence(y)
        outs = [padded[:n, b] for b, n in enumerate(lengths)]
    loss = sum((o * o.cos()).sum() for o in outs) + h_n.sum()
    grads = torch.autograd.grad(loss, seqs)
    for b, s in enumerate(seqs):
        want_y, want_h = definition(model, s.unsqueeze(1), h0[:, b])
        torch.testing.assert_close(outs[b], want_y[:, 0], atol=1e-10, rtol=0)
        torch.testing.assert_close(h_n[:, b], want_h, atol=1e-10, rtol=0)
        want_grad, = torch.autograd.grad((want_y[:, 0] * want_y[:, 0].cos()).sum()
                                         + want_h.sum(), s)
        torch.testing.assert_close(grads[b], want_grad, atol=1e-10, rtol=0)


def test_float32_against_float64():
    model = make((1, 2, 4, 8))
    x = torch.randn(40, 4, 3, dtype=F64)
    want, _ = model(x)
    got, _ = model.float()(x.float())
    torch.testing.assert_close(got.double(), want, atol=tolerance(torch.float32), rtol=0)


def _op_args(dtype=F64, requires_grad=False, bias=True):
    """The op's arguments: steps of 3, 3, 2, 2, 1 rows, I = 4, H = 6, periods 1, 2, 3."""
    g = torch.Generator().manual_seed(3)

    def tensor(*shape):
        return torch.randn(*shape, generator=g, dtype=dtype, requires_grad=requires_grad)

    return (tensor(11, 4), tensor(6, 4), tensor(6) if bias else None, torch.tensor([3, 3, 2, 2, 1]),
            tensor(3, 6), tensor(6, 6), [1, 2, 3])


@pytest.mark.parametrize("bias", [True, False])
def test_ops_gradcheck_and_opcheck(bias):
    x, w_ih, b, batch_sizes, h0, w_hh, periods = _op_args(requires_grad=True, bias=bias)
    op = torch.ops.fastrnn.clockwork_forward
    torch.autograd.gradcheck(lambda *t: op(t[0], t[1], t[2] if bias else None, batch_sizes,
                                           t[-2], t[-1], periods),
                             (x, w_ih, *([b] if bias else []), h0, w_hh))
    torch.library.opcheck(op, _op_args(requires_grad=True, bias=bias))


@pytest.mark.parametrize("periods, message", [
    ((), "positive and strictly ascending"),
    ((2, 1), "positive and strictly ascending"),
    ((0, 1), "positive and strictly ascending"),
    ((1, 1), "positive and strictly ascending"),
    ((1, 2, 4), "multiple of the number of modules"),
    ((1, 2.5), "ints"),
    ("ab", "ints"),
])
def test_bad_periods_raise_value_error(periods, message):
    with pytest.raises(ValueError, match=message):
        fastrnn.ClockworkRNN(3, 8, periods=periods)


def test_op_errors():
    x, w_ih, b, batch_sizes, h0, w_hh, periods = _op_args()
    op = torch.ops.fastrnn.clockwork_forward
    with pytest.raises(RuntimeError, match="strictly ascending"):
        op(x, w_ih, b, batch_sizes, h0, w_hh, [2, 2, 3])
    with pytest.raises(RuntimeError, match="multiple of the number of modules"):
        op(x, w_ih, b, batch_sizes, h0, w_hh, [1, 2, 3, 4])
    with pytest.raises(RuntimeError, match=r"x must be \[sum\(batch_sizes\), I\]"):
        op(x[:-1], w_ih, b, batch_sizes, h0, w_hh, periods)
    with pytest.raises(RuntimeError, match=r"w_ih must be \[H, I\]"):
        op(x, w_ih[:, :-1], b, batch_sizes, h0, w_hh, periods)
    with pytest.raises(RuntimeError, match=r"bias must be \[H\]"):
        op(x, w_ih, b[:-1], batch_sizes, h0, w_hh, periods)
    with pytest.raises(RuntimeError, match="x must have dtype"):
        op(x.float(), w_ih, b, batch_sizes, h0, w_hh, periods)
    y, _ = op(x, w_ih, b, batch_sizes, h0, w_hh, periods)
    backward = torch.ops.fastrnn.clockwork_backward
    with pytest.raises(RuntimeError, match="grad_y must be"):
        backward(y[:-1], h0, x, w_ih, batch_sizes, h0, w_hh, y, periods, True)
    with pytest.raises(RuntimeError, match="y must be"):
        backward(y, h0, x, w_ih, batch_sizes, h0, w_hh, y[:, :-1], periods, True)


def test_masked_blocks_start_at_zero_and_state_dict_round_trips():
    masked = ~allowed_blocks(8, (1, 2, 4, 8))
    assert torch.count_nonzero(fastrnn.ClockworkRNN(3, 8).weight_hh_l0[masked]) == 0
    model = make((1, 2, 4, 8))
    other = fastrnn.ClockworkRNN(3, 8, periods=(1, 2, 4, 8), dtype=F64)
    other.load_state_dict(model.state_dict())
    x = torch.randn(9, 2, 3, dtype=F64)
    copy = x.clone()
    torch.testing.assert_close(other(x)[0], model(x)[0], atol=0, rtol=0)
    assert torch.equal(x, copy)
    assert "periods=(1, 2, 4, 8)" in repr(model)


def test_whole_model_loads_under_torch_load_defaults(tmp_path):
    model = make((1, 2, 4, 8))
    torch.save(model, tmp_path / "clockwork.pt")
    loaded = torch.load(tmp_path / "clockwork.pt")
    x = torch.randn(5, 1, 3, dtype=F64)
    torch.testing.assert_close(loaded(x)[0], model(x)[0], atol=0, rtol=0)


def test_compiled_fullgraph_equals_eager():
    model = make((1, 2, 4, 8), dtype=torch.float32)
    x = torch.randn(13, 5, 3, requires_grad=True)
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(allow_rnn=True):
        y, h_n = compiled(x)
        grad, = torch.autograd.grad(y.sum() + h_n.sum(), x)
    want_y, want_h = model(x)
    want_grad, = torch.autograd.grad(want_y.sum() + want_h.sum(), x)
    torch.testing.assert_close(y, want_y, atol=1e-6, rtol=0)
    torch.testing.assert_close(h_n, want_h, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=0)


def test_packed_input_compiles_fullgraph():
    model = make((1, 2, 4), dtype=torch.float32)
    packed = pack_sequence([torch.randn(n, 3) for n in (9, 5, 2)], enforce_sorted=False)
    with torch._dynamo.config.patch(allow_rnn=True):
        got, got_h = torch.compile(model, fullgraph=True)(packed)
    want, want_h = model(packed)
    torch.testing.assert_close(got.data, want.data, atol=1e-6, rtol=0)
    torch.testing.assert_close(got_h, want_h, atol=1e-6, rtol=0)


def test_periods_longer_than_the_sequence():
    model = make((1, 100))
    x = torch.randn(7, 2, 3, dtype=F64)
    h0 = torch.randn(1, 2, 8, dtype=F64)
    y, h_n = model(x, h0)
    want_y, want_h = definition(model, x, h0[0])
    torch.testing.assert_close(y, want_y, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_n[0], want_h, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_within_twice_the_definitions_own_error(dtype):
    """Gradients against float64, within twice the error of the definition's loop run in
    dtype itself (T=64: a weight gradient summed over many steps)."""
    model = make((1, 2, 4, 8))
    x = torch.randn(64, 4, 3, dtype=F64, requires_grad=True)
    want = gradients(model(x), model, [x])
    low = make((1, 2, 4, 8), dtype=dtype)
    low.load_state_dict({n: p.to(dtype) for n, p in model.state_dict().items()})
    xl = x.detach().to(dtype).requires_grad_()
    got = gradients(low(xl), low, [xl])
    y, h = definition(low, xl, xl.new_zeros(4, 8))
    own = gradients((y, h.unsqueeze(0)), low, [xl])
    for g, o, w in zip(got, own, want):
        scale = w.abs().max().item() or 1.0
        own_error = (o.double() - w).abs().max().item() / scale
        assert (g.double() - w).abs().max().item() / scale <= 2 * max(own_error, 2 ** -8)


def test_under_autocast_it_computes_in_the_parameters_dtype():
    model = make((1, 2), dtype=torch.float32)
    x = torch.randn(6, 3, 3)
    want, want_h = model(x)
    with torch.autocast("cpu", torch.bfloat16):
        got, got_h = model(x)
    assert got.dtype == got_h.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_meta_device():
    model = make((1, 2, 4, 8)).to("meta")
    y, h_n = model(torch.empty(7, 3, 3, device="meta", dtype=F64))
    assert y.shape == (7, 3, 8) and h_n.shape == (1, 3, 8)


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
@pytest.mark.parametrize("dtype", [F64, torch.float32])
def test_cuda_equals_the_cpu(device, dtype):
    """Dense: output, h_n and every parameter's gradient; packed: output and h_n."""
    model = make((1, 2, 4), dtype=dtype)
    on_device = copy.deepcopy(model).to(device)
    x = torch.randn(9, 3, 3, dtype=dtype)
    for got, want in zip(gradients(on_device(x.to(device)), on_device, []),
                         gradients(model(x), model, [])):
        torch.testing.assert_close(got.cpu(), want, atol=tolerance(dtype), rtol=0)
    seqs = [torch.randn(n, 3, dtype=dtype) for n in (9, 5, 2)]
    y, h_n = on_device(pack_sequence([s.to(device) for s in seqs], enforce_sorted=False))
    want_y, want_h = model(pack_sequence(seqs, enforce_sorted=False))
    torch.testing.assert_close(y.data.cpu(), want_y.data, atol=tolerance(dtype), rtol=0)
    torch.testing.assert_close(h_n.cpu(), want_h, atol=tolerance(dtype), rtol=0)


def test_onnx_export_is_refused(monkeypatch):
    monkeypatch.setattr(fastrnn._onnx, "active_exporter", lambda: "dynamo")
    with pytest.raises(RuntimeError, match="ClockworkRNN has no ONNX translation"):
        make((1, 2))(torch.randn(4, 2, 3, dtype=F64))


def test_other_devices_are_refused():
    with pytest.raises(RuntimeError, match="no kernels"):
        make((1, 2)).forward(_OnXpu())


class _OnXpu:
    """An input that says it is on a device without kernels: checked before any use."""
    device = torch.device("xpu")
    is_cpu = is_meta = is_cuda = False
