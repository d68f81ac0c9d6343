#pragma once
// The single-step ops: one call of a cell (torch.nn.LSTMCell, GRUCell, RNNCell), for every
// backend and every cell of cells/all.h, named by its number (CellKind). A step is the
// recurrence of common/recurrence.h with one time step (batch_sizes = [B]): the op forms the
// input product x @ W_ih^T + biases and runs the backend's walk for that step, so the gate
// math is the cells' one copy and each backend keeps its one walk. Backward runs the walk's
// backward for the step and forms the input side's gradients from its gradient w.r.t. gx.
//
// A backend provides, besides its walks, Backend::input_product(x, w_ih, b1, b2) -> gx,
// x @ w_ih^T + b1 + b2 for the biases that are defined, Backend::input_grad(grad_gx, w_ih)
// -> grad_gx @ w_ih, Backend::weight_grad_product(a, b) -> a @ b in a new tensor, for
// w_ih's gradient, and Backend::StepProducts, a scope
// constructed from the multiply-adds of a step's largest product, alive while backward
// forms the step's products (the CPU's runs small ones without MKL's own threads).
//
// Shapes, with G = Cell::kGates: x [B, I]; h [B, H]; c [B, H] for a cell with a cell state
// (else undefined), or all three with a leading 1 (a layer's step: is_layer_step); w_ih
// [G*H, I]; w_hh [G*H, H]; b_ih, b_hh [G*H], both or neither;
// unit_params [K*H] for a cell with K = Cell::kUnitParams > 0 (peepholes), else undefined.
// y and h_new hold the same values, the step's output and the new state, in two tensors
// (the walk writes both): a layer returns both (output and h_n), a cell returns h_new, and
// backward reads y, so a caller may change h_new in place. Results a cell does not have
// (c_new, grad_c, the bias gradients without bias) come back empty ([0]), as do the
// gradients backward is told are not wanted (w.r.t. x without input_grad, w.r.t. h and c
// without state_grad, w.r.t. the weights and biases without weight_grad: frozen weights
// cost no GEMM); saved of a cell that saves nothing is [B, 0] ([0, 0] without save).
// Backward sums a step's gradients w.r.t. y and h_new, so grad_y may be None: a caller
// with one of them passes it as grad_h, and no tensor of zeros is made for the other.

#include <torch/library.h>

#include <algorithm>

#include "cells/all.h"
#include "ops.h"

namespace fastrnn {

// cell_forward's typed handle (cell_autograd.cpp), for callers in C++.
using CellForwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
    int64_t, const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
    const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
    const std::optional<at::Tensor>&, bool, const std::optional<at::Tensor>&);
using CellForwardOp = c10::TypedOperatorHandle<CellForwardSignature>;
const CellForwardOp& cell_forward_op();

inline void define_cell_ops(torch::Library& m) {
  m.def(
      "cell_forward(int cell, Tensor x, Tensor h, Tensor? c, Tensor w_ih, Tensor w_hh, "
      "Tensor? b_ih, Tensor? b_hh, bool save, Tensor? unit_params=None) -> (Tensor y, "
      "Tensor h_new, Tensor c_new, Tensor saved)");
  m.def(
      "cell_backward(int cell, Tensor? grad_y, Tensor grad_h, Tensor? grad_c, Tensor x, "
      "Tensor h, Tensor? c, Tensor w_ih, Tensor w_hh, Tensor y, Tensor saved, bool has_bias, "
      "bool input_grad, bool state_grad, bool weight_grad, Tensor? unit_params=None) -> "
      "(Tensor grad_x, Tensor grad_h, Tensor grad_c, Tensor grad_w_ih, Tensor grad_w_hh, "
      "Tensor grad_b_ih, Tensor grad_b_hh, Tensor grad_unit_params)");
}

