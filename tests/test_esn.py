"""Echo state networks: the Reservoir against ReservoirPy's with the same weights, the ridge
readout against ReservoirPy's Ridge, every input layout, a Mackey-Glass prediction task,
closed-loop generation, errors, state_dict, compile and meta. The leaky ops they run on:
test_leaky_ops.py."""

import pytest
import torch
import torch.nn.utils.parametrize
from torch.nn.utils.rnn import pack_sequence, pad_packed_sequence

import fastrnn
from fastrnn import esn
from helpers.devices import DEVICES

F64 = torch.float64
ops = torch.ops.fastrnn


def make_reservoir(density, **kwargs):
    return fastrnn.Reservoir(2, 60, leak_rate=0.3, spectral_radius=0.9, density=density,
                             input_density=0.5, bias_scaling=0.2, seed=3, dtype=F64, **kwargs)


@pytest.mark.parametrize("density", [0.1, 0.6])  # the sparse walk, the dense walk
def test_reservoir_equals_reservoirpy(density):
    rpy_nodes = pytest.importorskip("reservoirpy.nodes")
    res = make_reservoir(density)
    assert (res._use_csr(res.weight_hh_l0, torch.tensor([1]))) == (density < 0.2)
    u = torch.randn(50, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    states, h_n = res(u)
    rpy = rpy_nodes.Reservoir(lr=res.leak_rate.numpy(), W=res.weight_hh_l0.numpy(),
                       Win=res.weight_ih_l0.numpy(), bias=res.bias_ih_l0.numpy())
    want = torch.from_numpy(rpy.run(u.numpy()))
    torch.testing.assert_close(states, want, atol=1e-10, rtol=0)
    torch.testing.assert_close(h_n, want[-1:], atol=1e-10, rtol=0)


def test_reservoir_weights_follow_their_definition():
    res = fastrnn.Reservoir(3, 400, spectral_radius=0.8, density=0.1, input_scaling=0.5,
                            input_density=0.3, bias_scaling=0.25, seed=0, dtype=F64)
    w = res.weight_hh_l0
    assert torch.linalg.eigvals(w).abs().max().item() == pytest.approx(0.8, rel=1e-9)
    assert (w != 0).double().mean().item() == pytest.approx(0.1, abs=0.01)
    w_in = res.weight_ih_l0
    assert set(w_in.unique().tolist()) == {-0.5, 0.0, 0.5}
    assert (w_in != 0).double().mean().item() == pytest.approx(0.3, abs=0.05)
    assert set(res.bias_ih_l0.abs().unique().tolist()) == {0.25}
    assert not any(p.requires_grad for p in res.parameters())
    again = fastrnn.Reservoir(3, 400, spectral_radius=0.8, input_scaling=0.5, input_density=0.3,
                              bias_scaling=0.25, seed=0, dtype=F64)
    assert torch.equal(again.weight_hh_l0, w) and torch.equal(again.weight_ih_l0, w_in)


@pytest.mark.parametrize("density", [0.1, 0.6])
@pytest.mark.parametrize("layout", ["batch_first", "packed-sorted", "packed-unsorted"])
def test_reservoir_layouts_equal_one_sequence_at_a_time(density, layout):
    """Batched layouts against unbatched calls, one sequence each (the unbatched path is the
    one checked against ReservoirPy)."""
    res = make_reservoir(density, batch_first=layout == "batch_first")
    g = torch.Generator().manual_seed(5)
    lengths = {"batch_first": [5, 5, 5], "packed-sorted": [7, 5, 2]}.get(layout, [2, 7, 5])
    seqs = [torch.randn(n, 2, generator=g, dtype=F64) for n in lengths]
    h0s = [torch.randn(1, 60, generator=g, dtype=F64) for _ in lengths]
    want = [res(s, h) for s, h in zip(seqs, h0s)]  # [T, 60], [1, 60]
    hx = torch.stack([h[0] for h in h0s]).unsqueeze(0)  # [1, B, 60]
    if layout == "batch_first":
        states, h_n = res(torch.stack(seqs), hx)
        got = [states[b] for b in range(3)]
    else:
        packed = pack_sequence(seqs, enforce_sorted=layout == "packed-sorted")
        states, h_n = res(packed, hx)
        padded, _ = pad_packed_sequence(states)
        got = [padded[:n, b] for b, n in enumerate(lengths)]
    for b, (want_states, want_h) in enumerate(want):
        torch.testing.assert_close(got[b], want_states, atol=1e-12, rtol=0)
        torch.testing.assert_close(h_n[:, b], want_h, atol=1e-12, rtol=0)


def test_ridge_readout_equals_reservoirpy_ridge():
    rpy_nodes = pytest.importorskip("reservoirpy.nodes")
    g = torch.Generator().manual_seed(6)
    features = torch.randn(300, 20, generator=g, dtype=F64)
    targets = features[:, :3] * 2 - 1 + 0.1 * torch.randn(300, 3, generator=g, dtype=F64)
    weight, bias = esn.ridge_regression(features, targets, 1e-2)
    rpy = rpy_nodes.Ridge(ridge=1e-2)
    rpy.fit(features.numpy(), targets.numpy())
    want = torch.from_numpy(rpy.run(features.numpy()))
    torch.testing.assert_close(features @ weight.t() + bias, want, atol=1e-10, rtol=0)


def mackey_glass(n, tau=17, dt=0.1, every=10):
    """n samples (one per time unit) of the Mackey-Glass delay equation, Euler steps of dt."""
    lag, x = int(tau / dt), [1.2] * (int(tau / dt) + 1)
    for _ in range((n + 300) * every):
        x.append(x[-1] + dt * (0.2 * x[-lag - 1] / (1 + x[-lag - 1] ** 10) - 0.1 * x[-1]))
    series = torch.tensor(x[-n * every::every], dtype=F64)
    return (series - series.mean()) / series.std()


def test_mackey_glass_one_step_prediction():
    series = mackey_glass(2500)
    u, y = series[:-1, None], series[1:, None]
    model = fastrnn.EchoStateNetwork(1, 400, 1, leak_rate=0.3, spectral_radius=0.9, ridge=1e-8,
                                     washout=100, seed=1, dtype=F64)
    model.fit(u[:2000], y[:2000])
    prediction, _ = model(u)
    error = prediction[2000:] - y[2000:]
    nrmse = (error.pow(2).mean().sqrt() / y[2000:].std()).item()
    assert nrmse < 1e-2


@pytest.mark.parametrize("readout_input", [False, True])
def test_fit_drops_the_washout_of_every_sequence(readout_input):
    model = fastrnn.EchoStateNetwork(2, 30, 1, washout=3, ridge=0.1, seed=0, dtype=F64,
                                     readout_input=readout_input)
    g = torch.Generator().manual_seed(7)
    seqs = [torch.randn(n, 2, generator=g, dtype=F64) for n in (9, 6)]
    targets = [s[:, :1] ** 2 for s in seqs]
    model.fit(pack_sequence(seqs), pack_sequence(targets))
    features = []
    for s in seqs:
        states, _ = model.reservoir(s)
        features.append(torch.cat([s, states], 1)[3:] if readout_input else states[3:])
    weight, bias = esn.ridge_regression(torch.cat(features), torch.cat([t[3:] for t in targets]),
                                        0.1)
    torch.testing.assert_close(model.readout.weight, weight, atol=1e-10, rtol=0)
    torch.testing.assert_close(model.readout.bias, bias, atol=1e-10, rtol=0)
    out, _ = model(pack_sequence(seqs))
    padded, _ = pad_packed_sequence(out)
    dense, _ = model(seqs[0])
    torch.testing.assert_close(padded[:9, 0], dense, atol=1e-12, rtol=0)


@pytest.mark.parametrize("batch_first", [False, True])
def test_generate_feeds_predictions_back(batch_first):
    model = fastrnn.EchoStateNetwork(2, 40, 2, leak_rate=0.5, spectral_radius=0.8, seed=2,
                                     dtype=F64, batch_first=batch_first, readout_input=True)
    with torch.no_grad():
        model.readout.weight.normal_(0, 0.1, generator=torch.Generator().manual_seed(8))
    warmup = torch.randn(6, 3, 2, dtype=F64, generator=torch.Generator().manual_seed(9))
    if batch_first:
        warmup = warmup.transpose(0, 1)
    generated, h_n = model.generate(warmup, 4)
    time_dim = 1 if batch_first else 0
    assert generated.shape[time_dim] == 4
    output, h = model(warmup)
    step = output.narrow(time_dim, 5, 1)
    for k in range(4):
        torch.testing.assert_close(generated.narrow(time_dim, k, 1), step, atol=1e-12, rtol=0)
        step, h = model(step, h)
    torch.testing.assert_close(h_n, h, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"spectral_radius": 0.0}, "spectral_radius"),
    ({"spectral_radius": -1.0}, "spectral_radius"),
    ({"density": 0.0}, "density"),
    ({"input_density": 1.5}, "input_density"),
    ({"leak_rate": 0.0}, "leak_rate"),
    ({"leak_rate": [0.5] * 9 + [1.1]}, "leak_rate"),
    ({"leak_rate": [0.5] * 3}, "leak_rate"),
    ({"spectral_radius": float("inf")}, "spectral_radius"),
    ({"ridge": -1.0}, "ridge"),
    ({"washout": -1}, "washout"),
    ({"density": 1e-6}, "spectral radius 0"),
])
def test_bad_hyper_parameters_raise_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fastrnn.EchoStateNetwork(2, 10, 1, **kwargs)


