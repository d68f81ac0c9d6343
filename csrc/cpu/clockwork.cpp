// The clockwork RNN's ops on the CPU (schemas in ops.h): their checks, buffers and the
// walk over the tanh Elman cell's policy: fused (clockwork_fused.h) in float and double up
// to a batch size, from a few rows per step with the input products and the input's
// gradient formed step by step in it; else each module's input product for its active rows
// (common/clockwork_inputs.h), then one BLAS product per step and module
// (clockwork_walk.h).

#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <limits>

#include "../common/clockwork_inputs.h"
#include "clockwork_fused.h"
#include "clockwork_weight_grads.h"

namespace fastrnn {
namespace cpu {
namespace {

using at::Tensor;
using Cell = ClockworkCell;

// When the walk is fused, and how (fused_split.h): up to 512 rows, split by rows from 4
// rows per thread whatever the weight's size. Beyond 256 rows, auto (then BLAS) vs fused,
// in-process shuffled, median of 5, ms, forward then forward+backward: T64 H256 B384 27.5
// vs 22.5, 67.9 vs 68.2; B512 43.3 vs 38.7, 128 vs 116; T32 H512 B512 59.7 vs 54.7, 154 vs
// 156; T32 H256 B1024 44.4 vs 39.4, 124 vs 118. Measured with periods 1, 2, 4, 8, T = 256
// (64 from B = 128), I = H, 2 threads, AMD EPYC, in-process interleaved, median of 7, ms,
// BLAS walk / fused by units / fused by rows, inference then forward+backward:
//   H256 B1 0.87 / 0.65 / 0.78, 2.36 / 1.97 / 2.23; B8 3.80 / 1.95 / 1.84, 9.67 / 8.39 /
//   7.79; B32 8.61 / 7.14 / 6.30, 32.2 / 29.1 / 26.9; B64 19.2 / 13.8 / 12.9, 61.8 / 66.2
//   / 58.6; B128 6.88 / 6.98 / 7.92, 28.5 / 28.2 / 29.6; B256 13.5 / 15.1 / 12.8, 63.4 /
//   62.2 / 59.7; H512 B32 33.3 / 28.7 / 23.7, 124 / 113 / 95; B128 23.2 / 22.8 / 21.7, 115
//   / 118 / 99; H1024 B8 31.7 / 22.4 / 21.2, 95 / 78 / 79; B32 111 / 101 / 84, 369 / 335
//   / 305. Again at H256: B128 7.17 / 7.24 / 6.75, 26.6 / 27.6 / 25.5; B192 11.2 / 11.3 /
//   10.3, 38.8 / 39.0 / 38.0.
constexpr FusedPolicy kFused{512, 4, std::numeric_limits<int64_t>::max()};

// From how many rows per step the fused walk forms the input products and the input's
// gradient itself; below, each module's input product is one product over its rows before
// the walk, and the input's gradient one after it (each step would read w_ih's panels
// whole for a row or two). Periods 1, 2, 4, 8, T = 256, 2 threads, AMD EPYC, in-process
// shuffled, median of 9, ms, in the walk / before it, inference then forward+backward:
//   I = H = 256: B1 0.61 / 0.53, 1.61 / 1.56; B2 0.63 / 0.67, 2.03 / 2.13; B4 0.89 / 1.02,
//   3.30 / 3.95; B8 1.57 / 1.81, 6.34 / 7.71; B32 5.75 / 7.58, 22.3 / 28.4;
//   I = 1024, H = 256: B1 1.09 / 0.79, 3.51 / 2.84; B2 1.36 / 1.24, 5.20 / 5.06; B4 2.24
//   / 2.67, 8.81 / 9.23; B8 3.64 / 4.38, 15.2 / 21.1; B32 13.1 / 19.3, 62.3 / 96.4;
//   I = 64, H = 1024: B1 4.50 / 4.60, 13.1 / 12.8; B4 8.49 / 8.83, 26.3 / 27.2; B32 40.5
//   / 42.8, 143 / 146.
constexpr int64_t kInWalkInputMinRows = 4;

// The fused walk's state types.
constexpr bool fusable(at::ScalarType dtype) {
  return dtype == at::kFloat || dtype == at::kDouble;
}
template <typename T>
constexpr bool kFusable = fusable(c10::CppTypeToScalarType<T>::value);

// The walk for a state of state's dtype and B rows (kNone: one BLAS product per step and
// module).
FusedSplit walk_split(const Tensor& state, int64_t B, const Tensor& w_hh) {
  if (!fusable(state.scalar_type())) return FusedSplit::kNone;
  return fused_split(kFused, 0, B, w_hh.nbytes());  // no least number of steps
}

// x: [N, I]; w_ih: [H, I]; bias: [H] or none; h0: [B, H]; w_hh: [H, H] (only its allowed
// blocks read). Returns y [N, H], hn [B, H].
std::tuple<Tensor, Tensor> forward_op(const Tensor& x, const Tensor& w_ih,
                                      const std::optional<Tensor>& bias,
                                      const Tensor& batch_sizes, const Tensor& h0,
                                      const Tensor& w_hh, c10::IntArrayRef periods) {
  constexpr const char* op = "clockwork_forward";
  const WithoutAutocast no_autocast;
  const ClockworkInputArgs args = check_clockwork_forward(
      op, x, w_ih, bias.value_or(Tensor()), batch_sizes, h0, w_hh, periods);
  const RecurrenceSizes& sz = args.size;
  const ClockworkModules& m = args.modules;
  const Schedule schedule(batch_sizes, false);
  const Tensor h0_c = h0.contiguous(), w = w_hh.contiguous(), x_c = x.contiguous();
  const Tensor w_ih_c = w_ih.contiguous(), b = bias ? bias->contiguous() : Tensor();
  const FusedSplit split = walk_split(h0, sz.B, w);
  const bool in_walk = split != FusedSplit::kNone && sz.B >= kInWalkInputMinRows;
  std::vector<Tensor> gx;  // one [n_i, k] per module, unless the walk forms them
  if (!in_walk) {
    const auto inputs = clockwork_module_inputs(
        x_c, clockwork_active_rows(schedule, m, x.device()), walk_buffer);
    for (const Tensor& part : clockwork_input_products(inputs, w_ih_c, b, m)) {
      gx.push_back(part.contiguous());
    }
  }
  Tensor h = h0.clone(at::MemoryFormat::Contiguous);  // [B, H], rows updated step by step
  Tensor y = walk_buffer({sz.N, sz.H}, h0.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, h0.scalar_type(), op, [&] {
    using T = scalar_t;
    const ForwardState<T> st{nullptr, h0_c.data_ptr<T>(), w.data_ptr<T>(), nullptr, nullptr,
                             h.data_ptr<T>(), nullptr, y.data_ptr<T>(), nullptr, sz.N, sz.B,
                             sz.H, sz.P};
    std::vector<const T*> gx_p;
    for (const Tensor& part : gx) gx_p.push_back(part.data_ptr<T>());
    if constexpr (kFusable<T>) {
      if (split != FusedSplit::kNone) {
        const ClockworkInput<T> in{in_walk ? x_c.data_ptr<T>() : nullptr, w_ih_c.data_ptr<T>(),
                                   b.defined() ? b.data_ptr<T>() : nullptr, gx_p.data(),
                                   nullptr, args.I};
        return clockwork_fused_forward<Cell>(st, schedule, w.data_ptr<T>(), m, in, split);
      }
    }
    clockwork_forward<Cell>(st, schedule, w, m, gx_p);
  });
  return {y, h};
}

// Returns grad_x [N, I] ([0, I] unless input_grad), grad_w_ih [H, I], grad_bias [H],
// grad_h0 [B, H], grad_w_hh [H, H] (zero outside the allowed blocks).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_op(
    const Tensor& grad_y, const Tensor& grad_hn, const Tensor& x, const Tensor& w_ih,
    const Tensor& batch_sizes, const Tensor& h0, const Tensor& w_hh, const Tensor& y,
    c10::IntArrayRef periods, bool input_grad) {
  constexpr const char* op = "clockwork_backward";
  const WithoutAutocast no_autocast;
  const ClockworkInputArgs args = check_clockwork_backward(op, grad_y, grad_hn, x, w_ih,
                                                           batch_sizes, h0, w_hh, y, periods);
  const RecurrenceSizes& sz = args.size;
  const ClockworkModules& m = args.modules;
  const std::vector<int64_t>& rows = args.rows;
  const Schedule schedule(batch_sizes, false);
  const Tensor gy = pooled_contiguous(grad_y), h0_c = h0.contiguous(), w = w_hh.contiguous();
  const Tensor y_c = y.contiguous(), x_c = x.contiguous(), w_ih_c = w_ih.contiguous();
  Tensor dh = grad_hn.clone(at::MemoryFormat::Contiguous);  // [B, H] w.r.t. the h state
  const FusedSplit split = walk_split(y, sz.B, w);
  // a step's gate gradients; the fused walk's in two halves, by step parity
  Tensor dx = at::empty({split == FusedSplit::kNone ? 1 : 2, sz.B, sz.H}, y.options());
  // Each module's gate gradients, [n_i, k]: the fused walk's written transposed, [k, n_i]
  // (grad_gx_t, its rows padded apart), and viewed as [n_i, k] here.
  std::vector<Tensor> grad_gx, grad_gx_t;
  for (int64_t n : rows) {
    if (split == FusedSplit::kNone) {
      grad_gx.push_back(walk_buffer({n, m.k}, y.options()));
    } else {
      grad_gx_t.push_back(
          walk_buffer({m.k, transposed_gate_stride(n)}, y.options()).narrow(1, 0, n));
      grad_gx.push_back(grad_gx_t.back().t());
    }
  }
  Tensor grad_x;  // the fused walk's; the BLAS walk's from grad_gx after it
  Tensor grad_w_ih, grad_w_hh;  // the fused walk's weight gradients (where they fit)
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), op, [&] {
    using T = scalar_t;
    const BackwardState<T> st{gy.data_ptr<T>(), h0_c.data_ptr<T>(), nullptr, w.data_ptr<T>(),
                              y_c.data_ptr<T>(), nullptr, nullptr, dh.data_ptr<T>(), nullptr,
                              dx.data_ptr<T>(), dx.data_ptr<T>(), nullptr, sz.N, sz.B, sz.H, sz.P};
    if constexpr (kFusable<T>) {
      if (split != FusedSplit::kNone) {
        const bool in_walk = input_grad && sz.B >= kInWalkInputMinRows;
        if (in_walk) grad_x = walk_buffer(x.sizes(), x.options());
        const ClockworkInput<T> in{x_c.data_ptr<T>(), w_ih_c.data_ptr<T>(), nullptr, nullptr,
                                   in_walk ? grad_x.data_ptr<T>() : nullptr, args.I};
        std::vector<T*> grad_gx_t_p;
        for (Tensor& part : grad_gx_t) grad_gx_t_p.push_back(part.data_ptr<T>());
        clockwork_fused_backward<Cell>(st, schedule, w.data_ptr<T>(), m, in, grad_gx_t_p, rows,
                                       split);
        if (!clockwork_weight_grads_fit<T>(args.I, sz.H, m.k)) return;
        grad_w_ih = at::empty(w_ih.sizes(), w_ih.options());
        grad_w_hh = at::zeros(w_hh.sizes(), w_hh.options());
        return clockwork_fused_weight_grads<T>(schedule, m, grad_gx_t_p, rows, x_c.data_ptr<T>(),
                                               args.I, h0_c.data_ptr<T>(), y_c.data_ptr<T>(),
                                               sz.H, grad_w_ih.data_ptr<T>(),
                                               grad_w_hh.data_ptr<T>());
      }
    }
    std::vector<T*> grad_gx_p;
    for (Tensor& part : grad_gx) grad_gx_p.push_back(part.data_ptr<T>());
    clockwork_backward<Cell>(st, schedule, w, m, grad_gx_p, rows);
  });
  // each module's rows, for the products over them that the walk did not form
  const bool other_products = !grad_w_ih.defined() || (input_grad && !grad_x.defined());
  const std::vector<Tensor> active_rows =
      other_products ? clockwork_active_rows(schedule, m, x.device()) : std::vector<Tensor>();
  Tensor grad_bias;
  if (grad_w_ih.defined()) {
    grad_bias = at::empty({sz.H}, y.options());
    for (int64_t i = 0; i < m.count(); ++i) {
      Tensor part = module_part(grad_bias, m, i);
      at::sum_out(part, grad_gx_t[i], 1);
    }
  } else {
    grad_w_hh = clockwork_weight_grad(grad_gx, y_c, h0_c, schedule, m, walk_buffer)
                    .to(w.scalar_type());
    std::tie(grad_w_ih, grad_bias) = clockwork_input_weight_grads(
        grad_gx, clockwork_module_inputs(x_c, active_rows, walk_buffer), w_ih, m);
  }
  if (!grad_x.defined()) {
    grad_x = input_grad ? clockwork_input_grad(grad_gx, x_c, w_ih_c, active_rows, m)
                        : at::empty({0, args.I}, x.options());
  }
  return {grad_x, grad_w_ih, grad_bias, dh, grad_w_hh};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastrnn, CPU, m) {
  m.impl("clockwork_forward", &forward_op);
  m.impl("clockwork_backward", &backward_op);
}

}  // namespace cpu
}  // namespace fastrnn
