#pragma once
// Argument checks shared by every backend's forward and backward: each names the
// argument and the rule it broke.

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <limits>

#include "../cells/gru.h"
#include "../cells/lstm.h"
#include "../cells/rnn.h"

namespace fastrnn {

// Sizes of one recurrence: N packed rows over T steps, batch B, hidden H, output P
// (P = H unless an LSTM projects h to proj_size).
struct RecurrenceSizes {
  int64_t N, T, B, H, P;
};

// t must have the dtype and device of ref (h0) and the expected shape.
inline void check_arg(const char* op, const at::Tensor& ref, const at::Tensor& t,
                      const char* name, at::IntArrayRef expected, const char* rule) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must be ", rule, " = ", expected,
              ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have dtype ",
              ref.scalar_type(), " like h0, got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref.device(),
              " like h0, got ", t.device());
}

// batch_sizes: int64 on the CPU, [T], T > 0, non-increasing, batch_sizes[0] == B;
// h0: [B, P]; w_hh: [gates*H, P]. N = sum(batch_sizes) is the number of packed rows.
inline RecurrenceSizes check_recurrence(const char* op, int64_t gates,
                                        const at::Tensor& batch_sizes, const at::Tensor& h0,
                                        const at::Tensor& w_hh) {
  TORCH_CHECK(batch_sizes.dim() == 1 && batch_sizes.scalar_type() == at::kLong &&
                  batch_sizes.device().is_cpu(),
              op, ": batch_sizes must be a 1-D int64 CPU tensor, got ", batch_sizes.dim(),
              "-D ", batch_sizes.scalar_type(), " on ", batch_sizes.device());
  const int64_t T = batch_sizes.size(0);
  TORCH_CHECK(T > 0, op, ": the sequence must have at least one step, got batch_sizes of length 0");
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D [B, P], got ", h0.sizes());
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % gates == 0, op, ": w_hh must be [", gates,
              "*H, P], got ", w_hh.sizes());
  const int64_t H = w_hh.size(0) / gates, P = w_hh.size(1), B = h0.size(0);
  check_arg(op, h0, w_hh, "w_hh", {gates * H, h0.size(1)}, "[gates*H, P] with P = h0.size(1)");

  const auto sizes = batch_sizes.contiguous();
  const int64_t* b = sizes.data_ptr<int64_t>();
  TORCH_CHECK(b[0] == B, op, ": batch_sizes[0] must equal the batch of h0 (", B, "), got ",
              b[0]);
  int64_t N = 0;
  for (int64_t t = 0; t < T; ++t) {
    TORCH_CHECK(b[t] >= 0 && (t == 0 || b[t] <= b[t - 1]), op,
                ": batch_sizes must be non-negative and non-increasing, got ", batch_sizes);
    TORCH_CHECK(N <= std::numeric_limits<int64_t>::max() - b[t], op,
                ": sum(batch_sizes) overflows int64");
    N += b[t];
  }
  return {N, T, B, H, P};
}

// Per cell, what forward and backward share (every backend): see the ops' shapes in ops.cpp.
inline RecurrenceSizes check_lstm(const char* op, const at::Tensor& batch_sizes,
                                  const at::Tensor& h0, const at::Tensor& c0,
                                  const at::Tensor& w_hh, const c10::optional<at::Tensor>& w_hr) {
  const auto sz = check_recurrence(op, lstm::kGates, batch_sizes, h0, w_hh);
  check_arg(op, h0, c0, "c0", {sz.B, sz.H}, "[B, H]");
  if (w_hr.has_value()) {
    check_arg(op, h0, *w_hr, "w_hr", {sz.P, sz.H}, "[P, H]");
  } else {
    TORCH_CHECK(sz.P == sz.H, op, ": w_hh must be [4*H, H] without w_hr, got ", w_hh.sizes());
  }
  return sz;
}

inline RecurrenceSizes check_gru(const char* op, const at::Tensor& batch_sizes,
                                 const at::Tensor& h0, const at::Tensor& w_hh) {
  const auto sz = check_recurrence(op, gru::kGates, batch_sizes, h0, w_hh);
  TORCH_CHECK(sz.P == sz.H, op, ": w_hh must be [3*H, H], got ", w_hh.sizes());
  return sz;
}

inline RecurrenceSizes check_rnn(const char* op, const at::Tensor& batch_sizes,
                                 const at::Tensor& h0, const at::Tensor& w_hh) {
  const auto sz = check_recurrence(op, rnn::kGates, batch_sizes, h0, w_hh);
  TORCH_CHECK(sz.P == sz.H, op, ": w_hh must be [H, H], got ", w_hh.sizes());
  return sz;
}