def test_fit_and_generate_errors():
    model = fastrnn.EchoStateNetwork(2, 10, 1, washout=5, seed=0)
    with pytest.raises(ValueError, match="no step is left"):
        model.fit(torch.randn(5, 2), torch.randn(5, 1))
    with pytest.raises(ValueError, match="steps and batch"):
        model.fit(torch.randn(8, 2), torch.randn(9, 1))
    with pytest.raises(ValueError, match="1 features"):
        model.fit(torch.randn(8, 2), torch.randn(8, 3))
    with pytest.raises(ValueError, match="steps and batch"):  # [B, T] for [T, B]
        model.fit(torch.randn(8, 3, 2), torch.randn(3, 8, 1))
    seqs = [torch.randn(9, 2), torch.randn(7, 2)]
    with pytest.raises(ValueError, match="exactly when"):
        model.fit(pack_sequence(seqs), torch.randn(9, 2, 1))
    with pytest.raises(ValueError, match="same packing"):
        model.fit(pack_sequence(seqs, enforce_sorted=False),
                  pack_sequence([torch.randn(9, 1), torch.randn(8, 1)], enforce_sorted=False))
    with pytest.raises(ValueError, match="must equal input_size"):
        model.generate(torch.randn(3, 2), 2)
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D"):
        model(torch.randn(2, 3, 4, 2))


