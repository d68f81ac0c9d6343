"""Bad input never crashes the interpreter. Each group of cases runs in a child process
(this file run as a script), so a segfault or abort fails the tests instead of ending them.

- Modules: malformed input, hx and PackedSequence raise the exception type torch.nn raises;
  where torch.nn silently accepts what it should refuse, fastrnn raises a clear error.
- Odd strides (slices, transposes, stride-0 expansions) work and match torch.nn.
- The raw ops refuse malformed arguments with a message naming the argument.
Also in process: NaN and Inf propagate as in torch.nn (on every device), and no input is
ever modified. The child-process groups run on the CPU.
"""

import json
import os
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import fastrnn
from helpers.cases import CELLS, Case
from helpers.devices import DEVICES
from helpers.inputs import make_inputs
from helpers.modules import make_pair
from helpers.paths import child_env
from helpers.running import flatten_result, weighted_loss
from helpers.tolerances import atol_rtol, tolerance

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

# --- raw ops: name -> (op, argument overrides, expected exception, word in its message) ----
OPS = torch.ops.fastrnn
OP_H, OP_P, OP_B = 3, 2, 3
OP_BATCH_SIZES = [3, 2, 2, 1]
OP_N = sum(OP_BATCH_SIZES)


def op_args(op):
    """Valid arguments of op (a name), in schema order, as a dict."""
    r = lambda *shape: torch.randn(*shape)
    bs = torch.tensor(OP_BATCH_SIZES)
    if op.startswith("lstm"):
        fwd = dict(gx=r(OP_N, 4 * OP_H), batch_sizes=bs, h0=r(OP_B, OP_P), c0=r(OP_B, OP_H),
                   w_hh=r(4 * OP_H, OP_P), w_hr=r(OP_P, OP_H), reverse=False, save=True)
        if op == "lstm_forward":
            return fwd
        y, _, _, saved = OPS.lstm_forward(*fwd.values())
        return dict(grad_y=r(OP_N, OP_P), grad_hn=r(OP_B, OP_P), grad_cn=r(OP_B, OP_H),
                    batch_sizes=bs, h0=fwd["h0"], c0=fwd["c0"], w_hh=fwd["w_hh"],
                    w_hr=fwd["w_hr"], y=y, saved=saved, reverse=False)
    if op.startswith("gru"):
        fwd = dict(gx=r(OP_N, 3 * OP_H), batch_sizes=bs, h0=r(OP_B, OP_H),
                   w_hh=r(3 * OP_H, OP_H), b_hh=r(3 * OP_H), reverse=False, save=True)
        if op == "gru_forward":
            return fwd
        y, _, saved = OPS.gru_forward(*fwd.values())
        return dict(grad_y=r(OP_N, OP_H), grad_hn=r(OP_B, OP_H), batch_sizes=bs, h0=fwd["h0"],
                    w_hh=fwd["w_hh"], y=y, saved=saved, has_bias=True, reverse=False)
    fwd = dict(gx=r(OP_N, OP_H), batch_sizes=bs, h0=r(OP_B, OP_H), w_hh=r(OP_H, OP_H),
               relu=False, reverse=False)
    if op == "rnn_forward":
        return fwd
    y, _ = OPS.rnn_forward(*fwd.values())
    return dict(grad_y=r(OP_N, OP_H), grad_hn=r(OP_B, OP_H), batch_sizes=bs, h0=fwd["h0"],
                w_hh=fwd["w_hh"], y=y, relu=False, reverse=False)


def _all_long(op):
    return {k: v.long() for k, v in op_args(op).items() if isinstance(v, torch.Tensor)
            and k != "batch_sizes"}


def _all_complex(op):
    return {k: v.to(torch.complex64) for k, v in op_args(op).items()
            if isinstance(v, torch.Tensor) and k != "batch_sizes"}


