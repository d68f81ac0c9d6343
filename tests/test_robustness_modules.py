"""Malformed input to the modules never crashes the interpreter, and odd strides work. Each
group of cases runs in a child process (this file run as a script; helpers/isolated.py), so
a segfault or abort fails the tests instead of ending them. The groups run on the CPU.

- Malformed input, hx and PackedSequence raise the exception type torch.nn raises; where
  torch.nn silently accepts what it should refuse, fastrnn raises a clear error.
- Odd strides (slices, transposes, stride-0 expansions) work and match torch.nn.
"""

import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence

import fastrnn
from helpers.isolated import child_results, outcome, run_group
from helpers.running import flatten_result, weighted_loss
from helpers.tolerances import tolerance

I, H, P, B = 4, 5, 3, 3
PAIRS = {"LSTM": (nn.LSTM, fastrnn.LSTM, {}), "LSTM-proj": (nn.LSTM, fastrnn.LSTM,
                                                              {"proj_size": P}),
         "GRU": (nn.GRU, fastrnn.GRU, {}), "RNN": (nn.RNN, fastrnn.RNN, {})}


def modules(cell, **kwargs):
    torch_cls, fast_cls, extra = PAIRS[cell]
    torch.manual_seed(0)
    ref = torch_cls(I, H, **extra, **kwargs)
    fast = fast_cls(I, H, **extra, **kwargs)
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def x(*shape, dtype=torch.float32):
    return torch.randn(*shape, dtype=dtype)


def packed(rows, batch_sizes, *indices):
    return PackedSequence(x(rows, I), batch_sizes, *indices)


def zeros(*shape, **kw):
    return torch.zeros(*shape, **kw)


