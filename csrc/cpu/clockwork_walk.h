#pragma once
// The clockwork walk (Koutník et al., "A Clockwork RNN", 2014): the H hidden units form
// g modules of k = H / g, module i active at step t (counted from 0) when
// t % periods[i] == 0, with periods ascending. An active module computes its units from
// the allowed blocks of w_hh only (module i reads modules j >= i: columns [i*k, H)), one
// BLAS product per active module; an inactive one keeps its value and costs a copy. Each
// module's input-side pre-activations come compact, only for its active steps' rows. The
// units' math is an Elman cell's policy (one gate, no cell state), through the gate loops
// of units.h. Forward and backward; shapes and buffers: walk_state.h, with P = H.

#include <vector>

#include "../common/clockwork.h"
#include "recurrence.h"

namespace fastrnn {
namespace cpu {

// Calls fn(module, u0, u1) for the modules' parts [u0, u1) of units [j0, j1).
template <typename F>
void for_each_module_part(const ClockworkModules& m, int64_t j0, int64_t j1, const F& fn) {
  for (int64_t i = j0 / m.k; i * m.k < j1; ++i) {
    fn(i, std::max(j0, i * m.k), std::min(j1, (i + 1) * m.k));
  }
}

// gx[i]: module i's input-side pre-activations [n_i, k], the rows of its active steps in
// step order (n_i: the rows of those steps). Fills st.y and st.h (st.gx is not read; no
// saved slots: the cell's backward reads y).
template <class Cell, typename T>
void clockwork_forward(const ForwardState<T>& st, const Schedule& schedule,
                       const at::Tensor& w_hh, const ClockworkModules& m,
                       const std::vector<const T*>& gx) {
  static_assert(Cell::kGates == 1 && !Cell::kCellState && Cell::kSaved == 0 &&
                Cell::kUnitParams == 0, "the clockwork walk runs a one-gate Elman cell");
  const int64_t H = st.H, k = m.k;
  at::Tensor pre_t = at::empty({st.B, H}, w_hh.options());  // active modules: gx + products
  at::Tensor zeros_t = at::zeros({H}, w_hh.options());      // the cell's hh: in pre already
  T* pre = pre_t.data_ptr<T>();
  const T* zeros = zeros_t.data_ptr<T>();
  std::vector<StepGemm<T>> products;  // module i: h[:, i*k:] [b, H - i*k] -> pre[:, i-th k]
  for (int64_t i = 0; i < m.count(); ++i) products.emplace_back(clockwork_block(w_hh, m, i).t());
  std::vector<int64_t> next(m.count(), 0);  // module i's next row of gx[i]
  const auto units = forward_units_for<Cell, T>(false, false);
  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const int64_t b = schedule.rows(s), first = schedule.first_row(s);
    if (b == 0) continue;
    for (int64_t i = 0; i < m.count(); ++i) {  // every product before any h is replaced
      if (!m.active(i, s)) continue;
      for (int64_t r = 0; r < b; ++r) {
        std::memcpy(pre + r * H + i * k, gx[i] + (next[i] + r) * k, k * sizeof(T));
      }
      next[i] += b;
      products[i](b, st.h + i * k, pre + i * k, true, H, H);
    }
    for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
      T* h = st.h + row * H;
      T* y = st.y + (first + row) * H;
      for_each_module_part(m, j0, j1, [&](int64_t i, int64_t u0, int64_t u1) {
        if (m.active(i, s)) {
          units(pre + row * H, zeros, nullptr, nullptr, h, nullptr, nullptr, h, y, H, u0, u1);
        } else {
          std::memcpy(y + u0, h + u0, (u1 - u0) * sizeof(T));
        }
      });
    });
  }
}

// Fills grad_gx[i] ([n_i, k], as gx[i] in forward) and st.dh, which ends as the gradient
// w.r.t. h0 (the gradient w.r.t. w_hh: clockwork_weight_grad, after the walk).
// st.grad_gx: [B, H] scratch for a step's gradients. An active module's h_{t-1} gets its
// gradient through the products alone; an inactive module passes its gradient (plus
// grad_y) on to h_{t-1} unchanged.
template <class Cell, typename T>
void clockwork_backward(const BackwardState<T>& st, const Schedule& schedule,
                        const at::Tensor& w_hh, const ClockworkModules& m,
                        const std::vector<T*>& grad_gx, const std::vector<int64_t>& rows) {
  const int64_t H = st.H, k = m.k;
  std::vector<StepGemm<T>> products;  // module i: dx[:, i-th k] [b, k] -> dh[:, i*k:]
  for (int64_t i = 0; i < m.count(); ++i) products.emplace_back(clockwork_block(w_hh, m, i));
  std::vector<int64_t> end = rows;  // module i's rows of grad_gx[i] not yet written: [0, end)
  T* dx = st.grad_gx;
  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const int64_t b = schedule.rows(s), first = schedule.first_row(s);
    if (b == 0) continue;
    for_each_unit(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
      T* dh = st.dh + row * H;
      const T* grad_y = st.grad_y + (first + row) * H;
      for_each_module_part(m, j0, j1, [&](int64_t i, int64_t u0, int64_t u1) {
        if (m.active(i, s)) {
          backward_units<Cell, true, T>(dh, grad_y, nullptr, nullptr, nullptr, nullptr,
                                        st.y + (first + row) * H, dx + row * H, nullptr, nullptr,
                                        H, u0, u1);
          std::fill(dh + u0, dh + u1, T(0));
        } else {
          for (int64_t j = u0; j < u1; ++j) dh[j] += grad_y[j];
        }
      });
    });
    for (int64_t i = 0; i < m.count(); ++i) {
      if (!m.active(i, s)) continue;
      const int64_t u0 = i * k;
      end[i] -= b;
      for (int64_t r = 0; r < b; ++r) {
        std::memcpy(grad_gx[i] + (end[i] + r) * k, dx + r * H + u0, k * sizeof(T));
      }
      products[i](b, dx + u0, st.dh + u0, true, H, H);
    }
  }
}

}  // namespace cpu
}  // namespace fastrnn
