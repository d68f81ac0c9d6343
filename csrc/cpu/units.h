#pragma once
// The gate loops of the CPU walks: one row's hidden units [j0, j1), written once over the
// cell policy (csrc/cells/policy.h), in the accumulation type A (float for bfloat16 and
// half). Outside the dispatch macros, so that the simd pragmas apply. Every pointer is at
// the row's start; G = Cell::kGates, S = Cell::kSaved.

#include <ATen/OpMathType.h>
#include <c10/util/Exception.h>

#include <cstdint>

#include "../cells/policy.h"
#include "../cells/row.h"

namespace fastrnn {
namespace cpu {

template <typename T>
using acc_t = at::opmath_type<T>;

// gx, gh: [G*H] the row's input-side and recurrent pre-activations; b_hh: [G*H] added to gh
// when kBias; params: [K*H] the cell's per-unit constants (K = Cell::kUnitParams; null when
// K is 0); h_prev: [H] (read by the cells that use it; any readable [H] otherwise);
// carry: [H] (cells with a cell state), updated; saved: [S*H], written when kSave; h: [H]
// the new state; y: [H] a second copy of it (y may be h). h may be h_prev: each unit reads
// its h_prev before writing h. No branch in the loop: gcc vectorises it over units.
// A row-wise cell (row.h) takes whole rows only: [j0, j1) = [0, H).
template <class Cell, bool kSave, bool kBias, typename T>
void forward_units(const T* gx, const T* gh, const T* b_hh, const T* params, const T* h_prev,
                   acc_t<T>* carry, T* saved, T* h, T* y, int64_t H, int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  if constexpr (Cell::kRowWise) {
    TORCH_INTERNAL_ASSERT(j0 == 0 && j1 == H, "a row-wise cell runs whole rows");
    Cell::template forward_row<A, kSave, kBias>(
        SerialRow{}, RowForward<T, A>{gx, gh, b_hh, params, h_prev, carry, saved, h, y, H});
    return;
  } else {
    constexpr int G = Cell::kGates, S = Cell::kSaved > 0 ? Cell::kSaved : 1;
    constexpr int K = Cell::kUnitParams > 0 ? Cell::kUnitParams : 1;
#pragma GCC ivdep
    for (int64_t j = j0; j < j1; ++j) {
      A x[G], hh[G], slots[S], p[K];
      for (int g = 0; g < G; ++g) {
        x[g] = A(gx[g * H + j]);
        hh[g] = A(gh[g * H + j]);
        if constexpr (kBias) hh[g] += A(b_hh[g * H + j]);
      }
      for (int k = 0; k < Cell::kUnitParams; ++k) p[k] = A(params[k * H + j]);
      A c = Cell::kCellState ? carry[j] : A(0);
      const A h_new = Cell::forward(x, hh, A(h_prev[j]), c, slots, p);
      if constexpr (kSave) {
        for (int q = 0; q < Cell::kSaved; ++q) saved[q * H + j] = slots[q];
      }
      if constexpr (Cell::kCellState) carry[j] = c;
      h[j] = h_new;
      y[j] = h_new;
    }
  }
}

// forward_units for run-time flags: whether to save, whether there is a b_hh.
template <class Cell, typename T>
auto forward_units_for(bool save, bool bias) {
  if (save) return bias ? forward_units<Cell, true, true, T> : forward_units<Cell, true, false, T>;
  return bias ? forward_units<Cell, false, true, T> : forward_units<Cell, false, false, T>;
}

// dh: [H] gradient w.r.t. the row's h through the next step's product (plus grad_y: [H]
// when kAddGradY); carry: [H] (kBackwardCarry), replaced by this step's; saved: [S*H];
// params: [K*H] as forward_units' (null when K is 0);
// prev: [H] what Cell::kPrev names (null for kNone); h: [H] the row's output (any
// readable [H] for cells that do not read it); dx: [G*H]
// gradient w.r.t. gx; dgh: [G*H] w.r.t. gh, written when Cell::kSeparateDgh;
// params_grad: [K*H] the row's gradient w.r.t. unit_params, added to (a row-wise cell's:
// whole rows only, as forward's).
template <class Cell, bool kAddGradY, typename T>
void backward_units(const T* dh, const T* grad_y, acc_t<T>* carry, const T* saved,
                    const T* params, const T* prev, const T* h, T* dx, T* dgh,
                    acc_t<T>* params_grad,
                    int64_t H, int64_t j0, int64_t j1) {
  using A = acc_t<T>;
  if constexpr (Cell::kRowWise) {
    TORCH_INTERNAL_ASSERT(j0 == 0 && j1 == H, "a row-wise cell runs whole rows");
    Cell::template backward_row<A, kAddGradY>(
        SerialRow{}, RowBackward<T, A>{dh, grad_y, carry, saved, params, prev, dx, dgh,
                                       params_grad, H});
    return;
  } else {
    constexpr int G = Cell::kGates, S = Cell::kSaved > 0 ? Cell::kSaved : 1;
    constexpr int K = Cell::kUnitParams > 0 ? Cell::kUnitParams : 1;
#pragma GCC ivdep
    for (int64_t j = j0; j < j1; ++j) {
      A dh_total = A(dh[j]);
      if constexpr (kAddGradY) dh_total += A(grad_y[j]);
      A slots[S], dx_j[G], dgh_j[G], p[K];
      for (int q = 0; q < Cell::kSaved; ++q) slots[q] = A(saved[q * H + j]);
      for (int k = 0; k < Cell::kUnitParams; ++k) p[k] = A(params[k * H + j]);
      A c = Cell::kBackwardCarry ? carry[j] : A(0);
      const A prev_j = Cell::kPrev != PrevSource::kNone ? A(prev[j]) : A(0);
      Cell::backward(dh_total, c, slots, A(h[j]), prev_j, p, dx_j, dgh_j);
      if constexpr (Cell::kBackwardCarry) carry[j] = c;
      for (int g = 0; g < G; ++g) {
        dx[g * H + j] = dx_j[g];
        if constexpr (Cell::kSeparateDgh) dgh[g * H + j] = dgh_j[g];
      }
    }
  }
}

}  // namespace cpu
}  // namespace fastrnn
