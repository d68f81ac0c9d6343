// The clockwork RNN's ops on the CPU (schemas in ops.h): their checks, buffers and the
// walk (clockwork_walk.h) over the tanh Elman cell's policy.

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include "clockwork_walk.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;
using Cell = ClockworkCell;

// gx: one [n_i, k] per module, the input-side pre-activations of its active steps' rows in
// step order; h0: [B, H]; w_hh: [H, H] (only its allowed blocks read). Returns y [N, H],
// hn [B, H].
std::tuple<Tensor, Tensor> forward_op(at::TensorList gx, const Tensor& batch_sizes,
                                      const Tensor& h0, const Tensor& w_hh,
                                      c10::IntArrayRef periods, int64_t rows_of_y) {
  constexpr const char* op = "clockwork_forward";
  const WithoutAutocast no_autocast;
  const ClockworkArgs args = check_clockwork_forward(op, gx, batch_sizes, h0, w_hh, periods,
                                                     rows_of_y);
  const RecurrenceSizes& sz = args.size;
  const ClockworkModules& m = args.modules;
  const Schedule schedule(batch_sizes, false);
  std::vector<Tensor> parts;
  for (const Tensor& part : gx) parts.push_back(part.contiguous());
  const Tensor h0_c = h0.contiguous(), w = w_hh.contiguous();
  Tensor h = h0.clone(at::MemoryFormat::Contiguous);  // [B, H], rows updated step by step
  Tensor y = at::empty({sz.N, sz.H}, h0.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h0.scalar_type(), op, [&] {
    using T = scalar_t;
    std::vector<const T*> gx_p;
    for (const Tensor& part : parts) gx_p.push_back(part.data_ptr<T>());
    const ForwardState<T> st{nullptr, h0_c.data_ptr<T>(), w.data_ptr<T>(), nullptr, nullptr,
                             h.data_ptr<T>(), nullptr, y.data_ptr<T>(), nullptr, sz.N, sz.B,
                             sz.H, sz.P};
    clockwork_forward<Cell>(st, schedule, w, m, gx_p);
  });
  return {y, h};
}

// Returns grad_gx (one [n_i, k] per module, as forward's gx), grad_h0 [B, H], grad_w_hh
// [H, H] (zero outside the allowed blocks).
std::tuple<std::vector<Tensor>, Tensor, Tensor> backward_op(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& batch_sizes, const Tensor& h0,
    const Tensor& w_hh, const Tensor& y, c10::IntArrayRef periods, c10::IntArrayRef gx_rows) {
  constexpr const char* op = "clockwork_backward";
  const WithoutAutocast no_autocast;
  const ClockworkArgs args = check_clockwork_backward(op, grad_y, grad_hn, batch_sizes, h0, w_hh,
                                                      y, periods, gx_rows);
  const RecurrenceSizes& sz = args.size;
  const ClockworkModules& m = args.modules;
  const std::vector<int64_t>& rows = args.rows;
  const Schedule schedule(batch_sizes, false);
  const Tensor gy = grad_y.contiguous(), h0_c = h0.contiguous(), w = w_hh.contiguous();
  const Tensor y_c = y.contiguous();
  Tensor dh = grad_hn.clone(at::MemoryFormat::Contiguous);  // [B, H] w.r.t. the h state
  Tensor dx = at::empty({sz.B, sz.H}, y.options());          // a step's gate gradients
  std::vector<Tensor> grad_gx;
  for (int64_t i = 0; i < m.count(); ++i) grad_gx.push_back(at::empty({rows[i], m.k}, y.options()));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), op, [&] {
    using T = scalar_t;
    std::vector<T*> grad_gx_p;
    for (Tensor& part : grad_gx) grad_gx_p.push_back(part.data_ptr<T>());
    const BackwardState<T> st{gy.data_ptr<T>(), h0_c.data_ptr<T>(), nullptr, w.data_ptr<T>(),
                              y_c.data_ptr<T>(), nullptr, nullptr, dh.data_ptr<T>(), nullptr,
                              dx.data_ptr<T>(), dx.data_ptr<T>(), nullptr, sz.N, sz.B, sz.H, sz.P};
    clockwork_backward<Cell>(st, schedule, w, m, grad_gx_p, rows);
  });
  const Tensor grad_w = clockwork_weight_grad(grad_gx, y_c, h0_c, schedule, m);
  return {grad_gx, dh, grad_w.to(w.scalar_type())};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("clockwork_forward", &forward_op);
  m.impl("clockwork_backward", &backward_op);
}

}  // namespace cpu
}  // namespace fastrnn
