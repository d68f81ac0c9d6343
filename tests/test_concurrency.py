"""Forward and backward from several Python threads at once, on one module with different
inputs, give the results of running the same calls one after another."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from helpers.cases import Case
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.running import run

pytestmark = pytest.mark.usefixtures("torch_state")

THREADS, CALLS = 4, 12
CASES = [
    Case("LSTM-proj", True, 2, True, False, "packed_unsorted", True),
    Case("GRU", True, 2, True, True, "dense", False),
    Case("RNN-relu", True, 1, False, False, "packed_sorted", True),
]
# big enough (batch x hidden above the kernels' parallel grain) for the ops to split their
# work over intra-op threads while Python threads call them
LARGE = Case("LSTM", True, 1, True, False, "packed_unsorted", True, input_size=3,
             hidden_size=130, batch=128, steps=3,
             lengths=tuple([3] * 60 + [2] * 40 + [1] * 28))


def check_threads_match_sequential(case, dtype, calls=CALLS, device="cpu"):
    _, fast = make_pair(case, dtype)
    fast = fast.to(device)
    inputs = [make_inputs(case, dtype, seed=seed, device=device) for seed in range(calls)]
    sequential = [run(fast, i)[:2] for i in inputs]
    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = list(pool.map(lambda i: run(fast, i)[:2], inputs))
    for (outs_a, grads_a), (outs_b, grads_b) in zip(concurrent, sequential):
        for a, b in zip(outs_a, outs_b):
            assert torch.equal(a, b)
        assert list(grads_a) == list(grads_b)
        for name in grads_b:
            assert torch.equal(grads_a[name], grads_b[name]), name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_threads_match_sequential(case, device):
    check_threads_match_sequential(case, torch.float64, device=device)


def test_threads_match_sequential_with_intra_op_threads(multithreaded):
    check_threads_match_sequential(LARGE, torch.float32, calls=THREADS)
