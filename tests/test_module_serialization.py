"""The modules copied and serialized: deepcopy, pickle, torch.save/torch.load (whole and
as a state_dict) give modules that compute exactly what the original does."""

import copy
import io
import pickle

import pytest
import torch

from helpers.cases import Case
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import run

pytestmark = pytest.mark.usefixtures("torch_state")


def assert_same_module_behaviour(copy_, original, case):
    assert type(copy_) is type(original)
    inputs = make_inputs(case)
    got, want = run(copy_, inputs), run(original, inputs)
    for a, b in zip(got[0], want[0]):
        assert torch.equal(a, b)
    for name in want[1]:
        assert torch.equal(got[1][name], want[1][name]), name


SERIAL_CASES = [Case("LSTM-proj", True, 2, True, True, "packed_unsorted", True),
                Case("GRU", False, 2, False, False, "dense", True),
                Case("RNN-relu", True, 1, True, True, "dense", False)]


@pytest.mark.parametrize("case", SERIAL_CASES, ids=[c.cell for c in SERIAL_CASES])
def test_deepcopy(case):
    _, fast = make_pair(case)
    clone = copy.deepcopy(fast)
    assert clone.weight_hh_l0.data_ptr() != fast.weight_hh_l0.data_ptr()
    assert_same_module_behaviour(clone, fast, case)
    with torch.no_grad():
        clone.weight_hh_l0.add_(1.0)  # the copy's weights are its own
    assert not torch.equal(run(clone, make_inputs(case))[0][0],
                           run(fast, make_inputs(case))[0][0])


@pytest.mark.parametrize("case", SERIAL_CASES, ids=[c.cell for c in SERIAL_CASES])
def test_pickle(case):
    _, fast = make_pair(case)
    assert_same_module_behaviour(pickle.loads(pickle.dumps(fast)), fast, case)


@pytest.mark.parametrize("case", SERIAL_CASES, ids=[c.cell for c in SERIAL_CASES])
def test_torch_save_load(case):
    _, fast = make_pair(case)
    buffer = io.BytesIO()
    torch.save(fast, buffer)
    buffer.seek(0)
    assert_same_module_behaviour(torch.load(buffer, weights_only=False), fast, case)

    buffer = io.BytesIO()
    torch.save(fast.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    _, fresh = make_pair(case, seed=99)
    fresh.load_state_dict(state)
    assert_same_module_behaviour(fresh, fast, case)
