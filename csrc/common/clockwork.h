#pragma once
// The clockwork RNN's modules and the checks of its ops' arguments, shared by the CPU walk
// (cpu/clockwork_walk.h) and the CUDA one (cuda/clockwork_cuda.cpp). H hidden units form
// g modules of k = H / g; module i is active at step s (from 0) when s % periods[i] == 0.
// The ops take the layer's input x [N, I] and w_ih [H, I]; module i's input product is
// formed only at its active steps (clockwork_inputs.h).

#include <ATen/ATen.h>

#include <vector>

#include "checks.h"
#include "clockwork_cell.h"
#include "schedule.h"

namespace fastrnn {

struct ClockworkModules {
  std::vector<int64_t> periods;  // ascending, one per module (at most 64)
  int64_t k;                     // units per module
  int64_t count() const { return static_cast<int64_t>(periods.size()); }
  bool active(int64_t module, int64_t step) const { return step % periods[module] == 0; }
  uint64_t active_mask(int64_t step) const {  // bit i: module i active at step
    uint64_t mask = 0;
    for (int64_t i = 0; i < count(); ++i) mask |= uint64_t(active(i, step)) << i;
    return mask;
  }
};

// Module i's allowed block of w_hh [H, H]: rows [i*k, (i+1)*k), columns [i*k, H).
inline at::Tensor clockwork_block(const at::Tensor& w_hh, const ClockworkModules& m,
                                  int64_t i) {
  return w_hh.narrow(0, i * m.k, m.k).narrow(1, i * m.k, w_hh.size(1) - i * m.k);
}

// What the clockwork ops' checks found: sizes, modules, and the rows of each module's
// active steps (n_i).
struct ClockworkArgs {
  RecurrenceSizes size;
  ClockworkModules modules;
  std::vector<int64_t> rows;
};

// batch_sizes, h0 [B, H], w_hh [H, H] as every recurrence's; periods: 1 to 64 of them,
// positive, strictly ascending, their count dividing H.
inline ClockworkArgs check_clockwork(const char* op, const at::Tensor& batch_sizes,
                                     const at::Tensor& h0, const at::Tensor& w_hh,
                                     c10::IntArrayRef periods) {
  const auto sz = check_recurrence<ClockworkCell>(op, batch_sizes, h0, at::Tensor(), w_hh,
                                                  at::Tensor());
  check_arg(op, h0, w_hh, "w_hh", {sz.H, sz.H}, "[H, H]");  // no bfloat16 w_hh here
  TORCH_CHECK(!periods.empty() && periods.size() <= 64, op,
              ": periods must name 1 to 64 modules, got ", periods.size());
  for (size_t i = 0; i < periods.size(); ++i) {
    TORCH_CHECK(periods[i] > 0 && (i == 0 || periods[i] > periods[i - 1]), op,
                ": periods must be positive and strictly ascending, got ", periods);
  }
  const int64_t g = static_cast<int64_t>(periods.size());
  TORCH_CHECK(sz.H % g == 0, op, ": the hidden size (", sz.H,
              ") must be a multiple of the number of modules (", g, ")");
  ClockworkArgs args{sz, {periods.vec(), sz.H / g}, std::vector<int64_t>(g, 0)};
  const Schedule schedule(batch_sizes, false);
  for (int64_t i = 0; i < g; ++i) {
    for (int64_t s = 0; s < schedule.steps(); s += periods[i]) args.rows[i] += schedule.rows(s);
  }
  return args;
}

// x [N, I] and w_ih [H, I], as the layer passes them; with the sizes above, I.
struct ClockworkInputArgs : ClockworkArgs {
  int64_t I;
};
inline ClockworkInputArgs check_clockwork_inputs(const char* op, const at::Tensor& x,
                                                 const at::Tensor& w_ih,
                                                 const at::Tensor& batch_sizes,
                                                 const at::Tensor& h0, const at::Tensor& w_hh,
                                                 c10::IntArrayRef periods) {
  ClockworkInputArgs args{check_clockwork(op, batch_sizes, h0, w_hh, periods), 0};
  TORCH_CHECK(x.dim() == 2, op, ": x must be [sum(batch_sizes), I], got ", x.sizes());
  args.I = x.size(1);
  check_arg(op, h0, x, "x", {args.size.N, args.I}, "[sum(batch_sizes), I]");
  check_arg(op, h0, w_ih, "w_ih", {args.size.H, args.I}, "[H, I]");
  return args;
}

// The forward op's arguments: also bias [H] or undefined.
inline ClockworkInputArgs check_clockwork_forward(const char* op, const at::Tensor& x,
                                                  const at::Tensor& w_ih,
                                                  const at::Tensor& bias,
                                                  const at::Tensor& batch_sizes,
                                                  const at::Tensor& h0, const at::Tensor& w_hh,
                                                  c10::IntArrayRef periods) {
  check_no_forward_ad(op, x, w_ih, bias, h0, w_hh);
  ClockworkInputArgs args = check_clockwork_inputs(op, x, w_ih, batch_sizes, h0, w_hh, periods);
  if (bias.defined()) check_arg(op, h0, bias, "bias", {args.size.H}, "[H]");
  return args;
}

// The backward op's arguments: also grad_y, y [N, H], grad_hn [B, H].
inline ClockworkInputArgs check_clockwork_backward(
    const char* op, const at::Tensor& grad_y, const at::Tensor& grad_hn, const at::Tensor& x,
    const at::Tensor& w_ih, const at::Tensor& batch_sizes, const at::Tensor& h0,
    const at::Tensor& w_hh, const at::Tensor& y, c10::IntArrayRef periods) {
  ClockworkInputArgs args = check_clockwork_inputs(op, x, w_ih, batch_sizes, h0, w_hh, periods);
  const RecurrenceSizes& sz = args.size;
  check_arg(op, h0, grad_y, "grad_y", {sz.N, sz.H}, "[N, H]");
  check_arg(op, h0, grad_hn, "grad_hn", {sz.B, sz.H}, "[B, H]");
  check_arg(op, h0, y, "y", {sz.N, sz.H}, "[N, H]");
  return args;
}

// values as an int64 index on device (on CUDA up from pinned memory, with no host sync).
inline at::Tensor index_on(const std::vector<int64_t>& values, const at::Device& device) {
  const at::Tensor index = at::tensor(values, at::kLong);
  return device.is_cuda() ? index.pin_memory().to(device, true) : index;
}

// Allocates a tensor: at::empty, or the CPU walks' buffer pool (cpu/walk_state.h).
using EmptyTensor = at::Tensor (*)(at::IntArrayRef sizes, const at::TensorOptions& options);
inline at::Tensor fresh_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::empty(sizes, options);
}

