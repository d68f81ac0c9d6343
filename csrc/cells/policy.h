#pragma once
// What every backend's time walk needs to know about a cell: its policy. The walks (the CPU
// BLAS and fused walks, the CUDA per-step loop, the persistent kernel) are written once,
// templated on a policy; a cell is its per-unit math (csrc/cells/<cell>.h) plus a policy
// struct there with the members below. docs/architecture.md has the recipe for a new cell.
//
// Per row r of a step and hidden unit j, with G = kGates and H units:
//   x[g]  = gx[r, g*H + j]          input-side pre-activation (x W_ih^T + biases)
//   hh[g] = (h_prev W_hh^T)[r, g*H + j], plus b_hh[g*H + j] for kRecurrentBias cells
//   forward(x, hh, h_prev[j], carry, saved, params) -> h[j]; fills saved[0, kSaved) (the
//       row's saved slots, slot k is columns [k*H, (k+1)*H) of `saved`) and updates carry
//       (kept in the accumulation type between steps). params[k] = unit_params[k*H + j],
//       k < kUnitParams: per-unit constants of the layer (the leaky cell's leak rate);
//       null when kUnitParams is 0.
//   backward(dh, carry, saved, h, prev, params, dx, dgh): dh is the gradient w.r.t. this
//       step's h (through the next step's product, plus grad_y); carry, from the later step,
//       is replaced by this step's; params as forward's; writes dx[g] (w.r.t. gx) and dgh[g]
//       (w.r.t. hh, the rows the next product and the weight gradient read: dgh == dx
//       unless kSeparateDgh).
//   h0_grad(rec, carry): the gradient w.r.t. h0 of a row from the part through the product
//       (rec) and the carry left by its first step (cells without a cell state; with one,
//       that carry is the gradient w.r.t. c0).
// Flags: kCellState (a second state, c0/cn, which is the forward carry), kBackwardCarry
// (backward keeps a carry: LSTM dc, GRU the direct part of dh_prev), kRecurrentBias (b_hh
// added to hh rather than folded into gx), kSeparateDgh, kProjection (h may be projected to
// P = proj_size by w_hr), kPrev/kPrevSlot, kUnitParams (per-unit constants forward and
// backward read; a trainable cell's are peepholes, described by kPeepholeGate and
// kPeepholeReadsNewC: see lstm.h), kForwardOnly (no backward: the cell has no gradient
// and no walk runs one for it), kRowWise (the cell's step is a function of whole rows, not
// of one unit: row.h; its policy has forward_row and backward_row instead of forward and
// backward, and hidden_row instead of hidden_from_saved with kProjection).
// `prev` is what backward reads of the row's previous step (PrevSource) and `h` the row's
// own output.

#include <cstdint>

#include "../common/macros.h"

namespace fastrnn {

// The recurrences the library has. Its values are the cell numbers of every interface that
// names a cell by number (the persistent kernels' C entry points, the Python constants).
enum class CellKind : int {
  kLstm = 0,
  kGru = 1,
  kRnnTanh = 2,
  kRnnRelu = 3,
  kLeakyTanh = 4,
  kPeepholeLstm = 5,
  kCoupledLstm = 6,
  kPeepholeCoupledLstm = 7,
  kLayerNormLstm = 8,
  kLayerNormGru = 9,
};

// What backward reads of a row's previous step as `prev`.
enum class PrevSource {
  kNone,       // nothing
  kOutput,     // h_prev: the previous step's row of y, or the row of h0
  kSavedSlot,  // slot kPrevSlot of the previous step's row of saved, or the row of c0
};

}  // namespace fastrnn
