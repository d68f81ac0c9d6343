#pragma once
// The clockwork RNN's input side, through ATen on any device: module i's input product
// x_t @ w_ih[i]^T + bias[i] is formed only at its active steps, so for its rows of x only.
// The walks that form it per step themselves (cpu/clockwork_fused.h) take x whole; the
// others take one [n_i, k] per module from here, and give back one gradient each.
// Shapes: x [N, I], w_ih [H, I], bias [H]; module i's units [i*k, (i+1)*k).

#include <ATen/ATen.h>

#include <vector>

#include "clockwork.h"

namespace fastrnn {

// The packed rows of each module's active steps, [n_i] int64 on device in step order, or
// undefined where the module is active at every step (period 1): every row.
inline std::vector<at::Tensor> clockwork_active_rows(const Schedule& schedule,
                                                     const ClockworkModules& m,
                                                     const at::Device& device) {
  std::vector<at::Tensor> index(m.count());
  for (int64_t i = 0; i < m.count(); ++i) {
    if (m.periods[i] == 1) continue;
    std::vector<int64_t> rows;
    for (int64_t s = 0; s < schedule.steps(); s += m.periods[i]) {
      for (int64_t r = 0; r < schedule.rows(s); ++r) rows.push_back(schedule.first_row(s) + r);
    }
    index[i] = index_on(rows, device);
  }
  return index;
}

// Each module's rows of x, [n_i, I]: x itself, or gathered (rows as above) into tensors
// from empty.
inline std::vector<at::Tensor> clockwork_module_inputs(const at::Tensor& x,
                                                       const std::vector<at::Tensor>& rows,
                                                       EmptyTensor empty = fresh_empty) {
  std::vector<at::Tensor> inputs;
  for (const at::Tensor& index : rows) {
    inputs.push_back(index.defined() ? gather_rows(x, index, empty) : x);
  }
  return inputs;
}

// Module i's slice of a per-unit tensor's first dimension: [k, ...].
inline at::Tensor module_part(const at::Tensor& t, const ClockworkModules& m, int64_t i) {
  return t.narrow(0, i * m.k, m.k);
}

// gx: one [n_i, k] per module, inputs[i] @ w_ih[i]^T + bias[i].
inline std::vector<at::Tensor> clockwork_input_products(const std::vector<at::Tensor>& inputs,
                                                        const at::Tensor& w_ih,
                                                        const at::Tensor& bias,
                                                        const ClockworkModules& m) {
  std::vector<at::Tensor> gx;
  for (int64_t i = 0; i < m.count(); ++i) {
    const at::Tensor w = module_part(w_ih, m, i).t();
    gx.push_back(bias.defined() ? at::addmm(module_part(bias, m, i), inputs[i], w)
                                : at::mm(inputs[i], w));
  }
  return gx;
}

// The gradients w.r.t. w_ih [H, I] and bias [H], in their dtype (summed in the
// accumulation type), from grad_gx (one [n_i, k] per module) and inputs (as above).
inline std::tuple<at::Tensor, at::Tensor> clockwork_input_weight_grads(
    const std::vector<at::Tensor>& grad_gx, const std::vector<at::Tensor>& inputs,
    const at::Tensor& w_ih, const ClockworkModules& m) {
  const at::ScalarType acc = at::toOpMathType(w_ih.scalar_type());
  at::Tensor grad_w = at::empty(w_ih.sizes(), w_ih.options().dtype(acc));
  at::Tensor grad_b = at::empty({w_ih.size(0)}, w_ih.options().dtype(acc));
  for (int64_t i = 0; i < m.count(); ++i) {
    const at::Tensor g = grad_gx[i].to(acc);
    at::Tensor w_part = module_part(grad_w, m, i), b_part = module_part(grad_b, m, i);
    at::mm_out(w_part, g.t(), inputs[i].to(acc));
    at::sum_out(b_part, g, 0);
  }
  return {grad_w.to(w_ih.scalar_type()), grad_b.to(w_ih.scalar_type())};
}

// The gradient w.r.t. x [N, I]: each module's grad_gx[i] @ w_ih[i] added at its rows.
inline at::Tensor clockwork_input_grad(const std::vector<at::Tensor>& grad_gx,
                                       const at::Tensor& x, const at::Tensor& w_ih,
                                       const std::vector<at::Tensor>& rows,
                                       const ClockworkModules& m) {
  at::Tensor grad_x = at::zeros(x.sizes(), x.options());
  for (int64_t i = 0; i < m.count(); ++i) {
    const at::Tensor part = at::mm(grad_gx[i], module_part(w_ih, m, i));  // [n_i, I]
    if (rows[i].defined()) {
      grad_x.index_add_(0, rows[i], part);
    } else {
      grad_x.add_(part);
    }
  }
  return grad_x;
}

}  // namespace fastrnn
