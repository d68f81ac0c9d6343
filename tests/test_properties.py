"""Property tests: random configurations (cell, sizes, layers, directions, bias, batch_first,
dense/packed sorted/packed unsorted/unbatched with random lengths, hx or not, float32 or
float64) agree with torch.nn on the same weights: outputs, final states, packing and every
gradient. derandomize=True: CI draws the same examples every run."""

import dataclasses

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from helpers.cases import CELLS, Case
from helpers.compare import assert_results_close, assert_same_packing
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import run
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

KINDS = ("dense", "packed_sorted", "packed_unsorted", "unbatched")
SETTINGS = settings(max_examples=600, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


@st.composite
def cases(draw):
    cell = draw(st.sampled_from(list(CELLS)))
    kind = draw(st.sampled_from(KINDS))
    hidden = draw(st.integers(2 if cell == "LSTM-proj" else 1, 6))
    batch = draw(st.integers(1, 4))
    steps = draw(st.integers(1, 6))
    lengths = None
    if kind.startswith("packed"):
        lengths = draw(st.lists(st.integers(1, steps), min_size=batch, max_size=batch))
        if kind == "packed_sorted":
            lengths = sorted(lengths, reverse=True)
        lengths = tuple(lengths)
    return Case(
        cell=cell, bias=draw(st.booleans()), layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()), batch_first=draw(st.booleans()), kind=kind,
        hx=draw(st.booleans()), input_size=draw(st.integers(1, 5)), hidden_size=hidden,
        steps=steps, batch=batch, lengths=lengths,
        proj_size=draw(st.integers(1, hidden - 1)) if cell == "LSTM-proj" else None)


@pytest.mark.parametrize("device", DEVICES)
@SETTINGS
@given(case=cases(), dtype=st.sampled_from([torch.float64, torch.float32]),
       seed=st.integers(0, 2 ** 16))
def test_matches_torch_nn(device, case, dtype, seed):
    ref, fast = make_pair(case, dtype, seed=seed)
    ref, fast = ref.to(device), fast.to(device)
    inputs = make_inputs(case, dtype, seed=seed + 1, device=device)
    want, got = run(ref, inputs), run(fast, inputs)
    assert_results_close(got[:2], want[:2], dtype, case.id)
    assert_same_packing(got[2], want[2])


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=cases(), seed=st.integers(0, 2 ** 16))
def test_results_independent_of_batch_neighbours(case, seed):
    """Each sequence's results do not depend on the other sequences of its batch: running
    the first sequence alone gives its rows of the batched run (float64)."""
    assume(case.kind != "unbatched" and case.batch > 1)
    _, fast = make_pair(case, seed=seed)
    inputs = make_inputs(case, seed=seed + 1)
    out, hidden = fast(*inputs.fresh(requires_grad=False).args())
    single = dataclasses.replace(case, kind="unbatched", steps=case.seq_lengths()[0])
    x = inputs.x[0] if case.batch_first else inputs.x[:, 0]
    hx = None
    if case.hx:
        hx = (inputs.h0[:, 0], inputs.c0[:, 0]) if case.is_lstm else inputs.h0[:, 0]
    alone_out, alone_hidden = fast(x[:single.steps], hx)
    h_n = hidden[0] if case.is_lstm else hidden
    alone_h = alone_hidden[0] if case.is_lstm else alone_hidden
    torch.testing.assert_close(h_n[:, 0], alone_h, **atol_rtol(torch.float64))
    if not case.kind.startswith("packed"):
        row = out[0] if case.batch_first else out[:, 0]
        torch.testing.assert_close(row, alone_out, **atol_rtol(torch.float64))