R = torch.randn
OP_CASES = {
    "lstm_gx_more_rows": ("lstm_forward", lambda: {"gx": R(OP_N + 1, 12)}, RuntimeError, "gx"),
    "lstm_gx_fewer_rows": ("lstm_forward", lambda: {"gx": R(OP_N - 1, 12)}, RuntimeError,
                           "gx"),
    "lstm_gx_1d": ("lstm_forward", lambda: {"gx": R(OP_N * 12)}, RuntimeError, "gx"),
    "lstm_gx_3d": ("lstm_forward", lambda: {"gx": R(OP_N, 1, 12)}, RuntimeError, "gx"),
    "lstm_batch_sizes_increasing": ("lstm_forward", lambda: {
        "batch_sizes": torch.tensor([3, 2, 3, 0])}, RuntimeError, "non-increasing"),
    "lstm_batch_sizes_first_not_batch": ("lstm_forward", lambda: {
        "batch_sizes": torch.tensor([2, 2, 2, 2])}, RuntimeError, "batch_sizes[0]"),
    "lstm_batch_sizes_2d": ("lstm_forward", lambda: {
        "batch_sizes": torch.tensor([OP_BATCH_SIZES])}, RuntimeError, "batch_sizes"),
    "lstm_batch_sizes_meta": ("lstm_forward", lambda: {
        "batch_sizes": torch.tensor(OP_BATCH_SIZES, device="meta")}, RuntimeError,
        "batch_sizes"),
    "lstm_batch_sizes_overflow": ("lstm_forward", lambda: {
        "gx": torch.empty(0, 0), "batch_sizes": torch.tensor([2 ** 62] * 3),
        "h0": torch.empty(2 ** 62, 0), "c0": torch.empty(2 ** 62, 0),
        "w_hh": torch.empty(0, 0), "w_hr": None}, RuntimeError, "overflow"),
    "lstm_w_hr_columns": ("lstm_forward", lambda: {"w_hr": R(OP_P, OP_H + 1)}, RuntimeError,
                          "w_hr"),
    "lstm_w_hr_rows": ("lstm_forward", lambda: {"w_hr": R(OP_P + 1, OP_H)}, RuntimeError,
                       "w_hr"),
    "lstm_w_hr_dtype": ("lstm_forward", lambda: {"w_hr": R(OP_P, OP_H).double()},
                        RuntimeError, "w_hr"),
    "lstm_w_hr_missing": ("lstm_forward", lambda: {"w_hr": None}, RuntimeError, "w_hh"),
    "lstm_w_hh_rows": ("lstm_forward", lambda: {"w_hh": R(13, OP_P)}, RuntimeError, "w_hh"),
    "lstm_w_hh_columns": ("lstm_forward", lambda: {"w_hh": R(12, OP_P + 1)}, RuntimeError,
                          "w_hh"),
    "lstm_c0_shape": ("lstm_forward", lambda: {"c0": R(OP_B, OP_H + 1)}, RuntimeError, "c0"),
    "lstm_c0_dtype": ("lstm_forward", lambda: {"c0": R(OP_B, OP_H).double()}, RuntimeError,
                      "c0"),
    "lstm_h0_1d": ("lstm_forward", lambda: {"h0": R(OP_B)}, RuntimeError, "h0"),
    "lstm_h0_meta": ("lstm_forward", lambda: {"h0": R(OP_B, OP_P, device="meta")},
                     RuntimeError, "device"),
    "lstm_int64": ("lstm_forward", lambda: _all_long("lstm_forward"), NotImplementedError,
                   "Long"),
    "lstm_complex": ("lstm_forward", lambda: _all_complex("lstm_forward"),
                     NotImplementedError, "Complex"),
    "gru_b_hh_shape": ("gru_forward", lambda: {"b_hh": R(10)}, RuntimeError, "b_hh"),
    "gru_b_hh_2d": ("gru_forward", lambda: {"b_hh": R(1, 9)}, RuntimeError, "b_hh"),
    "gru_b_hh_dtype": ("gru_forward", lambda: {"b_hh": R(9).double()}, RuntimeError, "b_hh"),
    "gru_w_hh_projected": ("gru_forward", lambda: {"w_hh": R(9, 4), "h0": R(OP_B, 4)},
                           RuntimeError, "w_hh"),
    "gru_batch_sizes_negative": ("gru_forward", lambda: {
        "batch_sizes": torch.tensor([3, 2, -1, 4])}, RuntimeError, "non-negative"),
    "gru_int64": ("gru_forward", lambda: _all_long("gru_forward"), NotImplementedError,
                  "Long"),
    "rnn_gx_columns": ("rnn_forward", lambda: {"gx": R(OP_N, 6)}, RuntimeError, "gx"),
    "rnn_batch_sizes_empty": ("rnn_forward", lambda: {
        "gx": R(0, OP_H), "batch_sizes": torch.zeros(0, dtype=torch.long)}, RuntimeError,
        "at least one step"),
    "rnn_batch_sizes_float": ("rnn_forward", lambda: {
        "batch_sizes": torch.tensor(OP_BATCH_SIZES, dtype=torch.float)}, RuntimeError,
        "int64"),
    "rnn_h0_batch": ("rnn_forward", lambda: {"h0": R(OP_B + 1, OP_H)}, RuntimeError,
                     "batch_sizes[0]"),
    "rnn_complex": ("rnn_forward", lambda: _all_complex("rnn_forward"), NotImplementedError,
                    "Complex"),
    "lstm_backward_saved_shape": ("lstm_backward", lambda: {"saved": R(OP_N, 12)},
                                  RuntimeError, "saved"),
    "lstm_backward_saved_empty": ("lstm_backward", lambda: {"saved": R(0, 15)},
                                  RuntimeError, "saved"),
    "lstm_backward_grad_y": ("lstm_backward", lambda: {"grad_y": R(OP_N, OP_P + 1)},
                             RuntimeError, "grad_y"),
    "lstm_backward_y_rows": ("lstm_backward", lambda: {"y": R(OP_N - 1, OP_P)},
                             RuntimeError, "y"),
    "lstm_backward_grad_cn_dtype": ("lstm_backward", lambda: {
        "grad_cn": R(OP_B, OP_H).double()}, RuntimeError, "grad_cn"),
    "lstm_backward_w_hr_shape": ("lstm_backward", lambda: {"w_hr": R(OP_P, OP_H + 1)},
                                 RuntimeError, "w_hr"),
    "lstm_backward_batch_sizes_rows": ("lstm_backward", lambda: {
        "batch_sizes": torch.tensor([3, 3, 3, 3])}, RuntimeError, "grad_y"),
    "gru_backward_saved": ("gru_backward", lambda: {"saved": R(OP_N, 9)}, RuntimeError,
                           "saved"),
    "gru_backward_grad_hn": ("gru_backward", lambda: {"grad_hn": R(OP_B + 1, OP_H)},
                             RuntimeError, "grad_hn"),
    "gru_backward_y_meta": ("gru_backward", lambda: {"y": R(OP_N, OP_H, device="meta")},
                            RuntimeError, "device"),
    "rnn_backward_y": ("rnn_backward", lambda: {"y": R(OP_N + 1, OP_H)}, RuntimeError, "y"),
    "rnn_backward_grad_y_int": ("rnn_backward", lambda: {"grad_y": R(OP_N, OP_H).long()},
                                RuntimeError, "grad_y"),
}


