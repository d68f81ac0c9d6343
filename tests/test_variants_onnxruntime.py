"""fastrnn.VariantLSTM and VariantGRU against an independent implementation: ONNX Runtime.
First its CPU LSTM operator, whose input P holds peepholes and whose attribute input_forget couples the input
and forget gates. One-node models built with onnx.helper from the module's weights (ONNX's
gate order i, o, f, c; P's order i, o, f): forward, reverse and bidirectional, in float32.
ONNX Runtime's LSTM has no float64 kernel ("LSTM operator does not support double yet",
onnxruntime 1.32). Then the module exported with torch.onnx.export(dynamo=True), which
gives that operator (fastrnn/_onnx.py), run by ONNX Runtime at the traced shape and another;
and the layer-normalised LSTM and GRU exported so, ONNX Scans over steps of standard
operators (LayerNormalization among them), run by ONNX Runtime's own kernels."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import fastrnn
from helpers.tolerances import atol_rtol

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_state")

INPUT, HIDDEN, STEPS, BATCH = 3, 5, 6, 2
VARIANTS = {"peepholes": (True, False), "coupled": (False, True), "both": (True, True)}


def onnx_weights(module, suffix):
    """W [4H, I], R [4H, H], B [8H], P [3H] of one direction, in ONNX's orders. Coupled
    gates have no forget-gate block: ONNX Runtime reads none there (f = 1 - i), zeros stand
    in its place, and in P's forget entry."""
    param = lambda name: getattr(module, f"{name}{suffix}").detach()
    zeros = torch.zeros(HIDDEN, dtype=param("weight_ih_l0").dtype)

    def blocks(tensor):  # torch's i, f, g, o (coupled: i, g, o) -> ONNX's i, o, f, c
        if module.coupled_gates:
            i, g, o = tensor.chunk(3)
            f = zeros if tensor.dim() == 1 else torch.zeros_like(i)
        else:
            i, f, g, o = tensor.chunk(4)
        return torch.cat([i, o, f, g])

    bias = torch.cat([blocks(param("bias_ih_l0")), blocks(param("bias_hh_l0"))])
    if module.peepholes:
        peep = param("weight_ch_l0").chunk(2 if module.coupled_gates else 3)
        p_f = zeros if module.coupled_gates else peep[1]
        peepholes = torch.cat([peep[0], peep[-1], p_f])  # ONNX's i, o, f
    else:
        peepholes = torch.zeros(3 * HIDDEN, dtype=bias.dtype)
    return blocks(param("weight_ih_l0")), blocks(param("weight_hh_l0")), bias, peepholes


def run_onnxruntime(module, x, h0, c0, direction):
    suffixes = [""] + (["_reverse"] if module.bidirectional else [])
    per = [onnx_weights(module, s) for s in suffixes]
    W, R, B, P = (torch.stack([w[k] for w in per]).numpy() for k in range(4))
    dtype = TensorProto.FLOAT
    D = len(suffixes)
    node = helper.make_node(
        "LSTM", ["X", "W", "R", "B", "", "initial_h", "initial_c", "P"], ["Y", "Y_h", "Y_c"],
        hidden_size=HIDDEN, direction=direction, input_forget=int(module.coupled_gates))
    inputs = [helper.make_tensor_value_info(n, dtype, list(a.shape)) for n, a in (
        ("X", x.numpy()), ("initial_h", h0.numpy()), ("initial_c", c0.numpy()))]
    outputs = [helper.make_tensor_value_info("Y", dtype, [STEPS, D, BATCH, HIDDEN]),
               helper.make_tensor_value_info("Y_h", dtype, [D, BATCH, HIDDEN]),
               helper.make_tensor_value_info("Y_c", dtype, [D, BATCH, HIDDEN])]
    inits = [helper.make_tensor(n, dtype, list(a.shape), a.flatten().tolist())
             for n, a in (("W", W), ("R", R), ("B", B), ("P", P))]
    graph = helper.make_graph([node], "lstm", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    y, y_h, y_c = session.run(None, {"X": x.numpy(), "initial_h": h0.numpy(),
                                     "initial_c": c0.numpy()})
    # Y [T, D, B, H] -> [T, B, D*H]
    return np.transpose(y, (0, 2, 1, 3)).reshape(STEPS, BATCH, D * HIDDEN), y_h, y_c


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_equals_onnxruntime_lstm(variant, direction):
    dtype = torch.float32
    peepholes, coupled = VARIANTS[variant]
    torch.manual_seed(0)
    module = fastrnn.VariantLSTM(INPUT, HIDDEN, bidirectional=direction == "bidirectional",
                                 dtype=dtype, peepholes=peepholes, coupled_gates=coupled)
    gen = torch.Generator().manual_seed(1)
    D = 2 if module.bidirectional else 1
    x = torch.randn(STEPS, BATCH, INPUT, generator=gen, dtype=dtype)
    h0 = torch.randn(D, BATCH, HIDDEN, generator=gen, dtype=dtype)
    c0 = torch.randn(D, BATCH, HIDDEN, generator=gen, dtype=dtype)
    with torch.no_grad():
        if direction == "reverse":  # a reverse-only layer: a bidirectional's reverse half
            bidi = fastrnn.VariantLSTM(INPUT, HIDDEN, bidirectional=True, dtype=dtype,
                                       peepholes=peepholes, coupled_gates=coupled)
            for name, p in module.named_parameters():
                getattr(bidi, name + "_reverse").copy_(p)
            y, (h_n, c_n) = bidi(x, (h0.repeat(2, 1, 1), c0.repeat(2, 1, 1)))
            y, h_n, c_n = y[..., HIDDEN:], h_n[1:], c_n[1:]
        else:
            y, (h_n, c_n) = module(x, (h0, c0))
    want = run_onnxruntime(module, x, h0, c0, direction)
    for got, expected in zip((y, h_n, c_n), want):
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-5, rtol=1e-5)


