#pragma once
// The buffers one CPU walk works on, as raw pointers (allocated in cpu/backend.cpp), and the
// row lookups both walks share. Shapes as in common/recurrence.h; T the storage type.

#include "../common/schedule.h"
#include "units.h"

namespace fastrnn {
namespace cpu {

template <typename T>
struct ForwardState {
  const T* gx;        // [N, G*H]
  const T* h0;        // [B, P]
  const T* w_hh;      // [G*H, P]
  const T* b_hh;      // [G*H] (kRecurrentBias with bias) or null
  const T* unit_params;  // [K*H] (K = Cell::kUnitParams > 0) or null
  T* h;               // [B, P] the h state: h0 at first, rows updated as steps visit them
  acc_t<T>* carry;    // [B, H] (kCellState) c0 at first, updated; null otherwise
  T* y;               // [N, P]
  T* saved;           // [N, S*H], or null without save
  int64_t N, B, H, P;
};

template <typename T>
struct BackwardState {
  const T* grad_y;    // [N, P]
  const T* h0;        // [B, P]
  const T* c0;        // [B, H] (kCellState) or null
  const T* w_hh;      // [G*H, P]
  const T* y;         // [N, P]
  const T* saved;     // [N, S*H]
  const T* unit_params;  // [K*H] (K = Cell::kUnitParams > 0) or null
  T* dh;              // [B, P] gradient w.r.t. the h state through the products: grad_hn
                      // at first; the rows of grad_h0 (before Cell::h0_grad) at the end
  acc_t<T>* carry;    // [B, H] (kBackwardCarry): grad_cn or zero at first; null otherwise
  T* grad_gx;         // [N, G*H] written
  T* grad_gh;         // [N, G*H] written (kSeparateDgh); == grad_gx otherwise
  acc_t<T>* params_grad;  // [B, K*H] (row-wise cells) each row's gradient w.r.t. unit_params,
                          // zeros at first, added to; null otherwise
  int64_t N, B, H, P;
};

// Row i of the state step s read: row i of step s-1 in `states` ([N, X], row stride
// `stride`) when that step had the row, else row i of `init` ([B, X], contiguous).
template <typename T>
const T* previous_row(const T* states, int64_t stride, const T* init, const Schedule& schedule,
                      int64_t s, int64_t i, int64_t X) {
  const int64_t row = previous_packed_row(schedule.step(s), i);
  return row >= 0 ? states + row * stride : init + i * X;
}

// Row i's params_grad (row-wise cells), or null.
template <class Cell, typename T>
acc_t<T>* params_grad_row(const BackwardState<T>& st, int64_t i) {
  return Cell::kRowWise ? st.params_grad + i * Cell::kUnitParams * st.H : nullptr;
}

// What backward reads as `prev` for row i of step s (Cell::kPrev): the previous step's h
// (a row of y or h0), or a slot of its saved row (or c0); null for kNone.
template <class Cell, typename T>
const T* backward_prev(const BackwardState<T>& st, const Schedule& schedule, int64_t s,
                       int64_t i) {
  if constexpr (Cell::kPrev == PrevSource::kOutput) {
    return previous_row(st.y, st.P, st.h0, schedule, s, i, st.P);
  } else if constexpr (Cell::kPrev == PrevSource::kSavedSlot) {
    return previous_row(st.saved + Cell::kPrevSlot * st.H, Cell::kSaved * st.H, st.c0, schedule,
                        s, i, st.H);
  } else {
    return nullptr;
  }
}

}  // namespace cpu
}  // namespace fastrnn