namespace cell_entry {

using at::Tensor;
using c10::optional;

// torch.nn's checks of a cell's input and state (check_rnn_cell_forward_input/_hidden in
// ATen's RNN.cpp), with its messages, then the weights' shapes, dtypes and devices.
template <class Cell>
void check_step(const char* op, const Tensor& x, const Tensor& h, const Tensor& c,
                const Tensor& w_ih, const Tensor& w_hh, const Tensor& b_ih, const Tensor& b_hh) {
  constexpr int G = Cell::kGates;
  constexpr BlocksOfH gates{G};
  TORCH_CHECK(w_ih.dim() == 2 && w_ih.size(0) % G == 0 && w_hh.dim() == 2, op,
              ": w_ih must be [", gates, ", I] and w_hh [", gates, ", H], got ", w_ih.sizes(),
              " and ", w_hh.sizes());
  const int64_t H = w_ih.size(0) / G;
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble || dtype == at::kBFloat16 ||
                  dtype == at::kHalf,
              "fastrnn supports float32, float64, bfloat16 and float16, got input of dtype ",
              dtype);
  TORCH_CHECK(x.dim() == 2 && h.dim() == 2, op, ": x and h must be 2-D, got ", x.sizes(),
              " and ", h.sizes());
  TORCH_CHECK(x.size(1) == w_ih.size(1), "input has inconsistent input_size: got ", x.size(1),
              " expected ", w_ih.size(1));
  const auto check_state = [&](const Tensor& state, int index) {
    TORCH_CHECK(state.dim() == 2, op, ": hidden", index, " must be 2-D, got ", state.sizes());
    TORCH_CHECK(x.size(0) == state.size(0), "Input batch size ", x.size(0),
                " doesn't match hidden", index, " batch size ", state.size(0));
    TORCH_CHECK(state.size(1) == H, "hidden", index, " has inconsistent hidden_size: got ",
                state.size(1), ", expected ", H);
  };
  check_state(h, 0);
  if constexpr (Cell::kCellState) {
    TORCH_CHECK(c.defined(), op, ": this cell needs c");
    check_state(c, 1);
  } else {
    TORCH_CHECK(!c.defined(), op, ": this cell has no cell state c");
  }
  check_arg(op, h, x, "x", {x.size(0), w_ih.size(1)}, "[B, I]");
  check_arg(op, h, w_ih, "w_ih", {G * H, x.size(1)}, "[", gates, ", I]");
  check_arg(op, h, w_hh, "w_hh", {G * H, H}, "[", gates, ", H]");
  TORCH_CHECK(b_ih.defined() == b_hh.defined(), op, ": give both b_ih and b_hh, or neither");
  if (b_ih.defined()) {
    check_arg(op, h, b_ih, "b_ih", {G * H}, "[", gates, "]");
    check_arg(op, h, b_hh, "b_hh", {G * H}, "[", gates, "]");
  }
}

// batch_sizes of a single step of B rows: [B]. Only read, so each thread keeps one per
// batch size it saw last (a new tensor per call costs more than a small step's arithmetic).
inline Tensor one_step(int64_t batch) {
  thread_local Tensor sizes;
  if (!sizes.defined() || sizes.data_ptr<int64_t>()[0] != batch) {
    sizes = at::full({1}, batch, at::kLong);
  }
  return sizes;
}

inline Tensor none_like(const Tensor& t) { return at::empty({0}, t.options()); }

// A layer's single step (fastrnn/functional.py) passes x [1, B, I] and its states [1, B, H]:
// the ops run on their [B, .] views and give the states and gradients back with the leading
// 1, so that the layer takes no views of its own, each a node of autograd's graph (four of
// them took 36 of an RNN layer's 147 us, T1 B1 H64, forward and backward, 2 threads, AMD
// EPYC). is_layer_step: whether x is such a step (checked: its states must be too).
inline bool is_layer_step(const char* op, const Tensor& x, const Tensor& h, const Tensor& c) {
  if (x.dim() != 3) return false;
  const auto leading_one = [](const Tensor& t) { return t.dim() == 3 && t.size(0) == 1; };
  TORCH_CHECK(leading_one(x) && leading_one(h) && (!c.defined() || leading_one(c)), op,
              ": a layer's step takes x [1, B, I] and states [1, B, H], got x ", x.sizes(),
              " and h ", h.sizes());
  return true;
}
inline Tensor step_rows(const Tensor& t) { return t.defined() && t.dim() == 3 ? t[0] : t; }
inline Tensor layer_step(const Tensor& t) { return t.dim() == 2 ? t.unsqueeze(0) : t; }

