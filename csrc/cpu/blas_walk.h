#pragma once
// The BLAS walk: per step one recurrent product (a BLAS call, plus one projection product
// when h is projected) and one parallel pass of the cell's gate loops. Any dtype, any cell,
// any batch. Shapes and buffers: walk_state.h.

#include "recurrence.h"

namespace fastrnn {
namespace cpu {

// w_hh: [G*H, P]; w_hr: [P, H] or undefined. Fills st.y, st.h, st.carry and st.saved. The
// first step reads h0 (st.h0), later ones st.h: st.h must start as h0 only in the rows that
// the first step leaves.
template <class Cell, typename T>
void blas_forward(const ForwardState<T>& st, const Schedule& schedule, const at::Tensor& w_hh,
                  const at::Tensor& w_hr) {
  constexpr int64_t G = Cell::kGates, S = Cell::kSaved;
  const int64_t H = st.H, P = st.P;
  const bool proj = w_hr.defined();
  const auto options = w_hh.options();
  at::Tensor gh_t = at::empty({st.B, G * H}, options);                 // h_prev @ w_hh^T
  at::Tensor m_t = proj ? at::empty({st.B, H}, options) : at::Tensor();  // h before w_hr
  T* gh = gh_t.data_ptr<T>();
  T* m = proj ? m_t.data_ptr<T>() : nullptr;
  const StepGemm<T> recurrent(w_hh, /*transposed=*/true);              // [b, P] -> [b, G*H]
  const StepGemm<T> project(proj ? w_hr : w_hh, /*transposed=*/true);  // [b, H] -> [b, P]
  const auto units = forward_units_for<Cell, T>(st.saved != nullptr, st.b_hh != nullptr);
  for (int64_t s = 0; s < schedule.steps(); ++s) {
    const int64_t b = schedule.rows(s), first = schedule.first_row(s);
    if (b == 0) continue;
    // The state's rows before the step: h0's at the first step, which st.h need not hold.
    const T* h_prev = s == 0 ? st.h0 : st.h;
    recurrent(b, h_prev, gh);
    for_each_unit_of<Cell>(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
      const int64_t packed = first + row;
      // Without projection h goes straight to the state and to y; with it, to m (twice).
      T* h = proj ? m + row * H : st.h + row * P;
      units(st.gx + packed * G * H, gh + row * G * H, st.b_hh, st.unit_params,
            proj ? h : h_prev + row * P,
            Cell::kCellState ? st.carry + row * H : nullptr,
            st.saved != nullptr ? st.saved + packed * S * H : nullptr, h,
            proj ? h : st.y + packed * P, H, j0, j1);
    });
    if (proj) {
      project(b, m, st.h);
      std::memcpy(st.y + first * P, st.h, b * P * sizeof(T));
    }
  }
}

// Fills st.grad_gx, st.grad_gh, st.dh and st.carry; returns dh_all: [N, P], the gradient
// w.r.t. every row's projected h (for grad_w_hr), when w_hr is defined. Without h0_grad the
// first step's product, which only forms the gradient w.r.t. h0, is skipped (st.dh is then
// left as it was).
template <class Cell, typename T>
at::Tensor blas_backward(const BackwardState<T>& st, const Schedule& schedule,
                         const at::Tensor& w_hh, const at::Tensor& w_hr, bool h0_grad) {
  constexpr int64_t G = Cell::kGates, S = Cell::kSaved;
  const int64_t H = st.H, P = st.P;
  const bool proj = w_hr.defined();
  const auto options = w_hh.options();
  at::Tensor dh_all_t = proj ? at::empty({st.N, P}, options) : at::Tensor();
  at::Tensor dm_t = proj ? at::empty({st.B, H}, options) : at::Tensor();
  const StepGemm<T> recurrent(w_hh);                // [b, G*H] -> [b, P]
  const StepGemm<T> project(proj ? w_hr : w_hh);  // [b, P] -> [b, H]
  // With projection grad_y is added to dh before the units; a cell call may have none.
  const bool add_grad_y = !proj && st.grad_y != nullptr;
  const auto units = add_grad_y ? backward_units<Cell, true, T> : backward_units<Cell, false, T>;
  for (int64_t s = schedule.steps() - 1; s >= 0; --s) {
    const int64_t b = schedule.rows(s), first = schedule.first_row(s);
    if (b == 0) continue;
    const T* dh = st.dh;
    if (proj) {  // dh = grad_y + dh_state, then back through h = m @ w_hr^T
      T* dh_rows = dh_all_t.data_ptr<T>() + first * P;
      const T* gy = st.grad_y + first * P;
      for (int64_t k = 0; k < b * P; ++k) dh_rows[k] = st.dh[k] = st.dh[k] + gy[k];
      project(b, st.dh, dm_t.data_ptr<T>());
      dh = dm_t.data_ptr<T>();
    }
    for_each_unit_of<Cell>(b, H, [&](int64_t row, int64_t j0, int64_t j1) {
      const int64_t packed = first + row;
      const T* dh_row = dh + row * (proj ? H : P);
      units(dh_row, add_grad_y ? st.grad_y + packed * P : nullptr,
            Cell::kBackwardCarry ? st.carry + row * H : nullptr, st.saved + packed * S * H,
            st.unit_params, backward_prev<Cell>(st, schedule, s, row),
            proj ? dh_row : st.y + packed * P, st.grad_gx + packed * G * H,
            st.grad_gh + packed * G * H, params_grad_row<Cell>(st, row), H, j0, j1);
    });
    if (s > 0 || h0_grad) recurrent(b, st.grad_gh + first * G * H, st.dh);
  }
  return dh_all_t;
}

}  // namespace cpu
}  // namespace fastrnn
