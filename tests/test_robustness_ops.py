"""The raw ops (torch.ops.fastrnn.*) refuse malformed arguments with a message naming the
argument, and never crash the interpreter: the cases run in a child process (this file run
as a script; helpers/isolated.py), so a segfault or abort fails the tests instead of ending
them."""

import sys

import pytest
import torch

from helpers.isolated import child_results, outcome, run_group
from helpers.ops import GATES, SAVED_SLOTS


# --- raw ops: name -> (op, argument overrides, expected exception, word in its message) ----
OPS = torch.ops.fastrnn
OP_H, OP_P, OP_B = 3, 2, 3
OP_BATCH_SIZES = [3, 2, 2, 1]
OP_N = sum(OP_BATCH_SIZES)
# the gate widths of gx, w_hh rows and b_hh, and the saved width of a row
LSTM_G, GRU_G, RNN_G = (GATES[op] * OP_H for op in ("lstm", "gru", "rnn"))
LSTM_SAVED, GRU_SAVED = (SAVED_SLOTS[op] * OP_H for op in ("lstm", "gru"))


def op_args(op):
    """Valid arguments of op (a name), in schema order, as a dict."""
    r = lambda *shape: torch.randn(*shape)
    bs = torch.tensor(OP_BATCH_SIZES)
    if op.startswith("lstm"):
        fwd = dict(gx=r(OP_N, LSTM_G), batch_sizes=bs, h0=r(OP_B, OP_P), c0=r(OP_B, OP_H),
                   w_hh=r(LSTM_G, OP_P), w_hr=r(OP_P, OP_H), reverse=False, save=True)
        if op == "lstm_forward":
            return fwd
        if op == "lstm_input_forward":
            return dict(x=r(OP_N, 4), w_ih=r(LSTM_G, 4), bias=r(LSTM_G), batch_sizes=bs,
                        h0=fwd["h0"], c0=fwd["c0"], w_hh=fwd["w_hh"], w_hr=fwd["w_hr"],
                        reverse=False, save=True)
        y, _, _, saved = OPS.lstm_forward(*fwd.values())
        return dict(grad_y=r(OP_N, OP_P), grad_hn=r(OP_B, OP_P), grad_cn=r(OP_B, OP_H),
                    batch_sizes=bs, h0=fwd["h0"], c0=fwd["c0"], w_hh=fwd["w_hh"],
                    w_hr=fwd["w_hr"], y=y, saved=saved, reverse=False)
    if op.startswith("gru"):
        fwd = dict(gx=r(OP_N, GRU_G), batch_sizes=bs, h0=r(OP_B, OP_H),
                   w_hh=r(GRU_G, OP_H), b_hh=r(GRU_G), reverse=False, save=True)
        if op == "gru_forward":
            return fwd
        y, _, saved = OPS.gru_forward(*fwd.values())
        return dict(grad_y=r(OP_N, OP_H), grad_hn=r(OP_B, OP_H), batch_sizes=bs, h0=fwd["h0"],
                    w_hh=fwd["w_hh"], y=y, saved=saved, has_bias=True, reverse=False)
    fwd = dict(gx=r(OP_N, RNN_G), batch_sizes=bs, h0=r(OP_B, OP_H), w_hh=r(RNN_G, OP_H),
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
    "lstm_gx_more_rows": ("lstm_forward", lambda: {"gx": R(OP_N + 1, LSTM_G)}, RuntimeError,
                          "gx"),
    "lstm_gx_fewer_rows": ("lstm_forward", lambda: {"gx": R(OP_N - 1, LSTM_G)}, RuntimeError,
                           "gx"),
    "lstm_gx_1d": ("lstm_forward", lambda: {"gx": R(OP_N * LSTM_G)}, RuntimeError, "gx"),
    "lstm_gx_3d": ("lstm_forward", lambda: {"gx": R(OP_N, 1, LSTM_G)}, RuntimeError, "gx"),
    "lstm_input_x_more_rows": ("lstm_input_forward", lambda: {"x": R(OP_N + 1, 4)},
                               RuntimeError, "x"),
    "lstm_input_x_1d": ("lstm_input_forward", lambda: {"x": R(OP_N)}, RuntimeError, "x"),
    "lstm_input_x_dtype": ("lstm_input_forward", lambda: {"x": R(OP_N, 4).double()},
                           RuntimeError, "x"),
    "lstm_input_x_meta": ("lstm_input_forward", lambda: {"x": R(OP_N, 4, device="meta")},
                          RuntimeError, "device"),
    "lstm_input_w_ih_columns": ("lstm_input_forward", lambda: {"w_ih": R(LSTM_G, 5)},
                                RuntimeError, "w_ih"),
    "lstm_input_w_ih_rows": ("lstm_input_forward", lambda: {"w_ih": R(LSTM_G - 1, 4)},
                             RuntimeError, "w_ih"),
    "lstm_input_bias_shape": ("lstm_input_forward", lambda: {"bias": R(LSTM_G + 1)},
                              RuntimeError, "bias"),
    "lstm_input_c0_shape": ("lstm_input_forward", lambda: {"c0": R(OP_B, OP_H + 1)},
                            RuntimeError, "c0"),
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
    "lstm_w_hh_rows": ("lstm_forward", lambda: {"w_hh": R(LSTM_G + 1, OP_P)}, RuntimeError,
                       "w_hh"),
    "lstm_w_hh_columns": ("lstm_forward", lambda: {"w_hh": R(LSTM_G, OP_P + 1)}, RuntimeError,
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
    "gru_b_hh_shape": ("gru_forward", lambda: {"b_hh": R(GRU_G + 1)}, RuntimeError, "b_hh"),
    "gru_b_hh_2d": ("gru_forward", lambda: {"b_hh": R(1, GRU_G)}, RuntimeError, "b_hh"),
    "gru_b_hh_dtype": ("gru_forward", lambda: {"b_hh": R(GRU_G).double()}, RuntimeError,
                       "b_hh"),
    "gru_w_hh_projected": ("gru_forward", lambda: {"w_hh": R(GRU_G, OP_H + 1),
                                                   "h0": R(OP_B, OP_H + 1)},
                           RuntimeError, "w_hh"),
    "gru_batch_sizes_negative": ("gru_forward", lambda: {
        "batch_sizes": torch.tensor([3, 2, -1, 4])}, RuntimeError, "non-negative"),
    "gru_int64": ("gru_forward", lambda: _all_long("gru_forward"), NotImplementedError,
                  "Long"),
    "rnn_gx_columns": ("rnn_forward", lambda: {"gx": R(OP_N, RNN_G + OP_H)}, RuntimeError,
                       "gx"),
    "rnn_batch_sizes_empty": ("rnn_forward", lambda: {
        "gx": R(0, RNN_G), "batch_sizes": torch.zeros(0, dtype=torch.long)}, RuntimeError,
        "at least one step"),
    "rnn_batch_sizes_float": ("rnn_forward", lambda: {
        "batch_sizes": torch.tensor(OP_BATCH_SIZES, dtype=torch.float)}, RuntimeError,
        "int64"),
    "rnn_h0_batch": ("rnn_forward", lambda: {"h0": R(OP_B + 1, OP_H)}, RuntimeError,
                     "batch_sizes[0]"),
    "rnn_complex": ("rnn_forward", lambda: _all_complex("rnn_forward"), NotImplementedError,
                    "Complex"),
    "lstm_backward_saved_shape": ("lstm_backward", lambda: {
        "saved": R(OP_N, LSTM_SAVED - OP_H)}, RuntimeError, "saved"),
    "lstm_backward_saved_empty": ("lstm_backward", lambda: {"saved": R(0, LSTM_SAVED)},
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
    "gru_backward_saved": ("gru_backward", lambda: {"saved": R(OP_N, GRU_SAVED - OP_H)},
                           RuntimeError, "saved"),
    "gru_backward_grad_hn": ("gru_backward", lambda: {"grad_hn": R(OP_B + 1, OP_H)},
                             RuntimeError, "grad_hn"),
    "gru_backward_y_meta": ("gru_backward", lambda: {"y": R(OP_N, OP_H, device="meta")},
                            RuntimeError, "device"),
    "rnn_backward_y": ("rnn_backward", lambda: {"y": R(OP_N + 1, OP_H)}, RuntimeError, "y"),
    "rnn_backward_grad_y_int": ("rnn_backward", lambda: {"grad_y": R(OP_N, OP_H).long()},
                                RuntimeError, "grad_y"),
}


# --- the child process: runs the cases, prints {case: outcome} as JSON -------------------


def run_op_case(name):
    op, overrides, _, _ = OP_CASES[name]
    args = op_args(op)
    args.update(overrides())
    result, _ = outcome(lambda: getattr(OPS, op)(*args.values()))
    return result


GROUPS = {"ops": (OP_CASES, run_op_case)}


# --- the tests ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def results():
    """group -> {case: outcome}, from a child process."""
    return child_results(__file__)


@pytest.mark.parametrize("name", list(OP_CASES))
def test_op_bad_arguments_are_refused(results, name):
    got = results("ops")[name]
    _, _, error, word = OP_CASES[name]
    assert got["error"] == error.__name__ and word in got["message"], got


if __name__ == "__main__":
    torch.set_num_threads(1)
    run_group(GROUPS, sys.argv[1])