class Flat(nn.Module):
    """forward(x, h0, c0) -> (output, h_n, c_n): tensors in and out, for the exporter."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, h0, c0):
        output, (h_n, c_n) = self.layer(x, (h0, c0))
        return output, h_n, c_n


@pytest.mark.skipif(not hasattr(torch.onnx, "ops"), reason="this torch lacks torch.onnx.ops")
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)], ids=["L1", "L2-bi"])
def test_dynamo_export_runs_in_onnxruntime(variant, layers, bidirectional):
    peepholes, coupled = VARIANTS[variant]
    torch.manual_seed(0)
    model = Flat(fastrnn.VariantLSTM(INPUT, HIDDEN, num_layers=layers,
                                     bidirectional=bidirectional, peepholes=peepholes,
                                     coupled_gates=coupled)).eval()
    states = layers * (2 if bidirectional else 1)

    def args(steps, batch):
        return (torch.randn(steps, batch, INPUT), torch.randn(states, batch, HIDDEN),
                torch.randn(states, batch, HIDDEN))

    steps, batch = torch.export.Dim("steps"), torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(
            model, args(7, 3), dynamo=True, input_names=["x", "h0", "c0"],
            dynamic_shapes=({0: steps, 1: batch}, {1: batch}, {1: batch})).model_proto
    assert [n.op_type for n in proto.graph.node].count("LSTM") == layers
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in ((7, 3), (9, 2)):
        inputs = args(*shape)
        with torch.no_grad():
            want = model(*inputs)
        got = session.run(None, dict(zip(["x", "h0", "c0"], (a.numpy() for a in inputs))))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), **atol_rtol(torch.float32))


class FlatGRU(nn.Module):
    """forward(x, h0) -> (output, h_n), for the exporter."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, h0):
        return self.layer(x, h0)


@pytest.mark.skipif(not hasattr(torch.onnx, "ops"), reason="this torch lacks torch.onnx.ops")
@pytest.mark.parametrize("mode,proj", [("LSTM", 0), ("LSTM", 2), ("GRU", 0)],
                         ids=["LSTM", "LSTM-proj", "GRU"])
@pytest.mark.parametrize("layers,bidirectional", [(1, False), (2, True)], ids=["L1", "L2-bi"])
def test_layer_norm_dynamo_export_runs_in_onnxruntime(mode, proj, layers, bidirectional):
    torch.manual_seed(0)
    kwargs = {"proj_size": proj} if mode == "LSTM" else {}
    layer = getattr(fastrnn, f"Variant{mode}")(INPUT, HIDDEN, num_layers=layers,
                                                bidirectional=bidirectional, layer_norm=True,
                                                **kwargs)
    with torch.no_grad():  # γ and β away from 1 and 0, so that they count
        for name, p in layer.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.3 * torch.randn(p.shape))
    model = (Flat(layer) if mode == "LSTM" else FlatGRU(layer)).eval()
    states = layers * (2 if bidirectional else 1)
    names = ["x", "h0", "c0"][:3 if mode == "LSTM" else 2]

    def args(steps, batch):
        return (torch.randn(steps, batch, INPUT), torch.randn(states, batch, proj or HIDDEN),
                torch.randn(states, batch, HIDDEN))[:len(names)]

    steps, batch = torch.export.Dim("steps"), torch.export.Dim("batch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = torch.onnx.export(
            model, args(7, 3), dynamo=True, input_names=names,
            dynamic_shapes=({0: steps, 1: batch},) + ({1: batch},) * (len(names) - 1)
        ).model_proto
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Scan") == layers * (2 if bidirectional else 1)
    assert "LayerNormalization" in ops and not any(n.domain.startswith("pkg.") for n in
                                                   proto.graph.node)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    for shape in ((7, 3), (9, 2)):
        inputs = args(*shape)
        with torch.no_grad():
            want = torch.utils._pytree.tree_leaves(model(*inputs))
        got = session.run(None, dict(zip(names, (a.numpy() for a in inputs))))
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w.numpy(), **atol_rtol(torch.float32))


def test_export_refusals():
    with pytest.raises(RuntimeError, match="does not export to ONNX yet"):
        torch.onnx.export(Flat(fastrnn.VariantLSTM(INPUT, HIDDEN, proj_size=2, peepholes=True)),
                          (torch.randn(4, 2, INPUT), torch.zeros(1, 2, 2),
                           torch.zeros(1, 2, HIDDEN)), dynamo=True)