template <class Backend, class Cell>
std::tuple<Tensor, Tensor, Tensor, Tensor> forward(const Tensor& x, const Tensor& h,
                                                   const Tensor& c, const Tensor& w_ih,
                                                   const Tensor& w_hh, const Tensor& b_ih,
                                                   const Tensor& b_hh, bool save,
                                                   const Tensor& unit_params) {
  constexpr const char* op = "cell_forward";
  if (is_layer_step(op, x, h, c)) {
    const auto [y, h_new, c_new, saved] = forward<Backend, Cell>(
        x[0], h[0], step_rows(c), w_ih, w_hh, b_ih, b_hh, save, unit_params);
    return {layer_step(y), layer_step(h_new), layer_step(c_new), saved};
  }
  check_step<Cell>(op, x, h, c, w_ih, w_hh, b_ih, b_hh);
  // gx: [B, G*H] = x @ w_ih^T + b_ih, and + b_hh unless the cell adds b_hh to hh itself.
  const Tensor gx =
      Backend::input_product(x, w_ih, b_ih, Cell::kRecurrentBias ? Tensor() : b_hh);
  ForwardArgs a{gx, one_step(x.size(0)), h, c, w_hh, Tensor(),
                Cell::kRecurrentBias ? b_hh : Tensor(), false, save, {}};
  a.unit_params = unit_params;
  const auto r = op_entry::forward<Backend, Cell>(op, std::move(a));
  return {r.y, r.hn, Cell::kCellState ? r.cn : none_like(h), r.saved};
}

using BackwardTuple = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// grad_y: [B, H] or undefined. grad_sums: see BackwardArgs (the caller adds those sums
// that come back as other tensors), or null.
template <class Backend, class Cell>
BackwardTuple backward(const Tensor& grad_y, const Tensor& grad_h, const Tensor& grad_c,
                       const Tensor& x, const Tensor& h, const Tensor& c, const Tensor& w_ih,
                       const Tensor& w_hh, const Tensor& y, const Tensor& saved, bool has_bias,
                       bool input_grad, bool state_grad, bool weight_grad,
                       const Tensor& unit_params, const BackwardResult* grad_sums) {
  constexpr const char* op = "cell_backward";
  if (is_layer_step(op, x, h, c)) {
    auto r = backward<Backend, Cell>(step_rows(grad_y), step_rows(grad_h), step_rows(grad_c),
                                     x[0], h[0], step_rows(c), w_ih, w_hh, y[0], saved,
                                     has_bias, input_grad, state_grad, weight_grad, unit_params,
                                     grad_sums);
    auto& [grad_x, grad_h0, grad_c0, w_ih_grad, w_hh_grad, b_ih_grad, b_hh_grad, params] = r;
    return {layer_step(grad_x), layer_step(grad_h0), layer_step(grad_c0), w_ih_grad, w_hh_grad,
            b_ih_grad, b_hh_grad, params};
  }
  check_step<Cell>(op, x, h, c, w_ih, w_hh, Tensor(), Tensor());
  // [B, G*H] against [G*H, I] or [G*H, H]: the largest of the step's products
  const typename Backend::StepProducts scope(x.size(0) * w_ih.size(0) *
                                             std::max(w_ih.size(1), w_hh.size(1)));
  BackwardArgs a{grad_y, grad_h, grad_c, one_step(x.size(0)), h, c, w_hh, Tensor(), y, saved,
                 has_bias, false, {}};
  a.h0_grad = state_grad;
  a.weight_grad = weight_grad;
  a.unit_params = unit_params;
  a.x = x;
  a.w_ih = w_ih;
  a.input_grad = input_grad;
  a.grad_sums = weight_grad ? grad_sums : nullptr;
  const auto r = op_entry::backward<Backend, Cell>(op, std::move(a));
  // gx = x @ w_ih^T + b_ih (+ b_hh): the input side's gradients from grad_gx [B, G*H], where
  // the backend did not form them.
  Tensor grad_x = !input_grad        ? none_like(h)
                  : r.grad_x.defined() ? r.grad_x
                                       : Backend::input_grad(r.grad_gx, w_ih);
  Tensor grad_h0 = state_grad ? r.grad_h0 : none_like(h);
  Tensor grad_c0 = state_grad && Cell::kCellState ? r.grad_c0 : none_like(h);
  if (!weight_grad) return {grad_x, grad_h0, grad_c0, none_like(h), none_like(h),
                            none_like(h), none_like(h), none_like(h)};
  Tensor grad_w_ih =
      r.grad_w_ih.defined() ? r.grad_w_ih : Backend::weight_grad_product(r.grad_gx.t(), x);
  Tensor grad_b_ih = !has_bias             ? none_like(h)
                     : r.grad_b_ih.defined() ? r.grad_b_ih
                                             : r.grad_gx.sum(0);
  Tensor grad_b_hh =
      Cell::kRecurrentBias || r.grad_b_ih.defined() ? r.grad_b_hh : grad_b_ih.clone();
  Tensor grad_params = r.grad_unit_params.defined() ? r.grad_unit_params : none_like(h);
  return {grad_x, grad_h0, grad_c0, grad_w_ih, r.grad_w_hh, grad_b_ih, grad_b_hh, grad_params};
}

