"""fastrnn's layers and cells export to ONNX with both of torch's exporters, as standard ONNX
models: ONNX Runtime's CPU provider runs them and matches fastrnn's eager results (float32,
5e-5), at the traced shapes and, exported with dynamic axes, at another batch and length.

dynamo=True (torch.export): one ONNX LSTM/GRU/RNN node per layer (fastrnn/_onnx.py); an LSTM
with proj_size, which ONNX's LSTM cannot express, as an ONNX Scan. dynamo=False (the
TorchScript exporter): torch.nn's graph, which maps packed input to sequence_lens.
"""

import io
import logging
import warnings

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import fastrnn
from helpers.cases import CELLS
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state", "quiet_exporters")

INPUT, HIDDEN, PROJ = 4, 5, 3
TRACED = (7, 6)  # (steps, batch) of the traced call: equal to no feature size
OTHER = (9, 2)  # the shape a dynamic-axes export must also run at
ONNX_OPERATOR = {"LSTM": "LSTM", "LSTM-proj": "Scan", "GRU": "GRU", "RNN-tanh": "RNN",
                 "RNN-relu": "RNN"}
TOLERANCE = atol_rtol(torch.float32)  # ONNX Runtime's float32 against fastrnn's
EXPORTERS = [pytest.param("dynamo", marks=pytest.mark.skipif(
                 not hasattr(torch.onnx, "ops"), reason="this torch lacks torch.onnx.ops")),
             "torchscript"]


@pytest.fixture
def quiet_exporters():
    """The exporters' progress lines and deprecation warnings, out of the test log."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)
        yield
        logging.disable(logging.NOTSET)


def make_layer(cell, layers=1, bidirectional=False, batch_first=False):
    _, fast_cls, extra = CELLS[cell]
    torch.manual_seed(0)
    return fast_cls(INPUT, HIDDEN, num_layers=layers, bidirectional=bidirectional,
                    batch_first=batch_first, **extra).eval()


class Flat(nn.Module):
    """A layer with tensors in and out: forward(x[, h0[, c0]]) -> (output, h_n[, c_n])."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, h0=None, c0=None):
        hx = None if h0 is None else (h0, c0) if c0 is not None else h0
        output, hidden = self.layer(x, hx)
        return (output, *hidden) if isinstance(hidden, tuple) else (output, hidden)


def layer_inputs(layer, steps, batch, hx):
    """x and, with hx, the initial state(s) for a Flat(layer) call."""
    x = torch.randn((batch, steps, INPUT) if layer.batch_first else (steps, batch, INPUT))
    if not hx:
        return (x,)
    states = layer.num_layers * (2 if layer.bidirectional else 1)
    h0 = torch.randn(states, batch, getattr(layer, "proj_size", 0) or HIDDEN)
    return (x, h0) + ((torch.randn(states, batch, HIDDEN),) if layer.mode == "LSTM" else ())


def export(model, args, exporter, dynamic):
    """The ONNX model (onnx.ModelProto) of model(*args) from one exporter, checked against
    ONNX's operator schemas and shape inference. dynamic: a list per argument of
    {dim: name} that may vary (names shared across arguments are one size)."""
    names = [f"in{k}" for k in range(len(args))]
    if exporter == "dynamo":
        dims = {}
        shapes = tuple({d: dims.setdefault(n, torch.export.Dim(n)) for d, n in axes.items()}
                       for axes in dynamic)
        proto = torch.onnx.export(model, args, dynamo=True, input_names=names,
                                  dynamic_shapes=shapes).model_proto
    else:
        buffer = io.BytesIO()
        torch.onnx.export(model, args, buffer, dynamo=False, input_names=names,
                          dynamic_axes=dict(zip(names, dynamic)))
        proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def run_onnx(proto, args):
    session = onnxruntime.InferenceSession(proto.SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    return session.run(None, {n: a.numpy() for n, a in zip(names, args)})


def assert_matches_eager(proto, model, args):
    with torch.no_grad():
        expected = model(*args)
    actual = run_onnx(proto, args)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e.numpy(), **TOLERANCE)


