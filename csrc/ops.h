#pragma once
// The operator schemas, declared once (ops.cpp defines the fastrnn library with them), and
// each op's C++ entry point, written once for every backend: it maps the schema's arguments
// onto ForwardArgs/BackwardArgs (common/recurrence.h), checks them and calls the backend's
// walk for the cell. A backend registers all of them with register_ops<Backend>, where
//   Backend::forward<Cell>(const ForwardArgs&) -> ForwardResult
//   Backend::backward<Cell>(const BackwardArgs&) -> BackwardResult
// and Cell is a cell policy (csrc/cells/policy.h). The layers, and how to add a cell:
// docs/architecture.md.
//
// Layout shared by every op: the sequence is packed, rows of time step t follow those of
// t-1 and batch_sizes ([T], int64, CPU, non-increasing) says how many rows each step has;
// a dense [T, B, *] input is the case where every batch size is B. gx holds the input-side
// pre-activations, x @ W_ih^T + biases, for all rows at once: [N, gates*H].
//
// save: whether forward writes `saved`, the per-row gate values its backward reads. Without
// it (inference) `saved` comes back empty, [0, k*H], and the step costs less memory traffic.

#include <torch/library.h>

#include "cells/gru.h"
#include "cells/layer_norm.h"
#include "cells/leaky.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "common/checks.h"

