"""The cells as torch.nn's: subclasses of torch.nn's cells with the same constructor,
parameters, initialisation, repr and state_dict (loaded both ways); copied, pickled and saved
whole, they load under torch.load's defaults (weights_only=True), alone and inside a
client's model, in this process and in a fresh one, and compute exactly what they did."""

import copy
import io
import pickle
import subprocess
import sys

import pytest
import torch

import fastrnn
from helpers.cells import CELLS, CellCase, call, make_cell_inputs, make_cell_pair
from helpers.client_model import CLIENT_CELL_GLOBALS, ClientCellModel, features
from helpers.compare import assert_close
from helpers.paths import child_env

pytestmark = pytest.mark.usefixtures("torch_state")
# torch.load's default became weights_only=True in torch 2.6
WEIGHTS_ONLY_DEFAULT = pytest.mark.skipif(
    torch.__version__ < "2.6", reason="torch.load defaults to weights_only=True from torch 2.6")

F64 = torch.float64
BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="nobias")]


def test_every_exported_cell_is_tested():
    """Every drop-in cell (the variant cells, which have no torch.nn twin, are tested in
    test_variants.py)."""
    exported = {getattr(fastrnn, name) for name in fastrnn.__all__
                if isinstance(getattr(fastrnn, name), type)
                and issubclass(getattr(fastrnn, name), torch.nn.RNNCellBase)
                and not name.startswith("Variant")}
    assert exported == {fast_cls for _, fast_cls, _, _ in CELLS.values()}


@pytest.mark.parametrize("cell", list(CELLS))
def test_subclass_of_torch_nn_cell(cell):
    torch_cls, fast_cls, _, _ = CELLS[cell]
    assert issubclass(fast_cls, torch_cls) and issubclass(fast_cls, torch.nn.RNNCellBase)
    assert fast_cls.__name__ == torch_cls.__name__


@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_same_parameters_initialisation_and_repr(cell, bias):
    """Built with the same seed, both cells hold the same parameters (names, shapes, gate
    order, values) and print the same."""
    ref, fast = make_cell_pair(CellCase(cell, bias))
    torch.manual_seed(0)  # make_cell_pair's seed: a fastrnn cell built as its torch.nn twin
    fresh = CELLS[cell][1](ref.input_size, ref.hidden_size, bias=bias, dtype=F64,
                           **CELLS[cell][2])
    assert repr(fast) == repr(ref) == repr(fresh)
    assert [(n, p.shape) for n, p in fresh.named_parameters()] == [
        (n, p.shape) for n, p in ref.named_parameters()]
    for a, b in zip(fresh.parameters(), ref.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", list(CELLS))
def test_state_dict_both_ways(cell):
    """torch.nn -> fastrnn (make_cell_pair) and fastrnn -> a fresh torch.nn cell: the same
    keys and values, strictly loaded, and the torch.nn cell loaded from fastrnn computes
    exactly what the original torch.nn cell does."""
    case = CellCase(cell)
    ref, fast = make_cell_pair(case)
    assert list(fast.state_dict()) == list(ref.state_dict())
    back, _ = make_cell_pair(case, seed=99)
    assert not torch.equal(back.weight_ih, ref.weight_ih)
    back.load_state_dict(fast.state_dict())
    for name, value in ref.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name
    inputs = make_cell_inputs(case)
    for a, b in zip(call(back, *inputs.args()), call(ref, *inputs.args())):
        assert torch.equal(a, b)


def assert_same_cell_behaviour(copy_, original, case):
    assert type(copy_) is type(original)
    inputs = make_cell_inputs(case)
    for a, b in zip(call(copy_, *inputs.args()), call(original, *inputs.args())):
        assert torch.equal(a, b)


@pytest.mark.parametrize("cell", list(CELLS))
def test_deepcopy_and_pickle(cell):
    case = CellCase(cell)
    _, fast = make_cell_pair(case)
    clone = copy.deepcopy(fast)
    assert clone.weight_hh.data_ptr() != fast.weight_hh.data_ptr()
    assert_same_cell_behaviour(clone, fast, case)
    assert_same_cell_behaviour(pickle.loads(pickle.dumps(fast)), fast, case)


def save_and_load(obj, safe_globals=()):
    """torch.save(obj), then torch.load with its defaults (weights_only=True), `safe_globals`
    allowlisted."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(list(safe_globals)):
        return torch.load(buffer)


@WEIGHTS_ONLY_DEFAULT
@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_saved_whole_loads_with_defaults(cell):
    case = CellCase(cell)
    _, fast = make_cell_pair(case)
    loaded = save_and_load(fast)
    assert repr(loaded) == repr(fast)
    assert_same_cell_behaviour(loaded, fast, case)


def client_model(cell, fast=True, seed=0):
    torch_cls, fast_cls, kwargs, _ = CELLS[cell]
    torch.manual_seed(seed)
    return ClientCellModel(fast_cls if fast else torch_cls, **kwargs)


@WEIGHTS_ONLY_DEFAULT
@pytest.mark.parametrize("cell", list(CELLS))
def test_client_model_loads_with_defaults(cell):
    """A model holding a fastrnn cell, saved whole, loads where the client allowlists its own
    classes and torch.nn's; it needs nothing more than its torch.nn twin, less torch.nn's
    cell class."""
    def unsafe_globals(model):
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(buffer))

    model, twin = client_model(cell), client_model(cell, fast=False)
    torch_cls = CELLS[cell][0]
    torch_name = f"{torch_cls.__module__}.{torch_cls.__qualname__}"
    assert torch_name in unsafe_globals(twin)
    assert unsafe_globals(model) == unsafe_globals(twin) - {torch_name}
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        save_and_load(model)  # the defaults are weights-only: the client's class is needed
    loaded = save_and_load(model, CLIENT_CELL_GLOBALS)
    assert type(loaded.cell) is type(model.cell)
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    assert torch.equal(loaded(features()), model(features()))
    assert_close(model(features()), twin(features()), F64, "fastrnn vs torch.nn model")


# Run in a fresh process: it imports the client's model module (which imports fastrnn, as any
# program holding fastrnn's cells does) and allowlists only the client's and torch.nn's classes.
FRESH_LOADER = """
import sys
import torch
from helpers.compare import assert_close
from helpers.client_model import CLIENT_CELL_GLOBALS, features
torch.set_num_threads(1)  # as the saving test runs: the same summation order
with torch.serialization.safe_globals(CLIENT_CELL_GLOBALS):
    saved = torch.load(sys.argv[1])
for cell, (model, expected) in saved.items():
    assert torch.equal(model(features()), expected), cell
print("loaded", *saved)
"""


@WEIGHTS_ONLY_DEFAULT
def test_client_models_load_in_a_fresh_process(tmp_path):
    path = tmp_path / "models.pt"
    models = {cell: client_model(cell) for cell in CELLS}
    torch.save({cell: (model, model(features())) for cell, model in models.items()}, path)
    done = subprocess.run([sys.executable, "-c", FRESH_LOADER, str(path)],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["loaded", *CELLS]