def nodes(graph):
    """Every node of an ONNX graph, those of its subgraphs (a Scan's body) included."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for subgraph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                yield from nodes(subgraph)


def operators(proto):
    """(domain, op_type) of every node, subgraphs and model-local functions included."""
    found = {(node.domain, node.op_type) for node in nodes(proto.graph)}
    return found | {(n.domain, n.op_type) for f in proto.functions for n in f.node}


def count(proto, op_type):
    """How many top-level nodes run op_type."""
    return sum(node.op_type == op_type for node in proto.graph.node)


def layer_axes(layer, args):
    """Dynamic axes of layer_inputs: time and batch of x, batch of the states."""
    batch, steps = (0, 1) if layer.batch_first else (1, 0)
    return [{batch: "batch", steps: "steps"}] + [{1: "batch"}] * (len(args) - 1)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_dense_layer_exports_and_runs(cell, layers, bidirectional, batch_first, exporter):
    layer = make_layer(cell, layers, bidirectional, batch_first)
    model = Flat(layer)
    hx = layers == 2  # the initial states as model inputs, or zeros made inside the graph
    args = layer_inputs(layer, *TRACED, hx)
    if exporter == "torchscript" and cell == "LSTM-proj":
        with pytest.raises(RuntimeError, match="dynamo=True"):
            export(model, args, exporter, layer_axes(layer, args))
        return
    proto = export(model, args, exporter, layer_axes(layer, args))
    ops = operators(proto)
    assert ("", ONNX_OPERATOR[cell]) in ops
    assert all(domain in ("", "ai.onnx") for domain, _ in ops)  # no fastrnn op, no custom op
    if cell == "LSTM-proj":
        assert count(proto, "Scan") == layers * (2 if bidirectional else 1)
    else:  # one node per layer, both directions in it; no step loop around it
        assert count(proto, ONNX_OPERATOR[cell]) == layers
        assert not ops & {("", "Loop"), ("", "Scan")}
    assert_matches_eager(proto, model, args)
    assert_matches_eager(proto, model, layer_inputs(layer, *OTHER, hx))


class PackedClassifier(nn.Module):
    """pack_padded_sequence -> layer -> pad_packed_sequence, as models with lengths run."""

    def __init__(self, layer, enforce_sorted):
        super().__init__()
        self.layer, self.enforce_sorted = layer, enforce_sorted

    def forward(self, x, lengths):
        packed = pack_padded_sequence(x, lengths, enforce_sorted=self.enforce_sorted)
        output, hidden = self.layer(packed)
        output, _ = pad_packed_sequence(output, total_length=x.shape[0])
        return (output, *hidden) if isinstance(hidden, tuple) else (output, hidden)


@pytest.mark.parametrize("enforce_sorted", [True, False], ids=["sorted", "unsorted"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("layers", [1, 2], ids=["L1", "L2"])
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN-tanh", "RNN-relu"])
def test_packed_input_exports_with_sequence_lens(cell, layers, bidirectional, enforce_sorted):
    model = PackedClassifier(make_layer(cell, layers, bidirectional), enforce_sorted)
    lengths = [7, 5, 5, 3, 2, 1] if enforce_sorted else [3, 7, 1, 5, 2, 5]
    args = (torch.randn(7, 6, INPUT), torch.tensor(lengths))
    proto = export(model, args, "torchscript", [{0: "steps", 1: "batch"}, {0: "batch"}])
    assert count(proto, ONNX_OPERATOR[cell]) == layers
    assert_matches_eager(proto, model, args)
    other = [9, 4] if enforce_sorted else [4, 9]
    assert_matches_eager(proto, model, (torch.randn(9, 2, INPUT), torch.tensor(other)))


@pytest.mark.skipif(not hasattr(torch.onnx, "ops"), reason="this torch lacks torch.onnx.ops")
@pytest.mark.parametrize("cell", ["LSTM", "LSTM-proj"])
def test_dropout_between_layers_exports_in_training_only(cell):
    _, fast_cls, extra = CELLS[cell]
    layer = fast_cls(INPUT, HIDDEN, num_layers=3, dropout=0.25, **extra)
    args = (torch.randn(*TRACED, INPUT),)
    for training, dropouts in ((False, 0), (True, 2)):  # between the 3 layers: 2
        proto = export(Flat(layer.train(training)), args, "dynamo", [{}])
        assert count(proto, "Dropout") == dropouts


@pytest.mark.skipif(not hasattr(torch.onnx, "ops"), reason="this torch lacks torch.onnx.ops")
def test_packed_input_under_dynamo_is_refused_clearly():
    model = PackedClassifier(make_layer("GRU"), enforce_sorted=False)
    args = (torch.randn(7, 6, INPUT), torch.tensor([3, 7, 1, 5, 2, 5]))
    with pytest.raises(Exception, match="PackedSequence input does not export") as error:
        torch.onnx.export(model, args, dynamo=True)
    assert "dynamo=False" in str(error.value)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN-relu"])
def test_unbatched_input_exports(cell, exporter):
    layer = make_layer(cell, layers=2, bidirectional=True)
    args = (torch.randn(7, INPUT),)
    proto = export(Flat(layer), args, exporter, [{0: "steps"}])
    assert_matches_eager(proto, Flat(layer), args)
    assert_matches_eager(proto, Flat(layer), (torch.randn(9, INPUT),))


class CellLoop(nn.Module):
    """A Python loop of a cell over the steps of x [T, B, I]: unrolled in the export, so
    only the batch may vary."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x):
        state = None
        for x_t in x.unbind(0):
            state = self.cell(x_t, state)
        return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cell_cls,kwargs", [
    (fastrnn.LSTMCell, {}), (fastrnn.GRUCell, {}), (fastrnn.RNNCell, {"nonlinearity": "relu"}),
    (fastrnn.RNNCell, {"nonlinearity": "tanh", "bias": False})], ids=["LSTM", "GRU", "relu",
                                                                    "tanh-nobias"])