namespace fastrnn {

inline void define_ops(torch::Library& m) {
  m.def(
      "lstm_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_hh, "
      "Tensor? w_hr, bool reverse, bool save) -> (Tensor y, Tensor hn, Tensor cn, Tensor saved)");
  // The LSTM from its input rows (x [N, I], w_ih [4H, I], bias [4H] = b_ih + b_hh or None)
  // instead of gx: lstm_forward's results. The CPU forms the input product inside its fused
  // walk, where the walk reads each step's x rows next to its h rows (cpu/backend.cpp);
  // elsewhere gx first. Its autograd: lstm_backward, then the input product's gradients.
  m.def(
      "lstm_input_forward(Tensor x, Tensor w_ih, Tensor? bias, Tensor batch_sizes, Tensor h0, "
      "Tensor c0, Tensor w_hh, Tensor? w_hr, bool reverse, bool save) "
      "-> (Tensor y, Tensor hn, Tensor cn, Tensor saved)");
  m.def(
      "lstm_backward(Tensor grad_y, Tensor grad_hn, Tensor grad_cn, Tensor batch_sizes, "
      "Tensor h0, Tensor c0, Tensor w_hh, Tensor? w_hr, Tensor y, Tensor saved, bool reverse) "
      "-> (Tensor grad_gx, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_hh, Tensor grad_w_hr)");
  // The LSTM's variants (cells/lstm.h, cells/layer_norm.h): params the peepholes [K*H]
  // (K = 3, p_i p_f p_o; 2 with coupled gates, p_i p_o), or with layer_norm the recurrent
  // side's norms [10*H] (gamma_h, beta_h [4H], gamma_c, beta_c [H]), or none; coupled: the
  // input and forget gates coupled (gate blocks i, g, o: gx [N, 3H], w_hh [3H, P]). Layer
  // norm takes neither peepholes nor coupled gates. None: the plain LSTM.
  m.def(
      "lstm_variant_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_hh, "
      "Tensor? w_hr, Tensor? params, bool coupled, bool layer_norm, bool reverse, bool save) "
      "-> (Tensor y, Tensor hn, Tensor cn, Tensor saved)");
  m.def(
      "lstm_variant_backward(Tensor grad_y, Tensor grad_hn, Tensor grad_cn, Tensor batch_sizes, "
      "Tensor h0, Tensor c0, Tensor w_hh, Tensor? w_hr, Tensor? params, bool coupled, "
      "bool layer_norm, Tensor y, Tensor saved, bool reverse) -> (Tensor grad_gx, "
      "Tensor grad_h0, Tensor grad_c0, Tensor grad_w_hh, Tensor grad_w_hr, Tensor grad_params)");
  // The layer-normalised GRU (cells/layer_norm.h): norms [6*H] (gamma_h, beta_h [3H]); none:
  // the plain GRU.
  m.def(
      "gru_variant_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor w_hh, Tensor? b_hh, "
      "Tensor? norms, bool reverse, bool save) -> (Tensor y, Tensor hn, Tensor saved)");
  m.def(
      "gru_variant_backward(Tensor grad_y, Tensor grad_hn, Tensor batch_sizes, Tensor h0, "
      "Tensor w_hh, Tensor? norms, Tensor y, Tensor saved, bool has_bias, bool reverse) "
      "-> (Tensor grad_gx, Tensor grad_h0, Tensor grad_w_hh, Tensor grad_b_hh, "
      "Tensor grad_norms)");
  m.def(
      "gru_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor w_hh, Tensor? b_hh, "
      "bool reverse, bool save) -> (Tensor y, Tensor hn, Tensor saved)");
  m.def(
      "gru_backward(Tensor grad_y, Tensor grad_hn, Tensor batch_sizes, Tensor h0, Tensor w_hh, "
      "Tensor y, Tensor saved, bool has_bias, bool reverse) "
      "-> (Tensor grad_gx, Tensor grad_h0, Tensor grad_w_hh, Tensor grad_b_hh)");
  m.def(
      "rnn_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor w_hh, bool relu, "
      "bool reverse) -> (Tensor y, Tensor hn)");
  m.def(
      "rnn_backward(Tensor grad_y, Tensor grad_hn, Tensor batch_sizes, Tensor h0, Tensor w_hh, "
      "Tensor y, bool relu, bool reverse) -> (Tensor grad_gx, Tensor grad_h0, Tensor grad_w_hh)");
  // The leaky tanh of a reservoir (cells/leaky.h), forward only: leak [H] per unit; the
  // recurrent weight [H, H] dense, or (on the CPU) in CSR form.
  m.def(
      "leaky_forward(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor w_hh, Tensor leak, "
      "bool reverse) -> (Tensor y, Tensor hn)");
  m.def(
      "leaky_forward_csr(Tensor gx, Tensor batch_sizes, Tensor h0, Tensor crow_indices, "
      "Tensor col_indices, Tensor values, Tensor leak, bool reverse) -> (Tensor y, Tensor hn)");
  // The clockwork RNN (the tanh cell, modules of H / len(periods) units, module i active at
  // step t when t % periods[i] == 0): cpu/clockwork.cpp and cuda/clockwork_cuda.cpp
  // register it, with the checks of common/clockwork.h. x [N, I]: the layer's input rows;
  // w_ih [H, I], bias [H] (b_ih + b_hh) or None; module i's input product is formed only at
  // its active steps. grad_bias: [H], the sum of the gate gradients, returned whether or
  // not a bias was given; grad_x: [0, I] unless input_grad.
  m.def(
      "clockwork_forward(Tensor x, Tensor w_ih, Tensor? bias, Tensor batch_sizes, Tensor h0, "
      "Tensor w_hh, int[] periods) -> (Tensor y, Tensor hn)");
  m.def(
      "clockwork_backward(Tensor grad_y, Tensor grad_hn, Tensor x, Tensor w_ih, "
      "Tensor batch_sizes, Tensor h0, Tensor w_hh, Tensor y, int[] periods, bool input_grad) "
      "-> (Tensor grad_x, Tensor grad_w_ih, Tensor grad_bias, Tensor grad_h0, "
      "Tensor grad_w_hh)");
  // input [N, K] @ weight^T + bias: weight [M, K], bias [M] or None -> [N, M], through
  // oneDNN on the CPU (cpu/linear.cpp), for the layers' input products where it pays.
  m.def("linear(Tensor input, Tensor weight, Tensor? bias) -> Tensor");
  // self in dtype, a new contiguous tensor, from the walks' buffer pool on the CPU
  // (cpu/convert.cpp), for the input products' results and gradients under autocast.
  m.def("convert(Tensor self, ScalarType dtype) -> Tensor");
}

// Whether the CPU's fused walks multiply a bfloat16 w_hh in bfloat16 (cpu/panel_operands.h:
// built for AVX512-BF16); else they read it converted to float (fastrnn._C.BFLOAT16_PRODUCTS).
bool bfloat16_recurrent_products();

namespace op_entry {

using at::Tensor;
using c10::optional;

// Checks the arguments (in the caller's layout), then runs the walk on contiguous copies.
template <class Backend, class Cell>
ForwardResult forward(const char* op, ForwardArgs a) {
  const WithoutAutocast no_autocast;
  check_no_forward_ad(op, a.gx, a.h0, a.c0, a.w_hh, a.w_hr, a.b_hh, a.unit_params, a.x,
                      a.w_ih, a.b_ih);
  a.size = check_forward<Cell>(op, a);
  a.op = op;
  for (Tensor* t : {&a.gx, &a.h0, &a.c0, &a.w_hh, &a.w_hr, &a.b_hh, &a.unit_params, &a.x,
                    &a.w_ih, &a.b_ih}) {
    if (t->defined() && t->layout() == at::kStrided) *t = t->contiguous();
  }
  if (!Backend::kBfloat16Products && bfloat16_products(a.h0, a.w_hh)) {
    a.w_hh = a.w_hh.to(a.h0.scalar_type());
  }
  if (a.x.defined() && !Backend::kFoldsInputProduct) {  // [N, G*H]
    a.gx = a.b_ih.defined() ? at::addmm(a.b_ih, a.x, a.w_ih.t()) : at::mm(a.x, a.w_ih.t());
    a.x = a.w_ih = a.b_ih = Tensor();
  }
  return Backend::template forward<Cell>(a);
}

template <class Backend, class Cell>
BackwardResult backward(const char* op, BackwardArgs a) {
  static_assert(!Cell::kForwardOnly, "a forward-only cell has no backward");
  const WithoutAutocast no_autocast;
  a.size = check_backward<Cell>(op, a);
  a.op = op;
  for (Tensor* t : {&a.grad_y, &a.grad_hn, &a.grad_cn, &a.h0, &a.c0, &a.w_hh, &a.w_hr, &a.y,
                    &a.saved, &a.unit_params}) {
    if (t->defined()) *t = t->contiguous();
  }
  const auto w_hh_dtype = a.w_hh.scalar_type();  // grad_w_hh's
  if (!Backend::kBfloat16Products && bfloat16_products(a.h0, a.w_hh)) {
    a.w_hh = a.w_hh.to(a.h0.scalar_type());
  }
  BackwardResult r = Backend::template backward<Cell>(a);
  if (r.grad_w_hh.defined()) r.grad_w_hh = r.grad_w_hh.to(w_hh_dtype);
  if constexpr (Cell::kRowWise) {
    if (a.weight_grad) r.grad_unit_params = row_params_grad(r.params_grad, a.y.scalar_type());
  } else if constexpr (Cell::kUnitParams > 0) {
    if (a.weight_grad) r.grad_unit_params = unit_params_grad<Cell>(a, r.grad_gx);
  }
  return r;
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_forward(
    const Tensor& gx, const Tensor& batch_sizes, const Tensor& h0, const Tensor& c0,
    const Tensor& w_hh, const optional<Tensor>& w_hr, bool reverse, bool save) {
  const auto r = forward<Backend, lstm::Policy>(
      "lstm_forward", {gx, batch_sizes, h0, c0, w_hh, w_hr.value_or(Tensor()), Tensor(),
                       reverse, save, {}});
  return {r.y, r.hn, r.cn, r.saved};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_input_forward(
    const Tensor& x, const Tensor& w_ih, const optional<Tensor>& bias,
    const Tensor& batch_sizes, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
    const optional<Tensor>& w_hr, bool reverse, bool save) {
  ForwardArgs a{Tensor(), batch_sizes, h0, c0, w_hh, w_hr.value_or(Tensor()), Tensor(),
                reverse, save, {}};
  a.x = x;
  a.w_ih = w_ih;
  a.b_ih = bias.value_or(Tensor());
  const auto r = forward<Backend, lstm::Policy>("lstm_input_forward", a);
  return {r.y, r.hn, r.cn, r.saved};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& grad_cn,
    const Tensor& batch_sizes, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
    const optional<Tensor>& w_hr, const Tensor& y, const Tensor& saved, bool reverse) {
  const auto r = backward<Backend, lstm::Policy>(
      "lstm_backward", {grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh,
                        w_hr.value_or(Tensor()), y, saved, false, reverse, {}});
  return {r.grad_gx, r.grad_h0, r.grad_c0, r.grad_w_hh, r.grad_w_hr};
}

// fn(Cell{}) for the LSTM variant with or without peepholes and coupled gates, or with
// layer norm, after the checks that name the variant's gate blocks and its params (the
// generic ones follow).
template <class F>
auto with_lstm_variant(const char* op, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
                       const Tensor& params, bool coupled, bool layer_norm, const F& fn) {
  const auto check = [&](auto cell) {
    constexpr int G = decltype(cell)::kGates;
    TORCH_CHECK(c0.dim() == 2 && w_hh.dim() == 2 && w_hh.size(0) == G * c0.size(1), op,
                ": w_hh must be [", BlocksOfH{G}, ", P] with H = c0.size(1) (gate blocks ",
                coupled ? "i, g, o with coupled gates" : "i, f, g, o", "), got ", w_hh.sizes(),
                " and c0 ", c0.sizes());
    check_unit_params<decltype(cell)>(op, h0, params, c0.size(1),
                                      layer_norm ? "norms" : "peepholes");
    return fn(cell);
  };
  if (layer_norm) {
    TORCH_CHECK(!coupled, op, ": layer_norm does not combine with coupled gates");
    return check(ln::LstmPolicy{});
  }
  if (params.defined()) {
    return coupled ? check(lstm::PeepholeCoupledPolicy{}) : check(lstm::PeepholePolicy{});
  }
  return coupled ? check(lstm::CoupledPolicy{}) : check(lstm::Policy{});
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_variant_forward(
    const Tensor& gx, const Tensor& batch_sizes, const Tensor& h0, const Tensor& c0,
    const Tensor& w_hh, const optional<Tensor>& w_hr, const optional<Tensor>& params,
    bool coupled, bool layer_norm, bool reverse, bool save) {
  ForwardArgs a{gx, batch_sizes, h0, c0, w_hh, w_hr.value_or(Tensor()), Tensor(), reverse,
                save, {}};
  a.unit_params = params.value_or(Tensor());
  const auto r = with_lstm_variant("lstm_variant_forward", h0, c0, w_hh, a.unit_params, coupled,
                                   layer_norm, [&](auto cell) {
    return forward<Backend, decltype(cell)>("lstm_variant_forward", a);
  });
  return {r.y, r.hn, r.cn, r.saved};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> lstm_variant_backward(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& grad_cn,
    const Tensor& batch_sizes, const Tensor& h0, const Tensor& c0, const Tensor& w_hh,
    const optional<Tensor>& w_hr, const optional<Tensor>& params, bool coupled,
    bool layer_norm, const Tensor& y, const Tensor& saved, bool reverse) {
  BackwardArgs a{grad_y, grad_hn, grad_cn, batch_sizes, h0, c0, w_hh, w_hr.value_or(Tensor()),
                 y, saved, false, reverse, {}};
  a.unit_params = params.value_or(Tensor());
  const auto r = with_lstm_variant("lstm_variant_backward", h0, c0, w_hh, a.unit_params,
                                   coupled, layer_norm, [&](auto cell) {
    return backward<Backend, decltype(cell)>("lstm_variant_backward", a);
  });
  const Tensor none = at::empty({0}, y.options());
  return {r.grad_gx, r.grad_h0, r.grad_c0, r.grad_w_hh, r.grad_w_hr,
          r.grad_unit_params.defined() ? r.grad_unit_params : none};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor> gru_forward(const Tensor& gx, const Tensor& batch_sizes,
                                               const Tensor& h0, const Tensor& w_hh,
                                               const optional<Tensor>& b_hh, bool reverse,
                                               bool save) {
  const auto r = forward<Backend, gru::Policy>(
      "gru_forward", {gx, batch_sizes, h0, Tensor(), w_hh, Tensor(), b_hh.value_or(Tensor()),
                      reverse, save, {}});
  return {r.y, r.hn, r.saved};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor> gru_backward(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& batch_sizes, const Tensor& h0,
    const Tensor& w_hh, const Tensor& y, const Tensor& saved, bool has_bias, bool reverse) {
  const auto r = backward<Backend, gru::Policy>(
      "gru_backward", {grad_y, grad_hn, Tensor(), batch_sizes, h0, Tensor(), w_hh, Tensor(), y,
                       saved, has_bias, reverse, {}});
  return {r.grad_gx, r.grad_h0, r.grad_w_hh, r.grad_b_hh};
}

// fn(Cell{}): the GRU, or the layer-normalised GRU when norms are given (checked first, by
// their name).
template <class F>
auto with_gru_variant(const char* op, const Tensor& h0, const Tensor& norms, const F& fn) {
  if (!norms.defined()) return fn(gru::Policy{});
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D [B, H], got ", h0.sizes());
  check_unit_params<ln::GruPolicy>(op, h0, norms, h0.size(1), "norms");
  return fn(ln::GruPolicy{});
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor> gru_variant_forward(
    const Tensor& gx, const Tensor& batch_sizes, const Tensor& h0, const Tensor& w_hh,
    const optional<Tensor>& b_hh, const optional<Tensor>& norms, bool reverse, bool save) {
  ForwardArgs a{gx, batch_sizes, h0, Tensor(), w_hh, Tensor(), b_hh.value_or(Tensor()),
                reverse, save, {}};
  a.unit_params = norms.value_or(Tensor());
  const auto r = with_gru_variant("gru_variant_forward", h0, a.unit_params, [&](auto cell) {
    return forward<Backend, decltype(cell)>("gru_variant_forward", a);
  });
  return {r.y, r.hn, r.saved};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_variant_backward(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& batch_sizes, const Tensor& h0,
    const Tensor& w_hh, const optional<Tensor>& norms, const Tensor& y, const Tensor& saved,
    bool has_bias, bool reverse) {
  BackwardArgs a{grad_y, grad_hn, Tensor(), batch_sizes, h0, Tensor(), w_hh, Tensor(), y,
                 saved, has_bias, reverse, {}};
  a.unit_params = norms.value_or(Tensor());
  const auto r = with_gru_variant("gru_variant_backward", h0, a.unit_params, [&](auto cell) {
    return backward<Backend, decltype(cell)>("gru_variant_backward", a);
  });
  const Tensor none = at::empty({0}, y.options());
  return {r.grad_gx, r.grad_h0, r.grad_w_hh, r.grad_b_hh,
          r.grad_unit_params.defined() ? r.grad_unit_params : none};
}

// The RNN saves nothing but y, so its forward always "saves".
template <class Backend>
std::tuple<Tensor, Tensor> rnn_forward(const Tensor& gx, const Tensor& batch_sizes,
                                       const Tensor& h0, const Tensor& w_hh, bool relu,
                                       bool reverse) {
  const ForwardArgs a{gx, batch_sizes, h0, Tensor(), w_hh, Tensor(), Tensor(), reverse, true, {}};
  const auto r = relu ? forward<Backend, rnn::Policy<true>>("rnn_forward", a)
                      : forward<Backend, rnn::Policy<false>>("rnn_forward", a);
  return {r.y, r.hn};
}

template <class Backend>
std::tuple<Tensor, Tensor, Tensor> rnn_backward(const Tensor& grad_y, const Tensor& grad_hn,
                                                const Tensor& batch_sizes, const Tensor& h0,
                                                const Tensor& w_hh, const Tensor& y, bool relu,
                                                bool reverse) {
  const BackwardArgs a{grad_y, grad_hn, Tensor(), batch_sizes, h0, Tensor(), w_hh, Tensor(),
                       y, Tensor(), false, reverse, {}};
  const auto r = relu ? backward<Backend, rnn::Policy<true>>("rnn_backward", a)
                      : backward<Backend, rnn::Policy<false>>("rnn_backward", a);
  return {r.grad_gx, r.grad_h0, r.grad_w_hh};
}

// The leaky cell's forward, as op `op`.
template <class Backend>
std::tuple<Tensor, Tensor> leaky(const char* op, const Tensor& gx, const Tensor& batch_sizes,
                                 const Tensor& h0, const Tensor& w_hh, const Tensor& leak,
                                 bool reverse) {
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D [B, H], got ", h0.sizes());
  check_arg(op, h0, leak, "leak", {h0.size(1)}, "[H]");
  ForwardArgs a{gx, batch_sizes, h0, Tensor(), w_hh, Tensor(), Tensor(), reverse, false, {}};
  a.unit_params = leak;
  const auto r = forward<Backend, leaky::Policy>(op, a);
  return {r.y, r.hn};
}

template <class Backend>
std::tuple<Tensor, Tensor> leaky_forward(const Tensor& gx, const Tensor& batch_sizes,
                                         const Tensor& h0, const Tensor& w_hh, const Tensor& leak,
                                         bool reverse) {
  TORCH_CHECK(w_hh.layout() == at::kStrided, "leaky_forward: w_hh must be strided, got ",
              w_hh.layout(), " (leaky_forward_csr takes a CSR weight's parts)");
  return leaky<Backend>("leaky_forward", gx, batch_sizes, h0, w_hh, leak, reverse);
}

// The same with w_hh given by its CSR parts ([H, H] with H = h0.size(1)); the CPU
// backend registers it (its sparse walk reads them).
template <class Backend>
std::tuple<Tensor, Tensor> leaky_forward_csr(const Tensor& gx, const Tensor& batch_sizes,
                                             const Tensor& h0, const Tensor& crow,
                                             const Tensor& col, const Tensor& values,
                                             const Tensor& leak, bool reverse) {
  constexpr const char* op = "leaky_forward_csr";
  TORCH_CHECK(h0.dim() == 2, op, ": h0 must be 2-D [B, H], got ", h0.sizes());
  const int64_t H = h0.size(1);
  return leaky<Backend>(op, gx, batch_sizes, h0, csr_weight(op, h0, crow, col, values, H, H),
                        leak, reverse);
}

}  // namespace op_entry

// Registers every op of define_ops on `m` (a TORCH_LIBRARY_IMPL block) with Backend's walks.
template <class Backend>
void register_ops(torch::Library& m) {
  m.impl("lstm_forward", &op_entry::lstm_forward<Backend>);
  m.impl("lstm_input_forward", &op_entry::lstm_input_forward<Backend>);
  m.impl("lstm_backward", &op_entry::lstm_backward<Backend>);
  m.impl("lstm_variant_forward", &op_entry::lstm_variant_forward<Backend>);
  m.impl("lstm_variant_backward", &op_entry::lstm_variant_backward<Backend>);
  m.impl("gru_forward", &op_entry::gru_forward<Backend>);
  m.impl("gru_backward", &op_entry::gru_backward<Backend>);
  m.impl("gru_variant_forward", &op_entry::gru_variant_forward<Backend>);
  m.impl("gru_variant_backward", &op_entry::gru_variant_backward<Backend>);
  m.impl("rnn_forward", &op_entry::rnn_forward<Backend>);
  m.impl("rnn_backward", &op_entry::rnn_backward<Backend>);
  m.impl("leaky_forward", &op_entry::leaky_forward<Backend>);
}

}  // namespace fastrnn