def test_state_dict_round_trip_and_inputs_unmodified():
    model = fastrnn.EchoStateNetwork(2, 30, 1, leak_rate=0.4, seed=0).fit(
        torch.randn(20, 2), torch.randn(20, 1))
    other = fastrnn.EchoStateNetwork(2, 30, 1, seed=1)
    other.load_state_dict(model.state_dict())
    u = torch.randn(10, 2)
    copy = u.clone()
    torch.testing.assert_close(other(u)[0], model(u)[0], atol=0, rtol=0)
    assert torch.equal(u, copy)


def test_whole_model_loads_under_torch_load_defaults(tmp_path):
    """weights_only=True, torch.load's default."""
    model = fastrnn.EchoStateNetwork(2, 30, 1, leak_rate=0.4, seed=0).fit(
        torch.randn(20, 2), torch.randn(20, 1))
    torch.save(model, tmp_path / "esn.pt")
    # torch.nn.Linear (the readout) needs allowlisting in any model; fastrnn's classes do not
    with torch.serialization.safe_globals([torch.nn.Linear]):
        loaded = torch.load(tmp_path / "esn.pt")
    u = torch.randn(9, 2)
    torch.testing.assert_close(loaded(u)[0], model(u)[0], atol=0, rtol=0)


def test_compiled_fullgraph_equals_eager():
    model = fastrnn.EchoStateNetwork(3, 24, 2, density=0.1, seed=0)  # eager: the sparse walk
    u = torch.randn(11, 5, 3)
    compiled = torch.compile(model, fullgraph=True, dynamic=True)
    with torch._dynamo.config.patch(allow_rnn=True):
        got = compiled(u)[0]
    torch.testing.assert_close(got, model(u)[0], atol=1e-6, rtol=0)


