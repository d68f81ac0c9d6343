// The clockwork RNN's ops on the CPU (schemas in ops.h): their checks, buffers and the
// walk (clockwork_walk.h) over the tanh Elman cell's policy.

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

// The rows of module i's active steps, for each module.
std::vector<int64_t> active_rows(const Schedule& schedule, const ClockworkModules& m) {
  std::vector<int64_t> rows(m.count(), 0);
  for (int64_t i = 0; i < m.count(); ++i) {
    for (int64_t s = 0; s < schedule.steps(); s += m.periods[i]) rows[i] += schedule.rows(s);
  }
  return rows;
}

// gx: one [n_i, k] per module, the input-side pre-activations of its active steps' rows in
// step order; h0: [B, H]; w_hh: [H, H] (only its allowed blocks read). Returns y [N, H],
// hn [B, H].
std::tuple<Tensor, Tensor> forward_op(at::TensorList gx, const Tensor& batch_sizes,
                                      const Tensor& h0, const Tensor& w_hh,
                                      c10::IntArrayRef periods, int64_t rows_of_y) {
  constexpr const char* op = "clockwork_forward";
  check_no_forward_ad(op, h0, w_hh);
  const auto sz = check_recurrence<Cell>(op, batch_sizes, h0, Tensor(), w_hh, Tensor());
  const ClockworkModules m = check_periods(op, periods, sz.H);
  const Schedule schedule(batch_sizes, false);
  const std::vector<int64_t> rows = active_rows(schedule, m);
  TORCH_CHECK(rows_of_y == sz.N, op, ": rows must be sum(batch_sizes) = ", sz.N, ", got ",
              rows_of_y);
  TORCH_CHECK(static_cast<int64_t>(gx.size()) == m.count(), op,
              ": gx must hold one tensor per module (", m.count(), "), got ", gx.size());
  std::vector<Tensor> parts;
  for (int64_t i = 0; i < m.count(); ++i) {
    check_no_forward_ad(op, gx[i]);
    check_arg(op, h0, gx[i], "gx[i]", {rows[i], m.k},
              "[rows of module i's active steps, H / modules]");
    parts.push_back(gx[i].contiguous());
  }
  const Tensor h0_c = h0.contiguous(), w = w_hh.contiguous();
  Tensor h = h0.clone(at::MemoryFormat::Contiguous);  // [B, H], rows updated step by step
  Tensor y = at::empty({sz.N, sz.H}, h0.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h0.scalar_type(), op, [&] {
    using T = scalar_t;
    std::vector<const T*> gx_p;
    for (const Tensor& part : parts) gx_p.push_back(part.data_ptr<T>());
    const ForwardState<T> st{nullptr, h0_c.data_ptr<T>(), w.data_ptr<T>(), nullptr, nullptr,
                             h.data_ptr<T>(), nullptr, y.data_ptr<T>(), nullptr, sz.N, sz.B,
                             sz.H, sz.P};
    clockwork_forward<Cell>(st, schedule, w, m, gx_p);
  });
  return {y, h};
}

// Returns grad_gx (one [n_i, k] per module, as forward's gx), grad_h0 [B, H], grad_w_hh
// [H, H] (zero outside the allowed blocks).
std::tuple<std::vector<Tensor>, Tensor, Tensor> backward_op(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& batch_sizes, const Tensor& h0,
    const Tensor& w_hh, const Tensor& y, c10::IntArrayRef periods, c10::IntArrayRef gx_rows) {
  constexpr const char* op = "clockwork_backward";
  const auto sz = check_recurrence<Cell>(op, batch_sizes, h0, Tensor(), w_hh, Tensor());
  check_arg(op, h0, grad_y, "grad_y", {sz.N, sz.H}, "[N, H]");
  check_arg(op, h0, grad_hn, "grad_hn", {sz.B, sz.H}, "[B, H]");
  check_arg(op, h0, y, "y", {sz.N, sz.H}, "[N, H]");
  const ClockworkModules m = check_periods(op, periods, sz.H);
  const Schedule schedule(batch_sizes, false);
  const std::vector<int64_t> rows = active_rows(schedule, m);
  TORCH_CHECK(gx_rows.vec() == rows, op, ": gx_rows must be the rows of each module's active "
              "steps, ", c10::IntArrayRef(rows), ", got ", gx_rows);
  const Tensor gy = grad_y.contiguous(), h0_c = h0.contiguous(), w = w_hh.contiguous();
  const Tensor y_c = y.contiguous();
  Tensor dh = grad_hn.clone(at::MemoryFormat::Contiguous);  // [B, H] w.r.t. the h state
  Tensor dx = at::empty({sz.B, sz.H}, y.options());          // a step's gate gradients
  Tensor grad_w = at::zeros(w.sizes(), w.options().dtype(at::toOpMathType(w.scalar_type())));
  std::vector<Tensor> grad_gx;
  for (int64_t i = 0; i < m.count(); ++i) grad_gx.push_back(at::empty({rows[i], m.k}, y.options()));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), op, [&] {
    using T = scalar_t;
    std::vector<T*> grad_gx_p;
    for (Tensor& part : grad_gx) grad_gx_p.push_back(part.data_ptr<T>());
    const BackwardState<T> st{gy.data_ptr<T>(), h0_c.data_ptr<T>(), nullptr, w.data_ptr<T>(),
                              y_c.data_ptr<T>(), nullptr, dh.data_ptr<T>(), nullptr,
                              dx.data_ptr<T>(), dx.data_ptr<T>(), sz.N, sz.B, sz.H, sz.P};
    clockwork_backward<Cell>(st, schedule, w, m, grad_gx_p, rows,
                             grad_w.data_ptr<acc_t<T>>());
  });
  return {grad_gx, dh, grad_w.to(w.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("clockwork_forward", &forward_op);
  m.impl("clockwork_backward", &backward_op);
}

}  // namespace cpu
}  // namespace fastrnn
