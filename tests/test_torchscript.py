"""TorchScript: torch.jit.script and torch.jit.trace of fastrnn's LSTM, GRU, RNN and cells
hold torch.nn's graph (fastrnn's forward is Python TorchScript cannot compile), so they
give torch.nn's scripted results; the modules with no torch.nn twin refuse clearly."""

import io
import warnings

import pytest
import torch

import fastrnn
from helpers.cases import CELLS as LAYERS
from helpers.cases import Case
from helpers.cells import CELLS, CellCase, flatten_state, make_cell_inputs, make_cell_pair
from helpers.compare import assert_close
from helpers.inputs import make_inputs
from helpers.modules import NO_TWIN, make_pair
from helpers.running import flatten_result

pytestmark = [pytest.mark.usefixtures("torch_state"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*TorchScript.*"),
              pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")]


def cell_setup(cell, batch=3):
    case = CellCase(cell, batch=batch)
    return (*make_cell_pair(case), *make_cell_inputs(case).args(), flatten_state)


def layer_setup(cell, batch=2):
    case = Case(cell, True, 2, False, False, "dense", True, steps=3, batch=batch)
    return (*make_pair(case), *make_inputs(case).args(), flatten_result)


SETUPS = ([pytest.param(cell_setup, cell, id=cell) for cell in CELLS] +
          [pytest.param(layer_setup, cell, id=cell) for cell in LAYERS])


def roundtrip(scripted):
    """scripted saved and loaded back, as a deployment loads it."""
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    return torch.jit.load(buffer)


class Holder(torch.nn.Module):
    """A model around one module (torch.jit.script compiles torch.nn's layers' overloaded
    forward as part of a caller, not as a module's own entry point)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x)


@pytest.mark.parametrize("setup,cell", SETUPS)
def test_script_as_torch_nn(setup, cell):
    """torch.jit.script of a model holding fastrnn's module equals the same model holding
    torch.nn's, at the traced batch and another, after a save and load; the module itself
    stays fastrnn's, its parameters shared with the scripted one."""
    ref, fast, x, _, flatten = setup(cell)
    scripted = roundtrip(torch.jit.script(Holder(fast)))
    want = torch.jit.script(Holder(ref))
    assert type(fast).__module__.startswith("fastrnn")
    for call_x in (x, torch.cat([x, x], 1 if x.dim() == 3 else 0)):
        for got, expected in zip(flatten(scripted(call_x)), flatten(want(call_x))):
            assert_close(got, expected)
    live = torch.jit.script(Holder(fast))
    with torch.no_grad():
        next(fast.parameters()).mul_(2)
    for got, expected in zip(flatten(live(x)), flatten(fast(x))):
        assert_close(got, expected)


@pytest.mark.parametrize("setup,cell", SETUPS)
def test_trace_as_torch_nn(setup, cell):
    """torch.jit.trace records torch.nn's graph (no fastrnn op): its results are torch.nn's,
    at the traced shapes."""
    ref, fast, x, hx, flatten = setup(cell)
    args = (x, hx) if hx is not None else (x,)
    traced = roundtrip(torch.jit.trace(fast, args))
    assert "fastrnn::" not in str(traced.inlined_graph)  # no op of fastrnn's
    for got, expected in zip(flatten(traced(*args)), flatten(ref(*args))):
        assert_close(got, expected)


def test_model_with_layers_and_cells():
    """A model holding fastrnn modules among others scripts whole (torch.nn's own way)."""
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = fastrnn.LSTM(4, 6, num_layers=2, batch_first=True)
            self.cell = fastrnn.GRUCell(6, 5)
            self.head = torch.nn.Linear(5, 2)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(self.cell(out[:, -1]))

    model = Model().double()
    x = torch.randn(3, 7, 4, dtype=torch.float64)
    assert_close(roundtrip(torch.jit.script(model))(x), model(x))


@pytest.mark.parametrize("name", NO_TWIN)
@pytest.mark.parametrize("how", ["script", "trace"])
def test_modules_without_twin_refused(name, how):
    module = NO_TWIN[name]()
    x = torch.randn(2, 4) if "Cell" in name else torch.randn(3, 2, 4)
    with pytest.raises(RuntimeError, match="has no TorchScript translation"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.script(module) if how == "script" else torch.jit.trace(module, (x,))


def test_variant_without_options_scripts():
    """A VariantLSTM with no option set is torch.nn's LSTM, and scripts as one."""
    torch.manual_seed(0)
    fast = fastrnn.VariantLSTM(4, 8).double()
    ref = torch.nn.LSTM(4, 8).double()
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    assert_close(torch.jit.script(Holder(fast))(x)[0], ref(x)[0])