def test_sparse_weight_cache_follows_changes_to_the_weight():
    res = make_reservoir(0.1)
    u = torch.randn(8, 1, 2, dtype=F64)
    before, _ = res(u)
    with torch.no_grad():
        res.weight_hh_l0.mul_(0.5)
    after, _ = res(u)
    dense, _ = ops.leaky_forward(res.weight_ih_l0.new_zeros(8, 60) + (
        u.reshape(8, 2) @ res.weight_ih_l0.t() + res.bias_ih_l0), torch.tensor([1] * 8),
        torch.zeros(1, 60, dtype=F64), res.weight_hh_l0, res.leak_rate, False)
    torch.testing.assert_close(after.reshape(8, 60), dense, atol=1e-12, rtol=0)
    assert not torch.equal(before, after)


def test_parametrized_weight_is_read_at_every_call():
    res = make_reservoir(0.1)
    u = torch.randn(8, 1, 2, dtype=F64)
    res(u)  # fills the sparse weight's cache
    torch.nn.utils.parametrize.register_parametrization(res, "weight_hh_l0", _Halve())
    got, _ = res(u)
    with torch.no_grad():
        plain = make_reservoir(0.1)
        plain.weight_hh_l0.mul_(0.5)
    torch.testing.assert_close(got, plain(u)[0], atol=1e-12, rtol=0)


class _Halve(torch.nn.Module):
    def forward(self, w):
        return w * 0.5


def test_onnx_export_and_devices_without_kernels_are_refused(monkeypatch):
    model = fastrnn.Reservoir(2, 10, seed=0)
    with pytest.raises(RuntimeError, match="no kernels for xpu"):
        model.forward(_OnXpu())
    monkeypatch.setattr(fastrnn._onnx, "active_exporter", lambda: "dynamo")
    with pytest.raises(RuntimeError, match="Reservoir has no ONNX translation"):
        model(torch.randn(4, 2))


class _OnXpu:
    """An input that says it is on a device without kernels: checked before any use."""
    device = torch.device("xpu")
    is_cpu = is_meta = is_cuda = False


def test_meta_device():
    model = fastrnn.EchoStateNetwork(2, 16, 1, seed=0).to("meta")
    out, h_n = model(torch.empty(7, 3, 2, device="meta"))
    assert out.shape == (7, 3, 1) and h_n.shape == (1, 3, 16) and out.device.type == "meta"


@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
def test_reservoir_on_cuda_equals_the_cpu(device):
    model = fastrnn.EchoStateNetwork(2, 50, 1, leak_rate=0.5, seed=0, dtype=F64).fit(
        torch.randn(40, 2, dtype=F64), torch.randn(40, 1, dtype=F64))
    u = torch.randn(30, 4, 2, dtype=F64)
    want, want_h = model(u)
    got, got_h = model.to(device)(u.to(device))
    torch.testing.assert_close(got.cpu(), want, atol=1e-10, rtol=0)
    torch.testing.assert_close(got_h.cpu(), want_h, atol=1e-10, rtol=0)


def test_under_autocast_the_reservoir_keeps_its_dtype():
    model = fastrnn.EchoStateNetwork(2, 20, 1, seed=0)
    u = torch.randn(6, 3, 2)
    want, _ = model.reservoir(u)
    with torch.autocast("cpu", torch.bfloat16):
        got, h_n = model.reservoir(u)
    assert got.dtype == h_n.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_input_of_another_dtype_raises_as_torch_nn():
    model = fastrnn.Reservoir(2, 20, seed=0)
    with pytest.raises(ValueError, match="does not match weight dtype"):
        model(torch.randn(6, 3, 2, dtype=F64))
