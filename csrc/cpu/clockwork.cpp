// The clockwork RNN's ops on the CPU (schemas in ops.h): their checks, buffers, the walk
// (clockwork_walk.h) over the tanh Elman cell's policy, and the recurrent weight's
// gradient, one product per module over the steps it was active.

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "../cells/rnn.h"
#include "../common/checks.h"
#include "clockwork_walk.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;
using Cell = rnn::Policy<false>;

// periods: at least one, positive, strictly ascending; H a multiple of their count.
ClockworkModules check_periods(const char* op, c10::IntArrayRef periods, int64_t H) {
  TORCH_CHECK(!periods.empty(), op, ": periods must name at least one module");
  for (size_t i = 0; i < periods.size(); ++i) {
    TORCH_CHECK(periods[i] > 0 && (i == 0 || periods[i] > periods[i - 1]), op,
                ": periods must be positive and strictly ascending, got ", periods);
  }
  const int64_t g = static_cast<int64_t>(periods.size());
  TORCH_CHECK(H % g == 0, op, ": the hidden size (", H,
              ") must be a multiple of the number of modules (", g, ")");
  return {periods.vec(), H / g};
}

// The packed rows of the steps where module i is active: [n] int64.
Tensor active_rows(const Schedule& schedule, const ClockworkModules& m, int64_t i) {
  std::vector<int64_t> rows;
  for (int64_t s = 0; s < schedule.steps(); s += m.periods[i]) {
    for (int64_t r = 0; r < schedule.rows(s); ++r) rows.push_back(schedule.first_row(s) + r);
  }
  return at::tensor(rows, at::kLong);
}

// gx: [N, H] (read where a module is active); h0: [B, H]; w_hh: [H, H] (only its allowed
// blocks read). Returns y [N, H], hn [B, H].
std::tuple<Tensor, Tensor> forward_op(const Tensor& gx, const Tensor& batch_sizes,
                                      const Tensor& h0, const Tensor& w_hh,
                                      c10::IntArrayRef periods) {
  constexpr const char* op = "clockwork_forward";
  check_no_forward_ad(op, gx, h0, w_hh);
  const auto sz = check_recurrence<Cell>(op, batch_sizes, h0, Tensor(), w_hh, Tensor());
  check_arg(op, h0, gx, "gx", {sz.N, sz.H}, "[sum(batch_sizes), H]");
  const ClockworkModules m = check_periods(op, periods, sz.H);
  const Schedule schedule(batch_sizes, false);
  const Tensor gx_c = gx.contiguous(), h0_c = h0.contiguous(), w = w_hh.contiguous();
  Tensor h = h0.clone(at::MemoryFormat::Contiguous);  // [B, H], rows updated step by step
  Tensor y = at::empty({sz.N, sz.H}, gx.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, gx.scalar_type(), op, [&] {
    using T = scalar_t;
    const ForwardState<T> st{gx_c.data_ptr<T>(), h0_c.data_ptr<T>(), w.data_ptr<T>(),
                             nullptr,            nullptr,            h.data_ptr<T>(),
                             nullptr,            y.data_ptr<T>(),    nullptr,
                             sz.N,               sz.B,               sz.H,
                             sz.P};
    clockwork_forward<Cell>(st, schedule, w, m);
  });
  return {y, h};
}

// Returns grad_gx [N, H] (zero where a module was inactive), grad_h0 [B, H], grad_w_hh
// [H, H] (zero outside the allowed blocks).
std::tuple<Tensor, Tensor, Tensor> backward_op(const Tensor& grad_y, const Tensor& grad_hn,
                                               const Tensor& batch_sizes, const Tensor& h0,
                                               const Tensor& w_hh, const Tensor& y,
                                               c10::IntArrayRef periods) {
  constexpr const char* op = "clockwork_backward";
  const auto sz = check_recurrence<Cell>(op, batch_sizes, h0, Tensor(), w_hh, Tensor());
  check_arg(op, h0, grad_y, "grad_y", {sz.N, sz.H}, "[N, H]");
  check_arg(op, h0, grad_hn, "grad_hn", {sz.B, sz.H}, "[B, H]");
  check_arg(op, h0, y, "y", {sz.N, sz.H}, "[N, H]");
  const ClockworkModules m = check_periods(op, periods, sz.H);
  const Schedule schedule(batch_sizes, false);
  const Tensor gy = grad_y.contiguous(), h0_c = h0.contiguous(), w = w_hh.contiguous();
  const Tensor y_c = y.contiguous();
  Tensor dh = grad_hn.clone(at::MemoryFormat::Contiguous);  // [B, H] w.r.t. the h state
  Tensor grad_gx = at::empty({sz.N, sz.H}, y.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), op, [&] {
    using T = scalar_t;
    const BackwardState<T> st{gy.data_ptr<T>(),  h0_c.data_ptr<T>(),    nullptr,
                              w.data_ptr<T>(),   y_c.data_ptr<T>(),     nullptr,
                              dh.data_ptr<T>(),  nullptr,               grad_gx.data_ptr<T>(),
                              grad_gx.data_ptr<T>(), sz.N, sz.B, sz.H, sz.P};
    clockwork_backward<Cell>(st, schedule, w, m);
  });
  const Tensor h_prev = previous_states(y_c, h0_c, schedule);  // [N, H]
  Tensor grad_w = at::zeros_like(w);
  for (int64_t i = 0; i < m.count(); ++i) {
    const Tensor rows = active_rows(schedule, m, i);
    const int64_t columns = sz.H - i * m.k;  // the modules module i reads
    clockwork_block(grad_w, m, i)
        .copy_(at::mm(grad_gx.index_select(0, rows).narrow(1, i * m.k, m.k).t(),
                      h_prev.index_select(0, rows).narrow(1, i * m.k, columns)));
  }
  return {grad_gx, dh, grad_w};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("clockwork_forward", &forward_op);
  m.impl("clockwork_backward", &backward_op);
}

}  // namespace cpu
}  // namespace fastrnn