def test_cells_export_as_standard_ops(cell_cls, kwargs, exporter):
    torch.manual_seed(0)
    model = CellLoop(cell_cls(INPUT, HIDDEN, **kwargs))
    args = (torch.randn(3, 6, INPUT),)
    proto = export(model, args, exporter, [{1: "batch"}])
    assert all(domain in ("", "ai.onnx") for domain, _ in operators(proto))
    assert_matches_eager(proto, model, args)
    assert_matches_eager(proto, model, (torch.randn(3, 2, INPUT),))


class DilatedFlat(nn.Module):
    """A dilated stack with tensors out: (output, every layer's state(s))."""

    def __init__(self, stack):
        super().__init__()
        self.stack = stack

    def forward(self, x):
        output, final = self.stack(x)
        return (output, *(t for state in final
                          for t in (state if isinstance(state, tuple) else (state,))))


@pytest.mark.skipif(not hasattr(torch.onnx, "ops"), reason="this torch lacks torch.onnx.ops")
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_first", "batch_first"])
@pytest.mark.parametrize("cls,kwargs", [(fastrnn.DilatedLSTM, {}), (fastrnn.DilatedGRU, {}),
                                        (fastrnn.DilatedRNN, {"nonlinearity": "relu"})],
                         ids=["LSTM", "GRU", "RNN-relu"])
def test_dilated_stack_exports_one_node_per_layer(cls, kwargs, batch_first):
    """Dilations 1, 2, 4: each layer's subsequences side by side with their own lengths
    (sequence_lens), so lengths that are no multiple of 4 match too."""
    torch.manual_seed(0)
    model = DilatedFlat(cls(INPUT, HIDDEN, num_layers=3, bidirectional=True,
                            batch_first=batch_first, **kwargs).eval())
    shape = lambda steps, batch: (batch, steps, INPUT) if batch_first else (steps, batch, INPUT)
    steps = torch.export.Dim("steps", min=5)  # the largest dilation + 1 (README)
    dims = {(1 if batch_first else 0): steps, (0 if batch_first else 1): torch.export.Dim("b")}
    proto = torch.onnx.export(model, (torch.randn(*shape(*TRACED)),), dynamo=True,
                              dynamic_shapes=(dims,)).model_proto
    onnx.checker.check_model(proto, full_check=True)
    assert count(proto, {fastrnn.DilatedLSTM: "LSTM", fastrnn.DilatedGRU: "GRU",
                         fastrnn.DilatedRNN: "RNN"}[cls]) == 3
    assert all(domain in ("", "ai.onnx") for domain, _ in operators(proto))
    for steps, batch in (TRACED, OTHER, (8, 3)):
        assert_matches_eager(proto, model, (torch.randn(*shape(steps, batch)),))


def test_dilated_stack_under_torchscript_is_refused_clearly():
    model = DilatedFlat(fastrnn.DilatedGRU(INPUT, HIDDEN, num_layers=2))
    with pytest.raises(RuntimeError, match="only with torch.onnx.export\\(dynamo=True\\)"):
        export(model, (torch.randn(*TRACED, INPUT),), "torchscript", [{}])
