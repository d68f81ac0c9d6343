"""fastrnn vs torch.nn (and vs helpers/reference.py, itself checked against torch.nn):
outputs, final states and every gradient, over the whole configuration matrix, on the CPU
and (where there is a GPU) on CUDA, each against torch.nn on the same device."""

import itertools

import pytest
import torch

from helpers import reference
from helpers.cases import CELLS, KINDS, Case, full_matrix, ids
from helpers.compare import assert_results_close
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.parity import check_parity
from helpers.reference_module import ReferenceModule
from helpers.running import run
from helpers.tolerances import atol_rtol

pytestmark = pytest.mark.usefixtures("torch_state")

MATRIX = full_matrix()
# float32 on a fifth of the matrix that still holds every pair of option values (cell x
# kind, bias x layers, ...; checked below): every 5th case, with the offset rotating so
# that neighbours in the product get their turn.
FLOAT32_SUBSET = [case for k, case in enumerate(MATRIX) if (k + k // 48) % 5 == 0]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", MATRIX, ids=ids(MATRIX))
def test_parity_float64(case, device):
    check_parity(case, torch.float64, device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", FLOAT32_SUBSET, ids=ids(FLOAT32_SUBSET))
def test_parity_float32(case, device):
    check_parity(case, torch.float32, device)


def test_float32_subset_covers_every_pair_of_options():
    fields = ["cell", "bias", "layers", "bidirectional", "batch_first", "kind", "hx"]
    for a, b in itertools.combinations(fields, 2):
        pairs = lambda cases: {(getattr(c, a), getattr(c, b)) for c in cases}
        assert pairs(FLOAT32_SUBSET) == pairs(MATRIX), (a, b)
    assert {c.cell for c in MATRIX} == set(CELLS) and {c.kind for c in MATRIX} == set(KINDS)


# Sizes where the per-step work is split across threads (B * H above the parallel grain of
# 16384 units; an odd B so that the split falls inside a row), with variable lengths so the
# active rows change along time.
LARGE = [Case(cell, True, 1, True, False, kind, True, input_size=7, hidden_size=130,
              batch=131, steps=4, lengths=tuple([4] * 41 + [3] * 41 + [2] * 29 + [1] * 20))
         for cell in ("LSTM", "GRU", "RNN-tanh") for kind in ("dense", "packed_unsorted")]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("case", LARGE, ids=ids(LARGE))
def test_parity_multithreaded_sizes(case, dtype, multithreaded):
    assert torch.get_num_threads() == 2
    check_parity(case, dtype)


# Degenerate sizes: one input feature, one hidden unit, a projection to a single unit, a
# batch of one.
EDGE = [Case("LSTM", True, 2, True, False, "dense", True, input_size=1, hidden_size=1),
        Case("GRU", True, 2, True, True, "packed_unsorted", True, input_size=1, hidden_size=1),
        Case("RNN-relu", False, 2, True, False, "dense", True, input_size=1, hidden_size=1,
             batch=1),
        Case("LSTM-proj", True, 2, True, False, "packed_unsorted", True, hidden_size=2,
             proj_size=1),
        Case("LSTM-proj", False, 1, False, False, "packed_sorted", True, batch=1,
             lengths=(5,)),
        Case("GRU", True, 1, True, False, "unbatched", True, steps=1)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", EDGE, ids=[f"{c.id}-I{c.input_size}-H{c.hidden_size}-B{c.batch}"
                                            for c in EDGE])
def test_parity_edge_sizes(case, device):
    check_parity(case, torch.float64, device)


# One dense step, which the layers hand to functional.rnn as [1, B, I]: in those shapes to
# the cell op for one layer in one direction, as rows (reshaped there) for a projection or a
# stack.
ONE_DENSE_STEP = [Case("LSTM-proj", True, 1, False, False, "dense", True, steps=1),
                  Case("LSTM", True, 2, False, True, "dense", True, steps=1),
                  Case("GRU", True, 1, True, False, "dense", False, steps=1),
                  Case("RNN-tanh", False, 1, False, True, "dense", True, steps=1)]


@pytest.mark.parametrize("case", ONE_DENSE_STEP, ids=[c.id for c in ONE_DENSE_STEP])
def test_parity_one_dense_step(case):
    check_parity(case, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
def test_parity_long_sequence_float32(device):
    case = Case("LSTM-proj", True, 2, True, True, "packed_unsorted", True, steps=60,
                lengths=(60, 1, 33, 59))
    check_parity(case, torch.float32, device)


# --- the oracle: reference.py vs torch.nn, then fastrnn vs reference.py --------------------

REFERENCE_CASES = [Case(cell, bias, 2, True, bf, kind, hx)
                   for cell in CELLS
                   for bias, bf, kind, hx in [(True, False, "packed_unsorted", True),
                                              (False, True, "dense", False),
                                              (True, True, "unbatched", True)]]


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=ids(REFERENCE_CASES))
def test_reference_matches_torch_nn(case):
    ref, _ = make_pair(case)
    inputs = make_inputs(case)
    *want, _ = run(ref, inputs)
    *got, _ = run(ReferenceModule(ref), inputs)
    assert_results_close(got, want, torch.float64, "reference.py vs torch.nn")


FAST_VS_REFERENCE = [Case(cell, bias, layers, True, False, kind, True)
                     for cell in CELLS for bias in (True, False) for layers in (1, 3)
                     for kind in ("dense", "packed_unsorted")]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", FAST_VS_REFERENCE, ids=ids(FAST_VS_REFERENCE))
def test_fastrnn_matches_reference(case, device):
    """fastrnn on device against reference.py run in float64 on the CPU."""
    _, fast = make_pair(case)
    inputs = make_inputs(case)
    *want, _ = run(ReferenceModule(fast), inputs)
    *got, _ = run(fast.to(device), inputs.to(device))
    got = ([t.cpu() for t in got[0]], {name: g.cpu() for name, g in got[1].items()})
    assert_results_close(got, want, torch.float64, "fastrnn vs reference.py")


@pytest.mark.parametrize("cell", list(CELLS))
def test_functional_matches_reference_directly(cell):
    """fastrnn.functional.rnn and reference.rnn on the same packed data and weights."""
    from fastrnn import functional
    case = Case(cell, True, 2, True, kind="packed_sorted")
    ref, _ = make_pair(case)
    gen = torch.Generator().manual_seed(3)
    batch_sizes = torch.tensor([4, 3, 3, 1, 1])
    n, p, h = int(batch_sizes.sum()), case.out_size, case.hidden_size
    data = torch.randn(n, case.input_size, generator=gen, dtype=torch.float64)
    h0 = torch.randn(4, 4, p, generator=gen, dtype=torch.float64)
    c0 = torch.randn(4, 4, h, generator=gen, dtype=torch.float64) if case.is_lstm else None
    kwargs = dict(has_bias=True, num_layers=2, bidirectional=True, proj_size=ref.proj_size)
    got = functional.rnn(ref.mode, data, batch_sizes, h0, c0, ref._flat_weights, **kwargs)
    want = reference.rnn(ref.mode, data, batch_sizes, h0, c0, ref._flat_weights, **kwargs)
    assert got[0].shape == (n, 2 * p) and got[1].shape == (4, 4, p)
    for a, b in zip(got, want):
        if b is None:
            assert a is None
        else:
            torch.testing.assert_close(a, b, **atol_rtol(torch.float64))


def test_reference_rejects_dropout_in_training():
    ref, _ = make_pair(Case("GRU", layers=2))
    data = torch.zeros(2, ref.input_size, dtype=torch.float64)
    h0 = torch.zeros(2, 1, ref.hidden_size, dtype=torch.float64)
    with pytest.raises(NotImplementedError):
        reference.rnn("GRU", data, [1, 1], h0, None, ref._flat_weights, has_bias=True,
                      num_layers=2, bidirectional=False, dropout=0.5, training=True)
    with pytest.raises(ValueError, match="mode"):
        reference.rnn("LSTMX", data, [1, 1], h0, None, ref._flat_weights, has_bias=True,
                      num_layers=2, bidirectional=False)


def test_reference_does_not_use_the_extension():
    import ast
    import inspect
    tree = ast.parse(inspect.getsource(reference))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom)}
    assert imported == {"torch"}, imported
