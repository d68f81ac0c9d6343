#pragma once
// One recurrence (one layer, one direction) as every backend's walk receives it: the ops'
// arguments, checked and contiguous (csrc/ops.h builds these from each op's schema), and
// what the walks return. Shapes, with N packed rows, T steps, batch B, H hidden units,
// G = Cell::kGates, S = Cell::kSaved and P = size of h (H, or proj_size with w_hr):

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>

#include <vector>

#include "schedule.h"

namespace fastrnn {

// Sizes of one recurrence.
struct RecurrenceSizes {
  int64_t N, T, B, H, P;
};

// Tensors a cell does not have are undefined.
struct ForwardArgs {
  at::Tensor gx;           // [N, G*H] input-side pre-activations, biases included (not b_hh
                           //   of a kRecurrentBias cell)
  at::Tensor batch_sizes;  // [T] int64 on the CPU, non-increasing, batch_sizes[0] = B
  at::Tensor h0;           // [B, P]
  at::Tensor c0;           // [B, H] (kCellState)
  at::Tensor w_hh;         // [G*H, P], strided, or sparse CSR (forward on the CPU only); may
                           //   be bfloat16 with a float32 h0 (checks.h: bfloat16_products)
  at::Tensor w_hr;         // [P, H] projection, or undefined (then P = H)
  at::Tensor b_hh;         // [G*H] (kRecurrentBias), or undefined (no bias)
  bool reverse;            // walk time from T-1 down to 0
  bool save;               // write `saved` for backward; else it comes back [0, S*H]
  RecurrenceSizes size;
  const char* op = "";     // the op's name, for messages
  at::Tensor unit_params{};  // [K*H] the cell's per-unit constants (K = Cell::kUnitParams > 0)
  // The input side instead of gx (which is then undefined): x [N, I], w_ih [G*H, I] and the
  // input bias [G*H] (b_ih + b_hh) or undefined, gx being x @ w_ih^T + b_ih. A backend with
  // kFoldsInputProduct forms the input product itself (inside its walk where it can); for
  // the others the op's entry forms gx first (ops.h).
  at::Tensor x{}, w_ih{}, b_ih{};
};

struct ForwardResult {
  at::Tensor y;      // [N, P]
  at::Tensor hn;     // [B, P] each row's last h
  at::Tensor cn;     // [B, H] (kCellState) each row's last c, else undefined
  at::Tensor saved;  // [N, S*H] the rows' saved slots, read by backward ([0, S*H] unless save)
};

struct BackwardResult;

// The gradients w.r.t. a forward's outputs and what backward reads of it (only read).
struct BackwardArgs {
  at::Tensor grad_y;       // [N, P]
  at::Tensor grad_hn;      // [B, P]
  at::Tensor grad_cn;      // [B, H] (kCellState)
  at::Tensor batch_sizes, h0, c0, w_hh, w_hr;  // as in ForwardArgs
  at::Tensor y;            // [N, P] from forward
  at::Tensor saved;        // [N, S*H] from forward with save
  bool has_bias;           // (kRecurrentBias) whether the forward had b_hh
  bool reverse;
  RecurrenceSizes size;
  const char* op = "";
  bool h0_grad = true;     // whether grad_h0/grad_c0 are wanted; without, a backend may skip
                           //   the last step's product and return meaningless values
  bool weight_grad = true;  // whether grad_w_hh, grad_w_hr, grad_b_hh and
                            //   grad_unit_params are wanted; without, a backend may leave
                            //   them undefined
  at::Tensor unit_params{};  // as in ForwardArgs
  // A single step's input side (a cell call, cell_ops.h): x [B, I] and w_ih [G*H, I], as
  // given (not made contiguous), the step's gx having been x @ w_ih^T + biases. With x
  // defined a backend may form grad_x (when input_grad) and, with weight_grad, grad_w_ih and
  // grad_b_ih alongside the step's other products; those it does not form it leaves
  // undefined.
  at::Tensor x{}, w_ih{};
  bool input_grad = false;
  // With x: sums of earlier steps' gradients w.r.t. the weights and biases (grad_w_ih,
  // grad_w_hh, grad_b_ih, grad_b_hh of a BackwardResult, contiguous, as this step returns
  // them) or null. A backend that forms those with the step's products may add them to the
  // sums in place and return the sums; the caller adds those it returns otherwise.
  const BackwardResult* grad_sums = nullptr;
};

struct BackwardResult {
  at::Tensor grad_gx;    // [N, G*H]
  at::Tensor grad_h0;    // [B, P]
  at::Tensor grad_c0;    // [B, H] (kCellState)
  at::Tensor grad_w_hh;  // [G*H, P]
  at::Tensor grad_w_hr;  // [P, H], or [0] without projection
  at::Tensor grad_b_hh;  // [G*H] (kRecurrentBias with bias), or [0]
  at::Tensor grad_unit_params;  // [K*H] (kUnitParams > 0), or [0]; see unit_params_grad
  at::Tensor params_grad;  // [B, K*H] a row-wise cell's per-row gradient w.r.t. unit_params
                           // (cells/row.h), in the accumulation type, for the above
  // [B, I], [G*H, I], [G*H]: see BackwardArgs::x. Where a backend forms grad_b_ih it also
  // forms grad_b_hh, for a cell without kRecurrentBias as a copy of grad_b_ih.
  at::Tensor grad_x, grad_w_ih, grad_b_ih;
};

// A working copy of t, updated in place by a walk, in the type the walks keep a carry in
// between steps (LSTM c, the backward carries): torch's opmath type, float for half and
// bfloat16 (cuda/element_types.h's acc_t, cpu/units.h's acc_t), else t's own type.
inline at::Tensor accumulation_copy(const at::Tensor& t) {
  return t.contiguous().to(at::toOpMathType(t.scalar_type()), /*non_blocking=*/false,
                           /*copy=*/true);
}

// The carry a backward walk starts from, [B, H] in the accumulation type, updated in place:
// grad_cn for a cell with a cell state, zero for another cell with a backward carry;
// undefined for a cell without one.
template <class Cell>
at::Tensor initial_backward_carry(const BackwardArgs& a) {
  if constexpr (!Cell::kBackwardCarry) {
    return at::Tensor();
  } else if constexpr (Cell::kCellState) {
    return accumulation_copy(a.grad_cn);
  } else {
    const auto type = at::toOpMathType(a.y.scalar_type());
    return at::zeros({a.size.B, a.size.H}, a.y.options().dtype(type));
  }
}

// grad_b_hh of a kRecurrentBias cell from the gradient w.r.t. gh ([N, G*H]): its sum over
// the rows, or [0] when the forward had no bias or the cell has no recurrent bias (b_hh
// folded into gx: its gradient is the input side's, which the caller forms). A row-wise
// cell adds b_hh after its norm, whose output's gradient is beta_h's part of params_grad
// ([B, K*H]: layer_norm.h).
template <class Cell>
at::Tensor recurrent_bias_grad(const BackwardArgs& a, const at::Tensor& grad_gh,
                               const at::Tensor& params_grad) {
  if (!Cell::kRecurrentBias || !a.has_bias) return at::empty({0}, grad_gh.options());
  if constexpr (Cell::kRowWise) {
    return params_grad.narrow(1, Cell::kBetaH * a.size.H, grad_gh.size(1))
        .sum(0)
        .to(grad_gh.scalar_type());
  }
  return grad_gh.sum(0);
}

// The gradient w.r.t. a row-wise cell's unit_params, in `type`: the sum over rows of its
// params_grad ([B, K*H] in the accumulation type, laid out as unit_params).
inline at::Tensor row_params_grad(const at::Tensor& params_grad, at::ScalarType type) {
  return params_grad.sum(0).to(type);
}

// The gradient w.r.t. a trainable cell's unit_params, its peepholes (cells/lstm.h):
// [K*H], peephole k's the sum over the rows of the gradient w.r.t. its gate's
// pre-activation (grad_gx: [N, G*H]) times the cell state it reads, the row's new c (saved
// slot kSlotC) or its c_prev (the previous step's, or c0). Summed in the accumulation type;
// [0] for a cell without unit_params.
template <class Cell>
at::Tensor unit_params_grad(const BackwardArgs& a, const at::Tensor& grad_gx) {
  if constexpr (Cell::kUnitParams == 0) {
    return at::empty({0}, grad_gx.options());
  } else {
    const int64_t H = a.size.H;
    const auto acc = at::toOpMathType(grad_gx.scalar_type());
    const at::Tensor c = a.saved.narrow(1, Cell::kSlotC * H, H).to(acc);  // [N, H]
    const at::Tensor c_prev =
        previous_rows(c, a.c0.to(acc), Schedule(a.batch_sizes, a.reverse));  // [N, H]
    std::vector<at::Tensor> parts;
    for (int k = 0; k < Cell::kUnitParams; ++k) {
      const at::Tensor grad_gate = grad_gx.narrow(1, Cell::kPeepholeGate[k] * H, H).to(acc);
      parts.push_back((grad_gate * (Cell::kPeepholeReadsNewC[k] ? c : c_prev)).sum(0));
    }
    return at::cat(parts).to(grad_gx.scalar_type());
  }
}

}  // namespace fastrnn