// t [n, d] rows at index [m] -> [m, d], into a tensor from empty.
inline at::Tensor gather_rows(const at::Tensor& t, const at::Tensor& index, EmptyTensor empty) {
  at::Tensor out = empty({index.size(0), t.size(1)}, t.options());
  return at::index_select_out(out, t, 0, index);
}

// The gradient w.r.t. w_hh [H, H] in the accumulation type, zero outside the allowed blocks,
// from the gradients w.r.t. each module's pre-activations, grad_gx[i] [n_i, k] (rows as
// forward's gx), y [N, H] and h0 [B, H]. One product per module over all its active steps,
// where a product per step and module was a rank-b update, a third of the CPU's backward:
// block i [k, H - i*k] = grad_gx[i]^T @ (the states its rows read)[:, i*k:], those states
// being h0's rows at step 0 and, at a later step, the previous step's rows in y
// (previous_packed_row: a forward walk carries every row): a view of y where they are
// consecutive, as for a period-1 module on dense input, else gathered (on CUDA the index
// goes up from pinned memory without a host sync).
inline at::Tensor clockwork_weight_grad(const std::vector<at::Tensor>& grad_gx,
                                        const at::Tensor& y, const at::Tensor& h0,
                                        const Schedule& schedule, const ClockworkModules& m,
                                        EmptyTensor empty = fresh_empty) {
  const int64_t H = y.size(1);
  const at::ScalarType acc = at::toOpMathType(y.scalar_type());
  at::Tensor grad_w = at::zeros({H, H}, y.options().dtype(acc));
  if (schedule.steps() == 0) return grad_w;
  const int64_t first_rows = schedule.rows(0);  // every module is active at step 0
  for (int64_t i = 0; i < m.count(); ++i) {
    const int64_t u0 = i * m.k;
    at::Tensor block = clockwork_block(grad_w, m, i);  // [k, H - u0]
    const auto add = [&](const at::Tensor& dx, const at::Tensor& states) {  // [n, k], [n, H]
      block.addmm_(dx.t().to(acc), states.narrow(1, u0, H - u0).to(acc));
    };
    add(grad_gx[i].narrow(0, 0, first_rows), h0.narrow(0, 0, first_rows));
    std::vector<int64_t> previous;  // module i's rows after step 0: their states' rows in y
    for (int64_t s = m.periods[i]; s < schedule.steps(); s += m.periods[i]) {
      const Step step = schedule.step(s);
      for (int64_t r = 0; r < step.rows; ++r) {
        previous.push_back(previous_packed_row(step, r));
        TORCH_INTERNAL_ASSERT(previous.back() >= 0, "a forward walk carries every row");
      }
    }
    if (previous.empty()) continue;
    const int64_t n = static_cast<int64_t>(previous.size());
    at::Tensor states;  // [n, H]
    if (previous.back() - previous.front() == n - 1) {  // ascending: consecutive
      states = y.narrow(0, previous.front(), n);
    } else {
      states = gather_rows(y, index_on(previous, y.device()), empty);
    }
    add(grad_gx[i].narrow(0, first_rows, n), states);
  }
  return grad_w;
}

}  // namespace fastrnn
