"""A model saved whole (torch.save(model)) loads back under torch.load(weights_only=True), the
default since torch 2.6, wherever the same model built with torch.nn's modules loads: as in
PyTorch's word_language_model, a program that allowlists its own classes and torch.nn's (not
fastrnn's) loads a model holding fastrnn's modules, which then compute exactly what they did."""

import io
import pickle
import subprocess
import sys

import pytest
import torch
from torch import nn

import fastrnn
from helpers.cases import CELLS
from helpers.client_model import B, CLIENT_GLOBALS, EMBED, T, ClientModel, tokens
from helpers.paths import child_env

pytestmark = [pytest.mark.usefixtures("torch_state"),
              pytest.mark.skipif(not hasattr(torch.serialization, "safe_globals"),
                                 reason="torch.serialization.safe_globals needs torch >= 2.5")]

def exported_modules():
    """fastrnn's exported drop-in layers (the cells, nn.RNNCellBase's subclasses, have the
    same loading tests in test_cells_api.py, the dilated stacks theirs in test_dilated.py, the
    echo state networks theirs in test_esn.py, the clockwork RNN in test_clockwork.py, the
    variants in test_variants.py and test_layer_norm.py)."""
    return {getattr(fastrnn, name) for name in fastrnn.__all__
            if isinstance(getattr(fastrnn, name), type)
            and issubclass(getattr(fastrnn, name), nn.Module)
            and not issubclass(getattr(fastrnn, name), nn.RNNCellBase)
            and not name.startswith(("Dilated", "Variant"))
            and name not in ("ClockworkRNN", "EchoStateNetwork", "Reservoir")}


def client_model(cell, fast=True, seed=0):
    torch_cls, fast_cls, kwargs = CELLS[cell]
    torch.manual_seed(seed)
    return ClientModel(fast_cls if fast else torch_cls, **kwargs).eval()


def save_and_load(model, safe_globals=()):
    """torch.save(model), then torch.load(weights_only=True) with `safe_globals` allowlisted."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals(list(safe_globals)):
        return torch.load(buffer, weights_only=True)


def assert_loaded_copy(loaded, model):
    assert type(loaded) is type(model)
    assert type(loaded.rnn) is type(model.rnn)
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(state)
    for name, value in state.items():
        assert torch.equal(loaded_state[name], value), name
    for mode in ("eval", "train"):  # train: dropout between layers, same seed
        outputs = []
        for m in (loaded, model):
            getattr(m, mode)()
            torch.manual_seed(5)
            outputs.append(m(tokens()))
        assert torch.equal(*outputs), mode


def test_every_exported_module_is_tested():
    assert {fast_cls for _, fast_cls, _ in CELLS.values()} == exported_modules()


@pytest.mark.parametrize("cell", list(CELLS))
def test_needs_no_global_its_twin_does_not(cell):
    """What a load would still have to allowlist: the twin's needs, less torch.nn's class (no
    function or enum a fastrnn module stores, say, may add to them)."""
    def unsafe_globals(model):
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        return set(torch.serialization.get_unsafe_globals_in_checkpoint(buffer))

    torch_cls = CELLS[cell][0]
    torch_name = f"{torch_cls.__module__}.{torch_cls.__qualname__}"
    twin_needs = unsafe_globals(client_model(cell, fast=False))
    assert torch_name in twin_needs
    assert unsafe_globals(client_model(cell)) == twin_needs - {torch_name}


@pytest.mark.parametrize("cell", list(CELLS))
def test_client_model_loads_with_torch_nn_allowlisted(cell):
    twin = client_model(cell, fast=False)
    assert_loaded_copy(save_and_load(twin, CLIENT_GLOBALS), twin)  # the client's own setup
    model = client_model(cell)
    assert_loaded_copy(save_and_load(model, CLIENT_GLOBALS), model)


@pytest.mark.parametrize("cell", list(CELLS))
def test_module_loads_without_allowlist_of_its_own(cell):
    """Plain torch.load(weights_only=True): a fastrnn module loads alone, and inside a
    container wherever torch.nn's twin inside the same container would."""
    model = client_model(cell)
    loaded = save_and_load(model.rnn)
    assert type(loaded) is type(model.rnn)
    x = torch.randn(T, B, EMBED, dtype=torch.float64)
    assert torch.equal(loaded(x)[0], model.rnn(x)[0])

    twin = client_model(cell, fast=False)
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        save_and_load(nn.ModuleList([twin.rnn]))  # the container is not allowlisted ...
    with pytest.raises(pickle.UnpicklingError, match="Unsupported global"):
        save_and_load(nn.ModuleList([model.rnn]))  # ... so neither loads
    assert save_and_load(nn.ModuleList([twin.rnn]), [nn.ModuleList, type(twin.rnn)])
    loaded = save_and_load(nn.ModuleList([model.rnn]), [nn.ModuleList])
    assert torch.equal(loaded[0](x)[0], model.rnn(x)[0])


# Run in a fresh process: it imports the client's model module (which imports fastrnn, as any
# program holding fastrnn's modules does) and lists only the client's and torch.nn's classes.
FRESH_LOADER = """
import sys
import torch
from helpers.client_model import CLIENT_GLOBALS, tokens
torch.set_num_threads(1)  # as the saving test runs: the same summation order
with torch.serialization.safe_globals(CLIENT_GLOBALS):
    saved = torch.load(sys.argv[1], weights_only=True)
for cell, (model, expected) in saved.items():
    assert torch.equal(model(tokens()), expected), cell
print("loaded", *saved)
"""


def test_client_models_load_in_a_fresh_process(tmp_path):
    models = {cell: client_model(cell) for cell in CELLS}
    path = tmp_path / "models.pt"
    torch.save({cell: (model, model(tokens())) for cell, model in models.items()}, path)
    done = subprocess.run([sys.executable, "-c", FRESH_LOADER, str(path)],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["loaded", *CELLS]