# --- the child process: runs one group, prints {case: outcome} as JSON -------------------


def outcome(fn):
    try:
        result = fn()
    except BaseException as error:  # noqa: BLE001 - every exception is a result here
        return {"error": type(error).__name__, "message": str(error)[:300]}, None
    return {"error": None}, result


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


def run_op_case(name):
    op, overrides, _, _ = OP_CASES[name]
    args = op_args(op)
    args.update(overrides())
    result, _ = outcome(lambda: getattr(OPS, op)(*args.values()))
    return result


GROUPS = {"modules": (MODULE_CASES, run_module_case),
          "strides": (STRIDE_CASES, run_stride_case), "ops": (OP_CASES, run_op_case)}


def main(group):
    cases, runner = GROUPS[group]
    results = {}
    for name in cases:
        print(f"case {name}", file=sys.stderr, flush=True)  # the last one, after a crash
        torch.manual_seed(0)
        results[name] = runner(name)
    print(json.dumps(results))


# --- the tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results():
    """group -> {case: outcome}, each group from its own child process."""
    cache = {}

    def get(group):
        if group not in cache:
            proc = subprocess.run([sys.executable, os.path.abspath(__file__), group],
                                  capture_output=True, text=True, timeout=300,
                                  env=child_env())
            last = proc.stderr.strip().splitlines()[-1:] or [""]
            assert proc.returncode == 0, (f"the {group} child died (code {proc.returncode}) "
                                          f"at {last[0]!r}:\n{proc.stderr[-3000:]}")
            cache[group] = json.loads(proc.stdout.strip().splitlines()[-1])
        return cache[group]
    return get


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