# --- modules: name -> (cell, () -> (input, hx), expectation) ----------------------------
# "same": fastrnn raises what torch.nn raises (or both run, with equal results);
# ("clear", word): torch.nn accepts it silently; fastrnn raises RuntimeError naming `word`.
MODULE_CASES = {
    "input_1d": ("GRU", lambda: (x(I), None), "same"),
    "input_0d": ("GRU", lambda: (torch.tensor(1.0), None), "same"),
    "input_4d": ("LSTM", lambda: (x(5, B, 1, I), None), "same"),
    "input_feature_size": ("RNN", lambda: (x(5, B, I + 1), None), "same"),
    "input_int64": ("LSTM", lambda: (x(5, B, I).long(), None), "same"),
    "input_bool": ("GRU", lambda: (x(5, B, I) > 0, None), "same"),
    "input_complex": ("RNN", lambda: (x(5, B, I).to(torch.complex64), None), "same"),
    "input_float64": ("GRU", lambda: (x(5, B, I, dtype=torch.float64), None), "same"),
    "input_list": ("GRU", lambda: (x(5, B, I).tolist(), None), "same"),
    "input_none": ("LSTM", lambda: (None, None), "same"),
    "input_meta": ("RNN", lambda: (x(5, B, I).to("meta"), None), "same"),
    "zero_steps": ("GRU", lambda: (x(0, B, I), None), "same"),
    "huge_empty_zero_steps": ("GRU", lambda: (torch.empty(0, 2 ** 40, I), None), "same"),
    "huge_empty_features": ("LSTM", lambda: (torch.empty(3, 2 ** 40, 0), None), "same"),
    "empty_batch_many_steps": ("LSTM", lambda: (torch.empty(2 ** 16, 0, I), None), "same"),
    "hx_wrong_batch": ("GRU", lambda: (x(5, B, I), zeros(1, B + 1, H)), "same"),
    "hx_wrong_size": ("RNN", lambda: (x(5, B, I), zeros(1, B, H + 1)), "same"),
    "hx_wrong_rank": ("RNN", lambda: (x(5, B, I), zeros(B, H)), "same"),
    "hx_int64": ("RNN", lambda: (x(5, B, I), zeros(1, B, H, dtype=torch.long)), "same"),
    "hx_complex": ("GRU", lambda: (x(5, B, I), zeros(1, B, H, dtype=torch.complex64)),
                   "same"),
    "hx_meta": ("GRU", lambda: (x(5, B, I), zeros(1, B, H, device="meta")), "same"),
    "hx_float": ("RNN", lambda: (x(5, B, I), 1.0), "same"),
    "gru_hx_tuple": ("GRU", lambda: (x(5, B, I), (zeros(1, B, H),)), "same"),
    "gru_hx_pair": ("GRU", lambda: (x(5, B, I), (zeros(1, B, H), zeros(1, B, H))), "same"),
    "lstm_hx_tensor": ("LSTM", lambda: (x(5, B, I), zeros(1, B, H)), "same"),
    "lstm_hx_1_tuple": ("LSTM", lambda: (x(5, B, I), (zeros(1, B, H),)), "same"),
    "lstm_hx_3_tuple": ("LSTM", lambda: (x(5, B, I), (zeros(1, B, H),) * 3), "same"),
    "lstm_hx_list": ("LSTM", lambda: (x(5, B, I), [zeros(1, B, H), zeros(1, B, H)]), "same"),
    "lstm_hx_none_c": ("LSTM", lambda: (x(5, B, I), (zeros(1, B, H), None)), "same"),
    "lstm_hx_floats": ("LSTM", lambda: (x(5, B, I), (1.0, 2.0)), "same"),
    "lstm_cx_wrong_size": ("LSTM-proj", lambda: (x(5, B, I), (zeros(1, B, P),
                                                             zeros(1, B, P))), "same"),
    "packed_lstm_hx_tensor": ("LSTM", lambda: (packed(5, torch.tensor([3, 2])),
                                               zeros(1, 3, H)), "same"),
    "packed_increasing": ("GRU", lambda: (packed(5, torch.tensor([2, 3])), None), "same"),
    "packed_zero_inside": ("GRU", lambda: (packed(5, torch.tensor([3, 0, 2])), None), "same"),
    "packed_zero_at_end": ("LSTM", lambda: (packed(5, torch.tensor([3, 2, 0])), None), "same"),
    "packed_all_zero": ("RNN", lambda: (packed(0, torch.tensor([0, 0])), None), "same"),
    "packed_negative": ("GRU", lambda: (packed(2, torch.tensor([3, -1])), None), "same"),
    "packed_int32": ("LSTM", lambda: (packed(5, torch.tensor([3, 2], dtype=torch.int32)),
                                      None), "same"),
    "packed_float": ("GRU", lambda: (packed(5, torch.tensor([3.0, 2.0])), None), "same"),
    "packed_2d": ("GRU", lambda: (packed(5, torch.tensor([[3, 2]])), None), "same"),
    "packed_empty": ("RNN", lambda: (packed(0, torch.zeros(0, dtype=torch.long)), None),
                     "same"),
    "packed_fewer_rows": ("GRU", lambda: (packed(4, torch.tensor([3, 2])), None), "same"),
    "packed_huge_sizes": ("GRU", lambda: (packed(5, torch.tensor([2 ** 62] * 3)), None),
                          "same"),
    "packed_data_3d": ("LSTM", lambda: (PackedSequence(x(5, 1, I), torch.tensor([3, 2])),
                                        None), "same"),
    "packed_hx_wrong_batch": ("RNN", lambda: (packed(5, torch.tensor([3, 2])),
                                              zeros(1, 2, H)), "same"),
    "packed_sorted_indices_out_of_range": (
        "GRU", lambda: (packed(5, torch.tensor([3, 2]), torch.tensor([0, 1, 7]),
                               torch.tensor([0, 1, 2])), None), "same"),
    # torch.nn ignores data rows beyond sum(batch_sizes)
    "packed_more_rows": ("GRU", lambda: (packed(7, torch.tensor([3, 2])), None),
                         ("clear", "sum(batch_sizes)")),
}

# --- odd strides: name -> (cell, batch_first, () -> (input, hx, leaves)) -------------------
# leaves: the tensors gradients are taken for (the bases of the views, made leaves first).


def _time_slice():
    base = x(10, B, I, dtype=torch.float64).requires_grad_()
    return base[::2], None, [base]


def _batch_major():  # time-first shape, batch-major memory
    base = x(B, 5, I, dtype=torch.float64).requires_grad_()
    return base.transpose(0, 1), None, [base]


def _expanded_batch():  # every sequence the same, stride 0 along the batch
    base = x(5, 1, I, dtype=torch.float64).requires_grad_()
    return base.expand(5, B, I), None, [base]


