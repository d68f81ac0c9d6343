#pragma once
// The operator schemas, declared once (ops.cpp defines the fastrnn library with them);
// each backend registers its kernels in its own file, and fastrnn/_ops.py registers the
// fake (shape-only) kernels and autograd.
//
// Layout shared by every op: the sequence is packed, rows of time step t follow those of
// t-1 and batch_sizes ([T], int64, CPU, non-increasing) says how many rows each step has;
// a dense [T, B, *] input is the case where every batch size is B. gx holds the input-side
// pre-activations, x @ W_ih^T + biases, for all rows at once: [N, gates*H].
//
// save: whether forward writes `saved`, the per-row gate values its backward reads. Without
// it (inference) `saved` comes back empty, [0, k*H], and the step costs less memory traffic.

#include <torch/library.h>

namespace fastrnn {

inline void define_ops(torch::Library& m) {
  m.def(
      "lstm_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_hh, "
      "Tensor? w_hr, bool reverse, bool save) -> (Tensor y, Tensor hn, Tensor cn, Tensor saved)");
  m.def(
      "lstm_backward(Tensor grad_y, Tensor grad_hn, Tensor grad_cn, Tensor batch_sizes, "
      "Tensor h0, Tensor c0, Tensor w_hh, Tensor? w_hr, Tensor y, Tensor saved, bool reverse) "
      "-> (Tensor grad_gx, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_hh, Tensor grad_w_hr)");
  m.def(
      "gru_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor w_hh, Tensor? b_hh, "
      "bool reverse, bool save) -> (Tensor y, Tensor hn, Tensor saved)");
  m.def(
      "gru_backward(Tensor grad_y, Tensor grad_hn, Tensor batch_sizes, Tensor h0, Tensor w_hh, "
      "Tensor y, Tensor saved, bool has_bias, bool reverse) "
      "-> (Tensor grad_gx, Tensor grad_h0, Tensor grad_w_hh, Tensor grad_b_hh)");
  m.def(
      "rnn_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor w_hh, bool relu, "
      "bool reverse) -> (Tensor y, Tensor hn)");
  m.def(
      "rnn_backward(Tensor grad_y, Tensor grad_hn, Tensor batch_sizes, Tensor h0, Tensor w_hh, "
      "Tensor y, bool relu, bool reverse) -> (Tensor grad_gx, Tensor grad_h0, Tensor grad_w_hh)");
}

}  // namespace fastrnn