@pytest.mark.parametrize("name", list(OP_CASES))
def test_op_bad_arguments_are_refused(results, name):
    got = results("ops")[name]
    _, _, error, word = OP_CASES[name]
    assert got["error"] == error.__name__ and word in got["message"], got


# --- in process: NaN/Inf, and inputs left untouched ------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")],
                         ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("device", DEVICES)
def test_nan_and_inf_propagate_like_torch_nn(device, cell, value):
    """A non-finite value in one sequence's input and another's h0: the same elements of
    every result are NaN (or +-Inf) as in torch.nn, and the rest agree."""
    case = Case(cell, True, 2, True, False, "packed_unsorted", True)
    ref, fast = make_pair(case)
    ref, fast = ref.to(device), fast.to(device)
    inputs = make_inputs(case)
    inputs.x[1, 2, 0] = value
    inputs.h0[0, 0, 1] = value
    inputs = inputs.to(device)
    results = []
    for module in (ref, fast):
        leaves = inputs.fresh()
        outs = flatten_result(module(*leaves.args()))
        grads = torch.autograd.grad(weighted_loss(outs), leaves.leaves() +
                                    list(module.parameters()))
        results.append(outs + list(grads))
    for a, b in zip(*results):
        assert torch.equal(a.isnan(), b.isnan())
        assert torch.equal(a.isinf(), b.isinf())
        torch.testing.assert_close(a, b, **atol_rtol(torch.float64), equal_nan=True)


@pytest.mark.parametrize("kind", ["dense", "packed_unsorted", "unbatched"])
@pytest.mark.parametrize("cell", list(CELLS))
def test_inputs_untouched(cell, kind):
    """Forward and backward leave every input's values, storage and version counter as they
    were (and batch_sizes and the permutation indices of a packed input)."""
    case = Case(cell, True, 2, True, True, kind, True)
    _, fast = make_pair(case)
    leaves = make_inputs(case).fresh()
    inp, hx = leaves.args()
    tensors = [*(list(inp) if isinstance(inp, PackedSequence) else [inp]),
               *(hx if isinstance(hx, tuple) else [hx]), *fast.parameters()]
    tensors = [t for t in tensors if t is not None]
    before = [(t.detach().clone(), t.data_ptr(), t._version) for t in tensors]
    weighted_loss(flatten_result(fast(inp, hx))).backward()
    for t, (value, pointer, version) in zip(tensors, before):
        assert torch.equal(t, value) and t.data_ptr() == pointer and t._version == version


if __name__ == "__main__":
    torch.set_num_threads(1)
    main(sys.argv[1])
