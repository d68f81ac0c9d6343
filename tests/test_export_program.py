"""torch.export keeps fastrnn's recurrence ops in the exported program, with dynamic batch and
sequence length; the program saves and loads, and AOTInductor compiles it into a package
that loads and runs (fastrnn's library loaded: the package calls its ops)."""

import pytest
import torch
from torch import nn

import fastrnn
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

INPUT, HIDDEN, CLASSES = 4, 5, 3
SHAPES = [(6, 7), (2, 9), (1, 1)]  # (batch, steps): the traced call's, then others


class Tagger(nn.Module):
    """A bidirectional 2-layer LSTM and a GRU over its output, and a linear layer per step."""

    def __init__(self):
        super().__init__()
        self.lstm = fastrnn.LSTM(INPUT, HIDDEN, num_layers=2, bidirectional=True,
                                 batch_first=True)
        self.gru = fastrnn.GRU(2 * HIDDEN, HIDDEN, batch_first=True)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):
        y, (h_n, _) = self.lstm(x)
        y, g_n = self.gru(y)
        return self.head(y), h_n, g_n


@pytest.fixture(scope="module")
def program():
    torch.manual_seed(0)
    model = Tagger().eval()
    batch, steps = torch.export.Dim("batch"), torch.export.Dim("steps")
    x = torch.randn(*SHAPES[0], INPUT)
    return model, torch.export.export(model, (x,), dynamic_shapes=({0: batch, 1: steps},))


def assert_runs_as_eager(model, run):
    for batch, steps in SHAPES:
        x = torch.randn(batch, steps, INPUT)
        with torch.no_grad():
            expected = model(x)
        for actual, wanted in zip(run(x), expected, strict=True):
            torch.testing.assert_close(actual, wanted,
                                       **atol_rtol(torch.float32, "same_computation"))


def test_exported_program_holds_fastrnn_ops(program):
    _, exported = program
    targets = {str(node.target) for node in exported.graph.nodes if node.op == "call_function"}
    assert {"fastrnn.lstm_forward.default", "fastrnn.gru_forward.default"} <= targets
    assert not any("aten.lstm" in t or "aten.gru" in t for t in targets)


def test_exported_program_runs_at_other_shapes(program):
    model, exported = program
    assert_runs_as_eager(model, exported.module())


def test_exported_program_saves_and_loads(program, tmp_path):
    model, exported = program
    torch.export.save(exported, tmp_path / "tagger.pt2")
    assert_runs_as_eager(model, torch.export.load(tmp_path / "tagger.pt2").module())


def test_aot_inductor_package_runs(program, tmp_path):
    model, exported = program
    path = torch._inductor.aoti_compile_and_package(exported,
                                                    package_path=str(tmp_path / "tagger.pt2"))
    assert_runs_as_eager(model, torch._inductor.aoti_load_package(path))