// The entry points: dispatch on the cell number to the cell's policy.
template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> cell_forward(
    int64_t cell, const Tensor& x, const Tensor& h, const optional<Tensor>& c,
    const Tensor& w_ih, const Tensor& w_hh, const optional<Tensor>& b_ih,
    const optional<Tensor>& b_hh, bool save, const optional<Tensor>& unit_params) {
  const WithoutAutocast no_autocast;
#define FASTRNN_CELL_FORWARD(Cell, NAME)                                                  \
  if (cell == static_cast<int64_t>(Cell::kKind)) {                                       \
    return forward<Backend, Cell>(x, h, c.value_or(Tensor()), w_ih, w_hh,                \
                                  b_ih.value_or(Tensor()), b_hh.value_or(Tensor()), save, \
                                  unit_params.value_or(Tensor()));                        \
  }
  FASTRNN_FOR_EACH_CELL(FASTRNN_CELL_FORWARD)
#undef FASTRNN_CELL_FORWARD
  TORCH_CHECK(false, "cell_forward: unknown cell number ", cell);
}

template <class Backend>
BackwardTuple cell_backward(int64_t cell, const optional<Tensor>& grad_y, const Tensor& grad_h,
                            const optional<Tensor>& grad_c, const Tensor& x, const Tensor& h,
                            const optional<Tensor>& c, const Tensor& w_ih, const Tensor& w_hh,
                            const Tensor& y, const Tensor& saved, bool has_bias,
                            bool input_grad, bool state_grad, bool weight_grad,
                            const optional<Tensor>& unit_params,
                            const BackwardResult* grad_sums) {
  const WithoutAutocast no_autocast;
#define FASTRNN_CELL_BACKWARD(Cell, NAME)                                                  \
  if (cell == static_cast<int64_t>(Cell::kKind)) {                                        \
    return backward<Backend, Cell>(grad_y.value_or(Tensor()), grad_h,                    \
                                   grad_c.value_or(Tensor()), x, h,                       \
                                   c.value_or(Tensor()), w_ih, w_hh, y, saved, has_bias,  \
                                   input_grad, state_grad, weight_grad,                   \
                                   unit_params.value_or(Tensor()), grad_sums);            \
  }
  FASTRNN_FOR_EACH_CELL(FASTRNN_CELL_BACKWARD)
#undef FASTRNN_CELL_BACKWARD
  TORCH_CHECK(false, "cell_backward: unknown cell number ", cell);
}

// The op cell_backward: without sums.
template <class Backend>
BackwardTuple cell_backward_op(int64_t cell, const optional<Tensor>& grad_y,
                               const Tensor& grad_h, const optional<Tensor>& grad_c,
                               const Tensor& x, const Tensor& h, const optional<Tensor>& c,
                               const Tensor& w_ih, const Tensor& w_hh, const Tensor& y,
                               const Tensor& saved, bool has_bias, bool input_grad,
                               bool state_grad, bool weight_grad,
                               const optional<Tensor>& unit_params) {
  return cell_backward<Backend>(cell, grad_y, grad_h, grad_c, x, h, c, w_ih, w_hh, y, saved,
                                has_bias, input_grad, state_grad, weight_grad, unit_params,
                                nullptr);
}

}  // namespace cell_entry

// cell_backward of the CPU backend (backend.cpp) with grad_sums: cell_entry::cell_backward
// for the hand-off of a loop's weight gradients from step to step (cell_autograd.cpp).
using CellBackwardWithSums = cell_entry::BackwardTuple(
    int64_t, const std::optional<at::Tensor>&, const at::Tensor&,
    const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&,
    const std::optional<at::Tensor>&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
    const at::Tensor&, bool, bool, bool, bool, const std::optional<at::Tensor>&,
    const BackwardResult*);
CellBackwardWithSums* cpu_cell_backward_with_sums();

template <class Backend>
void register_cell_ops(torch::Library& m) {
  m.impl("cell_forward", &cell_entry::cell_forward<Backend>);
  m.impl("cell_backward", &cell_entry::cell_backward_op<Backend>);
}

}  // namespace fastrnn
