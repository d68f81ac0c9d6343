#pragma once
// The clockwork walk (Koutník et al., "A Clockwork RNN", 2014): the H hidden units form
// g modules of k = H / g, module i active at step t (counted from 0) when
// t % periods[i] == 0, with periods ascending. An active module computes its units from
// the allowed blocks of w_hh only (module i reads modules j >= i: columns [i*k, H)), one
// BLAS product per active module; an inactive one keeps its value and costs a copy. The
// units' math is an Elman cell's policy (one gate, no cell state), through the gate loops
// of units.h. Forward and backward; shapes and buffers: walk_state.h, with P = H.

#include <vector>

#include "recurrence.h"

namespace fastrnn {
namespace cpu {

struct ClockworkModules {
  std::vector<int64_t> periods;  // ascending, one per module
  int64_t k;                     // units per module
  int64_t count() const { return static_cast<int64_t>(periods.size()); }
  bool active(int64_t module, int64_t step) const { return step % periods[module] == 0; }
};

// Module i's allowed block of w_hh [H, H]: rows [i*k, (i+1)*k), columns [i*k, H).
inline at::Tensor clockwork_block(const at::Tensor& w_hh, const ClockworkModules& m,
                                  int64_t i) {
  return w_hh.narrow(0, i * m.k, m.k).narrow(1, i * m.k, w_hh.size(1) - i * m.k);
}

// Calls fn(module, u0, u1) for the modules' parts [u0, u1) of units [j0, j1).
template <typename F>
void for_each_module_part(const ClockworkModules& m, int64_t j0, int64_t j1, const F& fn) {
  for (int64_t i = j0 / m.k; i * m.k < j1; ++i) {
    fn(i, std::max(j0, i * m.k), std::min(j1, (i + 1) * m.k));
  }
}

// Fills st.y and st.h (no saved slots: the cell's backward reads y).
template <class Cell, typename T>
void clockwork_forward(const ForwardState<T>& st, const Schedule& schedule,
                       const at::Tensor& w_hh, const ClockworkModules& m) {
  static_assert(Cell::kGates == 1 && !Cell::kCellState && Cell::kSaved == 0 &&
                Cell::kUnitParams == 0, "the clockwork walk runs a one-gate Elman cell");
  const int64_t H = st.H;
  at::Tensor gh_t = at::empty({st.B, H}, w_hh.options());  // the active modules' products
  T* gh = gh_t.data_ptr<T>();
  std::vector<StepGemm<T>> products;  // module i: h[:, i*k:] [b, H - i*k] -> gh[:, i-th k]
  for (int64_t i = 0; i < m.count(); ++i) products.emplace_back(clockwork_block(w_hh, m, i).t());
  const auto units = forward_units_for<Cell, T>(false, false);
  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const int64_t b = schedule.rows(s), first = schedule.first_row(s);
    if (b == 0) continue;
    for (int64_t i = 0; i < m.count(); ++i) {  // every product before any h is replaced
      if (m.active(i, s)) products[i](b, st.h + i * m.k, gh + i * m.k, false, H, H);
    }
    for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
      T* h = st.h + row * H;
      T* y = st.y + (first + row) * H;
      for_each_module_part(m, j0, j1, [&](int64_t i, int64_t u0, int64_t u1) {
        if (m.active(i, s)) {
          units(st.gx + (first + row) * H, gh + row * H, nullptr, nullptr, h, nullptr, nullptr,
                h, y, H, u0, u1);
        } else {
          std::memcpy(y + u0, h + u0, (u1 - u0) * sizeof(T));
        }
      });
    });
  }
}

// Fills st.grad_gx (zero for a module's inactive steps) and st.dh, which ends as the
// gradient w.r.t. h0. An active module's h_{t-1} gets its gradient through the products
// alone; an inactive module passes its gradient (plus grad_y) on to h_{t-1} unchanged.
template <class Cell, typename T>
void clockwork_backward(const BackwardState<T>& st, const Schedule& schedule,
                        const at::Tensor& w_hh, const ClockworkModules& m) {
  const int64_t H = st.H;
  std::vector<StepGemm<T>> products;  // module i: grad_gx[:, i-th k] [b, k] -> dh[:, i*k:]
  for (int64_t i = 0; i < m.count(); ++i) products.emplace_back(clockwork_block(w_hh, m, i));
  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const int64_t b = schedule.rows(s), first = schedule.first_row(s);
    if (b == 0) continue;
    T* dx = st.grad_gx + first * H;
    for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
      T* dh = st.dh + row * H;
      const T* grad_y = st.grad_y + (first + row) * H;
      T* dx_row = dx + row * H;
      for_each_module_part(m, j0, j1, [&](int64_t i, int64_t u0, int64_t u1) {
        if (m.active(i, s)) {
          backward_units<Cell, true, T>(dh, grad_y, nullptr, nullptr, nullptr,
                                        st.y + (first + row) * H, dx_row, dx_row, H, u0, u1);
          std::fill(dh + u0, dh + u1, T(0));
        } else {
          for (int64_t j = u0; j < u1; ++j) dh[j] += grad_y[j];
          std::fill(dx_row + u0, dx_row + u1, T(0));
        }
      });
    });
    for (int64_t i = 0; i < m.count(); ++i) {
      if (m.active(i, s)) products[i](b, dx + i * m.k, st.dh + i * m.k, true, H, H);
    }
  }
}

}  // namespace cpu
}  // namespace fastrnn