// Each op's full argument check (every backend), in schema order; shapes in ops.cpp.
inline RecurrenceSizes check_lstm_forward(const char* op, const at::Tensor& gx,
                                          const at::Tensor& batch_sizes, const at::Tensor& h0,
                                          const at::Tensor& c0, const at::Tensor& w_hh,
                                          const c10::optional<at::Tensor>& w_hr) {
  const auto sz = check_lstm(op, batch_sizes, h0, c0, w_hh, w_hr);
  check_arg(op, h0, gx, "gx", {sz.N, 4 * sz.H}, "[sum(batch_sizes), 4*H]");
  return sz;
}

inline RecurrenceSizes check_lstm_backward(
    const char* op, const at::Tensor& grad_y, const at::Tensor& grad_hn,
    const at::Tensor& grad_cn, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& c0, const at::Tensor& w_hh, const c10::optional<at::Tensor>& w_hr,
    const at::Tensor& y, const at::Tensor& saved) {
  const auto sz = check_lstm(op, batch_sizes, h0, c0, w_hh, w_hr);
  check_arg(op, h0, grad_y, "grad_y", {sz.N, sz.P}, "[N, P]");
  check_arg(op, h0, grad_hn, "grad_hn", {sz.B, sz.P}, "[B, P]");
  check_arg(op, h0, grad_cn, "grad_cn", {sz.B, sz.H}, "[B, H]");
  check_arg(op, h0, y, "y", {sz.N, sz.P}, "[N, P]");
  check_arg(op, h0, saved, "saved", {sz.N, lstm::kSaved * sz.H}, "[N, 5*H]");
  return sz;
}

inline RecurrenceSizes check_gru_forward(const char* op, const at::Tensor& gx,
                                         const at::Tensor& batch_sizes, const at::Tensor& h0,
                                         const at::Tensor& w_hh,
                                         const c10::optional<at::Tensor>& b_hh) {
  const auto sz = check_gru(op, batch_sizes, h0, w_hh);
  check_arg(op, h0, gx, "gx", {sz.N, 3 * sz.H}, "[sum(batch_sizes), 3*H]");
  if (b_hh.has_value()) check_arg(op, h0, *b_hh, "b_hh", {3 * sz.H}, "[3*H]");
  return sz;
}

inline RecurrenceSizes check_gru_backward(const char* op, const at::Tensor& grad_y,
                                          const at::Tensor& grad_hn,
                                          const at::Tensor& batch_sizes, const at::Tensor& h0,
                                          const at::Tensor& w_hh, const at::Tensor& y,
                                          const at::Tensor& saved) {
  const auto sz = check_gru(op, batch_sizes, h0, w_hh);
  check_arg(op, h0, grad_y, "grad_y", {sz.N, sz.H}, "[N, H]");
  check_arg(op, h0, grad_hn, "grad_hn", {sz.B, sz.H}, "[B, H]");
  check_arg(op, h0, y, "y", {sz.N, sz.H}, "[N, H]");
  check_arg(op, h0, saved, "saved", {sz.N, gru::kSaved * sz.H}, "[N, 4*H]");
  return sz;
}

inline RecurrenceSizes check_rnn_forward(const char* op, const at::Tensor& gx,
                                         const at::Tensor& batch_sizes, const at::Tensor& h0,
                                         const at::Tensor& w_hh) {
  const auto sz = check_rnn(op, batch_sizes, h0, w_hh);
  check_arg(op, h0, gx, "gx", {sz.N, sz.H}, "[sum(batch_sizes), H]");
  return sz;
}

inline RecurrenceSizes check_rnn_backward(const char* op, const at::Tensor& grad_y,
                                          const at::Tensor& grad_hn,
                                          const at::Tensor& batch_sizes, const at::Tensor& h0,
                                          const at::Tensor& w_hh, const at::Tensor& y) {
  const auto sz = check_rnn(op, batch_sizes, h0, w_hh);
  check_arg(op, h0, grad_y, "grad_y", {sz.N, sz.H}, "[N, H]");
  check_arg(op, h0, grad_hn, "grad_hn", {sz.B, sz.H}, "[B, H]");
  check_arg(op, h0, y, "y", {sz.N, sz.H}, "[N, H]");
  return sz;
}

}  // namespace fastrnn
