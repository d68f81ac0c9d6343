"""fastrnn.VariantLSTM against an independent implementation: ONNX Runtime's CPU LSTM
operator, whose input P holds peepholes and whose attribute input_forget couples the input
and forget gates. One-node models built with onnx.helper from the module's weights (ONNX's
gate order i, o, f, c; P's order i, o, f): forward, reverse and bidirectional, in float32.
ONNX Runtime's LSTM has no float64 kernel ("LSTM operator does not support double yet",
onnxruntime 1.32)."""

import numpy as np
import pytest
import torch

import fastrnn

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