def _expanded_hx():
    base = x(5, B, I, dtype=torch.float64).requires_grad_()
    h = x(1, 1, H, dtype=torch.float64).requires_grad_()
    return base, h.expand(4, B, H), [base, h]  # 2 layers x 2 directions


def _lstm_strided_hx():
    base = x(5, B, I, dtype=torch.float64).requires_grad_()
    h = x(4, B, 2 * P, dtype=torch.float64).requires_grad_()  # 2 layers x 2 directions
    c = x(B, 4, H, dtype=torch.float64).requires_grad_()
    return base, (h[..., ::2], c.transpose(0, 1)), [base, h, c]


def _packed_strided_data():
    base = x(8, 2 * I, dtype=torch.float64).requires_grad_()
    return PackedSequence(base[:, ::2], torch.tensor([3, 3, 2])), None, [base]


def _unbatched_feature_slice():
    base = x(6, 3 * I, dtype=torch.float64).requires_grad_()
    return base[:, 1::3], None, [base]


def _batch_first_column_major():
    base = x(I, 5, B, dtype=torch.float64).requires_grad_()
    return base.permute(2, 1, 0), None, [base]


STRIDE_CASES = {
    "time_slice": ("LSTM", False, _time_slice),
    "batch_major_memory": ("GRU", False, _batch_major),
    "expanded_batch": ("RNN", False, _expanded_batch),
    "expanded_hx": ("GRU", False, _expanded_hx),
    "lstm_strided_hx": ("LSTM-proj", False, _lstm_strided_hx),
    "packed_strided_data": ("LSTM", False, _packed_strided_data),
    "unbatched_feature_slice": ("RNN", False, _unbatched_feature_slice),
    "batch_first_column_major": ("LSTM", True, _batch_first_column_major),
}


# --- the child process: runs one group, prints {case: outcome} as JSON -------------------


def run_module_case(name):
    cell, make, _ = MODULE_CASES[name]
    ref, fast = modules(cell)
    inp, hx = make()
    want, want_result = outcome(lambda: ref(inp, hx))
    got, got_result = outcome(lambda: fast(inp, hx))
    got["torch"] = want
    if want_result is not None and got_result is not None:
        pairs = zip(flatten_result(got_result), flatten_result(want_result))
        got["max_difference"] = max([(a - b).abs().max().item() if a.numel() else 0.0
                                     for a, b in pairs] + [0.0])
    return got


def run_stride_case(name):
    cell, batch_first, make = STRIDE_CASES[name]
    ref, fast = modules(cell, batch_first=batch_first, num_layers=2, bidirectional=True)
    ref, fast = ref.double(), fast.double()
    differences = []
    results = []
    for module in (ref, fast):
        torch.manual_seed(1)  # the same inputs for both
        inp, hx, leaves = make()
        outs = flatten_result(module(inp, hx))
        grads = torch.autograd.grad(weighted_loss(outs), leaves + list(module.parameters()))
        results.append(outs + list(grads))
    for a, b in zip(*results):
        differences.append((a - b).abs().max().item())
    return {"error": None, "max_difference": max(differences)}


GROUPS = {"modules": (MODULE_CASES, run_module_case),
          "strides": (STRIDE_CASES, run_stride_case)}


# --- the tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results():
    """group -> {case: outcome}, each group from its own child process."""
    return child_results(__file__)


@pytest.mark.parametrize("name", list(MODULE_CASES))
def test_module_bad_input(results, name):
    got = results("modules")[name]
    expectation = MODULE_CASES[name][2]
    want = got["torch"]
    if expectation == "same":
        assert got["error"] == want["error"], (got, want)
        if got["error"] is None:
            assert got["max_difference"] <= tolerance(torch.float32, "small_float32"), got
    else:
        _, word = expectation
        assert want["error"] is None, want  # torch.nn accepts it silently
        assert got["error"] == "RuntimeError" and word in got["message"], got


@pytest.mark.parametrize("name", list(STRIDE_CASES))
def test_odd_strides_work_and_match_torch_nn(results, name):
    got = results("strides")[name]
    assert got["error"] is None, got
    assert got["max_difference"] <= tolerance(torch.float64), got


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_group(GROUPS, sys.argv[1])
